//! When a result of the four operations is tiny, the condition for an
//! underflow (UE): the x87 judges it *after* rounding, to the precision
//! FCW.PC asks for but with an unbounded exponent (IEEE 754's "after
//! rounding" choice, which the SDM leaves unsaid for the x87; checked
//! on the host). A result just below 2^-16382 that rounds up to it is
//! not tiny: no UE, masked or not, and it is delivered as the smallest
//! normal with PE. A result that rounds to a value below 2^-16382 is
//! tiny, and (masked) is then rounded again as a denormal, or at the
//! narrow significand's unit at the smallest normal exponent under a
//! narrow FCW.PC (see `precision`), which may give 2^-16382 all the
//! same.

use iced_x86::Mnemonic;
use rustc_apfloat::{Round, Status};

use super::*;

/// Whether the result of `m` on `a` and `b` is tiny. `zb` is the
/// result truncated to 64 bits and `status` its status (a nonzero
/// result below the smallest denormal truncates to an inexact zero).
/// The rounding with an unbounded exponent is the operation redone on
/// operands scaled by 2^24576 in all, as for an unmasked underflow's
/// response: that result is normal, rounded as FCW says.
pub(super) fn tiny(f: &Fpu, m: Mnemonic, a: u128, b: u128, zb: u128, status: Status) -> bool {
    let below = exponent(zb) == 0 && (zb & SIG != 0 || status.contains(Status::INEXACT));
    if !below {
        return false;
    }
    let mut g = Fpu {
        fcw: f.fcw | 0x3f,
        fsw: 0,
        ..*f
    };
    let scaled = response::biased(&mut g, m, a, b, false);
    // Below 2^-16382 times 2^24576.
    exponent(scaled) < 0x6001
}

