//! The CPUID table each vCPU gets: the engine's supported leaves, filtered.
//! Per vCPU it sets the APIC IDs and a topology of one socket with
//! `cpu_count` single-thread cores; it marks the CPU as running under a
//! hypervisor, optionally adds KVM's paravirtual leaves, and hides features
//! no engine here virtualizes. Every change says why next to it.

use hypervisor::CpuidEntry;

/// Choices the VMM makes about what the guest sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidOptions {
    /// Advertise KVM's paravirtual interface (leaves 0x4000_0000/1).
    pub kvm_pv: bool,
    /// Also advertise PV spinlock unhalt (only useful with more vCPUs than
    /// host cores, and it needs the engine's KVM_HC_KICK_CPU).
    pub pv_unhalt: bool,
}

/// Hypervisor leaf range: the engine's own entries here are replaced.
const HYPERVISOR_LEAVES: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4fff_ffff;
const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
const KVM_FEATURES_LEAF: u32 = 0x4000_0001;

/// KVM paravirtual feature bits (leaf 0x4000_0001 EAX).
pub mod kvm_features {
    pub const NOP_IO_DELAY: u32 = 1 << 1;
    pub const CLOCKSOURCE2: u32 = 1 << 3;
    pub const ASYNC_PF: u32 = 1 << 4;
    pub const STEAL_TIME: u32 = 1 << 5;
    pub const PV_EOI: u32 = 1 << 6;
    pub const PV_UNHALT: u32 = 1 << 7;
    pub const PV_TLB_FLUSH: u32 = 1 << 9;
    pub const CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
}

// Leaf 1 ECX.
const ECX_MONITOR: u32 = 1 << 3;
const ECX_DS_CPL: u32 = 1 << 4;
const ECX_VMX: u32 = 1 << 5;
const ECX_SMX: u32 = 1 << 6;
const ECX_EST: u32 = 1 << 7;
const ECX_TM2: u32 = 1 << 8;
const ECX_PDCM: u32 = 1 << 15;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 1 EDX.
const EDX_DS: u32 = 1 << 21;
const EDX_ACPI: u32 = 1 << 22;
const EDX_HTT: u32 = 1 << 28;
const EDX_TM: u32 = 1 << 29;
const EDX_PBE: u32 = 1 << 31;
// Leaf 6 EAX: the APIC timer runs at a constant rate in every C-state.
const EAX_ARAT: u32 = 1 << 2;
// Leaf 0x8000_0001 ECX.
const ECX_SVM: u32 = 1 << 2;
const ECX_MONITORX: u32 = 1 << 29;

/// Level types of leaves 0xB/0x1F (ECX[15:8]).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Builds vCPU `cpu_index`'s CPUID table out of the engine's `supported`
/// leaves for a VM of `cpu_count` vCPUs.
pub fn cpuid(
    supported: &[CpuidEntry],
    cpu_index: usize,
    cpu_count: usize,
    opts: &CpuidOptions,
) -> Vec<CpuidEntry> {
    let count = u32::try_from(cpu_count.max(1)).unwrap_or(u32::MAX);
    let apic_id = u32::try_from(cpu_index).unwrap_or(u32::MAX);
    // Bits of the APIC ID that number cores: ceil(log2(count)).
    let core_bits = u32::BITS - (count - 1).leading_zeros();
    let topo = Topology {
        apic_id,
        count,
        core_bits,
    };
    let amd = is_amd(supported);
    let has = |f: u32| supported.iter().any(|e| e.function == f);

    let mut out: Vec<CpuidEntry> = supported
        .iter()
        // Regenerated below: topology leaves and the hypervisor range.
        .filter(|e| {
            !HYPERVISOR_LEAVES.contains(&e.function) && e.function != 0xb && e.function != 0x1f
        })
        .map(|e| filter_entry(*e, &topo, amd))
        .collect();
    if has(0xb) || max_basic_leaf(supported) >= 0xb {
        out.extend(extended_topology(0xb, &topo));
    }
    if has(0x1f) {
        out.extend(extended_topology(0x1f, &topo));
    }
    if opts.kvm_pv {
        out.extend(kvm_leaves(supported, opts));
    }
    out
}

struct Topology {
    apic_id: u32,
    count: u32,
    core_bits: u32,
}

fn is_amd(supported: &[CpuidEntry]) -> bool {
    supported.iter().any(|e| {
        e.function == 0
            && ((e.ebx, e.edx, e.ecx)
                == (
                    u32::from_le_bytes(*b"Auth"),
                    u32::from_le_bytes(*b"enti"),
                    u32::from_le_bytes(*b"cAMD"),
                )
                || (e.ebx, e.edx, e.ecx)
                    == (
                        u32::from_le_bytes(*b"Hygo"),
                        u32::from_le_bytes(*b"nGen"),
                        u32::from_le_bytes(*b"uine"),
                    ))
    })
}

fn max_basic_leaf(supported: &[CpuidEntry]) -> u32 {
    supported
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax)
}

