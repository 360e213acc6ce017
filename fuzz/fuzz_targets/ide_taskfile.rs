//! The emulated IDE controller against a hostile driver: the fuzzer's
//! bytes are a series of steps, each a write or read of a taskfile
//! register or the data port, a device-control write, a bus-master
//! register write (command, status, PRD table pointer), or 8 bytes of
//! guest memory (PRD entries), over a 64 KiB image. Nothing may panic or
//! loop forever.
#![no_main]

use devices::{BusDevice, IrqLine};
use libfuzzer_sys::fuzz_target;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use storage::ide::Ide;
use virtio::block::Image;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct NoIrq;
impl IrqLine for NoIrq {
    fn set_level(&self, _: bool) {}
}

fn memfd(len: u64) -> File {
    // SAFETY: memfd_create with a NUL-terminated name returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"fuzz-ide".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).expect("size the image");
    f
}

const MEM: usize = 256 << 10;

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let readonly = data.first().is_some_and(|b| b & 1 != 0);
    let image = Image::from_file(memfd(64 << 10), 128, readonly);
    let mut ide = Ide::new(image, mem.clone(), Arc::new(NoIrq), 0xc000_0000, "fuzz").unwrap();
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let Some((&arg, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        match op % 6 {
            0 => {
                let Some((&v, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                ide.cmd_write(u64::from(arg % 9), &[v]);
            }
            1 => {
                let mut b = [0u8];
                ide.cmd_read(u64::from(arg % 9), &mut b);
            }
            // Data port: `arg` words in or out (2 or 4 bytes each).
            2 => {
                let width = if op & 0x80 != 0 { 4 } else { 2 };
                for _ in 0..arg {
                    let mut w = [0u8; 4];
                    if op & 0x40 != 0 {
                        ide.cmd_write(0, &[arg; 4][..width]);
                    } else {
                        ide.cmd_read(0, &mut w[..width]);
                    }
                }
            }
            3 => ide.ctl_write(&[arg]),
            4 => {
                let Some((v, tail)) = rest.split_at_checked(4) else {
                    break;
                };
                rest = tail;
                let len = [1usize, 2, 4][usize::from(op >> 6) % 3];
                BusDevice::write(&mut ide, u64::from(arg % 17), &v[..len]);
                let mut b = [0u8; 4];
                BusDevice::read(&mut ide, u64::from(arg % 17), &mut b[..len]);
            }
            _ => {
                let Some((v, tail)) = rest.split_at_checked(8) else {
                    break;
                };
                rest = tail;
                let at = u64::from(arg) * 1024 + u64::from(op >> 3) * 8;
                let _ = mem.write_slice(v, GuestAddress(at % MEM as u64));
            }
        }
    }
});
