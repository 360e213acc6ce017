//! Operand drawing: for each iced-x86 operand kind of a form, a random
//! register, memory operand or immediate, and the `Instruction` built from
//! them. Memory operands are based on RBX/RSI/RDI/RBP, which the snippet
//! points into the data page (RBP 64-byte aligned), so the other GPRs
//! stay free for register operands.

use iced_x86::{Code, Instruction, MemoryOperand, OpCodeOperandKind as K, OpKind, Register as R};

use super::gen::Rng;

const P64: &[R] = &[
    R::RAX,
    R::RCX,
    R::RDX,
    R::R8,
    R::R9,
    R::R10,
    R::R11,
    R::R12,
    R::R13,
    R::R14,
    R::R15,
];
const P32: &[R] = &[
    R::EAX,
    R::ECX,
    R::EDX,
    R::R8D,
    R::R9D,
    R::R10D,
    R::R11D,
    R::R12D,
    R::R13D,
    R::R14D,
    R::R15D,
];
const P16: &[R] = &[
    R::AX,
    R::CX,
    R::DX,
    R::R8W,
    R::R9W,
    R::R10W,
    R::R11W,
    R::R12W,
    R::R13W,
    R::R14W,
    R::R15W,
];
const P8: &[R] = &[
    R::AL,
    R::CL,
    R::DL,
    R::AH,
    R::CH,
    R::DH,
    R::R8L,
    R::R9L,
    R::R10L,
    R::R11L,
    R::R12L,
    R::R13L,
    R::R14L,
    R::R15L,
];
const BASES: &[R] = &[R::RBX, R::RSI, R::RDI, R::RBP];

pub const XMMS: &[R] = &[
    R::XMM0,
    R::XMM1,
    R::XMM2,
    R::XMM3,
    R::XMM4,
    R::XMM5,
    R::XMM6,
    R::XMM7,
    R::XMM8,
    R::XMM9,
    R::XMM10,
    R::XMM11,
    R::XMM12,
    R::XMM13,
    R::XMM14,
    R::XMM15,
];
pub const YMMS: &[R] = &[
    R::YMM0,
    R::YMM1,
    R::YMM2,
    R::YMM3,
    R::YMM4,
    R::YMM5,
    R::YMM6,
    R::YMM7,
    R::YMM8,
    R::YMM9,
    R::YMM10,
    R::YMM11,
    R::YMM12,
    R::YMM13,
    R::YMM14,
    R::YMM15,
];
pub const MMS: &[R] = &[
    R::MM0,
    R::MM1,
    R::MM2,
    R::MM3,
    R::MM4,
    R::MM5,
    R::MM6,
    R::MM7,
];
const STS: &[R] = &[
    R::ST0,
    R::ST1,
    R::ST2,
    R::ST3,
    R::ST4,
    R::ST5,
    R::ST6,
    R::ST7,
];

pub fn pick(rng: &mut Rng, p: &[R]) -> R {
    p[rng.below(p.len() as u64) as usize]
}

/// A memory operand anywhere near one of the bases (any alignment).
fn mem(rng: &mut Rng) -> MemoryOperand {
    let base = pick(rng, BASES);
    let disp = rng.below(256) as i64 - 128;
    let disp = if rng.below(4) == 0 { disp & !15 } else { disp };
    MemoryOperand::with_base_displ(base, disp)
}

/// A memory operand off RBP (64-byte aligned) aligned to `align` bytes.
/// Vector forms only get aligned memory: under this machine's KVM a
/// misaligned SSE access at CPL3 comes back as #UD (its emulator's
/// verdict), not the CPU's #GP.
fn aligned(rng: &mut Rng, align: i64) -> MemoryOperand {
    let slots = 256 / align;
    MemoryOperand::with_base_displ(R::RBP, (rng.below(slots as u64) as i64 - slots / 2) * align)
}

/// One drawn operand.
#[derive(Clone, Copy)]
pub enum Op {
    Reg(R),
    Mem(MemoryOperand),
    Imm(u64),
    /// A 64-bit absolute address (MOV's moffs forms).
    Moffs(u64),
}

/// Does the form have an XMM or YMM operand (then its memory operands are
/// aligned)?
pub fn is_vector(code: Code) -> bool {
    let oc = code.op_code();
    (0..oc.op_count()).any(|i| {
        matches!(
            oc.op_kind(i),
            K::xmm_reg
                | K::xmm_rm
                | K::xmm_or_mem
                | K::xmm_vvvv
                | K::xmm_is4
                | K::ymm_reg
                | K::ymm_rm
                | K::ymm_or_mem
                | K::ymm_vvvv
                | K::ymm_is4
        )
    })
}

/// Operands for every operand kind of `code`, or None when the form has a
/// kind the generator does not draw (VSIB, AVX-512 masks, ...).
pub fn operands(rng: &mut Rng, code: Code) -> Option<Vec<Op>> {
    let oc = code.op_code();
    let align = mem_align(code);
    (0..oc.op_count())
        .map(|i| operand(rng, oc.op_kind(i), align))
        .collect()
}

/// The alignment of the form's `mem` operands: 64 for the XSAVE family,
/// 16 for FXSAVE/FXRSTOR, 32 for vector forms, none (0) for the rest. A
/// misaligned access that faults is out of reach on this host: its KVM
/// answers the CPU's #GP by emulating the instruction (SSE: #UD,
/// FXSAVE/FXRSTOR: executed).
pub fn mem_align(code: Code) -> i64 {
    let m = code.mnemonic();
    if is_xsave_family(m) {
        64
    } else if is_fxsave_family(m) {
        16
    } else if is_vector(code) {
        32
    } else {
        0
    }
}

