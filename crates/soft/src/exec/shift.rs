//! Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR, SHLD, SHRD.
//! Flags follow the architecture where it defines them; where it leaves
//! them undefined (OF for counts above one, AF) the values are this
//! engine's choice and the differential harness masks them.

use iced_x86::{Instruction, Mnemonic};

use super::alu::rmw;
use super::ops::{self, read};
use crate::core::Core;
use crate::exception::ExecResult;
use crate::flags::{mask, CF, OF, PF, SF, ZF};

fn szp(size: u32, r: u64) -> u64 {
    let mut f = 0;
    if r & mask(size) == 0 {
        f |= ZF;
    }
    if (r >> (size - 1)) & 1 != 0 {
        f |= SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= PF;
    }
    f
}

fn msb(v: u64, size: u32) -> bool {
    (v >> (size - 1)) & 1 != 0
}

fn count(core: &mut Core, ins: &Instruction, idx: u32, size: u32) -> ExecResult<u32> {
    let c = if ins.op_count() > idx {
        read(core, ins, idx, 8)? as u32
    } else {
        1
    };
    Ok(c & if size == 64 { 63 } else { 31 })
}

/// A shift or rotate by zero: no flags change, but a 32-bit register
/// destination is still written (zero-extended) and a memory one still
/// accessed, as a write (the CPU faults on a read-only page).
fn zero_count(core: &mut Core, ins: &Instruction, size: u32) -> ExecResult {
    if ins.op_kind(0) == iced_x86::OpKind::Memory {
        let (seg, off) = ops::mem_loc(core, ins, 0);
        core.read_seg_rmw(seg, off, (size / 8) as usize)?;
    } else {
        let v = read(core, ins, 0, size)?;
        super::ops::write(core, ins, 0, size, v)?;
    }
    Ok(())
}

/// The operations of the shift-and-rotate group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShiftOp {
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
    Rcl,
    Rcr,
}

impl ShiftOp {
    fn of(m: Mnemonic) -> Option<ShiftOp> {
        Some(match m {
            Mnemonic::Shl | Mnemonic::Sal => ShiftOp::Shl,
            Mnemonic::Shr => ShiftOp::Shr,
            Mnemonic::Sar => ShiftOp::Sar,
            Mnemonic::Rol => ShiftOp::Rol,
            Mnemonic::Ror => ShiftOp::Ror,
            Mnemonic::Rcl => ShiftOp::Rcl,
            Mnemonic::Rcr => ShiftOp::Rcr,
            _ => return None,
        })
    }
}

