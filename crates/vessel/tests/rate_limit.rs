//! A drive's rate limiter really limits the guest (issue 11, check 5): a
//! 64 MiB disk limited to 4 MiB/s (`--disk PATH,bw=4M`) is read
//! sequentially by the Debian guest with `dd bs=1M`, timed in the guest,
//! and the rate must be within 10% of 4 MiB/s.

mod common;
use common::{run, vessel};
use std::path::PathBuf;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const LIMIT_MIB_S: f64 = 4.0;
const DISK_MIB: u64 = 64;
/// Read first, untimed: the bucket starts full (one second's worth) and
/// this spends it, so the timed part sees the steady rate.
const WARM_MIB: u64 = 8;

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn value(stdout: &str, key: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} in:\n{stdout}"))
}

#[test]
fn drive_bandwidth_limit_holds_in_the_guest() {
    let img = Temp(std::env::temp_dir().join(format!("vessel-rl-{}.img", std::process::id())));
    std::fs::write(&img.0, vec![0x5au8; (DISK_MIB << 20) as usize]).unwrap();

    let script = format!(
        "dd if=/dev/vda of=/dev/null bs=1048576 count={WARM_MIB} 2>/dev/null; \
         echo T0=$(cut -d' ' -f1 /proc/uptime); \
         dd if=/dev/vda of=/dev/null bs=1048576 skip={WARM_MIB} 2>/dev/null; echo DD=$?; \
         echo T1=$(cut -d' ' -f1 /proc/uptime)"
    );
    let mut cmd = vessel();
    cmd.arg("run")
        .arg("--disk")
        .arg(format!("{},readonly,bw={}M", img.0.display(), LIMIT_MIB_S))
        .args(["--", "sh", "-c", &script]);
    let r = run(cmd, BOOT_TIMEOUT);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(
        r.status,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(value(&r.stdout, "DD="), 0.0, "dd succeeded");

    let mib = (DISK_MIB - WARM_MIB) as f64;
    let guest_secs = value(&r.stdout, "T1=") - value(&r.stdout, "T0=");
    let rate = mib / guest_secs;
    let host = match (r.line_after("T0="), r.line_after("T1=")) {
        (Some((_, t0)), Some((_, t1))) => mib / (t1 - t0),
        _ => f64::NAN,
    };
    eprintln!(
        "{mib} MiB in {guest_secs:.2} s: {rate:.3} MiB/s in the guest, {host:.3} MiB/s by the host's clock (limit {LIMIT_MIB_S})"
    );
    assert!(
        (rate - LIMIT_MIB_S).abs() <= LIMIT_MIB_S * 0.10,
        "guest read {rate:.3} MiB/s, limit {LIMIT_MIB_S} MiB/s"
    );
    assert!(
        (host - LIMIT_MIB_S).abs() <= LIMIT_MIB_S * 0.25,
        "host clock says {host:.3} MiB/s: the guest's clock is off"
    );
}
