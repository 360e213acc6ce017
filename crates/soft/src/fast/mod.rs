//! Pre-resolved forms of the most frequent 64-bit-mode instructions.
//!
//! When a block is decoded, each instruction that fits one of these forms
//! (MOV, the ALU group, INC/DEC, LEA, MOVZX/MOVSX, PUSH/POP, near
//! branches, CALL/RET, SETcc/CMOVcc, NOP) is compiled once into a [`Fast`]:
//! register indices, sizes, immediates, branch targets and an
//! effective-address recipe, all taken out of the iced-x86 `Instruction`
//! up front. Executing it needs no operand-kind matching, and its memory
//! accesses go straight to host memory when the TLB holds the page as RAM
//! with the needed rights ([`crate::mmu::Tlb::fast`]); anything else (page
//! crossings, MMIO, misses, faults) takes the interpreter's checked path.
//! Everything else, and every instruction outside 64-bit mode, stays with
//! the interpreter ([`crate::exec`]). Each form has its own handler
//! ([`run`]), chosen once, so execution is one indirect call.

pub mod run;

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::core::canonical;
use crate::flags::mask;

/// No register (for a memory operand's base or index).
pub(crate) const NO_REG: u8 = 0xff;

/// An effective-address recipe: `disp + base + (index << scale)`, plus
/// the FS or GS base when `seg` is one of them.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub(crate) base: u8,
    pub(crate) index: u8,
    pub(crate) scale: u8,
    /// Segment number (ES=0 .. GS=5) for the checked path.
    pub(crate) seg: u8,
    pub(crate) disp: u64,
}

/// Where an operand is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// A general register: index 0-15, or for 8-bit operands iced-x86's
    /// byte-register number 0-19 (AH-BH are 4-7 without REX).
    Reg(u8),
    Mem,
    Imm,
}

/// The two-operand ALU group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
}

/// What a compiled instruction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not compiled: the interpreter runs the `Instruction`.
    Generic,
    Nop,
    Mov,
    Alu(Alu),
    Inc,
    Dec,
    Lea,
    /// MOVZX from `size2` bits.
    Movzx,
    /// MOVSX/MOVSXD from `size2` bits.
    Movsx,
    Push,
    Pop,
    Jmp,
    Jcc(u8),
    Call,
    Ret,
    Setcc(u8),
    Cmovcc(u8),
    /// IMUL r, r/m (`src`) or IMUL r, r/m, imm (`src` times `imm`).
    Imul2,
    Imul3,
    /// SHL/SHR/SAR by an immediate (`imm`) or by CL (`src` is RCX).
    Shl,
    Shr,
    Sar,
}

/// One pre-resolved instruction.
#[derive(Debug, Clone, Copy)]
pub struct Fast {
    pub kind: Kind,
    /// The function that executes this form.
    pub h: run::Handler,
    /// Operand size in bits (the destination's for MOVZX/MOVSX).
    pub(crate) size: u8,
    /// Source size for MOVZX/MOVSX.
    pub(crate) size2: u8,
    pub(crate) dst: Loc,
    pub(crate) src: Loc,
    pub(crate) mem: Mem,
    /// Immediate (masked to the operand size) or direct branch target.
    pub(crate) imm: u64,
    /// The next instruction's address.
    pub(crate) next: u64,
    /// This instruction's address (RIP goes back here when it faults).
    pub(crate) ip: u64,
    /// The handler sets RIP itself (the interpreter, branches); other
    /// handlers leave it behind and the block loop sets it to `next` only
    /// where the block stops.
    pub sets_rip: bool,
}

impl Fast {
    const GENERIC: Fast = Fast {
        kind: Kind::Generic,
        size: 0,
        size2: 0,
        dst: Loc::Imm,
        src: Loc::Imm,
        mem: Mem {
            base: NO_REG,
            index: NO_REG,
            scale: 0,
            seg: 0,
            disp: 0,
        },
        imm: 0,
        next: 0,
        ip: 0,
        sets_rip: true,
        h: run::generic,
    };
}

fn reg_loc(r: Register) -> Option<(Loc, u8)> {
    let v = r as u32;
    match v {
        1..=20 => Some((Loc::Reg((v - 1) as u8), 8)),
        21..=36 => Some((Loc::Reg((v - 21) as u8), 16)),
        37..=52 => Some((Loc::Reg((v - 37) as u8), 32)),
        53..=68 => Some((Loc::Reg((v - 53) as u8), 64)),
        _ => None,
    }
}

