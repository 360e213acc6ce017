//! Tiny guests, written as machine code bytes, run on the KVM engine
//! through vessel's `hypervisor` traits. Each test needs `/dev/kvm`; without
//! it the test says so loudly on stderr and passes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypervisor::{DeviceIo, Hypervisor, Regs, Vcpu, Vm, VmExit};
use kvm::detect::{detect, Backend};
use kvm::KvmHypervisor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CODE: u64 = 0x1000;
const DATA: u64 = 0x2000;
const MEM_SIZE: usize = 0x10_0000;
/// Outside RAM, inside the MMIO hole.
const MMIO: u64 = 0xd000_0000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    PioRead(u16, usize),
    PioWrite(u16, Vec<u8>),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
}

/// Records every access; reads return `next_read`, incremented per read.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<Access>>,
    next_read: Mutex<u32>,
}

impl Recorder {
    fn take(&self) -> Vec<Access> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn fill(&self, data: &mut [u8]) {
        let mut next = self.next_read.lock().unwrap();
        let bytes = next.to_le_bytes();
        for (d, b) in data.iter_mut().zip(bytes.iter()) {
            *d = *b;
        }
        *next = next.wrapping_add(1);
    }
}

impl DeviceIo for Recorder {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::PioRead(port, data.len()));
        self.fill(data);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::PioWrite(port, data.to_vec()));
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::MmioRead(addr, data.len()));
        self.fill(data);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::MmioWrite(addr, data.to_vec()));
    }
}

struct Guest {
    // Field order: the vCPU goes before the VM that owns it.
    vcpu: Box<dyn Vcpu>,
    _vm: Box<dyn Vm>,
    memory: GuestMemoryMmap,
    io: Arc<Recorder>,
}

fn kvm() -> Option<KvmHypervisor> {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("KVM TESTS SKIPPED: /dev/kvm is missing");
        return None;
    }
    Some(KvmHypervisor::new().expect("/dev/kvm exists and opens"))
}

/// A guest in 32-bit flat protected mode (no paging, no GDT needed: the
/// hidden segment state is set directly), `code` at 0x1000, IF=0.
fn guest(code: &[u8]) -> Option<Guest> {
    let hv = kvm()?;
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    memory.write_slice(code, GuestAddress(CODE)).unwrap();
    let vm = hv.create_vm().unwrap();
    vm.set_memory(&memory).unwrap();
    let io = Arc::new(Recorder::default());
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
    Some(Guest {
        vcpu,
        _vm: vm,
        memory,
        io,
    })
}

#[test]
fn out_reaches_device_io() {
    // mov al,0x42; out 0xf4,al; hlt
    let Some(mut g) = guest(&[0xb0, 0x42, 0xe6, 0xf4, 0xf4]) else {
        return;
    };
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Hlt);
    assert_eq!(g.io.take(), vec![Access::PioWrite(0xf4, vec![0x42])]);
}

#[test]
fn in_returns_what_device_io_gives() {
    // mov edx,0x600; in eax,dx; inc eax; mov edx,0x604; out dx,eax; hlt
    let code = [
        0xba, 0x00, 0x06, 0x00, 0x00, 0xed, 0x40, 0xba, 0x04, 0x06, 0x00, 0x00, 0xef, 0xf4,
    ];
    let Some(mut g) = guest(&code) else { return };
    *g.io.next_read.lock().unwrap() = 0x1234_5678;
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Hlt);
    assert_eq!(
        g.io.take(),
        vec![
            Access::PioRead(0x600, 4),
            Access::PioWrite(0x604, 0x1234_5679u32.to_le_bytes().to_vec()),
        ]
    );
    assert_eq!(g.vcpu.regs().unwrap().rax, 0x1234_5679);
}

#[test]
fn mmio_outside_ram_reaches_device_io() {
    // mov eax,[0xd0000000]; inc eax; mov [0xd0000010],eax; hlt
    let code = [
        0xa1, 0x00, 0x00, 0x00, 0xd0, 0x40, 0xa3, 0x10, 0x00, 0x00, 0xd0, 0xf4,
    ];
    let Some(mut g) = guest(&code) else { return };
    *g.io.next_read.lock().unwrap() = 0xcafe_0000;
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Hlt);
    assert_eq!(
        g.io.take(),
        vec![
            Access::MmioRead(MMIO, 4),
            Access::MmioWrite(MMIO + 0x10, 0xcafe_0001u32.to_le_bytes().to_vec()),
        ]
    );
}

#[test]
fn rep_outsb_delivers_every_byte_in_order() {
    const N: usize = 300;
    // mov esi,DATA; mov ecx,N; mov dx,0x3f8; cld; rep outsb; hlt
    let code = [
        0xbe,
        0x00,
        0x20,
        0x00,
        0x00,
        0xb9,
        N as u8,
        (N >> 8) as u8,
        0x00,
        0x00,
        0x66,
        0xba,
        0xf8,
        0x03,
        0xfc,
        0xf3,
        0x6e,
        0xf4,
    ];
    let Some(mut g) = guest(&code) else { return };
    let data: Vec<u8> = (0..N).map(|i| (i * 7 + 1) as u8).collect();
    g.memory.write_slice(&data, GuestAddress(DATA)).unwrap();
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Hlt);
    let expected: Vec<Access> = data
        .iter()
        .map(|&b| Access::PioWrite(0x3f8, vec![b]))
        .collect();
    assert_eq!(g.io.take(), expected);
}

