//! Floating-point operand values for the snippet prologue: x87 80-bit
//! values of every class (including the encodings only the x87 has:
//! pseudo-denormal, unnormal, pseudo-NaN, pseudo-infinity), and f32/f64
//! lanes biased toward the special and boundary cases (NaNs, zeros,
//! denormals, infinities, extremes, values near integer boundaries).

use super::gen::Rng;

/// An 80-bit value as its significand (explicit integer bit 63) and its
/// sign/exponent word, in memory order.
fn f80(sign: bool, exp: u16, mant: u64) -> [u8; 10] {
    let mut v = [0u8; 10];
    v[..8].copy_from_slice(&mant.to_le_bytes());
    let se = (u16::from(sign) << 15) | (exp & 0x7fff);
    v[8..].copy_from_slice(&se.to_le_bytes());
    v
}

const J: u64 = 1 << 63;
const QUIET: u64 = 1 << 62;

/// A random x87 register value.
pub fn x87(rng: &mut Rng) -> [u8; 10] {
    let s = rng.below(2) == 1;
    let low = |rng: &mut Rng| rng.next() & (QUIET - 1);
    match rng.below(16) {
        0 => f80(s, 0, 0),
        1 => f80(s, 0, low(rng) | 1),                        // denormal
        2 => f80(s, 0, J | low(rng)),                        // pseudo-denormal
        3 => f80(s, 1 + rng.below(0x7ffe) as u16, low(rng)), // unnormal
        4 => f80(s, 0x7fff, J),                              // infinity
        5 => f80(s, 0x7fff, J | QUIET | low(rng)),           // QNaN
        6 => f80(s, 0x7fff, J | (low(rng) | 1)),             // SNaN
        7 => f80(s, 0x7fff, QUIET | low(rng) | 1),           // pseudo-NaN
        8 => f80(s, 0x7fff, 0),                              // pseudo-infinity
        9 => f80(s, 0x7ffe, u64::MAX),                       // largest normal
        10 => f80(s, 1, J | (rng.below(2))),                 // smallest normals
        // Near the integer conversion boundaries 2^15, 2^31, 2^63 and
        // around the halves (rounding to integer).
        11 => {
            let e = [0x3fff + 15, 0x3fff + 31, 0x3fff + 63, 0x3ffe, 0x3fff][rng.below(5) as usize];
            let m = match rng.below(3) {
                0 => J,
                1 => u64::MAX,
                _ => J | (rng.below(4) << 61),
            };
            f80(s, e, m)
        }
        // Small integers and halves: FPREM, FRNDINT, FIST, FBSTP operands.
        12 | 13 => {
            let v = rng.below(2000) as f64 / 2.0 - 500.0;
            from_f64(v)
        }
        // Exponents reaching the f32/f64 ranges' edges.
        14 => {
            let e = [
                0x3fff - 126,
                0x3fff - 149,
                0x3fff + 127,
                0x3fff - 1022,
                0x3fff + 1023,
            ][rng.below(5) as usize]
                + rng.below(3) as u16
                - 1;
            f80(s, e, J | rng.next() >> 1)
        }
        _ => f80(s, 0x3fff - 64 + rng.below(128) as u16, J | rng.next()),
    }
}

/// The exact 80-bit image of a finite f64 with an integer or half value
/// (all this module needs).
fn from_f64(v: f64) -> [u8; 10] {
    if v == 0.0 {
        return f80(v.is_sign_negative(), 0, 0);
    }
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as u16;
    let mant = (bits << 11) | J;
    f80(v < 0.0, exp + 0x3fff - 1023, mant)
}

