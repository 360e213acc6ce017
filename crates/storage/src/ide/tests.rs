//! The controller driven as libata drives it, and as a hostile driver would.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use virtio::block::BlockConfig;
use vm_memory::{Bytes, GuestAddress};

#[derive(Default)]
struct Line {
    high: AtomicBool,
    rises: AtomicUsize,
}
impl IrqLine for Line {
    fn set_level(&self, high: bool) {
        if high {
            self.rises.fetch_add(1, Ordering::SeqCst);
        }
        self.high.store(high, Ordering::SeqCst);
    }
}

struct Rig {
    ide: Ide,
    mem: GuestMemoryMmap,
    line: Arc<Line>,
    path: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rig(sectors: usize) -> Rig {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!("vessel-ide-{}-{n}", std::process::id()));
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i / 512) as u8).collect();
    std::fs::write(&path, data).unwrap();
    let image = Image::open(&BlockConfig::new(&path)).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let line = Arc::new(Line::default());
    let ide = Ide::new(image, mem.clone(), line.clone(), 0xc100_0000, "ide-serial").unwrap();
    Rig {
        ide,
        mem,
        line,
        path,
    }
}

impl Rig {
    fn out(&mut self, reg: u64, v: u8) {
        self.ide.cmd_write(reg, &[v]);
    }
    fn inb(&mut self, reg: u64) -> u8 {
        let mut b = [0u8];
        self.ide.cmd_read(reg, &mut b);
        b[0]
    }
    fn data_in(&mut self, bytes: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..bytes / 2 {
            let mut w = [0u8; 2];
            self.ide.cmd_read(0, &mut w);
            v.extend_from_slice(&w);
        }
        v
    }
    /// LBA28 taskfile and a command.
    fn lba28(&mut self, lba: u32, count: u8, cmd: u8) {
        self.out(2, count);
        self.out(3, lba as u8);
        self.out(4, (lba >> 8) as u8);
        self.out(5, (lba >> 16) as u8);
        self.out(6, 0x40 | (lba >> 24) as u8 & 0xf);
        self.out(7, cmd);
    }
    fn lba48(&mut self, lba: u64, count: u16, cmd: u8) {
        self.out(2, (count >> 8) as u8);
        self.out(3, (lba >> 24) as u8);
        self.out(4, (lba >> 32) as u8);
        self.out(5, (lba >> 40) as u8);
        self.out(2, count as u8);
        self.out(3, lba as u8);
        self.out(4, (lba >> 8) as u8);
        self.out(5, (lba >> 16) as u8);
        self.out(6, 0x40);
        self.out(7, cmd);
    }
    fn bm(&mut self, off: u64, data: &[u8]) {
        BusDevice::write(&mut self.ide, off, data);
    }
}

#[test]
fn identify_and_pio_read_write() {
    let mut r = rig(64);
    // Reset signature.
    assert_eq!((r.inb(2), r.inb(3), r.inb(4), r.inb(5)), (1, 1, 0, 0));
    r.out(7, 0xec);
    assert!(r.line.high.load(Ordering::SeqCst), "IRQ 14 up");
    assert_eq!(r.inb(7), DRDY | DSC | DRQ);
    assert!(
        !r.line.high.load(Ordering::SeqCst),
        "status read acknowledges"
    );
    let id = r.data_in(512);
    assert_eq!(&id[54..60], b"evssle", "model, byte-swapped");
    assert_eq!(u32::from_le_bytes(id[120..124].try_into().unwrap()), 64);
    assert_eq!(r.inb(7), DRDY | DSC);

    // Two sectors by PIO from LBA 5, then write one at LBA 9.
    r.lba28(5, 2, 0x20);
    let d = r.data_in(1024);
    assert!(d[..512].iter().all(|&b| b == 5) && d[512..].iter().all(|&b| b == 6));
    r.lba28(9, 1, 0x30);
    assert_eq!(r.inb(7) & DRQ, DRQ);
    for _ in 0..256 {
        r.ide.cmd_write(0, &[0xab, 0xcd]);
    }
    assert_eq!(r.inb(7), DRDY | DSC);
    let file = std::fs::read(&r.path).unwrap();
    assert_eq!(&file[9 * 512..9 * 512 + 4], &[0xab, 0xcd, 0xab, 0xcd]);
    // READ MULTIPLE EXT of 3 sectors at LBA48 address 60.
    r.lba48(60, 3, 0x29);
    let d = r.data_in(1536);
    assert_eq!((d[0], d[512], d[1024]), (60, 61, 62));
    r.out(7, 0xe7);
    assert_eq!(r.inb(7), DRDY | DSC, "flush");
}

