//! Shared directories over virtio-fs in the real Debian guest (issue 12,
//! check 3), one boot with two shares: `-v TREE:/mnt/ro:ro` holds files,
//! a symlink and a 5 GiB sparse file with data past 4 GiB; the guest's
//! sha256s (whole files, 1 MiB ranges of the big one read with `dd
//! skip=`) and `stat` metadata must match the host's. `-v OUT:/mnt/rw`
//! takes the guest's writes (new files, a rename, a chmod, a symlink, a
//! file grown to 6 GiB with data past 5 GiB), which the host then reads.
//! On the read-only share every write (open for writing or appending,
//! rename, unlink, chmod, truncate, mkdir, create, symlink) is refused
//! twice: by the read-only mount, and after the guest remounts it
//! read-write, by the device itself; the host tree is unchanged after.
//! Needs only `sha256sum` and `dd` on the host.

mod common;
use common::value;
use common::{run, vessel};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// 1 MiB blocks of the big file the guest hashes: the start, one past
/// 4 GiB, the last.
const BIG_BLOCKS: [u64; 3] = [0, 4096, 5119];
/// Writes tried on the read-only share (name, shell command).
const RO_WRITES: &[(&str, &str)] = &[
    ("open-write", "echo x > /mnt/ro/hello.txt"),
    ("open-append", "echo x >> /mnt/ro/hello.txt"),
    ("rename", "mv /mnt/ro/hello.txt /mnt/ro/renamed"),
    ("unlink", "rm /mnt/ro/hello.txt"),
    ("chmod", "chmod 777 /mnt/ro/hello.txt"),
    ("truncate", "truncate -s 0 /mnt/ro/hello.txt"),
    ("mkdir", "mkdir /mnt/ro/newdir"),
    ("create", "touch /mnt/ro/newfile"),
    ("symlink", "ln -s hello.txt /mnt/ro/newlink"),
];

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes that do not compress to nothing.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn set_mtime(path: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap();
}

/// The read-only tree: files with their own modes and mtimes, a
/// symlink, and a sparse 5 GiB file with data at its start, past 4 GiB
/// and at its end.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("sub")).unwrap();
    let files: [(&str, Vec<u8>, u32, u64); 3] = [
        (
            "hello.txt",
            b"hello from the host\n".to_vec(),
            0o640,
            1_500_000_000,
        ),
        ("sub/data.bin", pattern(300_000, 7), 0o755, 1_600_000_123),
        ("sub/empty", Vec::new(), 0o600, 1_400_000_000),
    ];
    for (name, data, mode, mtime) in files {
        let p = root.join(name);
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&p, mtime);
    }
    std::os::unix::fs::symlink("sub/data.bin", root.join("link")).unwrap();
    let mut big = fs::File::create(root.join("big")).unwrap();
    big.set_len(5 * GIB).unwrap();
    for (at, seed) in [(0, 1), (4 * GIB + 12345, 2), (5 * GIB - 1000, 3)] {
        big.seek(SeekFrom::Start(at)).unwrap();
        big.write_all(&pattern(MIB.min(5 * GIB - at) as usize, seed))
            .unwrap();
    }
    drop(big);
    set_mtime(&root.join("big"), 1_700_000_000);
}

fn host_sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh on the host");
    assert!(out.status.success(), "host: {script}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn sha256(path: &Path) -> String {
    host_sh(&format!("sha256sum < '{}'", path.display()))
}

fn block_sha256(path: &Path, block: u64) -> String {
    host_sh(&format!(
        "dd if='{}' bs=1048576 skip={block} count=1 2>/dev/null | sha256sum",
        path.display()
    ))
}

/// What busybox `stat -c '%s %a %Y %u %g'` prints for `path`.
fn stat_line(path: &Path) -> String {
    let m = fs::symlink_metadata(path).unwrap();
    format!(
        "{} {:o} {} {} {}",
        m.size(),
        m.mode() & 0o7777,
        m.mtime(),
        m.uid(),
        m.gid()
    )
}

