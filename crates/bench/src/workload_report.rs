//! The workload benchmark's table: per workload the median time of each
//! machine over the rounds, the ratios vessel/QEMU and vessel/native (of
//! times: lower is better for vessel) with their geometric means, whether
//! the machines' outputs agree, and notes for failures and for a guest
//! clock that disagrees with the host's view of the same run.

use std::collections::HashMap;
use std::fmt;

use super::run::{BootOutcome, Parsed};
use super::{Boot, WlMachine, Workload, WorkloadBenchOptions};
use crate::BenchError;

/// One machine's result for one workload in one round.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Seconds by the machine's clock, by the host's view of its lines
    /// (when seen), and the output's digest.
    Measured {
        /// By the machine's own clock.
        secs: f64,
        /// By the host, from the BEGIN line's arrival to the END line's.
        host_secs: Option<f64>,
        /// Output digest ("-": not compared).
        digest: String,
    },
    /// It cannot run here: why.
    Unavailable(String),
    /// It failed: why.
    Failed(String),
}

/// One workload's results on every machine, round by round.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRow {
    /// The workload.
    pub workload: &'static Workload,
    /// Its size, as run.
    pub size: String,
    /// Per machine, one cell per round run.
    pub cells: HashMap<WlMachine, Vec<Cell>>,
}

impl WorkloadRow {
    /// The median of `machine`'s measured rounds, when every round it ran
    /// was measured.
    pub fn median(&self, machine: WlMachine) -> Option<f64> {
        let cells = self.cells.get(&machine)?;
        let mut v: Vec<f64> = cells
            .iter()
            .filter_map(|c| match c {
                Cell::Measured { secs, .. } => Some(*secs),
                _ => None,
            })
            .collect();
        if v.is_empty() || v.len() != cells.len() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// vessel's median over `other`'s.
    pub fn ratio(&self, other: WlMachine) -> Option<f64> {
        let v = self.median(WlMachine::Vessel)?;
        let o = self.median(other)?;
        (o > 0.0).then(|| v / o)
    }

    /// Whether every compared output agrees: `None` when fewer than two
    /// digests were compared.
    pub fn outputs_agree(&self) -> Option<bool> {
        let digests: Vec<&str> = self
            .cells
            .values()
            .flatten()
            .filter_map(|c| match c {
                Cell::Measured { digest, .. } if digest != "-" => Some(digest.as_str()),
                _ => None,
            })
            .collect();
        (digests.len() >= 2).then(|| digests.iter().all(|d| *d == digests[0]))
    }
}

/// The whole benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadReport {
    /// Lines above the table (what ran, how).
    pub header: Vec<String>,
    /// The machines, in column order.
    pub machines: Vec<WlMachine>,
    /// The rows, in table order.
    pub rows: Vec<WorkloadRow>,
    /// The sizes' scale (network throughput is size over time).
    pub scale: f64,
    /// Footnotes: failures, clock disagreements, missing pieces.
    pub notes: Vec<String>,
}

/// A guest clock further than this fraction (plus [`CLOCK_SLACK`]) from
/// the host's view of the same workload is noted.
const CLOCK_FRACTION: f64 = 0.05;
/// Seconds of slack in that check (serial latency, line buffering).
const CLOCK_SLACK: f64 = 0.3;

