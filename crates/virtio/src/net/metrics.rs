//! Counters of one network device.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct NetMetrics {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_dropped: AtomicU64,
    /// Times a frame had to wait for the receive rate limiter.
    pub rx_rate_limiter_throttled: AtomicU64,
    /// Times a frame had to wait for the transmit rate limiter.
    pub tx_rate_limiter_throttled: AtomicU64,
}
