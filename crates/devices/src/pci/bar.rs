//! Keeps a memory BAR's range on the MMIO bus where the guest programmed
//! it: after each configuration write the owner passes the BAR's current
//! decode window ([`super::config::PciConfig::bar_mapping`]) and the range
//! is removed from its old place and inserted at the new one.
//!
//! Holds only weak references, so a device that owns its `BarMapping` and
//! the bus that owns the device do not keep each other alive.

use crate::bus::{Bus, BusDevice};
use std::sync::{Mutex, Weak};

pub struct BarMapping {
    bus: Weak<dyn BusOwner>,
    device: Weak<Mutex<dyn BusDevice>>,
    mapped: Option<(u64, u64)>,
}

/// Something that holds the MMIO bus (an `IoBus`, or a bare `Bus` in tests).
pub trait BusOwner: Send + Sync {
    fn mmio_bus(&self) -> &Bus;
}

impl BusOwner for crate::bus::IoBus {
    fn mmio_bus(&self) -> &Bus {
        &self.mmio
    }
}

impl BusOwner for Bus {
    fn mmio_bus(&self) -> &Bus {
        self
    }
}

impl BarMapping {
    /// A BAR of `device` on `bus`, not yet mapped.
    pub fn new(bus: Weak<dyn BusOwner>, device: Weak<Mutex<dyn BusDevice>>) -> Self {
        BarMapping {
            bus,
            device,
            mapped: None,
        }
    }

    /// Where the range is mapped now.
    pub fn mapped(&self) -> Option<(u64, u64)> {
        self.mapped
    }

    /// Moves the range to `want` (or unmaps it for `None`). A window that
    /// overlaps another device's range stays unmapped: the guest put it
    /// there, the guest gets nothing back from it.
    pub fn update(&mut self, want: Option<(u64, u64)>) {
        if want == self.mapped {
            return;
        }
        let (Some(bus), Some(device)) = (self.bus.upgrade(), self.device.upgrade()) else {
            return;
        };
        let bus = bus.mmio_bus();
        if let Some((base, _)) = self.mapped.take() {
            if let Err(e) = bus.remove(base) {
                log::warn!("bar at {base:#x} was not mapped: {e}");
            }
        }
        if let Some((base, len)) = want {
            match bus.insert(base, len, device) {
                Ok(()) => self.mapped = want,
                Err(e) => log::warn!("cannot map bar at {base:#x}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Dev;
    impl BusDevice for Dev {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, _: u64, _: &[u8]) {}
    }

    #[test]
    fn moves_and_refuses_overlap() {
        let bus = Arc::new(Bus::new());
        let dev: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Dev));
        let other: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Dev));
        bus.insert(0x9000, 0x1000, other).unwrap();
        let weak_bus: Weak<dyn BusOwner> = Arc::downgrade(&(bus.clone() as Arc<dyn BusOwner>));
        let mut bar = BarMapping::new(weak_bus, Arc::downgrade(&dev));
        bar.update(Some((0x1000, 0x1000)));
        assert_eq!(bus.ranges(), vec![(0x1000, 0x1000), (0x9000, 0x1000)]);
        bar.update(Some((0x2000, 0x1000)));
        assert_eq!(bus.ranges(), vec![(0x2000, 0x1000), (0x9000, 0x1000)]);
        bar.update(Some((0x9800, 0x1000)));
        assert_eq!(bar.mapped(), None);
        assert_eq!(bus.ranges(), vec![(0x9000, 0x1000)]);
        bar.update(Some((0x2000, 0x1000)));
        bar.update(None);
        assert_eq!(bus.ranges(), vec![(0x9000, 0x1000)]);
    }
}
