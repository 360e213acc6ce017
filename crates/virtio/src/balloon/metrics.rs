//! Counters of the balloon.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct BalloonMetrics {
    pub inflated: AtomicU64,
    pub deflated: AtomicU64,
    pub stats_updates: AtomicU64,
}
