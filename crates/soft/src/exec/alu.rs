//! Integer ALU instructions: the two-operand arithmetic and logic group,
//! INC/DEC/NEG/NOT, moves and extensions, exchanges (XCHG, XADD,
//! CMPXCHG, CMPXCHG8B/16B) and the accumulator conversions.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::ops::{self, read, sext, write};
use crate::core::Core;
use crate::cpu::{RAX, RBX, RCX, RDX};
use crate::exception::{ExecResult, Fault, Stop};
use crate::flags::{mask, FlagOp, ZF};

/// Read-modify-write of operand 0: atomic through compare-exchange when
/// the instruction has a LOCK prefix and a memory destination.
pub fn rmw(
    core: &mut Core,
    ins: &Instruction,
    size: u32,
    mut f: impl FnMut(&mut Core, u64) -> u64,
) -> ExecResult<(u64, u64)> {
    if ins.op_kind(0) == OpKind::Memory && ins.has_lock_prefix() {
        let (seg, off) = ops::mem_loc(core, ins, 0);
        let bytes = (size / 8) as usize;
        let mut old = core.read_seg_rmw(seg, off, bytes)?;
        loop {
            let new = f(core, old);
            let seen = core.cmpxchg_seg(seg, off, bytes, old, new)? & mask(size);
            if seen == old {
                return Ok((old, new));
            }
            old = seen;
        }
    }
    let old = if ins.op_kind(0) == OpKind::Memory {
        let (seg, off) = ops::mem_loc(core, ins, 0);
        core.read_seg_rmw(seg, off, (size / 8) as usize)?
    } else {
        read(core, ins, 0, size)?
    };
    let new = f(core, old);
    write(core, ins, 0, size, new)?;
    Ok((old, new))
}

/// ADD, OR, ADC, SBB, AND, SUB, XOR, CMP, TEST.
pub fn binop(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let src = read(core, ins, 1, size)?;
    let cin = core.cpu.flags.cf();
    let calc = |a: u64| -> u64 {
        match m {
            Mnemonic::Add => a.wrapping_add(src),
            Mnemonic::Adc => a.wrapping_add(src).wrapping_add(u64::from(cin)),
            Mnemonic::Sub | Mnemonic::Cmp => a.wrapping_sub(src),
            Mnemonic::Sbb => a.wrapping_sub(src).wrapping_sub(u64::from(cin)),
            Mnemonic::And | Mnemonic::Test => a & src,
            Mnemonic::Or => a | src,
            _ => a ^ src,
        }
    };
    let (dst, res) = if matches!(m, Mnemonic::Cmp | Mnemonic::Test) {
        let a = read(core, ins, 0, size)?;
        (a, calc(a))
    } else {
        rmw(core, ins, size, |_, a| calc(a) & mask(size))?
    };
    let f = &mut core.cpu.flags;
    match m {
        Mnemonic::Add => f.set_lazy(FlagOp::Add, size, dst, src, res),
        Mnemonic::Adc => f.set_lazy_carry(FlagOp::Adc, size, dst, src, res, cin),
        Mnemonic::Sub | Mnemonic::Cmp => f.set_lazy(FlagOp::Sub, size, dst, src, res),
        Mnemonic::Sbb => f.set_lazy_carry(FlagOp::Sbb, size, dst, src, res, cin),
        _ => f.set_lazy(FlagOp::Logic, size, dst, src, res),
    }
    Ok(())
}

/// INC, DEC, NEG, NOT.
pub fn unop(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let (old, new) = rmw(core, ins, size, |_, a| {
        (match m {
            Mnemonic::Inc => a.wrapping_add(1),
            Mnemonic::Dec => a.wrapping_sub(1),
            Mnemonic::Neg => 0u64.wrapping_sub(a),
            _ => !a,
        }) & mask(size)
    })?;
    let f = &mut core.cpu.flags;
    match m {
        Mnemonic::Inc => f.set_lazy(FlagOp::Inc, size, old, 1, new),
        Mnemonic::Dec => f.set_lazy(FlagOp::Dec, size, old, 1, new),
        Mnemonic::Neg => f.set_lazy(FlagOp::Sub, size, 0, old, new),
        _ => {}
    }
    Ok(())
}

pub fn mov(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let v = read(core, ins, 1, size)?;
    write(core, ins, 0, size, v)
}

pub fn movzx(core: &mut Core, ins: &Instruction, signed: bool) -> ExecResult {
    let dsize = ops::op_size(ins, 0);
    let ssize = ops::op_size(ins, 1);
    let v = read(core, ins, 1, ssize)?;
    let v = if signed { sext(v, ssize) } else { v };
    write(core, ins, 0, dsize, v & mask(dsize))
}

pub fn lea(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let a = ops::ea(&core.cpu, ins);
    write(core, ins, 0, size, a & mask(size))
}

pub fn xchg(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    if ins.op_kind(0) == OpKind::Memory || ins.op_kind(1) == OpKind::Memory {
        // XCHG with memory is always locked.
        let (mi, ri) = if ins.op_kind(0) == OpKind::Memory {
            (0, 1)
        } else {
            (1, 0)
        };
        let r = read(core, ins, ri, size)?;
        let (seg, off) = ops::mem_loc(core, ins, mi);
        let bytes = (size / 8) as usize;
        let mut old = core.read_seg_rmw(seg, off, bytes)?;
        loop {
            let seen = core.cmpxchg_seg(seg, off, bytes, old, r)? & mask(size);
            if seen == old {
                break;
            }
            old = seen;
        }
        return write(core, ins, ri, size, old);
    }
    let a = read(core, ins, 0, size)?;
    let b = read(core, ins, 1, size)?;
    write(core, ins, 0, size, b)?;
    write(core, ins, 1, size, a)
}

