//! The host's half of the guest agent (`guest::agent`): for `vessel run --
//! CMD` on the default guest, the command's stdin, stdout, stderr and exit
//! status travel on four vsock streams instead of the serial console.
//!
//! [`Stdio::start`] makes a private directory for the vsock device's Unix
//! sockets (guest connections to host port P reach `<uds_path>_P`),
//! listens on the four ports before the guest boots, and pumps: this
//! process's stdin to the guest (EOF shuts that stream down), the guest's
//! stdout and stderr to this process's, and the `exit N` control line to
//! [`Stdio::exit_status`]. When stdin and stdout are both terminals the
//! command gets a pty in the guest (as `docker run -it`): the terminal is
//! put in raw mode, its size and TERM go on the kernel command line, size
//! changes follow on the control stream, and Ctrl-C is a byte for the pty
//! — except before the guest is up, when it stops the VM
//! ([`Stdio::interrupted`]). Ctrl-A then x stops the VM as on the console.

use crate::console::{RawMode, Stopper};
use crate::control::Outcome;
use guest::agent::{PORT_CONTROL, PORT_STDERR, PORT_STDIN, PORT_STDOUT};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use virtio::vsock::VsockConfig;

/// The guest's context ID on the agent's vsock device.
pub const GUEST_CID: u32 = 3;
/// How long the output streams may take to end once the VM has stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the terminal's size is checked for changes.
const RESIZE_POLL: Duration = Duration::from_millis(100);
/// Typed bytes kept while the guest is not up yet.
const PENDING_MAX: usize = 64 * 1024;
const CTRL_A: u8 = 0x01;
const CTRL_C: u8 = 0x03;

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("cannot make the directory {path} for the guest agent's sockets: check that the temporary directory is writable")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path} for the guest agent")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a thread for the guest agent's streams")]
    Thread(#[source] std::io::Error),
}

/// What the pump threads share.
#[derive(Default)]
struct Shared {
    exit_status: Mutex<Option<i32>>,
    interrupted: AtomicBool,
    /// The guest's agent has connected its stdin: the guest is up.
    up: AtomicBool,
    /// Where typed bytes go once connected (TTY mode).
    stdin: Mutex<Option<UnixStream>>,
    /// The control stream, for size changes.
    control: Mutex<Option<UnixStream>>,
    /// Output streams (connected, ended).
    outputs: Mutex<(u32, u32)>,
    outputs_cv: Condvar,
    finished: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn output_connected(&self) {
        lock(&self.outputs).0 += 1;
    }

    fn output_done(&self) {
        lock(&self.outputs).1 += 1;
        self.outputs_cv.notify_all();
    }

