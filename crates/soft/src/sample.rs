//! An optional guest-RIP sampler for finding where a guest spends its
//! time: with `VESSEL_SOFT_SAMPLE` set in the environment, the run loop
//! records the RIP at each timer poll and prints the most frequent ones
//! to stderr every `DUMP_EVERY` samples (symbolize them against the
//! guest kernel's System.map or disassembly).

use std::collections::HashMap;

/// Samples between two printed summaries.
const DUMP_EVERY: u64 = 20_000;
/// RIPs printed per summary.
const TOP: usize = 25;

/// Counts of sampled RIPs.
#[derive(Debug, Default)]
pub struct RipSampler {
    counts: HashMap<u64, u64>,
    taken: u64,
}

impl RipSampler {
    /// Records `rip`; `retired` (instructions so far) goes with each
    /// printed summary.
    pub fn record(&mut self, rip: u64, retired: u64) {
        *self.counts.entry(rip).or_default() += 1;
        self.taken += 1;
        if self.taken.is_multiple_of(DUMP_EVERY) {
            eprintln!("{}SAMPLE retired {retired}", self.summary());
            self.counts.clear();
        }
    }

    /// The most frequent RIPs, one `SAMPLE rip count` line each.
    pub fn summary(&self) -> String {
        let mut v: Vec<_> = self.counts.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .take(TOP)
            .map(|(rip, n)| format!("SAMPLE {rip:#x} {n}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_orders_by_count() {
        let mut s = RipSampler::default();
        for _ in 0..3 {
            s.record(0x20, 0);
        }
        s.record(0x10, 0);
        assert_eq!(s.summary(), "SAMPLE 0x20 3\nSAMPLE 0x10 1\n");
    }
}
