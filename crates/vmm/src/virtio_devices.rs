//! The VM's virtio devices: which ones the user asked for
//! ([`DeviceConfig`]), and [`attach`], which builds each behind the virtio
//! PCI transport, gives it a BAR in the PCI MMIO window, maps it on the
//! MMIO bus, puts it on PCI bus 0, and starts the event loop for devices
//! that wait on host file descriptors (TAP).
//!
//! Queue kicks: where the engine can turn a write to a notification
//! register into an eventfd signal without leaving the guest (KVM's
//! ioeventfd), each queue's register gets an eventfd served by the event
//! loop, so a kick costs the vCPU no trip to userspace. Elsewhere (the
//! software engine) kicks are served inline on the vCPU thread that wrote
//! the register: handing them to another thread would add a wake-up and a
//! context switch on a 2-core machine without taking work off the guest's
//! critical path (a 1-vCPU guest waits for the I/O anyway).

use crate::device_manager::DeviceManager;
use crate::event_loop::{Action, EventLoop, EventLoopError, Source};
use arch::layout::mem;
use devices::pci::bar::BusOwner;
use devices::pci::msix::{MsiSink, VmMsi};
use devices::{PciDevice, PciError};
use hypervisor::Vm;
use std::sync::{Arc, Mutex};
use virtio::pci::{TransportError, BAR_SIZE};
use virtio::{VirtioDevice, VirtioPciDevice};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use virtio::balloon::{BalloonConfig, BalloonHandle};
pub use virtio::block::rate_limiter::{RateLimiterConfig, RateLimiterUpdate, TokenBucketConfig};
pub use virtio::block::{BlockConfig, BlockHandle, CacheType, IoEngine};
pub use virtio::fs::FsConfig;
pub use virtio::net::{NetConfig, NetHandle};
pub use virtio::vsock::VsockConfig;

/// The paravirtual devices of a VM, in the order they appear on PCI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Disks; the first is /dev/vda.
    pub disks: Vec<BlockConfig>,
    pub nets: Vec<NetConfig>,
    /// A network interface on user-mode networking (passt), after `nets`.
    pub user_net: Option<crate::user_net::UserNetConfig>,
    pub rng: bool,
    pub balloon: Option<BalloonConfig>,
    /// A vsock device whose host side is Unix sockets (Firecracker's).
    pub vsock: Option<VsockConfig>,
    /// Shared host directories (virtio-fs), last on the bus.
    pub shares: Vec<FsConfig>,
    /// Disks on emulated NVMe controllers (see `storage_devices`).
    pub nvme: Vec<BlockConfig>,
    /// The disk on the emulated IDE controller (at most one).
    pub ide: Vec<BlockConfig>,
}

