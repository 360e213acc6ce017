//! The balloon device: the target (`num_pages`, set from the command line
//! and optionally dropped back to zero after a delay), the page count the
//! driver reports (`actual`), and a once-a-second timer that asks the
//! driver for fresh statistics and applies the delayed deflate.

use super::metrics::BalloonMetrics;
use crate::device::{
    read_config_bytes, ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice,
};
use crate::queue::{Chain, QueueError};
use crate::{device_type, features};
use std::os::fd::{AsRawFd, RawFd};
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
    pub(super) num_pages: u32,
    pub(super) actual: u32,
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
        Balloon {
            config,
            num_pages: u32::try_from(pages).unwrap_or(u32::MAX),
            actual: 0,
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
        self.num_pages = pages;
        if let Some(a) = &self.active {
            a.interrupt.signal_config_change();
        }
    }

    fn config_bytes(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[..4].copy_from_slice(&self.num_pages.to_le_bytes());
        c[4..].copy_from_slice(&self.actual.to_le_bytes());
        c
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
        self.actual = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
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
        self.active = Some(Active {
            mem: a.mem,
            dma: a.dma,
            queues: a.queues,
            interrupt: a.interrupt,
            stats_chain: None,
            started: Instant::now(),
        });
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
        self.active = None;
        self.actual = 0;
        if let Some(t) = &mut self.timer {
            let _ = t.clear();
        }
    }
}
