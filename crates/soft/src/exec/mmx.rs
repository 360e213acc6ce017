//! MMX: the eight 64-bit MM registers and the instructions that use them
//! (the original MMX set, the SSE additions on MM registers, MOVQ2DQ and
//! MOVDQ2Q), plus EMMS.
//!
//! MMi is the 64-bit mantissa of the x87 physical register Ri. The engine
//! keeps x87 registers in FXSAVE order (ST(0) first, i.e. physical
//! register (TOP + i) mod 8 at index i), so an MMX instruction reads Ri at
//! index (i - TOP) mod 8. Every MMX instruction then sets TOP to 0 (the
//! array rotates so index i holds Ri) and the tag word to all valid, or
//! all empty for EMMS. A register write also sets the
//! exponent bits (79:64) of Ri to all ones. All operand reads and memory
//! writes happen before that, so a faulting instruction changes nothing,
//! except that a store to memory that faults still sets TOP to 0 (tags
//! kept), as the CPU does.
//!
//! The arithmetic is `sse2::packed_int` over 64 bits, shared with the XMM
//! forms. The float conversions (CVTPI2PS/PD, CVT(T)PS2PI, CVT(T)PD2PI)
//! and the SSSE3 forms on MM registers run by the host's own instruction
//! (`crate::hostop`), which reads MM registers with [`mm_read`] and
//! makes the same transition with [`enter`] and [`mm_write`]; a
//! CVTPI2PS/PD from memory touches no MM register and makes none.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::ops;
use super::sse::{byte_signs, xmm_index};
use super::sse2::{is_packed_int, packed_int, shuffle_words, word};
use crate::core::Core;
use crate::cpu::{Fpu, CR0_EM, CR0_NE, CR0_TS, CR4_OSFXSR};
use crate::exception::{ExecResult, Fault, Stop, MF, NM};

/// FSW bits 13:11: the x87 top-of-stack.
const FSW_TOP: u16 = 0x3800;
/// FSW bit 7: an unmasked x87 exception is pending.
const FSW_ES: u16 = 0x80;

/// Index 0-7 of an MM register.
pub(super) fn mm_index(r: Register) -> Option<usize> {
    let v = r as u32;
    if (Register::MM0 as u32..=Register::MM7 as u32).contains(&v) {
        Some((v - Register::MM0 as u32) as usize)
    } else {
        None
    }
}

/// Whether any operand of `ins` is an MM register (every MMX form has
/// one).
pub(super) fn uses_mmx(ins: &Instruction) -> bool {
    (0..ins.op_count())
        .any(|i| ins.op_kind(i) == OpKind::Register && mm_index(ins.op_register(i)).is_some())
}

/// The checks every MMX instruction makes: #UD under CR0.EM, #NM under
/// CR0.TS, #MF while an x87 exception is pending (native reporting).
fn check(core: &Core) -> ExecResult {
    if core.cpu.cr0 & CR0_EM != 0 {
        return Err(Fault::ud().into());
    }
    if core.cpu.cr0 & CR0_TS != 0 {
        return Err(Fault::new(NM).into());
    }
    if core.cpu.cr0 & CR0_NE != 0 && core.cpu.fpu.fsw & FSW_ES != 0 {
        return Err(Fault::new(MF).into());
    }
    Ok(())
}

fn top(f: &Fpu) -> usize {
    usize::from((f.fsw & FSW_TOP) >> 11)
}

/// MMi, wherever TOP puts physical register i in the ST-ordered array.
pub(crate) fn mm_read(f: &Fpu, i: usize) -> u64 {
    let slot = &f.st[(i + 8 - top(f)) % 8];
    let mut b = [0u8; 8];
    b.copy_from_slice(&slot[..8]);
    u64::from_le_bytes(b)
}

/// Enters MMX state: TOP = 0 and every register tagged valid.
pub(crate) fn enter(f: &mut Fpu) {
    top_to_zero(f);
    f.ftw = 0xff;
}

