//! The compute benchmark: guest instructions per second on a checksum
//! loop over 64 MiB (the `bench_checksum` guest, which runs the loop at
//! CPL3 and reports its checksum, exact instruction count and TSC ticks),
//! under `vessel run --engine soft`, `vessel run --engine kvm` and QEMU
//! TCG, one after the other in the same run. Owns the options, the
//! report and its table.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{self, RunError};
use crate::{tsc, BenchError};

/// A machine the guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `vessel run --engine soft`.
    Soft,
    /// `vessel run --engine kvm`.
    Kvm,
    /// `qemu-system-x86_64 -accel tcg`.
    QemuTcg,
}

impl Machine {
    /// Every machine, in table order.
    pub const ALL: [Machine; 3] = [Machine::Soft, Machine::Kvm, Machine::QemuTcg];
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::Soft => "vessel soft",
            Machine::Kvm => "vessel kvm",
            Machine::QemuTcg => "qemu tcg",
        })
    }
}

/// What to run and how long to wait.
#[derive(Debug, Clone)]
pub struct CpuBenchOptions {
    /// The `vessel` binary to run (the CLI passes itself).
    pub vessel: PathBuf,
    /// The QEMU binary (looked up in `PATH` when it has no slash).
    pub qemu: PathBuf,
    /// The benchmark guest ELF.
    pub guest: PathBuf,
    /// Passes of the checksum over 64 MiB, 1..=1000 (the guest's limit).
    pub passes: u32,
    /// Guest memory in MiB (the guest needs 80).
    pub memory_mib: u32,
    /// Deadline for each machine's whole run.
    pub timeout: Duration,
    /// Which machines to run, in table order.
    pub machines: Vec<Machine>,
}

impl CpuBenchOptions {
    /// Defaults for everything but the `vessel` binary: the built
    /// `bench_checksum` guest, 8 passes, 256 MiB, 600 s per run, all
    /// three machines.
    pub fn new(vessel: PathBuf) -> Self {
        CpuBenchOptions {
            vessel,
            qemu: PathBuf::from("qemu-system-x86_64"),
            guest: PathBuf::from(guests::bench_guest(GUEST).unwrap_or(GUEST)),
            passes: 8,
            memory_mib: 256,
            timeout: Duration::from_secs(600),
            machines: Machine::ALL.to_vec(),
        }
    }
}

const GUEST: &str = "bench_checksum";
const MIN_MEMORY_MIB: u32 = 80;
const MAX_PASSES: u32 = 1000;

/// One machine's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The checksum the guest computed.
    pub checksum: u64,
    /// Guest instructions between the two RDTSCs.
    pub instructions: u64,
    /// TSC ticks between them.
    pub tsc_ticks: u64,
    /// The loop's time: ticks over the host TSC rate.
    pub loop_secs: f64,
    /// The whole process, spawn to exit.
    pub wall: Duration,
}

impl Measurement {
    /// Guest instructions per second in the loop.
    pub fn ips(&self) -> f64 {
        if self.loop_secs > 0.0 {
            self.instructions as f64 / self.loop_secs
        } else {
            0.0
        }
    }
}

/// How one machine's run went.
#[derive(Debug)]
pub enum RowOutcome {
    /// It ran and reported.
    Measured(Measurement),
    /// It cannot run on this host (no QEMU, no /dev/kvm): why.
    Unavailable(String),
    /// It could run but failed.
    Failed(RunError),
}

/// One machine's row.
#[derive(Debug)]
pub struct CpuRow {
    /// The machine.
    pub machine: Machine,
    /// What happened.
    pub outcome: RowOutcome,
}

/// The benchmark's result: one row per machine asked for.
#[derive(Debug)]
pub struct CpuReport {
    /// Passes the guest made over 64 MiB.
    pub passes: u32,
    /// The host TSC rate used to turn ticks into seconds.
    pub tsc_hz: f64,
    /// The rows, in the order run.
    pub rows: Vec<CpuRow>,
}