fn gpr64(r: Register) -> Option<u8> {
    let v = r as u32;
    (53..=68).contains(&v).then(|| (v - 53) as u8)
}

/// The recipe of `ins`'s memory operand, if it has a 64-bit address
/// (for the translator's native forms of instructions left generic here).
pub(crate) fn mem_recipe(ins: &Instruction) -> Option<Mem> {
    mem_of(ins)
}

/// The recipe of `ins`'s memory operand, if it has a 64-bit address.
fn mem_of(ins: &Instruction) -> Option<Mem> {
    let seg = crate::exec::ops::mem_seg(ins, true) as u8;
    let base = ins.memory_base();
    let (base, disp) = match base {
        Register::None => (NO_REG, ins.memory_displacement64()),
        // iced-x86 gives RIP-relative operands as an absolute address.
        Register::RIP => (NO_REG, ins.memory_displacement64()),
        r => (gpr64(r)?, ins.memory_displacement64()),
    };
    let index = match ins.memory_index() {
        Register::None => NO_REG,
        r => gpr64(r)?,
    };
    Some(Mem {
        base,
        index,
        scale: ins.memory_index_scale().trailing_zeros() as u8,
        seg,
        disp,
    })
}

/// An operand of `ins`: its location, its size in bits, and the memory
/// recipe or immediate it brings.
fn operand(ins: &Instruction, i: u32) -> Option<(Loc, u8, Option<Mem>, u64)> {
    match ins.op_kind(i) {
        OpKind::Register => {
            let (l, s) = reg_loc(ins.op_register(i))?;
            Some((l, s, None, 0))
        }
        OpKind::Memory => {
            let m = mem_of(ins)?;
            let s = (ins.memory_size().size() * 8) as u8;
            matches!(s, 8 | 16 | 32 | 64).then_some((Loc::Mem, s, Some(m), 0))
        }
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some((Loc::Imm, 0, None, ins.immediate(i))),
        _ => None,
    }
}

/// Compiles `ins` (decoded at `bitness`) into its fast form, or
/// [`Kind::Generic`].
pub fn compile(ins: &Instruction, bitness: u32) -> Fast {
    let generic = generic(ins, bitness);
    if bitness != 64 || ins.has_lock_prefix() {
        return generic;
    }
    match compile64(ins) {
        Some(mut f) => {
            f.h = run::select(&f);
            f.ip = ins.ip();
            f.sets_rip = matches!(f.kind, Kind::Jmp | Kind::Jcc(_) | Kind::Call | Kind::Ret);
            f
        }
        None => generic,
    }
}

/// `ins` left to the interpreter.
pub fn generic(ins: &Instruction, bitness: u32) -> Fast {
    Fast {
        next: ins.next_ip() & mask(bitness),
        ip: ins.ip() & mask(bitness),
        ..Fast::GENERIC
    }
}

fn two(ins: &Instruction, kind: Kind) -> Option<Fast> {
    let (dst, size, m0, _) = operand(ins, 0)?;
    let (src, ssize, m1, imm) = operand(ins, 1)?;
    if dst == Loc::Imm || (src != Loc::Imm && ssize != size) {
        return None;
    }
    Some(Fast {
        kind,
        size,
        size2: size,
        dst,
        src,
        mem: m0.or(m1).unwrap_or(Fast::GENERIC.mem),
        imm: imm & mask(u32::from(size)),
        next: ins.next_ip(),
        ip: 0,
        sets_rip: true,
        h: run::generic,
    })
}

fn one(ins: &Instruction, kind: Kind) -> Option<Fast> {
    let (dst, size, m, imm) = operand(ins, 0)?;
    Some(Fast {
        kind,
        size,
        size2: size,
        dst,
        src: dst,
        mem: m.unwrap_or(Fast::GENERIC.mem),
        imm,
        next: ins.next_ip(),
        ip: 0,
        sets_rip: true,
        h: run::generic,
    })
}

fn branch(ins: &Instruction, kind: Kind) -> Option<Fast> {
    match ins.op_kind(0) {
        OpKind::NearBranch64 => {
            let t = ins.near_branch_target();
            canonical(t).then(|| Fast {
                kind,
                size: 64,
                imm: t,
                src: Loc::Imm,
                next: ins.next_ip(),
                ..Fast::GENERIC
            })
        }
        OpKind::Register | OpKind::Memory => {
            let f = one(ins, kind)?;
            (f.size == 64).then_some(Fast { src: f.dst, ..f })
        }
        _ => None,
    }
}