impl WorkloadReport {
    /// An empty report for `opts`, its header filled.
    pub fn new(opts: &WorkloadBenchOptions) -> Self {
        let machines: Vec<String> = opts.machines.iter().map(|m| m.to_string()).collect();
        let header = vec![
            format!(
                "vessel bench workload: {} round(s), interleaved ({} in each round), scale {}",
                opts.rounds,
                machines.join(", "),
                opts.scale
            ),
            "times in seconds by each machine's own clock (/proc/uptime read by the shell \
             around the program, inside the guest), median of the rounds; ratios are of times \
             (lower is better for vessel)"
                .to_string(),
            format!(
                "guest: {} + the default initramfs, {} MiB, 1 vCPU (smp: 2), root disk {} \
                 mounted read-only",
                opts.kernel.display(),
                opts.memory_mib,
                opts.disk.display()
            ),
            format!("disk packages: {}", opts.packages),
            format!(
                "vessel: --engine {}{} --cpu-model {}; qemu: {} -M q35 -accel tcg {}, \
                 virtio-blk and virtio-net on a TAP; native: the same disk loop-mounted, \
                 chroot (iperf3 natively is loopback in the namespace)",
                opts.engine,
                if opts.engine_note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", opts.engine_note)
                },
                opts.cpu_model,
                opts.qemu.display(),
                match &opts.qemu_cpu {
                    Some(m) => format!("-cpu {m}"),
                    None => "(default CPU model, qemu64)".to_string(),
                }
            ),
        ];
        let rows = opts
            .workloads
            .iter()
            .map(|&w| WorkloadRow {
                workload: w,
                size: w.describe(opts.scale),
                cells: HashMap::new(),
            })
            .collect();
        WorkloadReport {
            header,
            machines: opts.machines.clone(),
            rows,
            scale: opts.scale,
            notes: Vec::new(),
        }
    }

    /// One line per network row with each machine's throughput in MiB/s
    /// (the row's MiB over its median time, connection setup included).
    pub fn throughput_lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.workload.needs_net())
            .map(|r| {
                let cells: Vec<String> = self
                    .machines
                    .iter()
                    .map(|&m| {
                        let v = r
                            .median(m)
                            .and_then(|s| r.workload.mib_per_sec(self.scale, s));
                        match v {
                            Some(v) => format!("{m} {v:.1}"),
                            None => format!("{m} -"),
                        }
                    })
                    .collect();
                format!("throughput {} MiB/s: {}", r.workload.name, cells.join(", "))
            })
            .collect()
    }

    /// Adds a footnote.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Records one machine's run of `boot`.
    pub fn add(&mut self, machine: WlMachine, boot: &Boot, outcome: BootOutcome) {
        for w in &boot.workloads {
            let cell = cell_for(w.name, &outcome);
            if let Cell::Measured {
                secs,
                host_secs: Some(host),
                ..
            } = &cell
            {
                if machine != WlMachine::Native
                    && (secs - host).abs() > CLOCK_FRACTION * host + CLOCK_SLACK
                {
                    self.notes.push(format!(
                        "{machine} {}: the guest clock says {secs:.2} s, the host saw {host:.2} s",
                        w.name
                    ));
                }
            }
            if let Cell::Failed(why) = &cell {
                self.notes
                    .push(format!("{machine} {} failed: {why}", w.name));
            }
            if let Some(row) = self.rows.iter_mut().find(|r| r.workload.name == w.name) {
                row.cells.entry(machine).or_default().push(cell);
            }
        }
    }

    /// The geometric mean of vessel's ratio to `other` over the rows that
    /// have one, and how many rows that is.
    pub fn geomean(&self, other: WlMachine) -> Option<(f64, usize)> {
        let r: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|row| row.ratio(other))
            .filter(|x| *x > 0.0)
            .collect();
        (!r.is_empty()).then(|| {
            let mean = r.iter().map(|x| x.ln()).sum::<f64>() / r.len() as f64;
            (mean.exp(), r.len())
        })
    }

    /// Ok when something was measured, nothing available failed and the
    /// machines' outputs agree.
    pub fn check(&self) -> Result<(), BenchError> {
        let mut any = false;
        for row in &self.rows {
            for (m, cells) in &row.cells {
                for c in cells {
                    match c {
                        Cell::Measured { .. } => any = true,
                        Cell::Failed(why) => {
                            return Err(BenchError::IoFailed {
                                machine: format!("{m} {}", row.workload.name),
                                why: why.clone(),
                            })
                        }
                        Cell::Unavailable(_) => {}
                    }
                }
            }
            if row.outputs_agree() == Some(false) {
                return Err(BenchError::ChecksumMismatch(format!(
                    "{}: the machines' outputs differ",
                    row.workload.name
                )));
            }
        }
        if any {
            Ok(())
        } else {
            Err(BenchError::NothingMeasured)
        }
    }
}

