//! Router tests: every path and method, and each kind of bad request.

use super::*;
use crate::model::{CacheType, InstanceState};

fn ok(method: &str, path: &str, body: &str) -> Request {
    match parse(method, path, body.as_bytes()) {
        Ok(r) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn err(method: &str, path: &str, body: &str) -> String {
    match parse(method, path, body.as_bytes()) {
        Ok(r) => panic!("{method} {path} was accepted as {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn gets_route() {
    assert_eq!(ok("GET", "/", ""), Request::GetInstanceInfo);
    assert_eq!(ok("GET", "/version", ""), Request::GetVersion);
    assert_eq!(ok("GET", "/vm/config", ""), Request::GetVmConfig);
    assert_eq!(ok("GET", "/machine-config", ""), Request::GetMachineConfig);
    assert_eq!(ok("GET", "/balloon", ""), Request::GetBalloon);
    assert_eq!(
        ok("GET", "/balloon/statistics", ""),
        Request::GetBalloonStats
    );
    assert_eq!(
        ok("GET", "http://localhost/version", ""),
        Request::GetVersion
    );
    assert_eq!(
        ok("GET", "/machine-config/?x=1", ""),
        Request::GetMachineConfig
    );
    let _ = InstanceState::Running;
}

#[test]
fn puts_route() {
    let m = ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256}"#,
    );
    assert!(matches!(m, Request::PutMachineConfig(c) if c.vcpu_count == 2));
    let b = ok(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}"#,
    );
    assert!(matches!(b, Request::PutBootSource(b) if b.kernel_image_path == "/k"));
    let d = ok(
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true, "cache_type": "Writeback"}"#,
    );
    assert!(matches!(d, Request::PutDrive(d) if d.cache_type == CacheType::Writeback));
    let n = ok(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}"#,
    );
    assert!(matches!(n, Request::PutNetworkInterface(_)));
    for (action, kind) in [
        ("InstanceStart", ActionKind::InstanceStart),
        ("SendCtrlAltDel", ActionKind::SendCtrlAltDel),
        ("FlushMetrics", ActionKind::FlushMetrics),
    ] {
        let body = format!(r#"{{"action_type": "{action}"}}"#);
        assert_eq!(ok("PUT", "/actions", &body), Request::Action(kind));
    }
    let b = ok(
        "PUT",
        "/balloon",
        r#"{"amount_mib": 0, "deflate_on_oom": false}"#,
    );
    assert!(matches!(b, Request::PutBalloon(_)));
    assert_eq!(
        ok("PUT", "/entropy", "{}"),
        Request::PutEntropy(Entropy::default())
    );
    let v = ok(
        "PUT",
        "/vsock",
        r#"{"guest_cid": 3, "uds_path": "/tmp/v.sock"}"#,
    );
    assert!(matches!(v, Request::PutVsock(v) if v.guest_cid == 3));
    assert!(matches!(
        ok("PUT", "/logger", r#"{"level": "Info"}"#),
        Request::PutLogger(_)
    ));
    assert!(matches!(
        ok("PUT", "/metrics", r#"{"metrics_path": "/m"}"#),
        Request::PutMetrics(_)
    ));
    assert!(matches!(
        ok("PUT", "/serial", r#"{"serial_out_path": "/s"}"#),
        Request::PutSerial(_)
    ));
}

#[test]
fn patches_route() {
    assert!(matches!(
        ok("PATCH", "/machine-config", r#"{"vcpu_count": 4}"#),
        Request::PatchMachineConfig(p) if p.vcpu_count == Some(4)
    ));
    assert!(matches!(
        ok(
            "PATCH",
            "/drives/d1",
            r#"{"drive_id": "d1", "path_on_host": "/new"}"#
        ),
        Request::PatchDrive(_)
    ));
    assert!(matches!(
        ok(
            "PATCH",
            "/network-interfaces/n",
            r#"{"iface_id": "n", "rx_rate_limiter": {"ops": {"size": 1, "refill_time": 10}}}"#
        ),
        Request::PatchNetworkInterface(_)
    ));
    assert_eq!(
        ok("PATCH", "/vm", r#"{"state": "Paused"}"#),
        Request::PatchVm(VmState::Paused)
    );
    assert_eq!(
        ok("PATCH", "/vm", r#"{"state": "Resumed"}"#),
        Request::PatchVm(VmState::Resumed)
    );
    assert_eq!(
        ok("PATCH", "/balloon", r#"{"amount_mib": 64}"#),
        Request::PatchBalloon(BalloonUpdate { amount_mib: 64 })
    );
    assert_eq!(
        ok(
            "PATCH",
            "/balloon/statistics",
            r#"{"stats_polling_interval_s": 1}"#
        ),
        Request::PatchBalloonStats(BalloonStatsUpdate {
            stats_polling_interval_s: 1
        })
    );
}

#[test]
fn bad_json_names_the_field() {
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256"#,
    );
    assert!(
        e.contains("the body of PUT /machine-config is not valid"),
        "{e}"
    );
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256, "colour": 1}"#,
    );
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": "two", "mem_size_mib": 256}"#,
    );
    assert!(e.contains("vcpu_count: invalid type"), "{e}");
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": -5}"#,
    );
    assert!(e.contains("mem_size_mib: invalid value"), "{e}");
    let e = err(
        "PUT",
        "/drives/a",
        r#"{"drive_id": "a", "is_root_device": true, "path_on_host": "/x", "rate_limiter": {"ops": {"size": -1, "refill_time": 1}}}"#,
    );
    assert!(e.contains("rate_limiter.ops.size"), "{e}");
    let e = err(
        "PUT",
        "/actions",
        r#"{"action_type": "InstanceStart"} trailing"#,
    );
    assert!(e.contains("trailing"), "{e}");
    let e = err("PUT", "/actions", "[1, 2]");
    assert!(e.contains("is not valid"), "{e}");
    let e = err("PUT", "/entropy", "[]");
    assert!(
        e.ends_with("is not valid: expected a JSON object, found an array"),
        "{e}"
    );
    let e = err("PUT", "/logger", r#"{"level": ["Info"]}"#);
    assert!(e.contains("level: invalid type: sequence"), "{e}");
    let e = err(
        "PUT",
        "/entropy",
        r#"{"rate_limiter": {"ops": [1, null, 1000]}}"#,
    );
    assert!(e.contains("rate_limiter.ops: expected"), "{e}");
}

#[test]
fn absurd_values_are_refused() {
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 0, "mem_size_mib": 256}"#,
    );
    assert!(e.contains("vcpu_count 0 is out of range"), "{e}");
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 18446744073709551615}"#,
    );
    assert!(e.contains("more than vessel accepts"), "{e}");
    let e = err("PUT", "/vsock", r#"{"guest_cid": 2, "uds_path": "/v"}"#);
    assert!(e.contains("guest_cid 2 is reserved"), "{e}");
    let e = err("PATCH", "/machine-config", "{}");
    assert!(e.contains("sets no field"), "{e}");
}

