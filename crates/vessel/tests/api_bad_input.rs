//! Hostile and careless API clients against a vessel whose guest is
//! running: malformed JSON, unknown fields, wrong types, negative and absurd
//! sizes, a body over the payload limit, wrong methods, unknown paths,
//! requests in the wrong state, a client that sends half a request and
//! waits, hundreds of clients at once, and socket paths that exist or
//! cannot be made. Each gets a 400 with a fault message (or is dropped);
//! afterwards `GET /` still answers and the guest is still running.

mod common;
use common::api::{action, default_guest, http, http_ok, VmmProcess};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A request that must be refused with 400 and a fault message that
/// contains `hint`.
fn refused(sock: &Path, method: &str, path: &str, body: Option<&str>, hint: &str) {
    let (status, text) = http(sock, method, path, body);
    assert_eq!(
        status, 400,
        "{method} {path} {body:?} answered {status}: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    let message = v["fault_message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&hint.to_lowercase()),
        "{method} {path} {body:?}: {message:?} does not mention {hint:?}"
    );
}

fn count_ticks(vmm: &VmmProcess) -> usize {
    vmm.lines()
        .iter()
        .filter(|(l, _)| l.contains("TICK"))
        .count()
}

fn boot_counter_guest(sock: &Path) {
    let guest = default_guest();
    let script = "i=0; while true; do echo TICK $i; i=$((i+1)); sleep 0.2; done";
    let boot = serde_json::json!({
        "kernel_image_path": guest.vmlinux,
        "initrd_path": guest.initramfs,
        "boot_args": format!("{} {}", guest.default_cmdline, guest::script_cmdline(script)),
    });
    http_ok(sock, "PUT", "/boot-source", Some(&boot.to_string()));
    action(sock, "InstanceStart");
}

fn bodies_and_paths(sock: &Path) {
    refused(sock, "PUT", "/machine-config", Some("{not json"), "");
    refused(
        sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 1, "mem_size_mib": 128, "colour": "red"}"#),
        "colour",
    );
    refused(
        sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": "one", "mem_size_mib": 128}"#),
        "vcpu_count",
    );
    refused(
        sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": -3, "mem_size_mib": 128}"#),
        "vcpu_count",
    );
    refused(
        sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 1, "mem_size_mib": 18446744073709551615}"#),
        "mem_size_mib",
    );
    let huge = format!(r#"{{"boot_args": "{}"}}"#, "x".repeat(60_000));
    let (status, _) = http(sock, "PUT", "/boot-source", Some(&huge));
    assert_eq!(status, 400, "a body over the payload limit");
    refused(sock, "DELETE", "/machine-config", None, "");
    refused(sock, "GET", "/no-such-path", None, "");
    refused(sock, "GET", "/mmds", None, "not supported");
    refused(sock, "PUT", "/snapshot/create", Some("{}"), "not supported");
    refused(
        sock,
        "PUT",
        "/drives/a",
        Some(r#"{"drive_id": "b", "path_on_host": "/x", "is_root_device": false}"#),
        "drive_id",
    );
}

fn wrong_state_after_start(sock: &Path) {
    refused(
        sock,
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path": "/k"}"#),
        "InstanceStart",
    );
    refused(
        sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 2, "mem_size_mib": 128}"#),
        "InstanceStart",
    );
    refused(
        sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        "",
    );
    refused(
        sock,
        "PATCH",
        "/drives/nope",
        Some(r#"{"drive_id": "nope", "path_on_host": "/x"}"#),
        "nope",
    );
}

/// A client that sends half a request and stays silent must not keep
/// others waiting; hundreds of clients at once all get answers.
fn slow_and_many_clients(sock: &Path) {
    let mut half = UnixStream::connect(sock).unwrap();
    half.write_all(b"PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"vcpu")
        .unwrap();
    let started = Instant::now();
    http_ok(sock, "GET", "/", None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a half request blocked another client"
    );
    let clients: Vec<_> = (0..300)
        .map(|_| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || http(&sock, "GET", "/machine-config", None).0)
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    // Garbage that is not HTTP at all.
    let mut junk = UnixStream::connect(sock).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    junk.write_all(b"\x00\xff\x16\x03\x01 hello\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = junk.read_to_end(&mut answer);
    drop(half);
}

#[test]
fn bad_requests_are_refused_and_the_guest_keeps_running() {
    let dir = common::temp_dir("bad-api");
    let sock = dir.0.join("api.sock");
    let mut cmd = common::vessel();
    cmd.args(["--api-sock", sock.to_str().unwrap()]);
    let mut vmm = VmmProcess::spawn(cmd);
    assert!(vmm.wait_for_socket(&sock, Duration::from_secs(10)));

    refused(
        &sock,
        "PATCH",
        "/vm",
        Some(r#"{"state": "Paused"}"#),
        "InstanceStart",
    );
    refused(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "SendCtrlAltDel"}"#),
        "InstanceStart",
    );
    bodies_and_paths(&sock);
    // A kernel that does not load: the start fails with the reason, and the
    // instance can be fixed and started again.
    let not_a_kernel = dir.0.join("not-a-kernel");
    std::fs::write(&not_a_kernel, b"hello").unwrap();
    let bad_boot = serde_json::json!({"kernel_image_path": not_a_kernel}).to_string();
    http_ok(&sock, "PUT", "/boot-source", Some(&bad_boot));
    refused(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        "not-a-kernel",
    );
    assert!(http_ok(&sock, "GET", "/", None).contains("Not started"));
    assert!(vmm.is_running(), "a failed start does not end the process");
    boot_counter_guest(&sock);
    assert!(
        vmm.wait_for_line("TICK 3", Duration::from_secs(600)),
        "guest not running:\n{}",
        vmm.transcript()
    );
    wrong_state_after_start(&sock);
    bodies_and_paths(&sock);
    slow_and_many_clients(&sock);

    let info = http_ok(&sock, "GET", "/", None);
    assert!(info.contains("Running"), "{info}");
    let before = count_ticks(&vmm);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_ticks(&vmm) <= before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        count_ticks(&vmm) > before + 2,
        "the guest stopped:\n{}",
        vmm.transcript()
    );
    assert!(vmm.is_running());
    assert!(!vmm.stderr().contains("panicked"), "{}", vmm.stderr());
}

#[test]
fn socket_paths_that_exist_or_cannot_be_made_are_refused_clearly() {
    let dir = common::temp_dir("bad-sock");
    let taken = dir.0.join("taken.sock");
    std::fs::write(&taken, b"").unwrap();
    let out = common::vessel()
        .args(["--api-sock", taken.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taken.sock"), "{err}");
    assert!(
        std::fs::read(&taken).is_ok(),
        "the existing file was left alone"
    );

    let out = common::vessel()
        .args(["--api-sock", "/nonexistent-dir/api.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir"), "{err}");
}
