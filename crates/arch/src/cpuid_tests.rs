//! Tests for the CPUID filter, on a table shaped like what KVM reports.

use super::*;

fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        significant_index: matches!(function, 0x4 | 0x7 | 0xb | 0xd | 0x1f),
        eax,
        ebx,
        ecx,
        edx,
    }
}

fn vendor(name: &[u8; 12]) -> CpuidEntry {
    let w = |i: usize| u32::from_le_bytes([name[i], name[i + 1], name[i + 2], name[i + 3]]);
    leaf(0, 0, 0x1f, w(0), w(8), w(4))
}

fn supported(vendor_name: &[u8; 12]) -> Vec<CpuidEntry> {
    vec![
        vendor(vendor_name),
        // fpu..sse2, monitor, vmx, tsc-deadline; apic id 7 from the host.
        leaf(
            1,
            0,
            0x000a_0f10,
            0x0708_0800,
            0x0100_0029 | ECX_PDCM,
            0x178b_fbff | EDX_HTT | EDX_TM,
        ),
        leaf(4, 0, 0x0000_0121, 0x01c0_003f, 0x3f, 0),
        leaf(4, 1, 0x0000_0143, 0x01c0_003f, 0x3ff, 0),
        leaf(4, 2, 0x0000_0163, 0x03c0_003f, 0x3fff, 6),
        leaf(4, 3, 0, 0, 0, 0),
        leaf(5, 0, 0x40, 0x40, 3, 0x11142120),
        leaf(6, 0, 0x77, 2, 9, 0),
        leaf(7, 0, 0, 0x219c_07ab, 0x0040_0004, 0xac00_0400),
        leaf(0xa, 0, 0x0704_4304, 0, 0, 0x0000_0603),
        leaf(0xb, 0, 1, 2, 0x100, 7),
        leaf(0xd, 0, 0x7, 0x340, 0x340, 0),
        leaf(0x4000_0000, 0, 0x4000_0001, 1, 2, 3),
        leaf(0x8000_0001, 0, 0, 0, 0x0000_0121 | ECX_SVM, 0x2c10_0800),
        leaf(0x8000_0008, 0, 0x3030, 0, 0x0000_700f, 0),
        leaf(0x8000_001e, 0, 9, 0x0101, 0x0101, 0),
    ]
}

fn find(t: &[CpuidEntry], function: u32, index: u32) -> Option<CpuidEntry> {
    t.iter()
        .copied()
        .find(|e| e.function == function && e.index == index)
}

fn get(t: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
    find(t, function, index).unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
}

#[test]
fn leaf1_apic_id_count_and_hypervisor_bit() {
    let s = supported(b"GenuineIntel");
    for index in [0usize, 1, 3] {
        let t = cpuid(&s, index, 4, &CpuidOptions::default());
        let l1 = get(&t, 1, 0);
        assert_eq!(l1.ebx >> 24, index as u32);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "clflush size kept");
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_eq!(l1.ecx & (ECX_MONITOR | ECX_VMX | ECX_PDCM), 0);
        assert_ne!(
            l1.ecx & (1 << 24),
            0,
            "tsc-deadline kept as the engine reports it"
        );
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_eq!(l1.edx & EDX_TM, 0);
        assert_eq!(l1.edx & 1, 1, "fpu kept");
    }
}

#[test]
fn single_cpu_has_no_htt() {
    let t = cpuid(&supported(b"GenuineIntel"), 0, 1, &CpuidOptions::default());
    assert_eq!(get(&t, 1, 0).edx & EDX_HTT, 0);
    assert_eq!((get(&t, 1, 0).ebx >> 16) & 0xff, 1);
}

#[test]
fn x2apic_topology_leaves() {
    let t = cpuid(&supported(b"GenuineIntel"), 5, 6, &CpuidOptions::default());
    let smt = get(&t, 0xb, 0);
    let core = get(&t, 0xb, 1);
    let end = get(&t, 0xb, 2);
    assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
    assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
    assert_eq!((end.ebx, end.ecx >> 8, end.edx), (0, 0, 5));
    assert!(t
        .iter()
        .filter(|e| e.function == 0xb)
        .all(|e| e.significant_index));
    assert_eq!(
        t.iter().filter(|e| e.function == 0xb).count(),
        3,
        "host 0xb entries replaced"
    );
    assert!(
        find(&t, 0x1f, 0).is_none(),
        "0x1f only when the engine has it"
    );
}

#[test]
fn cache_leaf_reports_cores_and_sharing() {
    let t = cpuid(&supported(b"GenuineIntel"), 0, 4, &CpuidOptions::default());
    let l1d = get(&t, 4, 0);
    let l3 = get(&t, 4, 2);
    assert_eq!(l1d.eax >> 26, 3);
    assert_eq!((l1d.eax >> 14) & 0xfff, 0);
    assert_eq!(l3.eax >> 26, 3);
    assert_eq!((l3.eax >> 14) & 0xfff, 3);
    assert_eq!(l3.eax & 0x3fff, 0x163, "cache type and level kept");
    assert_eq!(get(&t, 4, 3).eax, 0, "terminator untouched");
}

