//! The CPU models: which instruction-set features the guest's CPUID
//! advertises (`--cpu-model baseline|v2|v3|max`), the soft engine's CPUID
//! leaves built from a feature set ([`leaves`]), and any engine's table
//! cut down to a model ([`restrict`]).
//!
//! A model is a [`Features`] set over the extensions that distinguish
//! x86-64-v2, -v3 and the common extras; everything below them (the
//! x86-64 baseline: x87, MMX, SSE, SSE2, CMOV, ...) is always there. The
//! soft engine advertises a feature only when it runs it exactly (listed
//! in [`ENGINE_EXACT`]) and, for the SIMD families it executes with the
//! host's own instruction, only when the host has it.

pub mod leaves;
pub mod restrict;

use std::fmt;
use std::str::FromStr;

use hypervisor::CpuidEntry;
use iced_x86::{CpuidFeature, Instruction};

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One instruction-set extension a model may or may not include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Feature {
    Sse3,
    Pclmulqdq,
    Ssse3,
    Fma,
    Cx16,
    Sse41,
    Sse42,
    Movbe,
    Popcnt,
    Aes,
    Xsave,
    Avx,
    F16c,
    Rdrand,
    Lahf,
    Lzcnt,
    Prefetchw,
    Fsgsbase,
    Bmi1,
    Avx2,
    Bmi2,
    Rdseed,
    Adx,
    Sha,
    Xsaveopt,
    Xsavec,
    Xgetbv1,
}

impl Feature {
    /// Every feature, in CPUID order.
    pub const ALL: [Feature; 27] = [
        Feature::Sse3,
        Feature::Pclmulqdq,
        Feature::Ssse3,
        Feature::Fma,
        Feature::Cx16,
        Feature::Sse41,
        Feature::Sse42,
        Feature::Movbe,
        Feature::Popcnt,
        Feature::Aes,
        Feature::Xsave,
        Feature::Avx,
        Feature::F16c,
        Feature::Rdrand,
        Feature::Lahf,
        Feature::Lzcnt,
        Feature::Prefetchw,
        Feature::Fsgsbase,
        Feature::Bmi1,
        Feature::Avx2,
        Feature::Bmi2,
        Feature::Rdseed,
        Feature::Adx,
        Feature::Sha,
        Feature::Xsaveopt,
        Feature::Xsavec,
        Feature::Xgetbv1,
    ];

    /// Where CPUID reports it: leaf, sub-leaf, register, bit.
    pub fn location(self) -> (u32, u32, Reg, u32) {
        use Feature as F;
        let bit = match self {
            F::Sse3 => 0,
            F::Pclmulqdq => 1,
            F::Ssse3 => 9,
            F::Fma => 12,
            F::Cx16 => 13,
            F::Sse41 => 19,
            F::Sse42 => 20,
            F::Movbe => 22,
            F::Popcnt => 23,
            F::Aes => 25,
            F::Xsave => 26,
            F::Avx => 28,
            F::F16c => 29,
            F::Rdrand => 30,
            F::Lahf => return (0x8000_0001, 0, Reg::Ecx, 0),
            F::Lzcnt => return (0x8000_0001, 0, Reg::Ecx, 5),
            F::Prefetchw => return (0x8000_0001, 0, Reg::Ecx, 8),
            F::Fsgsbase => return (7, 0, Reg::Ebx, 0),
            F::Bmi1 => return (7, 0, Reg::Ebx, 3),
            F::Avx2 => return (7, 0, Reg::Ebx, 5),
            F::Bmi2 => return (7, 0, Reg::Ebx, 8),
            F::Rdseed => return (7, 0, Reg::Ebx, 18),
            F::Adx => return (7, 0, Reg::Ebx, 19),
            F::Sha => return (7, 0, Reg::Ebx, 29),
            F::Xsaveopt => return (0xd, 1, Reg::Eax, 0),
            F::Xsavec => return (0xd, 1, Reg::Eax, 1),
            F::Xgetbv1 => return (0xd, 1, Reg::Eax, 2),
        };
        (1, 0, Reg::Ecx, bit)
    }

