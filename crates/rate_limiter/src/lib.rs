//! Rate limiters for virtio devices, as Firecracker's API defines them
//! for drives and network interfaces: a [`RateLimiter`] holds up to two
//! [`TokenBucket`]s, one for bandwidth (bytes) and one for operations,
//! and a timerfd that fires when a request that could not get its tokens
//! will find them. A device that is refused stops serving its queue,
//! watches [`RateLimiter::fd`], and calls [`RateLimiter::event_handled`]
//! then serves the queue again when it fires.
//!
//! [`SharedRateLimiter`] is the same limiter behind a mutex, so the VMM
//! can change it while the device runs (`PATCH /drives/{id}`).

mod bucket;
mod clock;
mod timer;

pub use bucket::{BucketError, TokenBucket, TokenBucketConfig, MAX_REFILL_TIME_MS};
pub use clock::{Clock, FakeClock, MonotonicClock};

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use timer::Timer;

/// A limiter's buckets; `None` is no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimiterConfig {
    pub bandwidth: Option<TokenBucketConfig>,
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    /// No bucket at all (or only unlimited ones).
    pub fn is_unlimited(&self) -> bool {
        let off = |b: Option<TokenBucketConfig>| b.is_none_or(|b| b.is_unlimited());
        off(self.bandwidth) && off(self.ops)
    }
}

/// What to do with one bucket in [`RateLimiter::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BucketUpdate {
    /// Leave it as it is, tokens included.
    #[default]
    Keep,
    /// No limit of this kind any more.
    Disable,
    /// A new bucket (starting full, with its burst); an unlimited config
    /// disables.
    Set(TokenBucketConfig),
}

/// A change to a running limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimiterUpdate {
    pub bandwidth: BucketUpdate,
    pub ops: BucketUpdate,
}

impl RateLimiterUpdate {
    /// Firecracker's PATCH rule: a bucket the body leaves out is kept, a
    /// bucket given with size or refill time 0 is disabled.
    pub fn patch(cfg: &RateLimiterConfig) -> Self {
        let one = |b: Option<TokenBucketConfig>| b.map_or(BucketUpdate::Keep, BucketUpdate::Set);
        RateLimiterUpdate {
            bandwidth: one(cfg.bandwidth),
            ops: one(cfg.ops),
        }
    }

    /// Replaces both buckets: what `cfg` leaves out is disabled.
    pub fn replace(cfg: &RateLimiterConfig) -> Self {
        let one = |b: Option<TokenBucketConfig>| b.map_or(BucketUpdate::Disable, BucketUpdate::Set);
        RateLimiterUpdate {
            bandwidth: one(cfg.bandwidth),
            ops: one(cfg.ops),
        }
    }
}

/// Which bucket tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Bytes,
    Ops,
}

