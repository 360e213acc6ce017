//! The common configuration window of the virtio PCI transport (virtio
//! 1.2 section 4.1.4.3): feature pages, device status, and the per-queue
//! registers behind `queue_select`. Field accesses of the wrong size or at
//! unknown offsets read as zero and are dropped when written.

use super::{lock, VirtioPciDevice, NO_VECTOR};
use crate::status;
use virtio_queue::QueueT;

/// Transport state the driver programs through the common window.
#[derive(Debug, Default, Clone)]
pub(super) struct CommonConfig {
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    pub status: u8,
    pub queue_select: u16,
}

fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(data) {
        *d = *s;
    }
    u64::from_le_bytes(b)
}

fn put(data: &mut [u8], v: u64) {
    let b = v.to_le_bytes();
    for (d, s) in data.iter_mut().zip(b.iter()) {
        *d = *s;
    }
}

impl VirtioPciDevice {
    fn selected(&self) -> Option<usize> {
        let q = usize::from(self.common.queue_select);
        (q < self.queues.len()).then_some(q)
    }

    /// Whether the driver may still change the selected queue.
    fn queue_writable(&self, q: usize) -> bool {
        !self.active && self.queues.get(q).is_some_and(|q| !q.ready())
    }

    pub(super) fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        let c = &self.common;
        let q = self.selected();
        let queue = q.and_then(|i| self.queues.get(i));
        let value: u64 = match (offset, data.len()) {
            (0x00, 4) => u64::from(c.device_feature_select),
            (0x04, 4) => match c.device_feature_select {
                0 => self.device.features() & 0xffff_ffff,
                1 => self.device.features() >> 32,
                _ => 0,
            },
            (0x08, 4) => u64::from(c.driver_feature_select),
            (0x0c, 4) => match c.driver_feature_select {
                0 => c.driver_features & 0xffff_ffff,
                1 => c.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => u64::from(lock(&self.vectors).config),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => u64::from(c.status),
            (0x15, 1) => 0,
            (0x16, 2) => u64::from(c.queue_select),
            (0x18, 2) => queue.map_or(0, |q| u64::from(q.size())),
            (0x1a, 2) => q.map_or(u64::from(NO_VECTOR), |i| {
                u64::from(
                    lock(&self.vectors)
                        .queues
                        .get(i)
                        .copied()
                        .unwrap_or(NO_VECTOR),
                )
            }),
            (0x1c, 2) => queue.map_or(0, |q| u64::from(q.ready())),
            (0x1e, 2) => q.map_or(0, |i| i as u64),
            (0x20, 4 | 8) => queue.map_or(0, |q| q.desc_table()),
            (0x24, 4) => queue.map_or(0, |q| q.desc_table() >> 32),
            (0x28, 4 | 8) => queue.map_or(0, |q| q.avail_ring()),
            (0x2c, 4) => queue.map_or(0, |q| q.avail_ring() >> 32),
            (0x30, 4 | 8) => queue.map_or(0, |q| q.used_ring()),
            (0x34, 4) => queue.map_or(0, |q| q.used_ring() >> 32),
            _ => 0,
        };
        put(data, value);
    }

    pub(super) fn common_write(&mut self, offset: u64, data: &[u8]) {
        let v = le(data);
        let q = self.selected();
        match (offset, data.len()) {
            (0x00, 4) => self.common.device_feature_select = v as u32,
            (0x08, 4) => self.common.driver_feature_select = v as u32,
            (0x0c, 4) => {
                if self.common.status & status::FEATURES_OK == 0 {
                    let f = &mut self.common.driver_features;
                    match self.common.driver_feature_select {
                        0 => *f = (*f & !0xffff_ffff) | v,
                        1 => *f = (*f & 0xffff_ffff) | v << 32,
                        _ => {}
                    }
                }
            }
            (0x10, 2) => {
                let vector = self.checked_vector(v as u16);
                lock(&self.vectors).config = vector;
            }
            (0x14, 1) => self.set_status(v as u8),
            (0x16, 2) => self.common.queue_select = v as u16,
            (0x18, 2) => {
                if let Some(i) = q.filter(|&i| self.queue_writable(i)) {
                    // An invalid size (not a power of two, above the
                    // maximum) is refused and the old one reads back.
                    let _ = self.queues[i].try_set_size(v as u16);
                }
            }
            (0x1a, 2) => {
                if let Some(i) = q {
                    let vector = self.checked_vector(v as u16);
                    if let Some(slot) = lock(&self.vectors).queues.get_mut(i) {
                        *slot = vector;
                    }
                }
            }
            (0x1c, 2) => {
                if let Some(i) = q.filter(|&i| self.queue_writable(i)) {
                    if v == 1 {
                        self.queues[i].set_ready(true);
                    }
                }
            }
            (0x20 | 0x24 | 0x28 | 0x2c | 0x30 | 0x34, 4) | (0x20 | 0x28 | 0x30, 8) => {
                if let Some(i) = q.filter(|&i| self.queue_writable(i)) {
                    self.set_queue_address(i, offset, data.len(), v);
                }
            }
            _ => log::debug!("virtio-pci: ignored common write at {offset:#x} {data:02x?}"),
        }
    }

    fn set_queue_address(&mut self, i: usize, offset: u64, len: usize, v: u64) {
        let queue = &mut self.queues[i];
        let (lo, hi) = match (offset % 8, len) {
            (0, 8) => (Some(v as u32), Some((v >> 32) as u32)),
            (0, _) => (Some(v as u32), None),
            _ => (None, Some(v as u32)),
        };
        match offset & !7 {
            0x20 => queue.set_desc_table_address(lo, hi),
            0x28 => queue.set_avail_ring_address(lo, hi),
            _ => queue.set_used_ring_address(lo, hi),
        }
    }

    /// A vector the table has, or NO_VECTOR (which tells the driver the
    /// mapping failed).
    fn checked_vector(&self, v: u16) -> u16 {
        if v < lock(&self.msix).vectors() {
            v
        } else {
            NO_VECTOR
        }
    }
}
