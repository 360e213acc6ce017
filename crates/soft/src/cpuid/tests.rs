//! The model tables: what each model advertises, the soft table's fixed
//! identity, and cutting a host-like table down to a model.

use super::*;

fn entry(t: &[CpuidEntry], function: u32, index: u32) -> &CpuidEntry {
    t.iter()
        .find(|e| e.function == function && (!e.significant_index || e.index == index))
        .expect("leaf")
}

/// glibc's x86-64 baseline needs MMX in both CPUID leaves.
#[test]
fn advertises_mmx() {
    let t = leaves::table(Features::engine_max());
    for f in [1, 0x8000_0001] {
        assert_ne!(entry(&t, f, 0).edx & (1 << 23), 0, "leaf {f:#x}");
    }
}

/// The baseline model is the table the engine had before the models:
/// cx16 popcnt tsc-deadline hypervisor, lahf_lm abm, TSC_ADJUST, max leaf
/// 7 (and the x87's FDP_EXCPTN_ONLY and FCS/FDS-deprecated bits).
#[test]
fn baseline_is_the_old_table() {
    let base = CpuModel::Baseline.features().expect("fixed set");
    let t = leaves::table(base);
    assert_eq!(entry(&t, 0, 0).eax, 7);
    assert_eq!(
        entry(&t, 1, 0).ecx,
        (1 << 13) | (1 << 23) | (1 << 24) | (1 << 31)
    );
    assert_eq!(entry(&t, 0x8000_0001, 0).ecx, 1 | (1 << 5));
    assert_eq!(entry(&t, 7, 0).ebx, (1 << 1) | (1 << 6) | (1 << 13));
    assert_eq!(entry(&t, 1, 0).eax, leaves::SIGNATURE);
    assert!(!t.iter().any(|e| e.function == 0xd));
}

#[test]
fn models_nest_and_name_their_features() {
    let b = CpuModel::Baseline.features().expect("set");
    let v2 = CpuModel::V2.features().expect("set");
    let v3 = CpuModel::V3.features().expect("set");
    assert!(b.minus(v2).is_empty() && v2.minus(v3).is_empty());
    assert_eq!(v2.minus(b).to_string(), "sse3, ssse3, sse4_1, sse4_2");
    assert!(v3.has(Feature::Avx2) && v3.has(Feature::Xsave) && !v3.has(Feature::Sha));
    assert_eq!(CpuModel::Max.features(), None);
    for (i, name) in CpuModel::NAMES.iter().enumerate() {
        let m: CpuModel = name.parse().expect("name");
        assert_eq!(m as usize, i);
        assert_eq!(m.to_string(), *name);
    }
    assert!("v4".parse::<CpuModel>().is_err());
}

/// Every feature's bit round-trips through a table built from it.
#[test]
fn table_bits_round_trip() {
    let all = Features::of(&Feature::ALL);
    assert_eq!(Features::from_cpuid(&leaves::table(all)), all);
    for f in Feature::ALL {
        let one = Features::of(&[f]).union(Features::of(&[Feature::Xsave]));
        assert_eq!(Features::from_cpuid(&leaves::table(one)), one, "{f:?}");
    }
}

#[test]
fn xsave_leaf_sizes_follow_avx() {
    let t = leaves::table(CpuModel::V3.features().expect("set"));
    assert_eq!(entry(&t, 0, 0).eax, 0xd);
    let d0 = entry(&t, 0xd, 0);
    assert_eq!((d0.eax, d0.ecx), (7, 832));
    let d2 = entry(&t, 0xd, 2);
    assert_eq!((d2.eax, d2.ebx), (256, 576));
    let t = leaves::table(Features::of(&[Feature::Xsave]));
    assert_eq!(entry(&t, 0xd, 0).eax, 3);
    assert!(!t.iter().any(|e| e.function == 0xd && e.index == 2));
}

#[test]
fn closed_drops_features_without_their_prerequisites() {
    let s = Features::of(&[Feature::Avx2, Feature::Avx, Feature::Bmi1]).closed();
    assert_eq!(s, Features::of(&[Feature::Bmi1]));
}

#[test]
fn the_max_model_is_the_engine_table() {
    let t = leaves::table(Features::engine_max());
    assert_eq!(CpuModel::Max.apply(&t).expect("max"), t);
    assert!(Features::engine_max()
        .minus(Features::of(ENGINE_EXACT))
        .is_empty());
}