/// Whether FST/FSTP to a 32- or 64-bit float (`frac` fraction bits,
/// `exp_bits` exponent bits) finds the finite nonzero `v` tiny: `v`
/// rounded to `frac + 1` bits as FCW.RC says, with an unbounded
/// exponent, is below the format's smallest normal.
pub(super) fn tiny_store(f: &Fpu, v: u128, frac: u32, exp_bits: u32) -> bool {
    if v & !SIGN == 0 || exponent(v) == 0x7fff {
        return false;
    }
    let min_normal = 2 - (1i64 << (exp_bits - 1));
    let e = exponent(v).max(1) as i64 - 16383;
    if e != min_normal - 1 || v & INT_BIT == 0 {
        return e < min_normal;
    }
    // Just below: tiny unless rounding carries into 2^min_normal.
    let sig = (v & SIG) as u64;
    let drop = 63 - frac;
    let q = sig >> drop;
    let rem = sig & ((1u64 << drop) - 1);
    let half = 1u64 << (drop - 1);
    let neg = v & SIGN != 0;
    let up = match round(f) {
        Round::NearestTiesToEven => rem > half || (rem == half && q & 1 == 1),
        Round::TowardPositive => rem != 0 && !neg,
        Round::TowardNegative => rem != 0 && neg,
        _ => false,
    };
    q + u64::from(up) != 1 << (frac + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (FCW, result, FSW bits C1 and 5:0) of one operation, host CPU.
    fn check(m: Mnemonic, a: u128, b: u128, cases: &[(u16, u128, u16)]) {
        for &(fcw, want, fsw) in cases {
            let mut f = Fpu {
                fcw,
                ..Fpu::default()
            };
            let r = compute(&mut f, m, a, b, false);
            assert_eq!(
                (r, f.fsw & 0x23f),
                (want, fsw),
                "{a:#x} {b:#x} fcw {fcw:#x}"
            );
        }
    }

    const MIN_NORMAL: u128 = (1 << 64) | INT_BIT;

    /// A product 2^-16382 (1 - d), 2^-87 < d < 2^-65: below the
    /// smallest normal before rounding, not after rounding to 64 bits
    /// to nearest (or at 53 bits), tiny toward zero. The harness's
    /// seed 3, snippet 178033 (FMUL ST(4), ST(0)) was one.
    #[test]
    fn a_product_that_rounds_up_to_the_smallest_normal_is_not_tiny() {
        let a = 0x2000_ffff_ffff_ffe9_5f60;
        let b = 0x1fff_8000_0000_000b_5050;
        check(
            Mnemonic::Fmul,
            a,
            b,
            &[
                (0x37f, MIN_NORMAL, 0x220),
                // UE unmasked: still no underflow.
                (0x36f, MIN_NORMAL, 0x220),
                (0x27f, MIN_NORMAL, 0x220),
                (0x26f, MIN_NORMAL, 0x220),
                // Toward zero it is tiny: a denormal, or the biased
                // result of an unmasked underflow.
                (0xf7f, 0x7fff_ffff_ffff_ffff, 0x30),
                (0x77f, 0x7fff_ffff_ffff_ffff, 0x30),
                (0x76f, 0x6000_ffff_ffff_ffff_ffff, 0x30),
            ],
        );
    }

    /// x = 2^-16382 (1 - q/4 2^-24) from a denormal plus 0 under
    /// FCW.PC = 24 bits: tiny when x rounded to 24 bits (unbounded
    /// exponent) stays below 2^-16382, whatever the delivered value.
    #[test]
    fn narrow_precision_judges_tininess_at_its_own_width() {
        let x = |q: u128| (1u128 << 63) - (q << 37);
        // q = 1, 2: rounds to 2^-16382 at 24 bits (to even for 2).
        for q in [1, 2] {
            check(
                Mnemonic::Fadd,
                x(q),
                0,
                &[(0x07f, MIN_NORMAL, 0x222), (0x06f, MIN_NORMAL, 0x222)],
            );
        }
        // q = 3: rounds to 1 - 2^-24, tiny; the masked result is
        // rounded at the smallest normal's 24-bit unit, up to 2^-16382.
        check(
            Mnemonic::Fadd,
            x(3),
            0,
            &[
                (0x07f, MIN_NORMAL, 0x232),
                (0x06f, 0x6000_ffff_ff00_0000_0000, 0x32),
            ],
        );
        // Rounding down, a negative x goes to -2^-16382 unless exact at
        // 24 bits (q = 4).
        let neg = |q: u128| SIGN | x(q);
        check(
            Mnemonic::Fadd,
            neg(1),
            0,
            &[(0x47f, SIGN | MIN_NORMAL, 0x222)],
        );
        check(
            Mnemonic::Fadd,
            neg(4),
            0,
            &[(0x47f, SIGN | MIN_NORMAL, 0x232)],
        );
        // 53 bits, to nearest: the same rule at its width.
        let x53 = |q: u128| (1u128 << 63) - (q << 8);
        check(Mnemonic::Fadd, x53(2), 0, &[(0x27f, MIN_NORMAL, 0x222)]);
        check(Mnemonic::Fadd, x53(3), 0, &[(0x27f, MIN_NORMAL, 0x232)]);
    }

    /// FST m32/m64 of a value just below the format's smallest normal
    /// (host results: fraction bits, FCW, ST(0), stored bits, FSW bits
    /// C1 and 5:0).
    #[test]
    fn a_store_that_rounds_up_to_the_smallest_normal_is_not_tiny() {
        let cases: &[(u32, u16, u128, u128, u16)] = &[
            (23, 0xb7f, 0x3f80_ffff_ffff_ffff_ffab, 0x80_0000, 0x220),
            // UE unmasked: no underflow either, the value is stored.
            (23, 0x36f, 0x3f80_ffff_ffd1_e63b_7ffb, 0x80_0000, 0x220),
            // Tiny at 24 bits (1 - 2^-24), stored rounded up all the same.
            (23, 0x37f, 0x3f80_ffff_ff7f_ffff_ffff, 0x80_0000, 0x230),
            (
                52,
                0x37f,
                0x3c00_ffff_ffff_ffff_ffff,
                0x10_0000_0000_0000,
                0x220,
            ),
            (
                52,
                0x36f,
                0x3c00_ffff_ffff_ffff_ffff,
                0x10_0000_0000_0000,
                0x220,
            ),
            (
                52,
                0xf7f,
                0x3c00_ffff_ffff_ffff_ffff,
                0xf_ffff_ffff_ffff,
                0x30,
            ),
            (
                52,
                0x77f,
                0xbc00_ffff_ffff_ffff_fc01,
                0x8010_0000_0000_0000,
                0x220,
            ),
        ];
        for &(frac, fcw, v, want, fsw) in cases {
            let mut f = Fpu {
                fcw,
                ..Fpu::default()
            };
            let exp_bits = if frac == 23 { 8 } else { 11 };
            let r = narrow(&mut f, v, frac, exp_bits);
            assert_eq!((r, f.fsw & 0x23f), (want, fsw), "{v:#x} fcw {fcw:#x}");
        }
    }
}
