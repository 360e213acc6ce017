//! Operand access for the interpreter: registers by iced-x86 register
//! number, effective addresses, and reading/writing an instruction's
//! operands by index at a given size.

use iced_x86::{Instruction, OpKind, Register};

use crate::core::Core;
use crate::cpu::{Cpu, DS, ES, RDI, RSI, SS};
use crate::exception::{ExecResult, Fault};
use crate::flags::mask;

/// Size in bits of a general register, 0 if not a GPR.
#[inline]
pub fn gpr_size(r: Register) -> u32 {
    match r as u32 {
        1..=20 => 8,
        21..=36 => 16,
        37..=52 => 32,
        53..=68 => 64,
        _ => 0,
    }
}

/// Reads a general, segment or instruction-pointer register.
#[inline]
pub fn reg_get(cpu: &Cpu, r: Register) -> u64 {
    let v = r as u32;
    match v {
        1..=20 => cpu.get8((v - 1) as usize),
        21..=36 => cpu.gpr[(v - 21) as usize] & 0xffff,
        37..=52 => cpu.gpr[(v - 37) as usize] & 0xffff_ffff,
        53..=68 => cpu.gpr[(v - 53) as usize],
        71..=76 => u64::from(cpu.seg[(v - 71) as usize].selector),
        _ => 0,
    }
}

/// Writes a general register with the usual merge/zero-extend rules.
#[inline]
pub fn reg_set(cpu: &mut Cpu, r: Register, val: u64) {
    let v = r as u32;
    match v {
        1..=20 => cpu.set8((v - 1) as usize, val),
        21..=36 => cpu.set_gpr((v - 21) as usize, 16, val),
        37..=52 => cpu.set_gpr((v - 37) as usize, 32, val),
        53..=68 => cpu.gpr[(v - 53) as usize] = val,
        _ => {}
    }
}

/// Segment number (ES=0 .. GS=5) of a segment register.
#[inline]
pub fn seg_index(r: Register) -> usize {
    let v = r as u32;
    if (71..=76).contains(&v) {
        (v - 71) as usize
    } else {
        DS
    }
}

/// The segment of `ins`'s (ModRM) memory operand. In 64-bit mode an ES,
/// CS or DS override is ignored, so the default segment applies (SS for
/// an RSP or RBP base); an SS override stays. It decides #SS versus #GP
/// for a non-canonical address, as the CPU does (an FS or GS override
/// adds its base).
pub fn mem_seg(ins: &Instruction, mode64: bool) -> usize {
    let s = ins.memory_segment();
    if !mode64 || matches!(s, Register::FS | Register::GS | Register::SS) {
        return seg_index(s);
    }
    match ins.memory_base() {
        Register::RSP | Register::RBP | Register::ESP | Register::EBP => SS,
        _ => DS,
    }
}

/// The address size of a memory operand in bits.
#[inline]
pub fn addr_size(ins: &Instruction) -> u32 {
    let b = ins.memory_base();
    if b != Register::None {
        return match b {
            Register::RIP => 64,
            Register::EIP => 32,
            _ => gpr_size(b),
        };
    }
    let i = ins.memory_index();
    if i != Register::None {
        return gpr_size(i);
    }
    match ins.memory_displ_size() {
        8 => 64,
        4 => 32,
        2 => 16,
        _ => 32,
    }
}

/// The effective address (segment offset) of the memory operand.
#[inline]
pub fn ea(cpu: &Cpu, ins: &Instruction) -> u64 {
    let base = ins.memory_base();
    let mut a = ins.memory_displacement64();
    match base {
        Register::None => {}
        Register::RIP => return a,
        Register::EIP => return a & 0xffff_ffff,
        _ => a = a.wrapping_add(reg_get(cpu, base)),
    }
    let idx = ins.memory_index();
    if idx != Register::None {
        a = a.wrapping_add(reg_get(cpu, idx) << (ins.memory_index_scale().trailing_zeros()));
    }
    match addr_size(ins) {
        64 => a,
        32 => a & 0xffff_ffff,
        _ => a & 0xffff,
    }
}

