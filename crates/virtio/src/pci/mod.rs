//! The virtio 1.x PCI transport ("modern" only, non-transitional device
//! IDs 0x1040 + type): a PCI function whose capability list points the
//! driver at four windows in one 64-bit memory BAR (common configuration,
//! ISR status, device configuration, notifications), plus MSI-X with one
//! vector per queue and one for configuration changes. There is no INTx:
//! the machine has no legacy interrupt routing for PCI.
//!
//! Queue kicks are MMIO writes to the notification window, served inline
//! on the vCPU thread that made them (see `notify` in [`VirtioPciDevice`]),
//! or, on engines that can signal an eventfd for such a write without
//! leaving the guest (KVM's ioeventfd), handed to the VMM's event loop,
//! which calls [`VirtioPciDevice::kick_queue`]. Events from outside the
//! guest reach the device through [`VirtioPciDevice::handle_event`].

mod common;

use crate::device::{Activation, DmaNotify, Interrupt, VirtioDevice};
use crate::queue::QueueError;
use crate::{features, status};
use common::CommonConfig;
use devices::pci::bar::{BarMapping, BusOwner};
use devices::pci::config::{PciConfig, PciConfigError, PciIds};
use devices::pci::msix::{self, MsiSink, Msix};
use devices::{BusDevice, PciDevice};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type.
const DEVICE_ID_BASE: u16 = 0x1040;
/// MSI-X "no vector".
pub const NO_VECTOR: u16 = 0xffff;

/// Layout of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
const COMMON_OFFSET: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_CFG_OFFSET: u64 = 0x2000;
const DEVICE_CFG_LEN: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
const NOTIFY_LEN: u64 = 0x1000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x6000;

/// Virtio PCI capability types.
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_VENDOR: u8 = 0x09;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot build the configuration space")]
    Config(#[from] PciConfigError),
    #[error("device declares {0} queues; 1..=1024 are supported")]
    QueueCount(usize),
    #[error("queue size {0} is not a power of two up to 32768")]
    QueueSize(u16),
}

/// Which MSI-X vector each notification uses (driver-programmed).
struct Vectors {
    config: u16,
    queues: Vec<u16>,
}

