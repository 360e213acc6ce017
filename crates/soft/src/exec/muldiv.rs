//! MUL, IMUL (one, two and three operands), DIV and IDIV, with #DE on a
//! zero divisor or a quotient that does not fit.

use iced_x86::Instruction;

use super::ops::{self, read, sext, write};
use crate::core::Core;
use crate::cpu::{RAX, RDX};
use crate::exception::{ExecResult, Fault, DE};
use crate::flags::mask;

fn acc_pair(core: &Core, size: u32) -> (u64, u64) {
    let c = &core.cpu;
    if size == 8 {
        (c.gpr[RAX] & 0xff, (c.gpr[RAX] >> 8) & 0xff)
    } else {
        (c.gpr[RAX] & mask(size), c.gpr[RDX] & mask(size))
    }
}

fn set_pair(core: &mut Core, size: u32, lo: u64, hi: u64) {
    if size == 8 {
        core.cpu.set_gpr(RAX, 16, (lo & 0xff) | ((hi & 0xff) << 8));
    } else {
        core.cpu.set_gpr(RAX, size, lo);
        core.cpu.set_gpr(RDX, size, hi);
    }
}

pub fn mul(core: &mut Core, ins: &Instruction, signed: bool) -> ExecResult {
    let size = ops::op_size(ins, 0);
    if ins.op_count() >= 2 {
        // IMUL r, r/m [, imm].
        let (a, b) = if ins.op_count() == 3 {
            (read(core, ins, 1, size)?, read(core, ins, 2, size)?)
        } else {
            (read(core, ins, 0, size)?, read(core, ins, 1, size)?)
        };
        let full = i128::from(sext(a, size) as i64) * i128::from(sext(b, size) as i64);
        let lo = full as u64 & mask(size);
        let over = i128::from(sext(lo, size) as i64) != full;
        write(core, ins, 0, size, lo)?;
        core.cpu.flags.set_szp(size, lo, over, over);
        return Ok(());
    }
    let src = read(core, ins, 0, size)?;
    let (a, _) = acc_pair(core, size);
    let (lo, hi, over) = if signed {
        let full = i128::from(sext(a, size) as i64) * i128::from(sext(src, size) as i64);
        let lo = full as u64 & mask(size);
        let hi = (full >> size) as u64 & mask(size);
        (lo, hi, i128::from(sext(lo, size) as i64) != full)
    } else {
        let full = u128::from(a) * u128::from(src);
        let lo = full as u64 & mask(size);
        let hi = (full >> size) as u64 & mask(size);
        (lo, hi, hi != 0)
    };
    set_pair(core, size, lo, hi);
    core.cpu.flags.set_szp(size, lo, over, over);
    Ok(())
}

pub fn div(core: &mut Core, ins: &Instruction, signed: bool) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let d = read(core, ins, 0, size)?;
    if d == 0 {
        return Err(Fault::new(DE).into());
    }
    let (lo, hi) = acc_pair(core, size);
    let n = (u128::from(hi) << size) | u128::from(lo);
    let (q, r) = if signed {
        let w = 2 * size;
        let n = ((n << (128 - w)) as i128) >> (128 - w);
        let d = i128::from(sext(d, size) as i64);
        let q = n.checked_div(d).ok_or(Fault::new(DE))?;
        let r = n.checked_rem(d).ok_or(Fault::new(DE))?;
        let max = (1i128 << (size - 1)) - 1;
        let min = -(1i128 << (size - 1));
        if q > max || q < min {
            return Err(Fault::new(DE).into());
        }
        (q as u64 & mask(size), r as u64 & mask(size))
    } else {
        let q = n / u128::from(d);
        let r = n % u128::from(d);
        if q > u128::from(mask(size)) {
            return Err(Fault::new(DE).into());
        }
        (q as u64, r as u64)
    };
    set_pair(core, size, q, r);
    Ok(())
}