impl DeviceConfig {
    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
            && self.nets.is_empty()
            && self.user_net.is_none()
            && !self.rng
            && self.balloon.is_none()
            && self.vsock.is_none()
            && self.shares.is_empty()
            && self.nvme.is_empty()
            && self.ide.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("cannot open disk")]
    Block(#[from] virtio::block::BlockError),
    #[error("cannot set up network device {tap}")]
    Net {
        tap: String,
        source: virtio::net::NetError,
    },
    #[error("cannot start user networking")]
    UserNet(#[from] crate::user_net::UserNetError),
    #[error("cannot use the socket to passt")]
    UserNetSocket(#[source] std::io::Error),
    #[error("cannot share a host directory")]
    Fs(#[from] virtio::fs::FsError),
    #[error("cannot set up the vsock device")]
    Vsock(#[from] virtio::vsock::VsockError),
    #[error("cannot build the virtio-pci function")]
    Transport(#[from] TransportError),
    #[error("no room for another device on pci bus 0")]
    Pci(#[from] PciError),
    #[error("the pci mmio window is full")]
    NoBarSpace,
    #[error("cannot start the device event loop")]
    EventLoop(#[from] EventLoopError),
    #[error("cannot create a queue notification eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot register a queue notification with the engine")]
    Ioevent(#[source] hypervisor::Error),
    #[error("no drive or network interface with id {0:?}: use an id given at boot")]
    NoSuchDevice(String),
    #[error("cannot set up an emulated disk")]
    Storage(#[from] crate::storage_devices::StorageError),
    #[error("cannot change the rate limiter")]
    RateLimiter(#[from] virtio::block::rate_limiter::RateLimiterError),
}

/// Registers an eventfd for each queue notification register of `f` with
/// the engine; empty when the engine has no such path (kicks then stay
/// inline on the vCPU thread). The registration follows the BAR where it
/// decodes at boot: a guest that moves the BAR later still works, its
/// kicks simply take the MMIO path.
fn queue_ioevents(
    f: &Arc<Mutex<VirtioPciDevice>>,
    vm: &dyn Vm,
) -> Result<Vec<Source>, VirtioError> {
    let addresses = f
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .notify_addresses();
    let mut sources = Vec::new();
    for (queue, addr) in addresses {
        let eventfd = EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        if !vm
            .register_ioevent(&eventfd, addr)
            .map_err(VirtioError::Ioevent)?
        {
            return Ok(Vec::new());
        }
        sources.push(Source {
            device: f.clone(),
            action: Action::Queue { eventfd, queue },
        });
    }
    Ok(sources)
}

/// The running devices; dropping it stops the event loop.
pub struct VirtioDevices {
    pub functions: Vec<Arc<Mutex<VirtioPciDevice>>>,
    /// Controls of each disk and network interface, in config order, by id.
    pub drives: Vec<(Option<String>, BlockHandle)>,
    pub nets: Vec<(Option<String>, NetHandle)>,
    /// The vsock device's counters, when there is one.
    pub vsock: Option<Arc<virtio::vsock::metrics::VsockMetrics>>,
    /// The balloon's controls, when there is one.
    pub balloon: Option<BalloonHandle>,
    event_loop: Option<EventLoop>,
    /// passt, stopped after the event loop (fields drop in order).
    _user_net: Option<crate::user_net::UserNet>,
}

/// Changing running devices (Firecracker's PATCH of drives and network
/// interfaces); callable from any thread while the VM runs.
impl VirtioDevices {
    pub fn drive(&self, id: &str) -> Result<&BlockHandle, VirtioError> {
        find(&self.drives, id)
    }

    pub fn net(&self, id: &str) -> Result<&NetHandle, VirtioError> {
        find(&self.nets, id)
    }

    pub fn update_drive_limiter(&self, id: &str, u: &RateLimiterUpdate) -> Result<(), VirtioError> {
        Ok(self.drive(id)?.update_rate_limiter(u)?)
    }

    /// A new image for drive `id`; the guest sees a disk change. Returns
    /// the new capacity in 512-byte sectors.
    pub fn swap_drive_image(&self, id: &str, path: &std::path::Path) -> Result<u64, VirtioError> {
        Ok(self.drive(id)?.swap_image(path)?)
    }

    pub fn update_net_limiters(
        &self,
        id: &str,
        rx: &RateLimiterUpdate,
        tx: &RateLimiterUpdate,
    ) -> Result<(), VirtioError> {
        Ok(self.net(id)?.update_rate_limiters(rx, tx)?)
    }
}

fn find<'a, T>(list: &'a [(Option<String>, T)], id: &str) -> Result<&'a T, VirtioError> {
    list.iter()
        .find(|(i, _)| i.as_deref() == Some(id))
        .map(|(_, h)| h)
        .ok_or_else(|| VirtioError::NoSuchDevice(id.to_string()))
}

impl VirtioDevices {
    /// Stops serving host events (TAP frames, timers) until `resume`.
    pub fn pause(&self) {
        if let Some(l) = &self.event_loop {
            l.pause();
        }
    }

    pub fn resume(&self) {
        if let Some(l) = &self.event_loop {
            l.resume();
        }
    }
}

/// Builds the devices of `config` and puts them on the machine.
pub fn attach(
    config: &DeviceConfig,
    guest_mem: &GuestMemoryMmap,
    vm: &Arc<dyn Vm>,
    dm: &DeviceManager,
) -> Result<VirtioDevices, VirtioError> {
    if config.is_empty() {
        return Ok(VirtioDevices {
            functions: Vec::new(),
            drives: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            balloon: None,
            event_loop: None,
            _user_net: None,
        });
    }
    let mut made: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut event_sources = Vec::new();
    let (mut drives, mut nets) = (Vec::new(), Vec::new());
    for disk in &config.disks {
        let dev = virtio::block::Block::new(disk)?;
        drives.push((disk.id.clone(), dev.handle()));
        event_sources.push((made.len(), dev.event_fds()));
        made.push(Box::new(dev));
    }
    for net in &config.nets {
        let dev =
            virtio::net::Net::new(net, guest_mem.clone()).map_err(|source| VirtioError::Net {
                tap: net.tap.clone(),
                source,
            })?;
        nets.push((net.id.clone(), dev.handle()));
        event_sources.push((made.len(), dev.event_fds()));
        made.push(Box::new(dev));
    }
    let user_net = match &config.user_net {
        Some(cfg) => {
            let (passt, sock) = crate::user_net::UserNet::start(cfg)?;
            let backend = virtio::net::stream::StreamBackend::new(sock)
                .map_err(VirtioError::UserNetSocket)?;
            let mac = cfg.mac.unwrap_or(virtio::net::DEFAULT_MAC);
            let dev = virtio::net::Net::with_backend(Box::new(backend), mac);
            nets.push((cfg.id.clone(), dev.handle()));
            event_sources.push((made.len(), dev.event_fds()));
            made.push(Box::new(dev));
            Some(passt)
        }
        None => None,
    };
    if config.rng {
        made.push(Box::new(virtio::rng::Rng::new()));
    }
    let balloon = config.balloon.map(|b| {
        let dev = virtio::balloon::Balloon::new(b);
        let handle = dev.handle();
        event_sources.push((made.len(), dev.event_fds()));
        made.push(Box::new(dev));
        handle
    });
    let vsock = match &config.vsock {
        Some(v) => {
            // One fd for the loop: the device's own epoll over its sockets.
            let dev = virtio::vsock::Vsock::new(v)?;
            event_sources.push((made.len(), dev.event_fds()));
            let metrics = dev.metrics.clone();
            made.push(Box::new(dev));
            Some(metrics)
        }
        None => None,
    };

    for share in &config.shares {
        made.push(Box::new(virtio::fs::Fs::new(share)?));
    }
    let msi: Arc<dyn MsiSink> = Arc::new(VmMsi(vm.clone()));
    let bus: Arc<dyn BusOwner> = dm.io.clone();
    let dma = virtio::device::DmaNotify::new(vm.dma_observer());
    let mut root = dm.pci.lock().unwrap_or_else(|p| p.into_inner());
    let mut functions = Vec::new();
    for (i, dev) in made.into_iter().enumerate() {
        let offset = (i as u64)
            .checked_mul(BAR_SIZE)
            .filter(|&o| o + BAR_SIZE <= mem::PCI_MMIO_SIZE)
            .ok_or(VirtioError::NoBarSpace)?;
        let mut f = VirtioPciDevice::new(
            dev,
            guest_mem.clone(),
            msi.clone(),
            mem::PCI_MMIO_START + offset,
        )?;
        f.set_dma_notify(dma.clone());
        let f = Arc::new(Mutex::new(f));
        VirtioPciDevice::attach(&f, Arc::downgrade(&bus));
        let as_pci: Arc<Mutex<dyn PciDevice>> = f.clone();
        root.add_device(as_pci)?;
        functions.push(f);
    }
    drop(root);
    crate::storage_devices::attach(&config.nvme, &config.ide, guest_mem, vm, dm)?;

    let mut sources = Vec::new();
    for (index, fds) in event_sources {
        for (fd, token) in fds {
            sources.push(Source {
                device: functions[index].clone(),
                action: Action::Device { fd, token },
            });
        }
    }
    for f in &functions {
        sources.extend(queue_ioevents(f, vm.as_ref())?);
    }
    let event_loop = if sources.is_empty() {
        None
    } else {
        Some(EventLoop::start(sources)?)
    };
    Ok(VirtioDevices {
        functions,
        drives,
        nets,
        vsock,
        balloon,
        event_loop,
        _user_net: user_net,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::VmControl;
    use devices::{BusDevice, IoBus};
    use hypervisor::{DeviceIo, Hypervisor, Regs, VmExit};
    use std::time::{Duration, Instant};
    use vm_memory::{Bytes, GuestAddress};

    /// The machine's bus, with a record of the MMIO writes that reached it.
    struct Recorder {
        bus: Arc<IoBus>,
        writes: Mutex<Vec<u64>>,
    }
    impl DeviceIo for Recorder {
        fn pio_read(&self, port: u16, data: &mut [u8]) {
            self.bus.pio_read(port, data)
        }
        fn pio_write(&self, port: u16, data: &[u8]) {
            self.bus.pio_write(port, data)
        }
        fn mmio_read(&self, addr: u64, data: &mut [u8]) {
            self.bus.mmio_read(addr, data)
        }
        fn mmio_write(&self, addr: u64, data: &[u8]) {
            self.writes.lock().unwrap().push(addr);
            self.bus.mmio_write(addr, data)
        }
    }

    const DESC: u64 = 0x10000;
    const AVAIL: u64 = 0x11000;
    const USED: u64 = 0x12000;
    const BUF: u64 = 0x20000;
    const CODE: u64 = 0x1000;

    /// The host side plays the driver up to DRIVER_OK with one 64-byte
    /// writable buffer offered on queue 0 (MSI-X left off).
    fn bring_up(f: &Mutex<VirtioPciDevice>, mem: &GuestMemoryMmap) {
        let mut d = f.lock().unwrap();
        let mut w = |off: u64, v: u64, len: usize| d.write(off, &v.to_le_bytes()[..len]);
        w(0x14, 3, 1);
        w(0x08, 1, 4);
        w(0x0c, 1, 4); // VERSION_1
        w(0x14, 0xb, 1);
        w(0x16, 0, 2);
        w(0x18, 16, 2);
        w(0x20, DESC, 8);
        w(0x28, AVAIL, 8);
        w(0x30, USED, 8);
        w(0x1c, 1, 2);
        w(0x14, 0xf, 1);
        assert_eq!(d.status(), 0xf, "device running");
        mem.write_obj(BUF, GuestAddress(DESC)).unwrap();
        mem.write_obj(64u32, GuestAddress(DESC + 8)).unwrap();
        mem.write_obj(2u16, GuestAddress(DESC + 12)).unwrap(); // WRITE
        mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap(); // ring[0]
        mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap(); // idx
    }

    /// 1 MiB of guest RAM, a VM on `hv` and its device manager.
    fn machine(hv: &dyn Hypervisor) -> (GuestMemoryMmap, Arc<dyn Vm>, DeviceManager) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let vm: Arc<dyn Vm> = Arc::from(hv.create_vm().unwrap());
        vm.set_memory(&mem).unwrap();
        let dm = DeviceManager::new(
            vm.clone(),
            VmControl::new(),
            1 << 20,
            Box::new(std::io::sink()),
        )
        .unwrap();
        (mem, vm, dm)
    }

    /// On KVM, a guest write to a queue's notification register is served
    /// by the event loop through the ioeventfd: the used ring fills while
    /// the write never reaches the VMM's bus.
    #[test]
    fn kvm_queue_kick_goes_through_the_ioeventfd() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("KVM TESTS SKIPPED: /dev/kvm is missing");
            return;
        }
        let hv = kvm::KvmHypervisor::new().expect("/dev/kvm opens");
        let (mem, vm, dm) = machine(&hv);
        let config = DeviceConfig {
            rng: true,
            ..Default::default()
        };
        let devs = attach(&config, &mem, &vm, &dm).unwrap();
        let f = devs.functions[0].clone();
        let (bar, _) = f.lock().unwrap().bar_mapping().expect("bar decodes");
        bring_up(&f, &mem);
        let notify = bar + 0x3000;

        // mov dword [notify], 0; hlt (flat 32-bit protected mode, IF=0).
        let mut code = vec![0xc7, 0x05];
        code.extend_from_slice(&(notify as u32).to_le_bytes());
        code.extend_from_slice(&0u32.to_le_bytes());
        code.push(0xf4);
        mem.write_slice(&code, GuestAddress(CODE)).unwrap();
        let io = Arc::new(Recorder {
            bus: dm.io.clone(),
            writes: Mutex::new(Vec::new()),
        });
        let mut vcpu = vm.create_vcpu(0, io.clone()).unwrap();
        let mut sregs = vcpu.special_regs().unwrap();
        sregs.set_flat_protected_mode();
        vcpu.set_special_regs(&sregs).unwrap();
        vcpu.set_regs(&Regs {
            rip: CODE,
            rsp: 0x8000,
            rflags: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(vcpu.run().unwrap(), VmExit::Hlt);

        let deadline = Instant::now() + Duration::from_secs(5);
        let used_idx = || mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap();
        while used_idx() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(used_idx(), 1, "the rng filled the buffer");
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(USED + 8)).unwrap(),
            64,
            "used length"
        );
        assert!(
            !io.writes.lock().unwrap().contains(&notify),
            "the kick never reached the bus"
        );
    }

    /// Drives are found by id after attach and their handles change the
    /// running device (what PATCH /drives/{id} does).
    #[test]
    fn drive_handles_by_id() {
        let (mem, vm, dm) = machine(&soft::SoftHypervisor::new());
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let small = dir.join(format!("vessel-vd-{pid}-small.img"));
        let big = dir.join(format!("vessel-vd-{pid}-big.img"));
        std::fs::write(&small, vec![0u8; 8192]).unwrap();
        std::fs::write(&big, vec![0u8; 16384]).unwrap();
        let config = DeviceConfig {
            disks: vec![BlockConfig {
                id: Some("data".into()),
                ..BlockConfig::new(&small)
            }],
            ..Default::default()
        };
        let devs = attach(&config, &mem, &vm, &dm).unwrap();
        let bw = RateLimiterConfig {
            bandwidth: Some(TokenBucketConfig::per_second(1 << 20)),
            ops: None,
        };
        devs.update_drive_limiter("data", &RateLimiterUpdate::patch(&bw))
            .unwrap();
        assert_eq!(devs.drive("data").unwrap().rate_limiter_config(), bw);
        assert_eq!(devs.swap_drive_image("data", &big).unwrap(), 32);
        assert!(matches!(
            devs.update_drive_limiter("nope", &RateLimiterUpdate::default()),
            Err(VirtioError::NoSuchDevice(_))
        ));
        let missing = dir.join(format!("vessel-vd-{pid}-missing.img"));
        assert!(devs.swap_drive_image("data", &missing).is_err());
        assert_eq!(devs.drive("data").unwrap().sectors(), 32, "kept");
        let _ = std::fs::remove_file(small);
        let _ = std::fs::remove_file(big);
    }
}
