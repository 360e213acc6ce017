//! The VM's emulated disk controllers: each `--disk PATH,if=nvme` becomes
//! an NVMe controller on PCI bus 0 with its BAR in the middle of the PCI
//! MMIO window (virtio functions fill it from the bottom); one
//! `--disk PATH,if=ide` becomes the primary master of a PIIX3 IDE
//! function (legacy ports 0x1f0/0x3f6, IRQ 14, bus master in BAR 4 a MiB
//! above the NVMe BARs). All over the same image backend as virtio-blk.

use crate::device_manager::DeviceManager;
use arch::layout::mem;
use devices::pci::bar::BusOwner;
use devices::pci::msix::{MsiSink, VmMsi};
use devices::IrqLine;
use devices::{PciDevice, PciError};
use hypervisor::Vm;
use std::sync::{Arc, Mutex};
use storage::ide::{CommandPorts, ControlPort, Ide};
use storage::nvme::{Nvme, BAR_SIZE};
use virtio::block::{BlockConfig, BlockError, Image};
use vm_memory::GuestMemoryMmap;

/// Where the emulated controllers' BARs start.
const BAR_BASE: u64 = mem::PCI_MMIO_START + mem::PCI_MMIO_SIZE / 2;
/// The IDE function's BAR 4.
const IDE_BAR: u64 = BAR_BASE - 0x10_0000;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open disk")]
    Image(#[from] BlockError),
    #[error("cannot build the nvme pci function")]
    Config(#[from] devices::pci::config::PciConfigError),
    #[error("no room for another device on pci bus 0")]
    Pci(#[from] PciError),
    #[error("too many emulated disks for the pci mmio window")]
    NoBarSpace,
    #[error("only one ide disk is supported (the primary master)")]
    TooManyIde,
    #[error("cannot map the ide ports")]
    Ports(#[from] devices::BusError),
}

/// A GSI of the VM's interrupt controllers.
struct GsiLine {
    vm: Arc<dyn Vm>,
    gsi: u32,
}

impl IrqLine for GsiLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            log::warn!("cannot set GSI {}: {e}", self.gsi);
        }
    }
}

/// Puts an NVMe controller on the machine for each of `nvme`, and an IDE
/// controller for `ide` (at most one disk).
pub fn attach(
    nvme: &[BlockConfig],
    ide: &[BlockConfig],
    guest_mem: &GuestMemoryMmap,
    vm: &Arc<dyn Vm>,
    dm: &DeviceManager,
) -> Result<Vec<Arc<Mutex<Nvme>>>, StorageError> {
    let msi: Arc<dyn MsiSink> = Arc::new(VmMsi(vm.clone()));
    let bus: Arc<dyn BusOwner> = dm.io.clone();
    let dma = virtio::device::DmaNotify::new(vm.dma_observer());
    let mut made = Vec::new();
    if ide.len() > 1 {
        return Err(StorageError::TooManyIde);
    }
    for (i, disk) in nvme.iter().enumerate() {
        let offset = (i as u64)
            .checked_mul(BAR_SIZE)
            .filter(|&o| BAR_BASE + o + BAR_SIZE <= mem::PCI_MMIO_START + mem::PCI_MMIO_SIZE)
            .ok_or(StorageError::NoBarSpace)?;
        let image = Image::open(disk)?;
        let serial = disk
            .id
            .clone()
            .unwrap_or_else(|| format!("vessel-nvme-{i}"));
        let mut dev = Nvme::new(
            image,
            guest_mem.clone(),
            msi.clone(),
            BAR_BASE + offset,
            &serial,
        )?;
        dev.set_dma_notify(dma.clone());
        let dev = Arc::new(Mutex::new(dev));
        Nvme::attach(&dev, Arc::downgrade(&bus));
        let as_pci: Arc<Mutex<dyn PciDevice>> = dev.clone();
        dm.pci
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_device(as_pci)?;
        made.push(dev);
    }
    if let Some(disk) = ide.first() {
        attach_ide(disk, guest_mem, vm, dm, &bus, &dma)?;
    }
    Ok(made)
}

fn attach_ide(
    disk: &BlockConfig,
    guest_mem: &GuestMemoryMmap,
    vm: &Arc<dyn Vm>,
    dm: &DeviceManager,
    bus: &Arc<dyn BusOwner>,
    dma: &virtio::device::DmaNotify,
) -> Result<(), StorageError> {
    let image = Image::open(disk)?;
    let irq = Arc::new(GsiLine {
        vm: vm.clone(),
        gsi: storage::ide::IRQ,
    });
    let serial = disk.id.clone().unwrap_or_else(|| "vessel-ide-0".into());
    let mut dev = Ide::new(image, guest_mem.clone(), irq, IDE_BAR, &serial)?;
    dev.set_dma_notify(dma.clone());
    let dev = Arc::new(Mutex::new(dev));
    Ide::attach(&dev, Arc::downgrade(bus));
    dm.io.pio.insert(
        u64::from(storage::ide::CMD_PORT),
        8,
        Arc::new(Mutex::new(CommandPorts(dev.clone()))),
    )?;
    dm.io.pio.insert(
        u64::from(storage::ide::CTL_PORT),
        1,
        Arc::new(Mutex::new(ControlPort(dev.clone()))),
    )?;
    let as_pci: Arc<Mutex<dyn PciDevice>> = dev;
    dm.pci
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add_device(as_pci)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::VmControl;
    use hypervisor::{DeviceIo, Hypervisor};
    use vm_memory::GuestAddress;

    #[test]
    fn nvme_and_ide_on_the_machine() {
        let hv = soft::SoftHypervisor::new();
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
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let a = dir.join(format!("vessel-sd-{pid}-a.img"));
        let b = dir.join(format!("vessel-sd-{pid}-b.img"));
        std::fs::write(&a, vec![0u8; 8192]).unwrap();
        std::fs::write(&b, vec![0u8; 8192]).unwrap();
        let two = [BlockConfig::new(&a), BlockConfig::new(&b)];
        assert!(matches!(
            attach(&[], &two, &mem, &vm, &dm),
            Err(StorageError::TooManyIde)
        ));
        let made = attach(&two[..1], &two[1..], &mem, &vm, &dm).unwrap();
        assert_eq!(made.len(), 1);
        let root = dm.pci.lock().unwrap();
        // Slot 1: NVMe (1b36:0010), slot 2: PIIX3 IDE (8086:7010).
        assert_eq!(root.config_read(1, 0), 0x0010_1b36);
        assert_eq!(root.config_read(2, 0), 0x7010_8086);
        drop(root);
        let mut status = [0u8];
        dm.io.pio_read(storage::ide::CMD_PORT + 7, &mut status);
        assert_eq!(status[0], storage::ide::DRDY | storage::ide::DSC);
        let (bar, _) = made[0].lock().unwrap().bar_mapping().unwrap();
        let mut cap = [0u8; 4];
        dm.io.mmio_read(bar, &mut cap);
        assert_eq!(u32::from_le_bytes(cap), storage::nvme::CAP as u32);
        let _ = std::fs::remove_file(a);
        let _ = std::fs::remove_file(b);
    }
}
