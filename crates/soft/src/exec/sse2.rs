//! The rest of SSE/SSE2 on XMM registers that compiled C libraries use,
//! and the packed integer operations XMM and MMX forms share
//! ([`packed_int`], over 128 or 64 bits): add/subtract (wrapping and
//! saturating), logic, compares, min/max/average, multiplies, sum of
//! absolute differences, shifts, packs and unpacks. Also word shuffles,
//! float shuffles and unpacks, mask extraction, word insert/extract and
//! MASKMOVDQU. SSE3 and later go to `crate::hostop` (#UD for a form it
//! does not run).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::ops;
use super::sse::{get, lanes, put};
use crate::core::Core;
use crate::exception::{ExecResult, Fault, Stop};

fn s8(x: u64) -> i64 {
    i64::from(x as u8 as i8)
}
fn s16(x: u64) -> i64 {
    i64::from(x as u16 as i16)
}
fn s32(x: u64) -> i64 {
    i64::from(x as u32 as i32)
}

fn sat_s(v: i64, bits: u32) -> u64 {
    let hi = (1i64 << (bits - 1)) - 1;
    let lo = -(1i64 << (bits - 1));
    v.clamp(lo, hi) as u64
}

fn sat_u(v: i64, bits: u32) -> u64 {
    v.clamp(0, (1i64 << bits) - 1) as u64
}

fn lane(v: u128, bits: u32, i: u32) -> u64 {
    ((v >> (i * bits)) as u64) & crate::flags::mask(bits)
}

/// Packs the lanes of `a` then `b` (each `from` bits wide, `width` bits
/// in all) into lanes of half the width with `f` saturating.
fn pack(a: u128, b: u128, width: u32, from: u32, f: impl Fn(u64) -> u64) -> u128 {
    let n = width / from;
    let to = from / 2;
    let mut r = 0u128;
    for (k, src) in [a, b].iter().enumerate() {
        for i in 0..n {
            let v = f(lane(*src, from, i)) & crate::flags::mask(to);
            r |= u128::from(v) << ((k as u32 * n + i) * to);
        }
    }
    r
}

fn packed_shift(a: u128, bits: u32, n: u64, kind: u8) -> u128 {
    let lanes_n = 128 / bits;
    let mut r = 0u128;
    for i in 0..lanes_n {
        let x = lane(a, bits, i);
        let v = match kind {
            0 => {
                if n >= u64::from(bits) {
                    0
                } else {
                    x << n
                }
            }
            1 => {
                if n >= u64::from(bits) {
                    0
                } else {
                    x >> n
                }
            }
            _ => {
                let sx = ops::sext(x, bits) as i64;
                (sx >> n.min(u64::from(bits) - 1)) as u64
            }
        } & crate::flags::mask(bits);
        r |= u128::from(v) << (i * bits);
    }
    r
}

/// Whether `m` is one of the packed integer operations [`packed_int`]
/// computes from its two operands.
pub(super) fn is_packed_int(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Pxor
            | M::Por
            | M::Pand
            | M::Pandn
            | M::Paddb
            | M::Paddw
            | M::Paddd
            | M::Paddq
            | M::Psubb
            | M::Psubw
            | M::Psubd
            | M::Psubq
            | M::Pcmpeqb
            | M::Pcmpeqw
            | M::Pcmpeqd
            | M::Pcmpgtb
            | M::Pcmpgtw
            | M::Pcmpgtd
            | M::Pminub
            | M::Pmaxub
            | M::Pminsw
            | M::Pmaxsw
            | M::Pavgb
            | M::Pavgw
            | M::Paddsb
            | M::Paddsw
            | M::Paddusb
            | M::Paddusw
            | M::Psubsb
            | M::Psubsw
            | M::Psubusb
            | M::Psubusw
            | M::Pmullw
            | M::Pmulhw
            | M::Pmulhuw
            | M::Pmuludq
            | M::Pmaddwd
            | M::Psadbw
            | M::Psllw
            | M::Pslld
            | M::Psllq
            | M::Psrlw
            | M::Psrld
            | M::Psrlq
            | M::Psraw
            | M::Psrad
            | M::Packsswb
            | M::Packssdw
            | M::Packuswb
            | M::Punpcklbw
            | M::Punpcklwd
            | M::Punpckldq
            | M::Punpcklqdq
            | M::Punpckhbw
            | M::Punpckhwd
            | M::Punpckhdq
            | M::Punpckhqdq
    )
}