    /// The name users know it by (as in Linux's /proc/cpuinfo where that
    /// name is not obscure).
    pub fn name(self) -> &'static str {
        use Feature as F;
        match self {
            F::Sse3 => "sse3",
            F::Pclmulqdq => "pclmulqdq",
            F::Ssse3 => "ssse3",
            F::Fma => "fma",
            F::Cx16 => "cx16",
            F::Sse41 => "sse4_1",
            F::Sse42 => "sse4_2",
            F::Movbe => "movbe",
            F::Popcnt => "popcnt",
            F::Aes => "aes",
            F::Xsave => "xsave",
            F::Avx => "avx",
            F::F16c => "f16c",
            F::Rdrand => "rdrand",
            F::Lahf => "lahf_lm",
            F::Lzcnt => "lzcnt",
            F::Prefetchw => "prefetchw",
            F::Fsgsbase => "fsgsbase",
            F::Bmi1 => "bmi1",
            F::Avx2 => "avx2",
            F::Bmi2 => "bmi2",
            F::Rdseed => "rdseed",
            F::Adx => "adx",
            F::Sha => "sha",
            F::Xsaveopt => "xsaveopt",
            F::Xsavec => "xsavec",
            F::Xgetbv1 => "xgetbv1",
        }
    }

    /// Whether the soft engine can offer it on this host: the families it
    /// runs with the host's own instruction need the host to have them;
    /// the rest it computes itself.
    pub fn on_host(self) -> bool {
        use Feature as F;
        match self {
            F::Sse3 => std::arch::is_x86_feature_detected!("sse3"),
            F::Pclmulqdq => std::arch::is_x86_feature_detected!("pclmulqdq"),
            F::Ssse3 => std::arch::is_x86_feature_detected!("ssse3"),
            F::Fma => std::arch::is_x86_feature_detected!("fma"),
            F::Sse41 => std::arch::is_x86_feature_detected!("sse4.1"),
            F::Sse42 => std::arch::is_x86_feature_detected!("sse4.2"),
            F::Aes => std::arch::is_x86_feature_detected!("aes"),
            F::Avx => std::arch::is_x86_feature_detected!("avx"),
            F::F16c => std::arch::is_x86_feature_detected!("f16c"),
            F::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            F::Sha => std::arch::is_x86_feature_detected!("sha"),
            _ => true,
        }
    }

    /// What it needs besides the baseline: a CPU offering it without
    /// these would be one no guest expects.
    fn requires(self) -> Features {
        use Feature as F;
        match self {
            F::Avx | F::Xsaveopt | F::Xsavec | F::Xgetbv1 => Features::of(&[F::Xsave]),
            F::Avx2 | F::Fma | F::F16c => Features::of(&[F::Xsave, F::Avx]),
            _ => Features::EMPTY,
        }
    }

    /// The feature of ours an iced-x86 CPUID feature is, if any.
    fn of_iced(f: CpuidFeature) -> Option<Feature> {
        use CpuidFeature as C;
        use Feature as F;
        Some(match f {
            C::SSE3 => F::Sse3,
            C::PCLMULQDQ => F::Pclmulqdq,
            C::SSSE3 => F::Ssse3,
            C::FMA => F::Fma,
            C::CMPXCHG16B => F::Cx16,
            C::SSE4_1 => F::Sse41,
            C::SSE4_2 => F::Sse42,
            C::MOVBE => F::Movbe,
            C::POPCNT => F::Popcnt,
            C::AES => F::Aes,
            C::XSAVE => F::Xsave,
            C::AVX => F::Avx,
            C::F16C => F::F16c,
            C::RDRAND => F::Rdrand,
            C::LZCNT => F::Lzcnt,
            C::FSGSBASE => F::Fsgsbase,
            C::BMI1 => F::Bmi1,
            C::AVX2 => F::Avx2,
            C::BMI2 => F::Bmi2,
            C::RDSEED => F::Rdseed,
            C::ADX => F::Adx,
            C::SHA => F::Sha,
            C::XSAVEOPT => F::Xsaveopt,
            C::XSAVEC => F::Xsavec,
            _ => return None,
        })
    }
}

