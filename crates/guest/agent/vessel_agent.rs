//! vessel-agent: runs the command of `vessel run -- CMD` inside the guest
//! with its stdin, stdout and stderr on vsock streams to the host, and
//! reports its exit status there. Built by the guest crate's build.rs with
//! plain `rustc` (std only, static), shipped as /bin/vessel-agent and
//! started by /init when the kernel command line has `vessel.agent=1`.
//!
//! Usage: `vessel-agent [--tty ROWSxCOLS] PROGRAM [ARGS...]`
//!
//! Pipe mode (no `--tty`): the program gets pipes; host stdin is copied to
//! its stdin (closed at EOF), its stdout and stderr to their streams. TTY
//! mode: the program runs as a session leader on a new pty of that size;
//! the pty's output goes to the stdout stream, the stdin stream to its
//! input, and `winsize ROWS COLS` lines on the control stream resize it.
//! In both modes, once the program has ended and its output has drained,
//! `exit N` (N = status, or 128 + signal) is sent on the control stream,
//! the agent waits for the host to close it and exits with N.

mod ports;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SOCK_CLOEXEC: i32 = 0o2000000;
const O_RDWR: i32 = 2;
const O_NOCTTY: i32 = 0o400;
const O_CLOEXEC: i32 = 0o2000000;
const TIOCSWINSZ: u64 = 0x5414;
const TIOCSCTTY: u64 = 0x540E;
const HOST_CID: u32 = 2;
/// How long to retry connecting while the vsock driver comes up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// After the program ends, output that stays silent this long (held open
/// by a background process) is not waited for.
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// How long the host may take to acknowledge the exit status.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The status when the agent itself fails (as `docker run` uses 125).
const AGENT_FAILED: i32 = 125;

#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    zero: [u8; 4],
}

#[repr(C)]
struct Winsize {
    rows: u16,
    cols: u16,
    xpixel: u16,
    ypixel: u16,
}

extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn ioctl(fd: i32, request: u64, ...) -> i32;
    fn posix_openpt(flags: i32) -> i32;
    fn grantpt(fd: i32) -> i32;
    fn unlockpt(fd: i32) -> i32;
    fn ptsname_r(fd: i32, buf: *mut u8, len: usize) -> i32;
    fn setsid() -> i32;
}

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vessel-agent: {e}");
            AGENT_FAILED
        }
    };
    std::process::exit(code);
}

struct Args {
    tty: Option<(u16, u16)>,
    program: String,
    args: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut argv = std::env::args().skip(1);
    let mut tty = None;
    let mut first = argv
        .next()
        .ok_or("usage: vessel-agent [--tty ROWSxCOLS] PROGRAM [ARGS...]")?;
    if first == "--tty" {
        let size = argv.next().ok_or("--tty needs ROWSxCOLS")?;
        tty = Some(parse_size(&size).ok_or(format!("bad --tty size {size:?}"))?);
        first = argv.next().ok_or("no program to run")?;
    }
    Ok(Args {
        tty,
        program: first,
        args: argv.collect(),
    })
}

/// `ROWSxCOLS`, each 1..=65535.
fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (r, c) = s.split_once('x')?;
    let (r, c) = (r.parse().ok()?, c.parse().ok()?);
    (r > 0 && c > 0).then_some((r, c))
}

fn run() -> Result<i32, String> {
    let args = parse_args()?;
    let control = connect_host(ports::PORT_CONTROL)?;
    let stdin = connect_host(ports::PORT_STDIN)?;
    let stdout = connect_host(ports::PORT_STDOUT)?;
    let stderr = connect_host(ports::PORT_STDERR)?;
    let mut cmd = Command::new(&args.program);
    cmd.args(&args.args);
    let session = Session {
        control,
        stdin,
        stdout,
        stderr,
    };
    let code = match args.tty {
        Some(size) => session.run_tty(cmd, size)?,
        None => session.run_pipes(cmd)?,
    };
    Ok(code)
}

