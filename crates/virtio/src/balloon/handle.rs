//! A running balloon seen from other threads (the API): its target can
//! change and the driver is told at once; the driver's progress and its
//! latest statistics can be read.

use super::device::{BalloonStats, PAGE_SHIFT};
use crate::device::Interrupt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// What the device and its handles share.
#[derive(Default)]
pub(super) struct Shared {
    /// The target in 4 KiB pages (`num_pages`).
    pub target: AtomicU32,
    /// What the driver reports it holds (`actual`).
    pub actual: AtomicU32,
    /// Set while the driver runs the device.
    pub interrupt: Mutex<Option<Arc<dyn Interrupt>>>,
}

impl Shared {
    /// Sets the target and tells a running driver.
    pub fn set_target_pages(&self, pages: u32) {
        self.target.store(pages, Ordering::SeqCst);
        let interrupt = self.interrupt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = interrupt.as_ref() {
            i.signal_config_change();
        }
    }
}

/// Controls of one balloon; cheap to clone.
#[derive(Clone)]
pub struct BalloonHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) stats: Arc<Mutex<BalloonStats>>,
}

impl BalloonHandle {
    /// Asks the guest to give back `mib` MiB (0 takes everything back).
    pub fn set_target_mib(&self, mib: u64) {
        let pages = (mib << 20) >> PAGE_SHIFT;
        self.shared
            .set_target_pages(u32::try_from(pages).unwrap_or(u32::MAX));
    }

    /// The target in MiB.
    pub fn target_mib(&self) -> u64 {
        u64::from(self.shared.target.load(Ordering::SeqCst)) << PAGE_SHIFT >> 20
    }

    /// What the driver holds now, in MiB.
    pub fn actual_mib(&self) -> u64 {
        u64::from(self.shared.actual.load(Ordering::SeqCst)) << PAGE_SHIFT >> 20
    }

    /// The target and actual size in 4 KiB pages.
    pub fn pages(&self) -> (u32, u32) {
        (
            self.shared.target.load(Ordering::SeqCst),
            self.shared.actual.load(Ordering::SeqCst),
        )
    }

    /// The statistics the driver last reported, as (tag, value).
    pub fn stats(&self) -> BalloonStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
