//! Execution of compiled forms: one handler per form, specialised at
//! compile time by operand locations (and ALU operation), so the hot
//! path has no operand-kind decisions left.

use iced_x86::Instruction;

use super::{Alu, Fast, Kind, Loc, Mem, NO_REG};
use crate::core::{canonical, Core};
use crate::cpu::{RSP, SS};
use crate::exception::{ExecResult, Fault, Stop};
use crate::flags::{mask, FlagOp};
use crate::mmu::{PERM_SR, PERM_SW, PERM_UR, PERM_UW};
use crate::phys::{Ram, PAGE};

/// Executes one compiled form (RIP already points past it).
pub type Handler = fn(&mut Core, &Fast, &Instruction) -> ExecResult;

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

/// The handler of `Kind::Generic`: the interpreter, with RIP past the
/// instruction while it runs (the block loop puts it back on a fault).
pub fn generic(core: &mut Core, f: &Fast, ins: &Instruction) -> ExecResult {
    core.cpu.rip = f.next;
    crate::exec::dispatch(core, ins)
}

const REG: u8 = 0;
const IMM: u8 = 1;
const MEM: u8 = 2;

fn loc_code(l: Loc) -> u8 {
    match l {
        Loc::Reg(_) => REG,
        Loc::Imm => IMM,
        Loc::Mem => MEM,
    }
}

macro_rules! alu_op {
    ($op:expr, $s:expr, $d:expr, $z:expr) => {
        match $op {
            Alu::Add => alu_k::<0, $s, $d, $z> as Handler,
            Alu::Or => alu_k::<1, $s, $d, $z>,
            Alu::Adc => alu_k::<2, $s, $d, $z>,
            Alu::Sbb => alu_k::<3, $s, $d, $z>,
            Alu::And => alu_k::<4, $s, $d, $z>,
            Alu::Sub => alu_k::<5, $s, $d, $z>,
            Alu::Xor => alu_k::<6, $s, $d, $z>,
            Alu::Cmp => alu_k::<7, $s, $d, $z>,
            Alu::Test => alu_k::<8, $s, $d, $z>,
        }
    };
}

macro_rules! alu_for {
    ($f:expr, $op:expr, $s:expr, $d:expr) => {
        match $f.size {
            8 => alu_op!($op, $s, $d, 8),
            16 => alu_op!($op, $s, $d, 16),
            32 => alu_op!($op, $s, $d, 32),
            _ => alu_op!($op, $s, $d, 64),
        }
    };
}

/// A handler generic over the operand size, picked by `size`.
macro_rules! sized {
    ($h:ident, $size:expr) => {
        match $size {
            8 => $h::<8> as Handler,
            16 => $h::<16>,
            32 => $h::<32>,
            _ => $h::<64>,
        }
    };
}

macro_rules! shift_sized {
    ($k:expr, $size:expr) => {
        match $size {
            8 => shift_ri::<$k, 8> as Handler,
            16 => shift_ri::<$k, 16>,
            32 => shift_ri::<$k, 32>,
            _ => shift_ri::<$k, 64>,
        }
    };
}

/// The handler for a compiled form.
pub fn select(f: &Fast) -> Handler {
    let (d, s) = (loc_code(f.dst), loc_code(f.src));
    match f.kind {
        Kind::Mov => match (d, s) {
            (REG, REG) => sized!(mov_rr, f.size),
            (REG, IMM) => sized!(mov_ri, f.size),
            (REG, MEM) => sized!(mov_rm, f.size),
            (MEM, REG) => sized!(mov_mr, f.size),
            (MEM, IMM) => sized!(mov_mi, f.size),
            _ => run,
        },
        Kind::Alu(op) => match (d, s) {
            (REG, REG) => alu_for!(f, op, REG, REG),
            (REG, IMM) => alu_for!(f, op, IMM, REG),
            (REG, MEM) => alu_for!(f, op, MEM, REG),
            (MEM, REG) => alu_for!(f, op, REG, MEM),
            (MEM, IMM) => alu_for!(f, op, IMM, MEM),
            _ => run,
        },
        Kind::Jcc(cc) => match cc {
            0 => jcc::<0>,
            1 => jcc::<1>,
            2 => jcc::<2>,
            3 => jcc::<3>,
            4 => jcc::<4>,
            5 => jcc::<5>,
            6 => jcc::<6>,
            7 => jcc::<7>,
            8 => jcc::<8>,
            9 => jcc::<9>,
            10 => jcc::<10>,
            11 => jcc::<11>,
            12 => jcc::<12>,
            13 => jcc::<13>,
            14 => jcc::<14>,
            _ => jcc::<15>,
        },
        Kind::Jmp if s == IMM => jmp_direct,
        Kind::Lea => lea,
        Kind::Push if s == REG => push_r,
        Kind::Pop => pop_r,
        Kind::Call if s == IMM => call_direct,
        Kind::Ret => ret,
        Kind::Movzx if s == REG => movzx_r,
        Kind::Movzx if s == MEM => movzx_m,
        Kind::Movsx if s == REG => movsx_r,
        Kind::Movsx if s == MEM => movsx_m,
        Kind::Nop => nop,
        Kind::Imul2 if s == REG => sized!(imul_rr, f.size),
        Kind::Shl if d == REG && s == IMM => shift_sized!(0, f.size),
        Kind::Shr if d == REG && s == IMM => shift_sized!(1, f.size),
        Kind::Sar if d == REG && s == IMM => shift_sized!(2, f.size),
        Kind::Setcc(_) if d == REG => setcc_r,
        Kind::Cmovcc(_) if s == REG => cmov_rr,
        Kind::Inc if d == REG => incdec_r::<true>,
        Kind::Dec if d == REG => incdec_r::<false>,
        _ => run,
    }
}

