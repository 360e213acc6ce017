//! virtio-blk on the Async (io_uring) engine in the real Debian guest,
//! one boot with `--disk PATH,io=async`: a 32 MiB random disk reads back
//! with the host's sha256, bytes the guest writes and flushes are in the
//! host image, and the same through O_DIRECT (`direct=on,io=async`),
//! read back in the guest past its page cache. The vessel process holds
//! one io_uring per async disk meanwhile. And Firecracker's
//! `io_engine: "Async"` in a config file's drive: the guest's ext4 root
//! on an async drive.

mod common;
use common::value;
use common::{run, vessel};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str) -> Temp {
    Temp(std::env::temp_dir().join(format!("vessel-async-{}-{name}", std::process::id())))
}

fn random_file(path: &Path, bytes: usize) {
    let mut data = vec![0u8; bytes];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut data).unwrap();
    std::fs::write(path, data).unwrap();
}

fn sha256(bytes_of: &Path, limit: usize) -> String {
    let data = std::fs::read(bytes_of).unwrap();
    common::sha256_hex(&data[..limit.min(data.len())])
}

/// io_uring descriptors the process whose command line contains
/// `marker` holds now (0 when there is no such process).
fn io_urings_of(marker: &str) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for p in procs.flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let urings = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|l| l.to_string_lossy() == "anon_inode:[io_uring]")
            .count();
        if urings > 0 {
            return urings;
        }
    }
    0
}

/// Watches for the process naming `marker` until `stop`; returns the most
/// io_urings it was seen holding.
fn watch_io_urings(marker: String, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut most = 0;
        while !stop.load(Ordering::Relaxed) {
            most = most.max(io_urings_of(&marker));
            std::thread::sleep(Duration::from_millis(50));
        }
        most
    })
}

#[test]
fn async_disks_read_and_write_through_io_uring() {
    let read = temp("read.img");
    let write = temp("write.img");
    let direct = temp("direct.img");
    random_file(&read.0, 32 << 20);
    std::fs::write(&write.0, vec![0u8; 16 << 20]).unwrap();
    std::fs::write(&direct.0, vec![0u8; 16 << 20]).unwrap();
    let read_sha = sha256(&read.0, usize::MAX);

    let script = "sha256sum /dev/vda | sed 's/ .*//;s/^/VDA=/'; \
        mkdir -p /tmp; head -c 4194304 /dev/urandom > /tmp/w; \
        sha256sum /tmp/w | sed 's/ .*//;s/^/W=/'; \
        dd if=/tmp/w of=/dev/vdb bs=1048576 conv=fsync 2>/dev/null; echo WROTE=$?; \
        dd if=/tmp/w of=/dev/vdc bs=1048576 conv=fsync 2>/dev/null; echo WROTE_DIRECT=$?; \
        sync; echo 3 > /proc/sys/vm/drop_caches; \
        head -c 4194304 /dev/vdc | sha256sum | sed 's/ .*//;s/^/BACK=/'; \
        echo SERIAL=$(cat /sys/block/vdb/serial)";
    let mut cmd = vessel();
    cmd.arg("run")
        .arg("--disk")
        .arg(format!("{},io=async,readonly", read.0.display()))
        .arg("--disk")
        .arg(format!("{},io=async,id=async-disk", write.0.display()))
        .arg("--disk")
        .arg(format!("{},io=async,direct=on", direct.0.display()))
        .args(["--", "sh", "-c", script]);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_io_urings(read.0.display().to_string(), stop.clone());
    let r = run(cmd, BOOT_TIMEOUT);
    stop.store(true, Ordering::Relaxed);
    let urings = watcher.join().unwrap();
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(
        r.status,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );

    assert_eq!(value(&r.stdout, "VDA="), read_sha, "32 MiB disk read");
    let written = value(&r.stdout, "W=");
    assert_eq!(value(&r.stdout, "WROTE="), "0");
    assert_eq!(sha256(&write.0, 4 << 20), written, "guest's write, flushed");
    assert_eq!(value(&r.stdout, "WROTE_DIRECT="), "0");
    assert_eq!(
        sha256(&direct.0, 4 << 20),
        written,
        "write through O_DIRECT"
    );
    assert_eq!(
        value(&r.stdout, "BACK="),
        written,
        "read back past the cache"
    );
    assert_eq!(value(&r.stdout, "SERIAL="), "async-disk", "GET_ID");
    assert_eq!(urings, 3, "one io_uring per async disk");
}

/// A drive with `io_engine: "Async"` in a Firecracker config file (the
/// API's drive body) as the guest's ext4 root: a file written, synced,
/// dropped from the guest's cache and read back hashes the same.
#[test]
fn config_file_async_root_drive() {
    let guest = common::api::default_guest();
    let rootfs = temp("root.ext4");
    let cfg = temp("cfg.json");
    let st = vessel()
        .args(["guest", "prepare", "--rootfs"])
        .arg(&rootfs.0)
        .status()
        .unwrap();
    assert!(st.success(), "cannot make the root file system");
    let script = "grep ' / ' /proc/mounts; head -c 4194304 /dev/urandom > /f; sync; \
        sha256sum /f | sed 's/ .*//;s/^/F=/'; echo 3 > /proc/sys/vm/drop_caches; \
        sha256sum /f | sed 's/ .*//;s/^/AGAIN=/'";
    let body = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest.vmlinux,
            "initrd_path": guest.initramfs,
            "boot_args": format!("console=ttyS0 reboot=k panic=1 {}",
                guest::script_cmdline(script)),
        },
        "drives": [{
            "drive_id": "rootfs",
            "is_root_device": true,
            "cache_type": "Writeback",
            "is_read_only": false,
            "path_on_host": rootfs.0,
            "io_engine": "Async",
        }],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
    });
    std::fs::write(&cfg.0, body.to_string()).unwrap();
    let mut cmd = vessel();
    cmd.args(["--no-api", "--config-file"]).arg(&cfg.0);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_io_urings(cfg.0.display().to_string(), stop.clone());
    let r = run(cmd, BOOT_TIMEOUT);
    stop.store(true, Ordering::Relaxed);
    let urings = watcher.join().unwrap();
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "{all}");
    assert!(
        r.stdout.contains("/dev/vda / ext4 rw"),
        "root on the drive: {all}"
    );
    let written = value(&r.stdout, "F=");
    assert_eq!(written.len(), 64, "{all}");
    assert_eq!(
        value(&r.stdout, "AGAIN="),
        written,
        "read back from the disk"
    );
    assert_eq!(urings, 1, "the drive runs on io_uring");
}
