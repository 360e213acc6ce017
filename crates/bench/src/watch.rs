//! Runs one benchmark subprocess while watching its stdout for marker
//! lines: each marker's first line is timestamped from spawn as soon as
//! it is read, the child can be killed at a given marker (for machines
//! that never exit on their own), and the child is reaped with `wait4` so
//! its peak RSS (`ru_maxrss`) is known. Every run has a deadline.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{self, RunError};

/// Longest line kept for marker matching; longer lines are cut.
const LINE_MAX: usize = 4096;
/// How often the child is polled for its exit.
const POLL: Duration = Duration::from_millis(2);

/// What to watch for and when to give up.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Texts searched for in each complete stdout line.
    pub markers: Vec<&'static str>,
    /// Index into `markers`: kill the child once that line is seen.
    pub stop_at: Option<usize>,
    /// Deadline for the whole run, from spawn.
    pub timeout: Duration,
}

/// How a watched child ended.
#[derive(Debug)]
pub struct Watched {
    /// How it ended; `None` when it was killed at the stop marker.
    pub status: Option<ExitStatus>,
    /// Stdout then stderr, lossily decoded.
    pub output: String,
    /// From spawn to the first line holding each marker (same order).
    pub marks: Vec<Option<Duration>>,
    /// From spawn to its exit, or to the stop marker when killed there.
    pub end: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) under `watch`.
pub fn run_watched(cmd: &mut Command, watch: &Watch) -> Result<Watched, RunError> {
    let start = Instant::now();
    let mut child = process::spawn_piped(cmd)?;
    let (tx, rx) = mpsc::channel();
    let stdout = child
        .stdout
        .take()
        .and_then(|pipe| spawn_line_reader(pipe, watch.markers.clone(), start, tx));
    let stderr = process::drain(child.stderr.take());
    let ended = wait_watching(&mut child, watch, start, &rx);
    // The pipes close once the child is gone, so the readers end.
    let out = stdout.and_then(|h| h.join().ok()).unwrap_or_default();
    let mut output = String::from_utf8_lossy(&out).into_owned();
    output.push_str(&process::join(stderr));
    let (status, end, rusage, mut marks) = ended?;
    let late: Vec<_> = rx.try_iter().collect();
    add_late_marks(&mut marks, &late, status.is_some().then_some(end));
    Ok(Watched {
        status,
        output,
        marks,
        end,
        max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
    })
}

/// Adds the marks the reader sent after the wait loop ended. When the
/// child exited on its own (`exit` is when that was seen), those lines
/// were in the pipe before it exited, but the reader thread may have
/// timed them after this thread saw the exit: the exit is then the
/// earliest moment known to follow each line, and a mark never comes
/// after the end it preceded.
fn add_late_marks(
    marks: &mut [Option<Duration>],
    late: &[(usize, Duration)],
    exit: Option<Duration>,
) {
    for &(i, t) in late {
        if let Some(m) = marks.get_mut(i) {
            m.get_or_insert(exit.map_or(t, |end| t.min(end)));
        }
    }
}

type Ended = (
    Option<ExitStatus>,
    Duration,
    libc::rusage,
    Vec<Option<Duration>>,
);

/// Polls the child until it exits, the stop marker shows up (kill) or
/// the deadline passes (kill, then `Timeout`). The child is always reaped.
fn wait_watching(
    child: &mut Child,
    watch: &Watch,
    start: Instant,
    rx: &Receiver<(usize, Duration)>,
) -> Result<Ended, RunError> {
    let pid = child_pid(child)?;
    let mut marks = vec![None; watch.markers.len()];
    loop {
        let event = rx.recv_timeout(POLL);
        if let Ok((i, t)) = event {
            if let Some(m) = marks.get_mut(i) {
                m.get_or_insert(t);
            }
            if watch.stop_at == Some(i) {
                let (_, rusage) = kill_and_reap(child, pid)?;
                return Ok((None, t, rusage, marks));
            }
        }
        if let Some((status, rusage)) = wait4(pid, false).map_err(RunError::Wait)? {
            return Ok((Some(status), start.elapsed(), rusage, marks));
        }
        if start.elapsed() >= watch.timeout {
            kill_and_reap(child, pid)?;
            return Err(RunError::Timeout(watch.timeout));
        }
        if event == Err(RecvTimeoutError::Disconnected) {
            // Stdout is closed but the child lives on: plain polling.
            std::thread::sleep(POLL);
        }
    }
}

pub(crate) fn child_pid(child: &mut Child) -> Result<libc::pid_t, RunError> {
    libc::pid_t::try_from(child.id()).map_err(|_| {
        // Not reachable on Linux (pids fit in pid_t); reap and report.
        let _ = child.kill();
        let _ = child.wait();
        RunError::Wait(std::io::Error::other("child pid out of range"))
    })
}

/// Kills the (not yet reaped) child and waits for it.
pub(crate) fn kill_and_reap(
    child: &mut Child,
    pid: libc::pid_t,
) -> Result<(ExitStatus, libc::rusage), RunError> {
    // The child is not reaped yet, so its pid is still its own; it may
    // have exited already, which kill reports and we ignore.
    let _ = child.kill();
    match wait4(pid, true).map_err(RunError::Wait)? {
        Some(done) => Ok(done),
        None => Err(RunError::Wait(std::io::Error::other(
            "blocking wait4 returned no child",
        ))),
    }
}

