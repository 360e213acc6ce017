//! The soft engine's CPUID table, built from a feature set: an
//! AMD-flavoured CPU with fpu tsc msr pae cx8 apic sep pge cmov pat
//! clflush mmx fxsr sse sse2, syscall nx rdtscp lm, an invariant TSC and
//! TSC_ADJUST, FXSAVE that always saves the x87 error pointers, and the
//! model's [`Features`] at their CPUID bits.
//!
//! The identity is AMD family 0x10 model 0 stepping 2 (an early K10
//! signature): Linux treats it plainly. AMD means no Meltdown and so no
//! page-table isolation; family 0x10 is on Linux's speculative store
//! bypass whitelist and outside its Retbleed, SRSO and Zen errata lists
//! (family 0x17 picked the Zen1 FPDSS/DIV0 and SRSO paths), and model 0
//! stays below the E400 idle erratum (model 2 stepping 1 and up) and the
//! HWCR "TSC counts at P0" check (model 2 and up).

use hypervisor::CpuidEntry;

use super::{reg_mut, Feature, Features};

/// CPUID 1 / 0x8000_0001 EAX: family 0xf + extended family 1 = 0x10,
/// model 0, stepping 2.
pub const SIGNATURE: u32 = 0x0010_0f02;

/// XCR0 bits: x87, SSE, AVX.
pub const XCR0_X87: u32 = 1;
pub const XCR0_SSE: u32 = 2;
pub const XCR0_AVX: u32 = 4;
/// The XSAVE area's legacy region and header; the AVX component (YMM
/// upper halves, 256 bytes) follows at this offset.
pub const XSAVE_LEGACY_AND_HEADER: u32 = 576;
pub const XSAVE_AVX_SIZE: u32 = 256;

fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index: 0,
        significant_index: false,
        eax,
        ebx,
        ecx,
        edx,
    }
}

fn subleaf(function: u32, index: u32, regs: [u32; 4]) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        significant_index: true,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
    }
}

fn text(s: &[u8; 16]) -> [u32; 4] {
    [0, 1, 2, 3].map(|i| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]))
}

/// The table for `features`.
pub fn table(features: Features) -> Vec<CpuidEntry> {
    // "AuthenticAMD" in EBX, EDX, ECX order.
    let v = text(b"AuthenticAMD\0\0\0\0");
    let edx1 = (1 << 0)
        | (1 << 3)
        | (1 << 4)
        | (1 << 5)
        | (1 << 6)
        | (1 << 8)
        | (1 << 9)
        | (1 << 13)
        | (1 << 15)
        | (1 << 16)
        | (1 << 19)
        | (1 << 23)
        | (1 << 24)
        | (1 << 25)
        | (1 << 26);
    // TSC-deadline (bit 24: Linux then skips its 100 ms calibration of
    // the APIC timer against the PIT), hypervisor.
    let ecx1 = (1 << 24) | (1 << 31);
    // The AMD leaf mirrors bits 0-9 (fpu..apic), 12-17 (mtrr..pse36),
    // 23 (mmx) and 24 (fxsr) of leaf 1.
    let edx81 = (1 << 11) | (1 << 20) | (1 << 27) | (1 << 29) | (edx1 & 0x0183_f3ff);
    let b1 = text(b"vessel soft x86-");
    let b2 = text(b"64 engine\0\0\0\0\0\0\0");
    let xsave = features.has(Feature::Xsave);
    let mut out = vec![
        leaf(0, if xsave { 0xd } else { 7 }, v[0], v[2], v[1]),
        // Family 0x10 model 0 stepping 2; CLFLUSH line 8 (64 bytes).
        leaf(1, SIGNATURE, 8 << 8, ecx1, edx1),
        // Structured extended features: TSC_ADJUST (EBX bit 1). With an
        // invariant TSC it lets Linux skip the clocksource watchdog,
        // which would otherwise judge the TSC against jiffies that lag
        // while a slow guest keeps interrupts off. FDP_EXCPTN_ONLY (bit
        // 6) and FCS/FDS deprecated (bit 13): the x87 keeps FDP only on
        // unmasked exceptions and stores FCS/FDS as 0, as this host does.
        subleaf(7, 0, [0, (1 << 1) | (1 << 6) | (1 << 13), 0, 0]),
        leaf(0x8000_0000, 0x8000_0008, v[0], v[2], v[1]),
        leaf(0x8000_0001, SIGNATURE, 0, 0, edx81),
        leaf(0x8000_0002, b1[0], b1[1], b1[2], b1[3]),
        leaf(0x8000_0003, b2[0], b2[1], b2[2], b2[3]),
        leaf(0x8000_0004, 0, 0, 0, 0),
        // Invariant TSC (EDX bit 8): the guest TSC is the host's,
        // constant-rate and never stopping, so Linux trusts it as its
        // clocksource and sched_clock.
        leaf(0x8000_0007, 0, 0, 0, 1 << 8),
        // 48-bit linear, 40-bit physical addresses; XSAVEERPTR (EBX bit
        // 2): FXSAVE saves the error pointers, so Linux skips the old AMD
        // FNCLEX/EMMS/FILD scrub before every FXRSTOR.
        leaf(0x8000_0008, 0x3028, 1 << 2, 0, 0),
    ];
    if xsave {
        out.extend(xsave_leaves(features));
    }
    set_features(&mut out, features);
    out
}

/// Leaf 0xD: the state components (x87, SSE, and AVX with the model),
/// the XSAVE area's sizes and the AVX component's place in it. EBX of
/// sub-leaves 0 and 1 is the size for the XCR0 at reset (x87 only); the
/// CPUID instruction answers it for the XCR0 of the moment.
fn xsave_leaves(features: Features) -> Vec<CpuidEntry> {
    let avx = features.has(Feature::Avx);
    let xcr0 = XCR0_X87 | XCR0_SSE | if avx { XCR0_AVX } else { 0 };
    let max = XSAVE_LEGACY_AND_HEADER + if avx { XSAVE_AVX_SIZE } else { 0 };
    let mut out = vec![
        subleaf(0xd, 0, [xcr0, XSAVE_LEGACY_AND_HEADER, max, 0]),
        // EAX: XSAVEOPT/XSAVEC bits, set by `set_features`.
        subleaf(0xd, 1, [0, XSAVE_LEGACY_AND_HEADER, 0, 0]),
    ];
    if avx {
        out.push(subleaf(
            0xd,
            2,
            [XSAVE_AVX_SIZE, XSAVE_LEGACY_AND_HEADER, 0, 0],
        ));
    }
    out
}

/// Sets each feature's bit in its leaf.
fn set_features(out: &mut [CpuidEntry], features: Features) {
    for f in features.iter() {
        let (function, sub, reg, bit) = f.location();
        if let Some(e) = out
            .iter_mut()
            .find(|e| e.function == function && (!e.significant_index || e.index == sub))
        {
            *reg_mut(e, reg) |= 1 << bit;
        }
    }
}
