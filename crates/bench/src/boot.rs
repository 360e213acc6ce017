//! The boot benchmark: the default Linux guest (Debian cloud kernel's
//! vmlinux entered through PVH, busybox initramfs) running `echo` of a
//! marker, booted N times on vessel (plain, with `-v` and with `--net
//! user`: see `boot_variants`) and on QEMU TCG (`-M microvm` and `-M
//! q35`) with the same kernel, initramfs and command line, and a
//! distribution's own bzImage (Debian's generic kernel, XZ) on vessel and
//! QEMU q35, where the guest decompresses its kernel. Each run is
//! timed from spawn to the guest's `VESSEL-GUEST-READY` line, to the
//! command's first output line and to the process's exit, and its peak
//! RSS is read from `wait4`. vessel also reports the guest instructions it
//! retired (`VESSEL_STATS=1`). Owns the options, the report and its table.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::boot_variants::{ShareDir, SHARE_GUEST_DIR};
use crate::process::{self, RunError};
use crate::watch::{self, Watch};
use crate::BenchError;

/// Printed by the guest's init when userspace is up.
pub const READY: &str = guest::READY_MARKER;
/// Printed by the guest's init with the command's exit status.
pub const EXIT_STATUS: &str = guest::EXIT_STATUS_MARKER;
/// The line the guest's command prints: its first output.
pub const FIRST_OUTPUT: &str = "VESSEL-BENCH-FIRST-OUTPUT";
/// How the guest's init starts a line about a device it could not set up
/// (`vessel init: cannot mount shared directory ...`).
const INIT_FAILED: &str = "vessel init: cannot";
/// What vessel prints on stderr at exit under `VESSEL_STATS=1`.
const STATS_PREFIX: &str = "vessel: stats: instructions=";

/// A machine that boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMachine {
    /// `vessel run --net none` (its default engine unless told otherwise):
    /// the plain boot, no NIC.
    Vessel,
    /// `vessel run --net none -v DIR:/mnt/bench`: one shared directory.
    VesselShare,
    /// `vessel run --net user`: user networking through passt.
    VesselUserNet,
    /// `qemu-system-x86_64 -accel tcg -M microvm` (no ACPI: see
    /// [`BootMachine::ends_at_status_line`]).
    QemuMicrovm,
    /// `qemu-system-x86_64 -accel tcg -M q35`.
    QemuQ35,
    /// `vessel run --net none` booting a distribution's own bzImage
    /// (Debian's generic kernel, XZ-compressed: the guest decompresses
    /// it) with its own initramfs ([`BootBenchOptions::bzimage`]).
    VesselBzImage,
    /// `qemu-system-x86_64 -accel tcg -M q35` booting the same bzImage.
    QemuQ35BzImage,
}

impl BootMachine {
    /// Every machine, in table order.
    pub const ALL: [BootMachine; 7] = [
        BootMachine::Vessel,
        BootMachine::VesselShare,
        BootMachine::VesselUserNet,
        BootMachine::QemuMicrovm,
        BootMachine::QemuQ35,
        BootMachine::VesselBzImage,
        BootMachine::QemuQ35BzImage,
    ];

    /// Whether the run is ended by killing the process at the guest's
    /// exit-status line. QEMU's microvm boots this kernel reliably only
    /// with ACPI off (with ACPI on it usually hangs calibrating the TSC
    /// against a PIT whose interrupt it never sees), and without ACPI the
    /// guest's power-off only halts the CPU: QEMU would never exit.
    pub fn ends_at_status_line(self) -> bool {
        self == BootMachine::QemuMicrovm
    }

    /// Whether this is `vessel run`, plain or a variant.
    pub fn is_vessel(self) -> bool {
        matches!(self, BootMachine::Vessel | BootMachine::VesselBzImage) || self.is_vessel_variant()
    }