fn compile64(ins: &Instruction) -> Option<Fast> {
    use Mnemonic as M;
    let m = ins.mnemonic();
    let f = match m {
        M::Nop | M::Endbr64 | M::Pause | M::Lfence | M::Prefetcht0 | M::Prefetchw => Fast {
            kind: Kind::Nop,
            next: ins.next_ip(),
            ..Fast::GENERIC
        },
        M::Mov => {
            let r0 = ins.op_register(0);
            let r1 = ins.op_register(1);
            if r0.is_segment_register()
                || r1.is_segment_register()
                || r0.is_cr()
                || r1.is_cr()
                || r0.is_dr()
                || r1.is_dr()
            {
                return None;
            }
            two(ins, Kind::Mov)?
        }
        M::Add => two(ins, Kind::Alu(Alu::Add))?,
        M::Or => two(ins, Kind::Alu(Alu::Or))?,
        M::Adc => two(ins, Kind::Alu(Alu::Adc))?,
        M::Sbb => two(ins, Kind::Alu(Alu::Sbb))?,
        M::And => two(ins, Kind::Alu(Alu::And))?,
        M::Sub => two(ins, Kind::Alu(Alu::Sub))?,
        M::Xor => two(ins, Kind::Alu(Alu::Xor))?,
        M::Cmp => two(ins, Kind::Alu(Alu::Cmp))?,
        M::Test => two(ins, Kind::Alu(Alu::Test))?,
        M::Inc => one(ins, Kind::Inc)?,
        M::Dec => one(ins, Kind::Dec)?,
        M::Lea => {
            let (dst, size, _, _) = operand(ins, 0)?;
            if size < 32 {
                return None;
            }
            Fast {
                kind: Kind::Lea,
                size,
                dst,
                mem: mem_of(ins)?,
                next: ins.next_ip(),
                ..Fast::GENERIC
            }
        }
        M::Movzx | M::Movsx | M::Movsxd => {
            let (dst, size, _, _) = operand(ins, 0)?;
            let (src, size2, mm, _) = operand(ins, 1)?;
            if src == Loc::Imm || dst == Loc::Mem {
                return None;
            }
            Fast {
                kind: if m == M::Movzx {
                    Kind::Movzx
                } else {
                    Kind::Movsx
                },
                size,
                size2,
                dst,
                src,
                mem: mm.unwrap_or(Fast::GENERIC.mem),
                next: ins.next_ip(),
                ..Fast::GENERIC
            }
        }
        M::Push => {
            if ins.stack_pointer_increment() != -8 {
                return None;
            }
            let (src, size, mm, imm) = operand(ins, 0)?;
            if src == Loc::Mem || (src != Loc::Imm && size != 64) {
                return None;
            }
            Fast {
                kind: Kind::Push,
                size: 64,
                src,
                mem: mm.unwrap_or(Fast::GENERIC.mem),
                imm,
                next: ins.next_ip(),
                ..Fast::GENERIC
            }
        }
        M::Pop => {
            if ins.stack_pointer_increment() != 8 {
                return None;
            }
            let (dst, size, _, _) = operand(ins, 0)?;
            if !matches!(dst, Loc::Reg(_)) || size != 64 {
                return None;
            }
            Fast {
                kind: Kind::Pop,
                size: 64,
                dst,
                next: ins.next_ip(),
                ..Fast::GENERIC
            }
        }
        M::Jmp => {
            if ins.code() == Code::Jmp_m1664 || ins.code() == Code::Jmp_m1632 {
                return None;
            }
            branch(ins, Kind::Jmp)?
        }
        M::Call => {
            if !matches!(ins.code(), Code::Call_rel32_64 | Code::Call_rm64) {
                return None;
            }
            branch(ins, Kind::Call)?
        }
        M::Ret => {
            if ins.code() != Code::Retnq {
                return None;
            }
            Fast {
                kind: Kind::Ret,
                size: 64,
                next: ins.next_ip(),
                ..Fast::GENERIC
            }
        }
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => {
            if ins.op_kind(0) != OpKind::NearBranch64 {
                return None;
            }
            let cc = crate::exec::bits::cc_index(ins.condition_code() as u8);
            branch(ins, Kind::Jcc(cc))?
        }
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => {
            let cc = crate::exec::bits::cc_index(ins.condition_code() as u8);
            one(ins, Kind::Setcc(cc))?
        }
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => {
            let cc = crate::exec::bits::cc_index(ins.condition_code() as u8);
            let f = two(ins, Kind::Cmovcc(cc))?;
            if f.size < 16 || f.src == Loc::Imm {
                return None;
            }
            f
        }
        M::Imul if ins.op_count() == 2 => {
            let f = two(ins, Kind::Imul2)?;
            if f.size < 16 || !matches!(f.dst, Loc::Reg(_)) || f.src == Loc::Imm {
                return None;
            }
            f
        }
        M::Imul if ins.op_count() == 3 => {
            let (dst, size, _, _) = operand(ins, 0)?;
            let (src, ssize, mm, _) = operand(ins, 1)?;
            let (k, _, _, imm) = operand(ins, 2)?;
            if k != Loc::Imm || src == Loc::Imm || ssize != size || size < 16 {
                return None;
            }
            Fast {
                kind: Kind::Imul3,
                size,
                size2: size,
                dst,
                src,
                mem: mm.unwrap_or(Fast::GENERIC.mem),
                imm: imm & mask(u32::from(size)),
                next: ins.next_ip(),
                ip: 0,
                sets_rip: true,
                h: run::generic,
            }
        }
        M::Shl | M::Sal | M::Shr | M::Sar => {
            let kind = match m {
                M::Shr => Kind::Shr,
                M::Sar => Kind::Sar,
                _ => Kind::Shl,
            };
            let mut f = one(ins, kind)?;
            f.src = Loc::Imm;
            match ins.op_count() {
                1 => f.imm = 1,
                2 => match operand(ins, 1)? {
                    (Loc::Imm, _, _, n) => f.imm = n & 0xff,
                    (Loc::Reg(1), 8, _, _) => f.src = Loc::Reg(1),
                    _ => return None,
                },
                _ => return None,
            }
            f
        }
        _ => return None,
    };
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn fast(bytes: &[u8]) -> Fast {
        let mut d = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE);
        compile(&d.decode(), 64)
    }

    #[test]
    fn common_forms_compile() {
        // mov rax, [rbx+rcx*8+0x10]
        let f = fast(&[0x48, 0x8b, 0x44, 0xcb, 0x10]);
        assert_eq!(f.kind, Kind::Mov);
        assert_eq!((f.dst, f.src, f.size), (Loc::Reg(0), Loc::Mem, 64));
        assert_eq!(
            (f.mem.base, f.mem.index, f.mem.scale, f.mem.disp),
            (3, 1, 3, 0x10)
        );
        // add eax, 5
        let f = fast(&[0x83, 0xc0, 0x05]);
        assert_eq!(f.kind, Kind::Alu(Alu::Add));
        assert_eq!((f.imm, f.size), (5, 32));
        // jne -2 (to itself)
        let f = fast(&[0x75, 0xfe]);
        assert_eq!(f.kind, Kind::Jcc(5));
        assert_eq!(f.imm, 0x1000);
        // mov ah, al keeps the byte-register numbering
        let f = fast(&[0x88, 0xc4]);
        assert_eq!((f.dst, f.src, f.size), (Loc::Reg(4), Loc::Reg(0), 8));
    }

    #[test]
    fn unusual_forms_stay_generic() {
        // lock add [rax], ebx
        assert_eq!(fast(&[0xf0, 0x01, 0x18]).kind, Kind::Generic);
        // mov eax, [ebx] (32-bit address)
        assert_eq!(fast(&[0x67, 0x8b, 0x03]).kind, Kind::Generic);
        // mov rax, cr3
        assert_eq!(fast(&[0x0f, 0x20, 0xd8]).kind, Kind::Generic);
        // push fs
        assert_eq!(fast(&[0x0f, 0xa0]).kind, Kind::Generic);
        // ret 8
        assert_eq!(fast(&[0xc2, 0x08, 0x00]).kind, Kind::Generic);
        // 32-bit code
        let mut d = Decoder::with_ip(32, &[0x8b, 0x03], 0, DecoderOptions::NONE);
        assert_eq!(compile(&d.decode(), 32).kind, Kind::Generic);
    }
}