#[derive(Debug, thiserror::Error)]
pub enum RateLimiterError {
    #[error("bad token bucket")]
    Bucket(#[from] BucketError),
    #[error("cannot create or set the rate limiter's timerfd")]
    Timer(#[source] std::io::Error),
    #[error("this device was built without a rate limiter timer: it cannot be limited")]
    NoTimer,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct RateLimiterMetrics {
    /// Requests refused for want of tokens (each makes the device wait).
    pub throttled: AtomicU64,
    /// Timer expiries that let a waiting device go on.
    pub timer_events: AtomicU64,
}

/// Token buckets for one direction of one device.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: Option<Timer>,
    clock: Arc<dyn Clock>,
    /// Refused and waiting for the timer: nothing passes until it fires.
    blocked: bool,
    metrics: Arc<RateLimiterMetrics>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bandwidth", &self.bandwidth)
            .field("ops", &self.ops)
            .field("blocked", &self.blocked)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter on the host's monotonic clock.
    pub fn new(cfg: &RateLimiterConfig) -> Result<Self, RateLimiterError> {
        Self::with_clock(cfg, Arc::new(MonotonicClock::new()))
    }

    /// A limiter reading the time from `clock` (its timer still counts
    /// real time).
    pub fn with_clock(
        cfg: &RateLimiterConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RateLimiterError> {
        let now = clock.now_ns();
        let make = |b: Option<TokenBucketConfig>| match b {
            Some(b) => TokenBucket::new(b, now),
            None => Ok(None),
        };
        Ok(RateLimiter {
            bandwidth: make(cfg.bandwidth)?,
            ops: make(cfg.ops)?,
            timer: Some(Timer::new().map_err(RateLimiterError::Timer)?),
            clock,
            blocked: false,
            metrics: Arc::default(),
        })
    }

    /// A limiter that never limits and has no timer (for devices built
    /// in tests and fuzzing); [`RateLimiter::update`] refuses to limit it.
    pub fn unlimited() -> Self {
        RateLimiter {
            bandwidth: None,
            ops: None,
            timer: None,
            clock: Arc::new(MonotonicClock::new()),
            blocked: false,
            metrics: Arc::default(),
        }
    }

    /// The timerfd to watch for input; `None` for [`RateLimiter::unlimited`].
    pub fn fd(&self) -> Option<RawFd> {
        self.timer.as_ref().map(Timer::fd)
    }

    pub fn metrics(&self) -> Arc<RateLimiterMetrics> {
        self.metrics.clone()
    }

    pub fn config(&self) -> RateLimiterConfig {
        RateLimiterConfig {
            bandwidth: self.bandwidth.as_ref().map(TokenBucket::config),
            ops: self.ops.as_ref().map(TokenBucket::config),
        }
    }

    /// Waiting for the timer: every consume fails until it fires.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    fn bucket(&mut self, kind: TokenKind) -> &mut Option<TokenBucket> {
        match kind {
            TokenKind::Bytes => &mut self.bandwidth,
            TokenKind::Ops => &mut self.ops,
        }
    }

    /// Takes `tokens` of `kind`; when they are not there, takes nothing,
    /// arms the timer for when they will be and returns false.
    pub fn consume(&mut self, tokens: u64, kind: TokenKind) -> bool {
        let want = match kind {
            TokenKind::Bytes => (tokens, 0),
            TokenKind::Ops => (0, tokens),
        };
        self.take(want)
    }

    /// One operation of `bytes` bytes: both buckets or neither.
    pub fn consume_request(&mut self, bytes: u64) -> bool {
        self.take((bytes, 1))
    }

    fn take(&mut self, (bytes, ops): (u64, u64)) -> bool {
        if self.bandwidth.is_none() && self.ops.is_none() {
            return true;
        }
        if self.blocked {
            return false;
        }
        let now = self.clock.now_ns();
        let wait_b = self.bandwidth.as_mut().map_or(0, |b| b.wait_ns(bytes, now));
        let wait_o = self.ops.as_mut().map_or(0, |b| b.wait_ns(ops, now));
        let wait = wait_b.max(wait_o);
        if wait > 0 {
            self.block(wait);
            return false;
        }
        // Both were checked at the same instant: these succeed.
        let ok_b = self
            .bandwidth
            .as_mut()
            .is_none_or(|b| b.consume(bytes, now));
        let ok_o = self.ops.as_mut().is_none_or(|b| b.consume(ops, now));
        ok_b && ok_o
    }

    fn block(&mut self, wait_ns: u64) {
        self.metrics.throttled.fetch_add(1, Ordering::Relaxed);
        let Some(timer) = self.timer.as_mut() else {
            // Only unlimited limiters lack a timer; never block without one.
            return;
        };
        match timer.arm(wait_ns) {
            Ok(()) => self.blocked = true,
            Err(e) => log::error!("rate limiter: cannot arm the timer, not limiting: {e}"),
        }
    }

    /// The timer fired: drains it and lets consumers try again. Returns
    /// whether the limiter had been waiting.
    pub fn event_handled(&mut self) -> bool {
        if let Some(t) = self.timer.as_mut() {
            t.drain();
        }
        let was = std::mem::replace(&mut self.blocked, false);
        if was {
            self.metrics.timer_events.fetch_add(1, Ordering::Relaxed);
        }
        was
    }

    /// Changes the buckets. A waiting limiter's timer is set to fire at
    /// once, so its device re-evaluates under the new limits.
    pub fn update(&mut self, update: &RateLimiterUpdate) -> Result<(), RateLimiterError> {
        let now = self.clock.now_ns();
        let new = |u: BucketUpdate, old: &Option<TokenBucket>| match u {
            BucketUpdate::Keep => Ok(old.clone()),
            BucketUpdate::Disable => Ok(None),
            BucketUpdate::Set(cfg) => TokenBucket::new(cfg, now),
        };
        let bandwidth = new(update.bandwidth, &self.bandwidth)?;
        let ops = new(update.ops, &self.ops)?;
        if self.timer.is_none() && (bandwidth.is_some() || ops.is_some()) {
            return Err(RateLimiterError::NoTimer);
        }
        self.bandwidth = bandwidth;
        self.ops = ops;
        if self.blocked {
            if let Some(t) = self.timer.as_mut() {
                t.arm(1).map_err(RateLimiterError::Timer)?;
            }
        }
        Ok(())
    }

    /// Tokens that could be taken now (`None`: no limit of that kind).
    pub fn available(&mut self, kind: TokenKind) -> Option<u64> {
        let now = self.clock.now_ns();
        self.bucket(kind).as_mut().map(|b| b.available(now))
    }
}

/// A rate limiter shared by its device and the VMM, which may change it
/// at any time; the device locks it per request (uncontended).
#[derive(Debug, Clone)]
pub struct SharedRateLimiter(Arc<Mutex<RateLimiter>>);

impl SharedRateLimiter {
    pub fn new(limiter: RateLimiter) -> Self {
        SharedRateLimiter(Arc::new(Mutex::new(limiter)))
    }

    /// The limiter; a poisoned lock is taken over (its state is plain
    /// numbers, always consistent between calls).
    pub fn lock(&self) -> MutexGuard<'_, RateLimiter> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn update(&self, update: &RateLimiterUpdate) -> Result<(), RateLimiterError> {
        self.lock().update(update)
    }

    pub fn config(&self) -> RateLimiterConfig {
        self.lock().config()
    }

    pub fn fd(&self) -> Option<RawFd> {
        self.lock().fd()
    }
}

impl Default for SharedRateLimiter {
    fn default() -> Self {
        SharedRateLimiter::new(RateLimiter::unlimited())
    }
}

#[cfg(test)]
mod tests;
