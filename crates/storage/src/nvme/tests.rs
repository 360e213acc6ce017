//! The controller driven from the host the way Linux's driver drives it,
//! and as a hostile driver would.

use super::command::status::*;
use super::*;
use devices::pci::msix::CONTROL_ENABLE;
use std::path::PathBuf;
use virtio::block::BlockConfig;
use vm_memory::{Bytes, GuestAddress};

const ASQ: u64 = 0x10000;
const ACQ: u64 = 0x11000;
const IOSQ: u64 = 0x12000;
const IOCQ: u64 = 0x13000;
const DATA: u64 = 0x20000;
const IDBUF: u64 = 0x40000;
const LIST: u64 = 0x50000;
const MEM: usize = 1 << 20;

#[derive(Default)]
struct Msis(Mutex<Vec<u32>>);
impl MsiSink for Msis {
    fn signal(&self, _address: u64, data: u32) {
        self.0.lock().unwrap().push(data);
    }
}

struct Rig {
    dev: Nvme,
    mem: GuestMemoryMmap,
    msis: Arc<Msis>,
    path: PathBuf,
    /// Next admin SQ slot and CQ slot.
    asq_tail: u32,
    acq_head: u32,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn w32(d: &mut Nvme, off: u64, v: u32) {
    d.write(off, &v.to_le_bytes());
}

fn w64(d: &mut Nvme, off: u64, v: u64) {
    d.write(off, &v.to_le_bytes());
}

fn r32(d: &mut Nvme, off: u64) -> u32 {
    let mut b = [0u8; 4];
    d.read(off, &mut b);
    u32::from_le_bytes(b)
}

/// A 64-byte command.
fn cmd(opcode: u8, cid: u16, nsid: u32, prp1: u64, prp2: u64, cdw: [u32; 3]) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0] = opcode;
    b[2..4].copy_from_slice(&cid.to_le_bytes());
    b[4..8].copy_from_slice(&nsid.to_le_bytes());
    b[24..32].copy_from_slice(&prp1.to_le_bytes());
    b[32..40].copy_from_slice(&prp2.to_le_bytes());
    for (i, v) in cdw.iter().enumerate() {
        b[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

impl Rig {
    fn new(sectors: usize, readonly: bool) -> Rig {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("vessel-nvme-{}-{n}", std::process::id()));
        std::fs::write(&path, vec![0u8; sectors * 512]).unwrap();
        let image = Image::open(&BlockConfig {
            readonly,
            ..BlockConfig::new(&path)
        })
        .unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let msis = Arc::new(Msis::default());
        let mut dev = Nvme::new(image, mem.clone(), msis.clone(), 0xc000_0000, "serial-1").unwrap();
        let msix = dev.controller().msix();
        for v in 0..5u64 {
            msix.table_write(v * 16, &0xfee0_0000u32.to_le_bytes());
            msix.table_write(v * 16 + 8, &(0x40 + v as u32).to_le_bytes());
            msix.table_write(v * 16 + 12, &0u32.to_le_bytes());
        }
        msix.set_control(CONTROL_ENABLE);
        Rig {
            dev,
            mem,
            msis,
            path,
            asq_tail: 0,
            acq_head: 0,
        }
    }

    /// Linux's bring-up: admin queues of 32 entries, then CC.EN.
    fn enable(&mut self) {
        w32(&mut self.dev, 0x24, 31 << 16 | 31);
        w64(&mut self.dev, 0x28, ASQ);
        w64(&mut self.dev, 0x30, ACQ);
        w32(&mut self.dev, 0x14, 6 << 16 | 4 << 20);
        w32(&mut self.dev, 0x14, 6 << 16 | 4 << 20 | 1);
        assert_eq!(r32(&mut self.dev, 0x1c) & 3, 1, "ready");
    }

    /// Submits an admin command; returns (dw0, status).
    fn admin(&mut self, c: [u8; 64]) -> (u32, u16) {
        self.mem
            .write_slice(&c, GuestAddress(ASQ + u64::from(self.asq_tail) * 64))
            .unwrap();
        self.asq_tail = (self.asq_tail + 1) % 32;
        w32(&mut self.dev, 0x1000, self.asq_tail);
        let at = ACQ + u64::from(self.acq_head) * 16;
        let dw3: u32 = self.mem.read_obj(GuestAddress(at + 12)).unwrap();
        let dw0: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        assert_eq!(
            dw3 & 0xffff,
            u32::from(u16::from_le_bytes([c[2], c[3]])),
            "cid"
        );
        assert_eq!(dw3 >> 16 & 1, 1, "phase of the first pass");
        self.acq_head += 1;
        w32(&mut self.dev, 0x1004, self.acq_head);
        (dw0, (dw3 >> 17) as u16 & !DNR)
    }

    /// One I/O queue pair of `entries` entries on vector 1.
    fn io_queues(&mut self, entries: u32) {
        let q = (entries - 1) << 16 | 1;
        assert_eq!(
            self.admin(cmd(0x05, 1, 0, IOCQ, 0, [q, 1 << 16 | 3, 0])).1,
            SUCCESS
        );
        assert_eq!(
            self.admin(cmd(0x01, 2, 0, IOSQ, 0, [q, 1 << 16 | 1, 0])).1,
            SUCCESS
        );
    }

    /// Puts I/O commands at SQ 1 slots from `first`, rings the doorbell
    /// once; returns the statuses of their completions from CQ slot `first`.
    fn io(&mut self, first: u32, cmds: &[[u8; 64]], size: u32) -> Vec<u16> {
        for (i, c) in cmds.iter().enumerate() {
            let slot = (first + i as u32) % size;
            self.mem
                .write_slice(c, GuestAddress(IOSQ + u64::from(slot) * 64))
                .unwrap();
        }
        w32(&mut self.dev, 0x1008, (first + cmds.len() as u32) % size);
        (0..cmds.len() as u32)
            .map(|i| {
                let slot = (first + i) % size;
                let dw3: u32 = self
                    .mem
                    .read_obj(GuestAddress(IOCQ + u64::from(slot) * 16 + 12))
                    .unwrap();
                (dw3 >> 17) as u16 & !DNR
            })
            .collect()
    }
}

#[test]
fn linux_style_bring_up_and_io() {
    let mut r = Rig::new(2048, false);
    let mut cap = [0u8; 8];
    r.dev.read(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), CAP);
    r.enable();
    // Identify controller: vendor, queue entry sizes, one namespace.
    assert_eq!(r.admin(cmd(0x06, 7, 0, IDBUF, 0, [1, 0, 0])), (0, SUCCESS));
    let mut id = [0u8; 520];
    r.mem.read_slice(&mut id, GuestAddress(IDBUF)).unwrap();
    assert_eq!(&id[0..2], &[0x36, 0x1b]);
    assert_eq!(&id[4..12], b"serial-1");
    assert_eq!((id[512], id[513]), (0x66, 0x44));
    assert_eq!(u32::from_le_bytes(id[516..520].try_into().unwrap()), 1);
    assert_eq!(r.msis.0.lock().unwrap().first(), Some(&0x40), "vector 0");
    // Identify namespace 1: its size in blocks.
    assert_eq!(r.admin(cmd(0x06, 8, 1, IDBUF, 0, [0, 0, 0])).1, SUCCESS);
    assert_eq!(r.mem.read_obj::<u64>(GuestAddress(IDBUF)).unwrap(), 2048);
    assert_eq!(r.admin(cmd(0x06, 9, 0, IDBUF, 0, [2, 0, 0])).1, SUCCESS);
    assert_eq!(r.mem.read_obj::<u32>(GuestAddress(IDBUF)).unwrap(), 1);
    // Number of queues.
    let (dw0, s) = r.admin(cmd(0x09, 10, 0, 0, 0, [7, 0x003f_003f, 0]));
    assert_eq!((dw0, s), (0x0003_0003, SUCCESS));
    r.io_queues(16);

    // Write 16 KiB from 4 pages through a PRP list, then read it back
    // into other pages.
    let data: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 251) as u8).collect();
    r.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    for i in 0..3u64 {
        r.mem
            .write_obj(DATA + (i + 1) * 4096, GuestAddress(LIST + i * 8))
            .unwrap();
    }
    let st = r.io(0, &[cmd(0x01, 1, 1, DATA, LIST, [100, 0, 31])], 16);
    assert_eq!(st, vec![SUCCESS]);
    let file = std::fs::read(&r.path).unwrap();
    assert_eq!(&file[100 * 512..100 * 512 + 16384], &data[..]);
    for i in 0..3u64 {
        r.mem
            .write_obj(0x60000 + (i + 1) * 4096, GuestAddress(LIST + i * 8))
            .unwrap();
    }
    let st = r.io(
        1,
        &[
            cmd(0x02, 2, 1, 0x60000, LIST, [100, 0, 31]),
            cmd(0x00, 3, 1, 0, 0, [0; 3]),
        ],
        16,
    );
    assert_eq!(st, vec![SUCCESS, SUCCESS]);
    let mut back = vec![0u8; 16384];
    r.mem.read_slice(&mut back, GuestAddress(0x60000)).unwrap();
    assert_eq!(back, data);
    assert!(r.msis.0.lock().unwrap().contains(&0x41), "I/O CQ's vector");

    // Shutdown, then disable.
    w32(&mut r.dev, 0x14, 6 << 16 | 4 << 20 | 1 | 1 << 14);
    assert_eq!(r32(&mut r.dev, 0x1c) >> 2 & 3, 2, "shutdown complete");
    w32(&mut r.dev, 0x14, 0);
    assert_eq!(r32(&mut r.dev, 0x1c), 0);
}