/// A vsock stream to the host on `port`, retried while the driver loads.
fn connect_host(port: u32) -> Result<UnixStream, String> {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    loop {
        match try_connect(port) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "cannot connect to the host on vsock port {port}: {e}"
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn try_connect(port: u32) -> std::io::Result<UnixStream> {
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe { socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid: HOST_CID,
        zero: [0; 4],
    };
    let len = std::mem::size_of::<SockaddrVm>() as u32;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes for the call.
    if unsafe { connect(owned.as_raw_fd(), &addr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A UnixStream is used only as a generic stream socket: read, write,
    // shutdown and timeouts are the same system calls for vsock.
    Ok(UnixStream::from(owned))
}

/// The four streams to the host.
struct Session {
    control: UnixStream,
    stdin: UnixStream,
    stdout: UnixStream,
    stderr: UnixStream,
}

/// What the output copiers tell the main thread, to decide when the
/// output has drained.
#[derive(Default)]
struct Drain {
    /// Copiers still running.
    running: AtomicU64,
    /// Copiers blocked reading the program's side (not sending).
    reading: AtomicU64,
    /// Milliseconds since `start` of the last byte moved.
    last_ms: AtomicU64,
    start: Option<Instant>,
}

impl Drain {
    fn new() -> Arc<Self> {
        Arc::new(Drain {
            start: Some(Instant::now()),
            ..Default::default()
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.map_or(0, |s| s.elapsed().as_millis() as u64)
    }

    /// Waits until every copier ended, or all that remain have been
    /// waiting for input for DRAIN_IDLE.
    fn wait(&self) {
        loop {
            let running = self.running.load(Ordering::SeqCst);
            if running == 0 {
                return;
            }
            let idle = self
                .now_ms()
                .saturating_sub(self.last_ms.load(Ordering::SeqCst));
            if self.reading.load(Ordering::SeqCst) == running
                && idle >= DRAIN_IDLE.as_millis() as u64
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Copies `from` to `to` until EOF or an error on either side, then runs
/// `done`. Counts itself in `drain` when given.
fn spawn_copy<R, W, F>(mut from: R, mut to: W, drain: Option<Arc<Drain>>, done: F)
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
    F: FnOnce(W) + Send + 'static,
{
    if let Some(d) = &drain {
        d.running.fetch_add(1, Ordering::SeqCst);
    }
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(d) = &drain {
                d.reading.fetch_add(1, Ordering::SeqCst);
            }
            let n = from.read(&mut buf);
            if let Some(d) = &drain {
                d.reading.fetch_sub(1, Ordering::SeqCst);
                d.last_ms.store(d.now_ms(), Ordering::SeqCst);
            }
            let n = match n {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break, // EIO: the pty's last slave closed
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        done(to);
        if let Some(d) = &drain {
            d.running.fetch_sub(1, Ordering::SeqCst);
        }
    });
}

fn status_code(status: std::process::ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => AGENT_FAILED,
    }
}

impl Session {
    fn run_pipes(self, mut cmd: Command) -> Result<i32, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run the command: {e}"))?;
        let (Some(cin), Some(cout), Some(cerr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the command's pipes are missing".into());
        };
        // At EOF from the host the child's stdin is dropped: it sees EOF.
        spawn_copy(self.stdin, cin, None, drop);
        let drain = Drain::new();
        let close = |s: UnixStream| {
            let _ = s.shutdown(Shutdown::Write);
        };
        let ends = [self.stdout.try_clone(), self.stderr.try_clone()];
        spawn_copy(cout, self.stdout, Some(drain.clone()), close);
        spawn_copy(cerr, self.stderr, Some(drain.clone()), close);
        let eof = control_reader(&self.control, None)?;
        let status = child.wait().map_err(|e| format!("cannot wait: {e}"))?;
        drain.wait();
        // Output still held open by a background process is not waited for.
        for end in ends.into_iter().flatten() {
            close(end);
        }
        report(self.control, status_code(status), eof)
    }

    fn run_tty(self, mut cmd: Command, (rows, cols): (u16, u16)) -> Result<i32, String> {
        let (master, slave) = open_pty().map_err(|e| format!("cannot open a pty: {e}"))?;
        set_winsize(master.as_raw_fd(), rows, cols);
        let stdio = |s: &std::fs::File| s.try_clone().map(Stdio::from);
        let err = |e: std::io::Error| format!("cannot set up the pty: {e}");
        cmd.stdin(stdio(&slave).map_err(err)?)
            .stdout(stdio(&slave).map_err(err)?)
            .stderr(stdio(&slave).map_err(err)?);
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork
        // and exec; fd 0 is already the pty's slave there.
        unsafe {
            cmd.pre_exec(|| {
                if setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run the command: {e}"))?;
        // Only the child may hold the slave: the master reads EIO once
        // the child's side is all closed.
        drop(cmd);
        drop(slave);
        let _ = self.stderr.shutdown(Shutdown::Write);
        let master_in = master.try_clone().map_err(err)?;
        spawn_copy(self.stdin, master_in, None, drop);
        let drain = Drain::new();
        let master_out = master.try_clone().map_err(err)?;
        let close = |s: UnixStream| {
            let _ = s.shutdown(Shutdown::Write);
        };
        let end = self.stdout.try_clone();
        spawn_copy(master_out, self.stdout, Some(drain.clone()), close);
        let eof = control_reader(&self.control, Some(master.as_raw_fd()))?;
        let status = child.wait().map_err(|e| format!("cannot wait: {e}"))?;
        drain.wait();
        if let Ok(end) = end {
            close(end);
        }
        let code = report(self.control, status_code(status), eof);
        drop(master);
        code
    }
}

/// Reads control lines in a thread: `winsize ROWS COLS` resizes `pty`.
/// The receiver gets a message when the host closes the stream.
fn control_reader(control: &UnixStream, pty: Option<RawFd>) -> Result<mpsc::Receiver<()>, String> {
    let reader = control
        .try_clone()
        .map_err(|e| format!("cannot read the control stream: {e}"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(reader);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut words = line.split_ascii_whitespace();
            if let (Some("winsize"), Some(size), Some(fd)) = (
                words.next(),
                words
                    .next()
                    .zip(words.next())
                    .map(|(r, c)| format!("{r}x{c}")),
                pty,
            ) {
                if let Some((rows, cols)) = parse_size(&size) {
                    set_winsize(fd, rows, cols);
                }
            }
        }
        let _ = tx.send(());
    });
    Ok(rx)
}

/// Sends the exit status and waits for the host to acknowledge it by
/// closing the control stream.
fn report(mut control: UnixStream, code: i32, eof: mpsc::Receiver<()>) -> Result<i32, String> {
    let _ = control.write_all(format!("exit {code}\n").as_bytes());
    let _ = control.shutdown(Shutdown::Write);
    let _ = eof.recv_timeout(ACK_TIMEOUT);
    Ok(code)
}

fn set_winsize(fd: RawFd, rows: u16, cols: u16) {
    let ws = Winsize {
        rows,
        cols,
        xpixel: 0,
        ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a struct winsize from a valid pointer.
    unsafe { ioctl(fd, TIOCSWINSZ, &ws as *const Winsize) };
}

/// A new pty: its master and its slave, both close-on-exec.
fn open_pty() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe { posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let master = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut name = [0u8; 128];
    // SAFETY: grantpt/unlockpt take the master; ptsname_r writes at most
    // `name.len()` bytes, NUL included, into `name`.
    let ok = unsafe {
        grantpt(fd) == 0 && unlockpt(fd) == 0 && ptsname_r(fd, name.as_mut_ptr(), name.len()) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let path = String::from_utf8_lossy(&name[..len]).into_owned();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_NOCTTY | O_CLOEXEC)
        .open(path)?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("40x120"), Some((40, 120)));
        assert_eq!(parse_size("0x120"), None);
        assert_eq!(parse_size("40x"), None);
        assert_eq!(parse_size("70000x1"), None);
    }
}