fn guest_script() -> String {
    let mut s = String::from("r=/mnt/ro; w=/mnt/rw\n");
    for f in ["hello.txt", "sub/data.bin", "sub/empty", "link", "big"] {
        s += &format!("echo \"STAT {f} $(stat -c '%s %a %Y %u %g' $r/{f})\"\n");
    }
    s += "echo \"READLINK $(readlink $r/link)\"\n";
    for f in ["hello.txt", "sub/data.bin", "link"] {
        s += &format!("echo \"SUM {f} $(sha256sum < $r/{f} | cut -d' ' -f1)\"\n");
    }
    for b in BIG_BLOCKS {
        s += &format!(
            "echo \"BIG {b} $(dd if=$r/big bs=1048576 skip={b} count=1 2>/dev/null | sha256sum | cut -d' ' -f1)\"\n"
        );
    }
    s += "printf 'written by the guest\\n' > $w/new.txt\n\
          head -c 1000000 /dev/urandom > $w/rand.bin\n\
          echo \"WSUM $(sha256sum < $w/rand.bin | cut -d' ' -f1)\"\n\
          mkdir $w/dir && mv $w/existing.txt $w/dir/moved.txt\n\
          chmod 0611 $w/new.txt\n\
          ln -s dir/moved.txt $w/sl\n\
          truncate -s 6G $w/sparse && echo far | dd of=$w/sparse bs=1 seek=5368709120 conv=notrunc 2>/dev/null\n\
          sync\n";
    s += "try() { if sh -c \"$2\" 2>/dev/null; then echo \"$1 $3 allowed\"; else echo \"$1 $3 refused\"; fi; }\n";
    for round in ["RO1", "RO2"] {
        if round == "RO2" {
            s += "mount -o remount,rw $r; echo \"MOUNT $(grep \" $r \" /proc/mounts | cut -d' ' -f4)\"\n";
        }
        for (name, cmd) in RO_WRITES {
            s += &format!("try {round} '{cmd}' {name}\n");
        }
    }
    s + "echo DONE\n"
}

#[test]
fn guest_reads_writes_and_cannot_write_read_only_shares() {
    let base = TempDir(std::env::temp_dir().join(format!("vessel-fs-{}", std::process::id())));
    let (tree, out) = (base.0.join("tree"), base.0.join("out"));
    make_tree(&tree);
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("existing.txt"), b"moved by the guest\n").unwrap();
    // The script is too long for the kernel command line: it travels in
    // the share.
    fs::write(out.join("test.sh"), guest_script()).unwrap();

    let mut cmd = vessel();
    cmd.arg("run")
        .arg("-v")
        .arg(format!("{}:/mnt/ro:ro", tree.display()))
        .arg("-v")
        .arg(format!("{}:/mnt/rw", out.display()))
        .args(["--", "sh", "/mnt/rw/test.sh"]);
    let r = run(cmd, BOOT_TIMEOUT);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    let so = &r.stdout;
    assert_eq!(r.status, Some(0), "stdout:\n{so}\nstderr:\n{}", r.stderr);
    assert_eq!(value(so, "DONE"), "", "the script ran to its end");

    // Reads: metadata, contents, the symlink, the sparse file past 4 GiB.
    for f in ["hello.txt", "sub/data.bin", "sub/empty", "link", "big"] {
        assert_eq!(
            value(so, &format!("STAT {f} ")),
            stat_line(&tree.join(f)),
            "stat of {f}"
        );
    }
    assert_eq!(value(so, "READLINK "), "sub/data.bin");
    for f in ["hello.txt", "sub/data.bin", "link"] {
        assert_eq!(
            value(so, &format!("SUM {f} ")),
            sha256(&tree.join(f)),
            "{f}"
        );
    }
    for b in BIG_BLOCKS {
        assert_eq!(
            value(so, &format!("BIG {b} ")),
            block_sha256(&tree.join("big"), b),
            "1 MiB block {b} of the 5 GiB file"
        );
    }

    // Writes reach the host.
    assert_eq!(
        fs::read(out.join("new.txt")).unwrap(),
        b"written by the guest\n"
    );
    let new_mode = fs::metadata(out.join("new.txt")).unwrap().mode() & 0o7777;
    assert_eq!(new_mode, 0o611, "chmod from the guest");
    assert_eq!(value(so, "WSUM "), sha256(&out.join("rand.bin")));
    assert!(!out.join("existing.txt").exists(), "renamed away");
    assert_eq!(
        fs::read(out.join("dir/moved.txt")).unwrap(),
        b"moved by the guest\n"
    );
    assert_eq!(
        fs::read_link(out.join("sl")).unwrap(),
        Path::new("dir/moved.txt")
    );
    let sparse = out.join("sparse");
    assert_eq!(fs::metadata(&sparse).unwrap().len(), 6 * GIB);
    let mut far = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&fs::File::open(&sparse).unwrap(), &mut far, 5 * GIB)
        .unwrap();
    assert_eq!(&far, b"far\n", "data written past 5 GiB");

    // The read-only share refused everything, with the mount read-only
    // (RO1) and read-write (RO2: only the device refuses).
    assert!(
        value(so, "MOUNT ").starts_with("rw"),
        "the guest could not remount read-write: {}",
        value(so, "MOUNT ")
    );
    for round in ["RO1", "RO2"] {
        for (name, _) in RO_WRITES {
            assert_eq!(
                value(so, &format!("{round} {name} ")),
                "refused",
                "{round} {name}"
            );
        }
    }
    assert_eq!(
        fs::read(tree.join("hello.txt")).unwrap(),
        b"hello from the host\n"
    );
    assert_eq!(
        stat_line(&tree.join("hello.txt")).split(' ').nth(1),
        Some("640")
    );
    for gone in ["renamed", "newdir", "newfile", "newlink"] {
        assert!(!tree.join(gone).exists(), "{gone} appeared on the host");
    }
}
