//! Counters of one block device.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct BlockMetrics {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flushes: AtomicU64,
    /// Requests answered with a status other than OK.
    pub errors: AtomicU64,
    /// Times a request had to wait for the rate limiter.
    pub rate_limiter_throttled: AtomicU64,
}