#[test]
fn bad_commands_get_error_statuses() {
    let mut r = Rig::new(64, false);
    r.enable();
    // Admin: unknown opcode, bad Identify CNS and namespace, a queue in
    // no memory, a SQ on a missing CQ, a vector past the table, deleting
    // what does not exist, a log page that does not exist.
    assert_eq!(r.admin(cmd(0xee, 1, 0, 0, 0, [0; 3])).1, INVALID_OPCODE);
    assert_eq!(
        r.admin(cmd(0x06, 2, 0, IDBUF, 0, [0x77, 0, 0])).1,
        INVALID_FIELD
    );
    assert_eq!(
        r.admin(cmd(0x06, 3, 9, IDBUF, 0, [0, 0, 0])).1,
        INVALID_NAMESPACE
    );
    assert_eq!(
        r.admin(cmd(0x06, 4, 0, 0xfff_f000, 0, [1, 0, 0])).1,
        DATA_TRANSFER_ERROR
    );
    assert_eq!(
        r.admin(cmd(0x05, 5, 0, 0xff_f000, 0, [15 << 16 | 1, 3, 0]))
            .1,
        INVALID_FIELD
    );
    assert_eq!(
        r.admin(cmd(0x05, 5, 0, IOCQ + 8, 0, [15 << 16 | 1, 3, 0]))
            .1,
        INVALID_FIELD
    );
    assert_eq!(
        r.admin(cmd(0x05, 6, 0, IOCQ, 0, [15 << 16 | 1, 9 << 16 | 3, 0]))
            .1,
        INVALID_VECTOR
    );
    assert_eq!(
        r.admin(cmd(0x05, 6, 0, IOCQ, 0, [15 << 16 | 9, 3, 0])).1,
        INVALID_QUEUE_ID
    );
    assert_eq!(
        r.admin(cmd(0x05, 6, 0, IOCQ, 0, [5000 << 16 | 1, 3, 0])).1,
        INVALID_QUEUE_SIZE
    );
    assert_eq!(
        r.admin(cmd(0x01, 7, 0, IOSQ, 0, [15 << 16 | 1, 2 << 16 | 1, 0]))
            .1,
        CQ_INVALID
    );
    assert_eq!(
        r.admin(cmd(0x00, 8, 0, 0, 0, [3, 0, 0])).1,
        INVALID_QUEUE_ID
    );
    assert_eq!(
        r.admin(cmd(0x04, 9, 0, 0, 0, [0, 0, 0])).1,
        INVALID_QUEUE_ID
    );
    assert_eq!(
        r.admin(cmd(0x02, 10, 0, IDBUF, 0, [0xc0, 0, 0])).1,
        INVALID_LOG_PAGE
    );
    assert_eq!(
        r.admin(cmd(0x09, 11, 0, 0, 0, [7, 0xffff, 0])).1,
        INVALID_FIELD
    );
    r.io_queues(16);
    assert_eq!(
        r.admin(cmd(0x04, 12, 0, 0, 0, [1, 0, 0])).1,
        INVALID_QUEUE_DELETION
    );

    // I/O: past the end, too long, a PRP outside memory, an unaligned
    // second page, a PRP list whose entry is outside memory, a wrong
    // namespace, an unknown opcode, SGL requested.
    r.mem.write_obj(0xfff_f000u64, GuestAddress(LIST)).unwrap();
    let mut sgl = cmd(0x02, 9, 1, DATA, 0, [0, 0, 0]);
    sgl[1] = 0x40;
    let st = r.io(
        0,
        &[
            cmd(0x02, 1, 1, DATA, 0, [60, 0, 7]),
            cmd(0x02, 2, 1, DATA, 0, [0, 0, 0xffff]),
            cmd(0x02, 3, 1, 0x7fff_0000, 0, [0, 0, 0]),
            cmd(0x02, 4, 1, DATA, DATA + 0x1200, [0, 0, 15]),
            cmd(0x01, 5, 1, DATA, LIST, [0, 0, 23]),
            cmd(0x02, 6, 2, DATA, 0, [0, 0, 0]),
            cmd(0x7f, 7, 1, DATA, 0, [0, 0, 0]),
            cmd(0x02, 8, 1, DATA, 0, [u32::MAX, u32::MAX, 0]),
            sgl,
        ],
        16,
    );
    assert_eq!(
        st,
        vec![
            LBA_OUT_OF_RANGE,
            INVALID_FIELD,
            DATA_TRANSFER_ERROR,
            PRP_OFFSET_INVALID,
            DATA_TRANSFER_ERROR,
            INVALID_NAMESPACE,
            INVALID_OPCODE,
            LBA_OUT_OF_RANGE,
            INVALID_FIELD,
        ]
    );
    assert!(std::fs::read(&r.path).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn read_only_namespace_refuses_writes() {
    let mut r = Rig::new(64, true);
    r.enable();
    r.io_queues(4);
    assert_eq!(
        r.io(0, &[cmd(0x01, 1, 1, DATA, 0, [0, 0, 0])], 4),
        vec![READ_ONLY]
    );
    assert_eq!(
        r.io(1, &[cmd(0x02, 2, 1, DATA, 0, [0, 0, 0])], 4),
        vec![SUCCESS]
    );
}

/// A CQ smaller than its SQ's burst: the controller stops when the CQ is
/// full and carries on when the driver frees entries.
#[test]
fn full_completion_queue_waits_for_its_head() {
    let mut r = Rig::new(64, false);
    r.enable();
    // CQ of 2 entries (holds 1), SQ of 4.
    assert_eq!(
        r.admin(cmd(0x05, 1, 0, IOCQ, 0, [1 << 16 | 1, 1 << 16 | 3, 0]))
            .1,
        SUCCESS
    );
    assert_eq!(
        r.admin(cmd(0x01, 2, 0, IOSQ, 0, [3 << 16 | 1, 1 << 16 | 1, 0]))
            .1,
        SUCCESS
    );
    for i in 0..3u64 {
        let c = cmd(0x00, 10 + i as u16, 1, 0, 0, [0; 3]);
        r.mem.write_slice(&c, GuestAddress(IOSQ + i * 64)).unwrap();
    }
    w32(&mut r.dev, 0x1008, 3);
    let dw3 = |r: &Rig, slot: u64| {
        r.mem
            .read_obj::<u32>(GuestAddress(IOCQ + slot * 16 + 12))
            .unwrap()
    };
    assert_eq!(dw3(&r, 0) & 0xffff, 10);
    assert_eq!(dw3(&r, 1), 0, "CQ full: nothing in the last slot");
    w32(&mut r.dev, 0x100c, 1);
    assert_eq!(dw3(&r, 1) & 0xffff, 11);
    w32(&mut r.dev, 0x100c, 0);
    // The second pass of slot 0 has phase 0.
    assert_eq!(dw3(&r, 0) & 0x1_ffff, 12);
}

#[test]
fn hostile_registers_and_queues() {
    // Admin queues outside memory: the controller reports a fatal status.
    let mut r = Rig::new(64, false);
    w32(&mut r.dev, 0x24, 31 << 16 | 31);
    w64(&mut r.dev, 0x28, 0x7fff_f000);
    w64(&mut r.dev, 0x30, ACQ);
    w32(&mut r.dev, 0x14, 6 << 16 | 4 << 20 | 1);
    assert_eq!(r32(&mut r.dev, 0x1c) & 3, 2, "CFS, not ready");
    w32(&mut r.dev, 0x1000, 1);
    // Unsupported page size.
    w32(&mut r.dev, 0x14, 0);
    w64(&mut r.dev, 0x28, ASQ);
    w32(&mut r.dev, 0x14, 1 << 7 | 1);
    assert_eq!(r32(&mut r.dev, 0x1c) & 3, 2);

    // Every register and doorbell offset, odd sizes and values: no panic,
    // and a doorbell past a queue's end is ignored.
    let mut r = Rig::new(64, false);
    r.enable();
    w32(&mut r.dev, 0x1000, 32);
    w32(&mut r.dev, 0x1000, u32::MAX);
    assert_eq!(r.mem.read_obj::<u32>(GuestAddress(ACQ + 12)).unwrap(), 0);
    for off in (0..BAR_SIZE + 8).step_by(4) {
        for len in [1usize, 2, 3, 4, 8] {
            let mut b = vec![0u8; len];
            r.dev.read(off, &mut b);
            if !(0x14..0x1c).contains(&off) && off < 0x1000 {
                r.dev.write(off, &vec![0xffu8; len]);
            }
        }
    }
    assert_eq!(
        r.admin(cmd(0x18, 1, 0, 0, 0, [0; 3])).1,
        SUCCESS,
        "still serving"
    );
}
