//! Rate limiter wire types (`RateLimiter`, `TokenBucket`) shared by drives,
//! network interfaces, the entropy device and the serial console.

use super::ModelError;
use serde::{Deserialize, Serialize};

/// The longest refill period accepted: its nanoseconds must fit in a u64.
pub const MAX_REFILL_TIME_MS: u64 = u64::MAX / 1_000_000;

/// A token bucket: `size` tokens refilled over `refill_time` milliseconds,
/// plus `one_time_burst` tokens spent first. A bucket of size 0 limits
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
}

impl TokenBucket {
    /// Checks the refill period against the size; `field` names the bucket
    /// in the error (e.g. `rate_limiter.bandwidth`).
    pub fn validate(&self, field: &'static str) -> Result<(), ModelError> {
        if self.size > 0 && self.refill_time == 0 {
            return Err(ModelError::RefillTimeZero {
                field,
                size: self.size,
            });
        }
        if self.refill_time > MAX_REFILL_TIME_MS {
            return Err(ModelError::RefillTimeTooLong {
                field,
                value: self.refill_time,
            });
        }
        Ok(())
    }
}

/// Independent limits on bytes (`bandwidth`) and operations (`ops`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// Checks both buckets. `field` is the limiter's name in the body
    /// (`rate_limiter`, `rx_rate_limiter`, `tx_rate_limiter`).
    pub fn validate(&self, field: &'static str) -> Result<(), ModelError> {
        let (bw, ops) = match field {
            "rx_rate_limiter" => ("rx_rate_limiter.bandwidth", "rx_rate_limiter.ops"),
            "tx_rate_limiter" => ("tx_rate_limiter.bandwidth", "tx_rate_limiter.ops"),
            _ => ("rate_limiter.bandwidth", "rate_limiter.ops"),
        };
        if let Some(b) = &self.bandwidth {
            b.validate(bw)?;
        }
        if let Some(o) = &self.ops {
            o.validate(ops)?;
        }
        Ok(())
    }
}

/// Validates an optional limiter.
pub fn check_limiter(field: &'static str, l: Option<&RateLimiter>) -> Result<(), ModelError> {
    l.map_or(Ok(()), |l| l.validate(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecracker_limiter_json() {
        let l: RateLimiter = serde_json::from_str(
            r#"{"bandwidth":{"size":1048576,"one_time_burst":0,"refill_time":1000},"ops":{"size":100,"refill_time":1000}}"#,
        )
        .unwrap();
        assert_eq!(l.bandwidth.unwrap().size, 1 << 20);
        assert_eq!(l.ops.unwrap().one_time_burst, None);
        assert_eq!(l.validate("rate_limiter"), Ok(()));
    }

    #[test]
    fn refill_time_zero_with_size_is_refused() {
        let l = RateLimiter {
            ops: Some(TokenBucket {
                size: 10,
                one_time_burst: None,
                refill_time: 0,
            }),
            bandwidth: None,
        };
        let e = l.validate("tx_rate_limiter").unwrap_err();
        assert_eq!(
            e,
            ModelError::RefillTimeZero {
                field: "tx_rate_limiter.ops",
                size: 10
            }
        );
    }

    #[test]
    fn empty_bucket_and_huge_refill() {
        assert_eq!(TokenBucket::default().validate("b"), Ok(()));
        let b = TokenBucket {
            size: 1,
            one_time_burst: None,
            refill_time: u64::MAX,
        };
        assert!(matches!(
            b.validate("b"),
            Err(ModelError::RefillTimeTooLong { .. })
        ));
    }

    #[test]
    fn negative_and_unknown_fields_do_not_parse() {
        assert!(serde_json::from_str::<TokenBucket>(r#"{"size":-1,"refill_time":1}"#).is_err());
        assert!(
            serde_json::from_str::<TokenBucket>(r#"{"size":1,"refill_time":1,"x":1}"#).is_err()
        );
        assert!(serde_json::from_str::<TokenBucket>(r#"{"size":1}"#).is_err());
    }
}
