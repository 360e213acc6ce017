//! virtio-blk and virtio-rng in the real Debian guest, one boot: a 64 MiB
//! random disk reads back with the host's sha256, bytes the guest writes
//! and syncs are in the host image, a read-only disk is read-only to the
//! guest and unchanged on the host, and /dev/hwrng is virtio's and gives
//! 1 MiB.

mod common;
use common::value;
use common::{run, vessel};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str) -> Temp {
    Temp(std::env::temp_dir().join(format!("vessel-virtio-{}-{name}", std::process::id())))
}

fn random_file(path: &Path, bytes: usize) {
    let mut data = vec![0u8; bytes];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut data).unwrap();
    std::fs::write(path, data).unwrap();
}

fn sha256(bytes_of: &Path, limit: Option<usize>) -> String {
    let data = std::fs::read(bytes_of).unwrap();
    common::sha256_hex(&data[..limit.unwrap_or(data.len()).min(data.len())])
}

#[test]
fn disks_and_entropy_in_one_boot() {
    let read = temp("read.img");
    let write = temp("write.img");
    let ro = temp("ro.img");
    random_file(&read.0, 64 << 20);
    std::fs::write(&write.0, vec![0u8; 16 << 20]).unwrap();
    random_file(&ro.0, 8 << 20);
    let read_sha = sha256(&read.0, None);
    let ro_sha = sha256(&ro.0, None);

    let script = "sha256sum /dev/vda | sed 's/ .*//;s/^/VDA=/'; \
        mkdir -p /tmp; head -c 4194304 /dev/urandom > /tmp/w; \
        sha256sum /tmp/w | sed 's/ .*//;s/^/W=/'; \
        dd if=/tmp/w of=/dev/vdb bs=1048576 conv=fsync 2>/dev/null; echo WROTE=$?; sync; \
        echo ROFLAG=$(cat /sys/block/vdc/ro); \
        dd if=/dev/zero of=/dev/vdc bs=4096 count=1 conv=fsync 2>/dev/null; echo ROWRITE=$?; \
        echo SERIAL=$(cat /sys/block/vdc/serial); \
        echo RNG=$(cat /sys/devices/virtual/misc/hw_random/rng_current); \
        dd if=/dev/hwrng bs=4096 count=256 2>/dev/null | wc -c | sed 's/^/HWRNG=/'";
    let mut cmd = vessel();
    cmd.arg("run")
        .arg("--disk")
        .arg(&read.0)
        .arg("--disk")
        .arg(&write.0)
        .arg("--disk")
        .arg(format!("{},readonly,id=ro-disk", ro.0.display()))
        .arg("--rng")
        .args(["--", "sh", "-c", script]);
    let r = run(cmd, BOOT_TIMEOUT);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(
        r.status,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );

    assert_eq!(value(&r.stdout, "VDA="), read_sha, "64 MiB disk read");
    assert_eq!(value(&r.stdout, "WROTE="), "0");
    assert_eq!(
        sha256(&write.0, Some(4 << 20)),
        value(&r.stdout, "W="),
        "bytes the guest wrote and synced"
    );
    assert_eq!(value(&r.stdout, "ROFLAG="), "1", "read-only to the guest");
    assert_ne!(
        value(&r.stdout, "ROWRITE="),
        "0",
        "write to a read-only disk"
    );
    assert_eq!(value(&r.stdout, "SERIAL="), "ro-disk", "GET_ID");
    assert_eq!(sha256(&ro.0, None), ro_sha, "read-only image untouched");
    assert!(value(&r.stdout, "RNG=").starts_with("virtio_rng"));
    assert_eq!(value(&r.stdout, "HWRNG="), "1048576");
}
