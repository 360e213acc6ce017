//! The emulated NVMe controller against a hostile driver: the fuzzer's
//! bytes are a series of steps, each either a 64-byte submission queue
//! entry put in guest memory (at the admin SQ or the I/O SQ area), a
//! register or doorbell write, or 8 bytes of guest memory (PRP lists,
//! queue contents). The controller starts enabled with its admin queues in
//! guest memory, over a 64 KiB image. Nothing may panic or loop forever;
//! every command must complete or be left outstanding (AERs).
#![no_main]

use devices::pci::msix::{MsiSink, Msix, CONTROL_ENABLE};
use libfuzzer_sys::fuzz_target;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use storage::nvme::Controller;
use virtio::block::Image;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct NoMsi;
impl MsiSink for NoMsi {
    fn signal(&self, _: u64, _: u32) {}
}

fn memfd(len: u64) -> File {
    // SAFETY: memfd_create with a NUL-terminated name returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"fuzz-nvme".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).expect("size the image");
    f
}

const MEM: usize = 256 << 10;
const ASQ: u64 = 0x1000;
const ACQ: u64 = 0x2000;

fn w32(c: &mut Controller, off: u64, v: u32) {
    c.write(off, &v.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let readonly = data.first().is_some_and(|b| b & 1 != 0);
    let image = Image::from_file(memfd(64 << 10), 128, readonly);
    let mut msix = Msix::new(5, Arc::new(NoMsi));
    msix.set_control(CONTROL_ENABLE);
    let mut c = Controller::new(mem.clone(), image, msix, "fuzz".into());
    // Admin queues of 16 entries, 64/16-byte I/O entries, enabled.
    w32(&mut c, 0x24, 15 << 16 | 15);
    w32(&mut c, 0x28, ASQ as u32);
    w32(&mut c, 0x30, ACQ as u32);
    w32(&mut c, 0x14, 6 << 16 | 4 << 20 | 1);
    let mut asq_tail = 0u32;
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 4 {
            // A command into the next admin SQ slot, then its doorbell.
            0 => {
                let Some((cmd, tail)) = rest.split_at_checked(64) else { break };
                rest = tail;
                let at = ASQ + u64::from(asq_tail) * 64;
                let _ = mem.write_slice(cmd, GuestAddress(at));
                asq_tail = (asq_tail + 1) % 16;
                w32(&mut c, 0x1000, asq_tail);
                // The driver consumed the completion.
                w32(&mut c, 0x1004, asq_tail);
            }
            // A register or doorbell write: 2 offset bytes, 4 value bytes.
            1 => {
                let Some((b, tail)) = rest.split_at_checked(6) else { break };
                rest = tail;
                let off = u64::from(u16::from_le_bytes([b[0], b[1]])) % 0x2000;
                c.write(off, &b[2..6]);
            }
            // 8 bytes of guest memory at a page-granular place.
            2 => {
                let Some((b, tail)) = rest.split_at_checked(10) else { break };
                rest = tail;
                let at = u64::from(u16::from_le_bytes([b[0], b[1]])) * 8 % MEM as u64;
                let _ = mem.write_slice(&b[2..10], GuestAddress(at));
            }
            // A 64-byte entry anywhere (I/O SQs the fuzzer created).
            _ => {
                let Some((b, tail)) = rest.split_at_checked(66) else { break };
                rest = tail;
                let at = u64::from(u16::from_le_bytes([b[0], b[1]])) * 64 % MEM as u64;
                let _ = mem.write_slice(&b[2..66], GuestAddress(at));
            }
        }
        let mut r = [0u8; 8];
        c.read(0x1c, &mut r[..4]);
    }
});
