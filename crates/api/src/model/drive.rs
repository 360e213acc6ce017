//! `/drives/{drive_id}` bodies: a virtio-block drive and its post-boot patch.

use super::rate_limiter::{check_limiter, RateLimiter};
use super::{check_id, check_optional_path, check_path, ModelError};
use serde::{Deserialize, Serialize};

/// Whether guest flushes reach the host's stable storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are not passed on.
    #[default]
    Unsafe,
    /// A guest flush reaches stable storage.
    Writeback,
}

/// How the drive's file is read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking reads and writes.
    #[default]
    Sync,
    /// io_uring.
    Async,
}

/// Body of `PUT /drives/{drive_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    pub is_root_device: bool,
    #[serde(default)]
    pub cache_type: CacheType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// vhost-user-block's socket: vessel has no vhost-user yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl Drive {
    /// Id, path and limiter checks; vhost-user drives are refused.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_id("drive_id", &self.drive_id)?;
        if self.socket.is_some() {
            return Err(ModelError::Unsupported {
                feature: "vhost-user-block (socket)".into(),
                fix: "give path_on_host instead of socket",
            });
        }
        let Some(path) = &self.path_on_host else {
            return Err(ModelError::PathMissing {
                field: "path_on_host",
            });
        };
        check_path("path_on_host", path)?;
        if let Some(p) = &self.partuuid {
            check_partuuid(p)?;
        }
        check_limiter("rate_limiter", self.rate_limiter.as_ref())
    }

    /// `is_read_only` as the device sees it (absent means writable).
    pub fn read_only(&self) -> bool {
        self.is_read_only.unwrap_or(false)
    }
}

/// A partuuid goes onto the kernel command line as `root=PARTUUID=...`:
/// only hex digits and dashes may reach it.
fn check_partuuid(p: &str) -> Result<(), ModelError> {
    if p.is_empty() || p.len() > 64 || !p.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(ModelError::IdInvalid {
            field: "partuuid",
            value: p.to_string(),
        });
    }
    Ok(())
}

/// Body of `PATCH /drives/{drive_id}`: a new backing file, new limits, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl PartialDrive {
    /// Id, path and limiter checks.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_id("drive_id", &self.drive_id)?;
        check_optional_path("path_on_host", self.path_on_host.as_deref())?;
        check_limiter("rate_limiter", self.rate_limiter.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getting_started_drive_parses() {
        let d: Drive = serde_json::from_str(
            r#"{"drive_id": "rootfs", "path_on_host": "./rootfs.ext4", "is_root_device": true, "is_read_only": false}"#,
        )
        .unwrap();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.cache_type, CacheType::Unsafe);
        assert!(!d.read_only());
    }

    #[test]
    fn nulls_from_a_full_config_export_parse() {
        let d: Drive = serde_json::from_str(
            r#"{"drive_id":"rootfs","partuuid":null,"is_root_device":true,"cache_type":"Writeback",
                "is_read_only":true,"path_on_host":"r.ext4","io_engine":"Async","rate_limiter":null,"socket":null}"#,
        )
        .unwrap();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.io_engine, Some(IoEngine::Async));
    }

    #[test]
    fn bad_drives_are_refused() {
        let base = r#""is_root_device": false, "path_on_host": "/x""#;
        let d: Drive = serde_json::from_str(&format!(r#"{{"drive_id": "a-b", {base}}}"#)).unwrap();
        assert!(matches!(d.validate(), Err(ModelError::IdInvalid { .. })));
        let d: Drive =
            serde_json::from_str(r#"{"drive_id": "a", "is_root_device": false}"#).unwrap();
        assert!(matches!(d.validate(), Err(ModelError::PathMissing { .. })));
        let d: Drive =
            serde_json::from_str(&format!(r#"{{"drive_id": "a", "socket": "/s", {base}}}"#))
                .unwrap();
        assert!(matches!(d.validate(), Err(ModelError::Unsupported { .. })));
        let d: Drive = serde_json::from_str(&format!(
            r#"{{"drive_id": "a", "partuuid": "x y", {base}}}"#
        ))
        .unwrap();
        assert!(d.validate().is_err());
        assert!(serde_json::from_str::<Drive>(
            r#"{"drive_id": "a", "cache_type": "None", "is_root_device": false}"#
        )
        .is_err());
    }

    #[test]
    fn partial_drive_checks() {
        let p: PartialDrive = serde_json::from_str(
            r#"{"drive_id": "d1", "rate_limiter": {"bandwidth": {"size": 5, "refill_time": 0}}}"#,
        )
        .unwrap();
        assert!(matches!(
            p.validate(),
            Err(ModelError::RefillTimeZero { .. })
        ));
        assert!(
            serde_json::from_str::<PartialDrive>(r#"{"drive_id": "d", "is_read_only": true}"#)
                .is_err()
        );
    }
}
