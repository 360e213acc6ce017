//! Bad input never panics vessel: each gives one line naming the problem and
//! a non-zero status.

mod common;
use common::{run, vessel};
use std::time::Duration;

fn hello() -> &'static str {
    guests::by_name("hello").expect("hello guest").path
}

/// Runs vessel with `args` and returns its one-line error.
fn error_of(args: &[&str]) -> String {
    let mut cmd = vessel();
    cmd.args(args);
    let r = run(cmd, Duration::from_secs(30));
    assert!(!r.timed_out, "vessel hung on {args:?}");
    assert_ne!(r.status, Some(0), "vessel accepted {args:?}");
    assert_ne!(r.status, None, "vessel died by a signal on {args:?}");
    assert!(
        !r.stderr.contains("panicked"),
        "vessel panicked: {}",
        r.stderr
    );
    let lines: Vec<&str> = r.stderr.trim().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line of error, got: {}",
        r.stderr
    );
    lines[0].to_string()
}

#[test]
fn missing_kernel() {
    let e = error_of(&["run", "--kernel", "/nonexistent/vmlinux"]);
    assert!(e.contains("cannot open kernel /nonexistent/vmlinux"), "{e}");
    assert!(e.contains("No such file"), "{e}");
}

#[test]
fn file_that_is_not_a_kernel() {
    let dir = std::env::temp_dir().join(format!("vessel-bad-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("garbage");
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, junk).unwrap();
    // The software engine runs everywhere, so the kernel check is what fails.
    let e = error_of(&[
        "run",
        "--engine",
        "soft",
        "--kernel",
        path.to_str().unwrap(),
    ]);
    assert!(e.contains("cannot load kernel"), "{e}");
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let e = error_of(&[
        "run",
        "--engine",
        "soft",
        "--kernel",
        empty.to_str().unwrap(),
    ]);
    assert!(e.contains("cannot load kernel"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn zero_memory() {
    let e = error_of(&["run", "--memory", "0", "--kernel", hello()]);
    assert!(e.contains("--memory must be at least"), "{e}");
}

#[test]
fn more_memory_than_the_host_has() {
    let e = error_of(&["run", "--memory", "100000000", "--kernel", hello()]);
    assert!(e.contains("more than this host has"), "{e}");
}

#[test]
fn zero_cpus() {
    let e = error_of(&["run", "--cpus", "0", "--kernel", hello()]);
    assert!(e.contains("--cpus must be at least 1"), "{e}");
}

#[test]
fn too_many_cpus() {
    let e = error_of(&[
        "run",
        "--engine",
        "kvm",
        "--cpus",
        "5000",
        "--kernel",
        hello(),
    ]);
    assert!(e.contains("--cpus 5000 is more than"), "{e}");
}

#[test]
fn unknown_engine_is_refused_by_the_parser() {
    let mut cmd = vessel();
    cmd.args(["run", "--engine", "vmware", "--kernel", hello()]);
    let r = run(cmd, Duration::from_secs(10));
    assert_eq!(r.status, Some(2));
    assert!(r.stderr.contains("invalid value 'vmware'"), "{}", r.stderr);
}

/// Runs `vessel run --engine kvm` where /dev/kvm is hidden (a private mount
/// namespace with an empty /dev) or not accessible (an unprivileged user).
fn kvm_error_in(wrapper: &[&str]) -> Option<String> {
    let bin = env!("CARGO_BIN_EXE_vessel");
    let mut cmd = std::process::Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .args([bin, "run", "--engine", "kvm", "--kernel", hello()]);
    let r = run(cmd, Duration::from_secs(30));
    if !r.stderr.contains("vessel: ") {
        eprintln!("cannot build the test's environment: {}", r.stderr);
        return None;
    }
    assert_ne!(r.status, Some(0));
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    Some(r.stderr)
}

#[test]
fn no_dev_kvm() {
    if !is_root() {
        eprintln!("no_dev_kvm needs root for a mount namespace; skipped");
        return;
    }
    // The binary and the guest live under the work tree, not /dev, so an
    // empty tmpfs on /dev hides only /dev/kvm (and friends).
    let wrapper = [
        "unshare",
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$0\" \"$@\"",
    ];
    if let Some(e) = kvm_error_in(&wrapper) {
        assert!(e.contains("/dev/kvm") && e.contains("missing"), "{e}");
    }
}

#[test]
fn no_permission_on_dev_kvm() {
    if !is_root() || !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("no_permission_on_dev_kvm needs root and /dev/kvm; skipped");
        return;
    }
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    if let Some(e) = kvm_error_in(&wrapper) {
        assert!(e.contains("/dev/kvm") && e.contains("permission"), "{e}");
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
