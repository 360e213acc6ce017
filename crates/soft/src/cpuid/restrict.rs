//! An engine's CPUID table cut down to a model's features, so a guest
//! sees the same instruction set whichever host or engine runs it: the
//! model's [`Feature`]s not in the model are cleared, and so are the
//! other instruction-set extensions a host may offer (AVX-512, GFNI,
//! VAES, AMX, SSE4A/XOP/FMA4, ...), which no model includes. Bits that
//! describe the platform rather than the instruction set (TSC_ADJUST,
//! SMEP/SMAP, speculation controls, ...) stay as the engine gave them.

use hypervisor::CpuidEntry;

use super::leaves::{XCR0_AVX, XCR0_SSE, XCR0_X87, XSAVE_AVX_SIZE, XSAVE_LEGACY_AND_HEADER};
use super::{reg_mut, Feature, Features};

/// Leaf 1 ECX bits kept whatever the model: SSE3..RDRAND are model
/// features, and the rest of the ISA bits there are VMX/SMX/PCID-style
/// platform bits, except OSXSAVE, kept only with XSAVE.
const OSXSAVE: u32 = 1 << 27;
/// Leaf 7.0 EBX platform bits: TSC_ADJUST 1, FDP_EXCPTN_ONLY 6, SMEP 7,
/// ERMS 9, INVPCID 10, FCS/FDS deprecated 13, SMAP 20.
const LEAF7_EBX_PLATFORM: u32 =
    (1 << 1) | (1 << 6) | (1 << 7) | (1 << 9) | (1 << 10) | (1 << 13) | (1 << 20);
/// Leaf 7.0 ECX platform bits: UMIP 2, LA57 16.
const LEAF7_ECX_PLATFORM: u32 = (1 << 2) | (1 << 16);
/// Leaf 7.0 EDX platform bits: MD_CLEAR 10, IBRS/IBPB 26, STIBP 27,
/// L1D_FLUSH 28, ARCH_CAPABILITIES 29, SSBD 31.
const LEAF7_EDX_PLATFORM: u32 =
    (1 << 10) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29) | (1 << 31);
/// Leaf 0x8000_0001 ECX instruction-set bits that are no model's:
/// SSE4A 6, misaligned SSE 7, XOP 11, LWP 15, FMA4 16, TBM 21.
const EXT_ECX_FOREIGN: u32 = (1 << 6) | (1 << 7) | (1 << 11) | (1 << 15) | (1 << 16) | (1 << 21);

/// `offered` cut down to `model`.
pub fn restrict(offered: &[CpuidEntry], model: Features) -> Vec<CpuidEntry> {
    let mut out: Vec<CpuidEntry> = offered
        .iter()
        .filter(|e| keep_entry(e, model))
        .copied()
        .collect();
    for e in &mut out {
        restrict_entry(e, model);
    }
    clear_features(&mut out, model);
    out
}

/// Whether an entry survives: leaf 0xD only with XSAVE, and of its
/// component sub-leaves only AVX's, with AVX.
fn keep_entry(e: &CpuidEntry, model: Features) -> bool {
    if e.function != 0xd {
        return true;
    }
    match e.index {
        _ if !model.has(Feature::Xsave) => false,
        0 | 1 => true,
        2 => model.has(Feature::Avx),
        _ => false,
    }
}

fn restrict_entry(e: &mut CpuidEntry, model: Features) {
    match (e.function, e.index) {
        (1, _) if !model.has(Feature::Xsave) => e.ecx &= !OSXSAVE,
        (7, 0) => {
            // Sub-leaf 1 and up hold only instruction-set bits here.
            e.eax = 0;
            e.ebx &= LEAF7_EBX_PLATFORM | model_bits(model, 7, 0, super::Reg::Ebx);
            e.ecx &= LEAF7_ECX_PLATFORM;
            e.edx &= LEAF7_EDX_PLATFORM;
        }
        (7, _) => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        (0xd, 0) => {
            let avx = model.has(Feature::Avx);
            e.eax &= XCR0_X87 | XCR0_SSE | if avx { XCR0_AVX } else { 0 };
            e.edx = 0;
            e.ecx = XSAVE_LEGACY_AND_HEADER + if avx { XSAVE_AVX_SIZE } else { 0 };
        }
        (0xd, 1) => {
            e.eax &= model_bits(model, 0xd, 1, super::Reg::Eax);
            // No supervisor state (XSS).
            e.ecx = 0;
            e.edx = 0;
        }
        (0x8000_0001, _) => e.ecx &= !EXT_ECX_FOREIGN,
        _ => {}
    }
}

/// The bits the model's features have in one register of one leaf.
fn model_bits(model: Features, leaf: u32, sub: u32, reg: super::Reg) -> u32 {
    model
        .iter()
        .map(Feature::location)
        .filter(|&(l, s, r, _)| l == leaf && s == sub && r == reg)
        .fold(0, |acc, (_, _, _, bit)| acc | 1 << bit)
}

/// Clears the bit of every feature not in the model.
fn clear_features(out: &mut [CpuidEntry], model: Features) {
    for f in Feature::ALL.into_iter().filter(|&f| !model.has(f)) {
        let (function, sub, reg, bit) = f.location();
        for e in out
            .iter_mut()
            .filter(|e| e.function == function && (!e.significant_index || e.index == sub))
        {
            *reg_mut(e, reg) &= !(1 << bit);
        }
    }
}
