//! One `vessel --api-sock PATH` process under the API benchmark: spawned
//! with its output collected as it arrives (the console's READY line
//! timestamped from spawn), probed until its socket answers `GET /`, sent
//! timed requests, and killed and reaped with `wait4` for its CPU time.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Client, ClientError};

use crate::api::ApiBenchError;
use crate::process;
use crate::watch::{self, LineScanner};

/// How long to wait between two probes of a socket that is not there yet.
const PROBE_EVERY: Duration = Duration::from_micros(100);
/// Output kept for error messages.
const KEEP_OUTPUT: usize = 64 << 10;

/// A running VMM process.
pub(crate) struct Vmm {
    child: Child,
    pid: libc::pid_t,
    start: Instant,
    client: Client,
    output: Arc<Mutex<String>>,
    marks: Receiver<Duration>,
}

impl Vmm {
    /// Starts `vessel --api-sock sock --engine engine`; times are from
    /// just before the spawn. `marker` is the console line to time.
    pub(crate) fn spawn(
        vessel: &Path,
        engine: &str,
        sock: &Path,
        marker: &'static str,
    ) -> Result<Vmm, ApiBenchError> {
        // A socket left behind would make vessel refuse to start.
        let _ = std::fs::remove_file(sock);
        let mut cmd = Command::new(vessel);
        cmd.arg("--api-sock").arg(sock).args(["--engine", engine]);
        let start = Instant::now();
        let mut child = process::spawn_piped(&mut cmd).map_err(ApiBenchError::Start)?;
        let pid = watch::child_pid(&mut child).map_err(ApiBenchError::Start)?;
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, marks) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let mut scanner = LineScanner::new(vec![marker]);
            collect(out, output.clone(), move |chunk| {
                if !scanner.feed(chunk).is_empty() {
                    // The receiver is gone only when the run is over.
                    let _ = tx.send(start.elapsed());
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            collect(err, output.clone(), |_| {});
        }
        Ok(Vmm {
            child,
            pid,
            start,
            client: Client::new(PathBuf::from(sock)),
            output,
            marks,
        })
    }

    /// The process id, for /proc.
    pub(crate) fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Time since just before the spawn.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The last lines the process printed (console and stderr mixed).
    pub(crate) fn tail(&self) -> String {
        let text = self.output.lock().map(|s| s.clone()).unwrap_or_default();
        process::tail(&text, 4)
    }

    /// Probes the socket with `GET /` until it answers 200; returns the
    /// time from spawn to that answer.
    pub(crate) fn wait_api(&mut self, timeout: Duration) -> Result<Duration, ApiBenchError> {
        let probe = self.client.clone().with_timeout(timeout);
        loop {
            match probe.request("GET", "/", None) {
                Ok((200, _)) => return Ok(self.elapsed()),
                Ok((status, body)) => {
                    return Err(ApiBenchError::Refused {
                        what: "GET /".into(),
                        status,
                        body,
                    })
                }
                Err(ClientError::NotListening(_)) => {}
                Err(source) => return Err(self.request_error("GET /", source)),
            }
            self.check_alive("before its API socket answered", timeout)?;
            std::thread::sleep(PROBE_EVERY);
        }
    }

    /// Sends one request that must answer 2xx; returns how long the answer
    /// took and its body.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<(Duration, String), ApiBenchError> {
        let what = match body {
            Some(b) => format!("{method} {path} {b}"),
            None => format!("{method} {path}"),
        };
        let client = self.client.clone().with_timeout(timeout);
        let t = Instant::now();
        let answer = client.request(method, path, body);
        let took = t.elapsed();
        match answer {
            Ok((status, text)) if (200..300).contains(&status) => Ok((took, text)),
            Ok((status, text)) => Err(ApiBenchError::Refused {
                what,
                status,
                body: text,
            }),
            Err(source) => Err(self.request_error(&what, source)),
        }
    }

    /// Waits for the marker line; returns the time from spawn to it.
    pub(crate) fn wait_marker(&mut self, timeout: Duration) -> Result<Duration, ApiBenchError> {
        loop {
            match self.marks.recv_timeout(Duration::from_millis(5)) {
                Ok(t) => return Ok(t),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Stdout closed: the process is ending; check_alive says so.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
            }
            self.check_alive("before the guest's READY line", timeout)?;
        }
    }

    /// Kills the process and reaps it; its CPU time (user and system, all
    /// threads) over its whole life.
    pub(crate) fn kill(mut self) -> Result<Duration, ApiBenchError> {
        let (_, usage) =
            watch::kill_and_reap(&mut self.child, self.pid).map_err(ApiBenchError::Reap)?;
        Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
    }

    /// An error when the process has exited or `timeout` has passed since
    /// its spawn.
    fn check_alive(&mut self, stage: &'static str, timeout: Duration) -> Result<(), ApiBenchError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            // Let the readers take in the last output.
            std::thread::sleep(Duration::from_millis(50));
            return Err(ApiBenchError::Exited {
                stage,
                status: status.to_string(),
                tail: self.tail(),
            });
        }
        if self.elapsed() >= timeout {
            return Err(ApiBenchError::Timeout {
                stage,
                secs: timeout.as_secs(),
                tail: self.tail(),
            });
        }
        Ok(())
    }

    fn request_error(&self, what: &str, source: ClientError) -> ApiBenchError {
        ApiBenchError::Request {
            what: what.to_string(),
            tail: self.tail(),
            source,
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        // Already reaped after kill(): then both calls fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` to its end on its own thread, appending what it reads to
/// `sink` (the last `KEEP_OUTPUT` bytes) and handing each chunk to `see`.
fn collect<R, F>(mut pipe: R, sink: Arc<Mutex<String>>, mut see: F)
where
    R: Read + Send + 'static,
    F: FnMut(&[u8]) + Send + 'static,
{
    let reader = move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = buf.get(..n).unwrap_or_default();
            see(chunk);
            if let Ok(mut text) = sink.lock() {
                text.push_str(&String::from_utf8_lossy(chunk));
                if text.len() > KEEP_OUTPUT {
                    let mut cut = text.len() - KEEP_OUTPUT / 2;
                    while !text.is_char_boundary(cut) {
                        cut += 1;
                    }
                    text.drain(..cut);
                }
            }
        }
    };
    // Without the thread the output is not collected; the run still works.
    let _ = std::thread::Builder::new()
        .name("bench-api-out".into())
        .spawn(reader);
}

fn timeval(t: libc::timeval) -> Duration {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let micros = u64::try_from(t.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timevals_add_up() {
        let t = libc::timeval {
            tv_sec: 2,
            tv_usec: 500,
        };
        assert_eq!(timeval(t), Duration::from_micros(2_000_500));
        let bad = libc::timeval {
            tv_sec: -1,
            tv_usec: -1,
        };
        assert_eq!(timeval(bad), Duration::ZERO);
    }
}
