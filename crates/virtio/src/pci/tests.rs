//! The transport driven the way the Linux virtio_pci driver drives it:
//! configuration cycles, then MMIO to the BAR windows.

use super::*;
use crate::rng::Rng;
use crate::test_driver::{guest_memory, Desc, TestQueue};
use devices::Bus;
use vm_memory::GuestAddress;

#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, u32)>>);
impl MsiSink for Recorder {
    fn signal(&self, address: u64, data: u32) {
        lock(&self.0).push((address, data));
    }
}

const BAR: u64 = 0xc000_0000;

struct Rig {
    dev: Arc<Mutex<VirtioPciDevice>>,
    bus: Arc<Bus>,
    msi: Arc<Recorder>,
    mem: GuestMemoryMmap,
}

fn rig() -> Rig {
    let mem = guest_memory();
    let msi = Arc::new(Recorder::default());
    let dev = VirtioPciDevice::new(Box::new(Rng::new()), mem.clone(), msi.clone(), BAR).unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let bus = Arc::new(Bus::new());
    let owner: Arc<dyn BusOwner> = bus.clone();
    VirtioPciDevice::attach(&dev, Arc::downgrade(&owner));
    Rig { dev, bus, msi, mem }
}

impl Rig {
    fn r(&self, off: u64, len: usize) -> u64 {
        let mut d = vec![0u8; len];
        assert!(self.bus.read(BAR + off, &mut d), "bar mapped");
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(&d);
        u64::from_le_bytes(b)
    }
    fn w(&self, off: u64, len: usize, v: u64) {
        self.bus.write(BAR + off, &v.to_le_bytes()[..len]);
    }
    fn cfg(&self, reg: usize) -> u32 {
        lock(&self.dev).config_read(reg)
    }
    fn cfg_w(&self, reg: usize, v: u32) {
        lock(&self.dev).config_write(reg, 0, &v.to_le_bytes());
    }
    fn status(&self) -> u8 {
        self.r(0x14, 1) as u8
    }
    /// Feature negotiation through FEATURES_OK; returns whether it stuck.
    fn negotiate(&self, features: u64) -> bool {
        self.w(0x14, 1, 0);
        self.w(0x14, 1, 1);
        self.w(0x14, 1, 3);
        self.w(0x08, 4, 0);
        self.w(0x0c, 4, features & 0xffff_ffff);
        self.w(0x08, 4, 1);
        self.w(0x0c, 4, features >> 32);
        self.w(0x14, 1, 0xb);
        self.status() & status::FEATURES_OK != 0
    }
    fn setup_queue(&self, tq: &TestQueue, vector: u16) {
        self.w(0x16, 2, 0);
        self.w(0x18, 2, u64::from(tq.size));
        self.w(0x1a, 2, u64::from(vector));
        self.w(0x20, 8, tq.desc.0);
        self.w(0x28, 4, tq.avail.0);
        self.w(0x2c, 4, 0);
        self.w(0x30, 4, tq.used.0);
        self.w(0x34, 4, 0);
        self.w(0x1c, 2, 1);
    }
    fn enable_msix(&self) {
        // Message control is the high word of the capability's first dword.
        lock(&self.dev).config_write(0x40 / 4, 2, &msix::CONTROL_ENABLE.to_le_bytes());
        for v in 0..2u64 {
            self.w(MSIX_TABLE_OFFSET + 16 * v, 4, 0xfee0_0000);
            self.w(MSIX_TABLE_OFFSET + 16 * v + 8, 4, 0x30 + v);
            self.w(MSIX_TABLE_OFFSET + 16 * v + 12, 4, 0);
        }
    }
}

/// Walks the capability list: (cfg_type, offset, length) of vendor caps.
fn virtio_caps(rig: &Rig) -> Vec<(u8, u32, u32)> {
    let byte = |off: usize| (rig.cfg(off / 4) >> ((off % 4) * 8)) as u8;
    let dword = |off: usize| rig.cfg(off / 4);
    let mut out = Vec::new();
    let mut p = usize::from(byte(0x34));
    let mut guard = 0;
    while p != 0 && guard < 48 {
        if byte(p) == CAP_VENDOR {
            out.push((byte(p + 3), dword(p + 8), dword(p + 12)));
        }
        p = usize::from(byte(p + 1));
        guard += 1;
    }
    out
}