/// Runs the compute benchmark on every machine in `opts.machines`. A
/// machine this host lacks gets an "unavailable" row and a machine that
/// fails a "failed" row; [`CpuReport::check`] turns those and checksum
/// disagreements into an error.
pub fn cpu(opts: &CpuBenchOptions) -> Result<CpuReport, BenchError> {
    if !opts.guest.is_file() {
        return Err(BenchError::GuestMissing(opts.guest.display().to_string()));
    }
    let passes = opts.passes.clamp(1, MAX_PASSES);
    let memory_mib = opts.memory_mib.max(MIN_MEMORY_MIB);
    let tsc_hz = tsc::measure_hz(Duration::from_millis(250))?;
    let rows = opts
        .machines
        .iter()
        .map(|&machine| CpuRow {
            machine,
            outcome: run_machine(opts, machine, passes, memory_mib, tsc_hz),
        })
        .collect();
    Ok(CpuReport {
        passes,
        tsc_hz,
        rows,
    })
}

fn run_machine(
    opts: &CpuBenchOptions,
    machine: Machine,
    passes: u32,
    memory_mib: u32,
    tsc_hz: f64,
) -> RowOutcome {
    let cmdline = format!("console=ttyS0 passes={passes}");
    let (mut cmd, expected) = match machine {
        Machine::Soft | Machine::Kvm => {
            if machine == Machine::Kvm {
                if let Err(e) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                {
                    return RowOutcome::Unavailable(format!("cannot open /dev/kvm: {e}"));
                }
            }
            let mut cmd = Command::new(&opts.vessel);
            let engine = if machine == Machine::Kvm {
                "kvm"
            } else {
                "soft"
            };
            cmd.args(["run", "--engine", engine, "--cpus", "1", "--no-reboot"])
                .arg("--memory")
                .arg(memory_mib.to_string())
                .arg("--kernel")
                .arg(&opts.guest)
                .arg("--cmdline")
                .arg(&cmdline);
            (cmd, 0)
        }
        Machine::QemuTcg => {
            let mut cmd = Command::new(&opts.qemu);
            cmd.args(["-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1"])
                .arg("-m")
                .arg(memory_mib.to_string())
                .args(["-nographic", "-display", "none", "-monitor", "none"])
                .args(["-serial", "stdio", "-no-reboot"])
                .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
                .arg("-kernel")
                .arg(&opts.guest)
                .arg("-append")
                .arg(&cmdline);
            // isa-debug-exit: the guest's 0 becomes 0 << 1 | 1.
            (cmd, 1)
        }
    };
    let done = match process::run(&mut cmd, opts.timeout) {
        Ok(done) => done,
        Err(RunError::Spawn { program, source })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return RowOutcome::Unavailable(format!("{program} not found"));
        }
        Err(e) => return RowOutcome::Failed(e),
    };
    if done.status.code() != Some(expected) {
        return RowOutcome::Failed(RunError::ExitStatus {
            status: done.status,
            expected,
            tail: process::tail(&done.output, 4),
        });
    }
    match parse_output(&done.output) {
        Ok(parsed) => RowOutcome::Measured(Measurement {
            checksum: parsed.checksum,
            instructions: parsed.instructions,
            tsc_ticks: parsed.tsc_ticks,
            loop_secs: parsed.tsc_ticks as f64 / tsc_hz,
            wall: done.wall,
        }),
        Err(e) => RowOutcome::Failed(e),
    }
}

/// The guest's three numbers.
#[derive(Debug, PartialEq)]
struct GuestOutput {
    checksum: u64,
    instructions: u64,
    tsc_ticks: u64,
}

/// Finds `bench: checksum 0x..`, `bench: instructions N` and
/// `bench: tsc-ticks N` anywhere in the serial output (QEMU's firmware
/// prints escape sequences before the guest).
fn parse_output(output: &str) -> Result<GuestOutput, RunError> {
    let value = |key: &'static str| -> Result<u64, RunError> {
        let prefix = format!("bench: {key} ");
        let Some(line) = output.lines().find_map(|l| {
            l.find(&prefix)
                .and_then(|at| l.get(at + prefix.len()..))
                .map(str::trim)
        }) else {
            return Err(RunError::MissingLine {
                key,
                tail: process::tail(output, 4),
            });
        };
        let parsed = match line.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => line.parse(),
        };
        parsed.map_err(|_| RunError::BadNumber {
            key,
            line: line.to_string(),
        })
    };
    Ok(GuestOutput {
        checksum: value("checksum")?,
        instructions: value("instructions")?,
        tsc_ticks: value("tsc-ticks")?,
    })
}