/// The operand size (bits) of operand `i`.
#[inline]
pub fn op_size(ins: &Instruction, i: u32) -> u32 {
    match ins.op_kind(i) {
        OpKind::Register => {
            let r = ins.op_register(i);
            let s = gpr_size(r);
            if s != 0 {
                s
            } else if (71..=76).contains(&(r as u32)) {
                16
            } else {
                128
            }
        }
        OpKind::Immediate8 | OpKind::Immediate8_2nd => 8,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 16,
        OpKind::Immediate32 | OpKind::Immediate8to32 => 32,
        OpKind::Immediate64 | OpKind::Immediate8to64 | OpKind::Immediate32to64 => 64,
        _ => (ins.memory_size().size() * 8) as u32,
    }
}

/// The string-instruction address width in bits, from its memory operand kinds.
pub fn string_addr_size(ins: &Instruction) -> u32 {
    for i in 0..ins.op_count() {
        match ins.op_kind(i) {
            OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI => return 16,
            OpKind::MemorySegESI | OpKind::MemorySegEDI | OpKind::MemoryESEDI => return 32,
            OpKind::MemorySegRSI | OpKind::MemorySegRDI | OpKind::MemoryESRDI => return 64,
            _ => {}
        }
    }
    64
}

/// Where a memory operand lives: segment and offset.
#[inline]
pub fn mem_loc(core: &Core, ins: &Instruction, i: u32) -> (usize, u64) {
    let k = ins.op_kind(i);
    match k {
        OpKind::MemorySegSI | OpKind::MemorySegESI | OpKind::MemorySegRSI => {
            let m = mask(string_addr_size(ins));
            (seg_index(ins.memory_segment()), core.cpu.gpr[RSI] & m)
        }
        OpKind::MemorySegDI | OpKind::MemorySegEDI | OpKind::MemorySegRDI => {
            let m = mask(string_addr_size(ins));
            (seg_index(ins.memory_segment()), core.cpu.gpr[RDI] & m)
        }
        OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::MemoryESRDI => {
            let m = mask(string_addr_size(ins));
            (ES, core.cpu.gpr[RDI] & m)
        }
        _ => (mem_seg(ins, core.cpu.mode64()), ea(&core.cpu, ins)),
    }
}

/// Reads operand `i` at `size` bits (immediates are sign-extended by
/// iced-x86 and masked here).
#[inline]
pub fn read(core: &mut Core, ins: &Instruction, i: u32, size: u32) -> ExecResult<u64> {
    match ins.op_kind(i) {
        OpKind::Register => Ok(reg_get(&core.cpu, ins.op_register(i))),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64
        | OpKind::Immediate8_2nd => Ok(ins.immediate(i) & mask(size)),
        _ => {
            let (seg, off) = mem_loc(core, ins, i);
            core.read_seg(seg, off, (size / 8) as usize)
        }
    }
}

/// Writes operand `i` at `size` bits.
#[inline]
pub fn write(core: &mut Core, ins: &Instruction, i: u32, size: u32, v: u64) -> ExecResult {
    match ins.op_kind(i) {
        OpKind::Register => {
            reg_set(&mut core.cpu, ins.op_register(i), v);
            Ok(())
        }
        OpKind::Memory
        | OpKind::MemorySegSI
        | OpKind::MemorySegESI
        | OpKind::MemorySegRSI
        | OpKind::MemorySegDI
        | OpKind::MemorySegEDI
        | OpKind::MemorySegRDI
        | OpKind::MemoryESDI
        | OpKind::MemoryESEDI
        | OpKind::MemoryESRDI => {
            let (seg, off) = mem_loc(core, ins, i);
            core.write_seg(seg, off, (size / 8) as usize, v)
        }
        _ => Err(Fault::ud().into()),
    }
}

/// Sign-extends the low `size` bits of `v`.
#[inline]
pub fn sext(v: u64, size: u32) -> u64 {
    let s = 64 - size;
    (((v << s) as i64) >> s) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_numbering_matches_iced() {
        let mut c = Cpu::reset();
        c.gpr[3] = 0x1234_5678_9abc_def0;
        assert_eq!(reg_get(&c, Register::BH), 0xde);
        assert_eq!(reg_get(&c, Register::EBX), 0x9abc_def0);
        reg_set(&mut c, Register::R11D, u64::MAX);
        assert_eq!(c.gpr[11], 0xffff_ffff);
        reg_set(&mut c, Register::SIL, 7);
        assert_eq!(c.gpr[6] & 0xff, 7);
        assert_eq!(seg_index(Register::FS), 4);
    }

    #[test]
    fn sign_extension() {
        assert_eq!(sext(0x80, 8), 0xffff_ffff_ffff_ff80);
        assert_eq!(sext(0x7fff, 16), 0x7fff);
    }
}
