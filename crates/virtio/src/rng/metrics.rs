//! Counters of the entropy device.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct RngMetrics {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}