impl CpuReport {
    /// The measurement of `machine`, when it ran.
    pub fn measured(&self, machine: Machine) -> Option<&Measurement> {
        self.rows.iter().find_map(|r| match &r.outcome {
            RowOutcome::Measured(m) if r.machine == machine => Some(m),
            _ => None,
        })
    }

    /// `a`'s speed over `b`'s, when both ran.
    pub fn ratio(&self, a: Machine, b: Machine) -> Option<f64> {
        let (a, b) = (self.measured(a)?.ips(), self.measured(b)?.ips());
        (b > 0.0).then(|| a / b)
    }

    /// Whether every measured machine computed the same checksum and ran
    /// the same number of instructions.
    pub fn checksums_agree(&self) -> bool {
        let mut measured = self.rows.iter().filter_map(|r| match &r.outcome {
            RowOutcome::Measured(m) => Some((m.checksum, m.instructions)),
            _ => None,
        });
        match measured.next() {
            Some(first) => measured.all(|m| m == first),
            None => true,
        }
    }

    /// Ok when something was measured, nothing that was available failed
    /// and the checksums agree. Unavailable machines are not errors.
    pub fn check(self) -> Result<(), BenchError> {
        if !self.checksums_agree() {
            let all = self
                .rows
                .iter()
                .filter_map(|r| match &r.outcome {
                    RowOutcome::Measured(m) => Some(format!("{} {:#018x}", r.machine, m.checksum)),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(BenchError::ChecksumMismatch(all));
        }
        let mut any = false;
        for row in self.rows {
            match row.outcome {
                RowOutcome::Measured(_) => any = true,
                RowOutcome::Unavailable(_) => {}
                RowOutcome::Failed(source) => {
                    return Err(BenchError::RunFailed {
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

impl fmt::Display for CpuReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "compute: checksum over 64 MiB at CPL3, {} passes; host TSC {:.1} MHz",
            self.passes,
            self.tsc_hz / 1e6
        )?;
        writeln!(
            f,
            "{:<12} {:>12} {:>10} {:>10} {:>9}  checksum",
            "machine", "instructions", "loop s", "MIPS", "wall s"
        )?;
        for row in &self.rows {
            match &row.outcome {
                RowOutcome::Measured(m) => writeln!(
                    f,
                    "{:<12} {:>12} {:>10.3} {:>10.1} {:>9.2}  {:#018x}",
                    row.machine.to_string(),
                    m.instructions,
                    m.loop_secs,
                    m.ips() / 1e6,
                    m.wall.as_secs_f64(),
                    m.checksum
                )?,
                RowOutcome::Unavailable(why) => {
                    writeln!(f, "{:<12} unavailable ({why})", row.machine.to_string())?
                }
                RowOutcome::Failed(e) => {
                    write!(f, "{:<12} failed: {e}", row.machine.to_string())?;
                    let mut source = std::error::Error::source(e);
                    while let Some(s) = source {
                        write!(f, ": {s}")?;
                        source = s.source();
                    }
                    writeln!(f)?
                }
            }
        }
        for (a, b) in [
            (Machine::Soft, Machine::Kvm),
            (Machine::Soft, Machine::QemuTcg),
        ] {
            match self.ratio(a, b) {
                Some(r) if r > 0.0 && r < 1.0 => {
                    writeln!(f, "speed {a} / {b}: {r:.4} ({b} {:.1}x faster)", 1.0 / r)?
                }
                Some(r) if r >= 1.0 => writeln!(f, "speed {a} / {b}: {r:.4} ({a} {r:.1}x faster)")?,
                _ => writeln!(f, "speed {a} / {b}: n/a")?,
            }
        }
        let measured = self
            .rows
            .iter()
            .filter(|r| matches!(r.outcome, RowOutcome::Measured(_)))
            .count();
        if measured < 2 {
            write!(
                f,
                "checksums: {measured} machine(s) measured, nothing to compare"
            )
        } else if self.checksums_agree() {
            write!(f, "checksums: identical on {measured} machines")
        } else {
            write!(f, "checksums: DIFFER")
        }
    }
}

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod tests;
