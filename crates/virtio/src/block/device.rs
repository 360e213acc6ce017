//! The block device: its options (read-only, cache mode, O_DIRECT, rate
//! limiter, I/O engine), the offered features (read-only, flush, discard and
//! write-zeroes), the configuration space the driver reads them from, and
//! the state a [`BlockHandle`] shares with the VMM so a running drive can
//! get a new image or new limits.

use super::disk::Disk;
use super::handle::BlockHandle;
use super::lock::LockError;
use super::metrics::BlockMetrics;
use super::request::ID_BYTES;
use super::uring::{AsyncIo, UringError};
use crate::device::{
    read_config_bytes, ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice,
};
use crate::queue::QueueError;
use crate::{device_type, features};
use rate_limiter::{RateLimiter, RateLimiterConfig, RateLimiterError, SharedRateLimiter};
use std::fs::File;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

pub const QUEUE_SIZE: u16 = 256;
/// Most data buffers per request (the descriptor table minus header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most ranges in one discard or write-zeroes request.
pub const MAX_RANGES: u32 = 32;
/// Most sectors in one discard/write-zeroes range (2 GiB).
pub const MAX_RANGE_SECTORS: u32 = 1 << 22;

/// Block feature bits.
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Event token of the rate limiter's timer.
pub const TOKEN_RATE_LIMIT: u32 = 0;
/// Event token of the Async engine's completion eventfd.
pub const TOKEN_IO_DONE: u32 = 1;

/// How reads, writes and flushes reach the image (Firecracker's
/// `io_engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// Blocking system calls on the thread that serves the queue.
    #[default]
    Sync,
    /// io_uring: requests are submitted, the queue keeps being served, and
    /// each is completed to the guest when the kernel reports it done.
    Async,
}

/// What a guest flush does (Firecracker's `cache_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    /// No flush is offered: the guest's writes reach the host page cache
    /// and stable storage whenever the host decides.
    Unsafe,
    /// Flush is offered and a guest flush is an fdatasync of the image.
    /// vessel's default (Firecracker's API defaults to `Unsafe`).
    #[default]
    Writeback,
}

/// How the user asked for a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    pub path: PathBuf,
    pub readonly: bool,
    /// GET_ID answer (at most 20 bytes are used).
    pub id: Option<String>,
    pub cache: CacheType,
    /// Bypass the host page cache (O_DIRECT) for aligned requests.
    pub direct: bool,
    /// Limits on bytes and requests per second; `None` is no limit (one
    /// can still be set while running, see [`BlockHandle`]).
    pub rate_limiter: Option<RateLimiterConfig>,
    pub io_engine: IoEngine,
    /// Lock the image (shared when read-only, else exclusive) so no other
    /// VM writes it meanwhile; `lock=off` turns it off.
    pub lock: bool,
}