/// The transport's side of [`Interrupt`]: ISR bits plus MSI-X.
struct PciInterrupt {
    msix: Arc<Mutex<Msix>>,
    vectors: Arc<Mutex<Vectors>>,
    isr: Arc<AtomicU8>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Interrupt for PciInterrupt {
    fn signal_used_queue(&self, queue: u16) {
        self.isr.fetch_or(1, Ordering::SeqCst);
        let v = lock(&self.vectors)
            .queues
            .get(usize::from(queue))
            .copied()
            .unwrap_or(NO_VECTOR);
        if v != NO_VECTOR {
            lock(&self.msix).trigger(v);
        }
    }

    fn signal_config_change(&self) {
        self.isr.fetch_or(2, Ordering::SeqCst);
        let v = lock(&self.vectors).config;
        if v != NO_VECTOR {
            lock(&self.msix).trigger(v);
        }
    }
}

/// A virtio device on the PCI bus.
pub struct VirtioPciDevice {
    config: PciConfig,
    msix_cap: usize,
    msix: Arc<Mutex<Msix>>,
    vectors: Arc<Mutex<Vectors>>,
    isr: Arc<AtomicU8>,
    interrupt: Arc<PciInterrupt>,
    bar: Option<BarMapping>,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    dma: DmaNotify,
    common: CommonConfig,
    queues: Vec<Queue>,
    active: bool,
    /// Set with NEEDS_RESET: the device is not called again until reset.
    broken: bool,
}

/// Class code per device type (base, sub, prog-if).
fn class_of(device_type: u32) -> u32 {
    match device_type {
        crate::device_type::NET => 0x02_00_00,
        crate::device_type::BLOCK => 0x01_80_00,
        _ => 0xff_00_00,
    }
}

/// The body of a virtio PCI capability after the id/next bytes.
fn virtio_cap(cfg_type: u8, offset: u64, len: u64, extra: Option<u32>) -> Vec<u8> {
    let cap_len: u8 = if extra.is_some() { 20 } else { 16 };
    let mut b = vec![cap_len, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(len as u32).to_le_bytes());
    if let Some(x) = extra {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

impl VirtioPciDevice {
    /// Where the device reports its writes into guest RAM from its next
    /// activation on (see [`hypervisor::Vm::dma_observer`]).
    pub fn set_dma_notify(&mut self, dma: DmaNotify) {
        self.dma = dma;
    }

    /// Wraps `device` as a PCI function whose BAR 0 sits at `bar_addr`
    /// (aligned to [`BAR_SIZE`]), decoding from the start as firmware
    /// would have left it.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiSink>,
        bar_addr: u64,
    ) -> Result<Self, TransportError> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() || sizes.len() > 1024 {
            return Err(TransportError::QueueCount(sizes.len()));
        }
        let mut queues = Vec::with_capacity(sizes.len());
        for &s in &sizes {
            queues.push(Queue::new(s).map_err(|_| TransportError::QueueSize(s))?);
        }
        let device_type = device.device_type();
        let mut config = PciConfig::new(PciIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: DEVICE_ID_BASE + device_type as u16,
            class: class_of(device_type),
            revision: 1,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x40,
        });
        config.add_mem_bar64(0, bar_addr, BAR_SIZE)?;
        config.write(1, 0, &[devices::pci::config::COMMAND_MEMORY as u8]);
        // Queue vectors plus the config vector; fits the table window.
        let msix = Msix::new(sizes.len() as u16 + 1, msi);
        let mut body = msix.control().to_le_bytes().to_vec();
        body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
        body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        let msix_cap = config.add_capability(msix::CAPABILITY_ID, &body)?;
        config.set_write_mask(msix_cap + 2, &[0x00, 0xc0]);
        config.add_capability(
            CAP_VENDOR,
            &virtio_cap(CAP_COMMON, COMMON_OFFSET, COMMON_LEN, None),
        )?;
        config.add_capability(CAP_VENDOR, &virtio_cap(CAP_ISR, ISR_OFFSET, 1, None))?;
        config.add_capability(
            CAP_VENDOR,
            &virtio_cap(CAP_DEVICE, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN, None),
        )?;
        config.add_capability(
            CAP_VENDOR,
            &virtio_cap(
                CAP_NOTIFY,
                NOTIFY_OFFSET,
                NOTIFY_LEN,
                Some(NOTIFY_MULTIPLIER),
            ),
        )?;
        let msix = Arc::new(Mutex::new(msix));
        let vectors = Arc::new(Mutex::new(Vectors {
            config: NO_VECTOR,
            queues: vec![NO_VECTOR; sizes.len()],
        }));
        let isr = Arc::new(AtomicU8::new(0));
        let interrupt = Arc::new(PciInterrupt {
            msix: msix.clone(),
            vectors: vectors.clone(),
            isr: isr.clone(),
        });
        Ok(VirtioPciDevice {
            config,
            msix_cap,
            msix,
            vectors,
            isr,
            interrupt,
            bar: None,
            device,
            mem,
            dma: DmaNotify::default(),
            common: CommonConfig::default(),
            queues,
            active: false,
            broken: false,
        })
    }

    /// Maps BAR 0 on `bus` and keeps it where the guest moves it.
    pub fn attach(this: &Arc<Mutex<Self>>, bus: Weak<dyn BusOwner>) {
        let weak: Weak<Mutex<dyn BusDevice>> =
            Arc::downgrade(&(this.clone() as Arc<Mutex<dyn BusDevice>>));
        let mut dev = lock(this);
        let mut bar = BarMapping::new(bus, weak);
        bar.update(dev.config.bar_mapping(0));
        dev.bar = Some(bar);
    }

