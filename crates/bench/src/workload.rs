//! The workload benchmark (`vessel bench workload`): real programs from
//! Debian packages (CPython, gzip, xz, sha256sum, sort, sqlite3, tcc,
//! iperf3) run in the default guest under vessel and under QEMU TCG (same
//! kernel, initramfs, command line and root disk), and natively on the
//! host from the same disk (loop-mounted, chroot), interleaved: in each
//! round every machine runs the whole set once. Each program is timed by
//! the clock of the machine it runs on (`/proc/uptime` around it, inside
//! the guest); the host also timestamps the lines as they arrive, as a
//! check on the guest's clock. Owns the workload set and its sizes, the
//! options and the run order; `workload_run` starts the machines and
//! parses their lines, `workload_report` makes the table.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::BenchError;

#[path = "workload_report.rs"]
mod report;
#[path = "workload_run.rs"]
mod run;

pub use report::{Cell, WorkloadReport, WorkloadRow};
pub use run::{parse_lines, Parsed};

/// Where a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WlMachine {
    /// `vessel run` with the engine of the options.
    Vessel,
    /// `qemu-system-x86_64 -M q35 -accel tcg`.
    Qemu,
    /// The host itself, in a chroot of the same disk.
    Native,
}

impl WlMachine {
    /// Every machine, in run (and column) order.
    pub const ALL: [WlMachine; 3] = [WlMachine::Vessel, WlMachine::Qemu, WlMachine::Native];
}

impl fmt::Display for WlMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WlMachine::Vessel => "vessel",
            WlMachine::Qemu => "qemu",
            WlMachine::Native => "native",
        })
    }
}

/// One program of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Its name in `--workloads` and in the driver (`run.sh`).
    pub name: &'static str,
    /// The driver's argument at scale 1.
    pub base: u64,
    /// What the argument counts, for the table (`{}` is the argument).
    pub size: &'static str,
    /// Largest argument the image's inputs allow (0: none).
    pub max: u64,
}

/// The set, in table order. The `smp` row is [`SMP_PAIR`] at once on two
/// vCPUs; the others run one at a time on one vCPU.
pub const WORKLOADS: &[Workload] = &[
    w("py-int", 2_000_000, "python3: {} LCG steps + bigint", 0),
    w("py-float", 3_000_000, "python3: {} float steps", 0),
    w("py-str", 600_000, "python3: {} words, dict/str", 0),
    w("py-call", 5_000_000, "python3: {} calls", 0),
    w("gzip", 32, "gzip -9 of {} MiB", 0),
    w("xz", 8, "xz -6 -T1 of {} MiB", 0),
    w("sha256", 256, "sha256sum of {} MiB", 0),
    w(
        "sort",
        1_000_000,
        "sort of {} lines",
        guest::workload::SORT_LINES as u64,
    ),
    w("sqlite", 200_000, "sqlite3: {} rows, 2 idx, queries", 0),
    w("tcc", 50, "tcc: 4.5k-line C file x{}", 0),
    w("iperf-g2h", 64, "iperf3 guest->host {} MiB", 0),
    w("iperf-h2g", 64, "iperf3 host->guest {} MiB", 0),
    w("smp", 1, "py-int + sha256 at once, 2 vCPUs", 0),
];

const fn w(name: &'static str, base: u64, size: &'static str, max: u64) -> Workload {
    Workload {
        name,
        base,
        size,
        max,
    }
}

/// The two workloads of the `smp` row.
pub const SMP_PAIR: [&str; 2] = ["py-int", "sha256"];

/// The workload named `name`.
pub fn find_workload(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

impl Workload {
    /// The driver's argument at `scale` (at least 1, at most `max`).
    pub fn arg(&self, scale: f64) -> u64 {
        let v = (self.base as f64 * scale).round();
        let v = if v.is_finite() && v >= 1.0 {
            v as u64
        } else {
            1
        };
        if self.max > 0 {
            v.min(self.max)
        } else {
            v
        }
    }

    /// Whether it needs the network (the TAP and the host's iperf3).
    pub fn needs_net(&self) -> bool {
        self.name.starts_with("iperf")
    }

    /// The driver's word(s) for it at `scale`: "NAME ARG", or for `smp`
    /// "smp A ARG B ARG".
    pub fn driver_arg(&self, scale: f64) -> String {
        if self.name == "smp" {
            let parts = smp_parts(scale);
            format!("smp {}", parts.join(" "))
        } else {
            format!("{} {}", self.name, self.arg(scale))
        }
    }

    /// Throughput in MiB/s of a network workload (its argument is MiB)
    /// that took `secs` at `scale`; None for other workloads or no time.
    pub fn mib_per_sec(&self, scale: f64, secs: f64) -> Option<f64> {
        (self.needs_net() && secs > 0.0 && secs.is_finite()).then(|| self.arg(scale) as f64 / secs)
    }

    /// Its size at `scale`, for the table.
    pub fn describe(&self, scale: f64) -> String {
        if self.name == "smp" {
            let parts = smp_parts(scale);
            return format!("{}, 2 vCPUs at once", parts.join(" + "));
        }
        self.size.replace("{}", &thousands(self.arg(scale)))
    }
}

/// `n` with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct WorkloadBenchOptions {
    /// The `vessel` binary.
    pub vessel: PathBuf,
    /// `vessel run --engine` value.
    pub engine: String,
    /// `vessel run --cpu-model` value (what the guest's CPUID advertises).
    pub cpu_model: String,
    /// QEMU's `-cpu` model (None: QEMU's default, qemu64).
    pub qemu_cpu: Option<String>,
    /// What `auto` means here, for the header.
    pub engine_note: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The uncompressed kernel (PVH entry).
    pub kernel: PathBuf,
    /// The default guest's initramfs.
    pub initrd: PathBuf,
    /// The guest's base command line (the script is appended).
    pub cmdline: String,
    /// The workload root disk ([`guest::workload::workload_image`]).
    pub disk: PathBuf,
    /// Its packages, for the header ("python3 3.11.2-1+b1, ...").
    pub packages: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Rounds (each machine runs the set once per round).
    pub rounds: u32,
    /// Multiplies every size.
    pub scale: f64,
    /// The workloads, in table order.
    pub workloads: Vec<&'static Workload>,
    /// The machines, in run order.
    pub machines: Vec<WlMachine>,
    /// Deadline for one machine's run of the set.
    pub timeout: Duration,
}

