//! The boot benchmark's vessel variants: `vessel run -v` (one shared host
//! directory over virtio-fs) and `vessel run --net user` (passt) next to
//! the plain boot (`--net none`), compared at the command's first output
//! line, the point a user waits for. Owns the shared directory's life, the
//! variant/plain ratios and the goal (each adds less than 20%).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::boot::{BootMachine, BootReport};
use crate::BenchError;

/// Where the guest's init mounts the shared directory.
pub const SHARE_GUEST_DIR: &str = "/mnt/bench";
/// Each variant's time to first output must stay under this multiple of
/// the plain boot's (it adds less than 20%).
pub const GOAL_RATIO: f64 = 1.2;

/// The host directory `vessel -v` shares: made with one small file for
/// the runs, removed with everything in it when dropped.
#[derive(Debug)]
pub struct ShareDir {
    path: PathBuf,
}

impl ShareDir {
    /// Makes `path` (which must not exist yet) with a small file in it.
    pub fn create(path: &Path) -> Result<ShareDir, BenchError> {
        let file_error = |source| BenchError::File {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir(path).map_err(file_error)?;
        // From here on, dropping the guard removes the directory.
        let dir = ShareDir {
            path: path.to_path_buf(),
        };
        std::fs::write(path.join("hello.txt"), b"hello from the host\n").map_err(file_error)?;
        Ok(dir)
    }
}

impl Drop for ShareDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A variant's median time to first output next to the plain boot's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariantCost {
    /// The variant.
    pub machine: BootMachine,
    /// Its median spawn-to-first-output time.
    pub first: Duration,
    /// That time over the plain boot's.
    pub ratio: f64,
}

impl VariantCost {
    /// What the variant adds to the plain boot, as a fraction (0.05 is 5%).
    pub fn added(&self) -> f64 {
        self.ratio - 1.0
    }

    /// Whether it stays under [`GOAL_RATIO`].
    pub fn meets_goal(&self) -> bool {
        self.ratio < GOAL_RATIO
    }
}

impl BootReport {
    /// `machine`'s median time to first output over plain vessel's, when
    /// both were measured.
    pub fn variant_cost(&self, machine: BootMachine) -> Option<VariantCost> {
        let plain = self.summary(BootMachine::Vessel)?.first.as_secs_f64();
        let first = self.summary(machine)?.first;
        (plain > 0.0).then(|| VariantCost {
            machine,
            first,
            ratio: first.as_secs_f64() / plain,
        })
    }

    /// The measured variants' costs, in table order.
    pub fn variant_costs(&self) -> Vec<VariantCost> {
        self.rows
            .iter()
            .filter(|r| r.machine.is_vessel_variant())
            .filter_map(|r| self.variant_cost(r.machine))
            .collect()
    }

    /// Writes the variants next to the plain boot and the goal's verdict;
    /// nothing when plain vessel or every variant is missing.
    pub(crate) fn write_variants(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let costs = self.variant_costs();
        let Some(plain) = self.summary(BootMachine::Vessel) else {
            return Ok(());
        };
        if costs.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "vessel to the command's first output, variants next to the plain boot \
             (median s, variant/plain, added; guest instructions per boot):"
        )?;
        let instr = |m: BootMachine| {
            self.summary(m)
                .and_then(|s| s.instructions)
                .map_or("n/a".to_string(), |n| format!("{:.0} M", n as f64 / 1e6))
        };
        writeln!(
            f,
            "  {:<17} {:>8.3} {:>7} {:>8}  {:>7}",
            BootMachine::Vessel.to_string(),
            plain.first.as_secs_f64(),
            "",
            "",
            instr(BootMachine::Vessel)
        )?;
        for c in &costs {
            writeln!(
                f,
                "  {:<17} {:>8.3} {:>6.2}x {:>+7.1}%  {:>7}",
                c.machine.to_string(),
                c.first.as_secs_f64(),
                c.ratio,
                c.added() * 100.0,
                instr(c.machine)
            )?;
        }
        let verdicts: Vec<String> = costs
            .iter()
            .map(|c| {
                let verdict = if c.meets_goal() { "met" } else { "not met" };
                format!("{verdict} for {} ({:+.1}%)", c.machine, c.added() * 100.0)
            })
            .collect();
        writeln!(
            f,
            "goal each variant adds < {:.0}% to the command's first output: {}",
            (GOAL_RATIO - 1.0) * 100.0,
            verdicts.join(", ")
        )
    }
}
