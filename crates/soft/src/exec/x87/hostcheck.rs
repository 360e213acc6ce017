//! Tests only: FSCALE, FADD, FSUB, FMUL, FDIV, FDIVR and FST m32/m64 run
//! on the host CPU's x87 and by the engine for the same pseudo-random
//! operands and control words (precision and rounding control, OE, UE
//! and PE masks), biased toward the edges where the rules are subtle:
//! denormals, the smallest normal, scales near the exponent range's
//! ends. Results and FSW (TOP, C3-C0, flags, ES) must match bit for bit.
//! The host is read with FRSTOR, the instruction, FXSAVE and FNINIT, as
//! `native` does for the transcendentals.

use super::native::{stub, Area};
use super::*;

stub!(host_fscale, "fscale");
stub!(host_fadd, "fadd st(0), st(1)");
stub!(host_fsub, "fsub st(0), st(1)");
stub!(host_fmul, "fmul st(0), st(1)");
stub!(host_fdiv, "fdiv st(0), st(1)");
stub!(host_fdivr, "fdivr st(0), st(1)");
stub!(host_fst32, "fst dword ptr [{a} + 624]");
stub!(host_fst64, "fst qword ptr [{a} + 624]");

const OPS: [Mnemonic; 6] = [
    Mnemonic::Fscale,
    Mnemonic::Fadd,
    Mnemonic::Fsub,
    Mnemonic::Fmul,
    Mnemonic::Fdiv,
    Mnemonic::Fdivr,
];

/// Runs `run` on the host with ST(0) = `a`, ST(1) = `b` (TOP 6) under
/// `fcw`: (ST(0) after, FSW, the FST destination).
fn host(run: fn(&mut Area), fcw: u16, a: u128, b: u128) -> (u128, u16, u64) {
    let mut img = [0u8; 108];
    img[0..2].copy_from_slice(&fcw.to_le_bytes());
    img[4..6].copy_from_slice(&(6u16 << 11).to_le_bytes());
    // Full tag word: physical registers 6 and 7 valid.
    img[8..10].copy_from_slice(&0x0fffu16.to_le_bytes());
    img[28..38].copy_from_slice(&to_bytes(a));
    img[38..48].copy_from_slice(&to_bytes(b));
    let mut area = Area {
        fxsave: [0; 512],
        frstor: img,
        host_cw: 0,
        out: 0,
    };
    run(&mut area);
    let st0 = from_bytes(&area.fxsave[32..42]);
    let fsw = u16::from_le_bytes([area.fxsave[2], area.fxsave[3]]);
    (st0, fsw, area.out)
}

/// xorshift64: a fixed sequence, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An operand: any class the x87 has, exponents biased toward the
/// denormal range, 1.0 and the top; significands toward all-ones,
/// a power of two and short ones.
fn operand(r: &mut Rng) -> u128 {
    let sign = u128::from(r.below(2) == 1) << 79;
    let exp: u128 = match r.below(10) {
        0 => 0,
        1 => u128::from(r.below(80)),
        2 => 0x3fff + u128::from(r.below(40)) - 20,
        3 => 0x7ffe - u128::from(r.below(80)),
        _ => u128::from(r.below(0x7fff)),
    };
    let random = u128::from(r.next()) | INT_BIT;
    let sig = match r.below(6) {
        0 => INT_BIT,
        1 => INT_BIT | u128::from(r.below(4)),
        2 => SIG - u128::from(r.below(4)),
        3 => random & !((1u128 << r.below(64)) - 1),
        _ => random,
    };
    // Denormals and pseudo-denormals.
    let sig = if exp == 0 && r.below(2) == 0 {
        sig & !INT_BIT
    } else {
        sig
    };
    sign | (exp << 64) | sig
}

/// FSCALE's ST(1): half the time an integer (or one and a half) near
/// the exponent range's ends, else any operand.
fn scale(r: &mut Rng) -> u128 {
    if r.below(2) == 0 {
        return operand(r);
    }
    let ends = [16381i64, 16382, 16383, 16445, 16446, 24576, 32767, 8000, 0];
    let k = ends[r.below(ends.len() as u64) as usize] + r.below(9) as i64 - 4;
    let k = if r.below(2) == 0 { -k } else { k };
    let mut v = F80::from_i128(i128::from(k)).value;
    if r.below(3) == 0 {
        let half = F80::from_bits((0x3ffe << 64) | INT_BIT);
        v = v.add_r(half, Round::TowardZero).value;
    }
    v.to_bits()
}

