//! The device buses: a sorted map of non-overlapping address ranges to
//! devices ([`Bus`]), and the pair of them, port I/O and MMIO, that engines
//! call through [`hypervisor::DeviceIo`] ([`IoBus`]).
//!
//! The range table sits behind a `RwLock` so ranges can be added or removed
//! while vCPUs run (PCI BAR moves). A lookup clones the device's `Arc` and
//! drops the table lock before the device runs, so a device may change the
//! bus from inside its own handler without deadlocking.

use hypervisor::DeviceIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A device reachable through a bus range. `offset` is relative to the base
/// of the range the device was inserted at; `data.len()` is the access size.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Why a range could not be inserted or removed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} overlaps an existing range")]
    Overlap { base: u64, len: u64 },
    #[error("range at {base:#x} has zero length")]
    ZeroLength { base: u64 },
    #[error("range {base:#x}+{len:#x} wraps around the address space")]
    WrapAround { base: u64, len: u64 },
    #[error("no range starts at {base:#x}")]
    NotFound { base: u64 },
}

/// A shared, lockable device as the bus holds it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Range {
    base: u64,
    len: u64,
    device: SharedDevice,
}

impl Range {
    /// Last address inside the range (no overflow: insert checked it).
    fn last(&self) -> u64 {
        self.base + (self.len - 1)
    }
}

/// Locks a device, recovering the guard if an earlier holder panicked: one
/// broken device access must not take the whole VMM down with it.
pub fn lock_device<T: ?Sized>(device: &Mutex<T>) -> MutexGuard<'_, T> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Address ranges `[base, base + len)` mapped to devices, sorted by base,
/// never overlapping.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<Vec<Range>>,
}

impl Bus {
    pub fn new() -> Self {
        Bus::default()
    }

    /// Maps `device` at `[base, base + len)`. The same device may be mapped
    /// at several ranges; each sees offsets relative to its own base.
    pub fn insert(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength { base });
        }
        let last = base
            .checked_add(len - 1)
            .ok_or(BusError::WrapAround { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        // The first range that starts after `base`; the one before it is
        // the only lower neighbour that could reach into the new range.
        let idx = ranges.partition_point(|r| r.base <= base);
        let prev_overlaps = idx > 0 && ranges[idx - 1].last() >= base;
        let next_overlaps = ranges.get(idx).is_some_and(|r| r.base <= last);
        if prev_overlaps || next_overlaps {
            return Err(BusError::Overlap { base, len });
        }
        ranges.insert(idx, Range { base, len, device });
        Ok(())
    }

    /// Unmaps the range that starts at `base` and returns its device.
    pub fn remove(&self, base: u64) -> Result<SharedDevice, BusError> {
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let idx = ranges
            .binary_search_by_key(&base, |r| r.base)
            .map_err(|_| BusError::NotFound { base })?;
        Ok(ranges.remove(idx).device)
    }

    /// The device whose range holds all of `[addr, addr + size)`, with the
    /// access's offset inside that range. An access that starts in a range
    /// but runs past its end (or a zero-sized one) belongs to nobody.
    pub fn resolve(&self, addr: u64, size: usize) -> Option<(u64, SharedDevice)> {
        let size = u64::try_from(size).ok().filter(|&s| s > 0)?;
        let access_last = addr.checked_add(size - 1)?;
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let idx = ranges.partition_point(|r| r.base <= addr).checked_sub(1)?;
        let range = ranges.get(idx)?;
        if access_last > range.last() {
            return None;
        }
        Some((addr - range.base, range.device.clone()))
    }

    /// Delivers a read; false when no device claims the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                lock_device(&device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Delivers a write; false when no device claims the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                lock_device(&device).write(offset, data);
                true
            }
            None => false,
        }
    }

    /// The mapped ranges as (base, len), in address order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        ranges.iter().map(|r| (r.base, r.len)).collect()
    }
}

/// The port I/O bus and the MMIO bus of one VM; what engines call.
#[derive(Default)]
pub struct IoBus {
    pub pio: Bus,
    pub mmio: Bus,
    /// Accesses served, by kind: each is a vCPU exit on KVM and a trap to
    /// the device model on the software engine.
    pub counts: IoCounts,
}

