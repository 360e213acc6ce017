//! One VM managed from outside, as Firecracker manages its microVM: the
//! configuration is put together piece by piece while the VM has not
//! started, `start` boots it on a VMM thread, and from then on only the
//! actions a running VM allows (pause, resume, Ctrl+Alt+Del, device updates)
//! are accepted. Which operation is allowed in which state is decided here,
//! once, for the API and for config files alike.

use crate::config::{EngineChoice, VmConfig};
use crate::console::Console;
use crate::control::Outcome;
use crate::guest_output::{OutputMode, OutputWatch};
use crate::live::{LiveError, LiveVm};
use crate::virtio_devices::{BalloonConfig, BlockConfig, DeviceConfig, NetConfig, VsockConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Where the instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    NotStarted,
    Running,
    Paused,
    /// The guest stopped (or failed to boot); the process is about to end.
    Stopped,
}

impl InstanceState {
    /// The name Firecracker's `GET /` reports.
    pub fn api_name(self) -> &'static str {
        match self {
            InstanceState::NotStarted => "Not started",
            InstanceState::Running => "Running",
            InstanceState::Paused => "Paused",
            InstanceState::Stopped => "Stopped",
        }
    }
}

/// vCPUs and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    pub vcpu_count: usize,
    pub mem_size_mib: u64,
    /// Simultaneous multithreading: accepted, reported, not acted on.
    pub smt: bool,
    /// Dirty page tracking (for snapshots): accepted, reported.
    pub track_dirty_pages: bool,
}

impl Default for MachineConfig {
    /// Firecracker's defaults: one vCPU, 128 MiB.
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            track_dirty_pages: false,
        }
    }
}

/// The kernel, initrd and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSource {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub boot_args: Option<String>,
}

/// A disk with the name the API knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    pub id: String,
    pub block: BlockConfig,
    /// Mounted as the root file system (`root=` on the command line).
    pub is_root_device: bool,
    /// `root=PARTUUID=...` instead of `root=/dev/vda`.
    pub partuuid: Option<String>,
}

/// A network interface with the name the API knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInterface {
    pub id: String,
    pub net: NetConfig,
}

/// Everything set before `start`.
#[derive(Debug, Clone, Default)]
pub struct PendingConfig {
    pub machine: MachineConfig,
    pub boot: Option<BootSource>,
    pub drives: Vec<Drive>,
    pub nets: Vec<NetInterface>,
    pub balloon: Option<BalloonConfig>,
    pub rng: bool,
    pub vsock: Option<VsockConfig>,
    /// Where the serial console's output goes instead of stdout, opened
    /// when it was set.
    pub serial_out: Option<Arc<std::fs::File>>,
}

/// The command line used when the boot source gives none: the serial
/// console, a reset that ends the VM, and a panic that resets.
pub const DEFAULT_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1";

