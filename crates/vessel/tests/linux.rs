//! The real Debian guest (the cloud kernel with vessel's busybox initramfs)
//! on the engine `auto` picks: the software engine on hosts whose /dev/kvm
//! is not hardware-assisted. Each test is one boot.

mod common;
use common::{run, run_typing, vessel, Run};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

fn vessel_run(args: &[&str]) -> Run {
    let mut cmd = vessel();
    cmd.arg("run").args(args);
    let r = run(cmd, BOOT_TIMEOUT);
    assert!(
        !r.timed_out,
        "vessel run {args:?} timed out; stderr:\n{}",
        r.stderr
    );
    r
}

#[test]
fn uname_prints_the_debian_release() {
    let r = vessel_run(&["--", "uname", "-r"]);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    let release = r.stdout.trim();
    assert!(
        release.starts_with("6.") && release.ends_with("-cloud-amd64"),
        "not the Debian cloud kernel's release: {:?}",
        r.stdout
    );
}

#[test]
fn exit_status_is_the_commands() {
    let r = vessel_run(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(
        r.status,
        Some(7),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn arguments_survive_byte_for_byte() {
    let r = vessel_run(&["--", "echo", "a  b \"c\""]);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(r.stdout, "a  b \"c\"\n");
}

/// Memory size, clock and a clean kernel log, in one boot.
#[test]
fn memory_clock_and_dmesg() {
    let script = "grep MemTotal /proc/meminfo; echo DATE=$(date +%s); dmesg";
    let r = vessel_run(&["--memory", "512", "--", "sh", "-c", script]);
    let host_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);

    let kib: u64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in:\n{}", r.stdout));
    let mib = kib / 1024;
    assert!((400..=512).contains(&mib), "MemTotal {mib} MiB");

    let guest_date: i64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("DATE="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no DATE in:\n{}", r.stdout));
    // The guest read its clock shortly before the VM ended.
    let skew = host_now - guest_date;
    assert!(
        (-5..=5).contains(&skew),
        "guest clock is {skew} s behind the host"
    );

    for bad in ["ACPI Error", "ACPI BIOS Error", "Call Trace"] {
        assert!(!r.stdout.contains(bad), "dmesg has {bad:?}:\n{}", r.stdout);
    }
}

#[test]
fn poweroff_ends_vessel_with_status_0() {
    let mut cmd = vessel();
    cmd.arg("run");
    let r = run_typing(
        cmd,
        BOOT_TIMEOUT,
        &[("VESSEL-GUEST-READY", "\n"), ("# ", "poweroff\n")],
    );
    assert!(!r.timed_out, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
}

#[test]
fn reboot_with_no_reboot_exits_0() {
    let mut cmd = vessel();
    cmd.args(["run", "--no-reboot"]);
    let r = run_typing(
        cmd,
        BOOT_TIMEOUT,
        &[("VESSEL-GUEST-READY", "\n"), ("# ", "reboot\n")],
    );
    assert!(!r.timed_out, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(r.stdout.matches("VESSEL-GUEST-READY").count(), 1);
}

#[test]
fn reboot_restarts_the_guest() {
    let mut cmd = vessel();
    cmd.arg("run");
    let r = run_typing(
        cmd,
        BOOT_TIMEOUT,
        &[
            ("VESSEL-GUEST-READY", "\n"),
            ("# ", "reboot\n"),
            ("VESSEL-GUEST-READY", "\n"),
            ("# ", "poweroff\n"),
        ],
    );
    assert!(!r.timed_out, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(
        r.stdout.matches("VESSEL-GUEST-READY").count(),
        2,
        "the guest did not boot twice:\n{}",
        r.stdout
    );
}

#[test]
fn kernel_panic_ends_vessel_with_an_error() {
    let r = vessel_run(&["--cmdline", "console=ttyS0 panic=-1 rdinit=/nonexistent"]);
    assert_ne!(r.status, Some(0));
    assert!(
        r.stderr.contains("the guest kernel panicked"),
        "stderr:\n{}",
        r.stderr
    );
}

#[test]
fn ctrl_a_x_stops_the_vm() {
    let mut cmd = vessel();
    cmd.arg("run");
    let r = run_typing(cmd, BOOT_TIMEOUT, &[("VESSEL-GUEST-READY", "\u{1}x")]);
    assert!(!r.timed_out, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains("stopped from the console"),
        "stderr:\n{}",
        r.stderr
    );
}

/// Two vCPUs: both come up, and their clocks agree with the host's (a TSC
/// that differed between vCPUs would make the guest's clock jump).
#[test]
fn two_vcpus_come_up_with_one_clock() {
    let r = vessel_run(&["--cpus", "2", "--", "sh", "-c", "nproc; date +%s"]);
    let host_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("2"), "stdout:\n{}", r.stdout);
    let guest_date: i64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no date in:\n{}", r.stdout));
    assert!(
        (host_now - guest_date).abs() <= 5,
        "guest clock off by {} s",
        host_now - guest_date
    );
}
