//! [`BlockHandle`]: what the VMM keeps of a running drive to serve
//! Firecracker's `PATCH /drives/{id}`: new rate limits, and a new image
//! (`path_on_host`), which the guest sees as a disk change (new capacity
//! in the configuration space and a config-change interrupt).

use super::device::{lock, BlockError, SharedBackend};
use super::disk::Disk;
use super::metrics::BlockMetrics;
use rate_limiter::{RateLimiterConfig, RateLimiterError, RateLimiterUpdate, SharedRateLimiter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A running drive's controls; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct BlockHandle {
    backend: SharedBackend,
    limiter: SharedRateLimiter,
    readonly: bool,
    direct: bool,
    metrics: Arc<BlockMetrics>,
}

impl BlockHandle {
    pub(super) fn new(
        backend: SharedBackend,
        limiter: SharedRateLimiter,
        readonly: bool,
        direct: bool,
        metrics: Arc<BlockMetrics>,
    ) -> Self {
        BlockHandle {
            backend,
            limiter,
            readonly,
            direct,
            metrics,
        }
    }

    /// Changes the drive's rate limiter; a queue waiting on the old
    /// limits is re-evaluated at once.
    pub fn update_rate_limiter(&self, update: &RateLimiterUpdate) -> Result<(), RateLimiterError> {
        self.limiter.update(update)
    }

    pub fn rate_limiter_config(&self) -> RateLimiterConfig {
        self.limiter.config()
    }

    pub fn rate_limiter(&self) -> &SharedRateLimiter {
        &self.limiter
    }

    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }

    /// The image in use (`None` for a device built over an open file).
    pub fn path(&self) -> Option<PathBuf> {
        lock(&self.backend).disk.path.clone()
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        lock(&self.backend).disk.sectors
    }

    /// Opens `path` the way the drive was opened (read-only, O_DIRECT,
    /// locked) and makes it the drive's image, releasing the old one's
    /// lock; requests after this call use it.
    /// Returns the new capacity in sectors. On error the old image stays.
    pub fn swap_image(&self, path: &Path) -> Result<u64, BlockError> {
        let mut disk = Disk::open(path, self.readonly, self.direct)?;
        let sectors = disk.sectors;
        let mut backend = lock(&self.backend);
        // Locked as the old image was; the old one's lock goes at once.
        disk.take_lock_like(&backend.disk, self.readonly)?;
        backend.disk.release_lock();
        let interrupt = backend.swap(disk);
        // Notify after unlocking: the interrupt takes the transport's
        // MSI-X locks, which must never wait behind this one.
        drop(backend);
        if let Some(i) = interrupt {
            i.signal_config_change();
        }
        Ok(sectors)
    }
}
