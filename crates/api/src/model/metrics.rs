//! `/metrics` body: the file or pipe metrics are flushed to.

use super::{check_path, ModelError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Body of `PUT /metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: String,
    /// Whether each metrics line carries the instance id as `"id"`.
    #[serde(default)]
    pub emit_id: bool,
    /// Operator-chosen pairs written under `"properties"` on each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

impl Metrics {
    /// Path check; property keys are 1 to 64 characters.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_path("metrics_path", &self.metrics_path)?;
        for key in self.properties.iter().flat_map(|p| p.keys()) {
            if key.is_empty() || key.chars().count() > 64 {
                return Err(ModelError::MetricsPropertyInvalid(key.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_body() {
        let m: Metrics =
            serde_json::from_str(r#"{"metrics_path": "/tmp/m.fifo", "properties": {"host": "a"}}"#)
                .unwrap();
        assert_eq!(m.validate(), Ok(()));
        assert!(!m.emit_id);
        let m: Metrics =
            serde_json::from_str(r#"{"metrics_path": "/m", "properties": {"": "a"}}"#).unwrap();
        assert!(m.validate().is_err());
        assert!(serde_json::from_str::<Metrics>(r#"{"properties": {}}"#).is_err());
    }
}