/// A control word: IE, DE and ZE masked (their responses stop the
/// instruction, which `response` handles apart), the rest random.
fn control(r: &mut Rng) -> u16 {
    0x47 | ((r.below(8) as u16) << 3) | ((r.below(4) as u16) << 8) | ((r.below(4) as u16) << 10)
}

/// Fails with the count and the first five of `bad`, the cases where the
/// engine and the host differ.
fn assert_none(bad: &[String]) {
    assert!(
        bad.is_empty(),
        "{} differences, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn arithmetic_and_fscale_match_the_host() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bad = Vec::new();
    for _ in 0..300_000 {
        let m = OPS[r.below(OPS.len() as u64) as usize];
        let fcw = control(&mut r);
        let a = operand(&mut r);
        let b = if m == Mnemonic::Fscale {
            scale(&mut r)
        } else {
            operand(&mut r)
        };
        let run = match m {
            Mnemonic::Fscale => host_fscale,
            Mnemonic::Fadd => host_fadd,
            Mnemonic::Fsub => host_fsub,
            Mnemonic::Fmul => host_fmul,
            Mnemonic::Fdiv => host_fdiv,
            _ => host_fdivr,
        };
        let (want, want_fsw, _) = host(run, fcw, a, b);
        let mut f = Fpu {
            fcw,
            fsw: 6 << 11,
            ..Fpu::default()
        };
        let got = if m == Mnemonic::Fscale {
            more::fscale(&mut f, a, b)
        } else {
            compute(&mut f, m, a, b, false)
        };
        if (got, f.fsw) != (want, want_fsw) {
            bad.push(format!(
                "{m:?} fcw {fcw:#x} {a:#x} {b:#x}: host {want:#x} {want_fsw:#x}, engine {got:#x} {:#x}",
                f.fsw
            ));
        }
    }
    assert_none(&bad);
}

#[test]
fn stores_to_m32_and_m64_match_the_host() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut bad = Vec::new();
    for _ in 0..200_000 {
        let wide = r.below(2) == 0;
        let (frac, exp_bits, min) = if wide {
            (52, 11, 0x3fff - 1022)
        } else {
            (23, 8, 0x3fff - 126)
        };
        // Around the format's smallest normal, or anywhere.
        let v = if r.below(4) == 0 {
            operand(&mut r)
        } else {
            let exp = min - 2 + u128::from(r.below(4));
            let sig = match r.below(3) {
                0 => SIG - (u128::from(r.next()) >> r.below(64)),
                1 => u128::from(r.next()),
                _ => {
                    (SIG & !((1u128 << (62 - frac - r.below(4) as u32)) - 1))
                        | u128::from(r.below(4))
                }
            };
            (u128::from(r.below(2) == 1) << 79) | (exp << 64) | sig | INT_BIT
        };
        let fcw = control(&mut r);
        let run = if wide { host_fst64 } else { host_fst32 };
        let (_, want_fsw, stored) = host(run, fcw, v, 0);
        let mut f = Fpu {
            fcw,
            fsw: 6 << 11,
            ..Fpu::default()
        };
        let got = narrow(&mut f, v, frac, exp_bits) as u64;
        // An unmasked overflow or underflow stores nothing; `response`
        // drops the precision flag then: compare the stopping flags.
        let stopped = want_fsw & !fcw & 0x18 != 0;
        let same = if stopped {
            f.fsw & 0x18 & !fcw == want_fsw & 0x18 & !fcw
        } else {
            (got, f.fsw) == (stored, want_fsw)
        };
        if !same {
            bad.push(format!(
                "fst{} fcw {fcw:#x} {v:#x}: host {stored:#x} {want_fsw:#x}, engine {got:#x} {:#x}",
                if wide { 64 } else { 32 },
                f.fsw
            ));
        }
    }
    assert_none(&bad);
}