fn movsx_r(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = rd(core, reg_of(f.src), f.size2);
    let v = crate::exec::ops::sext(v, u32::from(f.size2)) & mask(u32::from(f.size));
    wr(core, reg_of(f.dst), f.size, v);
    Ok(())
}

fn movsx_m(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = load(core, &f.mem, f.size2)?;
    let v = crate::exec::ops::sext(v, u32::from(f.size2)) & mask(u32::from(f.size));
    wr(core, reg_of(f.dst), f.size, v);
    Ok(())
}

fn imul_rr<const Z: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let bits = u32::from(Z);
    let a = rd(core, reg_of(f.dst), Z);
    let b = rd(core, reg_of(f.src), Z);
    let (lo, over) = match bits {
        64 => {
            let (v, o) = (a as i64).overflowing_mul(b as i64);
            (v as u64, o)
        }
        32 => {
            let (v, o) = (a as i32).overflowing_mul(b as i32);
            (u64::from(v as u32), o)
        }
        _ => {
            let (v, o) = (a as i16).overflowing_mul(b as i16);
            (u64::from(v as u16), o)
        }
    };
    wr(core, reg_of(f.dst), Z, lo);
    core.cpu.flags.set_szp(bits, lo, over, over);
    Ok(())
}

fn setcc_r(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    if let Kind::Setcc(cc) = f.kind {
        let v = u64::from(core.cpu.flags.cond(cc));
        wr(core, reg_of(f.dst), 8, v);
    }
    Ok(())
}

fn cmov_rr(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    if let Kind::Cmovcc(cc) = f.kind {
        let r = if core.cpu.flags.cond(cc) {
            f.src
        } else {
            f.dst
        };
        let v = rd(core, reg_of(r), f.size);
        wr(core, reg_of(f.dst), f.size, v);
    }
    Ok(())
}

fn incdec_r<const INC: bool>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let bits = u32::from(f.size);
    let old = rd(core, reg_of(f.dst), f.size);
    let (new, fop) = if INC {
        (old.wrapping_add(1) & mask(bits), FlagOp::Inc)
    } else {
        (old.wrapping_sub(1) & mask(bits), FlagOp::Dec)
    };
    wr(core, reg_of(f.dst), f.size, new);
    core.cpu.flags.set_lazy(fop, bits, old, 1, new);
    Ok(())
}

/// SHL (0), SHR (1), SAR (2) of a register by an immediate.
fn shift_ri<const K: u8, const Z: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    use crate::flags::{CF, OF, PF, SF, ZF};
    let size = Z;
    let bits = u32::from(size);
    let n = (f.imm as u32) & if bits == 64 { 63 } else { 31 };
    let r0 = reg_of(f.dst);
    let v = rd(core, r0, size);
    if n == 0 {
        wr(core, r0, size, v);
        return Ok(());
    }
    let m = mask(bits);
    let msb = |x: u64| (x >> (bits - 1)) & 1 != 0;
    let (r, cf, of) = match K {
        0 => {
            let r = if n >= bits { 0 } else { (v << n) & m };
            let cf = n <= bits && (v >> (bits - n)) & 1 != 0;
            (r, cf, msb(r) != cf)
        }
        1 => {
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
    wr(core, r0, size, r);
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

fn nop(_: &mut Core, _: &Fast, _: &Instruction) -> ExecResult {
    Ok(())
}

fn reg_of(l: Loc) -> u8 {
    match l {
        Loc::Reg(r) => r,
        _ => 0,
    }
}

fn mov_rr<const Z: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = rd(core, reg_of(f.src), Z);
    wr(core, reg_of(f.dst), Z, v);
    Ok(())
}

fn mov_ri<const Z: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    wr(core, reg_of(f.dst), Z, f.imm);
    Ok(())
}

fn mov_rm<const Z: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = load(core, &f.mem, Z)?;
    wr(core, reg_of(f.dst), Z, v);
    Ok(())
}

fn mov_mi<const Z: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    store(core, &f.mem, Z, f.imm)
}

fn jmp_direct(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    core.cpu.rip = f.imm;
    Ok(())
}

fn mov_mr<const Z: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = rd(core, reg_of(f.src), Z);
    store(core, &f.mem, Z, v)
}

fn movzx_r(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = rd(core, reg_of(f.src), f.size2);
    wr(core, reg_of(f.dst), f.size, v);
    Ok(())
}

