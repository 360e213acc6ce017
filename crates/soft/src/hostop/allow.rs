//! Which instruction forms may run on the host, and which memory
//! operands must be aligned.
//!
//! A form runs only if its `Code` is legacy- or VEX-encoded, every CPUID
//! feature iced-x86 lists for it is one of the SIMD families below and
//! the host has it, and its mnemonic is not excluded: those that reach
//! memory other than through their one operand (MASKMOVDQU, masked
//! moves, gathers), that act on the machine rather than on registers
//! (MXCSR loads and stores, fences, prefetches, cache control, state
//! saves) or that belong to the integer side (CRC32, POPCNT). Whole
//! families come in at once; nothing here depends on guest input.

use std::sync::OnceLock;

use iced_x86::{Code, CpuidFeature as F, EncodingKind, Mnemonic as M};

/// Whether the host has `f` and it is a family stubs may run.
fn host_has(f: F) -> bool {
    use std::arch::is_x86_feature_detected as has;
    match f {
        F::SSE | F::SSE2 => true,
        F::SSE3 => has!("sse3"),
        F::SSSE3 => has!("ssse3"),
        F::SSE4_1 => has!("sse4.1"),
        F::SSE4_2 => has!("sse4.2"),
        F::AES => has!("aes"),
        F::PCLMULQDQ => has!("pclmulqdq"),
        F::SHA => has!("sha"),
        F::AVX => has!("avx"),
        F::AVX2 => has!("avx2"),
        F::FMA => has!("fma"),
        F::F16C => has!("f16c"),
        _ => false,
    }
}

fn excluded(m: M) -> bool {
    matches!(
        m,
        M::Ldmxcsr
            | M::Stmxcsr
            | M::Vldmxcsr
            | M::Vstmxcsr
            | M::Maskmovdqu
            | M::Vmaskmovdqu
            | M::Maskmovq
            | M::Vmaskmovps
            | M::Vmaskmovpd
            | M::Vpmaskmovd
            | M::Vpmaskmovq
            | M::Vgatherdps
            | M::Vgatherdpd
            | M::Vgatherqps
            | M::Vgatherqpd
            | M::Vpgatherdd
            | M::Vpgatherdq
            | M::Vpgatherqd
            | M::Vpgatherqq
            | M::Sfence
            | M::Lfence
            | M::Mfence
            | M::Pause
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Clflush
            | M::Movnti
            | M::Monitor
            | M::Mwait
            | M::Crc32
            | M::Popcnt
            | M::Fxsave
            | M::Fxsave64
            | M::Fxrstor
            | M::Fxrstor64
    )
}

fn allowed_uncached(code: Code) -> bool {
    if !matches!(code.encoding(), EncodingKind::Legacy | EncodingKind::VEX) {
        return false;
    }
    let fs = code.cpuid_features();
    !fs.is_empty() && fs.iter().all(|&f| host_has(f)) && !excluded(code.mnemonic())
}

/// Whether `code` may run on the host.
pub fn allowed(code: Code) -> bool {
    static TABLE: OnceLock<Vec<bool>> = OnceLock::new();
    let t = TABLE.get_or_init(|| Code::values().map(allowed_uncached).collect());
    t.get(code as usize).copied().unwrap_or(false)
}

/// The alignment (bytes) a memory operand of `size` bytes of `code` must
/// have, 0 for none: legacy SSE 16-byte operands except the unaligned
/// loads and the string compares; among VEX forms only the aligned and
/// non-temporal moves.
pub fn alignment(code: Code, size: usize) -> usize {
    let m = code.mnemonic();
    let aligned = match code.encoding() {
        EncodingKind::Legacy => {
            size == 16
                && !matches!(
                    m,
                    M::Movups
                        | M::Movupd
                        | M::Movdqu
                        | M::Lddqu
                        | M::Pcmpestri
                        | M::Pcmpestri64
                        | M::Pcmpestrm
                        | M::Pcmpestrm64
                        | M::Pcmpistri
                        | M::Pcmpistrm
                )
        }
        _ => matches!(
            m,
            M::Vmovaps
                | M::Vmovapd
                | M::Vmovdqa
                | M::Vmovntps
                | M::Vmovntpd
                | M::Vmovntdq
                | M::Vmovntdqa
        ),
    };
    if aligned {
        size
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_in_and_machine_instructions_out() {
        assert!(allowed(Code::Addsd_xmm_xmmm64));
        assert!(allowed(Code::Cvtpi2ps_xmm_mmm64));
        assert!(!allowed(Code::Ldmxcsr_m32));
        assert!(!allowed(Code::Maskmovdqu_rDI_xmm_xmm));
        assert!(!allowed(Code::Add_rm32_r32));
        assert!(!allowed(Code::Fxsave_m512byte));
        assert!(!allowed(Code::Prefetchnta_m8));
    }

    #[test]
    fn legacy_sse_needs_alignment_but_not_the_unaligned_loads() {
        assert_eq!(alignment(Code::Addps_xmm_xmmm128, 16), 16);
        assert_eq!(alignment(Code::Movups_xmm_xmmm128, 16), 0);
        assert_eq!(alignment(Code::Addsd_xmm_xmmm64, 8), 0);
        assert_eq!(alignment(Code::VEX_Vaddps_ymm_ymm_ymmm256, 32), 0);
        assert_eq!(alignment(Code::VEX_Vmovaps_ymm_ymmm256, 32), 32);
    }
}
