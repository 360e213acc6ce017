//! The whole life of a VM driven over Firecracker's API with plain HTTP,
//! the way Firecracker's getting-started guide does it with `curl
//! --unix-socket`: machine-config, boot-source, a drive, a TAP network
//! interface (in a network namespace the test makes), vsock, InstanceStart; the
//! default Debian guest boots and prints a counter with its clock; `PATCH
//! /vm Paused` stops the counter for 2 s and `Resumed` lets it go on, with
//! the guest's clock still within a second of the host's; SendCtrlAltDel
//! shuts the guest down and the process ends with status 0.
//! Needs root (network namespaces); skipped loudly without it.

mod common;
use common::api::{action, default_guest, http, http_ok, unix_now, VmmProcess};
use common::netns::{is_root, Netns};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const TAP: &str = "vtapi0";

/// `TICK <n> <guest unix time>` lines: (n, guest time, host arrival time).
fn ticks(vmm: &VmmProcess) -> Vec<(u64, f64, f64)> {
    vmm.lines()
        .iter()
        .filter_map(|(l, at)| {
            let rest = &l[l.find("TICK ")? + 5..];
            let mut w = rest.split_whitespace();
            let n = w.next()?.parse().ok()?;
            let t = w.next()?.parse().ok()?;
            Some((n, t, *at))
        })
        .collect()
}

