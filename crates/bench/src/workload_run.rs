//! One machine's boot of the workload benchmark: the command that starts
//! it (vessel, QEMU q35 TCG, or the host in a chroot of the same disk),
//! its stdout read line by line with the host's arrival time of each line,
//! and the driver's `VESSEL-WL` lines parsed. Also the network: a
//! namespace with a TAP for the guests (io.rs's) and an `iperf3 -s` in it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Boot, WlMachine, WorkloadBenchOptions};
use crate::io::Netns;
use crate::process::{self, RunError};

/// The TAP in the benchmark's namespace.
const TAP: &str = "vbwl0";
/// The guest's eth0 (the host side is 10.77.0.1, io.rs's).
const GUEST_ADDR: &str = "10.77.0.2/24";
/// A result line: `VESSEL-WL NAME STATUS START END DIGEST` (START and END
/// in seconds of the machine's uptime).
const RESULT: &str = "VESSEL-WL ";
/// Printed just before a workload's timed part starts.
const BEGIN: &str = "VESSEL-WL-BEGIN ";
/// Printed just after a workload's timed part ends.
const END: &str = "VESSEL-WL-END ";
/// Printed when the driver is through the list.
const DONE: &str = "VESSEL-WL-DONE";

/// The namespace, its TAP and the iperf3 server inside; all gone on drop.
pub struct Network {
    netns: Netns,
    server: Child,
}

impl Network {
    /// Makes the namespace and starts `iperf3 -s` in it, or says why not.
    pub fn start() -> Result<Network, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (a network namespace with a TAP)".to_string());
        }
        let netns = Netns::create(TAP)?;
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-B", "10.77.0.1"]);
        let mut cmd = netns.wrap(cmd);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut server = cmd
            .spawn()
            .map_err(|e| format!("cannot start iperf3 -s on the host: {e}"))?;
        // A server that cannot start (no iperf3, address in use) ends at
        // once.
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!(
                "iperf3 -s ended at once ({status}): apt-get install iperf3"
            ));
        }
        Ok(Network { netns, server })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// One driver result.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The workload.
    pub name: String,
    /// The program's exit status (126: the driver could not prepare it).
    pub status: i32,
    /// END - START, by the machine's own clock.
    pub secs: Option<f64>,
    /// From the host's arrival of its BEGIN line to that of its END line
    /// (or of its result, without one).
    pub host_secs: Option<f64>,
    /// The output's digest ("-": not compared).
    pub digest: String,
}

/// The driver's results in `lines` (each with its arrival time). Text
/// before a marker on the same line (a console interleaving) is skipped.
pub fn parse_lines(lines: &[(Duration, String)]) -> Vec<Parsed> {
    let mut begun: Vec<(String, Duration)> = Vec::new();
    let mut ended: Vec<(String, Duration)> = Vec::new();
    let mut out = Vec::new();
    for (at, line) in lines {
        if let Some(i) = line.find(BEGIN) {
            let name = line[i + BEGIN.len()..].trim().to_string();
            begun.push((name, *at));
            continue;
        }
        if let Some(i) = line.find(END) {
            let name = line[i + END.len()..].trim().to_string();
            ended.push((name, *at));
            continue;
        }
        let Some(i) = line.find(RESULT) else { continue };
        let f: Vec<&str> = line[i + RESULT.len()..].split_whitespace().collect();
        let [name, status, t0, t1, digest] = f.as_slice() else {
            continue;
        };
        let Ok(status) = status.parse::<i32>() else {
            continue;
        };
        let time = |s: &str| s.parse::<f64>().ok().filter(|t| t.is_finite());
        let secs = match (time(t0), time(t1)) {
            (Some(a), Some(b)) if b >= a && a > 0.0 => Some(b - a),
            _ => None,
        };
        let last =
            |v: &[(String, Duration)]| v.iter().rev().find(|(n, _)| n == name).map(|(_, t)| *t);
        let end = last(&ended).unwrap_or(*at);
        let host_secs = last(&begun)
            .and_then(|start| end.checked_sub(start))
            .map(|d| d.as_secs_f64());
        out.push(Parsed {
            name: name.to_string(),
            status,
            secs,
            host_secs,
            digest: digest.to_string(),
        });
    }
    out
}

/// An empty directory for the native run's loop mount (which lives in
/// the run's own mount namespace); removed on drop.
struct MountPoint(std::path::PathBuf);

