//! Disk image locking, so two VMs never write one image at once (QEMU
//! locks images for the same reason): an open-file-description lock
//! (`F_OFD_SETLK`) over the whole file, shared for a read-only drive and
//! exclusive for a writable one. QEMU locks single bytes that each stand
//! for a permission; one whole-file lock is simpler and enough to refuse
//! a second writer, or a reader beside a writer. The lock belongs to the
//! open file: it goes when the image is closed, or when a drive that gets
//! a new image releases it. On a conflict the holder's PID and command
//! line are looked up in /proc/locks (best effort: `F_OFD_GETLK` reports
//! no PID for OFD locks).

use super::disk::Disk;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most characters of the holder's command line quoted in an error.
const CMDLINE_CHARS: usize = 80;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "disk image {path} is in use{holder}: stop that VM, or open the image read-only in \
         both (--disk PATH,readonly), or pass lock=off (--disk PATH,lock=off) to override"
    )]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock disk image {path} (pass lock=off to open it without a lock)")]
    Lock { path: PathBuf, source: io::Error },
}

impl Disk {
    /// Locks the image: shared when `readonly`, else exclusive.
    pub(super) fn take_lock(&mut self, readonly: bool) -> Result<(), LockError> {
        acquire(&self.file(), &self.path_or_fd(), readonly)?;
        self.locked = true;
        Ok(())
    }

    /// Locks the image as `old`, the one it replaces, was locked (not at
    /// all if `old` was not). When both are the same file, `old`'s lock
    /// is handed over: released, then taken for this one (and taken back
    /// for `old` if that fails).
    pub(super) fn take_lock_like(&mut self, old: &Disk, readonly: bool) -> Result<(), LockError> {
        if !old.locked {
            return Ok(());
        }
        match self.take_lock(readonly) {
            Err(LockError::InUse { .. }) if same_file(&self.file(), &old.file()) => {
                old.release_lock();
                self.take_lock(readonly).inspect_err(|_| {
                    let _ = acquire(&old.file(), &old.path_or_fd(), readonly);
                })
            }
            r => r,
        }
    }

    /// Drops the lock now, even if requests in flight keep the file open.
    pub(super) fn release_lock(&self) {
        if self.locked {
            // Unlocking cannot fail on an open descriptor in a way that
            // leaves anything to do.
            let _ = set_lock(&self.file(), libc::F_UNLCK);
        }
    }

    fn path_or_fd(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("(open file)"))
    }
}

