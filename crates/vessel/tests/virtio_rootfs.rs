//! `vessel run --rootfs IMAGE`: the ext4 image `vessel guest prepare
//! --rootfs` makes is attached as /dev/vda and the default guest's init
//! switches to it, so `/` is /dev/vda, read-write, and survives in the
//! image after power-off.

mod common;
use common::{run, vessel};
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(900);

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn boots_with_root_on_vda() {
    let image =
        Temp(std::env::temp_dir().join(format!("vessel-rootfs-{}.ext4", std::process::id())));
    let mut prepare = vessel();
    prepare.args(["guest", "prepare", "--rootfs"]).arg(&image.0);
    let r = run(prepare, TIMEOUT);
    assert_eq!(r.status, Some(0), "guest prepare:\n{}", r.stderr);

    let script = "grep ' / ' /proc/mounts | sed 's/^/ROOT=/'; \
        echo kept > /root-was-writable && sync && echo WROTE=$?";
    let mut cmd = vessel();
    cmd.arg("run")
        .arg("--rootfs")
        .arg(&image.0)
        .args(["--", "sh", "-c", script]);
    let r = run(cmd, TIMEOUT);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(
        r.status,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    let root = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ROOT="))
        .unwrap_or_else(|| panic!("no root mount in:\n{}", r.stdout));
    let fields: Vec<&str> = root.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"/dev/vda"), "root device: {root}");
    assert_eq!(fields.get(2), Some(&"ext4"), "root type: {root}");
    assert!(
        fields
            .get(3)
            .is_some_and(|o| o.split(',').any(|o| o == "rw")),
        "root mounted read-write: {root}"
    );
    assert!(r.stdout.contains("WROTE=0"), "stdout:\n{}", r.stdout);
    // The file the guest wrote is in the image (debugfs reads ext4
    // without mounting it).
    let out = std::process::Command::new("debugfs")
        .args(["-R", "cat /root-was-writable"])
        .arg(&image.0)
        .output();
    if let Ok(out) = out {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "kept",
            "file written in the guest, read from the image"
        );
    }
}
