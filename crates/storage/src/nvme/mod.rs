//! An NVMe 1.4 controller as a PCI function (class 01/08/02, Linux's
//! `nvme` driver binds it by class): BAR 0 holds the controller registers
//! and doorbells ([`controller`]), the MSI-X table and pending bits; one
//! namespace of 512-byte blocks over a disk image. No INTx: the machine
//! has no legacy PCI interrupt routing, so the driver uses MSI-X.

mod command;
mod controller;
mod identify;
mod prp;
#[cfg(test)]
mod tests;

pub use command::{status, Command};
pub use controller::{Controller, CAP, MAX_IO_QUEUES};
pub use prp::{segments as prp_segments, PrpError, PAGE};

use devices::pci::bar::{BarMapping, BusOwner};
use devices::pci::config::{PciConfig, PciConfigError, PciIds, COMMAND_MEMORY};
use devices::pci::msix::{self, MsiSink, Msix};
use devices::{BusDevice, PciDevice};
use std::sync::{Arc, Mutex, Weak};
use virtio::block::Image;
use virtio::device::DmaNotify;
use vm_memory::GuestMemoryMmap;

/// Size of BAR 0: registers and doorbells, MSI-X table, PBA.
pub const BAR_SIZE: u64 = 0x4000;
const MSIX_TABLE: u64 = 0x2000;
const MSIX_PBA: u64 = 0x3000;
/// PCI device ID (with [`identify::VENDOR`]).
pub const DEVICE_ID: u16 = 0x0010;
/// Mass storage, non-volatile memory, NVM Express.
pub const CLASS: u32 = 0x01_08_02;

/// The PCI function.
pub struct Nvme {
    config: PciConfig,
    msix_cap: usize,
    bar: Option<BarMapping>,
    ctrl: Controller,
}

impl Nvme {
    /// A controller over `image` whose BAR 0 decodes at `bar_addr`
    /// (aligned to [`BAR_SIZE`]); `serial` is its serial number (20 bytes
    /// are shown).
    pub fn new(
        image: Image,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiSink>,
        bar_addr: u64,
        serial: &str,
    ) -> Result<Self, PciConfigError> {
        let mut config = PciConfig::new(PciIds {
            vendor: identify::VENDOR,
            device: DEVICE_ID,
            class: CLASS,
            revision: 2,
            subsystem_vendor: identify::VENDOR,
            subsystem: 0x1100,
        });
        config.add_mem_bar64(0, bar_addr, BAR_SIZE)?;
        config.write(1, 0, &[COMMAND_MEMORY as u8]);
        // The admin queue's vector and one per I/O queue.
        let msix = Msix::new(MAX_IO_QUEUES + 1, msi);
        let mut body = msix.control().to_le_bytes().to_vec();
        body.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes());
        body.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        let msix_cap = config.add_capability(msix::CAPABILITY_ID, &body)?;
        config.set_write_mask(msix_cap + 2, &[0x00, 0xc0]);
        Ok(Nvme {
            config,
            msix_cap,
            bar: None,
            ctrl: Controller::new(mem, image, msix, serial.to_string()),
        })
    }

    /// Where the controller reports its writes into guest RAM.
    pub fn set_dma_notify(&mut self, dma: DmaNotify) {
        self.ctrl.set_dma_notify(dma);
    }

    /// Maps BAR 0 on `bus` and keeps it where the guest moves it.
    pub fn attach(this: &Arc<Mutex<Self>>, bus: Weak<dyn BusOwner>) {
        let weak: Weak<Mutex<dyn BusDevice>> =
            Arc::downgrade(&(this.clone() as Arc<Mutex<dyn BusDevice>>));
        let mut dev = this.lock().unwrap_or_else(|p| p.into_inner());
        let mut bar = BarMapping::new(bus, weak);
        bar.update(dev.config.bar_mapping(0));
        dev.bar = Some(bar);
    }

    /// Where BAR 0 decodes now.
    pub fn bar_mapping(&self) -> Option<(u64, u64)> {
        self.bar.as_ref().and_then(BarMapping::mapped)
    }

    pub fn controller(&mut self) -> &mut Controller {
        &mut self.ctrl
    }
}

impl PciDevice for Nvme {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: u8, data: &[u8]) {
        self.config.write(reg, offset, data);
        let control = self.config.word(self.msix_cap + 2);
        self.ctrl.msix().set_control(control);
        let want = self.config.bar_mapping(0);
        if let Some(bar) = &mut self.bar {
            bar.update(want);
        }
    }
}

impl BusDevice for Nvme {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < MSIX_TABLE => self.ctrl.read(o, data),
            o if o < MSIX_PBA => self.ctrl.msix().table_read(o - MSIX_TABLE, data),
            o if o < BAR_SIZE => self.ctrl.msix().pba_read(o - MSIX_PBA, data),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < MSIX_TABLE => self.ctrl.write(o, data),
            o if o < MSIX_PBA => self.ctrl.msix().table_write(o - MSIX_TABLE, data),
            _ => {}
        }
    }
}