/// A set of [`Feature`]s.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Features(u32);

/// The features the soft engine runs exactly, each added when its owner
/// checked it against the CPU with the differential harness
/// (/work/notes/features-ready.md during issue 13). CX16, POPCNT,
/// LAHF/SAHF and LZCNT are the x86-64 baseline table's own.
pub const ENGINE_EXACT: &[Feature] = &[
    Feature::Cx16,
    Feature::Popcnt,
    Feature::Lahf,
    Feature::Lzcnt,
    Feature::Bmi1,
    Feature::Bmi2,
    Feature::Movbe,
    Feature::Adx,
    Feature::Fsgsbase,
    Feature::Rdrand,
    Feature::Rdseed,
    Feature::Prefetchw,
    Feature::Sse3,
    Feature::Ssse3,
    Feature::Sse41,
    Feature::Sse42,
    Feature::Aes,
    Feature::Pclmulqdq,
    Feature::Sha,
    Feature::Xsave,
    Feature::Xsaveopt,
    Feature::Xsavec,
    Feature::Xgetbv1,
    Feature::Avx,
    Feature::Avx2,
    Feature::Fma,
    Feature::F16c,
];

impl Features {
    pub const EMPTY: Features = Features(0);

    /// The set of `list`.
    pub const fn of(list: &[Feature]) -> Features {
        let mut bits = 0;
        let mut i = 0;
        while i < list.len() {
            bits |= 1 << list[i] as u32;
            i += 1;
        }
        Features(bits)
    }

    #[inline]
    pub fn has(self, f: Feature) -> bool {
        self.0 & (1 << f as u32) != 0
    }

    pub fn with(self, f: Feature) -> Features {
        Features(self.0 | 1 << f as u32)
    }

    pub fn union(self, o: Features) -> Features {
        Features(self.0 | o.0)
    }

    /// The features of `self` not in `o`.
    pub fn minus(self, o: Features) -> Features {
        Features(self.0 & !o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The features of the set, in CPUID order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |&f| self.has(f))
    }

    /// The set without the features whose prerequisites it lacks.
    pub fn closed(self) -> Features {
        let mut s = self;
        for f in Feature::ALL {
            if s.has(f) && !f.requires().minus(s).is_empty() {
                s = s.minus(Features::of(&[f]));
            }
        }
        s
    }

    /// Everything the soft engine runs exactly on this host: the `max`
    /// model.
    pub fn engine_max() -> Features {
        let mut s = Features::EMPTY;
        for &f in ENGINE_EXACT {
            if f.on_host() {
                s = s.with(f);
            }
        }
        s.closed()
    }

    /// Every feature: a vCPU whose CPUID was never set (as in the
    /// engine's own tests) runs every instruction the engine implements.
    pub const UNRESTRICTED: Features = Features::of(&Feature::ALL);

    /// The features a CPUID table advertises; an empty table restricts
    /// nothing ([`Features::UNRESTRICTED`]).
    pub fn from_cpuid(entries: &[CpuidEntry]) -> Features {
        if entries.is_empty() {
            return Features::UNRESTRICTED;
        }
        let mut s = Features::EMPTY;
        for f in Feature::ALL {
            let (leaf, sub, reg, bit) = f.location();
            let hit = entries.iter().any(|e| {
                e.function == leaf
                    && (!e.significant_index || e.index == sub)
                    && (reg_of(e, reg) >> bit) & 1 != 0
            });
            if hit {
                s = s.with(f);
            }
        }
        s
    }

