//! virtio-balloon in the real Debian guest, one boot: with
//! `--balloon target=64,deflate-after=S` the guest's MemTotal drops by
//! 64 MiB (the driver takes inflated pages out of the managed count) and
//! comes back when the target returns to zero. The guest samples
//! /proc/meminfo until it has seen the drop and the return.

mod common;
use common::{run, vessel};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(1200);
const TARGET_MIB: u64 = 64;

fn value(stdout: &str, key: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number for {key} in:\n{stdout}"))
}

#[test]
fn inflate_then_deflate_moves_memtotal() {
    // Samples every second (up to 15 minutes): the lowest MemTotal seen,
    // then, once it has climbed back by most of the target and holds
    // still, the last one.
    let script = format!(
        "mt() {{ sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo; }}; \
         echo FIRST=$(mt); min=$(mt); last=0; n=0; \
         while [ $n -lt 900 ]; do \
           m=$(mt); [ $m -lt $min ] && min=$m; \
           if [ $m -ge $((min + {back})) ] && [ $m -eq $last ]; then break; fi; \
           last=$m; n=$((n + 1)); sleep 1; \
         done; echo MIN=$min; echo LAST=$(mt); echo SECONDS=$n",
        back = (TARGET_MIB - 8) * 1024,
    );
    let mut cmd = vessel();
    cmd.args(["run", "--memory", "512", "--balloon"])
        .arg(format!("target={TARGET_MIB},deflate-after=40"))
        .args(["--", "sh", "-c", &script]);
    let r = run(cmd, TIMEOUT);
    eprintln!("stdout:\n{}", r.stdout);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(
        r.status,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    let min = value(&r.stdout, "MIN=");
    let last = value(&r.stdout, "LAST=");
    let drop_kib = last.saturating_sub(min);
    assert!(
        ((TARGET_MIB - 2) * 1024..=(TARGET_MIB + 2) * 1024).contains(&drop_kib),
        "MemTotal dropped by {drop_kib} KiB while inflated, expected about {} KiB",
        TARGET_MIB * 1024
    );
    assert!(
        last > 400 * 1024,
        "MemTotal back to most of 512 MiB after deflating: {last} KiB"
    );
}
