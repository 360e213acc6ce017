//! One KVM virtual machine: its memory slots, the in-kernel interrupt
//! controllers (PIC, IOAPIC, local APICs) and PIT, interrupt injection, and
//! vCPU creation (including the local APIC wiring a BIOS would do).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use hypervisor::{DeviceIo, EventFd, Vcpu, Vm};
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_irqchip, kvm_msi, kvm_pit_config,
    kvm_userspace_memory_region, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::vcpu::KvmVcpu;
use crate::{kick, os_error, Error};

/// Where KVM puts the three pages of the real-mode TSS it needs on Intel
/// (inside the 32-bit MMIO hole, clear of the IOAPIC and local APIC).
pub const TSS_ADDRESS: usize = 0xfffb_d000;
/// Where KVM puts its one-page identity map for unpaged real mode on Intel.
pub const IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// The interrupt routing of a PC whose MADT overrides ISA IRQ 0 to GSI 2:
/// KVM's line 0 (where its in-kernel PIT fires) reaches PIC pin 0 and IOAPIC
/// pin 2; every other line n < 16 reaches PIC pin n (pin 2 is the cascade)
/// and IOAPIC pin n; lines 16-23 reach only the IOAPIC. KVM's default table
/// wires line 0 to IOAPIC pin 0, where an ACPI guest never looks for the
/// timer.
fn pc_irq_routing() -> hypervisor::Result<KvmIrqRouting> {
    let route = |gsi: u32, irqchip: u32, pin: u32| {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        e.u.irqchip = kvm_irq_routing_irqchip { irqchip, pin };
        e
    };
    let mut entries = Vec::with_capacity(40);
    for gsi in 0..16u32 {
        if gsi == 2 {
            continue;
        }
        let (chip, pin) = if gsi < 8 {
            (KVM_IRQCHIP_PIC_MASTER, gsi)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
        };
        entries.push(route(gsi, chip, pin));
    }
    for gsi in 0..24u32 {
        match gsi {
            0 => entries.push(route(0, KVM_IRQCHIP_IOAPIC, 2)),
            2 => {}
            _ => entries.push(route(gsi, KVM_IRQCHIP_IOAPIC, gsi)),
        }
    }
    KvmIrqRouting::from_entries(&entries).map_err(|e| Error::Routing(format!("{e:?}")).into())
}

/// A KVM VM (`KVM_CREATE_VM`).
#[derive(Debug)]
pub struct KvmVm {
    fd: VmFd,
    /// The guest memory, kept so vCPUs can read instruction bytes and so
    /// the mappings KVM's slots point into stay alive as long as the VM.
    memory: OnceLock<GuestMemoryMmap>,
    irqchip: AtomicBool,
}

impl KvmVm {
    /// Creates the VM and places the TSS and identity-map pages.
    pub fn new(kvm: &Kvm) -> hypervisor::Result<Self> {
        let fd = kvm.create_vm().map_err(|e| os_error("KVM_CREATE_VM", e))?;
        fd.set_tss_address(TSS_ADDRESS)
            .map_err(|e| os_error("KVM_SET_TSS_ADDR", e))?;
        fd.set_identity_map_address(IDENTITY_MAP_ADDRESS)
            .map_err(|e| os_error("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        Ok(KvmVm {
            fd,
            memory: OnceLock::new(),
            irqchip: AtomicBool::new(false),
        })
    }

