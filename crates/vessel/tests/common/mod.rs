//! Helpers for the integration tests: run the real `vessel` binary with a
//! deadline and capture what it printed.

#![allow(dead_code)] // each test file uses a different subset

pub mod api;
pub mod netns;

/// A directory for one test, named after it and this process; removed
/// with everything in it on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sha256 of `bytes` in hex, from the host's `sha256sum` (the same
/// tool the guest's busybox answers with, written independently).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum on the host");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let bytes = bytes.to_vec();
    // Fed from a thread: a large input must not wait on a full pipe.
    let feeder = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().expect("sha256sum output");
    feeder.join().expect("feeder").expect("feed sha256sum");
    hex_field(&out.stdout)
}

/// The sha256 of the file at `path` in hex, from the host's `sha256sum`.
pub fn sha256_file(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum on the host");
    hex_field(&out.stdout)
}

fn hex_field(sha256sum_output: &[u8]) -> String {
    String::from_utf8_lossy(sha256sum_output)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The rest of the first line of `stdout` that starts with `key`, trimmed.
pub fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
        .trim()
}

pub fn temp_dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("vessel-{name}-{}", std::process::id()));
    // Empty, even when an earlier process with the same PID left it behind.
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the test's directory");
    TempDir(d)
}

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Each stdout line (without its newline) with the host's Unix time,
    /// in seconds, when it arrived (vessel flushes as the guest prints).
    pub stdout_lines: Vec<(String, f64)>,
}

impl Run {
    /// The first stdout line starting with `prefix`: the rest of it, and
    /// the host time it arrived.
    pub fn line_after(&self, prefix: &str) -> Option<(&str, f64)> {
        self.stdout_lines
            .iter()
            .find_map(|(l, t)| Some((l.strip_prefix(prefix)?, *t)))
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn vessel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
}

/// Runs `cmd` with stdin closed, killing it after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vessel");
    let out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut out = std::io::BufReader::new(out);
        let mut all = Vec::new();
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            match out.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    all.extend_from_slice(&line);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']).to_string();
                    lines.push((text, unix_now()));
                }
            }
        }
        (all, lines)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stdout_lines) = out_reader.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Run {
        status: status.code(),
        stdout,
        stderr,
        timed_out,
        stdout_lines,
    }
}

/// True when /dev/kvm can be used; otherwise says loudly that KVM tests are
/// skipped.
pub fn kvm_available(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("KVM TESTS SKIPPED ({test}): /dev/kvm is missing or not accessible");
    }
    ok
}

/// Runs `cmd` as a user at its console would: each time the output so far
/// contains the next `(wait_for, send)` prompt, `send` is typed on stdin.
/// Killed after `timeout`.
pub fn run_typing(mut cmd: Command, timeout: Duration, script: &[(&str, &str)]) -> Run {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vessel");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = seen.clone();
    let out_reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut step = 0;
    let mut searched_from = 0;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        if let Some((wait_for, send)) = script.get(step) {
            let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
            if let Some(at) = text[searched_from.min(text.len())..].find(wait_for) {
                searched_from += at + wait_for.len();
                let _ = stdin.write_all(send.as_bytes());
                let _ = stdin.flush();
                step += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let _ = out_reader.join();
    let stdout = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Run {
        status: status.code(),
        stdout,
        stderr,
        timed_out,
        stdout_lines: Vec::new(),
    }
}