/// `wait4` on one child: `None` while it runs (only when `block` is
/// false), else its status and resource usage. Retries on EINTR.
fn wait4(pid: libc::pid_t, block: bool) -> std::io::Result<Option<(ExitStatus, libc::rusage)>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data for which all-zero bytes are a
        // valid value.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both out-pointers are to live locals of the right types;
        // wait4 only writes through them.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut rusage) };
        if r == pid {
            return Ok(Some((ExitStatus::from_raw(status), rusage)));
        }
        if r == 0 {
            return Ok(None);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reads `pipe` to its end on its own thread, sending `(marker index,
/// time since start)` for the first complete line holding each marker.
/// Returns the bytes read.
fn spawn_line_reader<R: Read + Send + 'static>(
    mut pipe: R,
    markers: Vec<&'static str>,
    start: Instant,
    tx: Sender<(usize, Duration)>,
) -> Option<JoinHandle<Vec<u8>>> {
    std::thread::Builder::new()
        .name("bench-watch".into())
        .spawn(move || {
            let mut scanner = LineScanner::new(markers);
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = buf.get(..n).unwrap_or_default();
                all.extend_from_slice(chunk);
                for i in scanner.feed(chunk) {
                    // The receiver may be gone (run ended); nothing to do.
                    let _ = tx.send((i, start.elapsed()));
                }
            }
            all
        })
        .ok()
}

/// Splits bytes into lines and reports each marker the first time a
/// complete line contains it.
#[derive(Debug)]
pub(crate) struct LineScanner {
    markers: Vec<&'static str>,
    seen: Vec<bool>,
    line: Vec<u8>,
}

impl LineScanner {
    pub(crate) fn new(markers: Vec<&'static str>) -> Self {
        let seen = vec![false; markers.len()];
        LineScanner {
            markers,
            seen,
            line: Vec::new(),
        }
    }

    /// Feeds bytes; returns the indices of markers first seen in them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<usize> {
        let mut found = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < LINE_MAX {
                    self.line.push(b);
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line);
            for (i, marker) in self.markers.iter().enumerate() {
                if let Some(seen) = self.seen.get_mut(i) {
                    if !*seen && line.contains(marker) {
                        *seen = true;
                        found.push(i);
                    }
                }
            }
            self.line.clear();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(markers: Vec<&'static str>, stop_at: Option<usize>, secs: u64) -> Watch {
        Watch {
            markers,
            stop_at,
            timeout: Duration::from_secs(secs),
        }
    }

    #[test]
    fn scanner_matches_complete_lines_once() {
        let mut s = LineScanner::new(vec!["READY", "STATUS="]);
        assert!(s.feed(b"noise READ").is_empty(), "no line yet");
        assert_eq!(s.feed(b"Y\r\nSTATUS="), vec![0]);
        assert_eq!(s.feed(b"0\n"), vec![1]);
        assert!(s.feed(b"READY\n").is_empty(), "READY was reported");
        let mut s = LineScanner::new(vec!["READY"]);
        assert_eq!(s.feed(b"a\nxREADYx\nREADY\n"), vec![0]);
    }

    #[test]
    fn marks_are_timed_in_order_and_rss_is_read() {
        let done = run_watched(
            Command::new("sh").args(["-c", "echo READY; sleep 0.3; echo DONE=0; exit 2"]),
            &watch(vec!["READY", "DONE="], None, 20),
        )
        .expect("sh runs");
        assert_eq!(done.status.and_then(|s| s.code()), Some(2));
        let ready = done.marks[0].expect("ready seen");
        let status = done.marks[1].expect("status seen");
        assert!(status >= ready + Duration::from_millis(250), "{done:?}");
        assert!(done.end >= status, "{done:?}");
        assert!(done.max_rss_kib > 0, "{done:?}");
        assert!(done.output.contains("DONE=0"), "{}", done.output);
    }

    #[test]
    fn marks_read_after_the_exit_are_timed_at_the_exit_at_latest() {
        let ms = Duration::from_millis;
        let mut marks = vec![Some(ms(5)), None, None];
        let late = [(1, ms(309)), (2, ms(312)), (0, ms(1)), (7, ms(1))];
        add_late_marks(&mut marks, &late, Some(ms(310)));
        assert_eq!(marks, vec![Some(ms(5)), Some(ms(309)), Some(ms(310))]);
        // Killed at a stop marker: later lines keep the reader's times.
        let mut marks = vec![None];
        add_late_marks(&mut marks, &[(0, ms(9))], None);
        assert_eq!(marks, vec![Some(ms(9))]);
    }

    #[test]
    fn a_stop_marker_kills_the_child() {
        let t = Instant::now();
        let done = run_watched(
            Command::new("sh").args(["-c", "echo READY; echo STATUS=0; exec sleep 30"]),
            &watch(vec!["READY", "STATUS="], Some(1), 20),
        )
        .expect("sh runs");
        assert!(done.status.is_none(), "{done:?}");
        assert_eq!(Some(done.end), done.marks[1]);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_deadline_kills_the_child() {
        let t = Instant::now();
        let err = run_watched(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            &Watch {
                markers: vec!["READY"],
                stop_at: None,
                timeout: Duration::from_millis(200),
            },
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Timeout(_)), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let err = run_watched(
            &mut Command::new("/nonexistent/vessel-bench-qemu"),
            &watch(vec![], None, 1),
        )
        .unwrap_err();
        assert!(
            matches!(&err, RunError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
    }
}