/// A packed integer operation on `width` (128 for XMM, 64 for MMX) bits
/// of destination `a` and source `b` (for shifts, `b` is the count). Lanes
/// are independent except in packs and unpacks, which take `width` into
/// account; MMX operands arrive zero-extended and the result is cut to
/// `width` bits. `None` for a mnemonic outside [`is_packed_int`].
pub(super) fn packed_int(m: Mnemonic, a: u128, b: u128, width: u32) -> Option<u128> {
    use Mnemonic as M;
    let t = |c: bool| if c { u64::MAX } else { 0 };
    let r = match m {
        M::Pxor => a ^ b,
        M::Por => a | b,
        M::Pand => a & b,
        M::Pandn => !a & b,
        M::Paddb => lanes::<16>(a, b, |x, y| x.wrapping_add(y)),
        M::Paddw => lanes::<8>(a, b, |x, y| x.wrapping_add(y)),
        M::Paddd => lanes::<4>(a, b, |x, y| x.wrapping_add(y)),
        M::Paddq => lanes::<2>(a, b, |x, y| x.wrapping_add(y)),
        M::Psubb => lanes::<16>(a, b, |x, y| x.wrapping_sub(y)),
        M::Psubw => lanes::<8>(a, b, |x, y| x.wrapping_sub(y)),
        M::Psubd => lanes::<4>(a, b, |x, y| x.wrapping_sub(y)),
        M::Psubq => lanes::<2>(a, b, |x, y| x.wrapping_sub(y)),
        M::Pcmpeqb => lanes::<16>(a, b, |x, y| t(x == y)),
        M::Pcmpeqw => lanes::<8>(a, b, |x, y| t(x == y)),
        M::Pcmpeqd => lanes::<4>(a, b, |x, y| t(x == y)),
        M::Pcmpgtb => lanes::<16>(a, b, |x, y| t(s8(x) > s8(y))),
        M::Pcmpgtw => lanes::<8>(a, b, |x, y| t(s16(x) > s16(y))),
        M::Pcmpgtd => lanes::<4>(a, b, |x, y| t(s32(x) > s32(y))),
        M::Pminub => lanes::<16>(a, b, |x, y| x.min(y)),
        M::Pmaxub => lanes::<16>(a, b, |x, y| x.max(y)),
        M::Pminsw => lanes::<8>(a, b, |x, y| s16(x).min(s16(y)) as u64),
        M::Pmaxsw => lanes::<8>(a, b, |x, y| s16(x).max(s16(y)) as u64),
        M::Pavgb => lanes::<16>(a, b, |x, y| (x + y + 1) >> 1),
        M::Pavgw => lanes::<8>(a, b, |x, y| (x + y + 1) >> 1),
        M::Paddsb => lanes::<16>(a, b, |x, y| sat_s(s8(x) + s8(y), 8)),
        M::Paddsw => lanes::<8>(a, b, |x, y| sat_s(s16(x) + s16(y), 16)),
        M::Paddusb => lanes::<16>(a, b, |x, y| sat_u((x + y) as i64, 8)),
        M::Paddusw => lanes::<8>(a, b, |x, y| sat_u((x + y) as i64, 16)),
        M::Psubsb => lanes::<16>(a, b, |x, y| sat_s(s8(x) - s8(y), 8)),
        M::Psubsw => lanes::<8>(a, b, |x, y| sat_s(s16(x) - s16(y), 16)),
        M::Psubusb => lanes::<16>(a, b, |x, y| sat_u(x as i64 - y as i64, 8)),
        M::Psubusw => lanes::<8>(a, b, |x, y| sat_u(x as i64 - y as i64, 16)),
        M::Pmullw => lanes::<8>(a, b, |x, y| x.wrapping_mul(y)),
        M::Pmulhw => lanes::<8>(a, b, |x, y| ((s16(x) * s16(y)) >> 16) as u64),
        M::Pmulhuw => lanes::<8>(a, b, |x, y| (x * y) >> 16),
        M::Pmuludq => lanes::<2>(a, b, |x, y| (x as u32 as u64) * (y as u32 as u64)),
        M::Pmaddwd => {
            let mut r = 0u128;
            for i in 0..4 {
                let p0 = s16(lane(a, 16, 2 * i)) * s16(lane(b, 16, 2 * i));
                let p1 = s16(lane(a, 16, 2 * i + 1)) * s16(lane(b, 16, 2 * i + 1));
                r |= u128::from((p0 + p1) as u32) << (32 * i);
            }
            r
        }
        M::Psadbw => {
            let mut r = 0u128;
            for h in 0..2 {
                let sum: u64 = (0..8)
                    .map(|i| lane(a, 8, h * 8 + i).abs_diff(lane(b, 8, h * 8 + i)))
                    .sum();
                r |= u128::from(sum) << (64 * h);
            }
            r
        }
        M::Psllw | M::Pslld | M::Psllq | M::Psrlw | M::Psrld | M::Psrlq | M::Psraw | M::Psrad => {
            let (bits, kind) = match m {
                M::Psllw => (16, 0),
                M::Pslld => (32, 0),
                M::Psllq => (64, 0),
                M::Psrlw => (16, 1),
                M::Psrld => (32, 1),
                M::Psrlq => (64, 1),
                M::Psraw => (16, 2),
                _ => (32, 2),
            };
            packed_shift(a, bits, b as u64, kind)
        }
        M::Packsswb => pack(a, b, width, 16, |x| sat_s(s16(x), 8)),
        M::Packssdw => pack(a, b, width, 32, |x| sat_s(s32(x), 16)),
        M::Packuswb => pack(a, b, width, 16, |x| sat_u(s16(x), 8)),
        M::Punpcklbw
        | M::Punpcklwd
        | M::Punpckldq
        | M::Punpcklqdq
        | M::Punpckhbw
        | M::Punpckhwd
        | M::Punpckhdq
        | M::Punpckhqdq => {
            let (bits, high) = match m {
                M::Punpcklbw => (8, false),
                M::Punpcklwd => (16, false),
                M::Punpckldq => (32, false),
                M::Punpcklqdq => (64, false),
                M::Punpckhbw => (8, true),
                M::Punpckhwd => (16, true),
                M::Punpckhdq => (32, true),
                _ => (64, true),
            };
            // Interleave the lanes of one half of each operand.
            let half = width / 2;
            let base = if high { half } else { 0 };
            let mut r = 0u128;
            for i in 0..half / bits {
                r |= u128::from(lane(a, bits, base / bits + i)) << (2 * i * bits);
                r |= u128::from(lane(b, bits, base / bits + i)) << ((2 * i + 1) * bits);
            }
            r
        }
        _ => return None,
    };
    Some(if width >= 128 {
        r
    } else {
        r & ((1u128 << width) - 1)
    })
}

