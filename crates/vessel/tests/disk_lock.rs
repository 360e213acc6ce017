//! Disk image locking (issue 12, check 6): while one `vessel run --disk X`
//! runs, a second one on the same image fails at once with a message
//! naming the lock and the first VM's PID; `,readonly` on both works, and
//! `,lock=off` overrides the lock.

mod common;
use common::{run, vessel};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the second VM may take to refuse the image: it never boots.
const FAIL_FAST: Duration = Duration::from_secs(10);

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn image(name: &str) -> Temp {
    let p = std::env::temp_dir().join(format!("vessel-lock-{}-{name}.img", std::process::id()));
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    Temp(p)
}

/// True when some open file holds a lock on `path` that a writer would
/// conflict with.
fn locked(path: &Path) -> bool {
    let f = File::open(path).unwrap();
    // SAFETY: flock is plain data; all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_GETLK reads and writes the flock passed, which lives
    // through the call; the descriptor is open.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    assert_eq!(r, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
    fl.l_type != libc::F_UNLCK as libc::c_short
}

/// Starts `vessel run --disk DISK -- sleep 5` and waits until it holds the
/// image's lock.
fn first_vm(disk: &str, img: &Path) -> Child {
    let mut child = vessel()
        .args(["run", "--disk", disk, "--", "sleep", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vessel");
    let start = Instant::now();
    while !locked(img) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the first vessel ended ({st}) before it locked {disk}");
        }
        assert!(start.elapsed() < BOOT_TIMEOUT, "{disk} never got locked");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn second_vm(disk: &str) -> (common::Run, Duration) {
    let mut cmd = vessel();
    cmd.args(["run", "--disk", disk, "--", "true"]);
    let start = Instant::now();
    let r = run(cmd, BOOT_TIMEOUT);
    (r, start.elapsed())
}

fn finish(mut first: Child) {
    let st = first.wait().unwrap();
    assert!(st.success(), "the first vessel failed: {st}");
}

#[test]
fn a_second_writer_fails_fast_naming_the_first() {
    let img = image("rw");
    let disk = img.0.to_str().unwrap().to_string();
    let first = first_vm(&disk, &img.0);
    let (r, took) = second_vm(&disk);
    let pid = first.id();
    assert_eq!(r.status, Some(1), "stderr:\n{}", r.stderr);
    assert!(took < FAIL_FAST, "refused after {took:?}");
    let want = format!("disk image {disk} is in use by PID {pid} (");
    assert!(r.stderr.contains(&want), "no {want:?} in:\n{}", r.stderr);
    assert!(r.stderr.contains("vessel run --disk"), "{}", r.stderr);
    assert!(r.stderr.contains("lock=off"), "{}", r.stderr);
    // A reader beside the writer is refused too.
    let (r, _) = second_vm(&format!("{disk},readonly"));
    assert_eq!(r.status, Some(1), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("is in use by PID"), "{}", r.stderr);
    finish(first);
    assert!(!locked(&img.0), "the lock went with the first vessel");
}

#[test]
fn readonly_twice_and_lock_off_both_run() {
    let img = image("ro");
    let ro = format!("{},readonly", img.0.display());
    let first = first_vm(&ro, &img.0);
    let (r, _) = second_vm(&ro);
    assert!(!r.timed_out);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    finish(first);

    let img = image("off");
    let rw = img.0.to_str().unwrap().to_string();
    let first = first_vm(&rw, &img.0);
    let (r, _) = second_vm(&format!("{rw},lock=off"));
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    finish(first);
}