    /// Whether the machine boots the distribution bzImage
    /// ([`BootBenchOptions::bzimage`]) instead of the default guest.
    pub fn boots_bzimage(self) -> bool {
        matches!(
            self,
            BootMachine::VesselBzImage | BootMachine::QemuQ35BzImage
        )
    }

    /// The vessel row this machine's times are compared with: the one
    /// booting the same kernel.
    fn vessel_peer(self) -> BootMachine {
        if self.boots_bzimage() {
            BootMachine::VesselBzImage
        } else {
            BootMachine::Vessel
        }
    }

    /// Whether this is `vessel run` with `-v` or `--net user`.
    pub fn is_vessel_variant(self) -> bool {
        matches!(self, BootMachine::VesselShare | BootMachine::VesselUserNet)
    }
}

impl fmt::Display for BootMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootMachine::Vessel => "vessel",
            BootMachine::VesselShare => "vessel -v",
            BootMachine::VesselUserNet => "vessel --net user",
            BootMachine::QemuMicrovm => "qemu microvm",
            BootMachine::QemuQ35 => "qemu q35",
            BootMachine::VesselBzImage => "vessel bzImage",
            BootMachine::QemuQ35BzImage => "qemu q35 bzImage",
        })
    }
}

/// What to boot, where, how often and how long to wait.
#[derive(Debug, Clone)]
pub struct BootBenchOptions {
    /// The `vessel` binary (the CLI passes itself).
    pub vessel: PathBuf,
    /// `vessel run --engine` value (`auto`, `soft`, `kvm`).
    pub engine: String,
    /// The QEMU binary (looked up in `PATH` when it has no slash).
    pub qemu: PathBuf,
    /// The uncompressed kernel with a PVH entry.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The whole kernel command line, the command fragment included.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Boots per machine (at least 1); the table shows medians.
    pub runs: u32,
    /// Deadline for each boot.
    pub timeout: Duration,
    /// Which machines to run, in table order.
    pub machines: Vec<BootMachine>,
    /// The host directory `vessel -v` shares; made (it must not exist)
    /// with a small file before the runs, removed after.
    pub share_dir: PathBuf,
    /// Whether passt is installed: without it the `vessel --net user` row
    /// is unavailable. `new` assumes it is; the CLI asks vessel's lookup.
    pub passt_installed: bool,
    /// What the bzImage rows boot; without it they are unavailable.
    pub bzimage: Option<KernelBoot>,
}

/// A kernel, its initramfs and the whole command line.
#[derive(Debug, Clone)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

impl KernelBoot {
    /// `image`'s bzImage as shipped, its initramfs, and its default
    /// command line running `echo` [`FIRST_OUTPUT`].
    pub fn bzimage_of(image: &guest::GuestImage) -> Self {
        KernelBoot {
            kernel: image.kernel_bzimage.clone(),
            initrd: image.initramfs.clone(),
            cmdline: echo_cmdline(image),
        }
    }
}

/// `image`'s default command line with the command that prints
/// [`FIRST_OUTPUT`].
fn echo_cmdline(image: &guest::GuestImage) -> String {
    let command = ["echo".to_string(), FIRST_OUTPUT.to_string()];
    format!(
        "{} {}",
        image.default_cmdline,
        guest::command_cmdline(&command)
    )
}

impl BootBenchOptions {
    /// Boots `image` running `echo` [`FIRST_OUTPUT`] with its default
    /// command line: 256 MiB, 3 runs, 300 s per boot, all machines,
    /// vessel's `auto` engine.
    pub fn new(vessel: PathBuf, image: &guest::GuestImage) -> Self {
        let cmdline = echo_cmdline(image);
        BootBenchOptions {
            vessel,
            engine: "auto".to_string(),
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel: image.vmlinux.clone(),
            initrd: image.initramfs.clone(),
            cmdline,
            memory_mib: 256,
            runs: 3,
            timeout: Duration::from_secs(300),
            machines: BootMachine::ALL.to_vec(),
            share_dir: std::env::temp_dir()
                .join(format!("vessel-bench-boot-share-{}", std::process::id())),
            passt_installed: true,
            bzimage: None,
        }
    }

