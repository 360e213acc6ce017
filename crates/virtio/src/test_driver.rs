//! A driver in a test: lays out split virtqueues in a `GuestMemoryMmap`,
//! writes descriptors and publishes chains the way a guest would, and
//! reads back the used ring. Used by unit tests and the fuzz targets.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory the tests use: one region from 0.
pub const MEM_SIZE: u64 = 16 << 20;

pub fn guest_memory() -> GuestMemoryMmap {
    // A fixed, valid range: cannot fail short of the host being out of
    // address space.
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
        .expect("test guest memory")
}

/// One descriptor as a test describes it.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

impl Desc {
    pub fn r(addr: u64, len: u32) -> Self {
        Desc {
            addr,
            len,
            writable: false,
        }
    }
    pub fn w(addr: u64, len: u32) -> Self {
        Desc {
            addr,
            len,
            writable: true,
        }
    }
}

/// A split virtqueue laid out at a base address: descriptor table, then
/// the available ring, then the used ring (4-byte aligned).
pub struct TestQueue {
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    pub size: u16,
    next_free: u16,
    avail_idx: u16,
}

impl TestQueue {
    pub const NEXT: u16 = 1;
    pub const WRITE: u16 = 2;
    pub const INDIRECT: u16 = 4;

    /// Lays out a queue of `size` entries at `base` and zeroes its rings.
    pub fn new(mem: &GuestMemoryMmap, base: GuestAddress, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = GuestAddress(base.0 + 16 * n);
        let used = GuestAddress((avail.0 + 6 + 2 * n + 3) & !3);
        let end = used.0 + 6 + 8 * n;
        let zeros = vec![0u8; (end - base.0) as usize];
        // Tests pick bases inside MEM_SIZE.
        mem.write_slice(&zeros, base)
            .expect("queue inside test memory");
        TestQueue {
            desc,
            avail,
            used,
            size,
            next_free: 0,
            avail_idx: 0,
        }
    }

    /// The device-side queue, configured and ready.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).expect("power-of-two test queue");
        q.set_desc_table_address(Some(self.desc.0 as u32), Some((self.desc.0 >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail.0 as u32), Some((self.avail.0 >> 32) as u32));
        q.set_used_ring_address(Some(self.used.0 as u32), Some((self.used.0 >> 32) as u32));
        q.set_ready(true);
        q
    }

    /// Writes descriptor `index` of this queue's table.
    pub fn write_desc(
        &self,
        mem: &GuestMemoryMmap,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        Self::write_desc_at(mem, self.desc, index, addr, len, flags, next);
    }

    /// Writes descriptor `index` of the table at `table` (also indirect ones).
    pub fn write_desc_at(
        mem: &GuestMemoryMmap,
        table: GuestAddress,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = GuestAddress(table.0 + 16 * u64::from(index));
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        let _ = mem.write_slice(&raw, at);
    }

    /// Puts `head` in the next available slot and bumps the index.
    pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        let _ = mem.write_obj(head.to_le(), GuestAddress(self.avail.0 + 4 + 2 * slot));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail.0 + 2));
    }

    /// Writes the available index directly (to model a lying driver).
    pub fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) {
        self.avail_idx = idx;
        let _ = mem.write_obj(idx.to_le(), GuestAddress(self.avail.0 + 2));
    }

    /// Writes `descs` as a linked chain into free table slots and publishes
    /// it; returns the head.
    pub fn add_chain(&mut self, mem: &GuestMemoryMmap, descs: &[Desc]) -> u16 {
        let head = self.next_free % self.size;
        for (i, d) in descs.iter().enumerate() {
            let index = (self.next_free + i as u16) % self.size;
            let last = i + 1 == descs.len();
            let mut flags = if d.writable { Self::WRITE } else { 0 };
            if !last {
                flags |= Self::NEXT;
            }
            self.write_desc(mem, index, d.addr, d.len, flags, (index + 1) % self.size);
        }
        self.next_free = self.next_free.wrapping_add(descs.len() as u16);
        self.publish(mem, head);
        head
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj::<u16>(GuestAddress(self.used.0 + 2))
            .unwrap_or(0)
    }

    /// All used-ring entries so far as (id, len).
    pub fn used(&self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let n = self.used_idx(mem);
        (0..n)
            .map(|i| {
                let at = self.used.0 + 4 + 8 * u64::from(i % self.size);
                let id = mem.read_obj::<u32>(GuestAddress(at)).unwrap_or(u32::MAX);
                let len = mem
                    .read_obj::<u32>(GuestAddress(at + 4))
                    .unwrap_or(u32::MAX);
                (id, len)
            })
            .collect()
    }
}