impl WorkloadBenchOptions {
    /// Every workload on every machine, 3 rounds at scale 1, 1024 MiB
    /// guests, an hour per run.
    pub fn new(vessel: PathBuf, image: &guest::GuestImage, disk: PathBuf) -> Self {
        WorkloadBenchOptions {
            vessel,
            engine: "auto".to_string(),
            cpu_model: "max".to_string(),
            qemu_cpu: None,
            engine_note: String::new(),
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel: image.vmlinux.clone(),
            initrd: image.initramfs.clone(),
            cmdline: image.default_cmdline.clone(),
            disk,
            packages: String::new(),
            memory_mib: 1024,
            rounds: 3,
            scale: 1.0,
            workloads: WORKLOADS.iter().collect(),
            machines: WlMachine::ALL.to_vec(),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// One boot: the workloads it runs and on how many vCPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    /// vCPUs (QEMU `-smp`, vessel `--cpus`).
    pub cpus: u32,
    /// The workloads, in order.
    pub workloads: Vec<&'static Workload>,
}

/// The boots of one round: the single workloads on one vCPU, then `smp`
/// on two (when asked for).
pub fn boots(workloads: &[&'static Workload]) -> Vec<Boot> {
    let (smp, single): (Vec<_>, Vec<_>) = workloads.iter().partition(|w| w.name == "smp");
    [(1, single), (2, smp)]
        .into_iter()
        .filter(|(_, w)| !w.is_empty())
        .map(|(cpus, workloads)| Boot { cpus, workloads })
        .collect()
}

/// Runs the rounds and gathers the table. A machine that cannot run here
/// (a missing program, no root for the network namespace or the loop
/// mount) gives "unavailable" cells; one that fails gives "failed" cells.
pub fn workload(opts: &WorkloadBenchOptions) -> Result<WorkloadReport, BenchError> {
    for file in [&opts.kernel, &opts.initrd, &opts.disk] {
        if !file.is_file() {
            return Err(BenchError::GuestMissing(file.display().to_string()));
        }
    }
    let wants_net = opts.workloads.iter().any(|w| w.needs_net());
    let net = if wants_net {
        run::Network::start()
    } else {
        Err("no network workload asked for".to_string())
    };
    let mut report = WorkloadReport::new(opts);
    if let (true, Err(why)) = (wants_net, &net) {
        report.note(format!("network workloads unavailable: {why}"));
    }
    let boots = boots(&opts.workloads);
    for round in 1..=opts.rounds {
        for boot in &boots {
            for &machine in &opts.machines {
                let started = std::time::Instant::now();
                eprintln!(
                    "bench workload: round {round}/{}: {machine}, {} vCPU(s): {}",
                    opts.rounds,
                    boot.cpus,
                    boot.workloads
                        .iter()
                        .map(|w| w.name)
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                let outcome = run::run_boot(opts, machine, boot, net.as_ref().ok());
                eprintln!(
                    "bench workload: {machine} done in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                // Each result as it comes, so a run cut short still says
                // what it measured.
                if let run::BootOutcome::Ran { parsed, .. } = &outcome {
                    for p in parsed {
                        eprintln!(
                            "bench workload:   {machine} {} status {} {} s (host saw {} s)",
                            p.name,
                            p.status,
                            p.secs.map_or("-".into(), |s| format!("{s:.2}")),
                            p.host_secs.map_or("-".into(), |s| format!("{s:.2}")),
                        );
                    }
                }
                report.add(machine, boot, outcome);
            }
        }
    }
    Ok(report)
}

/// "NAME ARG" of each workload of the `smp` pair at `scale`.
fn smp_parts(scale: f64) -> Vec<String> {
    SMP_PAIR
        .iter()
        .filter_map(|n| find_workload(n))
        .map(|w| format!("{} {}", w.name, w.arg(scale)))
        .collect()
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod tests;