    /// The kernel, initramfs and command line `machine` boots, if it has
    /// them.
    fn boot_files(&self, machine: BootMachine) -> Option<(&PathBuf, &PathBuf, &str)> {
        if machine.boots_bzimage() {
            let b = self.bzimage.as_ref()?;
            Some((&b.kernel, &b.initrd, &b.cmdline))
        } else {
            Some((&self.kernel, &self.initrd, &self.cmdline))
        }
    }
}

/// One boot's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct BootRun {
    /// Spawn to the `VESSEL-GUEST-READY` line.
    pub ready: Duration,
    /// Spawn to the command's first output line ([`FIRST_OUTPUT`]).
    pub first: Duration,
    /// Spawn to the process's exit (to the exit-status line for machines
    /// that end there).
    pub exit: Duration,
    /// Peak RSS of the process, KiB.
    pub max_rss_kib: u64,
    /// Guest instructions retired over the whole run (vessel only).
    pub instructions: Option<u64>,
}

/// Medians over one machine's boots.
#[derive(Debug, Clone, PartialEq)]
pub struct BootSummary {
    /// Median time to READY.
    pub ready: Duration,
    /// Median time to the command's first output.
    pub first: Duration,
    /// Median time to exit.
    pub exit: Duration,
    /// Largest peak RSS of any boot, MiB.
    pub peak_rss_mib: f64,
    /// Median guest instructions per boot, when counted.
    pub instructions: Option<u64>,
    /// Median of instructions over time to exit, per second.
    pub ips: Option<f64>,
}

/// How one machine's boots went.
#[derive(Debug)]
pub enum BootOutcome {
    /// Every boot reached READY and a zero exit status.
    Measured(Vec<BootRun>),
    /// It cannot run on this host (no QEMU): why.
    Unavailable(String),
    /// A boot failed (the first failure ends the machine's runs).
    Failed(RunError),
}

/// One machine's row.
#[derive(Debug)]
pub struct BootRow {
    /// The machine.
    pub machine: BootMachine,
    /// What happened.
    pub outcome: BootOutcome,
}

/// The benchmark's result.
#[derive(Debug)]
pub struct BootReport {
    /// Boots per machine asked for.
    pub runs: u32,
    /// The command line every machine booted with.
    pub cmdline: String,
    /// The rows, in the order run.
    pub rows: Vec<BootRow>,
}

/// Boots the guest `opts.runs` times on every machine in `opts.machines`,
/// one boot at a time, round by round (each round boots every machine
/// once), so a load that comes and goes on a shared host weighs on all
/// machines alike. A missing QEMU or passt gives "unavailable" rows; a
/// boot that fails, times out or misses a marker ends its machine with a
/// "failed" row. [`BootReport::check`] turns failures into an error.
pub fn boot(opts: &BootBenchOptions) -> Result<BootReport, BenchError> {
    for file in [&opts.kernel, &opts.initrd] {
        if !file.is_file() {
            return Err(BenchError::GuestMissing(file.display().to_string()));
        }
    }
    // Lives until every boot is done.
    let _share = opts
        .machines
        .contains(&BootMachine::VesselShare)
        .then(|| ShareDir::create(&opts.share_dir))
        .transpose()?;
    let runs = opts.runs.max(1);
    let mut state: Vec<(BootMachine, Result<Vec<BootRun>, BootOutcome>)> = opts
        .machines
        .iter()
        .map(|&m| match m {
            BootMachine::VesselUserNet if !opts.passt_installed => (
                m,
                Err(BootOutcome::Unavailable(
                    "passt not installed: apt-get install passt".to_string(),
                )),
            ),
            _ if opts.boot_files(m).is_none() => (
                m,
                Err(BootOutcome::Unavailable(
                    "no distribution bzImage given".to_string(),
                )),
            ),
            _ => (m, Ok(Vec::new())),
        })
        .collect();
    for _ in 0..runs {
        for (machine, done) in state.iter_mut() {
            let Ok(list) = done else { continue };
            match run_once(opts, *machine) {
                Ok(run) => list.push(run),
                Err(RunError::Spawn { program, source })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    *done = Err(BootOutcome::Unavailable(format!("{program} not found")));
                }
                Err(e) => *done = Err(BootOutcome::Failed(e)),
            }
        }
    }
    let rows = state
        .into_iter()
        .map(|(machine, done)| BootRow {
            machine,
            outcome: match done {
                Ok(list) => BootOutcome::Measured(list),
                Err(o) => o,
            },
        })
        .collect();
    Ok(BootReport {
        runs,
        cmdline: opts.cmdline.clone(),
        rows,
    })
}