    /// Where BAR 0 decodes now.
    pub fn bar_mapping(&self) -> Option<(u64, u64)> {
        self.bar.as_ref().and_then(BarMapping::mapped)
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.common.status
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The guest-physical address of each queue's notification register,
    /// where BAR 0 decodes now (none when it does not decode): what the VMM
    /// registers with an engine that can turn those writes into eventfd
    /// signals ([`hypervisor::Vm::register_ioevent`]).
    pub fn notify_addresses(&self) -> Vec<(u16, u64)> {
        let Some((base, _)) = self.bar_mapping() else {
            return Vec::new();
        };
        (0..self.queues.len())
            .filter_map(|q| {
                let q = u16::try_from(q).ok()?;
                let at = NOTIFY_OFFSET + u64::from(q) * u64::from(NOTIFY_MULTIPLIER);
                Some((q, base.checked_add(at)?))
            })
            .collect()
    }

    /// The driver kicked `queue` through a path other than an MMIO write
    /// reaching [`BusDevice::write`] (an ioeventfd): same handling.
    pub fn kick_queue(&mut self, queue: u16) {
        self.notify(u64::from(queue) * u64::from(NOTIFY_MULTIPLIER));
    }

    /// Lets the device serve an event from outside the guest.
    pub fn handle_event(&mut self, token: u32) {
        if self.active && !self.broken {
            let r = self.device.handle_event(token);
            self.check(r);
        }
    }

    /// Marks the device NEEDS_RESET when the driver broke the protocol.
    fn check(&mut self, r: Result<(), QueueError>) {
        if let Err(e) = r {
            log::warn!(
                "virtio device type {} needs reset: {e}",
                self.device.device_type()
            );
            self.needs_reset();
        }
    }

    fn needs_reset(&mut self) {
        self.broken = true;
        self.common.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt.signal_config_change();
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.broken = false;
        self.common = CommonConfig::default();
        for q in &mut self.queues {
            q.reset();
        }
        let mut v = lock(&self.vectors);
        v.config = NO_VECTOR;
        v.queues.fill(NO_VECTOR);
        self.isr.store(0, Ordering::SeqCst);
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.common.status;
        let mut new = value | (old & status::DEVICE_NEEDS_RESET);
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let offered = self.device.features();
            let wanted = self.common.driver_features;
            if wanted & !offered != 0 || wanted & features::VERSION_1 == 0 {
                log::warn!(
                    "driver features {wanted:#x} not a subset of {offered:#x} with VERSION_1"
                );
                new &= !status::FEATURES_OK;
            } else {
                let event_idx = wanted & features::RING_EVENT_IDX != 0;
                for q in &mut self.queues {
                    q.set_event_idx(event_idx);
                }
            }
        }
        self.common.status = new;
        if new & status::DRIVER_OK != 0 && !self.active && !self.broken {
            if new & status::FEATURES_OK == 0 {
                log::warn!("driver set DRIVER_OK without FEATURES_OK");
                self.needs_reset();
                return;
            }
            self.activate();
        }
    }

    fn activate(&mut self) {
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                log::warn!("queue {i} lies outside guest memory");
                self.needs_reset();
                return;
            }
        }
        // The transport keeps its copy for reads of the queue registers.
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            match Queue::try_from(q.state()) {
                Ok(q) => queues.push(q),
                Err(_) => {
                    log::warn!("queue {i} cannot be copied");
                    self.needs_reset();
                    return;
                }
            }
        }
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            features: self.common.driver_features,
            interrupt: self.interrupt.clone(),
            dma: self.dma.clone(),
        };
        match self.device.activate(activation) {
            Ok(()) => self.active = true,
            Err(e) => {
                log::warn!("cannot activate virtio device: {e}");
                self.needs_reset();
            }
        }
    }

    fn notify(&mut self, offset: u64) {
        let q = offset / u64::from(NOTIFY_MULTIPLIER);
        if !self.active || self.broken {
            return;
        }
        let Ok(q) = u16::try_from(q) else { return };
        if usize::from(q) >= self.queues.len() {
            return;
        }
        let r = self.device.queue_notify(q);
        self.check(r);
    }

    fn after_config_write(&mut self) {
        let control = self.config.word(self.msix_cap + 2);
        lock(&self.msix).set_control(control);
        let want = self.config.bar_mapping(0);
        if let Some(bar) = &mut self.bar {
            bar.update(want);
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: u8, data: &[u8]) {
        self.config.write(reg, offset, data);
        self.after_config_write();
    }
}

impl BusDevice for VirtioPciDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => self.common_read(o - COMMON_OFFSET, data),
            ISR_OFFSET => {
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    // Reading the ISR clears it.
                    *b = self.isr.swap(0, Ordering::SeqCst);
                }
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                lock(&self.msix).table_read(o - MSIX_TABLE_OFFSET, data)
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                lock(&self.msix).pba_read(o - MSIX_PBA_OFFSET, data)
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => self.common_write(o - COMMON_OFFSET, data),
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o)
                && !self.broken =>
            {
                self.device.write_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + NOTIFY_LEN).contains(&o) => {
                self.notify(o - NOTIFY_OFFSET)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                lock(&self.msix).table_write(o - MSIX_TABLE_OFFSET, data)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
