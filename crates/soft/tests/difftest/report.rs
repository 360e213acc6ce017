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
    for i in 0..16 {
        if w.ymm_hi[i] != g.ymm_hi[i] {
            eprintln!(
                "  ymm{i}[255:128]: cpu {:x?} soft {:x?}",
                w.ymm_hi[i], g.ymm_hi[i]
            );
        }
    }
    if w.xstate_bv != g.xstate_bv {
        eprintln!(
            "  xstate_bv: cpu {:x?} soft {:x?}",
            w.xstate_bv, g.xstate_bv
        );
    }
    if w.x87_pointers != g.x87_pointers {
        eprintln!(
            "  fop/fip/fdp: cpu {:x?} soft {:x?}",
            w.x87_pointers, g.x87_pointers
        );
    }
}

/// The parts of the outcome that differ.
pub fn fields(w: &Outcome, g: &Outcome) -> Vec<&'static str> {
    let parts = [
        ("gpr", w.gpr != g.gpr),
        (
            "exit",
            (w.vector, w.error, w.rip, w.rsp, w.cr2) != (g.vector, g.error, g.rip, g.rsp, g.cr2),
        ),
        ("rflags", w.rflags != g.rflags),
        ("memory", w.data != g.data || w.stack != g.stack),
        ("xmm", w.xmm != g.xmm),
        ("ymm_hi", w.ymm_hi != g.ymm_hi),
        ("st", w.st != g.st),
        ("ftw", w.ftw != g.ftw),
        ("fsw", w.fsw != g.fsw),
        ("fcw", w.fcw != g.fcw),
        ("mxcsr", w.mxcsr != g.mxcsr),
        ("fop/fip/fdp", w.x87_pointers != g.x87_pointers),
        ("xstate_bv", w.xstate_bv != g.xstate_bv),
    ];
    parts
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name)
        .collect()
}

/// Per form: snippets that had it, and how many of them differed; per
/// part of the outcome: how many runs it differed in.
#[derive(Default)]
pub struct Tally {
    seen: BTreeMap<Code, (u64, u64)>,
    parts: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// Counts the parts `got` (the engine's outcome or its error) differs
    /// from `want` in.
    pub fn add_parts(&mut self, want: &Outcome, got: &Result<Outcome, String>) {
        let parts = match got {
            Ok(g) => fields(want, g),
            Err(_) => vec!["engine stop"],
        };
        for p in parts {
            *self.parts.entry(p).or_default() += 1;
        }
    }

    pub fn print_parts(&self) {
        if !self.parts.is_empty() {
            eprintln!("  differing parts (runs): {:?}", self.parts);
        }
    }

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