fn movzx_m(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = load(core, &f.mem, f.size2)?;
    wr(core, reg_of(f.dst), f.size, v);
    Ok(())
}

fn lea(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let a = ea(core, &f.mem);
    wr(core, reg_of(f.dst), f.size, a & mask(u32::from(f.size)));
    Ok(())
}

/// Jcc specialised by its condition.
fn jcc<const CC: u8>(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    core.cpu.rip = if core.cpu.flags.cond(CC) {
        f.imm
    } else {
        f.next
    };
    Ok(())
}

fn push_r(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let v = core.cpu.gpr[(reg_of(f.src) & 15) as usize];
    push64(core, v)
}

fn pop_r(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    let sp = core.cpu.gpr[RSP];
    let v = match load_fast(core, sp, 8) {
        Some(v) => v,
        None => core.read_seg(SS, sp, 8)?,
    };
    core.cpu.gpr[RSP] = sp.wrapping_add(8);
    core.cpu.gpr[(reg_of(f.dst) & 15) as usize] = v;
    Ok(())
}

fn call_direct(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
    push64(core, f.next)?;
    core.cpu.rip = f.imm;
    Ok(())
}

fn ret(core: &mut Core, _: &Fast, _: &Instruction) -> ExecResult {
    let sp = core.cpu.gpr[RSP];
    let t = match load_fast(core, sp, 8) {
        Some(v) => v,
        None => core.read_seg(SS, sp, 8)?,
    };
    jump(core, t)?;
    core.cpu.gpr[RSP] = sp.wrapping_add(8);
    Ok(())
}

/// The ALU group specialised by operation and operand locations.
fn alu_k<const OP: u8, const S: u8, const D: u8, const Z: u8>(
    core: &mut Core,
    f: &Fast,
    _: &Instruction,
) -> ExecResult {
    let size = Z;
    let bits = u32::from(size);
    let src = match S {
        REG => rd(core, reg_of(f.src), size),
        IMM => f.imm,
        _ => load(core, &f.mem, size)?,
    };
    let cmp_like = OP == 7 || OP == 8;
    let dst = match D {
        REG => rd(core, reg_of(f.dst), size),
        _ if cmp_like => load(core, &f.mem, size)?,
        _ => load_rmw(core, &f.mem, size)?,
    };
    let m = mask(bits);
    let cin = (OP == 2 || OP == 3) && core.cpu.flags.cf();
    let (res, fop) = match OP {
        0 => (dst.wrapping_add(src) & m, FlagOp::Add),
        1 => (dst | src, FlagOp::Logic),
        2 => (
            dst.wrapping_add(src).wrapping_add(u64::from(cin)) & m,
            FlagOp::Adc,
        ),
        3 => (
            dst.wrapping_sub(src).wrapping_sub(u64::from(cin)) & m,
            FlagOp::Sbb,
        ),
        4 | 8 => (dst & src, FlagOp::Logic),
        5 | 7 => (dst.wrapping_sub(src) & m, FlagOp::Sub),
        _ => (dst ^ src, FlagOp::Logic),
    };
    if !cmp_like {
        match D {
            REG => wr(core, reg_of(f.dst), size, res),
            _ => store(core, &f.mem, size, res)?,
        }
    }
    let fl = &mut core.cpu.flags;
    if OP == 2 || OP == 3 {
        fl.set_lazy_carry(fop, bits, dst, src, res, cin);
    } else {
        fl.set_lazy(fop, bits, dst, src, res);
    }
    Ok(())
}

/// Every compiled form, through operand-location matching.
fn run(core: &mut Core, f: &Fast, _: &Instruction) -> ExecResult {
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
            core.cpu.rip = if core.cpu.flags.cond(cc) {
                f.imm
            } else {
                f.next
            };
            Ok(())
        }
        Kind::Call => {
            let t = get(core, f, f.src, 64)?;
            // The CPU writes the return address before it checks the
            // target: a non-canonical one faults with RSP as before and
            // the slot below it written.
            let sp = core.cpu.gpr[RSP];
            push64(core, f.next)?;
            if !canonical(t) {
                core.cpu.gpr[RSP] = sp;
                return Err(Fault::gp(0).into());
            }
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
    let size = f.size;
    let bits = u32::from(size);
    let raw = if f.src == Loc::Imm {
        f.imm
    } else {
        core.cpu.gpr[1] & 0xff
    };
    let n = (raw as u32) & if bits == 64 { 63 } else { 31 };
    let v = match f.dst {
        // A memory operand is accessed as a write even for a zero count
        // (the CPU faults on a read-only page).
        Loc::Mem => load_rmw(core, &f.mem, size)?,
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
    use crate::exec::shift::{shift_rotate, ShiftOp};
    let op = match f.kind {
        Kind::Shl => ShiftOp::Shl,
        Kind::Shr => ShiftOp::Shr,
        _ => ShiftOp::Sar,
    };
    let (r, fl) = shift_rotate(op, v, n, bits, 0);
    put(core, f, f.dst, size, r)?;
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
