//! A drive's rate limiter set over the API holds in the guest, and a PATCH
//! of the limiter after boot takes effect (issue 11, check 5): the drive is
//! put with 4 MiB/s, the guest reads it sequentially and times itself,
//! then the test PATCHes the limiter to 8 MiB/s while the guest waits, and
//! the guest's second timed read runs at the new rate; both within 10%.

mod common;
use common::api::{action, default_guest, http_ok, VmmProcess};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn limiter(mib_per_s: u64) -> serde_json::Value {
    serde_json::json!({"bandwidth": {"size": mib_per_s * MIB, "refill_time": 1000}})
}

/// The value of the first `KEY=` line.
fn value(vmm: &VmmProcess, key: &str) -> f64 {
    vmm.lines()
        .iter()
        .find_map(|(l, _)| l.split_once(key).map(|(_, v)| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{}", vmm.transcript()))
}

/// Guest shell that spends the bucket's initial fill with `warm` MiB
/// from `skip`, then times `timed` MiB and prints `<name>_S=<seconds>`.
fn timed_read(name: &str, skip: u64, warm: u64, timed: u64) -> String {
    let rest = skip + warm;
    format!(
        "dd if=/dev/vda of=/dev/null bs=1048576 skip={skip} count={warm} 2>/dev/null; \
         t0=$(cut -d' ' -f1 /proc/uptime); \
         dd if=/dev/vda of=/dev/null bs=1048576 skip={rest} count={timed} 2>/dev/null; \
         t1=$(cut -d' ' -f1 /proc/uptime); \
         echo {name}_S=$(echo \"$t1 $t0\" | awk '{{print $1 - $2}}'); "
    )
}

#[test]
fn drive_limit_holds_and_a_patch_after_boot_changes_it() {
    let guest = default_guest();
    let dir = common::temp_dir("api-rate-limit");
    let sock = dir.0.join("api.sock");
    let disk = dir.0.join("disk.img");
    std::fs::write(&disk, vec![0x5a_u8; (64 * MIB) as usize]).unwrap();

    let script = format!(
        "{} echo PATCH-NOW; sleep 4; {}",
        timed_read("FIRST", 0, 8, 16),
        timed_read("SECOND", 24, 8, 24)
    );
    let mut vmm = VmmProcess::spawn({
        let mut c = common::vessel();
        c.args(["--api-sock", sock.to_str().unwrap()]);
        c
    });
    assert!(vmm.wait_for_socket(&sock, Duration::from_secs(10)));
    let boot = serde_json::json!({
        "kernel_image_path": guest.vmlinux,
        "initrd_path": guest.initramfs,
        "boot_args": format!("{} {}", guest.default_cmdline, guest::script_cmdline(&script)),
    });
    http_ok(&sock, "PUT", "/boot-source", Some(&boot.to_string()));
    let drive = serde_json::json!({
        "drive_id": "data",
        "path_on_host": disk,
        "is_root_device": false,
        "is_read_only": true,
        "rate_limiter": limiter(4),
    });
    http_ok(&sock, "PUT", "/drives/data", Some(&drive.to_string()));
    action(&sock, "InstanceStart");
    assert!(
        vmm.wait_for_line("PATCH-NOW", Duration::from_secs(600)),
        "{}",
        vmm.transcript()
    );
    let patch = serde_json::json!({"drive_id": "data", "rate_limiter": limiter(8)});
    http_ok(&sock, "PATCH", "/drives/data", Some(&patch.to_string()));
    assert!(
        vmm.wait_for_line("SECOND_S=", Duration::from_secs(120)),
        "{}",
        vmm.transcript()
    );

    let first = 16.0 / value(&vmm, "FIRST_S=");
    let second = 24.0 / value(&vmm, "SECOND_S=");
    eprintln!("guest read {first:.3} MiB/s at 4 MiB/s, {second:.3} MiB/s after PATCH to 8");
    assert!(
        (first - 4.0).abs() <= 0.4,
        "first read {first:.3} MiB/s, limit 4"
    );
    assert!(
        (second - 8.0).abs() <= 0.8,
        "read after PATCH {second:.3} MiB/s, limit 8"
    );
    let config = http_ok(&sock, "GET", "/vm/config", None);
    assert!(config.contains(&(8 * MIB).to_string()), "{config}");
}
