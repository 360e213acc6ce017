//! The generated list of advertised instructions no form covers
//! (`UNCOVERED.md`): every 64-bit-mode form whose CPUID features
//! (iced-x86's `Code::cpuid_features`) the soft engine's CPUID reports,
//! minus the forms the generator draws, each with the reason it is left
//! out (`leftout.rs`).

use std::collections::{BTreeMap, BTreeSet};

use hypervisor::{CpuidEntry, Hypervisor};
use iced_x86::{Code, CpuidFeature};

use super::leftout::{self, Reason};

/// Where a CPUID feature's bit is: leaf, subleaf, register (0-3 = EAX,
/// EBX, ECX, EDX) and bit. Features of the base architecture this
/// machine always has are `None` in [`location`].
const BITS: &[(&str, u32, u32, u8, u32)] = &[
    ("TSC", 1, 0, 3, 4),
    ("MSR", 1, 0, 3, 5),
    ("CX8", 1, 0, 3, 8),
    ("SEP", 1, 0, 3, 11),
    ("CMOV", 1, 0, 3, 15),
    ("CLFSH", 1, 0, 3, 19),
    ("MMX", 1, 0, 3, 23),
    ("FXSR", 1, 0, 3, 24),
    ("SSE", 1, 0, 3, 25),
    ("SSE2", 1, 0, 3, 26),
    ("SSE3", 1, 0, 2, 0),
    ("PCLMULQDQ", 1, 0, 2, 1),
    ("MONITOR", 1, 0, 2, 3),
    ("VMX", 1, 0, 2, 5),
    ("SMX", 1, 0, 2, 6),
    ("SSSE3", 1, 0, 2, 9),
    ("FMA", 1, 0, 2, 12),
    ("CMPXCHG16B", 1, 0, 2, 13),
    ("SSE4_1", 1, 0, 2, 19),
    ("SSE4_2", 1, 0, 2, 20),
    ("MOVBE", 1, 0, 2, 22),
    ("POPCNT", 1, 0, 2, 23),
    ("AES", 1, 0, 2, 25),
    ("XSAVE", 1, 0, 2, 26),
    ("AVX", 1, 0, 2, 28),
    ("F16C", 1, 0, 2, 29),
    ("RDRAND", 1, 0, 2, 30),
    ("FSGSBASE", 7, 0, 1, 0),
    ("BMI1", 7, 0, 1, 3),
    ("HLE", 7, 0, 1, 4),
    ("AVX2", 7, 0, 1, 5),
    ("BMI2", 7, 0, 1, 8),
    ("INVPCID", 7, 0, 1, 10),
    ("RTM", 7, 0, 1, 11),
    ("MPX", 7, 0, 1, 14),
    ("RDSEED", 7, 0, 1, 18),
    ("ADX", 7, 0, 1, 19),
    ("SMAP", 7, 0, 1, 20),
    ("CLFLUSHOPT", 7, 0, 1, 23),
    ("CLWB", 7, 0, 1, 24),
    ("SHA", 7, 0, 1, 29),
    ("PREFETCHWT1", 7, 0, 2, 0),
    ("PKU", 7, 0, 2, 3),
    ("WAITPKG", 7, 0, 2, 5),
    ("GFNI", 7, 0, 2, 8),
    ("VAES", 7, 0, 2, 9),
    ("VPCLMULQDQ", 7, 0, 2, 10),
    ("RDPID", 7, 0, 2, 22),
    ("MOVDIRI", 7, 0, 2, 27),
    ("MOVDIR64B", 7, 0, 2, 28),
    ("SERIALIZE", 7, 0, 3, 14),
    ("XSAVEOPT", 0xd, 1, 0, 0),
    ("XSAVEC", 0xd, 1, 0, 1),
    ("XSAVES", 0xd, 1, 0, 3),
    ("LZCNT", 0x8000_0001, 0, 2, 5),
    ("PREFETCHW", 0x8000_0001, 0, 2, 8),
    ("SYSCALL", 0x8000_0001, 0, 3, 11),
    ("RDTSCP", 0x8000_0001, 0, 3, 27),
];

