//! Bit instructions: BT/BTS/BTR/BTC, BSF/BSR, TZCNT/LZCNT/POPCNT,
//! SETcc and CMOVcc.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::alu::rmw;
use super::ops::{self, read, sext, write};
use crate::core::Core;
use crate::exception::ExecResult;
use crate::flags::{mask, CF, PF, SF, ZF};

pub fn bt(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let off = read(core, ins, 1, size)?;
    let flags = core.cpu.flags.get();
    let modify = |v: u64, bit: u32| -> u64 {
        match m {
            Mnemonic::Bts => v | (1 << bit),
            Mnemonic::Btr => v & !(1 << bit),
            Mnemonic::Btc => v ^ (1 << bit),
            _ => v,
        }
    };
    let cf;
    if ins.op_kind(0) == OpKind::Memory && ins.op_kind(1) == OpKind::Register {
        // A register bit offset addresses memory beyond the operand.
        let soff = sext(off, size) as i64;
        let bytes = i64::from(size / 8);
        let delta = soff.div_euclid(i64::from(size)) * bytes;
        let bit = soff.rem_euclid(i64::from(size)) as u32;
        let (seg, base) = ops::mem_loc(core, ins, 0);
        let a = base.wrapping_add(delta as u64) & mask(ops::addr_size(ins));
        let v = if m == Mnemonic::Bt {
            core.read_seg(seg, a, bytes as usize)?
        } else {
            core.read_seg_rmw(seg, a, bytes as usize)?
        };
        cf = (v >> bit) & 1 != 0;
        if m != Mnemonic::Bt {
            core.write_seg(seg, a, bytes as usize, modify(v, bit))?;
        }
    } else {
        let bit = (off % u64::from(size)) as u32;
        if m == Mnemonic::Bt {
            let v = read(core, ins, 0, size)?;
            cf = (v >> bit) & 1 != 0;
        } else {
            let (old, _) = rmw(core, ins, size, |_, v| modify(v, bit))?;
            cf = (old >> bit) & 1 != 0;
        }
    }
    core.cpu
        .flags
        .set_arith((flags & !CF) | if cf { CF } else { 0 });
    Ok(())
}

/// BSF, BSR, TZCNT, LZCNT, POPCNT.
pub fn scan(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let v = read(core, ins, 1, size)?;
    let flags = core.cpu.flags.get();
    match m {
        Mnemonic::Bsf | Mnemonic::Bsr => {
            if v == 0 {
                // The destination is left unchanged (as AMD documents).
                core.cpu.flags.set_arith((flags & !ZF) | ZF);
                return Ok(());
            }
            let r = if m == Mnemonic::Bsf {
                v.trailing_zeros()
            } else {
                63 - v.leading_zeros()
            };
            write(core, ins, 0, size, u64::from(r))?;
            core.cpu.flags.set_arith(flags & !ZF);
        }
        Mnemonic::Tzcnt | Mnemonic::Lzcnt => {
            let r = if m == Mnemonic::Tzcnt {
                if v == 0 {
                    size
                } else {
                    v.trailing_zeros()
                }
            } else {
                v.leading_zeros() - (64 - size)
            };
            write(core, ins, 0, size, u64::from(r))?;
            let mut f = flags & !(CF | ZF);
            if r == size {
                f |= CF;
            }
            if r == 0 {
                f |= ZF;
            }
            core.cpu.flags.set_arith(f);
        }
        _ => {
            let r = v.count_ones();
            write(core, ins, 0, size, u64::from(r))?;
            core.cpu.flags.set_arith(if v == 0 { ZF } else { 0 });
        }
    }
    let _ = (SF, PF);
    Ok(())
}

pub fn setcc(core: &mut Core, ins: &Instruction) -> ExecResult {
    let cc = ins.condition_code() as u8;
    let v = core.cpu.flags.cond(cc_index(cc));
    write(core, ins, 0, 8, u64::from(v))
}

pub fn cmovcc(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    // The source is read (and can fault) whatever the condition.
    let src = read(core, ins, 1, size)?;
    let cc = ins.condition_code() as u8;
    let v = if core.cpu.flags.cond(cc_index(cc)) {
        src
    } else {
        read(core, ins, 0, size)?
    };
    write(core, ins, 0, size, v)
}

/// Maps iced-x86's `ConditionCode` (o=1, no=2, b=3, ae=4, e=5, ne=6, be=7,
/// a=8, s=9, ns=10, p=11, np=12, l=13, ge=14, le=15, g=16) to the
/// encoding's 4-bit condition.
#[inline]
pub fn cc_index(cc: u8) -> u8 {
    cc.wrapping_sub(1) & 15
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::ConditionCode;

    #[test]
    fn condition_codes_map_to_encoding() {
        assert_eq!(cc_index(ConditionCode::o as u8), 0);
        assert_eq!(cc_index(ConditionCode::e as u8), 4);
        assert_eq!(cc_index(ConditionCode::g as u8), 15);
    }
}