#[test]
fn power_pmu_and_nested_virt_are_hidden() {
    let t = cpuid(&supported(b"GenuineIntel"), 0, 2, &CpuidOptions::default());
    assert_eq!(
        get(&t, 6, 0),
        CpuidEntry {
            eax: EAX_ARAT,
            ..leaf(6, 0, 0, 0, 0, 0)
        }
    );
    let pmu = get(&t, 0xa, 0);
    assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0));
    let mwait = get(&t, 5, 0);
    assert_eq!((mwait.eax, mwait.edx), (0, 0));
    assert_eq!(get(&t, 0x8000_0001, 0).ecx & ECX_SVM, 0);
}

#[test]
fn leaf7_and_xsave_pass_through() {
    let s = supported(b"GenuineIntel");
    let t = cpuid(&s, 1, 2, &CpuidOptions::default());
    assert_eq!(get(&t, 7, 0), get(&s, 7, 0));
    assert_eq!(get(&t, 0xd, 0), get(&s, 0xd, 0));
}

#[test]
fn kvm_leaves_when_asked() {
    let s = supported(b"GenuineIntel");
    let t = cpuid(
        &s,
        0,
        2,
        &CpuidOptions {
            kvm_pv: true,
            pv_unhalt: false,
        },
    );
    let sig = get(&t, 0x4000_0000, 0);
    let mut name = Vec::new();
    for r in [sig.ebx, sig.ecx, sig.edx] {
        name.extend_from_slice(&r.to_le_bytes());
    }
    assert_eq!(&name, b"KVMKVMKVM\0\0\0");
    assert_eq!(sig.eax, 0x4000_0001);
    let f = get(&t, 0x4000_0001, 0).eax;
    use kvm_features::*;
    assert_ne!(f & CLOCKSOURCE2, 0);
    assert_ne!(f & PV_EOI, 0);
    assert_ne!(f & STEAL_TIME, 0);
    assert_ne!(f & PV_TLB_FLUSH, 0);
    assert_eq!(f & (ASYNC_PF | PV_UNHALT), 0);
    assert_eq!(
        t.iter().filter(|e| e.function == 0x4000_0000).count(),
        1,
        "engine's leaf replaced"
    );

    let t = cpuid(
        &s,
        0,
        2,
        &CpuidOptions {
            kvm_pv: true,
            pv_unhalt: true,
        },
    );
    assert_ne!(get(&t, 0x4000_0001, 0).eax & PV_UNHALT, 0);
}

#[test]
fn kvm_features_are_limited_to_the_engines() {
    let mut s = supported(b"GenuineIntel");
    s.push(leaf(
        0x4000_0001,
        0,
        kvm_features::CLOCKSOURCE2 | kvm_features::ASYNC_PF,
        0,
        0,
        0,
    ));
    let t = cpuid(
        &s,
        0,
        1,
        &CpuidOptions {
            kvm_pv: true,
            pv_unhalt: true,
        },
    );
    assert_eq!(get(&t, 0x4000_0001, 0).eax, kvm_features::CLOCKSOURCE2);
}

#[test]
fn no_hypervisor_leaves_without_kvm_pv() {
    let t = cpuid(&supported(b"GenuineIntel"), 0, 2, &CpuidOptions::default());
    assert!(t
        .iter()
        .all(|e| !(0x4000_0000..=0x4fff_ffff).contains(&e.function)));
}

#[test]
fn amd_topology_leaves() {
    let t = cpuid(&supported(b"AuthenticAMD"), 2, 3, &CpuidOptions::default());
    let l8 = get(&t, 0x8000_0008, 0);
    assert_eq!(l8.ecx & 0xff, 2, "NC = cores - 1");
    assert_eq!((l8.ecx >> 12) & 0xf, 2, "apic id core bits");
    let e = get(&t, 0x8000_001e, 0);
    assert_eq!((e.eax, e.ebx, e.ecx), (2, 2, 0));
    // On Intel 0x8000_0008 ECX is left alone.
    let t = cpuid(&supported(b"GenuineIntel"), 2, 3, &CpuidOptions::default());
    assert_eq!(get(&t, 0x8000_0008, 0).ecx, 0x700f);
}

#[test]
fn hostile_sizes_do_not_panic() {
    let s = supported(b"AuthenticAMD");
    for (i, n) in [(0, 0), (usize::MAX, usize::MAX), (300, 1), (0, 1 << 40)] {
        let t = cpuid(
            &s,
            i,
            n,
            &CpuidOptions {
                kvm_pv: true,
                pv_unhalt: true,
            },
        );
        assert!(!t.is_empty());
    }
}
