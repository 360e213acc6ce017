//! The limiter over a fake clock: both buckets together, blocking until
//! the timer, updates while running, the shared handle.

use super::*;
use std::time::Duration;

fn limiter(cfg: RateLimiterConfig) -> (RateLimiter, FakeClock) {
    let clock = FakeClock::new();
    let l = RateLimiter::with_clock(&cfg, Arc::new(clock.clone())).unwrap();
    (l, clock)
}

fn bytes_per_100ms(size: u64) -> RateLimiterConfig {
    RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size,
            one_time_burst: 0,
            refill_time_ms: 100,
        }),
        ops: None,
    }
}

/// Whether `fd` becomes readable within `ms`.
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

#[test]
fn no_buckets_never_limit() {
    let (mut l, _) = limiter(RateLimiterConfig::default());
    for _ in 0..1000 {
        assert!(l.consume_request(u64::MAX));
    }
    assert!(!l.is_blocked());
    assert_eq!(l.metrics().throttled.load(Ordering::Relaxed), 0);
    assert!(RateLimiterConfig::default().is_unlimited());
}

#[test]
fn refused_request_blocks_until_the_timer_fires() {
    let (mut l, clock) = limiter(bytes_per_100ms(1000));
    assert!(l.consume(1000, TokenKind::Bytes));
    assert!(!l.consume(500, TokenKind::Bytes), "bucket empty");
    assert!(l.is_blocked());
    assert!(l.timer.as_ref().unwrap().is_armed(), "timer armed");
    assert_eq!(l.metrics().throttled.load(Ordering::Relaxed), 1);
    clock.advance(Duration::from_millis(100));
    assert!(
        !l.consume(1, TokenKind::Bytes),
        "nothing passes while waiting for the timer"
    );
    // The timer counts real time: 50 ms for the 500 bytes.
    let fd = l.fd().unwrap();
    assert!(readable(fd, 2000), "the timerfd fires");
    assert!(l.event_handled());
    assert!(!readable(fd, 0), "drained");
    assert!(!l.event_handled(), "a second read does not block");
    assert!(l.consume(500, TokenKind::Bytes));
    assert_eq!(l.metrics().timer_events.load(Ordering::Relaxed), 1);
}

#[test]
fn timer_is_set_for_when_the_tokens_will_be_there() {
    // 10 bytes per 100 ms; 5 missing: 50 ms.
    let (mut l, _) = limiter(bytes_per_100ms(10));
    assert!(l.consume(10, TokenKind::Bytes));
    let start = std::time::Instant::now();
    assert!(!l.consume(5, TokenKind::Bytes));
    assert!(readable(l.fd().unwrap(), 2000));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(49) && waited < Duration::from_millis(1000),
        "waited {waited:?}"
    );
}

#[test]
fn request_takes_both_buckets_or_neither() {
    let cfg = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig::per_second(1000)),
        ops: Some(TokenBucketConfig::per_second(2)),
    };
    let (mut l, clock) = limiter(cfg);
    assert!(l.consume_request(100));
    assert!(l.consume_request(100));
    assert!(!l.consume_request(100), "out of ops");
    assert_eq!(l.available(TokenKind::Bytes), Some(800), "bytes untouched");
    clock.advance(Duration::from_millis(500));
    l.event_handled();
    assert!(l.consume_request(100), "one op back after half a second");
    assert!(!l.consume_request(2000), "refused as a whole");
    assert_eq!(l.available(TokenKind::Ops), Some(0));
}

#[test]
fn one_time_burst_goes_first() {
    let cfg = RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: 3,
            refill_time_ms: 1000,
        }),
    };
    let (mut l, _) = limiter(cfg);
    for i in 0..4 {
        assert!(l.consume(1, TokenKind::Ops), "op {i}: burst then bucket");
    }
    assert!(!l.consume(1, TokenKind::Ops));
}

#[test]
fn update_keeps_disables_or_replaces_buckets() {
    let cfg = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig::per_second(1000)),
        ops: Some(TokenBucketConfig::per_second(10)),
    };
    let (mut l, _) = limiter(cfg);
    assert!(l.consume(1000, TokenKind::Bytes));
    // PATCH with only ops: bandwidth keeps its (empty) state.
    let ops_only = RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig::per_second(20)),
    };
    l.update(&RateLimiterUpdate::patch(&ops_only)).unwrap();
    assert_eq!(l.available(TokenKind::Bytes), Some(0), "kept");
    assert_eq!(l.available(TokenKind::Ops), Some(20), "new and full");
    assert_eq!(l.config().ops, ops_only.ops);
    // Size 0 disables.
    let off = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig::default()),
        ops: None,
    };
    l.update(&RateLimiterUpdate::patch(&off)).unwrap();
    assert_eq!(l.available(TokenKind::Bytes), None);
    assert!(l.consume(u64::MAX, TokenKind::Bytes));
    // Replace: what is left out goes.
    l.update(&RateLimiterUpdate::replace(&RateLimiterConfig::default()))
        .unwrap();
    assert_eq!(l.config(), RateLimiterConfig::default());
}

#[test]
fn update_wakes_a_waiting_limiter_at_once() {
    let (mut l, _) = limiter(bytes_per_100ms(1));
    assert!(l.consume(1, TokenKind::Bytes));
    // 1 byte per 100 ms, 1000 bytes: 100 s away.
    assert!(!l.consume(1000, TokenKind::Bytes));
    l.update(&RateLimiterUpdate::replace(&RateLimiterConfig::default()))
        .unwrap();
    assert!(readable(l.fd().unwrap(), 1000), "fires at once");
    assert!(l.event_handled());
    assert!(l.consume(1000, TokenKind::Bytes));
}

#[test]
fn bad_update_changes_nothing() {
    let (mut l, _) = limiter(bytes_per_100ms(10));
    let bad = RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: u64::MAX,
        }),
    };
    assert!(matches!(
        l.update(&RateLimiterUpdate::replace(&bad)),
        Err(RateLimiterError::Bucket(_))
    ));
    assert_eq!(l.config(), bytes_per_100ms(10));
}

#[test]
fn unlimited_limiter_has_no_timer_and_refuses_limits() {
    let mut l = RateLimiter::unlimited();
    assert_eq!(l.fd(), None);
    assert!(l.consume_request(u64::MAX));
    assert!(matches!(
        l.update(&RateLimiterUpdate::patch(&bytes_per_100ms(1))),
        Err(RateLimiterError::NoTimer)
    ));
    assert!(l.consume_request(u64::MAX), "still unlimited");
}

#[test]
fn shared_handle_updates_what_the_device_sees() {
    let device = SharedRateLimiter::new(RateLimiter::new(&RateLimiterConfig::default()).unwrap());
    let vmm = device.clone();
    assert!(device.lock().consume_request(1 << 30));
    vmm.update(&RateLimiterUpdate::patch(&bytes_per_100ms(100)))
        .unwrap();
    assert_eq!(device.config(), bytes_per_100ms(100));
    assert!(device.lock().consume_request(100));
    assert!(!device.lock().consume_request(100), "the new limit holds");
    assert_eq!(device.fd(), vmm.fd());
}