    /// Waits at most `timeout` until both output streams ended (`all`), or
    /// those that connected did.
    fn wait_outputs(&self, all: bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.outputs);
        while done.1 < if all { 2 } else { done.0 } {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            done = match self.outputs_cv.wait_timeout(done, left) {
                Ok((d, _)) => d,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// The host side of the agent's streams; dropping it restores the
/// terminal and removes the sockets' directory.
pub struct Stdio {
    dir: PathBuf,
    shared: Arc<Shared>,
    tty: Option<(u16, u16)>,
    term: Option<String>,
    _raw: Option<RawMode>,
}

impl Stdio {
    /// Listens for the agent's streams and starts pumping, with a pty in
    /// the guest when `tty` (see [`terminals_attached`]). `stopper` stops
    /// the VM on Ctrl-C before the guest is up (and on Ctrl-A x).
    pub fn start(stopper: Stopper, tty: bool) -> Result<Self, StdioError> {
        let dir = private_dir()?;
        let listeners = listen_all(&dir)?;
        let tty = if tty {
            Some(terminal_size().unwrap_or((24, 80)))
        } else {
            None
        };
        let shared = Arc::new(Shared::default());
        let raw = tty.and_then(|_| RawMode::enable());
        let [stdin, stdout, stderr, control] = listeners;
        let sh = shared.clone();
        spawn("agent-stdout", move || {
            pump_out(stdout, &mut std::io::stdout(), &sh)
        })?;
        let sh = shared.clone();
        spawn("agent-stderr", move || {
            pump_out(stderr, &mut std::io::stderr(), &sh)
        })?;
        let sh = shared.clone();
        spawn("agent-control", move || control_loop(control, &sh))?;
        let sh = shared.clone();
        if tty.is_some() {
            let sh2 = shared.clone();
            spawn("agent-accept", move || {
                if let Some(s) = accept_once(stdin) {
                    *lock(&sh2.stdin) = Some(s);
                    sh2.up.store(true, Ordering::SeqCst);
                }
            })?;
            spawn("agent-stdin", move || typed_input(&sh, &stopper))?;
            let sh = shared.clone();
            spawn("agent-resize", move || follow_size(&sh, tty))?;
        } else {
            spawn("agent-stdin", move || piped_input(stdin, &sh))?;
        }
        Ok(Stdio {
            dir,
            shared,
            tty,
            term: std::env::var("TERM").ok(),
            _raw: raw,
        })
    }

    /// The vsock device the agent talks through.
    pub fn vsock(&self) -> VsockConfig {
        VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: self.dir.join("vsock"),
        }
    }

    /// The kernel command-line fragment that makes the init use the agent.
    pub fn cmdline(&self) -> String {
        guest::agent::cmdline(self.tty, self.term.as_deref())
    }

    /// Whether the command runs on a pty.
    pub fn is_tty(&self) -> bool {
        self.tty.is_some()
    }

    /// The command's exit status, once the agent reported it.
    pub fn exit_status(&self) -> Option<i32> {
        *lock(&self.shared.exit_status)
    }

    /// Whether Ctrl-C stopped the VM before the guest was up.
    pub fn interrupted(&self) -> bool {
        self.shared.interrupted.load(Ordering::SeqCst)
    }

    /// After the VM stopped: lets the output streams end (briefly), then
    /// restores the terminal and removes the sockets.
    pub fn finish(self) {
        self.shared.wait_outputs(false, DRAIN_TIMEOUT);
        let _ = std::io::stdout().flush();
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        self.shared.finished.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), StdioError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(StdioError::Thread)
}

/// A new directory only this user can enter, under the temporary directory.
fn private_dir() -> Result<PathBuf, StdioError> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for attempt in 0..16u32 {
        let path = base.join(format!(
            "vessel-{}-{:x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(source) => return Err(StdioError::Dir { path, source }),
        }
    }
    let (path, source) =
        last.unwrap_or_else(|| (base.clone(), std::io::ErrorKind::AlreadyExists.into()));
    Err(StdioError::Dir { path, source })
}

/// Listeners for stdin, stdout, stderr and control, in that order.
fn listen_all(dir: &Path) -> Result<[UnixListener; 4], StdioError> {
    let listen = |port: u32| {
        let path = dir.join(format!("vsock_{port}"));
        UnixListener::bind(&path).map_err(|source| StdioError::Listen { path, source })
    };
    Ok([
        listen(PORT_STDIN)?,
        listen(PORT_STDOUT)?,
        listen(PORT_STDERR)?,
        listen(PORT_CONTROL)?,
    ])
}

/// Whether stdin and stdout are both terminals: the command then gets a
/// pty, as `docker run -it` gives it.
pub fn terminals_attached() -> bool {
    is_tty(libc::STDIN_FILENO) && is_tty(libc::STDOUT_FILENO)
}

fn is_tty(fd: libc::c_int) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The kernel parameters that give the default guest's interactive console
/// the host terminal's size and TERM (`vessel.tty=`, `vessel.term=`), when
/// vessel runs on a terminal; `None` otherwise.
pub fn interactive_cmdline() -> Option<String> {
    if !terminals_attached() {
        return None;
    }
    let size = terminal_size()?;
    let term = std::env::var("TERM").ok();
    let line = guest::agent::cmdline(Some(size), term.as_deref());
    // The agent flag means nothing without a command; keep only the size.
    Some(
        line.split_whitespace()
            .filter(|w| !w.starts_with("vessel.agent="))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The terminal's (rows, cols) on stdin, when it says.
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid `ws`.
    let ok = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// The first connection; the listener is closed then, so the guest's
/// further connections to that port are refused.
fn accept_once(listener: UnixListener) -> Option<UnixStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Copies one guest output stream to `out` until it ends.
fn pump_out(listener: UnixListener, out: &mut dyn Write, shared: &Shared) {
    let Some(mut stream) = accept_once(listener) else {
        return;
    };
    shared.output_connected();
    copy_out(&mut stream, out);
    shared.output_done();
}

fn copy_out(stream: &mut UnixStream, out: &mut dyn Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Pipe mode: this process's stdin to the guest, then EOF.
fn piped_input(listener: UnixListener, shared: &Shared) {
    let Some(mut stream) = accept_once(listener) else {
        return;
    };
    shared.up.store(true, Ordering::SeqCst);
    let mut stdin = std::io::stdin().lock();
    // An error means the command closed its stdin: stop sending.
    let _ = std::io::copy(&mut stdin, &mut stream);
    let _ = stream.shutdown(Shutdown::Write);
}

/// TTY mode: typed bytes to the guest's pty. Before the guest is up they
/// are kept, and Ctrl-C stops the VM; Ctrl-A then x always does.
fn typed_input(shared: &Shared, stopper: &Stopper) {
    let mut pending = Vec::new();
    let mut escape = false;
    let mut buf = [0u8; 1024];
    while !shared.finished.load(Ordering::SeqCst) {
        let n = if stdin_readable(RESIZE_POLL) {
            // SAFETY: reads into a valid buffer of its length.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => return,
                n if n < 0 => continue,
                n => n as usize,
            }
        } else {
            0
        };
        let up = shared.up.load(Ordering::SeqCst);
        for &b in &buf[..n] {
            if escape {
                escape = false;
                if b == b'x' || b == b'X' {
                    stopper.stop(Outcome::UserStop);
                    return;
                }
                if b != CTRL_A {
                    pending.push(CTRL_A);
                }
            } else if b == CTRL_A {
                escape = true;
                continue;
            } else if b == CTRL_C && !up {
                shared.interrupted.store(true, Ordering::SeqCst);
                stopper.stop(Outcome::UserStop);
                return;
            }
            if pending.len() < PENDING_MAX {
                pending.push(b);
            }
        }
        if up && !pending.is_empty() {
            if let Some(s) = lock(&shared.stdin).as_mut() {
                if s.write_all(&pending).is_err() {
                    return;
                }
            }
            pending.clear();
        }
    }
}

/// Whether stdin has bytes (or EOF) within `timeout`.
fn stdin_readable(timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fds, 1, ms) > 0 }
}

/// TTY mode: sends the terminal's size each time it changes.
fn follow_size(shared: &Shared, mut last: Option<(u16, u16)>) {
    while !shared.finished.load(Ordering::SeqCst) {
        std::thread::sleep(RESIZE_POLL);
        let now = terminal_size();
        if now.is_none() || now == last {
            continue;
        }
        let Some((rows, cols)) = now else { continue };
        if let Some(c) = lock(&shared.control).as_mut() {
            if c.write_all(format!("winsize {rows} {cols}\n").as_bytes())
                .is_ok()
            {
                last = now;
            }
        }
    }
}

/// Reads `exit N` from the agent; once it came, waits for the output
/// streams to end and closes the stream, which tells the agent that all
/// arrived.
fn control_loop(listener: UnixListener, shared: &Shared) {
    let Some(stream) = accept_once(listener) else {
        return;
    };
    if let Ok(c) = stream.try_clone() {
        *lock(&shared.control) = Some(c);
    }
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    // A line is at most a few bytes: more is not from the agent.
    let mut lines = BufReader::new(reader.take(4096));
    let mut line = String::new();
    while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
        if let Some(status) = parse_exit(&line) {
            *lock(&shared.exit_status) = Some(status);
            break;
        }
        line.clear();
    }
    shared.wait_outputs(true, DRAIN_TIMEOUT);
    lock(&shared.control).take();
    let _ = stream.shutdown(Shutdown::Both);
}

/// `exit N` with N a shell status (0-255); anything else is not one.
fn parse_exit(line: &str) -> Option<i32> {
    let n: i32 = line.trim_end().strip_prefix("exit ")?.parse().ok()?;
    (0..=255).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_lines_parse_only_shell_statuses() {
        assert_eq!(parse_exit("exit 0\n"), Some(0));
        assert_eq!(parse_exit("exit 130\n"), Some(130));
        assert_eq!(parse_exit("exit 256\n"), None);
        assert_eq!(parse_exit("exit -1\n"), None);
        assert_eq!(parse_exit("exit\n"), None);
        assert_eq!(parse_exit("winsize 1 2\n"), None);
    }

    /// The whole host side against a fake agent on the Unix sockets: stdin
    /// is not a terminal under the test harness, so this is pipe mode.
    #[test]
    fn streams_and_status_reach_their_ends() {
        let stdio = Stdio::start(
            crate::console::Console::start_without_input(crate::guest_output::OutputMode::Logged)
                .stopper(),
            false,
        )
        .expect("start");
        let dir = stdio.dir.clone();
        let connect = |port: u32| UnixStream::connect(dir.join(format!("vsock_{port}"))).unwrap();
        let mut control = connect(PORT_CONTROL);
        let mut out = connect(PORT_STDOUT);
        let mut err = connect(PORT_STDERR);
        out.write_all(b"to stdout\n").unwrap();
        err.write_all(b"to stderr\n").unwrap();
        drop(out);
        drop(err);
        control.write_all(b"exit 7\n").unwrap();
        // The host closes control once the outputs ended: the ack.
        let mut rest = Vec::new();
        control.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(stdio.exit_status(), Some(7));
        assert!(!stdio.interrupted());
        assert!(stdio.cmdline().starts_with("vessel.agent=1"));
        assert_eq!(stdio.vsock().uds_path, dir.join("vsock"));
        stdio.finish();
        assert!(!dir.exists(), "the sockets' directory is left behind");
    }
}
