//! Differential test of the soft engine against the real CPU: random
//! snippets from tables of instruction forms (`difftest/forms/`) run at
//! CPL3 under KVM (native on this machine) and under the soft engine in
//! each of its tiers; registers, defined flags, exceptions (vector, error
//! code, faulting RIP, CR2), XMM, the x87 registers, FCW, FSW, FTW,
//! MXCSR, FOP/FIP/FDP and the memory
//! touched must match.
//!
//! `DIFFTEST_SNIPPETS` (default 50,000) and `DIFFTEST_SEED` set the count
//! and seed; the long run is 1,000,000 snippets each of the seeds in the
//! README. `DIFFTEST_TIERS=jit,interp,slow` picks tiers (default all);
//! the other knobs are in `difftest/knobs.rs`.

mod difftest;

use difftest::gen::{snippet, Rng};
use difftest::reference::Reference;
use difftest::report::{diff, Tally};
use difftest::softrun::{SoftRunner, Tier};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn soft_engine_matches_the_cpu() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("DIFFERENTIAL TESTS SKIPPED: /dev/kvm is missing");
        return;
    }
    let n = env_u64("DIFFTEST_SNIPPETS", 50_000);
    let seed = env_u64("DIFFTEST_SEED", 0x5eed_0f5e_55e1);
    let mut reference = match Reference::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("DIFFERENTIAL TESTS SKIPPED: KVM unusable: {e}");
            return;
        }
    };
    let mut tiers: Vec<SoftRunner> = Tier::from_env().into_iter().map(SoftRunner::new).collect();
    let mut rng = Rng::new(seed);
    let mut mismatches = 0;
    // Runs left out: the reference's #UD is this host's KVM's (see
    // `native::host_ud_for_fault`).
    let mut host_ud = 0;
    let mut tally = Tally::default();
    let mut faults = std::collections::BTreeMap::<u64, u64>::new();
    let start = std::time::Instant::now();
    for i in 0..n {
        let s = snippet(&mut rng);
        let want = reference
            .run(&s)
            .unwrap_or_else(|e| panic!("snippet {i}: kvm: {e}\n{:#?}", s.text));
        *faults.entry(want.vector).or_default() += 1;
        let mut bad = false;
        for soft in tiers.iter_mut() {
            // An exit the harness does not expect (the engine stopping on
            // an instruction it lacks) is a mismatch like any other.
            let got = soft.run(&s);
            if got
                .as_ref()
                .is_ok_and(|g| difftest::native::host_ud_for_fault(&s, &want, g))
            {
                host_ud += 1;
                continue;
            }
            if got.as_ref().ok() != Some(&want) {
                bad = true;
                mismatches += 1;
                tally.add_parts(&want, &got);
                if mismatches <= 10 {
                    eprintln!("MISMATCH in snippet {i} ({:?}): {:#?}", soft.tier, s.text);
                    eprintln!("  start regs: {:x?}", s.regs);
                    match &got {
                        Ok(got) => diff(&want, got),
                        Err(e) => eprintln!("  soft: {e}"),
                    }
                    // The same snippet on a new vCPU of the tier: a match
                    // there means state left by earlier snippets matters.
                    if SoftRunner::new(soft.tier).run(&s).as_ref().ok() == Some(&want) {
                        eprintln!("  (a new vCPU of this tier matches the CPU)");
                    }
                }
            }
        }
        tally.add(&s.codes, bad);
    }
    eprintln!(
        "differential: {n} snippets x {} tiers, {mismatches} mismatches, {host_ud} runs left out (host KVM's #UD), seed {seed:#x}, {:.1} s; exit vectors {faults:?}",
        tiers.len(),
        start.elapsed().as_secs_f64()
    );
    tally.print_parts();
    tally.print_suspects(30);
    assert_eq!(
        mismatches, 0,
        "{mismatches} snippet runs of {n} differ from the CPU"
    );
}

/// `tests/difftest/COVERED.md` (the forms drawn) and `UNCOVERED.md` (the
/// advertised forms not drawn, with their reasons) are current
/// (`DIFFTEST_REGEN=1` rewrites them), and every advertised form not
/// drawn has a reason.
#[test]
fn covered_list_is_current() {
    let covered: std::collections::BTreeSet<iced_x86::Code> = difftest::forms::AREAS
        .iter()
        .flat_map(|(_, f)| f.iter().copied())
        .chain(difftest::special::SPECIAL.iter().copied())
        .collect();
    let cpuid = difftest::advertised::soft_cpuid();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/difftest/");
    let (uncovered, unreasoned) = difftest::advertised::text(&cpuid, &covered);
    let files = [
        ("COVERED.md", difftest::covered::text()),
        ("UNCOVERED.md", uncovered),
    ];
    let regen = std::env::var_os("DIFFTEST_REGEN").is_some();
    for (name, want) in files {
        let path = format!("{dir}{name}");
        if regen {
            std::fs::write(&path, &want).expect("write the generated list");
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is stale: run DIFFTEST_REGEN=1 cargo test --release -p soft --test differential covered"
        );
    }
    // Every advertised form is drawn or has its reason in
    // `difftest/leftout.rs`.
    assert!(
        unreasoned.is_empty(),
        "advertised forms neither drawn nor given a reason: {unreasoned:?}"
    );
}
