//! The x87 control instructions (FNINIT, FNCLEX, FLDCW, FNSTCW, FNSTSW,
//! WAIT, and the 8087/287 no-ops FNENI, FNDISI, FNSETPM) and the record every other x87 instruction leaves of itself:
//! FIP, FOP and FDP, kept as this host's CPU keeps them.
//!
//! What the CPU does (checked with FXSAVE64 after each case on an Intel
//! Xeon that reports FDP_EXCPTN_ONLY and "FCS/FDS deprecated" in CPUID
//! leaf 7): every x87 instruction but the control ones sets FIP to the
//! offset of its first byte (prefixes included; FNOP, FFREE, FXCH, FXAM
//! and FINCSTP count, FLDCW, FNSTSW, WAIT, EMMS and MMX instructions do
//! not). FOP (the low three bits of the first opcode byte, then the
//! ModR/M byte) and FDP (the memory operand's offset, not its linear
//! address; no change for a register form) change only when the
//! instruction raises an exception its FCW mask bit leaves unmasked.
//! FCS and FDS are always stored as 0. FNINIT clears all three.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::*;
use crate::cpu::CR0_MP;
use crate::flags::mask;

/// Whether `m` is one of the control instructions this module executes.
pub fn handles(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fninit
            | M::Fnclex
            | M::Fldcw
            | M::Fnstcw
            | M::Fnstsw
            | M::Wait
            | M::Fneni
            | M::Fndisi
            | M::Fnsetpm
    )
}

/// #NM under CR0.EM or CR0.TS: the check of the non-waiting forms.
fn no_device(core: &Core) -> ExecResult {
    if core.cpu.cr0 & (CR0_EM | CR0_TS) != 0 {
        return Err(Fault::new(NM).into());
    }
    Ok(())
}

/// Executes a control instruction [`handles`] names.
pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    match m {
        M::Wait => {
            // WAIT is #NM only when CR0.MP and CR0.TS are both set.
            if core.cpu.cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
                return Err(Fault::new(NM).into());
            }
            if core.cpu.cr0 & CR0_NE != 0 && core.cpu.fpu.fsw & FSW_ES != 0 {
                return Err(Fault::new(MF).into());
            }
            Ok(())
        }
        M::Fldcw => {
            // A waiting instruction: a pending exception is raised first.
            check(core)?;
            let v = ops::read(core, ins, 0, 16)?;
            let f = &mut core.cpu.fpu;
            f.fcw = save::canonical_fcw(v as u16);
            save::summarize(f);
            Ok(())
        }
        M::Fnstcw => {
            no_device(core)?;
            let v = core.cpu.fpu.fcw;
            ops::write(core, ins, 0, 16, u64::from(v))
        }
        M::Fnstsw => {
            no_device(core)?;
            let v = core.cpu.fpu.fsw;
            ops::write(core, ins, 0, 16, u64::from(v))
        }
        M::Fninit => {
            no_device(core)?;
            init(&mut core.cpu.fpu);
            Ok(())
        }
        // The 8087/287 mode switches do nothing on later CPUs (not even
        // change FIP, checked on the host).
        M::Fneni | M::Fndisi | M::Fnsetpm => no_device(core),
        _ => {
            no_device(core)?;
            core.cpu.fpu.fsw &= !(0xff | FSW_B);
            Ok(())
        }
    }
}

/// FNINIT's effect (also what FNSAVE leaves): the control, status and
/// tag words to their reset values and FIP, FDP and FOP to 0; the
/// registers keep their contents (TOP becomes 0, so the ST-ordered
/// array turns to physical order).
pub(super) fn init(f: &mut Fpu) {
    let t = top(f);
    f.st.rotate_right(t);
    f.fcw = 0x37f;
    f.fsw = 0;
    f.ftw = 0;
    f.fip = 0;
    f.fdp = 0;
    f.fop = 0;
}

/// Records the instruction just executed: FIP always, FOP and FDP when
/// it raised an unmasked exception (`unmasked`).
pub(super) fn record(core: &mut Core, ins: &Instruction, unmasked: bool) {
    let bits = core.cpu.bitness();
    core.cpu.fpu.fip = ins.ip() & mask(bits);
    if !unmasked {
        return;
    }
    if let Some(op) = opcode(core, ins) {
        core.cpu.fpu.fop = op;
    }
    if let Some(i) = (0..ins.op_count()).find(|&i| ins.op_kind(i) == OpKind::Memory) {
        core.cpu.fpu.fdp = ops::mem_loc(core, ins, i).1;
    }
}

/// Legacy prefixes and (in 64-bit mode) REX, which FOP skips.
fn is_prefix(b: u8, mode64: bool) -> bool {
    matches!(
        b,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
    ) || (mode64 && b & 0xf0 == 0x40)
}

/// The 11-bit FOP of `ins`: the low three bits of its first opcode byte
/// (D8-DF), then its ModR/M byte. Read from the bytes the instruction
/// was fetched from; `None` if they can no longer be read.
fn opcode(core: &mut Core, ins: &Instruction) -> Option<u16> {
    let len = ins.len().clamp(2, 15);
    let mode64 = core.cpu.mode64();
    let base = if mode64 {
        0
    } else {
        core.cpu.seg[crate::cpu::CS].base
    };
    let lin = base.wrapping_add(ins.ip() & mask(core.cpu.bitness()));
    let mut b = [0u8; 15];
    // A failed read must leave no trace (CR2 included).
    let cr2 = core.cpu.cr2;
    let read = core.read_lin(lin, &mut b[..len], crate::mmu::Access::Exec, false);
    core.cpu.cr2 = cr2;
    read.ok()?;
    let i = b[..len].iter().position(|&x| !is_prefix(x, mode64))?;
    let (op, modrm) = (*b.get(i)?, *b.get(i + 1)?);
    Some((u16::from(op & 7) << 8) | u16::from(modrm))
}
