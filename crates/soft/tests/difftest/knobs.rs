//! Environment knobs of the harness, read once:
//! - `DIFFTEST_AREAS=int,x87`: draw only the forms of these areas of
//!   `forms::AREAS` (the special forms count as area `int`), to check one
//!   area while others still differ;
//! - `DIFFTEST_FIXED_FP=1`: the old fixed start state (MXCSR 0x1f80, every
//!   x87 exception masked, 64-bit precision, no x87 values pushed);
//! - `DIFFTEST_X87_POINTERS=0`: do not compare FOP, FIP and FDP;
//! - `DIFFTEST_XSTATE_BV=0`: do not compare the XSAVE header's XSTATE_BV;
//! - `DIFFTEST_REPLAY="66 c9"`: every snippet's body is these bytes (with
//!   the random start state): a mismatch's bytes from its text, replayed;
//! - `DIFFTEST_MAX_LEN=n`: at most n instructions a snippet (default 5;
//!   1 makes a mismatch's culprit plain).

use std::sync::OnceLock;

use iced_x86::Code;

pub struct Knobs {
    pub forms: Vec<Code>,
    pub special: bool,
    pub fixed_fp: bool,
    pub x87_pointers: bool,
    pub max_len: u64,
    pub xstate_bv: bool,
    pub replay: Option<Vec<u8>>,
    /// Some drawn form is a VEX-encoded vector (AVX) form: the prologue
    /// loads YMM0-15.
    pub vex: bool,
}

fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

pub fn get() -> &'static Knobs {
    static K: OnceLock<Knobs> = OnceLock::new();
    K.get_or_init(|| {
        let areas = std::env::var("DIFFTEST_AREAS").ok();
        let wanted = |name: &str| {
            areas
                .as_deref()
                .is_none_or(|a| a.split(',').any(|x| x.trim() == name))
        };
        let forms: Vec<Code> = super::forms::AREAS
            .iter()
            .filter(|(name, _)| wanted(name))
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        Knobs {
            special: wanted("int") || forms.is_empty(),
            fixed_fp: flag("DIFFTEST_FIXED_FP"),
            x87_pointers: std::env::var_os("DIFFTEST_X87_POINTERS").is_none_or(|v| v != "0"),
            replay: std::env::var("DIFFTEST_REPLAY").ok().map(|v| hex_bytes(&v)),
            xstate_bv: std::env::var_os("DIFFTEST_XSTATE_BV").is_none_or(|v| v != "0"),
            vex: forms.iter().any(|&c| {
                c.op_code().encoding() == iced_x86::EncodingKind::VEX
                    && super::operands::is_vector(c)
            }),
            max_len: std::env::var("DIFFTEST_MAX_LEN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5u64)
                .max(1),
            forms,
        }
    })
}

/// The bytes of hex text, whitespace ignored (a bad digit counts as 0).
fn hex_bytes(v: &str) -> Vec<u8> {
    let digits: Vec<u8> = v
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_digit(16).unwrap_or(0) as u8)
        .collect();
    digits
        .chunks(2)
        .map(|p| p.iter().fold(0, |a, d| a << 4 | d))
        .collect()
}