/// Why an operation on the instance was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("the microVM has started: {what} can only be changed before InstanceStart")]
    AlreadyStarted { what: &'static str },
    #[error(
        "the microVM has not started: {what} needs a running microVM (send InstanceStart first)"
    )]
    NotStarted { what: &'static str },
    #[error("the microVM has stopped")]
    Stopped,
    #[error("no boot source: PUT /boot-source with a kernel_image_path before InstanceStart")]
    NoBootSource,
    #[error("{what} {path} cannot be opened: {source}")]
    FileUnusable {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "drive {existing} is already the root device: only one drive can have is_root_device true"
    )]
    SecondRootDevice { existing: String },
    #[error("network interface {other} already uses host device {tap}: each interface needs its own TAP")]
    TapInUse { other: String, tap: String },
    #[error("network interface {other} already has guest MAC {mac}")]
    MacInUse { other: String, mac: String },
    #[error("no drive with id {0}: PUT it before InstanceStart")]
    NoSuchDrive(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the microVM failed to start: {0}")]
    Boot(String),
    #[error("{0}")]
    Live(#[from] LiveError),
    #[error("cannot start the VMM thread: {0}")]
    Thread(std::io::Error),
}

struct Inner {
    state: InstanceState,
    config: PendingConfig,
    /// How the VM ended.
    outcome: Option<Outcome>,
    /// Why the last start failed (the VM could not be built); the
    /// instance is then back to NotStarted, to be fixed and started again.
    start_error: Option<String>,
}

/// One VM and its configuration.
pub struct Instance {
    inner: Mutex<Inner>,
    changed: Condvar,
    live: Arc<LiveVm>,
    engine: EngineChoice,
    cpu_model: crate::config::CpuModel,
    /// The host terminal, made on the first start and kept: a failed start
    /// followed by another must not leave two threads reading stdin.
    console: std::sync::OnceLock<Console>,
}

/// How long `start` waits for the VM's vCPUs to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Instance {
    pub fn new(engine: EngineChoice) -> Arc<Self> {
        Self::with_cpu_model(engine, Default::default())
    }

    /// An instance whose VM's CPUID advertises `cpu_model`.
    pub fn with_cpu_model(engine: EngineChoice, cpu_model: crate::config::CpuModel) -> Arc<Self> {
        Arc::new(Instance {
            inner: Mutex::new(Inner {
                state: InstanceState::NotStarted,
                config: PendingConfig::default(),
                outcome: None,
                start_error: None,
            }),
            changed: Condvar::new(),
            live: LiveVm::new(),
            engine,
            cpu_model,
            console: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, with Paused read from the running VM.
    pub fn state(&self) -> InstanceState {
        match self.lock().state {
            InstanceState::Running if self.live.is_paused() => InstanceState::Paused,
            s => s,
        }
    }

    /// A copy of the configuration (for GET /vm/config and /machine-config).
    pub fn config(&self) -> PendingConfig {
        self.lock().config.clone()
    }

    /// Runs `edit` on the configuration while the VM has not started.
    fn configure<T>(
        &self,
        what: &'static str,
        edit: impl FnOnce(&mut PendingConfig) -> Result<T, InstanceError>,
    ) -> Result<T, InstanceError> {
        let mut inner = self.lock();
        match inner.state {
            InstanceState::NotStarted => edit(&mut inner.config),
            InstanceState::Stopped => Err(InstanceError::Stopped),
            _ => Err(InstanceError::AlreadyStarted { what }),
        }
    }

    pub fn set_machine_config(&self, machine: MachineConfig) -> Result<(), InstanceError> {
        self.configure("the machine configuration", |c| {
            c.machine = machine;
            Ok(())
        })
    }

    pub fn set_boot_source(&self, boot: BootSource) -> Result<(), InstanceError> {
        self.configure("the boot source", |c| {
            c.boot = Some(boot);
            Ok(())
        })
    }

    /// Adds a drive, or replaces the one with the same id.
    pub fn put_drive(&self, drive: Drive) -> Result<(), InstanceError> {
        self.configure("drives", |c| {
            if drive.is_root_device {
                if let Some(root) = c
                    .drives
                    .iter()
                    .find(|d| d.is_root_device && d.id != drive.id)
                {
                    return Err(InstanceError::SecondRootDevice {
                        existing: root.id.clone(),
                    });
                }
            }
            match c.drives.iter_mut().find(|d| d.id == drive.id) {
                Some(d) => *d = drive,
                None => c.drives.push(drive),
            }
            Ok(())
        })
    }

    /// Adds a network interface, or replaces the one with the same id.
    pub fn put_net(&self, iface: NetInterface) -> Result<(), InstanceError> {
        self.configure("network interfaces", |c| {
            for other in c.nets.iter().filter(|n| n.id != iface.id) {
                if other.net.tap == iface.net.tap {
                    return Err(InstanceError::TapInUse {
                        other: other.id.clone(),
                        tap: iface.net.tap.clone(),
                    });
                }
                if iface.net.mac.is_some() && other.net.mac == iface.net.mac {
                    return Err(InstanceError::MacInUse {
                        other: other.id.clone(),
                        mac: format_mac(iface.net.mac.unwrap_or_default()),
                    });
                }
            }
            match c.nets.iter_mut().find(|n| n.id == iface.id) {
                Some(n) => *n = iface,
                None => c.nets.push(iface),
            }
            Ok(())
        })
    }

    pub fn set_balloon(&self, balloon: BalloonConfig) -> Result<(), InstanceError> {
        self.configure("the balloon", |c| {
            c.balloon = Some(balloon);
            Ok(())
        })
    }

    pub fn set_vsock(&self, vsock: VsockConfig) -> Result<(), InstanceError> {
        self.configure("the vsock device", |c| {
            c.vsock = Some(vsock);
            Ok(())
        })
    }

    /// Sends the guest's serial output to `path` (a file, appended to, or
    /// a named pipe, never waited on) instead of stdout.
    pub fn set_serial_out(&self, path: &Path) -> Result<(), InstanceError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| InstanceError::FileUnusable {
                what: "serial_out_path",
                path: path.to_path_buf(),
                source,
            })?;
        self.configure("the serial console", |c| {
            c.serial_out = Some(Arc::new(file));
            Ok(())
        })
    }

    pub fn set_entropy(&self) -> Result<(), InstanceError> {
        self.configure("the entropy device", |c| {
            c.rng = true;
            Ok(())
        })
    }

    /// The drive with this id, as configured.
    pub fn drive(&self, id: &str) -> Option<Drive> {
        self.lock()
            .config
            .drives
            .iter()
            .find(|d| d.id == id)
            .cloned()
    }

    /// The handles of the running VM, for device updates after start.
    pub fn live(&self) -> &Arc<LiveVm> {
        &self.live
    }

    /// Checks that the VM is running (or paused), for post-boot actions.
    pub fn require_running(&self, what: &'static str) -> Result<(), InstanceError> {
        match self.lock().state {
            InstanceState::NotStarted => Err(InstanceError::NotStarted { what }),
            InstanceState::Stopped => Err(InstanceError::Stopped),
            _ => Ok(()),
        }
    }

    pub fn pause(&self) -> Result<(), InstanceError> {
        self.require_running("pausing")?;
        Ok(self.live.pause()?)
    }

    pub fn resume(&self) -> Result<(), InstanceError> {
        self.require_running("resuming")?;
        Ok(self.live.resume()?)
    }

    pub fn send_ctrl_alt_del(&self) -> Result<(), InstanceError> {
        self.require_running("SendCtrlAltDel")?;
        Ok(self.live.send_ctrl_alt_del()?)
    }

    /// Boots the VM on a new VMM thread and returns once its vCPUs run, or
    /// with the reason it could not be built.
    pub fn start(self: &Arc<Self>) -> Result<(), InstanceError> {
        let config = {
            let mut inner = self.lock();
            match inner.state {
                InstanceState::NotStarted => {}
                InstanceState::Stopped => return Err(InstanceError::Stopped),
                _ => {
                    return Err(InstanceError::AlreadyStarted {
                        what: "the microVM",
                    })
                }
            }
            let mut config = vm_config(&inner.config, self.engine)?;
            config.cpu_model = self.cpu_model;
            config.validate(crate::memory::host_memory_mib())?;
            inner.state = InstanceState::Running;
            (config, inner.config.serial_out.clone())
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("vmm".into())
            .spawn(move || me.run(config.0, config.1));
        if let Err(e) = spawned {
            self.lock().state = InstanceState::NotStarted;
            return Err(InstanceError::Thread(e));
        }
        self.wait_started()
    }

    fn run(&self, config: VmConfig, serial_out: Option<Arc<std::fs::File>>) {
        let console = self
            .console
            .get_or_init(|| Console::start(OutputMode::Interactive));
        if let Some(file) = serial_out {
            console.output().redirect_to(file);
        }
        let result = crate::run_vm_with(&config, console, &self.live);
        let mut inner = self.lock();
        match result {
            // The builder fails only before the vCPUs run (a VM that
            // stops on a guest reset is not rebooted here).
            Err(e) => {
                inner.start_error = Some(error_chain(&e));
                inner.state = InstanceState::NotStarted;
            }
            Ok(outcome) => {
                inner.outcome = Some(outcome);
                inner.state = InstanceState::Stopped;
            }
        }
        self.changed.notify_all();
    }

    fn wait_started(&self) -> Result<(), InstanceError> {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let mut inner = self.lock();
        loop {
            if let Some(why) = inner.start_error.take() {
                return Err(InstanceError::Boot(why));
            }
            if inner.outcome.is_some() || self.live.get().is_ok() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(InstanceError::Boot(
                    "the VM did not start within 60 s".to_string(),
                ));
            }
            // The builder fills the live slot without telling us: poll.
            let step = left.min(Duration::from_millis(5));
            inner = self
                .changed
                .wait_timeout(inner, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The console of the running (or stopped) VM.
    pub fn console_output(&self) -> Option<Arc<OutputWatch>> {
        self.console.get().map(|c| c.output().clone())
    }

    /// When the guest printed its ready marker, if it has.
    pub fn guest_ready_at(&self) -> Option<std::time::Instant> {
        self.console.get().and_then(|c| c.output().ready_at())
    }

    /// Blocks until the VM has stopped; returns how.
    pub fn wait(&self) -> Outcome {
        let mut inner = self.lock();
        loop {
            if let Some(o) = &inner.outcome {
                return o.clone();
            }
            inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// An error and its sources on one line, for messages that leave the VMM.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn check_file(what: &'static str, path: &Path, write: bool) -> Result<(), InstanceError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map(drop)
        .map_err(|source| InstanceError::FileUnusable {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// The kernel command line: the boot source's (or the default), without
/// `pci=off` (vessel's devices are on PCI; Firecracker's examples carry it
/// for their MMIO devices), with `root=` for a root drive.
fn kernel_cmdline(boot: &BootSource, drives: &[Drive]) -> String {
    let args = boot.boot_args.as_deref().unwrap_or(DEFAULT_BOOT_ARGS);
    let mut words: Vec<String> = args
        .split_ascii_whitespace()
        .filter(|w| {
            let drop = *w == "pci=off";
            if drop {
                log::warn!("boot_args: pci=off dropped: vessel's devices are on PCI");
            }
            !drop
        })
        .map(str::to_string)
        .collect();
    if let Some(root) = drives.first().filter(|d| d.is_root_device) {
        words.push(match &root.partuuid {
            Some(uuid) => format!("root=PARTUUID={uuid}"),
            None => "root=/dev/vda".to_string(),
        });
        words.push(if root.block.readonly { "ro" } else { "rw" }.to_string());
    }
    words.join(" ")
}

/// The VM to boot from the pending configuration: files checked, the root
/// drive first (it becomes /dev/vda), a guest reset ending the VM.
fn vm_config(c: &PendingConfig, engine: EngineChoice) -> Result<VmConfig, InstanceError> {
    let boot = c.boot.as_ref().ok_or(InstanceError::NoBootSource)?;
    check_file("kernel_image_path", &boot.kernel, false)?;
    if let Some(initrd) = &boot.initrd {
        check_file("initrd_path", initrd, false)?;
    }
    let mut drives = c.drives.clone();
    drives.sort_by_key(|d| !d.is_root_device);
    for d in &drives {
        check_file("path_on_host", &d.block.path, !d.block.readonly)?;
    }
    Ok(VmConfig {
        kernel: boot.kernel.clone(),
        initrd: boot.initrd.clone(),
        cmdline: kernel_cmdline(boot, &drives),
        cpus: c.machine.vcpu_count,
        memory_mib: c.machine.mem_size_mib,
        engine,
        cpu_model: Default::default(),
        reboot: false,
        devices: DeviceConfig {
            disks: drives.into_iter().map(|d| d.block).collect(),
            nets: c.nets.iter().map(|n| n.net.clone()).collect(),
            user_net: None,
            rng: c.rng,
            balloon: c.balloon,
            vsock: c.vsock.clone(),
            shares: Vec::new(),
            nvme: Vec::new(),
            ide: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(path: &str, readonly: bool) -> BlockConfig {
        BlockConfig {
            readonly,
            ..BlockConfig::new(path)
        }
    }

    fn drive(id: &str, root: bool) -> Drive {
        Drive {
            id: id.to_string(),
            block: block("/dev/null", false),
            is_root_device: root,
            partuuid: None,
        }
    }

    #[test]
    fn a_second_root_drive_is_refused_and_the_same_id_replaces() {
        let i = Instance::new(EngineChoice::Soft);
        i.put_drive(drive("rootfs", true)).unwrap();
        let e = i.put_drive(drive("data", true)).unwrap_err();
        assert!(e.to_string().contains("rootfs"), "{e}");
        i.put_drive(drive("rootfs", true)).unwrap();
        i.put_drive(drive("data", false)).unwrap();
        assert_eq!(i.config().drives.len(), 2);
    }

    #[test]
    fn post_boot_actions_need_a_started_vm() {
        let i = Instance::new(EngineChoice::Soft);
        assert_eq!(i.state(), InstanceState::NotStarted);
        let e = i.pause().unwrap_err();
        assert!(e.to_string().contains("InstanceStart"), "{e}");
        assert!(i.send_ctrl_alt_del().is_err());
    }

    #[test]
    fn start_without_a_boot_source_names_the_fix() {
        let i = Instance::new(EngineChoice::Soft);
        let e = i.start().unwrap_err();
        assert!(e.to_string().contains("PUT /boot-source"), "{e}");
        assert_eq!(i.state(), InstanceState::NotStarted);
    }

    #[test]
    fn start_with_a_missing_kernel_names_the_file() {
        let i = Instance::new(EngineChoice::Soft);
        i.set_boot_source(BootSource {
            kernel: PathBuf::from("/nonexistent/vmlinux"),
            initrd: None,
            boot_args: None,
        })
        .unwrap();
        let e = i.start().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }

    #[test]
    fn taps_and_macs_are_not_shared() {
        let i = Instance::new(EngineChoice::Soft);
        let net = |id: &str, tap: &str, mac| NetInterface {
            id: id.to_string(),
            net: NetConfig {
                mac,
                ..NetConfig::new(tap)
            },
        };
        i.put_net(net("eth0", "tap0", Some([2, 0, 0, 0, 0, 1])))
            .unwrap();
        assert!(i.put_net(net("eth1", "tap0", None)).is_err());
        assert!(i
            .put_net(net("eth1", "tap1", Some([2, 0, 0, 0, 0, 1])))
            .is_err());
        i.put_net(net("eth1", "tap1", Some([2, 0, 0, 0, 0, 2])))
            .unwrap();
    }

    #[test]
    fn cmdline_drops_pci_off_and_names_the_root_drive() {
        let boot = BootSource {
            kernel: PathBuf::from("k"),
            initrd: None,
            boot_args: Some("console=ttyS0 reboot=k panic=1 pci=off".to_string()),
        };
        let mut root = drive("rootfs", true);
        root.block.readonly = true;
        assert_eq!(
            kernel_cmdline(&boot, &[root.clone()]),
            "console=ttyS0 reboot=k panic=1 root=/dev/vda ro"
        );
        root.partuuid = Some("abcd-01".to_string());
        root.block.readonly = false;
        assert!(kernel_cmdline(&boot, &[root]).ends_with("root=PARTUUID=abcd-01 rw"));
        assert_eq!(
            kernel_cmdline(
                &BootSource {
                    boot_args: None,
                    ..boot
                },
                &[]
            ),
            DEFAULT_BOOT_ARGS
        );
    }

    #[test]
    fn the_root_drive_becomes_the_first_disk() {
        let mut c = PendingConfig {
            boot: Some(BootSource {
                kernel: PathBuf::from("/dev/null"),
                initrd: None,
                boot_args: None,
            }),
            ..Default::default()
        };
        let mut data = drive("data", false);
        data.block = block("/dev/zero", false);
        c.drives = vec![data, drive("rootfs", true)];
        let vm = vm_config(&c, EngineChoice::Soft).unwrap();
        assert_eq!(vm.devices.disks[0].path, PathBuf::from("/dev/null"));
        assert!(!vm.reboot);
    }
}