/// The command line that boots the guest on `machine` (the bzImage rows
/// with [`BootBenchOptions::bzimage`], which must be set for them).
pub fn command(opts: &BootBenchOptions, machine: BootMachine) -> Command {
    let (kernel, initrd, cmdline) =
        opts.boot_files(machine)
            .unwrap_or((&opts.kernel, &opts.initrd, &opts.cmdline));
    if machine.is_vessel() {
        // No `-- CMD`: the command is already in the command line, and
        // without one vessel passes the whole console through, so the
        // READY line reaches stdout as it does on QEMU.
        let mut cmd = Command::new(&opts.vessel);
        cmd.args([
            "run",
            "--engine",
            &opts.engine,
            "--cpus",
            "1",
            "--no-reboot",
        ])
        .arg("--memory")
        .arg(opts.memory_mib.to_string())
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .arg("--cmdline")
        .arg(cmdline)
        .env("VESSEL_STATS", "1");
        variant_args(&mut cmd, opts, machine);
        return cmd;
    }
    let board = if machine == BootMachine::QemuMicrovm {
        "microvm,acpi=off,pit=on,pic=on,rtc=on"
    } else {
        "q35"
    };
    let mut cmd = Command::new(&opts.qemu);
    cmd.args(["-M", board, "-accel", "tcg", "-smp", "1"])
        .arg("-m")
        .arg(opts.memory_mib.to_string())
        .args(["-nographic", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline);
    cmd
}

/// The flags that make `machine` plain vessel (no NIC, said outright in
/// case user networking becomes the default) or one of its variants.
fn variant_args(cmd: &mut Command, opts: &BootBenchOptions, machine: BootMachine) {
    match machine {
        BootMachine::VesselShare => {
            let mut volume = opts.share_dir.clone().into_os_string();
            volume.push(format!(":{SHARE_GUEST_DIR}"));
            cmd.args(["--net", "none", "-v"]).arg(volume);
        }
        BootMachine::VesselUserNet => {
            cmd.args(["--net", "user"]);
        }
        _ => {
            cmd.args(["--net", "none"]);
        }
    }
}

fn run_once(opts: &BootBenchOptions, machine: BootMachine) -> Result<BootRun, RunError> {
    let watch = Watch {
        markers: vec![READY, EXIT_STATUS, FIRST_OUTPUT],
        stop_at: machine.ends_at_status_line().then_some(1),
        timeout: opts.timeout,
    };
    let done = watch::run_watched(&mut command(opts, machine), &watch)?;
    if let Some(status) = done.status {
        if !status.success() {
            return Err(RunError::ExitStatus {
                status,
                expected: 0,
                tail: process::tail(&done.output, 4),
            });
        }
    }
    let missing = |key| RunError::MissingLine {
        key,
        tail: process::tail(&done.output, 4),
    };
    let ready = done
        .marks
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| missing(READY))?;
    if let Some(line) = done.output.lines().find(|l| l.contains(INIT_FAILED)) {
        return Err(RunError::GuestSetup(line.trim().to_string()));
    }
    let first = done
        .marks
        .get(2)
        .copied()
        .flatten()
        .ok_or_else(|| missing(FIRST_OUTPUT))?;
    match guest::parse_exit_status(&done.output) {
        Some(0) => {}
        Some(code) => return Err(RunError::GuestStatus(code)),
        None => return Err(missing(EXIT_STATUS)),
    }
    let instructions = if machine.is_vessel() {
        Some(parse_stats(&done.output)?)
    } else {
        None
    };
    Ok(BootRun {
        ready,
        first,
        exit: done.end,
        max_rss_kib: done.max_rss_kib,
        instructions,
    })
}