/// A random f64 bit pattern, special cases first.
pub fn f64_bits(rng: &mut Rng) -> u64 {
    let s = rng.below(2) << 63;
    let frac = |rng: &mut Rng| rng.next() & ((1 << 52) - 1);
    s | match rng.below(12) {
        0 => 0,
        1 => frac(rng) | 1,                          // denormal
        2 => 0x7ff << 52,                            // infinity
        3 => (0xfff << 51) | (frac(rng) >> 1),       // QNaN
        4 => (0x7ff << 52) | ((frac(rng) >> 1) | 1), // SNaN
        5 => 0x7fef_ffff_ffff_ffff,                  // largest normal
        6 => 1 << 52,                                // smallest normal
        // Near 2^31, 2^32, 2^63, 2^64 and the halves.
        7 => {
            let e = [1023 + 31, 1023 + 32, 1023 + 63, 1023 + 64, 1022, 1023][rng.below(6) as usize];
            (e << 52) | [0, 1, (1 << 52) - 1, 1 << 51][rng.below(4) as usize]
        }
        8 | 9 => (rng.below(2000) as f64 / 2.0 - 500.0).abs().to_bits(),
        _ => ((1023 - 40 + rng.below(80)) << 52) | frac(rng),
    }
}

/// A random f32 bit pattern, special cases first.
pub fn f32_bits(rng: &mut Rng) -> u32 {
    let s = (rng.below(2) as u32) << 31;
    let frac = |rng: &mut Rng| rng.next() as u32 & ((1 << 23) - 1);
    s | match rng.below(12) {
        0 => 0,
        1 => frac(rng) | 1,
        2 => 0xff << 23,
        3 => (0x1ff << 22) | (frac(rng) >> 1),
        4 => (0xff << 23) | ((frac(rng) >> 1) | 1),
        5 => 0x7f7f_ffff,
        6 => 1 << 23,
        7 => {
            let e = [127 + 31, 127 + 32, 127 + 63, 127 + 64, 126, 127][rng.below(6) as usize];
            (e << 23) | [0, 1, (1 << 23) - 1, 1 << 22][rng.below(4) as usize]
        }
        8 | 9 => (rng.below(2000) as f32 / 2.0 - 500.0).abs().to_bits(),
        _ => ((127 - 20 + rng.below(40) as u32) << 23) | frac(rng),
    }
}

/// One XMM register's initial value: f64 lanes, f32 lanes, or integers.
pub fn xmm(rng: &mut Rng) -> [u8; 16] {
    let mut x = [0u8; 16];
    match rng.below(3) {
        0 => {
            for c in x.chunks_mut(8) {
                c.copy_from_slice(&f64_bits(rng).to_le_bytes());
            }
        }
        1 => {
            for c in x.chunks_mut(4) {
                c.copy_from_slice(&f32_bits(rng).to_le_bytes());
            }
        }
        _ => {
            for c in x.chunks_mut(8) {
                c.copy_from_slice(&rng.value().to_le_bytes());
            }
        }
    }
    x
}

/// A random MXCSR: rounding control, DAZ and FTZ at random, exception
/// flags clear (random in one case in eight), every exception masked
/// except in one case in four (then a random subset is unmasked).
pub fn mxcsr(rng: &mut Rng) -> u32 {
    let masks = if rng.below(4) == 0 {
        rng.below(64) as u32
    } else {
        0x3f
    };
    let flags = if rng.below(8) == 0 {
        rng.below(64) as u32
    } else {
        0
    };
    let rc = rng.below(4) as u32;
    let daz = rng.below(4) == 0;
    let ftz = rng.below(4) == 0;
    flags | (u32::from(daz) << 6) | (masks << 7) | (rc << 13) | (u32::from(ftz) << 15)
}

/// A random x87 control word: precision control 24/53/64 bits, rounding
/// control, every exception masked except in one case in four.
pub fn fcw(rng: &mut Rng) -> u16 {
    let masks = if rng.below(4) == 0 {
        rng.below(64) as u16
    } else {
        0x3f
    };
    let pc = [0u16, 2, 3, 3][rng.below(4) as usize];
    let rc = rng.below(4) as u16;
    0x40 | masks | (pc << 8) | (rc << 10)
}
