//! The VM's emulated disk controllers (`--disk PATH,if=nvme`): each disk
//! becomes an NVMe controller on PCI bus 0 with its BAR in the middle of
//! the PCI MMIO window (virtio functions fill it from the bottom), over
//! the same image backend as virtio-blk.

use crate::device_manager::DeviceManager;
use arch::layout::mem;
use devices::pci::bar::BusOwner;
use devices::pci::msix::{MsiSink, VmMsi};
use devices::{PciDevice, PciError};
use hypervisor::Vm;
use std::sync::{Arc, Mutex};
use storage::nvme::{Nvme, BAR_SIZE};
use virtio::block::{BlockConfig, BlockError, Image};
use vm_memory::GuestMemoryMmap;

/// Where the emulated controllers' BARs start.
const BAR_BASE: u64 = mem::PCI_MMIO_START + mem::PCI_MMIO_SIZE / 2;

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
}

/// Puts an NVMe controller on the machine for each of `disks`.
pub fn attach(
    disks: &[BlockConfig],
    guest_mem: &GuestMemoryMmap,
    vm: &Arc<dyn Vm>,
    dm: &DeviceManager,
) -> Result<Vec<Arc<Mutex<Nvme>>>, StorageError> {
    let msi: Arc<dyn MsiSink> = Arc::new(VmMsi(vm.clone()));
    let bus: Arc<dyn BusOwner> = dm.io.clone();
    let dma = virtio::device::DmaNotify::new(vm.dma_observer());
    let mut made = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
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
    Ok(made)
}
