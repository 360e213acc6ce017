//! The balloon device: the target (`num_pages`, set from the command line
//! and optionally dropped back to zero after a delay), the page count the
//! driver reports (`actual`), and a once-a-second timer that asks the
//! driver for fresh statistics and applies the delayed deflate.

use super::handle::{BalloonHandle, Shared};
use super::metrics::BalloonMetrics;
use crate::device::{
    read_config_bytes, ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice,
};
use crate::queue::{Chain, QueueError};
use crate::{device_type, features};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::timerfd::TimerFd;

pub const QUEUE_SIZE: u16 = 128;
pub const INFLATE: u16 = 0;
pub const DEFLATE: u16 = 1;
pub const STATS: u16 = 2;
pub const F_STATS_VQ: u64 = 1 << 1;
pub const TOKEN_TIMER: u32 = 0;
/// Balloon pages are 4 KiB whatever the guest's page size.
pub const PAGE_SHIFT: u64 = 12;

/// How the user asked for a balloon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BalloonConfig {
    /// Memory the guest should hand back, in MiB.
    pub target_mib: u64,
    /// Give everything back this long after the driver starts.
    pub deflate_after: Option<Duration>,
}

/// The latest statistics the driver reported, as (tag, value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStats {
    pub entries: Vec<(u16, u64)>,
}

pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub dma: DmaNotify,
    pub queues: Vec<Queue>,
    pub interrupt: Arc<dyn Interrupt>,
    pub stats_chain: Option<Chain>,
    pub started: Instant,
}

pub struct Balloon {
    pub(super) config: BalloonConfig,
    /// Target and actual size, shared with [`BalloonHandle`]s.
    pub(super) shared: Arc<Shared>,
    pub(super) active: Option<Active>,
    timer: Option<TimerFd>,
    pub stats: Arc<Mutex<BalloonStats>>,
    pub metrics: Arc<BalloonMetrics>,
}

impl Balloon {
    pub fn new(config: BalloonConfig) -> Self {
        let pages = (config.target_mib << 20) >> PAGE_SHIFT;
        let timer = match TimerFd::new() {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("balloon: no timer, statistics will not refresh: {e}");
                None
            }
        };
        let shared = Shared::default();
        shared
            .target
            .store(u32::try_from(pages).unwrap_or(u32::MAX), Ordering::SeqCst);
        Balloon {
            config,
            shared: Arc::new(shared),
            active: None,
            timer,
            stats: Arc::default(),
            metrics: Arc::default(),
        }
    }

    pub fn event_fds(&self) -> Vec<(RawFd, u32)> {
        self.timer
            .iter()
            .map(|t| (t.as_raw_fd(), TOKEN_TIMER))
            .collect()
    }

    /// Sets the target in 4 KiB pages and tells the driver.
    pub fn set_target_pages(&mut self, pages: u32) {
        self.shared.set_target_pages(pages);
    }

    /// The target in 4 KiB pages.
    pub fn target_pages(&self) -> u32 {
        self.shared.target.load(Ordering::SeqCst)
    }

    /// Controls for other threads.
    pub fn handle(&self) -> BalloonHandle {
        BalloonHandle {
            shared: self.shared.clone(),
            stats: self.stats.clone(),
        }
    }

    fn config_bytes(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[..4].copy_from_slice(&self.target_pages().to_le_bytes());
        c[4..].copy_from_slice(&self.shared.actual.load(Ordering::SeqCst).to_le_bytes());
        c
    }

    fn set_interrupt(&self, interrupt: Option<Arc<dyn Interrupt>>) {
        *self
            .shared
            .interrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = interrupt;
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_INDIRECT_DESC | F_STATS_VQ
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (bytes 4..8) is the driver's to write.
        let mut c = self.config_bytes();
        for (i, &b) in data.iter().enumerate() {
            let at = offset.saturating_add(i as u64);
            if (4..8).contains(&at) {
                c[at as usize] = b;
            }
        }
        let actual = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        self.shared.actual.store(actual, Ordering::SeqCst);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if a.queues.len() != 3 {
            return Err(ActivateError::BadQueue(a.queues.len()));
        }
        if let Some(t) = &mut self.timer {
            let second = Duration::from_secs(1);
            t.reset(second, Some(second)).map_err(|e| {
                ActivateError::Backend(std::io::Error::from_raw_os_error(e.errno()))
            })?;
        }
        self.set_interrupt(Some(a.interrupt.clone()));
        self.active = Some(Active {
            mem: a.mem,
            dma: a.dma,
            queues: a.queues,
            interrupt: a.interrupt,
            stats_chain: None,
            started: Instant::now(),
        });
        // Linux primes the statistics queue with its first report before
        // it sets DRIVER_OK, and then waits for that buffer to come back:
        // pick it up now, or no statistics ever arrive.
        if let Err(e) = self.process_stats() {
            log::warn!("balloon: the statistics queue is broken: {e}");
        }
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError> {
        match queue {
            INFLATE | DEFLATE => self.process_pages(queue),
            STATS => self.process_stats(),
            q => Err(QueueError::NoSuchQueue(q)),
        }
    }

    fn handle_event(&mut self, token: u32) -> Result<(), QueueError> {
        if token != TOKEN_TIMER {
            return Ok(());
        }
        if let Some(t) = &mut self.timer {
            let _ = t.wait();
        }
        self.tick()
    }

    fn reset(&mut self) {
        self.set_interrupt(None);
        self.active = None;
        self.shared.actual.store(0, Ordering::SeqCst);
        if let Some(t) = &mut self.timer {
            let _ = t.clear();
        }
    }
}