/// `op` on the low `size` bits of `v` by the masked, non-zero count `n`,
/// with the flags `flags_in` before it: the result and the new arithmetic
/// flags (the one definition every tier uses). Shifts set SF, ZF and PF
/// from the result; rotates change only CF and OF.
pub(crate) fn shift_rotate(op: ShiftOp, v: u64, n: u32, size: u32, flags_in: u64) -> (u64, u64) {
    let m_ = mask(size);
    let v = v & m_;
    let cin = flags_in & CF != 0;
    let cf_of = |cf: bool, of: bool| (u64::from(cf) * CF) | (u64::from(of) * OF);
    let rotated = |r: u64, cf: bool, of: bool| (r, (flags_in & !(CF | OF)) | cf_of(cf, of));
    match op {
        ShiftOp::Shl => {
            let r = if n >= size { 0 } else { (v << n) & m_ };
            let cf = n <= size && (v >> (size - n)) & 1 != 0;
            (r, szp(size, r) | cf_of(cf, msb(r, size) != cf))
        }
        ShiftOp::Shr => {
            let r = if n >= size { 0 } else { v >> n };
            let cf = n <= size && (v >> (n - 1)) & 1 != 0;
            (r, szp(size, r) | cf_of(cf, msb(v, size)))
        }
        ShiftOp::Sar => {
            let sv = ops::sext(v, size) as i64;
            let r = (sv >> n.min(63)) as u64 & m_;
            let cf = (sv >> (n - 1).min(63)) & 1 != 0;
            (r, szp(size, r) | cf_of(cf, false))
        }
        ShiftOp::Rol => {
            let k = n % size;
            let r = if k == 0 {
                v
            } else {
                ((v << k) | (v >> (size - k))) & m_
            };
            let cf = r & 1 != 0;
            rotated(r, cf, msb(r, size) != cf)
        }
        ShiftOp::Ror => {
            let k = n % size;
            let r = if k == 0 {
                v
            } else {
                ((v >> k) | (v << (size - k))) & m_
            };
            rotated(
                r,
                msb(r, size),
                msb(r, size) != (((r >> (size - 2)) & 1) != 0),
            )
        }
        // A count that is a multiple of the width plus one rotates nothing
        // and leaves CF and OF as they were (the CPU does).
        ShiftOp::Rcl | ShiftOp::Rcr if n.is_multiple_of(size + 1) => (v, flags_in),
        ShiftOp::Rcl | ShiftOp::Rcr => {
            let k = n % (size + 1);
            let wide = u128::from(v) | (u128::from(cin) << size);
            let w = size + 1;
            let all = (1u128 << w) - 1;
            let r = if op == ShiftOp::Rcl {
                ((wide << k) | (wide >> (w - k))) & all
            } else {
                ((wide >> k) | (wide << (w - k))) & all
            };
            let res = (r as u64) & m_;
            let cf = (r >> size) & 1 != 0;
            let of = if op == ShiftOp::Rcl {
                msb(res, size) != cf
            } else {
                msb(res, size) != (((res >> (size - 2)) & 1) != 0)
            };
            rotated(res, cf, of)
        }
    }
}

pub fn shift(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let n = count(core, ins, 1, size)?;
    if n == 0 {
        return zero_count(core, ins, size);
    }
    let flags_in = core.cpu.flags.get();
    let Some(op) = ShiftOp::of(m) else {
        return Err(crate::exception::Stop::Unsupported);
    };
    let mut out = 0u64;
    rmw(core, ins, size, |_, v| {
        let (r, f) = shift_rotate(op, v, n, size, flags_in);
        out = f;
        r
    })?;
    core.cpu.flags.set_arith(out);
    Ok(())
}

/// SHLD / SHRD.
pub fn shift_double(core: &mut Core, ins: &Instruction, left: bool) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let n = count(core, ins, 2, size)?;
    let src = read(core, ins, 1, size)?;
    if n == 0 {
        return zero_count(core, ins, size);
    }
    let m_ = mask(size);
    let mut out = 0;
    rmw(core, ins, size, |_, v| {
        let v = v & m_;
        // Work on a double-width value so counts above the size (16-bit
        // operands) behave like the hardware's funnel shift.
        let (r, cf) = if left {
            // 16 bits: the funnel is dest:src:dest (48 bits), so a count
            // above 16 shifts the destination's bits in again.
            let (wide, bits) = if size == 16 {
                let v = u128::from(v);
                ((v << 32) | (u128::from(src) << 16) | v, 48)
            } else {
                ((u128::from(v) << size) | u128::from(src), 2 * size)
            };
            let r = ((wide << n) >> (bits - size)) as u64 & m_;
            let cf = (wide >> (bits - n)) & 1 != 0;
            (r, cf)
        } else {
            let wide = (u128::from(src) << size) | u128::from(v);
            let wide = if size == 16 {
                wide | (u128::from(v) << 32)
            } else {
                wide
            };
            let r = (wide >> n) as u64 & m_;
            let cf = (wide >> (n - 1)) & 1 != 0;
            (r, cf)
        };
        let of = msb(r, size) != msb(v, size);
        out = szp(size, r) | if cf { CF } else { 0 } | if of { OF } else { 0 };
        r
    })?;
    core.cpu.flags.set_arith(out);
    Ok(())
}