fn wait_for_ticks(vmm: &VmmProcess, more_than: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ticks(vmm).len() > more_than {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// FlushMetrics writes one JSON object with Firecracker's groups, and the
/// running devices' counters in them.
fn check_metrics(sock: &std::path::Path, path: &std::path::Path) {
    action(sock, "FlushMetrics");
    let text = std::fs::read_to_string(path).expect("the metrics file");
    let last = text.lines().last().expect("a metrics line");
    let m: serde_json::Value = serde_json::from_str(last).expect("one JSON object per line");
    assert!(m["utc_timestamp_ms"].as_u64().is_some(), "{m}");
    assert!(m["api_server"]["put_api_requests"].is_object(), "{m}");
    assert!(m["block"]["data"]["read_count"].is_u64(), "{m}");
    assert!(m["net"]["eth0"]["tx_packets_count"].is_u64(), "{m}");
    let exits = m["vcpu"]["exit_io_out"].as_u64().unwrap_or(0)
        + m["vcpu"]["exit_mmio_write"].as_u64().unwrap_or(0);
    assert!(exits > 0, "the guest's device accesses are counted: {m}");
    assert!(m["uart"]["write_count"].is_u64(), "{m}");
    assert!(m["vsock"].is_object(), "{m}");
}

/// `vessel ctl` talks to the same socket: info, then the balloon takes
/// 64 MiB from the guest, as GET /balloon/statistics shows.
fn balloon_through_ctl(sock: &std::path::Path) {
    let ctl = |args: &[&str]| {
        let out = common::vessel()
            .args(["ctl", "--api-sock", sock.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "vessel ctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ctl(&["info"]).contains("\"Running\""));
    ctl(&["balloon", "64"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stats = String::new();
    while Instant::now() < deadline {
        stats = http_ok(sock, "GET", "/balloon/statistics", None);
        if stats.contains("\"actual_mib\":64") && stats.contains("total_memory") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stats.contains("\"target_mib\":64"), "{stats}");
    assert!(
        stats.contains("\"actual_mib\":64"),
        "the guest gave back 64 MiB: {stats}"
    );
    assert!(
        stats.contains("total_memory"),
        "the guest reports statistics: {stats}"
    );
    ctl(&["balloon", "0"]);
}

#[test]
fn configure_boot_pause_resume_and_ctrl_alt_del_over_the_socket() {
    if !is_root() {
        eprintln!("API LIFECYCLE TEST SKIPPED: needs root for its network namespace");
        return;
    }
    let guest = default_guest();
    let dir = common::temp_dir("api-lifecycle");
    let sock = dir.0.join("api.sock");
    let disk = dir.0.join("data.img");
    std::fs::write(&disk, vec![0u8; 4 << 20]).unwrap();
    let ns = Netns::create("api", TAP, "10.0.3.1/24");

    let mut cmd = ns.command(&[env!("CARGO_BIN_EXE_vessel")]);
    cmd.args(["--api-sock", sock.to_str().unwrap(), "--id", "lifecycle"]);
    let mut vmm = VmmProcess::spawn(cmd);
    assert!(
        vmm.wait_for_socket(&sock, Duration::from_secs(10)),
        "no API socket:\n{}",
        vmm.transcript()
    );

    let info = http_ok(&sock, "GET", "/", None);
    assert!(info.contains("\"Not started\""), "{info}");
    let log = dir.0.join("vessel.log");
    let metrics = dir.0.join("metrics.json");
    http_ok(
        &sock,
        "PUT",
        "/logger",
        Some(
            &serde_json::json!({"log_path": log, "level": "Info", "show_level": true}).to_string(),
        ),
    );
    http_ok(
        &sock,
        "PUT",
        "/metrics",
        Some(&serde_json::json!({"metrics_path": metrics}).to_string()),
    );
    assert!(info.contains("\"lifecycle\""), "{info}");

    http_ok(
        &sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 1, "mem_size_mib": 256}"#),
    );
    let script = "i=0; while true; do echo TICK $i $(date +%s); i=$((i+1)); sleep 0.2; done";
    let boot_args = format!(
        "{} {}",
        guest.default_cmdline,
        guest::script_cmdline(script)
    );
    let boot = serde_json::json!({
        "kernel_image_path": guest.vmlinux,
        "initrd_path": guest.initramfs,
        "boot_args": boot_args,
    });
    http_ok(&sock, "PUT", "/boot-source", Some(&boot.to_string()));
    let drive = serde_json::json!({
        "drive_id": "data",
        "path_on_host": disk,
        "is_root_device": false,
        "is_read_only": false,
    });
    http_ok(&sock, "PUT", "/drives/data", Some(&drive.to_string()));
    http_ok(
        &sock,
        "PUT",
        "/network-interfaces/eth0",
        Some(&format!(
            r#"{{"iface_id": "eth0", "host_dev_name": "{TAP}", "guest_mac": "06:00:ac:10:00:02"}}"#
        )),
    );
    let vsock_uds = dir.0.join("v.sock");
    http_ok(
        &sock,
        "PUT",
        "/vsock",
        Some(&serde_json::json!({"guest_cid": 3, "uds_path": vsock_uds}).to_string()),
    );
    http_ok(
        &sock,
        "PUT",
        "/balloon",
        Some(r#"{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}"#),
    );
    let config = http_ok(&sock, "GET", "/vm/config", None);
    for key in ["\"vsock\"", "\"eth0\"", "\"data\"", "\"boot-source\""] {
        assert!(config.contains(key), "{key} missing from {config}");
    }
    // Before start, post-boot actions are refused with a reason.
    let (status, text) = http(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("fault_message"), "{text}");

    action(&sock, "InstanceStart");
    assert!(
        vmm.wait_for_line("VESSEL-GUEST-READY", BOOT_TIMEOUT),
        "guest not ready:\n{}",
        vmm.transcript()
    );
    assert!(
        vsock_uds.exists(),
        "the vsock device listens on its uds_path"
    );
    // After start, configuration is refused.
    let (status, text) = http(&sock, "PUT", "/boot-source", Some(&boot.to_string()));
    assert_eq!(status, 400, "{text}");
    assert!(
        wait_for_ticks(&vmm, 3, Duration::from_secs(60)),
        "no counter:\n{}",
        vmm.transcript()
    );
    let info = http_ok(&sock, "GET", "/", None);
    assert!(info.contains("\"Running\""), "{info}");

    http_ok(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#));
    let info = http_ok(&sock, "GET", "/", None);
    assert!(info.contains("\"Paused\""), "{info}");
    let before = ticks(&vmm).len();
    std::thread::sleep(Duration::from_secs(2));
    let after = ticks(&vmm).len();
    assert_eq!(before, after, "the counter advanced while paused");

    http_ok(&sock, "PATCH", "/vm", Some(r#"{"state": "Resumed"}"#));
    assert!(
        wait_for_ticks(&vmm, after + 2, Duration::from_secs(30)),
        "the counter did not go on after resume:\n{}",
        vmm.transcript()
    );
    let (_, guest_time, host_time) = *ticks(&vmm).last().unwrap();
    // The guest prints whole seconds: allow the truncation on top of 1 s.
    assert!(
        (host_time - guest_time).abs() < 2.0,
        "guest clock {guest_time} vs host {host_time} after resume"
    );
    assert!(unix_now() >= host_time);

    balloon_through_ctl(&sock);
    check_metrics(&sock, &metrics);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("[lifecycle:") && log_text.contains(":INFO]"),
        "log lines name the instance and level: {log_text}"
    );

    action(&sock, "SendCtrlAltDel");
    let status = vmm.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status,
        Some(0),
        "vessel did not end cleanly after Ctrl+Alt+Del:\n{}",
        vmm.transcript()
    );
    assert!(
        vmm.lines().iter().any(|(l, _)| l.contains("Ctrl+Alt+Del")),
        "the guest's init did not see Ctrl+Alt+Del:\n{}",
        vmm.transcript()
    );
}
