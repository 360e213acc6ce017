//! The API benchmark (`vessel bench api`): vessel as a Firecracker VMM
//! process (`vessel --api-sock PATH`), measured the way Firecracker's
//! SPECIFICATION.md states its promises. Owns the options, the runs and the
//! raw numbers:
//! - start-ups: spawn to the first `GET /` answered 200, wall time, and
//!   the process's CPU time (killed at that moment, reaped with `wait4`);
//! - boots of the default guest over the API (machine-config, boot-source,
//!   InstanceStart): InstanceStart to `VESSEL-GUEST-READY` on the console,
//!   spawn to READY, and the VMM's memory overhead after READY (Rss minus
//!   guest memory touched, from smaps);
//! - pause and resume: how long `PATCH /vm` Paused and Resumed take to
//!   answer, on the first booted guest (idle at its shell) and on one more
//!   boot whose guest spins in a shell loop (a vCPU that must be stopped
//!   mid-run, not one already halted).
//!
//! The table is in `api_report`.

use std::path::PathBuf;
use std::time::Duration;

use crate::api_vmm::Vmm;
use crate::process::RunError;
use crate::smaps::{MemorySplit, Smaps, SmapsError};

/// Printed by the guest's init when userspace is up.
pub const READY: &str = guest::READY_MARKER;
/// How long after READY the memory is read (the init hands over to busybox
/// init and the shell in that time).
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a paused guest stays paused, and a resumed one runs, between
/// two pause/resume requests.
const PAUSED_FOR: Duration = Duration::from_millis(20);
const RUNNING_FOR: Duration = Duration::from_millis(50);
/// What the busy guest runs.
pub const BUSY_SCRIPT: &str = "while :; do :; done";
/// Mappings other than guest RAM listed in the report.
const LARGEST_KEPT: usize = 4;

/// Why the API benchmark gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiBenchError {
    /// The default guest's files are not where the image says.
    #[error("guest file {0} not found: run `vessel guest prepare`")]
    GuestMissing(String),
    /// The directory for the API socket could not be made.
    #[error("cannot make the socket directory {path}")]
    SocketDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// vessel could not be started.
    #[error("cannot start vessel")]
    Start(#[source] RunError),
    /// vessel ended on its own.
    #[error("vessel exited {stage} ({status}): {tail}")]
    Exited {
        /// What it had not done yet.
        stage: &'static str,
        /// How it ended.
        status: String,
        /// Its last output lines.
        tail: String,
    },
    /// vessel did not get there in time (a loaded host needs `--timeout`).
    #[error(
        "vessel did not answer {stage} within {secs} s (raise --timeout on a loaded host): {tail}"
    )]
    Timeout {
        /// What it had not done yet.
        stage: &'static str,
        /// The deadline.
        secs: u64,
        /// Its last output lines.
        tail: String,
    },
    /// A request got no answer.
    #[error("{what}: no answer (vessel's last output: {tail})")]
    Request {
        /// The request.
        what: String,
        /// vessel's last output lines.
        tail: String,
        /// Why.
        #[source]
        source: api::ClientError,
    },
    /// A request was refused.
    #[error("{what} answered {status}: {body}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body (Firecracker's fault_message).
        body: String,
    },
    /// vessel could not be reaped.
    #[error("cannot reap vessel")]
    Reap(#[source] RunError),
    /// vessel's memory could not be read or split.
    #[error("cannot measure vessel's memory")]
    Memory(#[from] SmapsError),
}

/// What to run and how often.
#[derive(Debug, Clone)]
pub struct ApiBenchOptions {
    /// The `vessel` binary (the CLI passes itself).
    pub vessel: PathBuf,
    /// `--engine` value (`auto`, `soft`, `kvm`).
    pub engine: String,
    /// What the engine is on this host and why, for the notes.
    pub engine_note: String,
    /// The uncompressed kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The guest's command line (`boot_args`).
    pub cmdline: String,
    /// Guest memory in MiB (`mem_size_mib`).
    pub memory_mib: u32,
    /// Start-ups, and pause/resume cycles (at least 1 each).
    pub runs: u32,
    /// Boots of the guest (at least 1).
    pub boots: u32,
    /// Deadline for each process, from its spawn to its last request.
    pub timeout: Duration,
    /// Where the API socket goes (a fresh directory, removed afterwards).
    pub socket_dir: PathBuf,
}

impl ApiBenchOptions {
    /// The default guest with its own command line, 128 MiB (Firecracker's
    /// overhead figure is for 1 vCPU and 128 MiB), 20 start-ups and
    /// pause/resume cycles, 3 boots, 300 s per process.
    pub fn new(vessel: PathBuf, image: &guest::GuestImage) -> Self {
        ApiBenchOptions {
            vessel,
            engine: "auto".to_string(),
            engine_note: String::new(),
            kernel: image.vmlinux.clone(),
            initrd: image.initramfs.clone(),
            cmdline: image.default_cmdline.clone(),
            memory_mib: 128,
            runs: 20,
            boots: 3,
            timeout: Duration::from_secs(300),
            socket_dir: std::env::temp_dir()
                .join(format!("vessel-bench-api-{}", std::process::id())),
        }
    }
}

/// One start-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartRun {
    /// Spawn to the first `GET /` answered 200.
    pub wall: Duration,
    /// The process's CPU time (all threads, user and system) until then.
    pub cpu: Duration,
}