#[test]
fn rep_insw_fills_memory_in_order() {
    const N: u32 = 40;
    // mov edi,0x3000; mov ecx,N; mov dx,0x60; cld; rep insw; hlt
    let code = [
        0xbf, 0x00, 0x30, 0x00, 0x00, 0xb9, N as u8, 0x00, 0x00, 0x00, 0x66, 0xba, 0x60, 0x00,
        0xfc, 0xf3, 0x66, 0x6d, 0xf4,
    ];
    let Some(mut g) = guest(&code) else { return };
    *g.io.next_read.lock().unwrap() = 0x100;
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Hlt);
    let log = g.io.take();
    assert_eq!(log.len(), N as usize);
    assert!(log.iter().all(|a| *a == Access::PioRead(0x60, 2)));
    let mut got = vec![0u8; 2 * N as usize];
    g.memory.read_slice(&mut got, GuestAddress(0x3000)).unwrap();
    for (i, w) in got.chunks_exact(2).enumerate() {
        assert_eq!(u16::from_le_bytes([w[0], w[1]]), 0x100 + i as u16);
    }
}

#[test]
fn hlt_with_interrupts_off_returns_hlt() {
    let Some(mut g) = guest(&[0xf4]) else { return };
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Hlt);
    assert_eq!(g.vcpu.regs().unwrap().rip, CODE + 1);
    assert!(g.io.take().is_empty());
}

#[test]
fn int3_at_cpl0_is_reported() {
    // nop; int3
    let Some(mut g) = guest(&[0x90, 0xcc, 0xf4]) else {
        return;
    };
    match g.vcpu.run().unwrap() {
        VmExit::EmulationFailure { rip, bytes } => {
            assert_eq!(rip, CODE + 1);
            assert_eq!(bytes.first(), Some(&0xcc), "{bytes:x?}");
            assert_eq!(bytes.len(), 15);
            assert_eq!(bytes[1], 0xf4);
        }
        // Hardware KVM delivers INT3 through the (absent) IDT: triple fault.
        VmExit::Shutdown => assert!(detect().hardware_assisted()),
        other => panic!("unexpected exit {other:?}"),
    }
}

#[test]
fn kick_interrupts_a_spinning_guest() {
    // jmp $
    let Some(mut g) = guest(&[0xeb, 0xfe]) else {
        return;
    };
    let kicker = g.vcpu.kicker();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        kicker.kick();
    });
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Interrupted);
    let took = start.elapsed();
    t.join().unwrap();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        took >= Duration::from_millis(90),
        "returned before the kick: {took:?}"
    );
    assert_eq!(g.vcpu.regs().unwrap().rip, CODE);

    // A pending kick keeps the vCPU out until cleared; then it runs again.
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Interrupted);
    g.vcpu.kicker().clear();
    let kicker = g.vcpu.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        kicker.kick();
    });
    let start = Instant::now();
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Interrupted);
    assert!(start.elapsed() >= Duration::from_millis(40));
    t.join().unwrap();
}

#[test]
fn kick_before_run_returns_at_once() {
    let Some(mut g) = guest(&[0xb0, 0x01, 0xe6, 0xf4, 0xf4]) else {
        return;
    };
    let kicker = g.vcpu.kicker();
    kicker.kick();
    let start = Instant::now();
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Interrupted);
    assert!(start.elapsed() < Duration::from_millis(100));
    assert!(g.io.take().is_empty(), "guest ran despite the kick");
    kicker.clear();
    assert_eq!(g.vcpu.run().unwrap(), VmExit::Hlt);
    assert_eq!(g.io.take(), vec![Access::PioWrite(0xf4, vec![1])]);
}

#[test]
fn regs_round_trip() {
    let Some(mut g) = guest(&[0xf4]) else { return };
    let regs = Regs {
        rax: 0x1111,
        rbx: 0x2222,
        rcx: 0x3333,
        rdx: 0x4444,
        rsi: 0x5555,
        rdi: 0x6666,
        rsp: 0x7777,
        rbp: 0x8888,
        r8: 8,
        r9: 9,
        r10: 10,
        r11: 11,
        r12: 12,
        r13: 13,
        r14: 14,
        r15: 15,
        rip: 0x1000,
        rflags: 0x2 | 0x40 | 0x1,
    };
    g.vcpu.set_regs(&regs).unwrap();
    assert_eq!(g.vcpu.regs().unwrap(), regs);
    let sregs = g.vcpu.special_regs().unwrap();
    g.vcpu.set_special_regs(&sregs).unwrap();
    assert_eq!(g.vcpu.special_regs().unwrap(), sregs);
    let mut fpu = g.vcpu.fpu().unwrap();
    fpu.xmm[3] = [0x5a; 16];
    fpu.mxcsr = 0x1f80;
    g.vcpu.set_fpu(&fpu).unwrap();
    assert_eq!(g.vcpu.fpu().unwrap().xmm[3], [0x5a; 16]);
}