#[test]
fn dma_through_prd_table() {
    let mut r = rig(64);
    // PRD table at 0x1000: 512 bytes at 0x2000, then 1 KiB at 0x9000 (EOT).
    r.mem.write_obj(0x2000u32, GuestAddress(0x1000)).unwrap();
    r.mem.write_obj(512u32, GuestAddress(0x1004)).unwrap();
    r.mem.write_obj(0x9000u32, GuestAddress(0x1008)).unwrap();
    r.mem
        .write_obj(1024u32 | 1 << 31, GuestAddress(0x100c))
        .unwrap();
    r.bm(4, &0x1000u32.to_le_bytes());
    r.bm(0, &[0x08]); // to memory
    r.lba28(10, 3, 0xc8);
    r.bm(0, &[0x09]); // start
    let mut st = [0u8];
    BusDevice::read(&mut r.ide, 2, &mut st);
    assert_eq!(st[0] & 7, 4, "interrupt, not active, no error");
    assert_eq!(r.inb(7), DRDY | DSC);
    assert_eq!(r.mem.read_obj::<u8>(GuestAddress(0x2000)).unwrap(), 10);
    assert_eq!(r.mem.read_obj::<u8>(GuestAddress(0x9000)).unwrap(), 11);
    assert_eq!(r.mem.read_obj::<u8>(GuestAddress(0x9200)).unwrap(), 12);
    // Write it back at LBA 40 (command after start this time).
    r.bm(0, &[0x00]);
    r.bm(2, &[0x06]);
    r.bm(0, &[0x01]);
    r.lba48(40, 3, 0x35);
    assert_eq!(r.inb(7), DRDY | DSC);
    let file = std::fs::read(&r.path).unwrap();
    assert_eq!(
        (file[40 * 512], file[41 * 512], file[42 * 512]),
        (10, 11, 12)
    );
}

#[test]
fn hostile_commands_and_tables_abort() {
    let mut r = rig(64);
    // Past the end, CHS addressing, an unknown command.
    r.lba28(63, 2, 0x20);
    assert_eq!(r.inb(7) & ERR, ERR);
    r.out(6, 0);
    r.out(7, 0x20);
    assert_eq!(r.inb(7) & ERR, ERR);
    r.out(7, 0x99);
    assert_eq!((r.inb(7) & ERR, r.inb(1)), (ERR, 0x04));
    // A PRD outside memory, a table with no EOT that ends short, one
    // that loops on itself, a direction mismatch: errors, no hang.
    for (addr, ctl) in [(0xfff0_0000u32, 512u32 | 1 << 31), (0x2000, 2 | 1 << 31)] {
        r.mem.write_obj(addr, GuestAddress(0x1000)).unwrap();
        r.mem.write_obj(ctl, GuestAddress(0x1004)).unwrap();
        r.bm(4, &0x1000u32.to_le_bytes());
        r.bm(0, &[0x08]);
        r.lba28(0, 1, 0xc8);
        r.bm(0, &[0x09]);
        assert_eq!(r.inb(7) & ERR, ERR);
        let mut st = [0u8];
        BusDevice::read(&mut r.ide, 2, &mut st);
        assert_eq!(st[0] & 2, 2, "bus master error");
        r.bm(0, &[0]);
        r.bm(2, &[6]);
    }
    // A table of 8192 two-byte entries without EOT for a 255-sector
    // read: the walk stops at MAX_PRDS entries.
    for i in 0..8192u64 {
        r.mem
            .write_obj(0x2000u32, GuestAddress(0x10000 + i * 8))
            .unwrap();
        r.mem
            .write_obj(2u32, GuestAddress(0x10004 + i * 8))
            .unwrap();
    }
    r.bm(4, &0x10000u32.to_le_bytes());
    r.bm(0, &[0x08]);
    r.lba28(0, 255, 0xc8);
    r.bm(0, &[0x09]);
    assert_eq!(r.inb(7) & ERR, ERR);
    // A table at the very end of memory.
    r.bm(0, &[0x00]);
    r.bm(4, &0xf_fffcu32.to_le_bytes());
    r.lba28(0, 1, 0xca);
    r.bm(0, &[0x01]);
    assert_eq!(r.inb(7) & ERR, ERR, "table leaves memory");
    // The slave is absent: its registers read 0.
    r.out(6, 0x10);
    assert_eq!((r.inb(7), r.inb(2)), (0, 0));
    r.out(7, 0xec);
    r.out(6, 0x00);
    assert_eq!(r.inb(7) & DRQ, 0, "the command went nowhere");
    // Software reset brings the signature back.
    r.ide.ctl_write(&[0x04]);
    r.ide.ctl_write(&[0x00]);
    assert_eq!((r.inb(2), r.inb(3), r.inb(7)), (1, 1, DRDY | DSC));
    // Odd port accesses.
    let mut big = [0u8; 8];
    r.ide.cmd_read(9, &mut big);
    r.ide.cmd_write(3, &[]);
    BusDevice::read(&mut r.ide, u64::MAX, &mut big);
    BusDevice::write(&mut r.ide, u64::MAX - 1, &big);
}
