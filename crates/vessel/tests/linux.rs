//! The real Debian guest (the cloud kernel with vessel's busybox initramfs)
//! on the engine `auto` picks: the software engine on hosts whose /dev/kvm
//! is not hardware-assisted. Each test is one boot.

mod common;
use common::{run, run_typing, vessel, Run};
use std::time::Duration;

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
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);

    let kib: u64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in:\n{}", r.stdout));
    let mib = kib / 1024;
    assert!((400..=512).contains(&mib), "MemTotal {mib} MiB");

    assert_clock_agrees(&r, "DATE=");

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
    let script = "nproc; echo DATE=$(date +%s)";
    let r = vessel_run(&["--cpus", "2", "--", "sh", "-c", script]);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(r.stdout.lines().next(), Some("2"), "stdout:\n{}", r.stdout);
    assert_clock_agrees(&r, "DATE=");
}

/// The guest's `date +%s`, printed after `prefix`, is within 5 s of the
/// host's clock when the line reached the host (not when the VM ended:
/// power-off on a loaded machine can take longer than the tolerance).
fn assert_clock_agrees(r: &Run, prefix: &str) {
    let (date, arrived) = r
        .line_after(prefix)
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{}", r.stdout));
    let guest: f64 = date
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a date: {date:?}"));
    // `date +%s` truncates: the guest's true time is in [guest, guest + 1).
    let skew = arrived - (guest + 0.5);
    assert!(
        skew.abs() <= 5.0,
        "guest clock is {skew:.1} s behind the host (guest {guest}, host {arrived:.1})"
    );
}