#[test]
fn identity_and_capabilities() {
    let rig = rig();
    assert_eq!(rig.cfg(0), 0x1044_1af4, "modern rng id");
    assert_eq!(rig.cfg(2) & 0xff, 1, "revision 1");
    assert_eq!(rig.cfg(11) >> 16, 0x40);
    let caps = virtio_caps(&rig);
    assert_eq!(
        caps,
        vec![
            (CAP_COMMON, 0, 0x38),
            (CAP_ISR, 0x1000, 1),
            (CAP_DEVICE, 0x2000, 0x1000),
            (CAP_NOTIFY, 0x3000, 0x1000)
        ]
    );
    // MSI-X: 2 vectors (1 queue + config), table and PBA in BAR 0.
    assert_eq!(rig.cfg(0x40 / 4) & 0xff, u32::from(msix::CAPABILITY_ID));
    assert_eq!(rig.cfg(0x40 / 4) >> 16 & 0x7ff, 1);
    assert_eq!(rig.cfg(0x44 / 4), MSIX_TABLE_OFFSET as u32);
    assert_eq!(rig.r(0x12, 2), 1, "one queue");
}

#[test]
fn driver_brings_up_device_and_gets_interrupts() {
    let rig = rig();
    let offered = rig.r(0x04, 4) | {
        rig.w(0x00, 4, 1);
        rig.r(0x04, 4) << 32
    };
    assert_ne!(offered & features::VERSION_1, 0);
    assert!(rig.negotiate(features::VERSION_1 | features::RING_EVENT_IDX));
    let mut tq = TestQueue::new(&rig.mem, GuestAddress(0x1000), 16);
    rig.setup_queue(&tq, 0);
    rig.w(0x10, 2, 1);
    assert_eq!(rig.r(0x10, 2), 1);
    rig.enable_msix();
    rig.w(0x14, 1, 0xf);
    assert_eq!(rig.status(), 0xf);
    tq.add_chain(&rig.mem, &[Desc::w(0x10000, 32)]);
    rig.w(NOTIFY_OFFSET, 2, 0);
    assert_eq!(tq.used(&rig.mem), vec![(0, 32)]);
    assert_eq!(*lock(&rig.msi.0), vec![(0xfee0_0000, 0x30)]);
    assert_eq!(rig.r(ISR_OFFSET, 1), 1);
    assert_eq!(rig.r(ISR_OFFSET, 1), 0, "read clears");
    // Queue registers are frozen once running.
    rig.w(0x18, 2, 4);
    assert_eq!(rig.r(0x18, 2), 16);
    // Reset returns everything to the start.
    rig.w(0x14, 1, 0);
    assert_eq!(rig.status(), 0);
    assert_eq!(rig.r(0x1c, 2), 0);
    assert_eq!(rig.r(0x10, 2), u64::from(NO_VECTOR));
}

#[test]
fn feature_negotiation_refuses_bad_sets() {
    let rig = rig();
    assert!(!rig.negotiate(0), "VERSION_1 is required");
    assert!(
        !rig.negotiate(features::VERSION_1 | 1 << 5),
        "unoffered bit"
    );
    assert!(rig.negotiate(features::VERSION_1));
    // Features are frozen after FEATURES_OK.
    rig.w(0x08, 4, 0);
    rig.w(0x0c, 4, 0xffff_ffff);
    assert_eq!(rig.r(0x0c, 4), 0);
    // A vector the table lacks reads back as NO_VECTOR.
    rig.w(0x10, 2, 7);
    assert_eq!(rig.r(0x10, 2), u64::from(NO_VECTOR));
}

