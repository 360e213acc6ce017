//! The API server: one thread, epoll over a nonblocking Unix listener, its
//! connections and a stop eventfd. Each connection is an HTTP [`Session`];
//! a connection that stops making progress in the middle of a request is
//! closed after an idle timeout, so a slow or silent client never holds up
//! the others. [`Server::run`] blocks until [`ServerHandle::stop`].

use crate::backend::Backend;
use crate::http::{Response, Session};
use crate::metrics::ApiMetrics;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Most connections served at once by default; more are answered 400 and
/// closed on arrival.
pub const MAX_CONNECTIONS: usize = 1000;
/// How long a connection may sit in the middle of a request (or with an
/// answer the client does not read) before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection with no request under way may stay open.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a closing connection's unread input is drained, so the client
/// reads the answer instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Output queued past this stops reading from the connection.
const HIGH_WATER: usize = 1 << 20;
/// sun_path's size less its NUL.
const MAX_SOCKET_PATH: usize = 107;

const LISTENER: u64 = 0;
const STOP: u64 = 1;

/// Why the server could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the API socket path {0} already exists: remove it (a socket left by an earlier vessel or firecracker) or choose another --api-sock path")]
    PathExists(PathBuf),
    #[error("the directory of the API socket path {0} does not exist: create it or choose another --api-sock path")]
    ParentMissing(PathBuf),
    #[error("no permission to create the API socket {0}: choose a directory you can write to")]
    PermissionDenied(PathBuf),
    #[error("the API socket path {path} is {len} bytes long: Unix sockets take at most {MAX_SOCKET_PATH}, use a shorter path")]
    PathTooLong { path: PathBuf, len: usize },
    #[error("cannot bind the API socket {path}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the API server's event loop")]
    EventLoop(#[source] std::io::Error),
}

/// Stops a running server from another thread.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    stop: Arc<EventFd>,
}

impl ServerHandle {
    /// Asks the server to close its connections and return from `run`.
    pub fn stop(&self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("cannot signal the API server to stop: {e}");
        }
    }
}

/// A bound API socket, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    inode: Option<(u64, u64)>,
    max_payload: usize,
    idle_timeout: Duration,
    max_connections: usize,
    stop: Arc<EventFd>,
    metrics: Arc<ApiMetrics>,
}

impl Server {
    /// Creates the socket at `path`, refusing a path that exists (as
    /// Firecracker does). Bodies may be up to `max_payload` bytes.
    pub fn bind(path: impl AsRef<Path>, max_payload: usize) -> Result<Server, ServerError> {
        let path = path.as_ref().to_path_buf();
        check_socket_path(&path)?;
        let listener = UnixListener::bind(&path).map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => ServerError::PathExists(path.clone()),
            ErrorKind::PermissionDenied => ServerError::PermissionDenied(path.clone()),
            ErrorKind::NotFound => ServerError::ParentMissing(path.clone()),
            _ => ServerError::Bind {
                path: path.clone(),
                source: e,
            },
        })?;
        let inode = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let stop = EventFd::new(EFD_NONBLOCK).map_err(ServerError::EventLoop)?;
        Ok(Server {
            listener,
            path,
            inode,
            max_payload,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            stop: Arc::new(stop),
            metrics: Arc::new(ApiMetrics::default()),
        })
    }

    /// A handle that stops [`Server::run`].
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            stop: self.stop.clone(),
        }
    }

    /// The request counters this server updates.
    pub fn metrics(&self) -> Arc<ApiMetrics> {
        self.metrics.clone()
    }

    /// Counts into `metrics` instead of the server's own counters.
    pub fn with_metrics(mut self, metrics: Arc<ApiMetrics>) -> Server {
        self.metrics = metrics;
        self
    }

    /// Sets how long a request may stall before its connection is closed.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Server {
        self.idle_timeout = timeout;
        self
    }

    /// Sets how many connections are served at once.
    pub fn with_max_connections(mut self, max: usize) -> Server {
        self.max_connections = max;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until stopped; the socket file is removed on return.
    pub fn run(self, backend: Arc<dyn Backend>) -> Result<(), ServerError> {
        self.listener
            .set_nonblocking(true)
            .map_err(ServerError::EventLoop)?;
        let epoll = Epoll::new().map_err(ServerError::EventLoop)?;
        let add = |fd, token| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(self.listener.as_raw_fd(), LISTENER).map_err(ServerError::EventLoop)?;
        add(self.stop.as_raw_fd(), STOP).map_err(ServerError::EventLoop)?;
        let mut lp = Loop {
            epoll: &epoll,
            server: &self,
            backend,
            conns: HashMap::new(),
            next_token: STOP + 1,
        };
        lp.serve()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let now = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now.is_some() && now == self.inode {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn check_socket_path(path: &Path) -> Result<(), ServerError> {
    let len = path.as_os_str().len();
    if len == 0 || len > MAX_SOCKET_PATH {
        return Err(ServerError::PathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(ServerError::PathExists(path.to_path_buf()));
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(ServerError::ParentMissing(path.to_path_buf()))
        }
        _ => Ok(()),
    }
}

/// One client connection.
struct Conn {
    stream: UnixStream,
    session: Session,
    last_progress: Instant,
    /// Set once the answer that closes the connection is sent: input is
    /// read and dropped until EOF or the linger time.
    draining_since: Option<Instant>,
    /// The client closed its side: answer what is queued, then close.
    eof: bool,
    interest: EventSet,
}

/// The running event loop's state.
struct Loop<'a> {
    epoll: &'a Epoll,
    server: &'a Server,
    backend: Arc<dyn Backend>,
    conns: HashMap<u64, Conn>,
    next_token: u64,
}

impl Loop<'_> {
    fn serve(&mut self) -> Result<(), ServerError> {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(1000, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ServerError::EventLoop(e)),
            };
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept_all(),
                    STOP => return Ok(()),
                    token => self.service(token),
                }
            }
            self.sweep();
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.server.listener.accept() {
                Ok((stream, _)) => self.add(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or memory: let other connections
                    // finish before trying again, instead of spinning.
                    log::warn!("API socket: cannot accept a connection: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    return;
                }
            }
        }
    }

    fn add(&mut self, stream: UnixStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let max = self.server.max_connections;
        if self.conns.len() >= max {
            log::warn!("API socket: {max} connections open, closing a new one");
            let msg =
                format!("the API already has {max} connections open: close idle ones and retry");
            // Best effort: a fresh socket's buffer takes this short answer.
            let _ = (&stream).write_all(&Response::fault(msg, true).to_bytes());
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let ev = EpollEvent::new(EventSet::IN, token);
        if let Err(e) = self
            .epoll
            .ctl(ControlOperation::Add, stream.as_raw_fd(), ev)
        {
            log::warn!("API socket: cannot watch a connection: {e}");
            return;
        }
        let conn = Conn {
            stream,
            session: Session::new(self.server.max_payload),
            last_progress: Instant::now(),
            draining_since: None,
            eof: false,
            interest: EventSet::IN,
        };
        self.conns.insert(token, conn);
    }

    /// Reads, answers and writes what a connection's readiness allows.
    fn service(&mut self, token: u64) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let open = conn.read(&*self.backend, &self.server.metrics)
            && conn.write()
            && conn.finish()
            && conn.watch(self.epoll, token);
        if !open {
            self.close(token);
        }
    }

    /// Closes connections stalled mid-request, idle for too long, or done
    /// lingering.
    fn sweep(&mut self) {
        let now = Instant::now();
        let idle = self.server.idle_timeout;
        let expired: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let quiet = now.duration_since(c.last_progress);
                match c.draining_since {
                    Some(t) => now.duration_since(t) > LINGER,
                    None if c.session.mid_request() || !c.session.output().is_empty() => {
                        quiet > idle
                    }
                    None => quiet > KEEP_ALIVE_TIMEOUT,
                }
            })
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            self.close(token);
        }
    }

    fn close(&mut self, token: u64) {
        if let Some(conn) = self.conns.remove(&token) {
            let fd = conn.stream.as_raw_fd();
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }
}