    /// Whether a CPU with these features runs `ins` rather than raising
    /// #UD for a feature it lacks (only the families of [`Feature`] are
    /// judged; everything else passes).
    #[inline]
    pub fn allows(self, ins: &Instruction) -> bool {
        ins.cpuid_features()
            .iter()
            .all(|&c| Feature::of_iced(c).is_none_or(|f| self.has(f)))
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Feature::name))
            .finish()
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Feature::name).collect();
        f.write_str(&names.join(", "))
    }
}

/// A register of a CPUID entry.
pub fn reg_of(e: &CpuidEntry, r: Reg) -> u32 {
    match r {
        Reg::Eax => e.eax,
        Reg::Ebx => e.ebx,
        Reg::Ecx => e.ecx,
        Reg::Edx => e.edx,
    }
}

/// A register of a CPUID entry, to write.
pub fn reg_mut(e: &mut CpuidEntry, r: Reg) -> &mut u32 {
    match r {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

/// What `--cpu-model` asks CPUID to advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum CpuModel {
    /// x86-64 with CX16, POPCNT, LAHF/SAHF and LZCNT (the soft engine's
    /// table before the v2/v3 work).
    Baseline,
    /// x86-64-v2: + SSE3, SSSE3, SSE4.1, SSE4.2.
    V2,
    /// x86-64-v3: + AVX, AVX2, BMI1, BMI2, FMA, F16C, MOVBE, XSAVE.
    V3,
    /// Everything the engine offers: on the soft engine what it runs
    /// exactly on this host, on KVM the host's whole set.
    #[default]
    Max,
}

impl CpuModel {
    pub const NAMES: [&'static str; 4] = ["baseline", "v2", "v3", "max"];

    /// The model's features; `None` for `max`, which is whatever the
    /// engine offers.
    pub fn features(self) -> Option<Features> {
        use Feature as F;
        let base = Features::of(&[F::Cx16, F::Popcnt, F::Lahf, F::Lzcnt]);
        let v2 = base.union(Features::of(&[F::Sse3, F::Ssse3, F::Sse41, F::Sse42]));
        let v3 = v2.union(Features::of(&[
            F::Avx,
            F::Avx2,
            F::Bmi1,
            F::Bmi2,
            F::Fma,
            F::F16c,
            F::Movbe,
            F::Xsave,
        ]));
        match self {
            CpuModel::Baseline => Some(base),
            CpuModel::V2 => Some(v2),
            CpuModel::V3 => Some(v3),
            CpuModel::Max => None,
        }
    }

    /// The model applied to an engine's CPUID table (`offered`, as the
    /// engine's `supported_cpuid` gives it): the table cut down to the
    /// model, or which of the model's features the engine lacks.
    pub fn apply(self, offered: &[CpuidEntry]) -> Result<Vec<CpuidEntry>, ModelError> {
        let Some(want) = self.features() else {
            return Ok(offered.to_vec());
        };
        let have = Features::from_cpuid(offered);
        let missing = want.minus(have);
        if !missing.is_empty() {
            return Err(ModelError {
                model: self,
                missing,
            });
        }
        Ok(restrict::restrict(offered, want))
    }
}

impl CpuModel {
    /// Whether the soft engine gives this model on this host: `Err` holds
    /// the features it lacks (`max` it always gives).
    pub fn on_soft_engine(self) -> Result<(), Features> {
        let want = self.features().unwrap_or(Features::EMPTY);
        let missing = want.minus(Features::engine_max());
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

impl fmt::Display for CpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

impl FromStr for CpuModel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "baseline" => CpuModel::Baseline,
            "v2" | "x86-64-v2" => CpuModel::V2,
            "v3" | "x86-64-v3" => CpuModel::V3,
            "max" => CpuModel::Max,
            _ => return Err(format!("unknown CPU model {s:?} (baseline, v2, v3, max)")),
        })
    }
}

/// A model the engine cannot give on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--cpu-model {model} needs {missing}, which this engine cannot offer on this host")]
pub struct ModelError {
    pub model: CpuModel,
    pub missing: Features,
}

#[cfg(test)]
mod tests;