fn filter_entry(mut e: CpuidEntry, t: &Topology, amd: bool) -> CpuidEntry {
    match e.function {
        0x1 => {
            // Initial APIC ID (8 bits) and logical processors per package.
            e.ebx =
                (e.ebx & 0x0000_ffff) | ((t.apic_id.min(0xff)) << 24) | (t.count.min(0xff) << 16);
            // Not virtualized: MONITOR/MWAIT (idle is HLT), DS-CPL/DS/PDCM
            // (debug store and perf capabilities need PMU MSRs), VMX/SMX
            // (no nested virtualization or TXT), EST/TM/TM2/ACPI/PBE
            // (host power and thermal control).
            e.ecx &= !(ECX_MONITOR | ECX_DS_CPL | ECX_VMX | ECX_SMX | ECX_EST | ECX_TM2 | ECX_PDCM);
            // Tell the guest it runs on a hypervisor (enables PV detection).
            e.ecx |= ECX_HYPERVISOR;
            e.edx &= !(EDX_DS | EDX_ACPI | EDX_TM | EDX_PBE);
            // HTT says EBX[23:16] counts more than one logical processor.
            if t.count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        // Deterministic cache parameters (cache type 0 ends the list):
        // cores per package, and which caches are shared (L3 by all
        // cores, L1/L2 private: one thread per core).
        0x4 if e.eax & 0x1f != 0 => {
            let level = (e.eax >> 5) & 0x7;
            let sharing = if level >= 3 {
                (t.count - 1).min(0xfff)
            } else {
                0
            };
            e.eax = (e.eax & 0x3fff) | (sharing << 14) | ((t.count - 1).min(0x3f) << 26);
        }
        0x5 => {
            // MONITOR/MWAIT parameters: hidden with MONITOR.
            zero(&mut e);
        }
        0x6 => {
            // Thermal and power management is the host's; keep only ARAT,
            // which says the APIC timer does not stop in idle.
            let arat = e.eax & EAX_ARAT;
            zero(&mut e);
            e.eax = arat;
        }
        0xa => {
            // Architectural PMU: no engine virtualizes performance counters.
            zero(&mut e);
        }
        0x8000_0001 => {
            // No nested SVM; MONITORX hidden like MONITOR.
            e.ecx &= !(ECX_SVM | ECX_MONITORX);
        }
        0x8000_0008 if amd => {
            // AMD core count: NC = cores - 1, and the APIC ID bits for cores.
            e.ecx = (e.ecx & !0xf0ff) | ((t.count - 1).min(0xff)) | (t.core_bits.min(0xf) << 12);
        }
        0x8000_000a => {
            // SVM feature leaf: meaningless without SVM.
            zero(&mut e);
        }
        0x8000_001e => {
            // AMD extended APIC ID, core (compute unit) ID with one thread
            // per core, node 0 of one.
            e.eax = t.apic_id;
            e.ebx = t.apic_id & 0xff;
            e.ecx = 0;
            e.edx = 0;
        }
        _ => {}
    }
    e
}

fn zero(e: &mut CpuidEntry) {
    e.eax = 0;
    e.ebx = 0;
    e.ecx = 0;
    e.edx = 0;
}

/// Leaf 0xB or 0x1F: SMT level (one thread per core), core level
/// (`count` cores), then the terminating invalid level. EDX is the x2APIC
/// ID at every level.
fn extended_topology(function: u32, t: &Topology) -> [CpuidEntry; 3] {
    let level = |index: u32, eax: u32, ebx: u32, kind: u32| CpuidEntry {
        function,
        index,
        significant_index: true,
        eax,
        ebx,
        ecx: (kind << 8) | index,
        edx: t.apic_id,
    };
    [
        level(0, 0, 1, LEVEL_SMT),
        level(1, t.core_bits, t.count, LEVEL_CORE),
        level(2, 0, 0, 0),
    ]
}

/// KVM's signature and feature leaves. Features are the wanted set, masked
/// by what the engine reports in its own 0x4000_0001 when it reports one.
fn kvm_leaves(supported: &[CpuidEntry], opts: &CpuidOptions) -> [CpuidEntry; 2] {
    use kvm_features::*;
    // kvmclock (v2, with the stable bit), steal time (and PV TLB flush,
    // which relies on its preempted flag), PV EOI, no port-0x80 delays.
    // Async page faults stay off: guest memory is never swapped out under
    // it. PV unhalt only when asked.
    let mut wanted =
        NOP_IO_DELAY | CLOCKSOURCE2 | STEAL_TIME | PV_EOI | PV_TLB_FLUSH | CLOCKSOURCE_STABLE_BIT;
    if opts.pv_unhalt {
        wanted |= PV_UNHALT;
    }
    wanted &= !ASYNC_PF;
    let features = supported
        .iter()
        .find(|e| e.function == KVM_FEATURES_LEAF)
        .map_or(wanted, |e| wanted & e.eax);
    [
        CpuidEntry {
            function: KVM_SIGNATURE_LEAF,
            eax: KVM_FEATURES_LEAF,
            ebx: u32::from_le_bytes(*b"KVMK"),
            ecx: u32::from_le_bytes(*b"VMKV"),
            edx: u32::from_le_bytes(*b"M\0\0\0"),
            ..Default::default()
        },
        CpuidEntry {
            function: KVM_FEATURES_LEAF,
            eax: features,
            ..Default::default()
        },
    ]
}

#[cfg(test)]
#[path = "cpuid_tests.rs"]
mod tests;
