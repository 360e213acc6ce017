//! The process flags Firecracker takes (`firecracker --api-sock PATH ...`),
//! so that tools which start `firecracker` can start vessel instead. Flags
//! that mean nothing for vessel yet are accepted and logged, never silently
//! taken for something else.

use std::path::PathBuf;

/// Firecracker's default API socket.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";

#[derive(clap::Args, Debug, Default, Clone)]
pub struct ProcessArgs {
    /// Serve Firecracker's REST API on this Unix socket (as `firecracker
    /// --api-sock`); the VM is configured and started through it.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Configure the VM from Firecracker's JSON config file and boot it at
    /// once (the API stays available unless --no-api).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// No API socket: the VM comes only from --config-file.
    #[arg(long, requires = "config_file")]
    pub no_api: bool,
    /// The instance's name, shown by GET / and in log lines.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Write log lines to this file or named pipe.
    #[arg(long, value_name = "PATH")]
    pub log_path: Option<PathBuf>,
    /// Log level: Error, Warning, Info, Debug, Trace or Off.
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,
    /// Put the level in each log line.
    #[arg(long)]
    pub show_level: bool,
    /// Put the source file and line in each log line.
    #[arg(long)]
    pub show_log_origin: bool,
    /// Log only lines from this module.
    #[arg(long, value_name = "MODULE")]
    pub module: Option<String>,
    /// Write metrics (one JSON object per flush) to this file or named pipe.
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<PathBuf>,
    /// Log the time from process start to the guest's boot-time marker.
    #[arg(long)]
    pub boot_timer: bool,
    /// Largest API request body in bytes (Firecracker's default: 51200).
    #[arg(long, value_name = "BYTES")]
    pub http_api_max_payload_size: Option<usize>,
    /// Which engine runs the vCPUs (vessel's own flag).
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<crate::Engine>,
    /// The instruction set the guest sees (vessel's own flag; default max).
    #[arg(long, value_enum, value_name = "MODEL")]
    pub cpu_model: Option<crate::CpuModelArg>,
    /// Accepted for compatibility; vessel has no seccomp filters yet.
    #[arg(long, value_name = "FILE")]
    pub seccomp_filter: Option<PathBuf>,
    /// Accepted for compatibility; vessel installs no seccomp filters yet.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Accepted for compatibility (MMDS is not served yet).
    #[arg(long, value_name = "FILE")]
    pub metadata: Option<PathBuf>,
    /// Accepted for compatibility (MMDS is not served yet).
    #[arg(long, value_name = "BYTES")]
    pub mmds_size_limit: Option<usize>,
    /// Accepted for compatibility (passed by Firecracker's jailer).
    #[arg(long, value_name = "US")]
    pub start_time_us: Option<u64>,
    /// Accepted for compatibility (passed by Firecracker's jailer).
    #[arg(long, value_name = "US")]
    pub start_time_cpu_us: Option<u64>,
    /// Accepted for compatibility (passed by Firecracker's jailer).
    #[arg(long, value_name = "US")]
    pub parent_cpu_time_us: Option<u64>,
    /// Accepted for compatibility: vessel's devices are always on PCI.
    #[arg(long)]
    pub enable_pci: bool,
}

impl ProcessArgs {
    /// True when any flag that starts a managed VM was given.
    pub fn wants_vmm(&self) -> bool {
        self.api_sock.is_some() || self.config_file.is_some()
    }

    /// Lines saying which accepted flags vessel does not act on.
    pub fn ignored(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |given: bool, flag: &str, why: &str| {
            if given {
                out.push(format!("{flag} is accepted but ignored: {why}"));
            }
        };
        say(
            self.seccomp_filter.is_some() || self.no_seccomp,
            "--seccomp-filter/--no-seccomp",
            "vessel installs no seccomp filters yet",
        );
        say(
            self.metadata.is_some() || self.mmds_size_limit.is_some(),
            "--metadata/--mmds-size-limit",
            "vessel has no MMDS yet",
        );
        say(
            self.start_time_us.is_some()
                || self.start_time_cpu_us.is_some()
                || self.parent_cpu_time_us.is_some(),
            "--start-time-us/--start-time-cpu-us/--parent-cpu-time-us",
            "vessel measures its own start",
        );
        say(
            self.enable_pci,
            "--enable-pci",
            "vessel's devices are always on PCI",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_flags_are_named_when_ignored() {
        let args = ProcessArgs {
            no_seccomp: true,
            ..Default::default()
        };
        let lines = args.ignored();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("seccomp"));
        assert!(ProcessArgs::default().ignored().is_empty());
        assert!(!ProcessArgs::default().wants_vmm());
    }
}