impl BlockConfig {
    /// A writable, cached, unlimited disk on `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        BlockConfig {
            path: path.into(),
            readonly: false,
            id: None,
            cache: CacheType::default(),
            direct: false,
            rate_limiter: None,
            io_engine: IoEngine::Sync,
            lock: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk image {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the size of disk image {path}")]
    Size {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open disk image {path} with O_DIRECT (its file system may not support it: try direct=off)")]
    Direct {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad disk rate limiter")]
    RateLimiter(#[from] RateLimiterError),
    #[error("cannot start the async (io_uring) engine")]
    Uring(#[from] UringError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub dma: DmaNotify,
    pub queue: Queue,
    pub interrupt: Arc<dyn Interrupt>,
}

/// What the device and its [`BlockHandle`] share: the image can be
/// swapped while the device runs.
pub(super) struct Backend {
    pub disk: Disk,
    pub config: Vec<u8>,
    /// Where config-change notifications go while the driver runs.
    pub interrupt: Option<Arc<dyn Interrupt>>,
}

impl Backend {
    pub fn new(disk: Disk) -> Self {
        let config = config_space(disk.sectors);
        Backend {
            disk,
            config,
            interrupt: None,
        }
    }

    /// Takes `disk` as the image and returns where to announce it.
    pub fn swap(&mut self, disk: Disk) -> Option<Arc<dyn Interrupt>> {
        self.config = config_space(disk.sectors);
        self.disk = disk;
        self.interrupt.clone()
    }
}

pub(super) type SharedBackend = Arc<Mutex<Backend>>;

/// The backend; a poisoned lock is taken over (a panic cannot leave it
/// half-updated: each field is replaced whole).
pub(super) fn lock(b: &SharedBackend) -> MutexGuard<'_, Backend> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Block {
    pub(super) backend: SharedBackend,
    pub(super) readonly: bool,
    pub(super) direct: bool,
    pub(super) id: [u8; ID_BYTES],
    pub(super) cache: CacheType,
    pub(super) limiter: SharedRateLimiter,
    /// The Async engine's ring; `None` is the Sync engine.
    pub(super) uring: Option<AsyncIo>,
    pub(super) active: Option<Active>,
    pub metrics: Arc<BlockMetrics>,
}

impl Block {
    pub fn new(cfg: &BlockConfig) -> Result<Self, BlockError> {
        let mut disk = Disk::open(&cfg.path, cfg.readonly, cfg.direct)?;
        if cfg.lock {
            disk.take_lock(cfg.readonly)?;
        }
        let limiter = RateLimiter::new(&cfg.rate_limiter.unwrap_or_default())?;
        let mut b = Self::with_disk(disk, cfg.readonly, cfg.id.as_deref());
        b.direct = cfg.direct;
        b.cache = cfg.cache;
        b.limiter = SharedRateLimiter::new(limiter);
        b.with_io_engine(cfg.io_engine)
    }

    /// A writeback, unlimited device over an open file of `sectors`
    /// sectors (its limiter has no timer and cannot be changed).
    pub fn from_file(file: File, sectors: u64, readonly: bool, id: Option<&str>) -> Self {
        Self::with_disk(Disk::from_file(file, sectors), readonly, id)
    }

    fn with_disk(disk: Disk, readonly: bool, id: Option<&str>) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        if let Some(id) = id {
            for (d, s) in id_bytes.iter_mut().zip(id.bytes()) {
                *d = s;
            }
        }
        Block {
            backend: Arc::new(Mutex::new(Backend::new(disk))),
            readonly,
            direct: false,
            id: id_bytes,
            cache: CacheType::default(),
            limiter: SharedRateLimiter::default(),
            uring: None,
            active: None,
            metrics: Arc::new(BlockMetrics::default()),
        }
    }

    /// Uses `limiter` (replacing the unlimited one of `from_file`).
    pub fn with_rate_limiter(mut self, limiter: SharedRateLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    pub fn with_cache(mut self, cache: CacheType) -> Self {
        self.cache = cache;
        self
    }

    /// Serves reads, writes and flushes with `engine`; Async sets up an
    /// io_uring with room for a full queue of requests.
    pub fn with_io_engine(self, engine: IoEngine) -> Result<Self, BlockError> {
        self.with_uring_depth(engine, QUEUE_SIZE)
    }

    /// As [`Self::with_io_engine`], with at most `depth` requests in flight.
    pub(super) fn with_uring_depth(
        mut self,
        engine: IoEngine,
        depth: u16,
    ) -> Result<Self, BlockError> {
        self.uring = match engine {
            IoEngine::Sync => None,
            IoEngine::Async => Some(AsyncIo::new(depth)?),
        };
        Ok(self)
    }

    pub fn io_engine(&self) -> IoEngine {
        match self.uring {
            Some(_) => IoEngine::Async,
            None => IoEngine::Sync,
        }
    }

    /// File descriptors the event loop watches, with their tokens.
    pub fn event_fds(&self) -> Vec<(RawFd, u32)> {
        let limiter = self.limiter.fd().map(|fd| (fd, TOKEN_RATE_LIMIT));
        let uring = self.uring.as_ref().map(|u| (u.fd(), TOKEN_IO_DONE));
        limiter.into_iter().chain(uring).collect()
    }

    /// What the VMM keeps to change this drive while it runs.
    pub fn handle(&self) -> BlockHandle {
        BlockHandle::new(
            self.backend.clone(),
            self.limiter.clone(),
            self.readonly,
            self.direct,
            self.metrics.clone(),
        )
    }
}

/// `struct virtio_blk_config` up to write_zeroes_may_unmap.
pub(super) fn config_space(sectors: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&sectors.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[34..36].copy_from_slice(&1u16.to_le_bytes());
    c[36..40].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_RANGES.to_le_bytes());
    // Discards are aligned to 4 KiB, the host page and block size.
    c[44..48].copy_from_slice(&8u32.to_le_bytes());
    c[48..52].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_RANGES.to_le_bytes());
    c[56] = 1;
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | F_SEG_MAX;
        if self.cache == CacheType::Writeback {
            f |= F_FLUSH;
        }
        if self.readonly {
            f | F_RO
        } else {
            f | F_DISCARD | F_WRITE_ZEROES
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&lock(&self.backend).config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let queue = a
            .queues
            .into_iter()
            .next()
            .ok_or(ActivateError::BadQueue(0))?;
        // A wait left over from before a reset would never be woken: the
        // transport drops timer events while the device is inactive.
        self.limiter.lock().event_handled();
        lock(&self.backend).interrupt = Some(a.interrupt.clone());
        self.active = Some(Active {
            mem: a.mem,
            dma: a.dma,
            queue,
            interrupt: a.interrupt,
        });
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError> {
        match queue {
            0 => self.process_queue(),
            q => Err(QueueError::NoSuchQueue(q)),
        }
    }

    fn handle_event(&mut self, token: u32) -> Result<(), QueueError> {
        match token {
            TOKEN_RATE_LIMIT => {
                self.limiter.lock().event_handled();
                self.process_queue()
            }
            // Completions, and room for more requests.
            TOKEN_IO_DONE => self.process_queue(),
            _ => Ok(()),
        }
    }

    fn reset(&mut self) {
        lock(&self.backend).interrupt = None;
        // Before the queue goes: nothing in flight may finish into guest
        // memory the driver has taken back.
        if let Some(u) = &mut self.uring {
            u.cancel_all();
        }
        self.active = None;
    }
}