    /// The underlying `kvm-ioctls` VM handle (for ioeventfd/irqfd wiring).
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Creates vCPU `index` with its concrete type (the trait method boxes
    /// this).
    pub fn create_kvm_vcpu(
        &self,
        index: usize,
        io: Arc<dyn DeviceIo>,
    ) -> hypervisor::Result<KvmVcpu> {
        kick::install_handler()?;
        let id = u64::try_from(index).map_err(|_| hypervisor::Error::Os {
            op: "KVM_CREATE_VCPU",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        let fd = self
            .fd
            .create_vcpu(id)
            .map_err(|e| os_error("KVM_CREATE_VCPU", e))?;
        let vcpu = KvmVcpu::new(index, fd, io, self.memory.get().cloned());
        if self.irqchip.load(Ordering::SeqCst) {
            vcpu.wire_lapic_lints()?;
        }
        Ok(vcpu)
    }
}

impl Vm for KvmVm {
    fn set_memory(&self, memory: &GuestMemoryMmap) -> hypervisor::Result<()> {
        if self.memory.set(memory.clone()).is_err() {
            return Err(Error::MemoryAlreadySet.into());
        }
        for (slot, region) in memory.iter().enumerate() {
            let start = region.start_addr().0;
            let slot = u32::try_from(slot).map_err(|_| Error::BadRegion { start })?;
            let host = region.as_ptr() as u64;
            let size = region.len();
            if size == 0 || !size.is_multiple_of(4096) || !host.is_multiple_of(4096) {
                return Err(Error::BadRegion { start }.into());
            }
            let mr = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: start,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: the host range is the whole mapping of `region`, which
            // stays mapped for the VM's lifetime because `self.memory` holds
            // a clone of the GuestMemoryMmap (its regions are reference
            // counted). Slots are distinct and regions do not overlap.
            unsafe { self.fd.set_user_memory_region(mr) }
                .map_err(|e| os_error("KVM_SET_USER_MEMORY_REGION", e))?;
        }
        Ok(())
    }

    fn create_irq_controllers(&self) -> hypervisor::Result<()> {
        if self.irqchip.load(Ordering::SeqCst) {
            return Err(Error::IrqChipAlreadyCreated.into());
        }
        self.fd
            .create_irq_chip()
            .map_err(|e| os_error("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| os_error("KVM_CREATE_PIT2", e))?;
        self.fd
            .set_gsi_routing(&pc_irq_routing()?)
            .map_err(|e| os_error("KVM_SET_GSI_ROUTING", e))?;
        self.irqchip.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> hypervisor::Result<()> {
        self.fd
            .set_irq_line(gsi, level)
            .map_err(|e| os_error("KVM_IRQ_LINE", e))
    }

    fn signal_msi(&self, address: u64, data: u32) -> hypervisor::Result<()> {
        let msi = kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        // A return of 0 means the guest has the interrupt masked: delivered
        // as far as the VMM is concerned.
        self.fd
            .signal_msi(msi)
            .map(|_| ())
            .map_err(|e| os_error("KVM_SIGNAL_MSI", e))
    }

    fn create_vcpu(
        &self,
        index: usize,
        io: Arc<dyn DeviceIo>,
    ) -> hypervisor::Result<Box<dyn Vcpu>> {
        Ok(Box::new(self.create_kvm_vcpu(index, io)?))
    }

    fn register_ioevent(&self, fd: &EventFd, addr: u64) -> hypervisor::Result<bool> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| os_error("KVM_IOEVENTFD", e))?;
        Ok(true)
    }

    fn unregister_ioevent(&self, fd: &EventFd, addr: u64) -> hypervisor::Result<()> {
        self.fd
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| os_error("KVM_IOEVENTFD (deassign)", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lvt(vcpu: &KvmVcpu, offset: usize) -> u32 {
        let lapic = vcpu.fd().get_lapic().expect("KVM_GET_LAPIC");
        let b = |i: usize| lapic.regs[offset + i] as u8;
        u32::from_le_bytes([b(0), b(1), b(2), b(3)])
    }

    #[test]
    fn lapic_lints_are_wired_for_pic_and_nmi() {
        let Ok(kvm) = Kvm::new() else {
            eprintln!("KVM TESTS SKIPPED: /dev/kvm is missing");
            return;
        };
        let vm = KvmVm::new(&kvm).expect("KVM_CREATE_VM");
        let memory =
            GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 0x10000)]).expect("mmap");
        vm.set_memory(&memory).expect("memory");
        vm.create_irq_controllers().expect("irqchip");
        assert!(
            vm.create_irq_controllers().is_err(),
            "irqchip created twice"
        );
        let bsp = vm
            .create_kvm_vcpu(0, Arc::new(hypervisor::NoDevices))
            .expect("bsp");
        let ap = vm
            .create_kvm_vcpu(1, Arc::new(hypervisor::NoDevices))
            .expect("ap");
        // BSP: LINT0 ExtINT and LINT1 NMI, both unmasked (virtual wire).
        assert_eq!(lvt(&bsp, 0x350) & 0x1_0700, 0x700);
        assert_eq!(lvt(&bsp, 0x360) & 0x1_0700, 0x400);
        // APs get the delivery modes too.
        assert_eq!(lvt(&ap, 0x350) & 0x700, 0x700);
        assert_eq!(lvt(&ap, 0x360) & 0x700, 0x400);
    }
}