/// How many port and MMIO accesses the bus served.
#[derive(Debug, Default)]
pub struct IoCounts {
    pub pio_in: AtomicU64,
    pub pio_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl IoBus {
    pub fn new() -> Self {
        IoBus::default()
    }
}

impl DeviceIo for IoBus {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        bump(&self.counts.pio_in);
        if !self.pio.read(u64::from(port), data) {
            log::debug!("unclaimed pio read {port:#x} size {}", data.len());
            data.fill(0xff);
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        bump(&self.counts.pio_out);
        if !self.pio.write(u64::from(port), data) {
            log::debug!("unclaimed pio write {port:#x} {data:02x?}");
        }
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        bump(&self.counts.mmio_read);
        if !self.mmio.read(addr, data) {
            log::debug!("unclaimed mmio read {addr:#x} size {}", data.len());
            data.fill(0xff);
        }
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) {
        bump(&self.counts.mmio_write);
        if !self.mmio.write(addr, data) {
            log::debug!("unclaimed mmio write {addr:#x} {data:02x?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last access and answers reads with its offset.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn insert_rejects_overlap_zero_length_and_wrap() {
        let bus = Bus::new();
        bus.insert(0x10, 0x10, probe()).unwrap();
        bus.insert(0x30, 0x10, probe()).unwrap();
        assert_eq!(
            bus.insert(0x18, 2, probe()),
            Err(BusError::Overlap { base: 0x18, len: 2 })
        );
        assert_eq!(
            bus.insert(0x08, 0x9, probe()),
            Err(BusError::Overlap { base: 0x08, len: 9 })
        );
        assert_eq!(
            bus.insert(0x1f, 0x12, probe()),
            Err(BusError::Overlap {
                base: 0x1f,
                len: 0x12
            })
        );
        assert_eq!(
            bus.insert(0x00, 0x100, probe()),
            Err(BusError::Overlap {
                base: 0,
                len: 0x100
            })
        );
        assert_eq!(
            bus.insert(0x50, 0, probe()),
            Err(BusError::ZeroLength { base: 0x50 })
        );
        assert_eq!(
            bus.insert(u64::MAX, 2, probe()),
            Err(BusError::WrapAround {
                base: u64::MAX,
                len: 2
            })
        );
        // Adjacent ranges on both sides are fine, as is the very top.
        bus.insert(0x20, 0x10, probe()).unwrap();
        bus.insert(0x08, 0x8, probe()).unwrap();
        bus.insert(u64::MAX, 1, probe()).unwrap();
        assert_eq!(
            bus.ranges(),
            vec![
                (0x08, 8),
                (0x10, 0x10),
                (0x20, 0x10),
                (0x30, 0x10),
                (u64::MAX, 1)
            ]
        );
    }

    #[test]
    fn lookup_gives_offset_from_base() {
        let bus = Bus::new();
        let a = probe();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x60, 5, probe()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
        assert!(bus.write(0x3f9, &[0xab]));
        assert_eq!(a.lock().unwrap().last_write, Some((1, vec![0xab])));
        assert!(!bus.read(0x3f7, &mut data));
        assert!(!bus.read(0x400, &mut data));
        assert!(!bus.read(0, &mut data));
    }

    #[test]
    fn straddling_access_is_unclaimed() {
        let bus = Bus::new();
        bus.insert(0x100, 4, probe()).unwrap();
        bus.insert(0x104, 4, probe()).unwrap();
        let mut four = [0u8; 4];
        assert!(bus.read(0x100, &mut four));
        assert!(!bus.read(0x102, &mut four));
        assert!(!bus.write(0x107, &[1, 2]));
        assert!(bus.write(0x106, &[1, 2]));
        // Zero-sized and wrapping accesses belong to nobody.
        assert!(!bus.read(0x100, &mut []));
        assert!(!bus.read(u64::MAX, &mut four));
    }

    #[test]
    fn remove_unmaps() {
        let bus = Bus::new();
        bus.insert(0x100, 4, probe()).unwrap();
        assert!(bus.remove(0x101).is_err());
        bus.remove(0x100).unwrap();
        assert!(!bus.write(0x100, &[0]));
        bus.insert(0x100, 8, probe()).unwrap();
    }

    #[test]
    fn iobus_unclaimed_reads_all_ones() {
        let io = IoBus::new();
        io.pio.insert(0x70, 2, probe()).unwrap();
        let mut data = [0u8; 4];
        io.pio_read(0x80, &mut data);
        assert_eq!(data, [0xff; 4]);
        io.mmio_read(0xfee0_0000, &mut data);
        assert_eq!(data, [0xff; 4]);
        let mut one = [0u8; 1];
        io.pio_read(0x71, &mut one);
        assert_eq!(one, [1]);
        io.pio_write(0x1234, &[1]);
        io.mmio_write(0x1234, &[1]);
    }

    struct Panicky;
    impl BusDevice for Panicky {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(7);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {
            panic!("device bug");
        }
    }

    #[test]
    fn poisoned_device_still_reachable() {
        let io = Arc::new(IoBus::new());
        io.pio
            .insert(0x10, 1, Arc::new(Mutex::new(Panicky)))
            .unwrap();
        let io2 = io.clone();
        let r = std::thread::spawn(move || io2.pio_write(0x10, &[0])).join();
        assert!(r.is_err());
        let mut d = [0u8];
        io.pio_read(0x10, &mut d);
        assert_eq!(d, [7]);
    }

    /// A device that maps another device from inside its handler.
    struct Remapper(Arc<Bus>);
    impl BusDevice for Remapper {
        fn read(&mut self, _offset: u64, _data: &mut [u8]) {}
        fn write(&mut self, _offset: u64, data: &[u8]) {
            let base = u64::from(data[0]) << 8;
            let _ = self.0.insert(base, 1, probe());
        }
    }

    #[test]
    fn device_may_change_bus_from_handler() {
        let bus = Arc::new(Bus::new());
        bus.insert(0, 1, Arc::new(Mutex::new(Remapper(bus.clone()))))
            .unwrap();
        assert!(bus.write(0, &[0x12]));
        let mut d = [0u8];
        assert!(bus.read(0x1200, &mut d));
    }
}
