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
//! the interpreter ([`crate::exec`]).

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::core::{canonical, Core};
use crate::cpu::{RSP, SS};
use crate::exception::{ExecResult, Fault, Stop};
use crate::flags::{mask, FlagOp};
use crate::mmu::{PERM_SR, PERM_SW, PERM_UR, PERM_UW};
use crate::phys::{Ram, PAGE};

/// No register (for a memory operand's base or index).
const NO_REG: u8 = 0xff;

/// An effective-address recipe: `disp + base + (index << scale)`, plus
/// the FS or GS base when `seg` is one of them.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    base: u8,
    index: u8,
    scale: u8,
    /// Segment number (ES=0 .. GS=5) for the checked path.
    seg: u8,
    disp: u64,
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
    /// Operand size in bits (the destination's for MOVZX/MOVSX).
    size: u8,
    /// Source size for MOVZX/MOVSX.
    size2: u8,
    dst: Loc,
    src: Loc,
    mem: Mem,
    /// Immediate (masked to the operand size) or direct branch target.
    imm: u64,
    /// The next instruction's address.
    next: u64,
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

/// The recipe of `ins`'s memory operand, if it has a 64-bit address.
fn mem_of(ins: &Instruction) -> Option<Mem> {
    let seg = crate::exec::ops::seg_index(ins.memory_segment()) as u8;
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
    if bitness != 64 || ins.has_lock_prefix() {
        return Fast::GENERIC;
    }
    compile64(ins).unwrap_or(Fast::GENERIC)
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

#[inline(always)]
fn rd(core: &Core, r: u8, size: u8) -> u64 {
    let g = &core.cpu.gpr;
    match size {
        64 => g[(r & 15) as usize],
        32 => g[(r & 15) as usize] & 0xffff_ffff,
        16 => g[(r & 15) as usize] & 0xffff,
        _ => core.cpu.get8(r as usize),
    }
}

#[inline(always)]
fn wr(core: &mut Core, r: u8, size: u8, v: u64) {
    if size == 8 {
        core.cpu.set8(r as usize, v);
    } else {
        core.cpu.set_gpr(r as usize, u32::from(size), v);
    }
}

#[inline(always)]
fn ea(core: &Core, m: &Mem) -> u64 {
    let g = &core.cpu.gpr;
    let mut a = m.disp;
    if m.base != NO_REG {
        a = a.wrapping_add(g[(m.base & 15) as usize]);
    }
    if m.index != NO_REG {
        a = a.wrapping_add(g[(m.index & 15) as usize] << m.scale);
    }
    a
}

/// The linear address of a memory operand (64-bit mode: only FS and GS
/// have bases).
#[inline(always)]
fn linear(core: &Core, m: &Mem, off: u64) -> u64 {
    if m.seg >= 4 {
        core.cpu.seg[m.seg as usize].base.wrapping_add(off)
    } else {
        off
    }
}

#[inline(always)]
fn user(core: &Core) -> bool {
    core.cpu.seg[crate::cpu::CS].selector & 3 == 3
}

/// Loads `bytes` at linear `lin` through the TLB when it allows.
#[inline(always)]
fn load_fast(core: &Core, lin: u64, bytes: usize) -> Option<u64> {
    let off = (lin & (PAGE - 1)) as usize;
    if off + bytes > PAGE as usize {
        return None;
    }
    let need = if user(core) { PERM_UR } else { PERM_SR };
    let (host, _) = core.tlb.fast(lin, need)?;
    Some(Ram::load(host, off, bytes))
}

/// Stores through the TLB when it allows; false when the checked path
/// must do it.
#[inline(always)]
fn store_fast(core: &mut Core, lin: u64, bytes: usize, v: u64) -> bool {
    let off = (lin & (PAGE - 1)) as usize;
    if off + bytes > PAGE as usize {
        return false;
    }
    let need = if user(core) { PERM_UW } else { PERM_SW };
    let Some((host, pa)) = core.tlb.fast(lin, need) else {
        return false;
    };
    if core.shared.ram.store(pa, host, off, bytes, v) {
        core.code_written = true;
    }
    true
}

#[inline(always)]
fn load(core: &mut Core, m: &Mem, size: u8) -> ExecResult<u64> {
    let off = ea(core, m);
    let bytes = usize::from(size / 8);
    if let Some(v) = load_fast(core, linear(core, m, off), bytes) {
        return Ok(v);
    }
    core.read_seg(m.seg as usize, off, bytes)
}

#[inline(always)]
fn store(core: &mut Core, m: &Mem, size: u8, v: u64) -> ExecResult {
    let off = ea(core, m);
    let bytes = usize::from(size / 8);
    if store_fast(core, linear(core, m, off), bytes, v) {
        return Ok(());
    }
    core.write_seg(m.seg as usize, off, bytes, v)
}

/// Reads a read-modify-write destination with write rights checked.
#[inline(always)]
fn load_rmw(core: &mut Core, m: &Mem, size: u8) -> ExecResult<u64> {
    let off = ea(core, m);
    let bytes = usize::from(size / 8);
    let lin = linear(core, m, off);
    let o = (lin & (PAGE - 1)) as usize;
    if o + bytes <= PAGE as usize {
        let need = if user(core) { PERM_UW } else { PERM_SW };
        if let Some((host, _)) = core.tlb.fast(lin, need) {
            return Ok(Ram::load(host, o, bytes));
        }
    }
    core.read_seg_rmw(m.seg as usize, off, bytes)
}

#[inline(always)]
fn get(core: &mut Core, f: &Fast, l: Loc, size: u8) -> ExecResult<u64> {
    match l {
        Loc::Reg(r) => Ok(rd(core, r, size)),
        Loc::Imm => Ok(f.imm),
        Loc::Mem => load(core, &f.mem, size),
    }
}

#[inline(always)]
fn put(core: &mut Core, f: &Fast, l: Loc, size: u8, v: u64) -> ExecResult {
    match l {
        Loc::Reg(r) => {
            wr(core, r, size, v);
            Ok(())
        }
        _ => store(core, &f.mem, size, v),
    }
}

#[inline(always)]
fn push64(core: &mut Core, v: u64) -> ExecResult {
    let sp = core.cpu.gpr[RSP].wrapping_sub(8);
    if !store_fast(core, sp, 8, v) {
        core.write_seg(SS, sp, 8, v)?;
    }
    core.cpu.gpr[RSP] = sp;
    Ok(())
}

#[inline(always)]
fn jump(core: &mut Core, t: u64) -> ExecResult {
    if !canonical(t) {
        return Err(Fault::gp(0).into());
    }
    core.cpu.rip = t;
    Ok(())
}

/// Executes a compiled instruction. Like [`crate::exec::step`], RIP is
/// left at the instruction when it faults.
#[inline(always)]
pub fn exec(core: &mut Core, f: &Fast) -> ExecResult {
    let ip = core.cpu.rip;
    core.cpu.rip = f.next;
    let r = run(core, f);
    if r.is_err() {
        core.cpu.rip = ip;
    }
    r
}

#[inline(always)]
fn run(core: &mut Core, f: &Fast) -> ExecResult {
    let size = f.size;
    match f.kind {
        Kind::Nop => Ok(()),
        Kind::Mov => {
            let v = get(core, f, f.src, size)?;
            put(core, f, f.dst, size, v)
        }
        Kind::Alu(op) => alu(core, f, op),
        Kind::Inc | Kind::Dec => {
            let old = match f.dst {
                Loc::Mem => load_rmw(core, &f.mem, size)?,
                _ => get(core, f, f.dst, size)?,
            };
            let (new, fop) = if f.kind == Kind::Inc {
                (old.wrapping_add(1) & mask(u32::from(size)), FlagOp::Inc)
            } else {
                (old.wrapping_sub(1) & mask(u32::from(size)), FlagOp::Dec)
            };
            put(core, f, f.dst, size, new)?;
            core.cpu.flags.set_lazy(fop, u32::from(size), old, 1, new);
            Ok(())
        }
        Kind::Lea => {
            let a = ea(core, &f.mem);
            put(core, f, f.dst, size, a & mask(u32::from(size)))
        }
        Kind::Movzx | Kind::Movsx => {
            let v = get(core, f, f.src, f.size2)?;
            let v = if f.kind == Kind::Movsx {
                crate::exec::ops::sext(v, u32::from(f.size2)) & mask(u32::from(size))
            } else {
                v
            };
            put(core, f, f.dst, size, v)
        }
        Kind::Push => {
            let v = get(core, f, f.src, 64)?;
            push64(core, v)
        }
        Kind::Pop => {
            let sp = core.cpu.gpr[RSP];
            let v = match load_fast(core, sp, 8) {
                Some(v) => v,
                None => core.read_seg(SS, sp, 8)?,
            };
            core.cpu.gpr[RSP] = sp.wrapping_add(8);
            put(core, f, f.dst, 64, v)
        }
        Kind::Jmp => {
            let t = get(core, f, f.src, 64)?;
            jump(core, t)
        }
        Kind::Jcc(cc) => {
            if core.cpu.flags.cond(cc) {
                core.cpu.rip = f.imm;
            }
            Ok(())
        }
        Kind::Call => {
            let t = get(core, f, f.src, 64)?;
            if !canonical(t) {
                return Err(Fault::gp(0).into());
            }
            push64(core, f.next)?;
            core.cpu.rip = t;
            Ok(())
        }
        Kind::Ret => {
            let sp = core.cpu.gpr[RSP];
            let t = match load_fast(core, sp, 8) {
                Some(v) => v,
                None => core.read_seg(SS, sp, 8)?,
            };
            jump(core, t)?;
            core.cpu.gpr[RSP] = sp.wrapping_add(8);
            Ok(())
        }
        Kind::Setcc(cc) => {
            let v = u64::from(core.cpu.flags.cond(cc));
            put(core, f, f.dst, 8, v)
        }
        Kind::Cmovcc(cc) => {
            // The source is read (and can fault) whatever the condition.
            let src = get(core, f, f.src, size)?;
            let v = if core.cpu.flags.cond(cc) {
                src
            } else {
                get(core, f, f.dst, size)?
            };
            put(core, f, f.dst, size, v)
        }
        Kind::Imul2 | Kind::Imul3 => {
            let bits = u32::from(size);
            let (a, b) = if f.kind == Kind::Imul2 {
                (get(core, f, f.dst, size)?, get(core, f, f.src, size)?)
            } else {
                (get(core, f, f.src, size)?, f.imm)
            };
            let sx = |v: u64| i128::from(crate::exec::ops::sext(v, bits) as i64);
            let full = sx(a) * sx(b);
            let lo = full as u64 & mask(bits);
            let over = sx(lo) != full;
            put(core, f, f.dst, size, lo)?;
            core.cpu.flags.set_szp(bits, lo, over, over);
            Ok(())
        }
        Kind::Shl | Kind::Shr | Kind::Sar => shift(core, f),
        Kind::Generic => Err(Stop::Unsupported),
    }
}

/// SHL/SHR/SAR with the interpreter's flag results (`exec::shift`).
#[inline(always)]
fn shift(core: &mut Core, f: &Fast) -> ExecResult {
    use crate::flags::{CF, OF, PF, SF, ZF};
    let size = f.size;
    let bits = u32::from(size);
    let raw = if f.src == Loc::Imm {
        f.imm
    } else {
        core.cpu.gpr[1] & 0xff
    };
    let n = (raw as u32) & if bits == 64 { 63 } else { 31 };
    let v = match f.dst {
        Loc::Mem if n != 0 => load_rmw(core, &f.mem, size)?,
        _ => get(core, f, f.dst, size)?,
    };
    if n == 0 {
        // No flags change; a register destination is still written
        // (32-bit ones zero-extended).
        if let Loc::Reg(r) = f.dst {
            wr(core, r, size, v);
        }
        return Ok(());
    }
    let m = mask(bits);
    let msb = |x: u64| (x >> (bits - 1)) & 1 != 0;
    let (r, cf, of) = match f.kind {
        Kind::Shl => {
            let r = if n >= bits { 0 } else { (v << n) & m };
            let cf = n <= bits && (v >> (bits - n)) & 1 != 0;
            (r, cf, msb(r) != cf)
        }
        Kind::Shr => {
            let r = if n >= bits { 0 } else { v >> n };
            let cf = n <= bits && (v >> (n - 1)) & 1 != 0;
            (r, cf, msb(v))
        }
        _ => {
            let sv = crate::exec::ops::sext(v, bits) as i64;
            let r = (sv >> n.min(63)) as u64 & m;
            let cf = (sv >> (n - 1).min(63)) & 1 != 0;
            (r, cf, false)
        }
    };
    put(core, f, f.dst, size, r)?;
    let mut fl = 0;
    if r == 0 {
        fl |= ZF;
    }
    if msb(r) {
        fl |= SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        fl |= PF;
    }
    if cf {
        fl |= CF;
    }
    if of {
        fl |= OF;
    }
    core.cpu.flags.set_arith(fl);
    Ok(())
}

#[inline(always)]
fn alu(core: &mut Core, f: &Fast, op: Alu) -> ExecResult {
    let size = f.size;
    let bits = u32::from(size);
    let src = match f.src {
        Loc::Reg(r) => rd(core, r, size),
        Loc::Imm => f.imm,
        Loc::Mem => load(core, &f.mem, size)?,
    };
    let dst = match f.dst {
        Loc::Reg(r) => rd(core, r, size),
        _ if matches!(op, Alu::Cmp | Alu::Test) => load(core, &f.mem, size)?,
        _ => load_rmw(core, &f.mem, size)?,
    };
    let m = mask(bits);
    let cin = matches!(op, Alu::Adc | Alu::Sbb) && core.cpu.flags.cf();
    let (res, fop) = match op {
        Alu::Add => (dst.wrapping_add(src) & m, FlagOp::Add),
        Alu::Sub | Alu::Cmp => (dst.wrapping_sub(src) & m, FlagOp::Sub),
        Alu::Adc => (
            dst.wrapping_add(src).wrapping_add(u64::from(cin)) & m,
            FlagOp::Adc,
        ),
        Alu::Sbb => (
            dst.wrapping_sub(src).wrapping_sub(u64::from(cin)) & m,
            FlagOp::Sbb,
        ),
        Alu::And | Alu::Test => (dst & src, FlagOp::Logic),
        Alu::Or => (dst | src, FlagOp::Logic),
        Alu::Xor => (dst ^ src, FlagOp::Logic),
    };
    if !matches!(op, Alu::Cmp | Alu::Test) {
        // Written before the flags so a faulting store leaves them as
        // they were.
        put(core, f, f.dst, size, res)?;
    }
    let fl = &mut core.cpu.flags;
    if matches!(op, Alu::Adc | Alu::Sbb) {
        fl.set_lazy_carry(fop, bits, dst, src, res, cin);
    } else {
        fl.set_lazy(fop, bits, dst, src, res);
    }
    Ok(())
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
