//! Counters of API requests and failures by method and path group, for the
//! metrics JSON (Firecracker's `get_api_requests`, `put_api_requests` and
//! `patch_api_requests` groups).

use crate::request::normalize_target;
use std::sync::atomic::{AtomicU64, Ordering};

/// The resource a path names, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathGroup {
    InstanceInfo,
    Version,
    VmConfig,
    Vm,
    MachineConfig,
    BootSource,
    Drive,
    Network,
    Actions,
    Balloon,
    BalloonStats,
    Entropy,
    Vsock,
    Logger,
    Metrics,
    Serial,
    /// A Firecracker path vessel does not serve, or an unknown one.
    Other,
}

const GROUPS: [(PathGroup, &str); 17] = [
    (PathGroup::InstanceInfo, "instance_info"),
    (PathGroup::Version, "vmm_version"),
    (PathGroup::VmConfig, "vm_config"),
    (PathGroup::Vm, "vm"),
    (PathGroup::MachineConfig, "machine_cfg"),
    (PathGroup::BootSource, "boot_source"),
    (PathGroup::Drive, "drive"),
    (PathGroup::Network, "network"),
    (PathGroup::Actions, "actions"),
    (PathGroup::Balloon, "balloon"),
    (PathGroup::BalloonStats, "balloon_stats"),
    (PathGroup::Entropy, "entropy"),
    (PathGroup::Vsock, "vsock"),
    (PathGroup::Logger, "logger"),
    (PathGroup::Metrics, "metrics"),
    (PathGroup::Serial, "serial"),
    (PathGroup::Other, "other"),
];

impl PathGroup {
    /// The group of a request target.
    pub fn of(target: &str) -> PathGroup {
        let Ok(path) = normalize_target(target) else {
            return PathGroup::Other;
        };
        let mut it = path[1..].split('/');
        match (it.next().unwrap_or(""), it.next()) {
            ("", None) => PathGroup::InstanceInfo,
            ("version", None) => PathGroup::Version,
            ("vm", Some("config")) => PathGroup::VmConfig,
            ("vm", None) => PathGroup::Vm,
            ("machine-config", None) => PathGroup::MachineConfig,
            ("boot-source", None) => PathGroup::BootSource,
            ("drives", _) => PathGroup::Drive,
            ("network-interfaces", _) => PathGroup::Network,
            ("actions", None) => PathGroup::Actions,
            ("balloon", None) => PathGroup::Balloon,
            ("balloon", Some("statistics")) => PathGroup::BalloonStats,
            ("entropy", None) => PathGroup::Entropy,
            ("vsock", None) => PathGroup::Vsock,
            ("logger", None) => PathGroup::Logger,
            ("metrics", None) => PathGroup::Metrics,
            ("serial", None) => PathGroup::Serial,
            _ => PathGroup::Other,
        }
    }

    fn index(self) -> usize {
        GROUPS
            .iter()
            .position(|(g, _)| *g == self)
            .unwrap_or(GROUPS.len() - 1)
    }
}

const METHODS: [&str; 4] = ["get", "put", "patch", "other"];

fn method_index(method: &str) -> usize {
    match method {
        "GET" => 0,
        "PUT" => 1,
        "PATCH" => 2,
        _ => 3,
    }
}

/// Request and failure counts, by method and path group; shared between
/// the API thread and whoever writes the metrics.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    count: [[AtomicU64; GROUPS.len()]; METHODS.len()],
    fails: [[AtomicU64; GROUPS.len()]; METHODS.len()],
    /// Requests that never got as far as a method and path (bad HTTP).
    bad_http: AtomicU64,
}

impl ApiMetrics {
    /// Counts one request; `ok` is false when it was answered with an error.
    pub fn record(&self, method: &str, target: &str, ok: bool) {
        let (m, g) = (method_index(method), PathGroup::of(target).index());
        self.count[m][g].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.fails[m][g].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request that could not be parsed as HTTP.
    pub fn record_bad_http(&self) {
        self.bad_http.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted for this method and group.
    pub fn count(&self, method: &str, group: PathGroup) -> u64 {
        self.count[method_index(method)][group.index()].load(Ordering::Relaxed)
    }

    /// Failures counted for this method and group.
    pub fn fails(&self, method: &str, group: PathGroup) -> u64 {
        self.fails[method_index(method)][group.index()].load(Ordering::Relaxed)
    }

    /// `{"get_api_requests": {"machine_cfg_count": N, "machine_cfg_fails": N, ...},
    /// "put_api_requests": {...}, "patch_api_requests": {...},
    /// "other_api_requests": {...}, "bad_http_requests": N}`; every counter
    /// is present, zero or not.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (m, method) in METHODS.iter().enumerate() {
            let mut group = serde_json::Map::new();
            for (g, (_, name)) in GROUPS.iter().enumerate() {
                let c = self.count[m][g].load(Ordering::Relaxed);
                let f = self.fails[m][g].load(Ordering::Relaxed);
                group.insert(format!("{name}_count"), c.into());
                group.insert(format!("{name}_fails"), f.into());
            }
            out.insert(format!("{method}_api_requests"), group.into());
        }
        let bad = self.bad_http.load(Ordering::Relaxed);
        out.insert("bad_http_requests".into(), bad.into());
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_paths() {
        assert_eq!(PathGroup::of("/"), PathGroup::InstanceInfo);
        assert_eq!(PathGroup::of("/drives/root"), PathGroup::Drive);
        assert_eq!(PathGroup::of("/vm/config"), PathGroup::VmConfig);
        assert_eq!(
            PathGroup::of("/balloon/statistics"),
            PathGroup::BalloonStats
        );
        assert_eq!(PathGroup::of("/mmds"), PathGroup::Other);
        assert_eq!(PathGroup::of("garbage"), PathGroup::Other);
    }

    #[test]
    fn counts_and_json() {
        let m = ApiMetrics::default();
        m.record("PUT", "/drives/a", true);
        m.record("PUT", "/drives/b", false);
        m.record("GET", "/machine-config", true);
        m.record("DELETE", "/x", false);
        m.record_bad_http();
        assert_eq!(m.count("PUT", PathGroup::Drive), 2);
        assert_eq!(m.fails("PUT", PathGroup::Drive), 1);
        let j = m.to_json();
        assert_eq!(j["put_api_requests"]["drive_count"], 2);
        assert_eq!(j["put_api_requests"]["drive_fails"], 1);
        assert_eq!(j["get_api_requests"]["machine_cfg_count"], 1);
        assert_eq!(j["get_api_requests"]["machine_cfg_fails"], 0);
        assert_eq!(j["other_api_requests"]["other_fails"], 1);
        assert_eq!(j["bad_http_requests"], 1);
    }
}