/// PSHUFLW/PSHUFW: the four words from word `base` on are replaced by the
/// words of that group `imm` selects (two bits each).
pub(super) fn shuffle_words(a: u128, imm: u64, base: u32) -> u128 {
    let mut r = a;
    for i in 0..4u32 {
        let sel = ((imm >> (2 * i)) & 3) as u32;
        let w = lane(a, 16, base + sel);
        let pos = 16 * (base + i);
        r = (r & !(0xffffu128 << pos)) | (u128::from(w) << pos);
    }
    r
}

/// Word `i` of `a` (PEXTRW).
pub(super) fn word(a: u128, i: u32) -> u64 {
    lane(a, 16, i)
}

/// MASKMOVDQU: stores the bytes of the first XMM operand whose mask byte
/// in the second has its top bit set, at DS:rDI (or the override). The
/// whole 16 bytes are checked for a write first, whatever the mask, the
/// upper quadword before the lower one: a fault names the first byte
/// that cannot be written in that order, as this host's CPU does
/// (measured natively: with every byte unmapped the fault is at rDI + 8).
fn maskmovdqu(core: &mut Core, ins: &Instruction) -> ExecResult {
    let v = get(core, ins, 1, false)?.to_le_bytes();
    let mask = get(core, ins, 2, false)?.to_le_bytes();
    let (s, off) = ops::mem_loc(core, ins, 0);
    let addr_mask = crate::flags::mask(ops::addr_size(ins));
    probe_write_bytes(core, ins, (8..16).chain(0..8))?;
    for k in (0..16).filter(|&k| mask[k] & 0x80 != 0) {
        let o = off.wrapping_add(k as u64) & addr_mask;
        core.write_seg_buf(s, o, &v[k..k + 1])?;
    }
    Ok(())
}

/// Checks that the bytes `bytes` (offsets from the memory operand 0 of
/// `ins`) can be written, in that order: the first that cannot raises its
/// fault (#GP/#SS for the segment or a non-canonical address, #PF naming
/// that byte). For the masked stores, which fault as a whole store does.
pub(super) fn probe_write_bytes(
    core: &mut Core,
    ins: &Instruction,
    bytes: impl Iterator<Item = usize>,
) -> ExecResult {
    let (s, off) = ops::mem_loc(core, ins, 0);
    let addr_mask = crate::flags::mask(ops::addr_size(ins));
    for k in bytes {
        let o = off.wrapping_add(k as u64) & addr_mask;
        let lin = core.seg_lin(s, o, 1, true)?;
        core.translate(lin, crate::mmu::Access::Write, false)?;
    }
    Ok(())
}

pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    let r = match m {
        _ if is_packed_int(m) => {
            let a = get(core, ins, 0, false)?;
            let b = get(core, ins, 1, true)?;
            packed_int(m, a, b, 128).ok_or(Stop::Unsupported)?
        }
        M::Pshuflw | M::Pshufhw => {
            let a = get(core, ins, 1, true)?;
            let base = if m == M::Pshuflw { 0 } else { 4 };
            shuffle_words(a, ins.immediate(2), base)
        }
        M::Shufps => {
            let a = get(core, ins, 0, false)?;
            let b = get(core, ins, 1, true)?;
            let imm = ins.immediate(2);
            let pick = |v: u128, k: u64| u128::from(lane(v, 32, ((imm >> (2 * k)) & 3) as u32));
            pick(a, 0) | (pick(a, 1) << 32) | (pick(b, 2) << 64) | (pick(b, 3) << 96)
        }
        M::Shufpd => {
            let a = get(core, ins, 0, false)?;
            let b = get(core, ins, 1, true)?;
            let imm = ins.immediate(2);
            u128::from(lane(a, 64, (imm & 1) as u32))
                | (u128::from(lane(b, 64, ((imm >> 1) & 1) as u32)) << 64)
        }
        M::Unpcklps | M::Unpckhps | M::Unpcklpd | M::Unpckhpd => {
            let a = get(core, ins, 0, false)?;
            let b = get(core, ins, 1, true)?;
            match m {
                M::Unpcklps => {
                    u128::from(lane(a, 32, 0))
                        | (u128::from(lane(b, 32, 0)) << 32)
                        | (u128::from(lane(a, 32, 1)) << 64)
                        | (u128::from(lane(b, 32, 1)) << 96)
                }
                M::Unpckhps => {
                    u128::from(lane(a, 32, 2))
                        | (u128::from(lane(b, 32, 2)) << 32)
                        | (u128::from(lane(a, 32, 3)) << 64)
                        | (u128::from(lane(b, 32, 3)) << 96)
                }
                M::Unpcklpd => u128::from(lane(a, 64, 0)) | (u128::from(lane(b, 64, 0)) << 64),
                _ => u128::from(lane(a, 64, 1)) | (u128::from(lane(b, 64, 1)) << 64),
            }
        }
        M::Movhlps | M::Movlhps => {
            let a = get(core, ins, 0, false)?;
            let b = get(core, ins, 1, false)?;
            if m == M::Movhlps {
                (a & !u128::from(u64::MAX)) | (b >> 64)
            } else {
                (a & u128::from(u64::MAX)) | (b << 64)
            }
        }
        M::Movmskps | M::Movmskpd => {
            let a = get(core, ins, 1, false)?;
            let (n, bits) = if m == M::Movmskps { (4, 32) } else { (2, 64) };
            let v = (0..n).fold(0u64, |acc, i| acc | ((lane(a, bits, i) >> (bits - 1)) << i));
            ops::reg_set(&mut core.cpu, ins.op_register(0), v);
            return Ok(());
        }
        M::Pextrw => {
            if ins.op_kind(0) != OpKind::Register {
                // SSE4.1's form with a memory destination.
                return crate::hostop::exec(core, ins).unwrap_or(Err(Stop::Unsupported));
            }
            let a = get(core, ins, 1, false)?;
            let v = word(a, (ins.immediate(2) & 7) as u32);
            ops::reg_set(&mut core.cpu, ins.op_register(0), v);
            return Ok(());
        }
        M::Pinsrw => {
            let a = get(core, ins, 0, false)?;
            let w = get(core, ins, 1, false)? & 0xffff;
            let pos = 16 * (ins.immediate(2) & 7) as u32;
            (a & !(0xffffu128 << pos)) | (w << pos)
        }
        M::Maskmovdqu => return maskmovdqu(core, ins),
        // SSE3 and later: run by the host's own instruction; a form it
        // does not run is one the CPU model lacks: #UD.
        _ => return crate::hostop::exec(core, ins).unwrap_or_else(|| Err(Fault::ud().into())),
    };
    put(core, ins, 0, r, 16, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_saturate() {
        let a: u128 = 0x7fff_8000_0100_00ff;
        let r = pack(a, 0, 128, 16, |x| sat_s(s16(x), 8));
        assert_eq!(r & 0xffff_ffff, 0x7f80_7f7f);
        let r = pack(a, 0, 128, 16, |x| sat_u(s16(x), 8));
        assert_eq!(r & 0xffff_ffff, 0xff00_ffff);
    }

    #[test]
    fn shifts_by_count() {
        let a: u128 = 0x8000_0001;
        assert_eq!(packed_shift(a, 32, 1, 2) & 0xffff_ffff, 0xc000_0000);
        assert_eq!(packed_shift(a, 32, 1, 1) & 0xffff_ffff, 0x4000_0000);
        assert_eq!(packed_shift(a, 32, 40, 0), 0);
        assert_eq!(packed_shift(a, 32, 40, 2) & 0xffff_ffff, 0xffff_ffff);
    }
}