#[test]
fn broken_chain_marks_needs_reset() {
    let rig = rig();
    assert!(rig.negotiate(features::VERSION_1));
    let mut tq = TestQueue::new(&rig.mem, GuestAddress(0x1000), 8);
    rig.setup_queue(&tq, 0);
    rig.w(0x10, 2, 1);
    rig.enable_msix();
    rig.w(0x14, 1, 0xf);
    tq.write_desc(
        &rig.mem,
        0,
        0x10000,
        4,
        TestQueue::NEXT | TestQueue::WRITE,
        0,
    );
    tq.publish(&rig.mem, 0);
    rig.w(NOTIFY_OFFSET, 2, 0);
    assert_eq!(
        rig.status() & status::DEVICE_NEEDS_RESET,
        status::DEVICE_NEEDS_RESET
    );
    assert_eq!(
        *lock(&rig.msi.0),
        vec![(0xfee0_0000, 0x31)],
        "config vector"
    );
    // Further kicks are ignored; a reset brings the device back.
    tq.add_chain(&rig.mem, &[Desc::w(0x10000, 4)]);
    rig.w(NOTIFY_OFFSET, 2, 0);
    assert!(tq.used(&rig.mem).is_empty());
    rig.w(0x14, 1, 0);
    assert_eq!(rig.status(), 0);
}

#[test]
fn queue_outside_memory_and_driver_ok_without_features() {
    let rig = rig();
    rig.w(0x14, 1, 1);
    rig.w(0x14, 1, 3);
    rig.w(0x14, 1, 7);
    assert_ne!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(rig.negotiate(features::VERSION_1));
    assert_eq!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
    rig.w(0x16, 2, 0);
    rig.w(0x20, 8, crate::test_driver::MEM_SIZE - 64);
    rig.w(0x1c, 2, 1);
    rig.w(0x14, 1, 0xf);
    assert_ne!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn bar_follows_guest_reprogramming() {
    let rig = rig();
    assert_eq!(rig.bus.ranges(), vec![(BAR, BAR_SIZE)]);
    rig.cfg_w(1, 0);
    assert!(rig.bus.ranges().is_empty(), "memory decode off");
    rig.cfg_w(4, 0xffff_ffff);
    rig.cfg_w(5, 0xffff_ffff);
    assert_eq!(rig.cfg(4), 0xffff_8004);
    rig.cfg_w(4, 0xd000_0000);
    rig.cfg_w(5, 0);
    rig.cfg_w(1, 2);
    assert_eq!(rig.bus.ranges(), vec![(0xd000_0000, BAR_SIZE)]);
    assert_eq!(lock(&rig.dev).bar_mapping(), Some((0xd000_0000, BAR_SIZE)));
}

#[test]
fn arbitrary_accesses_never_panic() {
    let rig = rig();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x >> 8) % BAR_SIZE;
        let len = [1usize, 2, 4, 8][(x & 3) as usize];
        let v = x.rotate_left(17) & 0xff_ffff;
        if x & 0x10 != 0 {
            rig.w(off, len, v);
        } else {
            let mut d = vec![0u8; len];
            rig.bus.read(BAR + off, &mut d);
        }
        if x & 0xff == 0 {
            let reg = ((x >> 20) % 64) as usize;
            lock(&rig.dev).config_write(reg, (x >> 30) as u8 & 3, &[v as u8]);
        }
        if rig.bus.ranges().is_empty() {
            rig.cfg_w(4, BAR as u32);
            rig.cfg_w(5, 0);
            rig.cfg_w(1, 2);
        }
    }
}

#[test]
fn kick_queue_serves_the_queue_like_a_notify_write() {
    let rig = rig();
    assert_eq!(
        lock(&rig.dev).notify_addresses(),
        vec![(0, BAR + NOTIFY_OFFSET)],
        "one queue, its register in the notify window"
    );
    assert!(rig.negotiate(features::VERSION_1));
    let mut tq = TestQueue::new(&rig.mem, GuestAddress(0x1000), 16);
    rig.setup_queue(&tq, 0);
    rig.enable_msix();
    // Before DRIVER_OK a kick does nothing.
    tq.add_chain(&rig.mem, &[Desc::w(0x10000, 16)]);
    lock(&rig.dev).kick_queue(0);
    assert!(tq.used(&rig.mem).is_empty());
    rig.w(0x14, 1, 0xf);
    lock(&rig.dev).kick_queue(0);
    assert_eq!(tq.used(&rig.mem), vec![(0, 16)]);
    assert_eq!(lock(&rig.msi.0).len(), 1, "used-buffer interrupt");
    // A queue that does not exist is ignored, not a crash.
    lock(&rig.dev).kick_queue(7);
    lock(&rig.dev).kick_queue(u16::MAX);
    assert_eq!(rig.status() & status::DEVICE_NEEDS_RESET, 0);
}
