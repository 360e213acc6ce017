//! Exit round trips per second: vessel's `Vcpu::run` dispatching through
//! `devices::IoBus`, against a bare `KVM_RUN` loop written with raw
//! kvm-ioctls that only matches the exit and re-enters.
//!
//! The guest (32-bit flat protected mode, no paging) loops N times over
//! (a) `out dx, al` to a port or (b) a store to an MMIO address outside
//! RAM, then halts. It runs once at CPL0 (guest code emulated by a PVM
//! host) and once at CPL3 with IOPL=3 (guest code native under PVM), so the
//! table separates the exit's cost from the guest's.
//!
//! Run: `cargo bench -p kvm --bench exits` (add `-- N` for the exit count).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::{BusDevice, IoBus};
use hypervisor::{Hypervisor, Regs, Segment, VmExit};
use kvm::KvmHypervisor;
use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const CODE: u64 = 0x1000;
const MEM_SIZE: usize = 0x10_0000;
const PORT: u16 = 0x510;
const MMIO: u64 = 0xd000_0000;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Pio,
    Mmio,
}

/// The guest loop: `count` exits of `kind`, then HLT (at CPL3 HLT faults:
/// with no IDT that is a shutdown, which the runners accept as the end).
fn guest_code(kind: Kind, count: u32) -> Vec<u8> {
    let mut c = vec![0xb9]; // mov ecx, count
    c.extend_from_slice(&count.to_le_bytes());
    match kind {
        Kind::Pio => {
            c.extend_from_slice(&[0xba, PORT as u8, (PORT >> 8) as u8, 0, 0]); // mov edx, PORT
            c.extend_from_slice(&[0xee, 0xe2, 0xfd]); // L: out dx,al; loop L
        }
        Kind::Mmio => {
            c.push(0xbb); // mov ebx, MMIO
            c.extend_from_slice(&(MMIO as u32).to_le_bytes());
            c.extend_from_slice(&[0x89, 0x03, 0xe2, 0xfc]); // L: mov [ebx],eax; loop L
        }
    }
    c.push(0xf4); // hlt
    c
}

fn flat_segment(code: bool, dpl: u8) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: (if code { 0x8 } else { 0x10 }) | u16::from(dpl),
        type_: if code { 0xb } else { 0x3 },
        present: true,
        dpl,
        db: true,
        s: true,
        l: false,
        g: true,
        avl: false,
        unusable: false,
    }
}

fn to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// RFLAGS: reserved bit 1, and IOPL=3 so CPL3 may use ports.
const RFLAGS: u64 = 0x2 | 0x3000;

/// Counts accesses; what the bus dispatches to.
struct Counter(Arc<AtomicU64>);

impl BusDevice for Counter {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn memory(code: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    mem.write_slice(code, GuestAddress(CODE))
        .expect("code fits in memory");
    mem
}

/// Exits per second through vessel's engine and device bus.
fn vessel(kind: Kind, count: u32, dpl: u8) -> f64 {
    let hv = KvmHypervisor::new().expect("open /dev/kvm");
    let mem = memory(&guest_code(kind, count));
    let vm = hv.create_vm().expect("create vm");
    vm.set_memory(&mem).expect("set memory");
    let hits = Arc::new(AtomicU64::new(0));
    let bus = Arc::new(IoBus::new());
    let dev: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Counter(hits.clone())));
    bus.pio
        .insert(u64::from(PORT), 4, dev.clone())
        .expect("pio range");
    bus.mmio.insert(MMIO, 0x1000, dev).expect("mmio range");
    let mut vcpu = vm.create_vcpu(0, bus).expect("create vcpu");
    let mut sregs = vcpu.special_regs().expect("sregs");
    sregs.cs = flat_segment(true, dpl);
    let data = flat_segment(false, dpl);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 |= 1;
    vcpu.set_special_regs(&sregs).expect("set sregs");
    vcpu.set_regs(&Regs {
        rip: CODE,
        rsp: 0x8000,
        rflags: RFLAGS,
        ..Default::default()
    })
    .expect("set regs");

    let start = Instant::now();
    let exit = vcpu.run().expect("run");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        matches!(exit, VmExit::Hlt | VmExit::Shutdown),
        "unexpected exit {exit:?}"
    );
    let n = hits.load(Ordering::Relaxed);
    assert_eq!(n, u64::from(count), "device saw {n} of {count} accesses");
    n as f64 / secs
}

/// Exits per second through a bare KVM_RUN loop.
fn bare(kind: Kind, count: u32, dpl: u8) -> f64 {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let mem = memory(&guest_code(kind, count));
    let vm = kvm.create_vm().expect("create vm");
    vm.set_tss_address(0xfffb_d000).expect("tss");
    let host = mem.get_host_address(GuestAddress(0)).expect("ram at 0") as u64;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host,
    };
    // SAFETY: `mem` maps MEM_SIZE bytes at `host` and outlives the VM (it
    // is dropped after `vm` and `vcpu` at the end of this function).
    unsafe { vm.set_user_memory_region(region) }.expect("memory slot");
    let mut vcpu = vm.create_vcpu(0).expect("create vcpu");
    let mut sregs = vcpu.get_sregs().expect("sregs");
    sregs.cs = to_kvm(&flat_segment(true, dpl));
    let data = to_kvm(&flat_segment(false, dpl));
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 |= 1;
    vcpu.set_sregs(&sregs).expect("set sregs");
    let mut regs = vcpu.get_regs().expect("regs");
    regs.rip = CODE;
    regs.rsp = 0x8000;
    regs.rflags = RFLAGS;
    vcpu.set_regs(&regs).expect("set regs");

    let mut n: u64 = 0;
    let start = Instant::now();
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(..) | VcpuExit::MmioWrite(..) => n += 1,
            VcpuExit::Hlt | VcpuExit::Shutdown => break,
            other => panic!("unexpected exit {other:?}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n, u64::from(count));
    drop(vcpu);
    drop(vm);
    drop(mem);
    n as f64 / secs
}

/// Runs both loops `runs` times, interleaved so that load from other
/// processes hits both alike, and keeps each one's best rate: on a shared
/// machine noise only ever slows a run down.
fn best_of(runs: usize, kind: Kind, count: u32, dpl: u8) -> (f64, f64) {
    let (mut v, mut b) = (0.0f64, 0.0f64);
    for _ in 0..runs {
        v = v.max(vessel(kind, count, dpl));
        b = b.max(bare(kind, count, dpl));
    }
    (v, b)
}

const RUNS: usize = 5;

fn main() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("KVM BENCH SKIPPED: /dev/kvm is missing");
        return;
    }
    // `cargo bench` passes `--bench`; a plain number sets the exit count.
    let count: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50_000);
    println!("{}", kvm::detect().backend);
    println!("{count} exits per run, best of {RUNS} interleaved runs\n");
    println!(
        "{:<14} {:>14} {:>14} {:>8} {:>18}",
        "exit", "vessel/s", "bare/s", "ratio", "overhead ns/exit"
    );
    for dpl in [0u8, 3] {
        for (kind, name) in [(Kind::Pio, "pio out"), (Kind::Mmio, "mmio write")] {
            // Warm up (page faults on first touch, code paths).
            vessel(kind, 1000, dpl);
            bare(kind, 1000, dpl);
            let (v, b) = best_of(RUNS, kind, count, dpl);
            let overhead_ns = (1.0 / v - 1.0 / b) * 1e9;
            println!(
                "{:<14} {:>14.0} {:>14.0} {:>8.3} {:>18.0}",
                format!("{name} cpl{dpl}"),
                v,
                b,
                v / b,
                overhead_ns
            );
        }
    }
}