/// One boot over the API.
#[derive(Debug, Clone, PartialEq)]
pub struct BootRun {
    /// Spawn to the READY line.
    pub spawn_to_ready: Duration,
    /// From sending InstanceStart to the READY line.
    pub start_to_ready: Duration,
    /// How long InstanceStart took to answer.
    pub start_answer: Duration,
    /// The process's memory, [`SETTLE`] after READY.
    pub memory: MemorySplit,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub struct ApiReport {
    /// The engine flag vessel ran with.
    pub engine: String,
    /// What the engine is on this host and why.
    pub engine_note: String,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// The guest's command line.
    pub cmdline: String,
    /// The start-ups.
    pub starts: Vec<StartRun>,
    /// The boots.
    pub boots: Vec<BootRun>,
    /// How long each `PATCH /vm {"state":"Paused"}` took to answer, idle
    /// guest.
    pub pauses: Vec<Duration>,
    /// How long each `PATCH /vm {"state":"Resumed"}` took to answer, idle
    /// guest.
    pub resumes: Vec<Duration>,
    /// The same with a guest that spins ([`BUSY_SCRIPT`]).
    pub busy_pauses: Vec<Duration>,
    /// The same with a guest that spins.
    pub busy_resumes: Vec<Duration>,
}

/// Timed pause/resume requests.
#[derive(Debug, Default)]
struct Cycles {
    pauses: Vec<Duration>,
    resumes: Vec<Duration>,
}

/// Runs the start-ups, then the boots (the first one with the
/// pause/resume cycles), then one boot of a busy guest for its own
/// pause/resume cycles. Any failure ends the benchmark with its reason.
pub fn api(opts: &ApiBenchOptions) -> Result<ApiReport, ApiBenchError> {
    for file in [&opts.kernel, &opts.initrd] {
        if !file.is_file() {
            return Err(ApiBenchError::GuestMissing(file.display().to_string()));
        }
    }
    let dir = SocketDir::create(&opts.socket_dir)?;
    let sock = dir.0.join("api.sock");
    let mut report = ApiReport {
        engine: opts.engine.clone(),
        engine_note: opts.engine_note.clone(),
        memory_mib: opts.memory_mib,
        cmdline: opts.cmdline.clone(),
        starts: Vec::new(),
        boots: Vec::new(),
        pauses: Vec::new(),
        resumes: Vec::new(),
        busy_pauses: Vec::new(),
        busy_resumes: Vec::new(),
    };
    for _ in 0..opts.runs.max(1) {
        report.starts.push(start_once(opts, &sock)?);
    }
    let cycles = opts.runs.max(1);
    for i in 0..opts.boots.max(1) {
        let (vmm, run) = boot_once(opts, &sock, &opts.cmdline)?;
        report.boots.push(run);
        if i == 0 {
            let c = pause_cycles(opts, &vmm, cycles)?;
            (report.pauses, report.resumes) = (c.pauses, c.resumes);
        }
        vmm.kill()?;
    }
    let busy = format!("{} {}", opts.cmdline, guest::script_cmdline(BUSY_SCRIPT));
    let (vmm, _) = boot_once(opts, &sock, &busy)?;
    let c = pause_cycles(opts, &vmm, cycles)?;
    (report.busy_pauses, report.busy_resumes) = (c.pauses, c.resumes);
    vmm.kill()?;
    Ok(report)
}

/// One process from spawn to its first `GET /` answered 200, then killed.
fn start_once(opts: &ApiBenchOptions, sock: &std::path::Path) -> Result<StartRun, ApiBenchError> {
    let mut vmm = Vmm::spawn(&opts.vessel, &opts.engine, sock, READY)?;
    let wall = vmm.wait_api(opts.timeout)?;
    let cpu = vmm.kill()?;
    Ok(StartRun { wall, cpu })
}

/// Starts a process, configures and boots the guest with `cmdline` over
/// the API, waits for READY and reads the memory; the process is left
/// running.
fn boot_once(
    opts: &ApiBenchOptions,
    sock: &std::path::Path,
    cmdline: &str,
) -> Result<(Vmm, BootRun), ApiBenchError> {
    let t = opts.timeout;
    let mut vmm = Vmm::spawn(&opts.vessel, &opts.engine, sock, READY)?;
    vmm.wait_api(t)?;
    let machine = serde_json::json!({"vcpu_count": 1, "mem_size_mib": opts.memory_mib});
    vmm.call("PUT", "/machine-config", Some(&machine.to_string()), t)?;
    let boot = serde_json::json!({
        "kernel_image_path": opts.kernel,
        "initrd_path": opts.initrd,
        "boot_args": cmdline,
    });
    vmm.call("PUT", "/boot-source", Some(&boot.to_string()), t)?;
    let sent = vmm.elapsed();
    let start = r#"{"action_type": "InstanceStart"}"#;
    let (start_answer, _) = vmm.call("PUT", "/actions", Some(start), t)?;
    let ready = vmm.wait_marker(t)?;
    std::thread::sleep(SETTLE);
    let memory = Smaps::read(vmm.pid())?.split(u64::from(opts.memory_mib), LARGEST_KEPT)?;
    let run = BootRun {
        spawn_to_ready: ready,
        start_to_ready: ready.saturating_sub(sent),
        start_answer,
        memory,
    };
    Ok((vmm, run))
}

/// `cycles` pauses and resumes of the running guest, each timed; then the
/// instance must say it is running.
fn pause_cycles(opts: &ApiBenchOptions, vmm: &Vmm, cycles: u32) -> Result<Cycles, ApiBenchError> {
    let t = opts.timeout;
    let mut timed = Cycles::default();
    for _ in 0..cycles {
        let (paused, _) = vmm.call("PATCH", "/vm", Some(r#"{"state": "Paused"}"#), t)?;
        std::thread::sleep(PAUSED_FOR);
        let (resumed, _) = vmm.call("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#), t)?;
        std::thread::sleep(RUNNING_FOR);
        timed.pauses.push(paused);
        timed.resumes.push(resumed);
    }
    let (_, info) = vmm.call("GET", "/", None, t)?;
    if !info.contains("\"Running\"") {
        return Err(ApiBenchError::Refused {
            what: "GET / after the pause/resume cycles (expected state Running)".into(),
            status: 200,
            body: info,
        });
    }
    Ok(timed)
}

/// The socket's directory, removed with what is in it when dropped.
struct SocketDir(PathBuf);

impl SocketDir {
    fn create(path: &std::path::Path) -> Result<SocketDir, ApiBenchError> {
        std::fs::create_dir_all(path).map_err(|source| ApiBenchError::SocketDir {
            path: path.display().to_string(),
            source,
        })?;
        Ok(SocketDir(path.to_path_buf()))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
