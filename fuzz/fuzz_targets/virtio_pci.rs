//! The virtio-pci transport's register file: the fuzzer's bytes are a
//! sequence of configuration-space and BAR accesses (offset, size, value)
//! from a driver that does anything it likes, with the rng device behind.
#![no_main]

use devices::pci::msix::MsiSink;
use devices::{BusDevice, PciDevice};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use virtio::pci::{VirtioPciDevice, BAR_SIZE};
use virtio::rng::Rng;
use vm_memory::{GuestAddress, GuestMemoryMmap};

struct Drop_;
impl MsiSink for Drop_ {
    fn signal(&self, _: u64, _: u32) {}
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mut dev =
        VirtioPciDevice::new(Box::new(Rng::new()), mem, Arc::new(Drop_), 0xc000_0000).unwrap();
    for op in data.chunks_exact(8) {
        let off = u64::from(u16::from_le_bytes([op[1], op[2]])) % BAR_SIZE;
        let len = [1usize, 2, 4, 8][usize::from(op[0] >> 1 & 3)];
        let val = &op[3..3 + len.min(5)];
        match op[0] & 0x19 {
            0 => dev.write(off, val),
            1 => {
                let mut b = vec![0u8; len];
                dev.read(off, &mut b);
            }
            8 => dev.config_write(
                usize::from(op[1] % 64),
                op[2] & 3,
                &val[..len.min(4).min(val.len())],
            ),
            _ => {
                let _ = dev.config_read(usize::from(op[1]));
            }
        }
    }
});
