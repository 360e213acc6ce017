//! Helpers for the API tests: a vessel process serving Firecracker's API on
//! a Unix socket, whose console lines are collected as they arrive, and
//! plain HTTP/1.1 requests over the socket, written by hand as `curl
//! --unix-socket` would send them.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One HTTP request with `Connection: close`; returns the status and body.
pub fn http(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send the request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `http` that must answer 2xx.
pub fn http_ok(sock: &Path, method: &str, path: &str, body: Option<&str>) -> String {
    let (status, text) = http(sock, method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path} {body:?} answered {status}: {text}"
    );
    text
}

/// `PUT /actions` with this action type, which must succeed.
pub fn action(sock: &Path, kind: &str) {
    let body = format!(r#"{{"action_type": "{kind}"}}"#);
    http_ok(sock, "PUT", "/actions", Some(&body));
}

/// The default guest (kernel, initramfs, command line), prepared through
/// the binary when missing.
pub fn default_guest() -> guest::GuestImage {
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["guest", "prepare"])
        .output()
        .expect("run vessel guest prepare");
    assert!(out.status.success(), "guest prepare failed: {out:?}");
    guest::find_prepared().expect("the prepared default guest")
}

/// A running vessel process whose stdout lines are collected with the host
/// time they arrived; killed on drop.
pub struct VmmProcess {
    child: Child,
    lines: Arc<Mutex<Vec<(String, f64)>>>,
    stderr: Arc<Mutex<String>>,
}

impl VmmProcess {
    pub fn spawn(mut cmd: Command) -> VmmProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vessel");
        let out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut out = std::io::BufReader::new(out);
            loop {
                let mut line = Vec::new();
                match out.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        sink.lock().unwrap().push((text, unix_now()));
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err_sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        VmmProcess {
            child,
            lines,
            stderr,
        }
    }

    pub fn lines(&self) -> Vec<(String, f64)> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything printed so far, for assertion messages.
    pub fn transcript(&self) -> String {
        let out: Vec<String> = self.lines().into_iter().map(|(l, _)| l).collect();
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            out.join("\n"),
            self.stderr()
        )
    }

    /// Waits until a stdout line contains `text`.
    pub fn wait_for_line(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lines().iter().any(|(l, _)| l.contains(text)) {
                return true;
            }
            if self.lines.lock().is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until the API socket accepts connections.
    pub fn wait_for_socket(&mut self, sock: &Path, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if UnixStream::connect(sock).is_ok() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