/// TOP = 0, the tags kept: what a faulting MMX store leaves, as the CPU
/// does.
fn top_to_zero(f: &mut Fpu) {
    let t = top(f);
    if t != 0 {
        // Index i held physical register (t + i) mod 8; make it hold Ri.
        let old = f.st;
        for (i, slot) in f.st.iter_mut().enumerate() {
            *slot = old[(i + 8 - t) % 8];
        }
    }
    f.fsw &= !FSW_TOP;
}

/// Writes MMi (MMX state already entered): mantissa `v`, exponent and
/// sign all ones.
pub(crate) fn mm_write(f: &mut Fpu, i: usize, v: u64) {
    let slot = &mut f.st[i];
    slot[..8].copy_from_slice(&v.to_le_bytes());
    slot[8] = 0xff;
    slot[9] = 0xff;
}

/// Reads source operand `i`: an MM register, the low quadword of an XMM
/// register, a general register, memory (its size, zero-extended) or an
/// immediate.
fn src(core: &mut Core, ins: &Instruction, i: u32) -> ExecResult<u64> {
    match ins.op_kind(i) {
        OpKind::Register => {
            let r = ins.op_register(i);
            if let Some(x) = mm_index(r) {
                Ok(mm_read(&core.cpu.fpu, x))
            } else if let Some(x) = xmm_index(r) {
                Ok(core.cpu.fpu.xmm[x] as u64)
            } else {
                Ok(ops::reg_get(&core.cpu, r))
            }
        }
        OpKind::Memory => {
            let size = ins.memory_size().size().min(8);
            let (s, off) = ops::mem_loc(core, ins, i);
            let mut b = [0u8; 8];
            core.read_seg_buf(s, off, &mut b[..size])?;
            Ok(u64::from_le_bytes(b))
        }
        _ => Ok(ins.immediate(i)),
    }
}

/// Writes destination operand `i` and enters MMX state: an MM register,
/// a general register (its own width rules), an XMM register (zero-
/// extended) or `bytes` of memory (written before the state changes, so
/// a fault leaves it alone).
fn dst(core: &mut Core, ins: &Instruction, i: u32, v: u64, bytes: usize) -> ExecResult {
    match ins.op_kind(i) {
        OpKind::Register => {
            let r = ins.op_register(i);
            enter(&mut core.cpu.fpu);
            if let Some(x) = mm_index(r) {
                mm_write(&mut core.cpu.fpu, x, v);
            } else if let Some(x) = xmm_index(r) {
                core.cpu.fpu.xmm[x] = u128::from(v);
            } else {
                ops::reg_set(&mut core.cpu, r, v);
            }
            Ok(())
        }
        _ => {
            let (s, off) = ops::mem_loc(core, ins, i);
            if let Err(e) = core.write_seg_buf(s, off, &v.to_le_bytes()[..bytes.min(8)]) {
                top_to_zero(&mut core.cpu.fpu);
                return Err(e);
            }
            enter(&mut core.cpu.fpu);
            Ok(())
        }
    }
}

/// EMMS: every x87 register becomes empty and, as for the other MMX
/// instructions, TOP becomes 0 (SDM vol. 1, table 9-2).
pub(super) fn emms(core: &mut Core) -> ExecResult {
    check(core)?;
    enter(&mut core.cpu.fpu);
    core.cpu.fpu.ftw = 0;
    Ok(())
}

/// MASKMOVQ: stores the bytes of the first MM operand whose mask byte in
/// the second has its top bit set, at DS:rDI. The whole 8 bytes are
/// checked for a write first, whatever the mask (a fault names the first
/// that cannot be written), and MMX state is entered even when that
/// faults, as this host's CPU does (measured natively: a zero mask still
/// faults; after the fault TOP is 0 and every tag valid).
fn maskmovq(core: &mut Core, ins: &Instruction) -> ExecResult {
    let v = src(core, ins, 1)?.to_le_bytes();
    let mask = src(core, ins, 2)?.to_le_bytes();
    if let Err(stop) = super::sse2::probe_write_bytes(core, ins, 0..8) {
        enter(&mut core.cpu.fpu);
        return Err(stop);
    }
    let (s, off) = ops::mem_loc(core, ins, 0);
    let addr_mask = crate::flags::mask(ops::addr_size(ins));
    for k in (0..8).filter(|&k| mask[k] & 0x80 != 0) {
        let o = off.wrapping_add(k as u64) & addr_mask;
        core.write_seg_buf(s, o, &v[k..k + 1])?;
    }
    enter(&mut core.cpu.fpu);
    Ok(())
}

