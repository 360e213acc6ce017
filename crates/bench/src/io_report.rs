//! The I/O benchmark's report: the check that nothing available failed,
//! and the table, one row per machine and host cache mode, with the goals
//! compared within one cache mode only.

use std::fmt;

use super::{DiskNumbers, HostCache, IoMachine, IoReport, IoRow, Outcome};
use crate::BenchError;

impl IoReport {
    /// The row of `machine` in `cache` mode.
    pub fn row(&self, machine: IoMachine, cache: HostCache) -> Option<&IoRow> {
        self.rows
            .iter()
            .find(|r| r.machine == machine && r.cache == cache)
    }

    /// Ok when something was measured and nothing available failed.
    pub fn check(&self) -> Result<(), BenchError> {
        let mut any = false;
        for row in &self.rows {
            any |= row.disk.measured().is_some() || row.net.measured().is_some();
            let failed = match (&row.disk, &row.net) {
                (Outcome::Failed(w), _) | (_, Outcome::Failed(w)) => Some(w),
                _ => None,
            };
            if let Some(why) = failed {
                return Err(BenchError::IoFailed {
                    machine: format!("{} ({})", row.machine, row.cache),
                    why: why.clone(),
                });
            }
        }
        if any {
            Ok(())
        } else {
            Err(BenchError::NothingMeasured)
        }
    }

    /// The cache modes present, in table order.
    fn caches(&self) -> Vec<HostCache> {
        HostCache::ALL
            .into_iter()
            .filter(|c| self.rows.iter().any(|r| r.cache == *c))
            .collect()
    }

    /// The goal lines of one cache mode: vessel against QEMU and native
    /// with the same host cache under the disk.
    fn goals(&self, f: &mut fmt::Formatter<'_>, cache: HostCache) -> fmt::Result {
        let disk = |m| self.row(m, cache).and_then(|r| r.disk.measured());
        let (v, q, n) = (
            disk(IoMachine::Vessel),
            disk(IoMachine::QemuQ35),
            disk(IoMachine::Native),
        );
        writeln!(
            f,
            "goal ({cache}) rand read IOPS >= QEMU same engine class: {}",
            verdict(
                ratio(
                    v.and_then(|d| d.rand_read_iops),
                    q.and_then(|d| d.rand_read_iops)
                ),
                1.0
            )
        )?;
        writeln!(
            f,
            "vessel ({cache}) sequential read / native ({cache}): {} \
             (the 90% goal applies on hardware-assisted hosts)",
            verdict(
                ratio(v.map(|d| d.seq_read_mib_s), n.map(|d| d.seq_read_mib_s)),
                0.9
            )
        )
    }

    /// The network goal, from the first cache mode where both guests sent.
    fn net_goal(&self) -> String {
        let net = |m, c| {
            self.row(m, c)
                .and_then(|r: &IoRow| r.net.measured().copied())
        };
        let found = self
            .caches()
            .into_iter()
            .find_map(|c| ratio(net(IoMachine::Vessel, c), net(IoMachine::QemuQ35, c)));
        verdict(found, 1.0)
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn verdict(r: Option<f64>, goal: f64) -> String {
    match r {
        Some(r) if r >= goal => format!("met ({r:.2}x)"),
        Some(r) => format!("not met ({r:.2}x)"),
        None => "not measured".to_string(),
    }
}

fn cell<T>(o: &Outcome<T>, f: impl Fn(&T) -> String) -> String {
    match o {
        Outcome::Measured(t) => f(t),
        Outcome::Unavailable(_) => "n/a".to_string(),
        Outcome::Failed(_) => "failed".to_string(),
    }
}

fn outcome_note<T>(o: &Outcome<T>) -> Option<&str> {
    match o {
        Outcome::Measured(_) => None,
        Outcome::Unavailable(w) | Outcome::Failed(w) => Some(w),
    }
}

/// The notes under the table for one row: dd fallbacks, unavailable and
/// failed cells (a note said once for a row's disk and net).
fn row_notes(row: &IoRow, notes: &mut Vec<String>) {
    let who = format!("{} ({})", row.machine, row.cache);
    if let Outcome::Measured(DiskNumbers {
        fio_error: Some(e), ..
    }) = &row.disk
    {
        notes.push(format!(
            "{who} disk: sequential by busybox dd (direct), no random reads: fio: {e}"
        ));
    }
    let disk = outcome_note(&row.disk);
    let net = outcome_note(&row.net).filter(|_| row.machine != IoMachine::Native);
    match (disk, net) {
        (Some(d), Some(n)) if d == n => notes.push(format!("{who}: {d}")),
        _ => {
            for (what, n) in [("disk", disk), ("net", net)] {
                if let Some(n) = n {
                    notes.push(format!("{who} {what}: {n}"));
                }
            }
        }
    }
}

impl fmt::Display for IoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "io: fio on one host file: 1 MiB sequential write then read ({} MiB), \
             4 KiB random read ({} s); guest nc -> host TCP ({} MiB) on a TAP; \
             vessel engine {}",
            self.seq_mib, self.rand_secs, self.net_mib, self.engine
        )?;
        writeln!(
            f,
            "host cache: cached = through the host page cache (native fio buffered, \
             vessel --disk PATH, QEMU cache=writeback); direct = O_DIRECT on the host \
             (native fio --direct=1, vessel --disk PATH,direct=on, QEMU cache=none); \
             guests always use direct I/O on /dev/vda"
        )?;
        writeln!(
            f,
            "{:<13} {:<6} {:>15} {:>16} {:>15} {:>10}",
            "machine", "cache", "seq read MiB/s", "seq write MiB/s", "rand read IOPS", "net MiB/s"
        )?;
        let mut notes = Vec::new();
        for row in &self.rows {
            writeln!(
                f,
                "{:<13} {:<6} {:>15} {:>16} {:>15} {:>10}",
                row.machine.to_string(),
                row.cache.to_string(),
                cell(&row.disk, |d| format!("{:.1}", d.seq_read_mib_s)),
                cell(&row.disk, |d| format!("{:.1}", d.seq_write_mib_s)),
                cell(&row.disk, |d| match d.rand_read_iops {
                    Some(iops) => format!("{iops:.0}"),
                    None => "n/a".to_string(),
                }),
                cell(&row.net, |m| format!("{m:.1}")),
            )?;
            row_notes(row, &mut notes);
        }
        for n in notes {
            writeln!(f, "  {n}")?;
        }
        for cache in self.caches() {
            self.goals(f, cache)?;
        }
        write!(
            f,
            "goal net MiB/s >= QEMU same engine class: {}",
            self.net_goal()
        )
    }
}
