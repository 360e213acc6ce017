//! A PIIX3 IDE function (PCI 8086:7010, Linux's `ata_piix`) in legacy
//! (compatibility) mode: the primary channel at ports 0x1f0-0x1f7 and
//! 0x3f6 on IRQ 14 with one master drive ([`ata`]), and bus-master IDE
//! ([`bmdma`]) in BAR 4 for READ/WRITE DMA. The secondary channel is off
//! (its decode-enable bit in IDETIM is clear), so drivers do not probe it.

mod ata;
mod bmdma;
mod identify;
#[cfg(test)]
mod tests;

pub use ata::{Channel, BSY, DRDY, DRQ, DSC, ERR};

use bmdma::BusMaster;
use devices::pci::bar::{BarMapping, BusOwner};
use devices::pci::config::{PciConfig, PciConfigError, PciIds, COMMAND_IO, COMMAND_MEMORY};
use devices::{BusDevice, IrqLine, PciDevice};
use std::sync::{Arc, Mutex, Weak};
use virtio::block::Image;
use virtio::device::DmaNotify;
use vm_memory::GuestMemoryMmap;

/// Legacy primary channel.
pub const CMD_PORT: u16 = 0x1f0;
pub const CTL_PORT: u16 = 0x3f6;
pub const IRQ: u32 = 14;
/// BAR 4 (bus master): a primary and a secondary block of 8 bytes.
pub const BAR_SIZE: u64 = 16;
const BAR_INDEX: usize = 4;
pub const VENDOR: u16 = 0x8086;
pub const DEVICE: u16 = 0x7010;
/// Mass storage, IDE, compatibility mode on both channels, bus master.
pub const CLASS: u32 = 0x01_01_80;
/// IDETIM of the primary channel (0x40-0x41) and of the secondary.
const IDETIM_PRIMARY: usize = 0x40;

pub struct Ide {
    config: PciConfig,
    bar: Option<BarMapping>,
    pub(crate) channel: Channel,
    bm: BusMaster,
    mem: GuestMemoryMmap,
    dma: DmaNotify,
    irq: Arc<dyn IrqLine>,
    line: bool,
}

impl Ide {
    /// The controller with `image` as the primary master; BAR 4 decodes at
    /// `bar_addr` (16-byte aligned).
    pub fn new(
        image: Image,
        mem: GuestMemoryMmap,
        irq: Arc<dyn IrqLine>,
        bar_addr: u64,
        serial: &str,
    ) -> Result<Self, PciConfigError> {
        let mut config = PciConfig::new(PciIds {
            vendor: VENDOR,
            device: DEVICE,
            class: CLASS,
            revision: 0,
            subsystem_vendor: 0,
            subsystem: 0,
        });
        config.add_mem_bar64(BAR_INDEX, bar_addr, BAR_SIZE)?;
        config.write(1, 0, &[(COMMAND_IO | COMMAND_MEMORY) as u8]);
        // IDETIM: timings are the driver's to program; bit 15 (decode
        // enable) is set for the primary channel only.
        config.set_write_mask(IDETIM_PRIMARY, &[0xff, 0xff, 0xff, 0xff]);
        config.write(IDETIM_PRIMARY / 4, 1, &[0x80]);
        config.set_write_mask(IDETIM_PRIMARY, &[0xff, 0x7f, 0xff, 0x7f]);
        Ok(Ide {
            config,
            bar: None,
            channel: Channel::new(image, serial),
            bm: BusMaster::default(),
            mem,
            dma: DmaNotify::default(),
            irq,
            line: false,
        })
    }

    pub fn set_dma_notify(&mut self, dma: DmaNotify) {
        self.dma = dma;
    }

    /// Maps BAR 4 on `bus` and keeps it where the guest moves it.
    pub fn attach(this: &Arc<Mutex<Self>>, bus: Weak<dyn BusOwner>) {
        let weak: Weak<Mutex<dyn BusDevice>> =
            Arc::downgrade(&(this.clone() as Arc<Mutex<dyn BusDevice>>));
        let mut dev = this.lock().unwrap_or_else(|p| p.into_inner());
        let mut bar = BarMapping::new(bus, weak);
        bar.update(dev.config.bar_mapping(BAR_INDEX));
        dev.bar = Some(bar);
    }

    /// Runs a DMA command when both it and the bus master are ready, then
    /// brings the IRQ line to the channel's state.
    fn settle(&mut self) {
        if let Some(req) = self.channel.dma {
            if let Some(r) = self
                .bm
                .run(&req, &self.mem, &mut self.channel.image, &self.dma)
            {
                self.channel.dma_done(r);
            }
        }
        let irq = self.channel.irq();
        if irq {
            self.bm.interrupt();
        }
        if irq != self.line {
            self.line = irq;
            self.irq.set_level(irq);
        }
    }

    /// A read of the command block (offset 0-7 from 0x1f0).
    pub fn cmd_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 => self.channel.read_data(data),
            1..=7 => {
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = self.channel.read_reg(offset as u8);
                }
            }
            _ => data.fill(0xff),
        }
        self.settle();
    }

    pub fn cmd_write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.first()) {
            (0, _) => self.channel.write_data(data),
            (1..=7, Some(&v)) => self.channel.write_reg(offset as u8, v),
            _ => {}
        }
        self.settle();
    }

    pub fn ctl_read(&mut self, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.channel.alt_status();
        }
    }

    pub fn ctl_write(&mut self, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.channel.write_control(v);
        }
        self.settle();
    }
}

impl PciDevice for Ide {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: u8, data: &[u8]) {
        self.config.write(reg, offset, data);
        let want = self.config.bar_mapping(BAR_INDEX);
        if let Some(bar) = &mut self.bar {
            bar.update(want);
        }
    }
}

/// BAR 4: the bus-master registers.
impl BusDevice for Ide {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.bm.read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.bm.write(offset, data);
        self.settle();
    }
}

/// The legacy command block ports of the primary channel.
pub struct CommandPorts(pub Arc<Mutex<Ide>>);
/// The legacy control port (alternate status / device control).
pub struct ControlPort(pub Arc<Mutex<Ide>>);

fn lock(i: &Mutex<Ide>) -> std::sync::MutexGuard<'_, Ide> {
    i.lock().unwrap_or_else(|p| p.into_inner())
}

impl BusDevice for CommandPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).cmd_read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.0).cmd_write(offset, data);
    }
}

impl BusDevice for ControlPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        lock(&self.0).ctl_read(data);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        lock(&self.0).ctl_write(data);
    }
}