/// Features every x86-64 CPU (and this engine) has.
const BASE: &[&str] = &[
    "INTEL8086",
    "INTEL186",
    "INTEL286",
    "INTEL386",
    "INTEL486",
    "X64",
    "FPU",
    "FPU287",
    "FPU387",
    "CPUID",
    "PAUSE",
    "MULTIBYTENOP",
];

fn advertised(cpuid: &[CpuidEntry], f: CpuidFeature) -> bool {
    let name = format!("{f:?}");
    if BASE.contains(&name.as_str()) {
        return true;
    }
    let Some(&(_, leaf, sub, reg, bit)) = BITS.iter().find(|b| b.0 == name) else {
        return false;
    };
    cpuid
        .iter()
        .find(|e| e.function == leaf && (!e.significant_index || e.index == sub))
        .is_some_and(|e| {
            let v = [e.eax, e.ebx, e.ecx, e.edx][usize::from(reg)];
            v >> bit & 1 != 0
        })
}

/// Does the soft engine's CPUID advertise every feature `code` needs?
pub fn is_advertised(code: Code) -> bool {
    static CPUID: std::sync::OnceLock<Vec<CpuidEntry>> = std::sync::OnceLock::new();
    let cpuid = CPUID.get_or_init(soft_cpuid);
    code.cpuid_features().iter().all(|&f| advertised(cpuid, f))
}

/// Every form the soft engine advertises in 64-bit mode.
fn advertised_forms(cpuid: &[CpuidEntry]) -> Vec<Code> {
    Code::values()
        .filter(|c| {
            let oc = c.op_code();
            oc.is_instruction()
                && oc.mode64()
                && oc.intel_decoder64()
                && c.cpuid_features().iter().all(|&f| advertised(cpuid, f))
        })
        .collect()
}

/// The soft engine's CPUID (its largest model).
pub fn soft_cpuid() -> Vec<CpuidEntry> {
    soft::SoftHypervisor::new()
        .supported_cpuid()
        .expect("soft cpuid")
}

/// `UNCOVERED.md`: every advertised form no form list covers, grouped
/// by the reason it is left out (`leftout::reason`), then those without a
/// reason; and the forms without a reason (the test wants none).
pub fn text(cpuid: &[CpuidEntry], covered: &BTreeSet<Code>) -> (String, Vec<Code>) {
    let forms = advertised_forms(cpuid);
    let mut by_reason: BTreeMap<Option<Reason>, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut unreasoned = Vec::new();
    let mut drawn = 0;
    for &c in &forms {
        if covered.contains(&c) {
            drawn += 1;
            continue;
        }
        let r = leftout::reason(c);
        if r.is_none() {
            unreasoned.push(c);
        }
        by_reason
            .entry(r)
            .or_default()
            .entry(format!("{:?}", c.mnemonic()))
            .or_default()
            .push(format!("`{c:?}`"));
    }
    let mut out = format!(
        "# Advertised instructions the differential harness does not cover\n\n\
         Generated by `tests/differential.rs` (with `COVERED.md`) from the soft \
         engine's CPUID and iced-x86's CPUID features of every 64-bit-mode \
         form, minus the forms in `tests/difftest/forms/` and the special \
         forms; each left-out form's reason comes from `tests/difftest/leftout.rs` \
         and the README explains each reason.\n\n\
         {} advertised forms: {drawn} drawn, {} left out ({} without a reason).\n",
        forms.len(),
        forms.len() - drawn,
        unreasoned.len()
    );
    for (r, by_mn) in &by_reason {
        let title = r.map_or("No reason recorded (a gap to close)", Reason::title);
        let n: usize = by_mn.values().map(Vec::len).sum();
        out.push_str(&format!("\n## {title} ({n})\n\n"));
        for (m, codes) in by_mn {
            out.push_str(&format!("- {m}: {}\n", codes.join(", ")));
        }
    }
    (out, unreasoned)
}
