//! `/entropy` body: a virtio-rng device with an optional rate limiter.

use super::rate_limiter::{check_limiter, RateLimiter};
use super::ModelError;
use serde::{Deserialize, Serialize};

/// Body of `PUT /entropy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entropy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl Entropy {
    /// Limiter checks.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_limiter("rate_limiter", self.rate_limiter.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_is_a_device_without_limits() {
        let e: Entropy = serde_json::from_str("{}").unwrap();
        assert_eq!(e.validate(), Ok(()));
        assert!(serde_json::from_str::<Entropy>(r#"{"rate": 1}"#).is_err());
    }
}