/// The instruction count vessel printed under `VESSEL_STATS=1`.
fn parse_stats(output: &str) -> Result<u64, RunError> {
    let key = "vessel: stats: instructions";
    let Some(value) = output
        .lines()
        .find_map(|l| l.trim().strip_prefix(STATS_PREFIX))
    else {
        return Err(RunError::MissingLine {
            key,
            tail: process::tail(output, 4),
        });
    };
    value.trim().parse().map_err(|_| RunError::BadNumber {
        key,
        line: value.to_string(),
    })
}

/// The median of `values` (the mean of the middle two for an even
/// count); `None` when empty.
fn median<T: Copy + PartialOrd + Into<f64>>(values: &[T]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().map(|&x| x.into()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let hi = *v.get(n / 2)?;
    if n % 2 == 1 {
        Some(hi)
    } else {
        Some((v.get(n / 2 - 1)? + hi) / 2.0)
    }
}

impl BootRow {
    /// Medians over this machine's boots, when it was measured.
    pub fn summary(&self) -> Option<BootSummary> {
        let BootOutcome::Measured(runs) = &self.outcome else {
            return None;
        };
        let secs = |f: fn(&BootRun) -> Duration| -> Option<Duration> {
            let v: Vec<f64> = runs.iter().map(|r| f(r).as_secs_f64()).collect();
            median(&v).map(Duration::from_secs_f64)
        };
        let counted: Vec<&BootRun> = runs.iter().filter(|r| r.instructions.is_some()).collect();
        let instr: Vec<f64> = counted
            .iter()
            .filter_map(|r| r.instructions.map(|n| n as f64))
            .collect();
        let ips: Vec<f64> = counted
            .iter()
            .filter_map(|r| {
                let s = r.exit.as_secs_f64();
                r.instructions.filter(|_| s > 0.0).map(|n| n as f64 / s)
            })
            .collect();
        Some(BootSummary {
            ready: secs(|r| r.ready)?,
            first: secs(|r| r.first)?,
            exit: secs(|r| r.exit)?,
            peak_rss_mib: runs.iter().map(|r| r.max_rss_kib).max()? as f64 / 1024.0,
            instructions: median(&instr).map(|n| n.round() as u64),
            ips: median(&ips),
        })
    }
}

impl BootReport {
    /// Medians of `machine`, when it was measured.
    pub fn summary(&self, machine: BootMachine) -> Option<BootSummary> {
        self.rows
            .iter()
            .find(|r| r.machine == machine)
            .and_then(BootRow::summary)
    }

    /// vessel's median times over `machine`'s, (to READY, to exit), when
    /// both were measured: below 1.0 vessel is faster.
    pub fn ratios(&self, machine: BootMachine) -> Option<(f64, f64)> {
        let v = self.summary(machine.vessel_peer())?;
        let m = self.summary(machine)?;
        let r = |a: Duration, b: Duration| {
            let b = b.as_secs_f64();
            (b > 0.0).then(|| a.as_secs_f64() / b)
        };
        Some((r(v.ready, m.ready)?, r(v.exit, m.exit)?))
    }

    /// Ok when something was measured and nothing available failed.
    /// Unavailable machines are not errors.
    pub fn check(self) -> Result<(), BenchError> {
        let mut any = false;
        for row in self.rows {
            match row.outcome {
                BootOutcome::Measured(_) => any = true,
                BootOutcome::Unavailable(_) => {}
                BootOutcome::Failed(source) => {
                    return Err(BenchError::BootFailed {
                        machine: row.machine,
                        source,
                    })
                }
            }
        }
        if any {
            Ok(())
        } else {
            Err(BenchError::NothingMeasured)
        }
    }
}

impl fmt::Display for BootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "boot: default guest running `echo {FIRST_OUTPUT}`, median of {} boot(s) per \
             machine; times from process spawn to READY, to the command's first output \
             line and to exit",
            self.runs
        )?;
        writeln!(f, "cmdline: {}", self.cmdline)?;
        writeln!(
            f,
            "{:<17} {:>8} {:>8} {:>9} {:>9} {:>13} {:>12}",
            "machine", "READY s", "first s", "exit s", "RSS MiB", "vessel/READY", "vessel/exit"
        )?;
        let mut status_line_note = false;
        for row in &self.rows {
            let name = row.machine.to_string();
            match &row.outcome {
                BootOutcome::Measured(_) => {
                    let Some(s) = row.summary() else { continue };
                    let mark = if row.machine.ends_at_status_line() {
                        status_line_note = true;
                        "*"
                    } else {
                        " "
                    };
                    let (rr, re) = match (row.machine.is_vessel(), self.ratios(row.machine)) {
                        (true, _) => ("-".to_string(), "-".to_string()),
                        (_, Some((a, b))) => (format!("{a:.2}x"), format!("{b:.2}x")),
                        (_, None) => ("n/a".to_string(), "n/a".to_string()),
                    };
                    writeln!(
                        f,
                        "{name:<17} {:>8.3} {:>8.3} {:>8.3}{mark} {:>9.1} {rr:>13} {re:>12}",
                        s.ready.as_secs_f64(),
                        s.first.as_secs_f64(),
                        s.exit.as_secs_f64(),
                        s.peak_rss_mib,
                    )?;
                }
                BootOutcome::Unavailable(why) => writeln!(f, "{name:<17} unavailable ({why})")?,
                BootOutcome::Failed(e) => {
                    write!(f, "{name:<17} failed: {e}")?;
                    let mut source = std::error::Error::source(e);
                    while let Some(s) = source {
                        write!(f, ": {s}")?;
                        source = s.source();
                    }
                    writeln!(f)?
                }
            }
        }
        if status_line_note {
            writeln!(
                f,
                "* killed at the {EXIT_STATUS} line (microvm has ACPI off, so power-off \
                 only halts): exit = time to that line"
            )?;
        }
        let goal: Vec<String> = [
            BootMachine::QemuMicrovm,
            BootMachine::QemuQ35,
            BootMachine::QemuQ35BzImage,
        ]
        .into_iter()
        .filter_map(|m| {
            let (ready, _) = self.ratios(m)?;
            let verdict = if ready <= 1.0 { "met" } else { "not met" };
            Some(format!("{verdict} vs {m} ({ready:.2}x)"))
        })
        .collect();
        if !goal.is_empty() {
            writeln!(
                f,
                "goal vessel to READY <= 1.0x QEMU TCG: {}",
                goal.join(", ")
            )?;
        }
        self.write_variants(f)?;
        match self.summary(BootMachine::Vessel) {
            Some(BootSummary {
                instructions: Some(n),
                ips: Some(ips),
                ..
            }) => write!(
                f,
                "vessel guest instructions: {n} per boot, {:.1} M/s (whole run: \
                 instructions / time to exit)",
                ips / 1e6
            ),
            _ => write!(f, "vessel guest instructions: n/a"),
        }
    }
}

#[cfg(test)]
#[path = "boot_tests.rs"]
mod tests;
