//! From a guest instruction to the form a stub runs: the same `Code`
//! with its vector registers kept, its general registers renamed to the
//! stub's fixed host registers and its memory operand turned into
//! `[rdi]` (the context's buffer). The renamed instruction is the stub
//! cache's key, so every guest addressing of one form shares one stub.
//! [`plan`] says what the stub must load and store and what the engine
//! must copy back, from iced-x86's record of the registers and memory
//! the instruction uses.

use iced_x86::{
    Encoder, Instruction, InstructionInfoFactory, MemorySize, OpAccess, OpKind, Register,
};

use super::allow;
use super::stub::{Regs, GPR_SLOTS};

/// The first GPR slot for explicit operands (slots 0-2 are RAX, RCX,
/// RDX, bound to the guest's).
const EXPLICIT: usize = 3;

/// A guest instruction renamed for a stub.
pub struct Form {
    /// The renamed instruction (the cache key).
    pub key: Instruction,
    /// The guest register (0-15) bound to each GPR slot.
    pub bound: [u8; GPR_SLOTS],
    /// The index of the memory operand, if any.
    pub mem_op: Option<u32>,
}

/// What a stub touches and what the engine copies back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plan {
    /// Registers the stub loads and stores.
    pub regs: Regs,
    /// GPR slots the instruction writes.
    pub gpr_written: u8,
    /// MM registers the instruction writes.
    pub mm_written: u8,
    /// Memory operand size in bytes, 0 without one.
    pub mem_size: u8,
    pub mem_read: bool,
    pub mem_write: bool,
    /// The alignment a memory operand needs (#GP(0) otherwise), 0 none.
    pub align: u8,
    /// The RFLAGS bits the instruction writes.
    pub flags: u64,
}

fn renamed_gpr(r: Register, k: usize) -> Option<Register> {
    let (d, q) = [
        (Register::R8D, Register::R8),
        (Register::R9D, Register::R9),
        (Register::R10D, Register::R10),
    ]
    .get(k)
    .copied()?;
    if r.is_gpr32() {
        Some(d)
    } else if r.is_gpr64() {
        Some(q)
    } else {
        None
    }
}

/// Renames `g`, or None when its form may not run on the host (not on
/// the allow-list, or an operand the stubs do not model).
pub fn remap(g: &Instruction) -> Option<Form> {
    let code = g.code();
    if !allow::allowed(code) {
        return None;
    }
    let mut key = Instruction::default();
    key.set_code(code);
    let mut bound = [0, 1, 2, 0xff, 0xff, 0xff];
    let mut next = EXPLICIT;
    let mut mem_op = None;
    for i in 0..g.op_count() {
        match g.op_kind(i) {
            OpKind::Register => {
                let r = g.op_register(i);
                let r = if r.is_xmm() || r.is_ymm() || r.is_mm() {
                    r
                } else {
                    let h = renamed_gpr(r, next - EXPLICIT)?;
                    bound[next] = r.full_register().number() as u8;
                    next += 1;
                    h
                };
                key.set_op_kind(i, OpKind::Register);
                key.set_op_register(i, r);
            }
            OpKind::Memory => {
                if mem_op.is_some() {
                    return None;
                }
                mem_op = Some(i);
                key.set_op_kind(i, OpKind::Memory);
                key.set_memory_base(Register::RDI);
                key.set_memory_index(Register::None);
                key.set_memory_index_scale(1);
                key.set_memory_displacement64(0);
                key.set_memory_displ_size(0);
            }
            OpKind::Immediate8 => {
                key.set_op_kind(i, OpKind::Immediate8);
                key.set_immediate8(g.immediate8());
            }
            _ => return None,
        }
    }
    Some(Form { key, bound, mem_op })
}

/// The host encoding of a renamed instruction.
pub fn encode(key: &Instruction) -> Option<Vec<u8>> {
    let mut e = Encoder::new(64);
    e.encode(key, 0).ok()?;
    Some(e.take_buffer())
}