#[test]
fn a_model_beyond_the_engine_names_what_is_missing() {
    let t = leaves::table(CpuModel::Baseline.features().expect("set"));
    let e = CpuModel::V2.apply(&t).expect_err("v2 on a baseline table");
    assert_eq!(
        e.to_string(),
        "--cpu-model v2 needs sse3, ssse3, sse4_1, sse4_2, which this engine cannot offer on this host"
    );
    assert_eq!(CpuModel::Baseline.apply(&t).expect("baseline"), t);
}

/// A host-like table (AVX-512, SHA, GFNI, XSAVES, AMX state) cut to v2
/// and v3.
#[test]
fn restrict_cuts_a_host_table() {
    let host = vec![
        CpuidEntry {
            function: 1,
            ecx: 0xfffa_3203 | (1 << 27),
            edx: 0x178b_fbff,
            ..Default::default()
        },
        CpuidEntry {
            function: 7,
            significant_index: true,
            eax: 1,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        },
        CpuidEntry {
            function: 7,
            index: 1,
            significant_index: true,
            eax: 0x30,
            ..Default::default()
        },
        CpuidEntry {
            function: 0xd,
            significant_index: true,
            eax: 0x2e7,
            ecx: 0xa88,
            ..Default::default()
        },
        CpuidEntry {
            function: 0xd,
            index: 1,
            significant_index: true,
            eax: 0xf,
            ecx: 0x100,
            ..Default::default()
        },
        CpuidEntry {
            function: 0xd,
            index: 2,
            significant_index: true,
            eax: 256,
            ebx: 576,
            ..Default::default()
        },
        CpuidEntry {
            function: 0xd,
            index: 5,
            significant_index: true,
            eax: 64,
            ebx: 1088,
            ..Default::default()
        },
        CpuidEntry {
            function: 0x8000_0001,
            ecx: 0x0000_0121 | (1 << 6),
            ..Default::default()
        },
    ];
    let v3 = CpuModel::V3.apply(&host).expect("v3 on the host");
    assert_eq!(
        Features::from_cpuid(&v3),
        CpuModel::V3.features().expect("set")
    );
    let l7 = entry(&v3, 7, 0);
    assert_eq!((l7.eax, l7.ecx), (0, (1 << 2) | (1 << 16)));
    assert_eq!(l7.ebx & (1 << 16), 0, "AVX-512F");
    assert_eq!(entry(&v3, 7, 1).eax, 0);
    assert_eq!(entry(&v3, 0xd, 0).eax, 7);
    assert_eq!(entry(&v3, 0xd, 1).eax, 0);
    assert!(!v3.iter().any(|e| e.function == 0xd && e.index == 5));
    assert_eq!(entry(&v3, 0x8000_0001, 0).ecx, 0x21);
    assert_ne!(
        entry(&v3, 1, 0).ecx & (1 << 27),
        0,
        "OSXSAVE kept with XSAVE"
    );

    let v2 = CpuModel::V2.apply(&host).expect("v2 on the host");
    assert_eq!(
        Features::from_cpuid(&v2),
        CpuModel::V2.features().expect("set")
    );
    assert_eq!(
        entry(&v2, 1, 0).ecx & (1 << 27),
        0,
        "no OSXSAVE without XSAVE"
    );
    assert!(!v2.iter().any(|e| e.function == 0xd));
}

#[test]
fn allows_judges_only_the_model_families() {
    use iced_x86::{Decoder, DecoderOptions};
    let decode = |bytes: &[u8]| Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode();
    let base = CpuModel::Baseline.features().expect("set");
    let v3 = CpuModel::V3.features().expect("set");
    // andn eax, ebx, ecx (BMI1)
    let andn = decode(&[0xc4, 0xe2, 0x60, 0xf2, 0xc1]);
    assert!(!base.allows(&andn) && v3.allows(&andn));
    // pshufb xmm0, xmm1 (SSSE3)
    let pshufb = decode(&[0x66, 0x0f, 0x38, 0x00, 0xc1]);
    assert!(!base.allows(&pshufb) && v3.allows(&pshufb));
    // paddd xmm0, xmm1 (SSE2) and add eax, ebx pass under any model.
    assert!(Features::EMPTY.allows(&decode(&[0x66, 0x0f, 0xfe, 0xc1])));
    assert!(Features::EMPTY.allows(&decode(&[0x01, 0xd8])));
}