pub fn xadd(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let src = read(core, ins, 1, size)?;
    if ins.op_kind(0) == OpKind::Register {
        // The source gets the old destination first, then the sum lands
        // in the destination (which wins when both are one register).
        let old = read(core, ins, 0, size)?;
        let new = old.wrapping_add(src) & mask(size);
        write(core, ins, 1, size, old)?;
        write(core, ins, 0, size, new)?;
        core.cpu.flags.set_lazy(FlagOp::Add, size, old, src, new);
        return Ok(());
    }
    let (old, new) = rmw(core, ins, size, |_, a| a.wrapping_add(src) & mask(size))?;
    write(core, ins, 1, size, old)?;
    core.cpu.flags.set_lazy(FlagOp::Add, size, old, src, new);
    Ok(())
}

pub fn cmpxchg(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let src = read(core, ins, 1, size)?;
    let acc = core.cpu.gpr[RAX] & mask(size);
    let old = if ins.op_kind(0) == OpKind::Memory {
        let (seg, off) = ops::mem_loc(core, ins, 0);
        core.cmpxchg_seg(seg, off, (size / 8) as usize, acc, src)? & mask(size)
    } else {
        let old = read(core, ins, 0, size)?;
        if old == acc {
            write(core, ins, 0, size, src)?;
        }
        old
    };
    if old != acc {
        core.cpu.set_gpr(RAX, size, old);
    }
    core.cpu
        .flags
        .set_lazy(FlagOp::Sub, size, acc, old, acc.wrapping_sub(old));
    Ok(())
}

/// CMPXCHG8B / CMPXCHG16B.
pub fn cmpxchg_wide(core: &mut Core, ins: &Instruction, wide: bool) -> ExecResult {
    let (seg, off) = ops::mem_loc(core, ins, 0);
    let c = &core.cpu;
    if wide {
        // The linear address must be aligned; the operand is read as the
        // destination of a write (a locked read-modify-write).
        let lin = core.seg_lin(seg, off, 16, true)?;
        if lin % 16 != 0 {
            return Err(Fault::gp(0).into());
        }
        let mut b = [0u8; 16];
        core.read_lin(lin, &mut b, crate::mmu::Access::Write, false)?;
        let old = u128::from_le_bytes(b);
        let c = &core.cpu;
        let expect = u128::from(c.gpr[RAX]) | (u128::from(c.gpr[RDX]) << 64);
        let eq = old == expect;
        if eq {
            let new = u128::from(c.gpr[RBX]) | (u128::from(c.gpr[RCX]) << 64);
            core.write_lin(lin, &new.to_le_bytes(), false)?;
        } else {
            core.cpu.gpr[RAX] = old as u64;
            core.cpu.gpr[RDX] = (old >> 64) as u64;
        }
        set_zf(core, eq);
        return Ok(());
    }
    let expect = (c.gpr[RAX] & 0xffff_ffff) | (c.gpr[RDX] << 32);
    let new = (c.gpr[RBX] & 0xffff_ffff) | (c.gpr[RCX] << 32);
    let old = core.cmpxchg_seg(seg, off, 8, expect, new)?;
    let eq = old == expect;
    if !eq {
        core.cpu.set_gpr(RAX, 32, old);
        core.cpu.set_gpr(RDX, 32, old >> 32);
    }
    set_zf(core, eq);
    Ok(())
}

fn set_zf(core: &mut Core, on: bool) {
    let v = core.cpu.flags.get();
    core.cpu
        .flags
        .set_arith((v & !ZF) | if on { ZF } else { 0 });
}

/// CBW/CWDE/CDQE and CWD/CDQ/CQO.
pub fn convert(core: &mut Core, m: Mnemonic) -> ExecResult {
    let c = &mut core.cpu;
    match m {
        Mnemonic::Cbw => c.set_gpr(RAX, 16, sext(c.gpr[RAX], 8)),
        Mnemonic::Cwde => c.set_gpr(RAX, 32, sext(c.gpr[RAX], 16)),
        Mnemonic::Cdqe => c.gpr[RAX] = sext(c.gpr[RAX], 32),
        Mnemonic::Cwd => c.set_gpr(RDX, 16, sext(c.gpr[RAX], 16) >> 16),
        Mnemonic::Cdq => c.set_gpr(RDX, 32, sext(c.gpr[RAX], 32) >> 32),
        Mnemonic::Cqo => c.gpr[RDX] = ((c.gpr[RAX] as i64) >> 63) as u64,
        _ => return Err(Stop::Unsupported),
    }
    Ok(())
}

/// BSWAP.
pub fn bswap(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let v = read(core, ins, 0, size)?;
    let r = match size {
        64 => v.swap_bytes(),
        32 => u64::from((v as u32).swap_bytes()),
        _ => 0, // 16-bit BSWAP is undefined; real CPUs zero the register.
    };
    write(core, ins, 0, size, r)
}