impl Conn {
    /// Reads what is available and answers complete requests; false when
    /// the connection is to be dropped now.
    fn read(&mut self, backend: &dyn Backend, metrics: &ApiMetrics) -> bool {
        let mut buf = [0u8; 16384];
        while !self.eof && self.session.output().len() < HIGH_WATER {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.last_progress = Instant::now();
                    if self.draining_since.is_none() {
                        self.session.receive(&buf[..n]);
                        self.session.process(backend, metrics);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        !(self.eof && self.draining_since.is_some())
    }

    /// Sends queued output; false on a write error.
    fn write(&mut self) -> bool {
        while !self.session.output().is_empty() {
            match self.stream.write(self.session.output()) {
                Ok(0) => return false,
                Ok(n) => {
                    self.session.consume_output(n);
                    self.last_progress = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }

    /// Once everything is sent: a closing session starts draining, a
    /// client that closed its side is dropped. False when to drop now.
    fn finish(&mut self) -> bool {
        if !self.session.output().is_empty() {
            return true;
        }
        if self.eof {
            return false;
        }
        if self.session.closing() && self.draining_since.is_none() {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.draining_since = Some(Instant::now());
        }
        true
    }

    /// Watches for input unless the client is not reading its answers, and
    /// for output while some is queued.
    fn watch(&mut self, epoll: &Epoll, token: u64) -> bool {
        let mut want = EventSet::empty();
        if !self.eof && self.session.output().len() < HIGH_WATER {
            want |= EventSet::IN;
        }
        if !self.session.output().is_empty() {
            want |= EventSet::OUT;
        }
        if want == self.interest {
            return true;
        }
        self.interest = want;
        let ev = EpollEvent::new(want, token);
        epoll
            .ctl(ControlOperation::Modify, self.stream.as_raw_fd(), ev)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_refuses_existing_missing_and_long_paths() {
        let dir = std::env::temp_dir().join(format!("vessel-api-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("exists");
        std::fs::write(&file, b"").unwrap();
        let e = Server::bind(&file, 100).unwrap_err();
        assert!(matches!(e, ServerError::PathExists(_)), "{e}");
        assert!(e.to_string().contains("already exists: remove it"));
        let e = Server::bind(dir.join("no/such/dir/api.sock"), 100).unwrap_err();
        assert!(matches!(e, ServerError::ParentMissing(_)), "{e}");
        let e = Server::bind(dir.join("x".repeat(200)), 100).unwrap_err();
        assert!(matches!(e, ServerError::PathTooLong { .. }), "{e}");
        let sock = dir.join("api.sock");
        let s = Server::bind(&sock, 100).unwrap();
        assert!(sock.exists());
        drop(s);
        assert!(!sock.exists(), "the socket file goes with the server");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
