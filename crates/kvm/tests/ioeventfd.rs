//! `Vm::register_ioevent` on the KVM engine: a guest write to a registered
//! MMIO address signals the eventfd inside KVM and never reaches the VMM's
//! `DeviceIo`; writes elsewhere still do, and after unregistering the
//! address is an ordinary MMIO exit again. Needs `/dev/kvm`; without it
//! the test says so loudly and passes.

use std::sync::{Arc, Mutex};

use hypervisor::{DeviceIo, EventFd, Hypervisor, Regs, Vm, VmExit};
use kvm::KvmHypervisor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CODE: u64 = 0x1000;
/// Outside RAM, inside the MMIO hole (like a virtio notify register).
const NOTIFY: u64 = 0xd000_0000;

/// Records MMIO writes.
#[derive(Default)]
struct Writes(Mutex<Vec<(u64, Vec<u8>)>>);

impl DeviceIo for Writes {
    fn pio_read(&self, _: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, _: u16, _: &[u8]) {}
    fn mmio_read(&self, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.0.lock().unwrap().push((addr, data.to_vec()));
    }
}

/// `mov dword [NOTIFY], 1; mov dword [NOTIFY+4], 2; hlt` in 32-bit code.
fn code() -> Vec<u8> {
    let mut c = vec![0xc7, 0x05];
    c.extend_from_slice(&(NOTIFY as u32).to_le_bytes());
    c.extend_from_slice(&1u32.to_le_bytes());
    c.extend_from_slice(&[0xc7, 0x05]);
    c.extend_from_slice(&(NOTIFY as u32 + 4).to_le_bytes());
    c.extend_from_slice(&2u32.to_le_bytes());
    c.push(0xf4);
    c
}

/// Runs `code()` once from the start in flat 32-bit protected mode on a
/// new vCPU `index`.
fn run_once(vm: &dyn Vm, index: usize, io: Arc<Writes>) {
    let mut vcpu = vm.create_vcpu(index, io).unwrap();
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
}

#[test]
fn registered_write_signals_the_eventfd_without_an_exit() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("KVM TESTS SKIPPED: /dev/kvm is missing");
        return;
    }
    let hv = KvmHypervisor::new().expect("/dev/kvm exists and opens");
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    memory.write_slice(&code(), GuestAddress(CODE)).unwrap();
    let vm = hv.create_vm().unwrap();
    vm.set_memory(&memory).unwrap();
    let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();

    assert!(vm.register_ioevent(&fd, NOTIFY).unwrap(), "kvm supports it");
    let io = Arc::new(Writes::default());
    run_once(vm.as_ref(), 0, io.clone());
    assert_eq!(fd.read().unwrap(), 1, "one write, one signal");
    assert_eq!(
        *io.0.lock().unwrap(),
        vec![(NOTIFY + 4, 2u32.to_le_bytes().to_vec())],
        "only the unregistered write reached DeviceIo"
    );

    vm.unregister_ioevent(&fd, NOTIFY).unwrap();
    let io = Arc::new(Writes::default());
    run_once(vm.as_ref(), 1, io.clone());
    assert!(fd.read().is_err(), "no signal after unregistering");
    assert_eq!(io.0.lock().unwrap().len(), 2, "both writes exit again");
}
