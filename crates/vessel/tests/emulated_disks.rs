//! Emulated disks in the real Debian guest (issue 15, check 1's disk
//! part): an ext4 image made with mkfs on the host, on an NVMe
//! controller, and one on the IDE controller (which must use bus-master
//! DMA); the guest mounts it, writes a 64 MiB random file and
//! syncs; after the VM stops the host reads the file out of the image
//! with debugfs and gets the guest's sha256. A read-only NVMe disk is
//! read-only to the guest.

mod common;
use common::{run, value, vessel};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str) -> Temp {
    Temp(std::env::temp_dir().join(format!("vessel-emu-{}-{name}", std::process::id())))
}

/// Finds an e2fsprogs tool (often in /sbin, outside a user's PATH).
fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn mkfs(path: &Path, mib: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(mib << 20).unwrap();
    let st = Command::new(tool("mkfs.ext4").unwrap())
        .args(["-q", "-F"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4");
}

/// The sha256 of `file` inside the ext4 image, read with debugfs.
fn sha_in_image(image: &Path, file: &str) -> String {
    // Named after the image: the tests run in parallel.
    let name = image.file_name().unwrap().to_string_lossy();
    let out = temp(&format!("{name}.dump"));
    let st = Command::new(tool("debugfs").unwrap())
        .arg("-R")
        .arg(format!("dump {file} {}", out.0.display()))
        .arg(image)
        .output()
        .unwrap();
    assert!(st.status.success(), "debugfs");
    common::sha256_file(&out.0)
}

/// The guest writes /mnt/f (64 MiB) on `dev` and prints its sha256 as SHA=.
const WRITE_SCRIPT: &str = "mkdir -p /mnt && mount -t ext4 DEV /mnt && \
    head -c 67108864 /dev/urandom > /mnt/f && sync && \
    sha256sum /mnt/f | sed 's/ .*//;s/^/SHA=/' && umount /mnt && echo UMOUNT=$?";

#[test]
fn nvme_disk_written_by_the_guest_reads_back_on_the_host() {
    let (Some(_), Some(_)) = (tool("mkfs.ext4"), tool("debugfs")) else {
        eprintln!("SKIPPED: mkfs.ext4 or debugfs (e2fsprogs) missing");
        return;
    };
    let disk = temp("nvme.img");
    mkfs(&disk.0, 128);
    let ro = temp("ro.img");
    std::fs::write(&ro.0, vec![0x5au8; 1 << 20]).unwrap();
    let script = format!(
        "{}; echo NAME=$(cat /sys/block/nvme0n1/device/model); \
         echo ROFLAG=$(cat /sys/block/nvme1n1/ro); \
         dd if=/dev/zero of=/dev/nvme1n1 bs=4096 count=1 conv=fsync 2>/dev/null; echo ROWRITE=$?",
        WRITE_SCRIPT.replace("DEV", "/dev/nvme0n1")
    );
    let mut cmd = vessel();
    cmd.arg("run")
        .arg("--disk")
        .arg(format!("{},if=nvme", disk.0.display()))
        .arg("--disk")
        .arg(format!("{},if=nvme,readonly", ro.0.display()))
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
    assert_eq!(value(&r.stdout, "UMOUNT="), "0", "stdout:\n{}", r.stdout);
    assert_eq!(value(&r.stdout, "NAME="), "vessel NVMe disk");
    let guest_sha = value(&r.stdout, "SHA=");
    assert_eq!(guest_sha.len(), 64);
    assert_eq!(
        sha_in_image(&disk.0, "/f"),
        guest_sha,
        "host reads the guest's file"
    );
    assert_eq!(value(&r.stdout, "ROFLAG="), "1", "read-only to the guest");
    assert_ne!(
        value(&r.stdout, "ROWRITE="),
        "0",
        "write to a read-only disk"
    );
    assert!(std::fs::read(&ro.0).unwrap().iter().all(|&b| b == 0x5a));
}

#[test]
fn ide_disk_written_by_the_guest_reads_back_on_the_host() {
    let (Some(_), Some(_)) = (tool("mkfs.ext4"), tool("debugfs")) else {
        eprintln!("SKIPPED: mkfs.ext4 or debugfs (e2fsprogs) missing");
        return;
    };
    let disk = temp("ide.img");
    mkfs(&disk.0, 128);
    let script = format!(
        "{}; echo MODEL=$(cat /sys/block/sda/device/model); \
         echo MODE=$(cat /sys/class/ata_device/dev1.0/xfer_mode)",
        WRITE_SCRIPT.replace("DEV", "/dev/sda")
    );
    let mut cmd = vessel();
    cmd.arg("run")
        .arg("--disk")
        .arg(format!("{},if=ide", disk.0.display()))
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
    assert_eq!(value(&r.stdout, "UMOUNT="), "0", "stdout:\n{}", r.stdout);
    assert_eq!(value(&r.stdout, "MODEL="), "vessel IDE disk");
    assert_eq!(
        value(&r.stdout, "MODE="),
        "XFER_MW_DMA_2",
        "bus-master DMA in use"
    );
    let guest_sha = value(&r.stdout, "SHA=");
    assert_eq!(guest_sha.len(), 64);
    assert_eq!(
        sha_in_image(&disk.0, "/f"),
        guest_sha,
        "host reads the guest's file"
    );
}