impl MountPoint {
    fn new() -> std::io::Result<MountPoint> {
        let path = std::env::temp_dir().join(format!("vessel-bench-wl-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(MountPoint(path))
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// How one machine's boot went.
#[derive(Debug)]
pub enum BootOutcome {
    /// It ran; its results (maybe fewer than asked for) and the last lines
    /// of its output.
    Ran {
        /// The results.
        parsed: Vec<Parsed>,
        /// Whether the driver finished the list.
        done: bool,
        /// The end of the output, for failures.
        tail: String,
    },
    /// It cannot run here.
    Unavailable(String),
    /// It was available and failed.
    Failed(String),
}

/// Runs `boot` on `machine`.
pub fn run_boot(
    opts: &WorkloadBenchOptions,
    machine: WlMachine,
    boot: &Boot,
    net: Option<&Network>,
) -> BootOutcome {
    let words: Vec<String> = boot
        .workloads
        .iter()
        .filter(|w| net.is_some() || !w.needs_net())
        .map(|w| w.driver_arg(opts.scale))
        .collect();
    if words.is_empty() {
        return BootOutcome::Unavailable("nothing to run".to_string());
    }
    let mountpoint;
    let mut cmd = match machine {
        WlMachine::Native => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return BootOutcome::Unavailable(
                    "needs root (loop mount of the workload disk)".to_string(),
                );
            }
            mountpoint = match MountPoint::new() {
                Ok(d) => d,
                Err(e) => return BootOutcome::Failed(format!("no mount point: {e}")),
            };
            let script = guest::workload::native_script(&opts.disk, &mountpoint.0, &words);
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c", &script]);
            c
        }
        _ => guest_command(opts, machine, boot.cpus, &words, net.is_some()),
    };
    if let Some(net) = net {
        cmd = net.netns.wrap(cmd);
    }
    match run_lines(&mut cmd, opts.timeout) {
        Ok(Captured {
            status,
            lines,
            stderr,
        }) => {
            let parsed = parse_lines(&lines);
            let done = lines.iter().any(|(_, l)| l.contains(DONE));
            let mut all: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
            all.push_str(&stderr);
            let mut tail = process::tail(&all, 3);
            if !status.success() {
                tail = format!("exit {status}: {tail}");
            }
            BootOutcome::Ran { parsed, done, tail }
        }
        Err(RunError::Spawn { program, source })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            BootOutcome::Unavailable(format!("{program} not found"))
        }
        Err(e) => BootOutcome::Failed(describe(&e)),
    }
}

fn describe(e: &RunError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

/// The command that boots the guest on `machine` (vessel or QEMU) with
/// `cpus` vCPUs, the workload disk read-only and, with `net`, a NIC on
/// the TAP; its init runs the driver with `words`.
pub fn guest_command(
    opts: &WorkloadBenchOptions,
    machine: WlMachine,
    cpus: u32,
    words: &[String],
    net: bool,
) -> Command {
    let script = guest::workload::guest_script(words, net.then_some(GUEST_ADDR));
    let cmdline = format!("{} {}", opts.cmdline, guest::script_cmdline(&script));
    let disk = opts.disk.display().to_string();
    let memory = opts.memory_mib.to_string();
    let cpus = cpus.to_string();
    if machine == WlMachine::Vessel {
        let mut cmd = Command::new(&opts.vessel);
        cmd.args(["run", "--engine", &opts.engine, "--cpus", &cpus])
            .args(["--cpu-model", &opts.cpu_model])
            .args(["--no-reboot", "--memory", &memory])
            .args(["--kernel".as_ref(), opts.kernel.as_os_str()])
            .args(["--initrd".as_ref(), opts.initrd.as_os_str()])
            .args(["--disk", &format!("{disk},readonly")]);
        if net {
            cmd.args(["--net", &format!("tap={TAP}")]);
        }
        cmd.args(["--cmdline", &cmdline]);
        cmd
    } else {
        let mut cmd = Command::new(&opts.qemu);
        cmd.args(["-M", "q35", "-accel", "tcg", "-smp", &cpus, "-m", &memory])
            .args(["-nographic", "-display", "none", "-monitor", "none"]);
        if let Some(model) = &opts.qemu_cpu {
            cmd.args(["-cpu", model]);
        }
        cmd.args(["-serial", "stdio", "-no-reboot", "-nodefaults"])
            .args(["-kernel".as_ref(), opts.kernel.as_os_str()])
            .args(["-initrd".as_ref(), opts.initrd.as_os_str()])
            .args(["-append", &cmdline])
            .arg("-drive")
            .arg(format!("file={disk},format=raw,if=none,id=d0,readonly=on"))
            .args(["-device", "virtio-blk-pci,drive=d0"]);
        if net {
            cmd.arg("-netdev")
                .arg(format!("tap,id=n0,ifname={TAP},script=no,downscript=no"))
                .args(["-device", "virtio-net-pci,netdev=n0"]);
        }
        cmd
    }
}

/// What a finished run left: its status, its stdout lines each with the
/// time since spawn it was read at, and its stderr.
struct Captured {
    status: ExitStatus,
    lines: Vec<(Duration, String)>,
    stderr: String,
}

/// Runs `cmd` in its own process group (stdin closed) to its end or
/// `timeout` (then the whole group is killed): its exit status, its stdout
/// lines each with the time since spawn it was read at, and its stderr.
fn run_lines(cmd: &mut Command, timeout: Duration) -> Result<Captured, RunError> {
    let start = Instant::now();
    cmd.process_group(0);
    let mut child = process::spawn_piped(cmd)?;
    let stderr = process::drain(child.stderr.take());
    let (tx, rx) = mpsc::channel();
    let reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        if tx.send((start.elapsed(), line)).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    });
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&child);
                let _ = child.wait();
                break Err(RunError::Timeout(timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group(&child);
                let _ = child.wait();
                break Err(RunError::Wait(e));
            }
        }
    };
    // Children left in the group (a native run's chroot) go too.
    kill_group(&child);
    if let Some(r) = reader {
        let _ = r.join();
    }
    let lines: Vec<_> = rx.try_iter().collect();
    let stderr = process::join(stderr);
    status.map(|status| Captured {
        status,
        lines,
        stderr,
    })
}

/// Kills the process group the child leads (only processes this run
/// started are in it).
fn kill_group(child: &Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill with a negative pid signals the process group the
    // child leads (made by process_group(0)); no memory is involved.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}
