//! Reporting: what differs between the CPU's outcome and the engine's,
//! and which forms the mismatching snippets have in common.

use std::collections::BTreeMap;

use iced_x86::Code;

use super::machine::Outcome;

/// Prints every field of `g` (the engine's) that differs from `w` (the
/// CPU's).
pub fn diff(w: &Outcome, g: &Outcome) {
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
    if (w.fcw, w.mxcsr) != (g.fcw, g.mxcsr) {
        eprintln!(
            "  fcw/mxcsr: cpu {:#x}/{:#x} soft {:#x}/{:#x}",
            w.fcw, w.mxcsr, g.fcw, g.mxcsr
        );
    }
    if w.x87_pointers != g.x87_pointers {
        eprintln!(
            "  fop/fip/fdp: cpu {:x?} soft {:x?}",
            w.x87_pointers, g.x87_pointers
        );
    }
}

/// Per form: snippets that had it, and how many of them differed.
#[derive(Default)]
pub struct Tally {
    seen: BTreeMap<Code, (u64, u64)>,
}

impl Tally {
    pub fn add(&mut self, codes: &[Code], bad: bool) {
        let mut codes = codes.to_vec();
        codes.sort_unstable_by_key(|c| *c as u32);
        codes.dedup();
        for c in codes {
            let e = self.seen.entry(c).or_default();
            e.0 += 1;
            e.1 += u64::from(bad);
        }
    }

    /// The forms most often in mismatching snippets, by share of their
    /// snippets that differed (the likely culprits first).
    pub fn print_suspects(&self, max: usize) {
        let mut v: Vec<_> = self.seen.iter().filter(|(_, (_, b))| *b > 0).collect();
        v.sort_by(|a, b| {
            let ra = a.1 .1 as f64 / a.1 .0 as f64;
            let rb = b.1 .1 as f64 / b.1 .0 as f64;
            rb.total_cmp(&ra).then(b.1 .1.cmp(&a.1 .1))
        });
        for (c, (seen, bad)) in v.into_iter().take(max) {
            eprintln!("  suspect {c:?}: {bad} of {seen} snippets differ");
        }
    }
}