#[test]
fn msrs_and_cpuid() {
    let Some(hv) = kvm() else { return };
    let cpuid = hv.supported_cpuid().unwrap();
    assert!(cpuid.iter().any(|e| e.function == 0), "no leaf 0");
    assert!(hv.max_vcpus() >= 1);
    let Some(mut g) = guest(&[0xf4]) else { return };
    g.vcpu.set_cpuid(&cpuid).unwrap();
    // IA32_SYSENTER_CS.
    g.vcpu.set_msrs(&[(0x174, 0x10)]).unwrap();
    assert_eq!(g.vcpu.get_msr(0x174).unwrap(), 0x10);
}

#[test]
fn read_virtual_reads_guest_memory() {
    let Some(mut g) = guest(&[0xf4, 0x11, 0x22]) else {
        return;
    };
    let mut buf = [0u8; 3];
    g.vcpu.read_virtual(CODE, &mut buf).unwrap();
    assert_eq!(buf, [0xf4, 0x11, 0x22]);
    // Across a page boundary.
    g.memory
        .write_slice(&[1, 2, 3, 4], GuestAddress(0x1ffe))
        .unwrap();
    let mut buf = [0u8; 4];
    g.vcpu.read_virtual(0x1ffe, &mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3, 4]);
    assert!(g.vcpu.read_virtual(MMIO, &mut buf).is_err());
}

#[test]
fn irqchip_vm_creates_vcpus() {
    let Some(hv) = kvm() else { return };
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let vm = hv.create_vm().unwrap();
    vm.set_memory(&memory).unwrap();
    assert!(vm.set_memory(&memory).is_err(), "memory set twice");
    vm.create_irq_controllers().unwrap();
    let io = Arc::new(Recorder::default());
    let _bsp = vm.create_vcpu(0, io.clone()).unwrap();
    let _ap = vm.create_vcpu(1, io).unwrap();
    vm.set_irq_line(4, true).unwrap();
    vm.set_irq_line(4, false).unwrap();
    vm.signal_msi(0xfee0_0000, 0x30).unwrap();
}

#[test]
fn detect_reports_this_host() {
    let s = detect();
    eprint!("{s}");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(s.backend, Backend::Pvm);
        assert!(!s.hardware_assisted());
    }
    if std::path::Path::new("/dev/kvm").exists() {
        assert_eq!(s.api_version, Some(12));
        assert!(s.caps.iter().any(|&(n, has)| n == "IRQCHIP" && has));
    }
}

/// Switches `g` to 64-bit mode with identity-mapped 2 MiB pages over the
/// first 1 GiB (PML4 0x9000, PDPT 0xa000, PD 0xb000).
fn enter_long_mode(g: &mut Guest) {
    let m = &g.memory;
    m.write_obj(0xa000u64 | 3, GuestAddress(0x9000)).unwrap();
    m.write_obj(0xb000u64 | 3, GuestAddress(0xa000)).unwrap();
    for i in 0..512u64 {
        m.write_obj((i << 21) | 0x83, GuestAddress(0xb000 + i * 8))
            .unwrap();
    }
    let mut s = g.vcpu.special_regs().unwrap();
    s.cs.l = true;
    s.cs.db = false;
    s.cr3 = 0x9000;
    s.cr4 |= 0x20; // PAE
    s.cr0 |= 0x8000_0001; // PG | PE
    s.efer |= 0x500; // LME | LMA
    g.vcpu.set_special_regs(&s).unwrap();
}

#[test]
fn long_mode_guest_runs_and_reports_failures_through_page_tables() {
    // mov rax,0x1122334455667788; out 0xf4,al; int3
    let code = [
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xe6, 0xf4, 0xcc,
    ];
    let Some(mut g) = guest(&code) else { return };
    enter_long_mode(&mut g);
    let s = g.vcpu.special_regs().unwrap();
    assert!(s.cs.l && s.efer & 0x400 != 0, "not in long mode: {s:?}");
    match g.vcpu.run().unwrap() {
        VmExit::EmulationFailure { rip, bytes } => {
            assert_eq!(rip, CODE + 12);
            assert_eq!(bytes.first(), Some(&0xcc), "{bytes:x?}");
        }
        VmExit::Shutdown => assert!(detect().hardware_assisted()),
        other => panic!("unexpected exit {other:?}"),
    }
    assert_eq!(g.io.take(), vec![Access::PioWrite(0xf4, vec![0x88])]);
    assert_eq!(g.vcpu.regs().unwrap().rax, 0x1122_3344_5566_7788);
    // KVM_TRANSLATE walks the guest's page tables.
    let mut buf = [0u8; 2];
    g.vcpu.read_virtual(CODE, &mut buf).unwrap();
    assert_eq!(buf, [0x48, 0xb8]);
}
