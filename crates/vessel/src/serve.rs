//! vessel as a managed VMM process (`vessel --api-sock PATH`, or started as
//! `firecracker`): the API server on its own thread, an optional config file
//! applied through the same requests, and the process's end when the VM
//! stops. Also `vessel ctl`, the API's small client for people.

use crate::api_backend::VmmBackend;
use crate::metrics_sources::{ApiServerMetrics, UartMetrics, VmGroup, VmMetrics};
use crate::process_args::ProcessArgs;
use anyhow::{bail, Context};
use api::{Backend, Request};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use vmm::instance::Instance;
use vmm::logger::{LoggerHandle, LoggerUpdate};
use vmm::metrics::MetricsSink;
use vmm::Outcome;

/// Runs the VMM process until its VM stops (or forever, when nothing
/// starts one).
pub fn serve(args: ProcessArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| vmm::logger::DEFAULT_INSTANCE_ID.to_string());
    let logger = start_logger(&args, &id)?;
    for line in args.ignored() {
        log::warn!("{line}");
    }
    let engine = args.engine.map(Into::into).unwrap_or_default();
    let cpu_model = args.cpu_model.map(Into::into).unwrap_or_default();
    let instance = Instance::with_cpu_model(engine, cpu_model);
    let metrics = Arc::new(MetricsSink::new().context("cannot start the metrics")?);
    let api_metrics = Arc::new(api::ApiMetrics::default());
    if let Some(logger) = &logger {
        metrics.register(Arc::new(logger.clone()));
    }
    metrics.register(Arc::new(ApiServerMetrics(api_metrics.clone())));
    for group in [VmGroup::Block, VmGroup::Net, VmGroup::Vcpu, VmGroup::Vsock] {
        metrics.register(Arc::new(VmMetrics::new(group, instance.live().clone())));
    }
    metrics.register(Arc::new(UartMetrics::new(instance.clone())));
    let backend = Arc::new(VmmBackend::new(
        instance.clone(),
        id,
        logger,
        metrics.clone(),
    ));
    if let Some(path) = &args.metrics_path {
        let body = serde_json::json!({ "metrics_path": path }).to_string();
        let request = api::parse("PUT", "/metrics", body.as_bytes())
            .map_err(|e| anyhow::anyhow!("--metrics-path: {e}"))?;
        backend
            .handle(request)
            .map_err(|f| anyhow::anyhow!("--metrics-path: {f}"))?;
    }

    let _socket = if args.no_api {
        None
    } else {
        let path = args
            .api_sock
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::process_args::DEFAULT_API_SOCK));
        let max = args
            .http_api_max_payload_size
            .unwrap_or(api::DEFAULT_MAX_PAYLOAD);
        Some(start_api(&path, max, backend.clone(), api_metrics)?)
    };
    if let Some(file) = &args.config_file {
        apply_config_file(file, backend.as_ref())?;
    }
    if args.boot_timer {
        start_boot_timer(instance.clone(), started);
    }
    let outcome = instance.wait();
    Ok(exit_code(outcome))
}

/// `--boot-timer`: logs (at Info) the time from process start to the
/// guest's ready marker, and the process's CPU time until then.
fn start_boot_timer(instance: Arc<Instance>, started: std::time::Instant) {
    let spawned = std::thread::Builder::new()
        .name("boot-timer".into())
        .spawn(move || loop {
            if let Some(ready) = instance.guest_ready_at() {
                let wall = ready.saturating_duration_since(started);
                let cpu = process_cpu_time();
                log::info!(
                    "Guest-boot-time = {:>6} us {} ms, {:>6} CPU us {} CPU ms",
                    wall.as_micros(),
                    wall.as_millis(),
                    cpu.as_micros(),
                    cpu.as_millis()
                );
                return;
            }
            if instance.state() == vmm::instance::InstanceState::Stopped {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        });
    if let Err(e) = spawned {
        log::warn!("--boot-timer: cannot start its thread: {e}");
    }
}

/// CPU time (user + system) this process has used so far.
fn process_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return std::time::Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + std::time::Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Removes the API socket when the process ends normally.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The process's logger, configured from the flags; `None` (with a note)
/// when a logger was already installed.
fn start_logger(args: &ProcessArgs, id: &str) -> anyhow::Result<Option<LoggerHandle>> {
    let handle = match vmm::logger::install() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("vessel: {e}: PUT /logger will be refused");
            return Ok(None);
        }
    };
    handle.set_instance_id(id);
    let mut level = args
        .level
        .as_deref()
        .map(vmm::logger::parse_level)
        .transpose()
        .context("--level")?;
    // The boot timer's line is at Info: show it unless a level was given.
    if args.boot_timer && level.is_none() {
        level = Some(log::LevelFilter::Info);
    }
    handle
        .update(LoggerUpdate {
            log_path: args.log_path.clone(),
            level,
            show_level: args.show_level.then_some(true),
            show_log_origin: args.show_log_origin.then_some(true),
            module: args.module.clone(),
        })
        .context("cannot configure the log")?;
    Ok(Some(handle))
}