/// XSAVE, XSAVEOPT, XSAVEC, XSAVES, XRSTOR and XRSTORS (both widths).
pub fn is_xsave_family(m: iced_x86::Mnemonic) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(
        m,
        M::Xsave
            | M::Xsave64
            | M::Xsaveopt
            | M::Xsaveopt64
            | M::Xsavec
            | M::Xsavec64
            | M::Xsaves
            | M::Xsaves64
            | M::Xrstor
            | M::Xrstor64
            | M::Xrstors
            | M::Xrstors64
    )
}

/// FXSAVE and FXRSTOR (both widths).
pub fn is_fxsave_family(m: iced_x86::Mnemonic) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(m, M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64)
}

/// A register from `regs`, or in one case in three a memory operand.
fn reg_or_mem(rng: &mut Rng, regs: &[R], m: impl FnOnce(&mut Rng) -> MemoryOperand) -> Op {
    if rng.below(3) == 0 {
        Op::Mem(m(rng))
    } else {
        Op::Reg(pick(rng, regs))
    }
}

fn operand(rng: &mut Rng, k: K, align: i64) -> Option<Op> {
    Some(match k {
        K::r8_or_mem => reg_or_mem(rng, P8, mem),
        K::r16_or_mem => reg_or_mem(rng, P16, mem),
        K::r32_or_mem => reg_or_mem(rng, P32, mem),
        K::r64_or_mem => reg_or_mem(rng, P64, mem),
        K::xmm_or_mem => reg_or_mem(rng, XMMS, |r| aligned(r, 16)),
        K::ymm_or_mem => reg_or_mem(rng, YMMS, |r| aligned(r, 32)),
        // MMX memory operands have no alignment rule.
        K::mm_or_mem => reg_or_mem(rng, MMS, mem),
        K::mem if align > 0 => Op::Mem(aligned(rng, align)),
        K::mem => Op::Mem(mem(rng)),
        K::mem_offs => {
            Op::Moffs(super::machine::DATA + rng.below(super::machine::DATA_LEN as u64 - 8))
        }
        K::mm_reg | K::mm_rm => Op::Reg(pick(rng, MMS)),
        K::st0 => Op::Reg(R::ST0),
        K::sti_opcode => Op::Reg(pick(rng, STS)),
        K::r8_reg | K::r8_opcode => Op::Reg(pick(rng, P8)),
        K::r16_reg | K::r16_opcode | K::r16_rm => Op::Reg(pick(rng, P16)),
        K::r32_reg | K::r32_opcode | K::r32_rm | K::r32_vvvv => Op::Reg(pick(rng, P32)),
        K::r64_reg | K::r64_opcode | K::r64_rm | K::r64_vvvv => Op::Reg(pick(rng, P64)),
        K::xmm_reg | K::xmm_rm | K::xmm_vvvv | K::xmm_is4 => Op::Reg(pick(rng, XMMS)),
        K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 => Op::Reg(pick(rng, YMMS)),
        K::al => Op::Reg(R::AL),
        K::cl => Op::Reg(R::CL),
        K::ax => Op::Reg(R::AX),
        K::eax => Op::Reg(R::EAX),
        K::rax => Op::Reg(R::RAX),
        K::imm8_const_1 => Op::Imm(1),
        K::imm8 | K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => Op::Imm(rng.value() & 0xff),
        K::imm16 => Op::Imm(rng.value() & 0xffff),
        K::imm32 | K::imm32sex64 => Op::Imm(rng.value() & 0xffff_ffff),
        K::imm64 => Op::Imm(rng.value()),
        _ => return None,
    })
}

fn set_immediate(ins: &mut Instruction, code: Code, i: u32, v: u64) {
    let kind = match code.op_code().op_kind(i) {
        K::imm8 | K::imm8_const_1 => OpKind::Immediate8,
        K::imm8sex16 => OpKind::Immediate8to16,
        K::imm8sex32 => OpKind::Immediate8to32,
        K::imm8sex64 => OpKind::Immediate8to64,
        K::imm16 => OpKind::Immediate16,
        K::imm32 => OpKind::Immediate32,
        K::imm32sex64 => OpKind::Immediate32to64,
        _ => OpKind::Immediate64,
    };
    ins.set_op_kind(i, kind);
    match kind {
        OpKind::Immediate8
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64 => ins.set_immediate8(v as u8),
        OpKind::Immediate16 => ins.set_immediate16(v as u16),
        OpKind::Immediate32 | OpKind::Immediate32to64 => ins.set_immediate32(v as u32),
        _ => ins.set_immediate64(v),
    }
}

/// The instruction `code` with operands `ops` (not yet encoded).
pub fn build(code: Code, ops: &[Op]) -> Instruction {
    let mut ins = Instruction::default();
    ins.set_code(code);
    for (i, op) in ops.iter().enumerate() {
        let i = i as u32;
        match *op {
            Op::Reg(r) => {
                ins.set_op_kind(i, OpKind::Register);
                ins.set_op_register(i, r);
            }
            Op::Mem(m) => {
                ins.set_op_kind(i, OpKind::Memory);
                ins.set_memory_base(m.base);
                ins.set_memory_index(R::None);
                ins.set_memory_displacement64(m.displacement as u64);
                ins.set_memory_displ_size(1);
                ins.set_memory_index_scale(1);
            }
            Op::Imm(v) => set_immediate(&mut ins, code, i, v),
            Op::Moffs(a) => {
                ins.set_op_kind(i, OpKind::Memory);
                ins.set_memory_base(R::None);
                ins.set_memory_index(R::None);
                ins.set_memory_displacement64(a);
                ins.set_memory_displ_size(8);
                ins.set_memory_index_scale(1);
            }
        }
    }
    ins
}
