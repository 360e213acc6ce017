//! `/serial` body: where the guest's serial output goes, and its limit.

use super::rate_limiter::TokenBucket;
use super::{check_optional_path, ModelError};
use serde::{Deserialize, Serialize};

/// Body of `PUT /serial`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<TokenBucket>,
}

impl Serial {
    /// Path and bucket checks.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_optional_path("serial_out_path", self.serial_out_path.as_deref())?;
        self.rate_limiter
            .as_ref()
            .map_or(Ok(()), |b| b.validate("rate_limiter"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_body() {
        let s: Serial = serde_json::from_str(
            r#"{"serial_out_path": "/tmp/out", "rate_limiter": {"size": 10, "refill_time": 0}}"#,
        )
        .unwrap();
        assert!(matches!(
            s.validate(),
            Err(ModelError::RefillTimeZero { .. })
        ));
        let s: Serial = serde_json::from_str("{}").unwrap();
        assert_eq!(s.validate(), Ok(()));
    }
}
