//! One token bucket as Firecracker's API describes it: `size` tokens at
//! most, refilled continuously from empty to full in `refill_time_ms`,
//! plus a `one_time_burst` that is spent first and never refills.
//!
//! Arithmetic is exact: the budget is kept in units of one token times
//! the refill time in nanoseconds, so each nanosecond adds exactly
//! `size` units and no fraction of a token is lost between calls.
//!
//! A request larger than `size` can never find that many tokens. It goes
//! through once the bucket is full and leaves the budget in debt, which
//! the refill pays back before anything else passes: over time the rate
//! holds, whatever the request sizes (requests are never split).

/// The longest refill time accepted (about 49 days): keeps the exact
/// arithmetic inside 128 bits.
pub const MAX_REFILL_TIME_MS: u64 = u32::MAX as u64;

const NS_PER_MS: i128 = 1_000_000;

/// A bucket's parameters; `size` 0 or `refill_time_ms` 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenBucketConfig {
    pub size: u64,
    pub one_time_burst: u64,
    pub refill_time_ms: u64,
}

impl TokenBucketConfig {
    /// `per_second` tokens per second, bursting to one second's worth.
    pub fn per_second(per_second: u64) -> Self {
        TokenBucketConfig {
            size: per_second,
            one_time_burst: 0,
            refill_time_ms: 1000,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.size == 0 || self.refill_time_ms == 0
    }

    pub fn validate(&self) -> Result<(), BucketError> {
        if self.refill_time_ms > MAX_REFILL_TIME_MS {
            return Err(BucketError::RefillTimeTooLong(self.refill_time_ms));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BucketError {
    #[error(
        "refill_time {0} ms is over {MAX_REFILL_TIME_MS} ms: scale size and refill_time down together"
    )]
    RefillTimeTooLong(u64),
}

/// A bucket in use.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    config: TokenBucketConfig,
    /// The refill time in ns: the units of one token.
    refill_ns: i128,
    /// A full bucket, in units.
    cap: i128,
    /// In units; below zero while an oversized request is paid back.
    budget: i128,
    burst: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket with its one-time burst; `None` when `config` means
    /// no limit.
    pub fn new(config: TokenBucketConfig, now_ns: u64) -> Result<Option<Self>, BucketError> {
        config.validate()?;
        if config.is_unlimited() {
            return Ok(None);
        }
        let refill_ns = i128::from(config.refill_time_ms) * NS_PER_MS;
        let cap = i128::from(config.size) * refill_ns;
        Ok(Some(TokenBucket {
            config,
            refill_ns,
            cap,
            budget: cap,
            burst: config.one_time_burst,
            last_ns: now_ns,
        }))
    }

    pub fn config(&self) -> TokenBucketConfig {
        self.config
    }

    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let added = i128::from(elapsed).saturating_mul(i128::from(self.config.size));
        self.budget = self.budget.saturating_add(added).min(self.cap);
    }

    /// What `tokens` need from the refilling budget once the burst is
    /// spent, in units (at most a full bucket).
    fn needed(&self, tokens: u64) -> i128 {
        let rest = tokens.saturating_sub(self.burst);
        i128::from(rest.min(self.config.size)) * self.refill_ns
    }

    /// Takes `tokens` if they are there (burst first); false and nothing
    /// taken otherwise.
    pub fn consume(&mut self, tokens: u64, now_ns: u64) -> bool {
        self.refill(now_ns);
        if tokens > 0 && self.budget < self.needed(tokens) {
            return false;
        }
        let from_burst = tokens.min(self.burst);
        self.burst -= from_burst;
        let rest = tokens - from_burst;
        self.budget -= i128::from(rest) * self.refill_ns;
        true
    }

    /// Nanoseconds from `now_ns` until [`TokenBucket::consume`] of
    /// `tokens` succeeds; 0 when it would now.
    pub fn wait_ns(&mut self, tokens: u64, now_ns: u64) -> u64 {
        self.refill(now_ns);
        let deficit = self.needed(tokens) - self.budget;
        if tokens == 0 || deficit <= 0 {
            return 0;
        }
        // Each nanosecond adds `size` (> 0) units; round up.
        let size = i128::from(self.config.size);
        u64::try_from((deficit + size - 1) / size).unwrap_or(u64::MAX)
    }