/// `name`'s cell from one boot's outcome.
fn cell_for(name: &str, outcome: &BootOutcome) -> Cell {
    match outcome {
        BootOutcome::Unavailable(why) => Cell::Unavailable(why.clone()),
        BootOutcome::Failed(why) => Cell::Failed(why.clone()),
        BootOutcome::Ran { parsed, done, tail } => {
            match parsed.iter().find(|p: &&Parsed| p.name == name) {
                Some(Parsed {
                    status: 0,
                    secs: Some(secs),
                    host_secs,
                    digest,
                    ..
                }) => Cell::Measured {
                    secs: *secs,
                    host_secs: *host_secs,
                    digest: digest.clone(),
                },
                Some(p) if p.status != 0 => Cell::Failed(format!("exit status {}", p.status)),
                Some(_) => Cell::Failed("no usable times".to_string()),
                None if name.starts_with("iperf") && *done => {
                    Cell::Unavailable("no network".to_string())
                }
                None => Cell::Failed(format!("no result: {tail}")),
            }
        }
    }
}

fn secs_cell(row: &WorkloadRow, m: WlMachine) -> String {
    match (row.median(m), row.cells.get(&m)) {
        (Some(s), _) => format!("{s:.2}"),
        (None, None) => "-".to_string(),
        (None, Some(cells)) if cells.iter().all(|c| matches!(c, Cell::Unavailable(_))) => {
            "n/a".to_string()
        }
        (None, Some(_)) => "failed".to_string(),
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into())
}

impl fmt::Display for WorkloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for h in &self.header {
            writeln!(f, "{h}")?;
        }
        writeln!(f)?;
        let mut head = format!("{:<10} {:<40}", "workload", "size");
        for m in &self.machines {
            head.push_str(&format!(" {:>9}", format!("{m} s")));
        }
        head.push_str(&format!(
            " {:>12} {:>14} {:>8}",
            "vessel/qemu", "vessel/native", "outputs"
        ));
        writeln!(f, "{head}")?;
        for row in &self.rows {
            let mut line = format!("{:<10} {:<40}", row.workload.name, row.size);
            for &m in &self.machines {
                line.push_str(&format!(" {:>9}", secs_cell(row, m)));
            }
            let agree = match row.outputs_agree() {
                Some(true) => "same",
                Some(false) => "DIFFER",
                None => "-",
            };
            line.push_str(&format!(
                " {:>12} {:>14} {:>8}",
                ratio_cell(row.ratio(WlMachine::Qemu)),
                ratio_cell(row.ratio(WlMachine::Native)),
                agree
            ));
            writeln!(f, "{line}")?;
        }
        let gq = self.geomean(WlMachine::Qemu);
        let gn = self.geomean(WlMachine::Native);
        let pad = 10 + 1 + 40 + self.machines.len() * 10;
        writeln!(
            f,
            "{:<pad$} {:>12} {:>14}",
            "geometric mean",
            ratio_cell(gq.map(|g| g.0)),
            ratio_cell(gn.map(|g| g.0)),
        )?;
        writeln!(f)?;
        let every = self
            .rows
            .iter()
            .filter_map(|r| r.ratio(WlMachine::Qemu))
            .fold(None, |acc: Option<f64>, r| {
                Some(acc.map_or(r, |a| a.max(r)))
            });
        match (every, gq) {
            (Some(worst), Some((g, n))) => writeln!(
                f,
                "goal: vessel at least QEMU's speed on every workload (vessel/qemu <= 1.00; worst \
                 {worst:.2}: {}) and at least 2x on the geometric mean (<= 0.50; {g:.2} over {n} \
                 workloads: {})",
                if worst <= 1.0 { "met" } else { "NOT met" },
                if g <= 0.5 { "met" } else { "NOT met" }
            )?,
            _ => writeln!(
                f,
                "goal: not measurable (no workload ran on both vessel and QEMU)"
            )?,
        }
        for line in self.throughput_lines() {
            writeln!(f, "{line}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}