fn writes(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

fn reads(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

/// The GPR slot of host register `r` (any width), if it has one.
fn slot(r: Register) -> Option<usize> {
    let full = r.full_register();
    [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::R8,
        Register::R9,
        Register::R10,
    ]
    .iter()
    .position(|&h| h == full)
}

/// What running `key` touches, or None if it uses anything a stub does
/// not model (another general register, more than one memory operand,
/// an operand over 64 bytes).
pub fn plan(key: &Instruction) -> Option<Plan> {
    let mut f = InstructionInfoFactory::new();
    let info = f.info(key);
    let mut p = Plan::default();
    for u in info.used_registers() {
        let r = u.register();
        let w = writes(u.access());
        if r.is_xmm() || r.is_ymm() || r.is_zmm() {
            // iced names a VEX destination ZMM (VEX clears up to the
            // host's vector length); the guest has YMM0-15 only.
            if r.number() >= 16 {
                return None;
            }
            p.regs.vec |= 1 << r.number();
        } else if r.is_mm() {
            p.regs.mm |= 1 << r.number();
            p.mm_written |= u8::from(w) << r.number();
        } else if r == Register::RDI && !w {
            // The memory operand's base: the context pointer.
        } else {
            let s = slot(r)?;
            p.regs.gpr |= 1 << s;
            p.gpr_written |= u8::from(w) << s;
        }
    }
    let mems = info.used_memory();
    if mems.len() > 1 {
        return None;
    }
    if let Some(m) = mems.first() {
        let size = m.memory_size().size();
        if size == 0 || size > 64 || m.memory_size() == MemorySize::Unknown {
            return None;
        }
        p.mem_size = size as u8;
        p.mem_read = reads(m.access());
        p.mem_write = writes(m.access());
        p.align = allow::alignment(key.code(), size) as u8;
    }
    p.flags = arith_flags(key.rflags_modified());
    Some(p)
}

/// RFLAGS bits of iced-x86's flag set.
fn arith_flags(iced: u32) -> u64 {
    use crate::flags::{AF, CF, OF, PF, SF, ZF};
    use iced_x86::RflagsBits as F;
    [
        (F::OF, OF),
        (F::SF, SF),
        (F::ZF, ZF),
        (F::AF, AF),
        (F::CF, CF),
        (F::PF, PF),
    ]
    .iter()
    .filter(|(b, _)| iced & b != 0)
    .fold(0, |acc, (_, r)| acc | r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode()
    }

    #[test]
    fn memory_becomes_the_buffer_and_gprs_are_renamed() {
        // cvtsi2sd xmm3, qword [rbx+rcx*8+0x10]
        let f = remap(&decode(&[0xf2, 0x48, 0x0f, 0x2a, 0x5c, 0xcb, 0x10])).unwrap();
        assert_eq!(f.mem_op, Some(1));
        assert_eq!(encode(&f.key).unwrap(), [0xf2, 0x48, 0x0f, 0x2a, 0x1f]);
        // cvttsd2si r13d, xmm2 -> r8d
        let f = remap(&decode(&[0xf2, 0x44, 0x0f, 0x2c, 0xea])).unwrap();
        assert_eq!(f.bound[EXPLICIT], 13);
        let p = plan(&f.key).unwrap();
        assert_eq!(p.gpr_written, 1 << EXPLICIT);
        assert_eq!(p.regs.vec, 1 << 2);
    }

    #[test]
    fn vex_destinations_are_vector_registers() {
        // vaddps ymm3, ymm1, [rbx]
        let f = remap(&decode(&[0xc5, 0xf4, 0x58, 0x1b])).unwrap();
        let p = plan(&f.key).unwrap();
        assert_eq!(p.regs.vec, (1 << 3) | (1 << 1));
        assert_eq!(p.mem_size, 32);
    }

    #[test]
    fn implicit_registers_are_planned() {
        // pcmpestri xmm1, xmm2, 0x0c: reads EAX/EDX, writes ECX and flags.
        let f = remap(&decode(&[0x66, 0x0f, 0x3a, 0x61, 0xca, 0x0c])).unwrap();
        let p = plan(&f.key).unwrap();
        assert_eq!(p.regs.gpr, 0b111);
        assert_eq!(p.gpr_written, 0b010);
        assert_ne!(p.flags, 0);
    }
}