    /// Tokens that could be taken now (burst included; 0 while in debt).
    pub fn available(&mut self, now_ns: u64) -> u64 {
        self.refill(now_ns);
        let budget = u64::try_from(self.budget.max(0) / self.refill_ns).unwrap_or(u64::MAX);
        budget.saturating_add(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn bucket(size: u64, burst: u64, refill_ms: u64) -> TokenBucket {
        let cfg = TokenBucketConfig {
            size,
            one_time_burst: burst,
            refill_time_ms: refill_ms,
        };
        TokenBucket::new(cfg, 0).unwrap().expect("a limited bucket")
    }

    #[test]
    fn zero_size_or_refill_time_means_unlimited() {
        let none = |size, refill_time_ms| {
            let cfg = TokenBucketConfig {
                size,
                one_time_burst: 5,
                refill_time_ms,
            };
            TokenBucket::new(cfg, 0).unwrap().is_none()
        };
        assert!(none(0, 100));
        assert!(none(100, 0));
        assert!(!none(1, 1));
    }

    #[test]
    fn absurd_refill_time_is_refused() {
        let cfg = TokenBucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: u64::MAX,
        };
        assert_eq!(
            TokenBucket::new(cfg, 0).unwrap_err(),
            BucketError::RefillTimeTooLong(u64::MAX)
        );
    }

    #[test]
    fn starts_full_and_refills_continuously() {
        let mut b = bucket(1000, 0, 100);
        assert!(b.consume(1000, 0), "starts full");
        assert!(!b.consume(1, 0), "empty");
        assert_eq!(b.available(10 * MS), 100, "a tenth after a tenth");
        assert!(!b.consume(101, 10 * MS));
        assert!(b.consume(100, 10 * MS));
        assert_eq!(b.available(1000 * MS), 1000, "never above size");
    }

    #[test]
    fn fractions_of_tokens_are_not_lost() {
        // 3 tokens per 10 ms: one token every 3.33 ms.
        let mut b = bucket(3, 0, 10);
        assert!(b.consume(3, 0));
        let mut got = 0;
        for step in 1..=1000u64 {
            if b.consume(1, step * MS / 10) {
                got += 1;
            }
        }
        // 100 ms in 0.1 ms steps: 30 tokens.
        assert_eq!(got, 30);
    }

    #[test]
    fn burst_is_spent_first_and_never_refills() {
        let mut b = bucket(100, 50, 1000);
        assert!(b.consume(30, 0));
        assert_eq!(b.available(0), 120, "the burst went first");
        assert!(b.consume(120, 0), "rest of burst, then the budget");
        assert!(!b.consume(1, 0));
        assert_eq!(b.available(2000 * MS), 100, "the burst is gone for good");
    }

    #[test]
    fn oversized_request_waits_for_a_full_bucket_then_is_paid_back() {
        let mut b = bucket(100, 0, 100);
        assert!(b.consume(10, 0));
        assert!(!b.consume(250, 0), "not while the bucket is not full");
        assert_eq!(b.wait_ns(250, 0), 10 * MS, "until the bucket is full");
        assert!(b.consume(250, 10 * MS), "a full bucket lets it through");
        // 150 tokens of debt then 1 token: 151 ms.
        assert_eq!(b.wait_ns(1, 10 * MS), 151 * MS);
        assert!(!b.consume(1, 160 * MS));
        assert!(b.consume(1, 161 * MS));
    }

    #[test]
    fn wait_is_exact_and_rounds_up() {
        let mut b = bucket(3, 0, 10);
        assert!(b.consume(3, 0));
        let w = b.wait_ns(1, 0);
        assert_eq!(w, 3_333_334, "10 ms / 3, rounded up");
        assert!(!b.consume(1, w - 1));
        assert!(b.consume(1, w));
        assert_eq!(b.wait_ns(0, w), 0, "nothing asked, nothing to wait");
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut b = bucket(u64::MAX, u64::MAX, MAX_REFILL_TIME_MS);
        assert!(b.consume(u64::MAX, 0));
        assert!(b.consume(u64::MAX, 0));
        assert!(b.consume(u64::MAX, u64::MAX), "refilled after ages");
        assert!(b.wait_ns(u64::MAX, u64::MAX) > 0);
        let mut small = bucket(1, 0, 1);
        assert!(small.consume(u64::MAX, 0), "oversized from full");
        assert_eq!(small.wait_ns(1, 0), u64::MAX, "debt beyond any wait");
    }
}