/// Executes an instruction with an MM register operand.
pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    let sse_form = matches!(
        m,
        M::Cvtpi2ps | M::Cvtpi2pd | M::Cvtps2pi | M::Cvttps2pi | M::Cvtpd2pi | M::Cvttpd2pi
    );
    if sse_form && core.cpu.cr0 & CR0_EM == 0 && core.cpu.cr4 & CR4_OSFXSR == 0 {
        return Err(Fault::ud().into());
    }
    check(core)?;
    match m {
        M::Movd | M::Movq | M::Movntq => {
            let bytes = if m == M::Movd { 4 } else { 8 };
            let v = src(core, ins, 1)?;
            let v = if bytes == 4 { v & 0xffff_ffff } else { v };
            dst(core, ins, 0, v, bytes)
        }
        M::Movq2dq | M::Movdq2q => {
            // SSE2 forms: they also need the OS's FXSAVE support.
            if core.cpu.cr4 & CR4_OSFXSR == 0 {
                return Err(Fault::ud().into());
            }
            let v = src(core, ins, 1)?;
            dst(core, ins, 0, v, 8)
        }
        _ if is_packed_int(m) => {
            let a = src(core, ins, 0)?;
            let b = src(core, ins, 1)?;
            let r = packed_int(m, a.into(), b.into(), 64).ok_or(Stop::Unsupported)?;
            dst(core, ins, 0, r as u64, 8)
        }
        M::Pshufw => {
            let a = src(core, ins, 1)?;
            let r = shuffle_words(a.into(), ins.immediate(2), 0);
            dst(core, ins, 0, r as u64, 8)
        }
        M::Pmovmskb => {
            let a = src(core, ins, 1)?;
            dst(core, ins, 0, byte_signs(a.into(), 8), 8)
        }
        M::Pextrw => {
            let a = src(core, ins, 1)?;
            let v = word(a.into(), (ins.immediate(2) & 3) as u32);
            dst(core, ins, 0, v, 8)
        }
        M::Pinsrw => {
            let a = src(core, ins, 0)?;
            let w = src(core, ins, 1)? & 0xffff;
            let pos = 16 * (ins.immediate(2) & 3);
            dst(core, ins, 0, (a & !(0xffff << pos)) | (w << pos), 8)
        }
        M::Maskmovq => maskmovq(core, ins),
        // The float conversions and the SSSE3 forms: run by the host's
        // own instruction, which also makes the x87-to-MMX transition.
        _ => crate::hostop::exec(core, ins).unwrap_or_else(|| Err(Fault::ud().into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_follow_top() {
        // TOP = 3: ST(0) is R3, so R0 sits at index 5.
        let mut f = Fpu {
            fsw: 3 << 11,
            ..Default::default()
        };
        f.st[5][..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(mm_read(&f, 0), 0x1122_3344_5566_7788);
        enter(&mut f);
        assert_eq!(f.fsw & FSW_TOP, 0);
        assert_eq!(f.ftw, 0xff);
        assert_eq!(mm_read(&f, 0), 0x1122_3344_5566_7788);
        mm_write(&mut f, 1, 7);
        assert_eq!(&f.st[1][..10], &[7, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    }

    #[test]
    fn packs_and_unpacks_on_64_bits() {
        use Mnemonic as M;
        let a: u128 = 0x0004_0003_0002_0001;
        let b: u128 = 0x0008_0007_0006_0005;
        assert_eq!(
            packed_int(M::Packuswb, a, b, 64),
            Some(0x0807_0605_0403_0201)
        );
        assert_eq!(
            packed_int(M::Punpckhwd, a, b, 64),
            Some(0x0008_0004_0007_0003)
        );
        assert_eq!(
            packed_int(M::Punpcklwd, a, b, 64),
            Some(0x0006_0002_0005_0001)
        );
        assert_eq!(packed_int(M::Pcmpeqb, 0, 0, 64), Some(u64::MAX.into()));
    }
}
