//! The JSON bodies of Firecracker's API, field for field: one submodule per
//! resource, every body refuses unknown fields, and every body checks its own
//! values with `validate` (the checks that need no VM state; the VMM checks
//! the rest, such as what may change after `InstanceStart`).

pub mod actions;
pub mod balloon;
pub mod boot;
pub mod drive;
pub mod entropy;
pub mod instance;
pub mod logger;
pub mod machine;
pub mod metrics;
pub mod net;
pub mod rate_limiter;
pub mod serial;
pub mod vsock;

pub use actions::{ActionKind, InstanceActionInfo, Vm, VmState};
pub use balloon::{Balloon, BalloonStats, BalloonStatsUpdate, BalloonUpdate};
pub use boot::BootSource;
pub use drive::{CacheType, Drive, IoEngine, PartialDrive};
pub use entropy::Entropy;
pub use instance::{FirecrackerVersion, FullVmConfiguration, InstanceInfo, InstanceState};
pub use logger::{LogLevel, Logger};
pub use machine::{CpuTemplate, HugePages, MachineConfiguration, MachineConfigurationPatch};
pub use metrics::Metrics;
pub use net::{NetworkInterface, PartialNetworkInterface};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use serial::Serial;
pub use vsock::Vsock;

/// A body that parsed but holds a value vessel refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field} is empty: use letters, digits and '_'")]
    IdEmpty { field: &'static str },
    #[error("{field} {value:?} has characters other than letters, digits and '_': rename it")]
    IdInvalid { field: &'static str, value: String },
    #[error("{field} is empty: give a path on the host")]
    PathEmpty { field: &'static str },
    #[error("{field} is missing: give the path of the file on the host")]
    PathMissing { field: &'static str },
    #[error("{field} contains a NUL byte: give a plain path")]
    PathHasNul { field: &'static str },
    #[error("{field} is {len} bytes long: Unix socket paths hold at most {max} bytes, use a shorter path")]
    SocketPathTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("vcpu_count {0} is out of range: use 1 to {max}", max = machine::MAX_VCPUS)]
    VcpuCountOutOfRange(u8),
    #[error("vcpu_count {0} with smt enabled: use 1 or an even number, or set smt to false")]
    VcpuCountOddWithSmt(u8),
    #[error("mem_size_mib is 0: give the guest memory (128 is Firecracker's default)")]
    MemorySizeZero,
    #[error("mem_size_mib {0} is more than vessel accepts: use at most {max}", max = machine::MAX_MEM_SIZE_MIB)]
    MemorySizeTooLarge(u64),
    #[error("mem_size_mib {0} is odd: huge pages need a multiple of 2 MiB")]
    MemorySizeNotHugePageMultiple(u64),
    #[error("{feature} is not supported by vessel yet: {fix}")]
    Unsupported { feature: String, fix: &'static str },
    #[error("the body sets no field: name at least one of {fields}")]
    EmptyPatch { fields: &'static str },
    #[error("boot_args is {0} bytes long: the kernel command line holds at most {max} bytes", max = boot::MAX_CMDLINE_LEN)]
    CmdlineTooLong(usize),
    #[error("boot_args contains a NUL byte: remove it")]
    CmdlineHasNul,
    #[error("guest_mac {0:?} is not a MAC address: write six hex bytes like 06:00:ac:10:00:02")]
    MacInvalid(String),
    #[error("mtu {0} is out of range: use 68 to 65535")]
    MtuOutOfRange(u16),
    #[error("host_dev_name {0:?} is not a TAP name: use 1 to 15 characters without '/', ':', spaces or NUL")]
    TapNameInvalid(String),
    #[error("guest_cid {0} is reserved: use 3 to 4294967294")]
    GuestCidReserved(u32),
    #[error("{field}.refill_time is 0 while size is {size}: give the refill period in milliseconds (more than 0)")]
    RefillTimeZero { field: &'static str, size: u64 },
    #[error("{field}.refill_time {value} ms is too long: use at most {max} ms", max = rate_limiter::MAX_REFILL_TIME_MS)]
    RefillTimeTooLong { field: &'static str, value: u64 },
    #[error("metrics property {0:?} is empty or too long: use 1 to 64 characters")]
    MetricsPropertyInvalid(String),
}

/// Checks a resource id the way Firecracker does: not empty, and only
/// alphanumeric characters and '_'.
pub fn check_id(field: &'static str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() {
        return Err(ModelError::IdEmpty { field });
    }
    if !value.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(ModelError::IdInvalid {
            field,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Checks a host path: not empty and without NUL bytes (which the kernel
/// would cut the path at).
pub fn check_path(field: &'static str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() {
        return Err(ModelError::PathEmpty { field });
    }
    if value.contains('\0') {
        return Err(ModelError::PathHasNul { field });
    }
    Ok(())
}

/// Like [`check_path`], for an optional path.
pub fn check_optional_path(field: &'static str, value: Option<&str>) -> Result<(), ModelError> {
    value.map_or(Ok(()), |v| check_path(field, v))
}

/// Where the first JSON array in `v` is (`.` for `v` itself,
/// `a.b` for a nested one). No body of the API holds an array, and serde
/// would read an array as a struct's fields in order, so bodies are
/// checked for arrays before they are parsed.
pub fn first_array(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Array(_) => Some(".".into()),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            first_array(v).map(|inner| {
                if inner == "." {
                    k.clone()
                } else {
                    format!("{k}.{inner}")
                }
            })
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_found_with_their_path() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a": 1, "b": {"c": [1]}}"#).unwrap();
        assert_eq!(first_array(&v).as_deref(), Some("b.c"));
        assert_eq!(first_array(&serde_json::json!([])).as_deref(), Some("."));
        assert_eq!(first_array(&serde_json::json!({"x": {}})), None);
    }

    #[test]
    fn ids_allow_alphanumerics_and_underscore_only() {
        assert_eq!(check_id("drive_id", "root_fs1"), Ok(()));
        assert_eq!(
            check_id("drive_id", ""),
            Err(ModelError::IdEmpty { field: "drive_id" })
        );
        for bad in ["a-b", "a b", "a/b", "../x", "a.b"] {
            assert!(
                matches!(check_id("drive_id", bad), Err(ModelError::IdInvalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn paths_must_be_non_empty_without_nul() {
        assert_eq!(check_path("p", "/tmp/x"), Ok(()));
        assert_eq!(
            check_path("p", ""),
            Err(ModelError::PathEmpty { field: "p" })
        );
        assert_eq!(
            check_path("p", "a\0b"),
            Err(ModelError::PathHasNul { field: "p" })
        );
        assert_eq!(check_optional_path("p", None), Ok(()));
    }
}
