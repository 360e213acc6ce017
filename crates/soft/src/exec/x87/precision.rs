//! x87 precision control: FCW.PC = 00 rounds the results of FADD, FSUB,
//! FMUL, FDIV (all their forms) and FSQRT to 24 significand bits, 10 to
//! 53 bits; 11 and the reserved 01 keep 64 (checked on the host). The
//! exponent keeps its 15 bits, so a result is rounded once, at the
//! 24th/53rd bit below its leading one or, for a tiny result, at the
//! unit the narrow significand has at the smallest normal exponent,
//! whichever is higher.
//!
//! The exact result is never formed: the operation truncated to 64
//! bits with its inexact flag folded into the last bit ("round to
//! odd") keeps enough to round it correctly to 53 bits or fewer.

use super::*;

/// The significand width FCW.PC asks for, if narrower than 64 bits.
pub(super) fn narrow_precision(f: &Fpu) -> Option<u32> {
    match (f.fcw >> 8) & 3 {
        0 => Some(24),
        2 => Some(53),
        _ => None,
    }
}

/// The exponent of the smallest normal extended value.
const MIN_NORMAL: i64 = -16382;

/// The largest finite magnitude with a `p`-bit significand.
fn largest(p: u32) -> u128 {
    (0x7ffe << 64) | (SIG & !((1u128 << (64 - p)) - 1))
}

/// Rounds a result to `p` bits as FCW.RC says. `z` is the operation
/// rounded toward zero to 64 bits (with its status), `over` whether
/// the exact result reached 2^16384, `rc64` the
/// operation rounded to 64 bits as RC says (the result when it is an
/// exact zero or infinity), `tiny` whether the x87 deems the result
/// tiny (judged after rounding to `p` bits with an unbounded exponent,
/// see `tininess`). Raises OE/UE/PE and sets C1 as the CPU
/// does.
pub(super) fn round_to(
    f: &mut Fpu,
    z: StatusAnd<F80>,
    rc64: u128,
    p: u32,
    over: bool,
    tiny: bool,
) -> u128 {
    let t = z.value.to_bits();
    let neg = t & SIGN != 0;
    if t & !SIGN == 0 && z.status.contains(Status::INEXACT) {
        return below_denormals(f, neg, p);
    }
    if t & !SIGN == 0 || (exponent(t) == 0x7fff && !over) {
        // An exact zero or infinity (a tiny nonzero result truncates to
        // a denormal, a huge one to the largest finite value).
        raise(f, z.status, false);
        f.fsw &= !FSW_C1;
        return rc64;
    }
    let sig = (t & SIG) as u64;
    let exp = exponent(t).max(1) as i64;
    let unit = exp - 16383 - 63;
    let lead = unit + 63 - i64::from(sig.leading_zeros());
    // A tiny result keeps the unit of the narrow significand at the
    // smallest normal exponent (host results), not the denormal one.
    let target = (lead - (i64::from(p) - 1)).max(MIN_NORMAL - (i64::from(p) - 1));
    let drop = target - unit;
    let odd = sig | u64::from(z.status.contains(Status::INEXACT));
    let q = u128::from(odd >> drop);
    let rem = u128::from(odd) & ((1u128 << drop) - 1);
    let half = 1u128 << (drop - 1);
    let up = match round(f) {
        Round::NearestTiesToEven => rem > half || (rem == half && q & 1 == 1),
        Round::TowardPositive => rem != 0 && !neg,
        Round::TowardNegative => rem != 0 && neg,
        _ => false,
    };
    let q = q + u128::from(up);
    let mut status = if rem != 0 {
        Status::INEXACT
    } else {
        Status::OK
    };
    if rem != 0 && tiny {
        status |= Status::UNDERFLOW;
    }
    let top_bit = target + 127 - i64::from(q.leading_zeros());
    let sign = if neg { SIGN } else { 0 };
    if top_bit > 16383 && f.fcw & (1 << 3) == 0 {
        // Rounded up to 2^16384 with OE unmasked: delivered times
        // 2^-24576 (host results).
        raise(f, Status::OVERFLOW | Status::INEXACT, false);
        f.fsw = (f.fsw & !FSW_C1) | if up { FSW_C1 } else { 0 };
        return sign
            | F80::from_u128(q)
                .value
                .scalbn(target as i32 - 24576)
                .to_bits();
    }
    if over || top_bit > 16383 {
        raise(f, Status::OVERFLOW | Status::INEXACT, false);
        let to_inf = match round(f) {
            Round::NearestTiesToEven => true,
            Round::TowardPositive => !neg,
            Round::TowardNegative => neg,
            _ => false,
        };
        f.fsw &= !FSW_C1;
        if to_inf {
            f.fsw |= FSW_C1;
            return sign | (0x7fffu128 << 64) | INT_BIT;
        }
        return sign | largest(p);
    }
    raise(f, status, false);
    f.fsw &= !FSW_C1;
    if up {
        f.fsw |= FSW_C1;
    }
    let v = F80::from_u128(q).value.scalbn(target as i32).to_bits();
    sign | v
}

/// A nonzero result below the smallest denormal: zero, or the unit of
/// the narrow significand at the smallest normal exponent when the
/// rounding control rounds away from zero; UE and PE.
fn below_denormals(f: &mut Fpu, neg: bool, p: u32) -> u128 {
    let up = match round(f) {
        Round::TowardPositive => !neg,
        Round::TowardNegative => neg,
        _ => false,
    };
    raise(f, Status::UNDERFLOW | Status::INEXACT, false);
    f.fsw &= !FSW_C1;
    let sign = if neg { SIGN } else { 0 };
    if !up {
        return sign;
    }
    f.fsw |= FSW_C1;
    sign | (1u128 << (64 - p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1/3 under each precision control (host results).
    #[test]
    fn one_third_under_each_precision() {
        let one = (0x3fffu128 << 64) | INT_BIT;
        let three = (0x4000u128 << 64) | 0xc000_0000_0000_0000;
        let want = [
            (0x3ffd_aaaa_ab00_0000_0000u128, 0u16),
            (0x3ffd_aaaa_aaaa_aaaa_aaab, 1),
            (0x3ffd_aaaa_aaaa_aaaa_a800, 2),
            (0x3ffd_aaaa_aaaa_aaaa_aaab, 3),
        ];
        for (r, pc) in want {
            let mut f = Fpu {
                fcw: 0x37f & !0x300 | (pc << 8),
                ..Fpu::default()
            };
            let r2 = compute(&mut f, Mnemonic::Fdiv, one, three, false);
            assert_eq!(r2, r, "pc {pc}");
            assert_eq!(f.fsw & 0x20, 0x20);
        }
    }
}
