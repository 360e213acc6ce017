//! Differential test of the soft engine against the real CPU: random
//! snippets from a table of instruction forms run at CPL3 under KVM
//! (native on this machine) and under the soft engine; registers, defined
//! flags, exceptions (vector, error code, faulting RIP, CR2), XMM and
//! x87/MMX registers with the x87 tag and status words, and the memory
//! touched must match.
//!
//! `DIFFTEST_SNIPPETS` (default 20000) and `DIFFTEST_SEED` override the
//! count and seed; e.g. a long run:
//! `DIFFTEST_SNIPPETS=1000000 cargo test -p soft --release --test differential`.

mod difftest;

use difftest::gen::{snippet, Rng};
use difftest::reference::Reference;
use difftest::softrun::SoftRunner;

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
    let n = env_u64("DIFFTEST_SNIPPETS", 20_000);
    let seed = env_u64("DIFFTEST_SEED", 0x5eed_0f5e_55e1);
    let mut reference = match Reference::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("DIFFERENTIAL TESTS SKIPPED: KVM unusable: {e}");
            return;
        }
    };
    // Every block translated on its first run, so the snippets go
    // through the translator (unless the environment says otherwise).
    if std::env::var_os("VESSEL_SOFT_JIT_HOT").is_none() {
        std::env::set_var("VESSEL_SOFT_JIT_HOT", "0");
    }
    // A block the emitter fails on is a test failure, not a quiet
    // fallback to the interpreter.
    std::env::set_var("VESSEL_SOFT_JIT_STRICT", "1");
    let mut soft = SoftRunner::new();
    let mut rng = Rng::new(seed);
    let mut mismatches = 0;
    let mut faults = std::collections::BTreeMap::<u64, u64>::new();
    let start = std::time::Instant::now();
    for i in 0..n {
        let s = snippet(&mut rng);
        let want = reference
            .run(&s)
            .unwrap_or_else(|e| panic!("snippet {i}: kvm: {e}\n{:#?}", s.text));
        let got = soft
            .run(&s)
            .unwrap_or_else(|e| panic!("snippet {i}: soft: {e}\n{:#?}", s.text));
        *faults.entry(want.vector).or_default() += 1;
        if want != got {
            mismatches += 1;
            if mismatches <= 10 {
                eprintln!("MISMATCH in snippet {i}: {:#?}", s.text);
                eprintln!("  start regs: {:x?}", s.regs);
                report_diff(&want, &got);
            }
        }
    }
    eprintln!(
        "differential: {n} snippets, {mismatches} mismatches, seed {seed:#x}, {:.1} s; exit vectors {faults:?}",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        mismatches, 0,
        "{mismatches} of {n} snippets differ from the CPU"
    );
}

fn report_diff(w: &difftest::machine::Outcome, g: &difftest::machine::Outcome) {
    for i in 0..16 {
        if w.gpr[i] != g.gpr[i] {
            eprintln!("  gpr[{i}]: cpu {:#x} soft {:#x}", w.gpr[i], g.gpr[i]);
        }
    }
    if (w.vector, w.error, w.rip, w.rsp, w.cr2) != (g.vector, g.error, g.rip, g.rsp, g.cr2) {
        eprintln!(
            "  exit: cpu vec {} err {:?} rip {:#x} rsp {:#x} cr2 {:?}; soft vec {} err {:?} rip {:#x} rsp {:#x} cr2 {:?}",
            w.vector, w.error, w.rip, w.rsp, w.cr2, g.vector, g.error, g.rip, g.rsp, g.cr2
        );
    }
    if w.rflags != g.rflags {
        eprintln!("  rflags: cpu {:#x} soft {:#x}", w.rflags, g.rflags);
    }
    for (name, a, b) in [("data", &w.data, &g.data), ("stack", &w.stack, &g.stack)] {
        if let Some(i) = a.iter().zip(b.iter()).position(|(x, y)| x != y) {
            eprintln!("  {name}[{i:#x}]: cpu {:#x} soft {:#x}", a[i], b[i]);
        }
    }
    for i in 0..16 {
        if w.xmm[i] != g.xmm[i] {
            eprintln!("  xmm{i}: cpu {:x?} soft {:x?}", w.xmm[i], g.xmm[i]);
        }
    }
    for i in 0..8 {
        if w.st[i] != g.st[i] {
            eprintln!("  st{i}: cpu {:x?} soft {:x?}", w.st[i], g.st[i]);
        }
    }
    if (w.ftw, w.fsw) != (g.ftw, g.fsw) {
        eprintln!(
            "  ftw/fsw: cpu {:#x}/{:#x} soft {:#x}/{:#x}",
            w.ftw, w.fsw, g.ftw, g.fsw
        );
    }
}

/// The forms the generator draws, by area and mnemonic, as `COVERED.md`
/// shows them.
fn covered_text() -> String {
    let mut out = String::from(
        "# Forms covered by the differential harness\n\n\
         Generated from `tests/difftest/forms/` by `tests/differential.rs`;\n\
         regenerate with `DIFFTEST_REGEN=1 cargo test --release -p soft \
         --test differential covered`.\n",
    );
    for (area, forms) in difftest::forms::AREAS {
        out.push_str(&format!("\n## {area} ({} forms)\n\n", forms.len()));
        let mut by_mnemonic = std::collections::BTreeMap::<String, Vec<String>>::new();
        for c in forms.iter() {
            by_mnemonic
                .entry(format!("{:?}", c.mnemonic()))
                .or_default()
                .push(format!("`{c:?}`"));
        }
        for (m, codes) in by_mnemonic {
            out.push_str(&format!("- {m}: {}\n", codes.join(", ")));
        }
    }
    out
}

/// `tests/difftest/COVERED.md` is the current list of forms
/// (`DIFFTEST_REGEN=1` rewrites it).
#[test]
fn covered_list_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/difftest/COVERED.md");
    let want = covered_text();
    if std::env::var_os("DIFFTEST_REGEN").is_some() {
        std::fs::write(path, &want).expect("write COVERED.md");
        return;
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is stale: run DIFFTEST_REGEN=1 cargo test --release -p soft --test differential covered"
    );
}