#[test]
fn ids_must_match_and_be_valid() {
    let e = err(
        "PUT",
        "/drives/a",
        r#"{"drive_id": "b", "is_root_device": true, "path_on_host": "/x"}"#,
    );
    assert!(
        e.contains(r#"drive_id in the path ("a") and in the body ("b") differ"#),
        "{e}"
    );
    let e = err("PATCH", "/network-interfaces/x", r#"{"iface_id": "y"}"#);
    assert!(e.contains("iface_id in the path"), "{e}");
    let e = err(
        "PUT",
        "/drives/a-b",
        r#"{"drive_id": "a-b", "is_root_device": true, "path_on_host": "/x"}"#,
    );
    assert!(e.contains("characters other than letters"), "{e}");
    let e = err(
        "PUT",
        "/drives",
        r#"{"drive_id": "a", "is_root_device": true}"#,
    );
    assert!(e.contains("the path has no drive_id"), "{e}");
    let e = err(
        "PUT",
        "/drives/",
        r#"{"drive_id": "a", "is_root_device": true}"#,
    );
    assert!(e.contains("the path has no drive_id"), "{e}");
}

#[test]
fn methods_and_paths() {
    let e = err("POST", "/machine-config", "{}");
    assert!(
        e.contains("POST is not allowed on /machine-config: use GET, PUT, PATCH"),
        "{e}"
    );
    let e = err("GET", "/actions", "");
    assert!(e.contains("use PUT"), "{e}");
    let e = err("DELETE", "/drives/a", "");
    assert!(e.contains("hot-unplug"), "{e}");
    let e = err("GET", "/nothing/here", "");
    assert!(
        e.contains("invalid request method and/or path: GET /nothing/here"),
        "{e}"
    );
    let e = err("GET", "*", "");
    assert!(e.contains("is not a path"), "{e}");
    let e = err("GET", "/version", "{}");
    assert!(e.contains("takes no body"), "{e}");
    let e = err("PUT", "/boot-source", "  ");
    assert!(e.contains("needs a JSON body"), "{e}");
}

#[test]
fn firecracker_paths_vessel_lacks_say_so() {
    for (m, p) in [
        ("PUT", "/mmds"),
        ("GET", "/mmds"),
        ("PUT", "/mmds/config"),
        ("PUT", "/snapshot/create"),
        ("PUT", "/snapshot/load"),
        ("PUT", "/cpu-config"),
        ("PUT", "/hotplug/memory"),
        ("PUT", "/pmem/p0"),
        ("PATCH", "/balloon/hinting/start"),
    ] {
        let e = err(m, p, "{}");
        assert!(e.contains("is not supported by vessel yet"), "{m} {p}: {e}");
    }
}

/// The paths and methods of openapi.yaml, read line by line.
fn spec_operations() -> Vec<(String, String)> {
    let spec = include_str!("../openapi.yaml");
    let mut ops = Vec::new();
    let mut path = None;
    for line in spec.lines() {
        if line.starts_with("definitions:") {
            break;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(
                format!("/{p}")
                    .replace("{drive_id}", "d")
                    .replace("{iface_id}", "n")
                    .replace("{id}", "p"),
            );
        } else if let (Some(p), Some(m)) = (
            &path,
            line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')),
        ) {
            if ["get", "put", "patch"].contains(&m) {
                ops.push((m.to_uppercase(), p.clone()));
            }
        }
    }
    ops
}

#[test]
fn openapi_yaml_lists_exactly_the_routes() {
    let ops = spec_operations();
    assert!(ops.len() > 30, "{ops:?}");
    let mut served = 0;
    for (method, path) in &ops {
        let body = if method == "GET" { "" } else { "{}" };
        match parse(method, path, body.as_bytes()) {
            Err(RequestError::UnknownPath { .. } | RequestError::MethodNotAllowed { .. }) => {
                panic!("openapi.yaml lists {method} {path}, the router does not know it")
            }
            Err(RequestError::Unsupported { .. }) => {}
            _ => served += 1,
        }
    }
    // Every method the router allows on a served path is in the spec.
    for path in [
        "/",
        "/version",
        "/vm/config",
        "/vm",
        "/machine-config",
        "/boot-source",
        "/drives/d",
        "/network-interfaces/n",
        "/actions",
        "/balloon",
        "/balloon/statistics",
        "/entropy",
        "/vsock",
        "/logger",
        "/metrics",
        "/serial",
    ] {
        for method in ["GET", "PUT", "PATCH"] {
            let known = !matches!(
                parse(method, path, b"{}"),
                Err(RequestError::MethodNotAllowed { .. })
            );
            let in_spec = ops.iter().any(|(m, p)| m == method && p == path);
            assert_eq!(known, in_spec, "{method} {path}");
        }
    }
    assert_eq!(served, 23);
}
