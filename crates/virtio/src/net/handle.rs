//! [`NetHandle`]: what the VMM keeps of a running network interface to
//! serve Firecracker's `PATCH /network-interfaces/{id}`: new receive and
//! transmit rate limits.

use super::metrics::NetMetrics;
use rate_limiter::{RateLimiterConfig, RateLimiterError, RateLimiterUpdate, SharedRateLimiter};
use std::sync::Arc;

/// A running interface's controls; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct NetHandle {
    rx: SharedRateLimiter,
    tx: SharedRateLimiter,
    metrics: Arc<NetMetrics>,
}

impl NetHandle {
    pub(super) fn new(
        rx: SharedRateLimiter,
        tx: SharedRateLimiter,
        metrics: Arc<NetMetrics>,
    ) -> Self {
        NetHandle { rx, tx, metrics }
    }

    /// Changes both limiters (checked first: on error neither changes);
    /// a direction waiting on its old limits is re-evaluated at once.
    pub fn update_rate_limiters(
        &self,
        rx: &RateLimiterUpdate,
        tx: &RateLimiterUpdate,
    ) -> Result<(), RateLimiterError> {
        let (mut rx_l, mut tx_l) = (self.rx.lock(), self.tx.lock());
        let old_rx = rx_l.config();
        rx_l.update(rx)?;
        if let Err(e) = tx_l.update(tx) {
            // Put rx back as it was (its buckets restart full).
            let _ = rx_l.update(&RateLimiterUpdate::replace(&old_rx));
            return Err(e);
        }
        Ok(())
    }

    /// (receive, transmit) limits.
    pub fn rate_limiter_configs(&self) -> (RateLimiterConfig, RateLimiterConfig) {
        (self.rx.config(), self.tx.config())
    }

    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }
}