fn start_api(
    path: &Path,
    max_payload: usize,
    backend: Arc<VmmBackend>,
    metrics: Arc<api::ApiMetrics>,
) -> anyhow::Result<SocketFile> {
    let server = api::Server::bind(path, max_payload)
        .with_context(|| format!("cannot serve the API on {}", path.display()))?
        .with_metrics(metrics);
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || server.run(backend))
        .context("cannot start the API thread")?;
    Ok(SocketFile(path.to_path_buf()))
}

/// Applies Firecracker's `--config-file` through the API's own requests and
/// boots the VM.
fn apply_config_file(file: &Path, backend: &dyn Backend) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config file {}", file.display()))?;
    let requests = api::parse_config_file(&text)
        .with_context(|| format!("config file {} is not valid", file.display()))?;
    for request in requests {
        let what = format!("{request:?}");
        if let Err(f) = backend.handle(request) {
            bail!("config file {}: {f} (in {what})", file.display());
        }
    }
    if let Err(f) = backend.handle(Request::Action(api::model::ActionKind::InstanceStart)) {
        bail!("config file {}: cannot boot: {f}", file.display());
    }
    Ok(())
}

/// The process's status when the VM stops: 0 for a guest power-off or
/// reset (Firecracker ends the VM on either), the debug-exit value, or 1
/// with the reason on stderr.
fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::PowerOff | Outcome::Reset | Outcome::UserStop => ExitCode::SUCCESS,
        Outcome::DebugExit(code) => ExitCode::from(code),
        Outcome::Failed(why) => {
            eprintln!("vessel: {why}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
pub struct CtlArgs {
    /// The API socket of the running vessel (or Firecracker).
    #[arg(long, value_name = "PATH", default_value = crate::process_args::DEFAULT_API_SOCK)]
    api_sock: PathBuf,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(clap::Subcommand)]
enum CtlAction {
    /// Show the instance's id, state and version (GET /).
    Info,
    /// Pause the VM's vCPUs (PATCH /vm Paused).
    Pause,
    /// Let the vCPUs run again (PATCH /vm Resumed).
    Resume,
    /// Ask the guest to shut down cleanly (Ctrl+Alt+Del).
    Shutdown,
    /// Write the metrics now (FlushMetrics).
    Metrics,
    /// Set the balloon's target: the guest gives back this many MiB.
    Balloon { mib: u32 },
}

/// `vessel ctl`: one request, its answer printed.
pub fn ctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match args.action {
        CtlAction::Info => ("GET", "/", None),
        CtlAction::Pause => ("PATCH", "/vm", Some(r#"{"state":"Paused"}"#.to_string())),
        CtlAction::Resume => ("PATCH", "/vm", Some(r#"{"state":"Resumed"}"#.to_string())),
        CtlAction::Shutdown => (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#.to_string()),
        ),
        CtlAction::Metrics => (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"FlushMetrics"}"#.to_string()),
        ),
        CtlAction::Balloon { mib } => (
            "PATCH",
            "/balloon",
            Some(format!(r#"{{"amount_mib":{mib}}}"#)),
        ),
    };
    let client = api::Client::new(&args.api_sock);
    let (status, text) = client.request(method, path, body.as_deref())?;
    if (200..300).contains(&status) {
        if !text.trim().is_empty() {
            println!("{text}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("fault_message")?.as_str().map(str::to_string))
        .unwrap_or(text);
    eprintln!("vessel ctl: {method} {path}: {status}: {message}");
    Ok(ExitCode::FAILURE)
}