/// `F_OFD_SETLK` of `kind` over the whole file (start 0, length 0: to the
/// end, however the file grows).
fn set_lock(file: &File, kind: libc::c_int) -> io::Result<()> {
    // SAFETY: flock is plain data, for which all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_SETLK reads the flock passed, which lives through the
    // call; the descriptor is open (borrowed from `file`).
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn acquire(file: &File, path: &Path, readonly: bool) -> Result<(), LockError> {
    let kind = if readonly {
        libc::F_RDLCK
    } else {
        libc::F_WRLCK
    };
    match set_lock(file, kind) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
            Err(LockError::InUse {
                path: path.to_path_buf(),
                holder: holder(file, readonly),
            })
        }
        Err(source) => Err(LockError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// " by PID N (its command line)" for a process whose lock on `file`
/// conflicts with the one wanted, or "" when none can be found.
fn holder(file: &File, readonly: bool) -> String {
    let Ok(meta) = file.metadata() else {
        return String::new();
    };
    let inode = Inode {
        major: libc::major(meta.dev()),
        minor: libc::minor(meta.dev()),
        ino: meta.ino(),
    };
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut pids = conflicting_pids(&locks, inode, readonly);
    if pids.is_empty() {
        pids = fdinfo_pids(inode, readonly);
    }
    let me = std::process::id();
    match pids.iter().find(|&&p| p != me).or(pids.first()) {
        Some(&p) if p == me => " by this VM (is it attached twice?)".to_string(),
        Some(&p) => format!(" by PID {p}{}", cmdline(p)),
        None => String::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inode {
    major: u32,
    minor: u32,
    ino: u64,
}

/// The PID field of a lock line (`3: OFDLCK ADVISORY WRITE 1234
/// fe:00:5308751 0 EOF`, as /proc/locks and fdinfo print them) when it is
/// an fcntl lock (POSIX or OFD; flock(2) locks never conflict with them)
/// held on `inode` that conflicts with a shared (`readonly`) or exclusive
/// lock. Waiters (`->`) are skipped.
fn conflicting_lock(line: &str, inode: Inode, readonly: bool) -> Option<i64> {
    let mut f = line.split_whitespace().skip(1);
    let class = f.next()?;
    let (_mode, kind, pid, id) = (f.next()?, f.next()?, f.next()?, f.next()?);
    let fcntl = class == "POSIX" || class == "OFDLCK";
    let conflicts = kind == "WRITE" || !readonly;
    (fcntl && conflicts && parse_inode(id)? == inode)
        .then(|| pid.parse().ok())
        .flatten()
}

/// PIDs /proc/locks names for conflicting locks (this kernel may show OFD
/// locks' PIDs as -1: those are left out).
fn conflicting_pids(locks: &str, inode: Inode, readonly: bool) -> Vec<u32> {
    locks
        .lines()
        .filter_map(|l| conflicting_lock(l, inode, readonly))
        .filter_map(|pid| u32::try_from(pid).ok())
        .collect()
}

/// Processes with an open file holding a conflicting lock, from the
/// `lock:` lines of /proc/PID/fdinfo/FD (those this user may read).
fn fdinfo_pids(inode: Inode, readonly: bool) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let holds = |info: &str| {
        info.lines()
            .filter_map(|l| l.strip_prefix("lock:"))
            .any(|l| conflicting_lock(l, inode, readonly).is_some())
    };
    let mut pids = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        let mut infos = fds.flatten().map(|fd| std::fs::read_to_string(fd.path()));
        if infos.any(|info| info.is_ok_and(|i| holds(&i))) {
            pids.push(pid);
        }
    }
    pids
}

/// `fe:00:5308751`: major and minor in hex, inode number in decimal.
fn parse_inode(s: &str) -> Option<Inode> {
    let mut p = s.split(':');
    let major = u32::from_str_radix(p.next()?, 16).ok()?;
    let minor = u32::from_str_radix(p.next()?, 16).ok()?;
    let ino = p.next()?.parse().ok()?;
    p.next().is_none().then_some(Inode { major, minor, ino })
}

/// " (CMD ARGS)" from /proc/PID/cmdline, shortened, control characters
/// shown as '?'; "" when it cannot be read.
fn cmdline(pid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let line: String = words
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if line.is_empty() {
        return String::new();
    }
    match line.char_indices().nth(CMDLINE_CHARS) {
        Some((cut, _)) => format!(" ({}...)", &line[..cut]),
        None => format!(" ({line})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, BlockConfig, BlockError};

    struct Temp(PathBuf);
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp(name: &str) -> Temp {
        let p = std::env::temp_dir().join(format!("vessel-lock-{}-{name}", std::process::id()));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        Temp(p)
    }

    fn open(path: &Path, readonly: bool, lock: bool) -> Result<Block, BlockError> {
        Block::new(&BlockConfig {
            readonly,
            lock,
            ..BlockConfig::new(path)
        })
    }

    /// OFD locks belong to open files, so two opens in one process
    /// conflict as two VMs would.
    #[test]
    fn second_writer_is_refused_until_the_first_closes() {
        let img = temp("rw");
        let first = open(&img.0, false, true).unwrap();
        let Err(e) = open(&img.0, false, true) else {
            panic!("a second writer opened a locked image");
        };
        let msg = e.to_string();
        assert!(msg.contains(&*img.0.to_string_lossy()), "{msg}");
        assert!(msg.contains("in use by this VM"), "{msg}");
        assert!(msg.contains("lock=off"), "{msg}");
        assert!(
            open(&img.0, true, true).is_err(),
            "a reader beside a writer"
        );
        drop(first);
        open(&img.0, false, true).expect("the lock went with the first open");
    }

    #[test]
    fn readers_share_an_image() {
        let img = temp("ro");
        let _a = open(&img.0, true, true).unwrap();
        let _b = open(&img.0, true, true).unwrap();
        assert!(
            open(&img.0, false, true).is_err(),
            "a writer beside readers"
        );
    }

    #[test]
    fn lock_off_opens_beside_a_writer() {
        let img = temp("off");
        let _a = open(&img.0, false, true).unwrap();
        let _b = open(&img.0, false, false).unwrap();
        // An unlocked open takes no lock either.
        let img2 = temp("off2");
        let _c = open(&img2.0, false, false).unwrap();
        let _d = open(&img2.0, false, true).unwrap();
    }

    #[test]
    fn a_new_image_is_locked_and_the_old_released() {
        let (old, new) = (temp("old"), temp("new"));
        let blk = open(&old.0, false, true).unwrap();
        let handle = blk.handle();
        handle.swap_image(&new.0).unwrap();
        assert!(open(&new.0, true, true).is_err(), "the new image is locked");
        open(&old.0, false, true).expect("the old image was released");
        // The same image again: its lock is handed over.
        handle.swap_image(&new.0).unwrap();
        assert!(open(&new.0, true, true).is_err(), "still locked");
        // A locked image elsewhere is refused and the drive keeps its own.
        let _other = open(&old.0, false, true).unwrap();
        assert!(handle.swap_image(&old.0).is_err());
        assert!(open(&new.0, true, true).is_err(), "kept");
    }

    #[test]
    fn proc_locks_lines_give_the_conflicting_pids() {
        let inode = Inode {
            major: 0xfe,
            minor: 0,
            ino: 5308751,
        };
        let text = "1: FLOCK  ADVISORY  WRITE 10 fe:00:5308751 0 EOF\n\
                    2: OFDLCK ADVISORY  READ 11 fe:00:5308751 0 EOF\n\
                    2: -> OFDLCK ADVISORY  WRITE 12 fe:00:5308751 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 13 fe:00:5308751 0 EOF\n\
                    4: OFDLCK ADVISORY  WRITE 14 fe:01:5308751 0 EOF\n\
                    5: OFDLCK ADVISORY  WRITE -1 fe:00:5308751 0 EOF\n\
                    garbage\n";
        assert_eq!(conflicting_pids(text, inode, false), vec![11, 13]);
        assert_eq!(conflicting_pids(text, inode, true), vec![13]);
        let fdinfo = "\t1: OFDLCK ADVISORY  WRITE -1 fe:00:5308751 0 EOF";
        assert_eq!(conflicting_lock(fdinfo, inode, true), Some(-1));
        assert_eq!(
            parse_inode("103:0a:7"),
            Some(Inode {
                major: 0x103,
                minor: 10,
                ino: 7
            })
        );
        assert_eq!(parse_inode("fe:00"), None);
    }

    #[test]
    fn cmdline_of_this_process_is_quoted() {
        let c = cmdline(std::process::id());
        assert!(c.starts_with(" (") && c.ends_with(')'), "{c}");
        assert!(c.chars().count() <= CMDLINE_CHARS + 6, "{c}");
        assert_eq!(cmdline(u32::MAX), "");
    }
}
