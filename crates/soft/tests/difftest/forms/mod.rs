//! The instruction forms the generator draws, one list per area, each
//! list in its own file owned by one engine area. A new area: add its
//! file with `pub const FORMS: &[Code]`, a `mod` line and an `AREAS` entry.
//! The generated `COVERED.md` lists them (see `tests/differential.rs`).

use iced_x86::Code;

mod avx;
mod crypto;
mod int;
mod intisa;
mod simd;
mod sse4;
mod x87;

pub use intisa::settle;

/// Every area's name and forms.
pub const AREAS: &[(&str, &[Code])] = &[
    ("int", int::FORMS),
    ("intisa", intisa::FORMS),
    ("simd", simd::FORMS),
    ("sse4", sse4::FORMS),
    ("crypto", crypto::FORMS),
    ("x87", x87::FORMS),
    ("avx", avx::FORMS),
];
