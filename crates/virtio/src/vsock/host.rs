//! The host side of the device, as Firecracker has it: a listening Unix
//! socket at `uds_path` where host programs connect and write
//! `CONNECT <port>\n` to reach the guest's listener on that port (and get
//! `OK <host_port>\n` back), and for each guest connection to host port
//! P a connection to the host program listening at `<uds_path>_P`.
//!
//! Every host fd (the listener, streams waiting for their `CONNECT`
//! line, connections) sits in one epoll instance of the device's own,
//! edge-triggered; the VMM's event loop watches only that epoll fd, so
//! the set of fds can change at run time without the loop knowing.

use super::connection::{Conn, Next, Verdict};
use super::metrics::VsockMetrics;
use super::packet::{op, Header, HOST_CID, TYPE_STREAM};
use super::unix;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

/// Most connections at once (each holds one host fd and up to
/// `BUF_ALLOC` bytes of guest data).
pub const MAX_CONNECTIONS: usize = 512;
/// Most host streams still writing their `CONNECT` line.
pub const MAX_WAITING: usize = 64;
/// Longest `CONNECT` line accepted (`CONNECT 4294967295\n` is 19 bytes).
const MAX_LINE: usize = 32;
/// Most RSTs waiting for receive buffers.
const MAX_RST_QUEUE: usize = 1024;
/// Ports given to host-initiated connections start here (as Linux's
/// ephemeral vsock ports do), counting up.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// How long a host program has to finish its `CONNECT` line, and the
/// guest to answer the REQUEST that follows.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often deadlines are checked while any is pending.
const TICK: Duration = Duration::from_millis(500);
/// The listener's epoll token, the timer's; others count up from 1.
const LISTENER: u64 = 0;
const TIMER: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0} already exists: remove it (a stale socket?) or choose another uds_path")]
    UdsExists(PathBuf),
    #[error("cannot listen on {path}: check the directory exists and is writable")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the vsock epoll instance")]
    Epoll(#[source] std::io::Error),
    #[error("cannot create the vsock timer")]
    Timer(#[source] std::io::Error),
}

/// A host stream that has not finished its `CONNECT` line.
struct Waiting {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

pub struct Host {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    /// Ticks while a deadline is pending (a waiting `CONNECT` line, an
    /// unanswered REQUEST or SHUTDOWN).
    timer: TimerFd,
    timer_armed: bool,
    connect_timeout: Duration,
    conns: BTreeMap<u64, Conn>,
    /// (local port, guest port) to token.
    keys: HashMap<(u32, u32), u64>,
    waiting: BTreeMap<u64, Waiting>,
    rst: VecDeque<Header>,
    next_token: u64,
    next_local_port: u32,
    /// The connection served last, for round-robin.
    last_served: u64,
    metrics: Arc<VsockMetrics>,
}

impl Host {
    /// Listens at `uds_path` (which must not exist).
    pub fn new(
        guest_cid: u64,
        uds_path: &Path,
        metrics: Arc<VsockMetrics>,
    ) -> Result<Host, HostError> {
        if uds_path.symlink_metadata().is_ok() {
            return Err(HostError::UdsExists(uds_path.to_path_buf()));
        }
        let listen_err = |source| HostError::Listen {
            path: uds_path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(uds_path).map_err(listen_err)?;
        let host = Host {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            epoll: Epoll::new().map_err(HostError::Epoll)?,
            timer: TimerFd::new().map_err(|e| HostError::Timer(e.into()))?,
            timer_armed: false,
            connect_timeout: CONNECT_TIMEOUT,
            conns: BTreeMap::new(),
            keys: HashMap::new(),
            waiting: BTreeMap::new(),
            rst: VecDeque::new(),
            next_token: 1,
            next_local_port: FIRST_LOCAL_PORT,
            last_served: 0,
            metrics,
        };
        host.listener.set_nonblocking(true).map_err(listen_err)?;
        host.watch(host.listener.as_raw_fd(), LISTENER)
            .map_err(listen_err)?;
        host.watch(host.timer.as_raw_fd(), TIMER)
            .map_err(HostError::Timer)?;
        Ok(host)
    }

    /// The fd the VMM's event loop watches: readable when any host fd
    /// has news.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn watch(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        let events = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Drops every connection and waiting stream (device reset); the
    /// listener stays.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.keys.clear();
        self.waiting.clear();
        self.rst.clear();
    }

    /// Takes in what the host fds reported: new host programs, their
    /// `CONNECT` lines, and readiness of the connections' streams.
    pub fn serve_host_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("virtio-vsock: epoll_wait failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                self.host_event(ev.data(), ev.event_set());
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn host_event(&mut self, token: u64, set: EventSet) {
        if token == TIMER {
            self.expire();
        } else if token == LISTENER {
            self.accept_all();
        } else if self.waiting.contains_key(&token) {
            self.read_connect_line(token);
        } else if let Some(c) = self.conns.get_mut(&token) {
            let err = set.intersects(EventSet::HANG_UP | EventSet::ERROR);
            if err || set.contains(EventSet::IN) {
                c.readable = true;
            }
            if err || set.contains(EventSet::OUT) {
                c.writable = true;
            }
            let hung_up = set.contains(EventSet::HANG_UP) && c.host_hung_up() == Verdict::Reset;
            if hung_up || (c.has_held_data() && c.flush() == Verdict::Reset) {
                self.kill(token);
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of fds or memory: the program stays in the
                    // backlog until the next event.
                    log::warn!("virtio-vsock: accept failed: {e}");
                    return;
                }
            };
            if self.waiting.len() >= MAX_WAITING
                || self.conns.len() + self.waiting.len() >= MAX_CONNECTIONS
                || stream.set_nonblocking(true).is_err()
            {
                self.metrics.host_rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let token = self.token();
            if self.watch(stream.as_raw_fd(), token).is_err() {
                continue;
            }
            self.waiting.insert(
                token,
                Waiting {
                    stream,
                    line: Vec::new(),
                    deadline: Instant::now() + self.connect_timeout,
                },
            );
            self.arm_timer();
            self.read_connect_line(token);
        }
    }

    /// Reads the `CONNECT` line a byte at a time, so nothing after it is
    /// taken before the connection exists.
    fn read_connect_line(&mut self, token: u64) {
        let Some(w) = self.waiting.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match w.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&w.line),
                Ok(1) if w.line.len() < MAX_LINE => w.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // Too long, closed or failed.
                _ => break None,
            }
        };
        let Some(w) = self.waiting.remove(&token) else {
            return;
        };
        match port.and_then(|p| Some((p, self.local_port_for(p)?))) {
            Some((peer, local)) => {
                self.metrics.conns_added.fetch_add(1, Ordering::Relaxed);
                self.keys.insert((local, peer), token);
                let c = Conn::local(
                    w.stream,
                    self.guest_cid,
                    (local, peer),
                    self.connect_timeout,
                );
                self.conns.insert(token, c);
                self.arm_timer();
            }
            None => {
                self.metrics.host_rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts the tick if it is not running.
    fn arm_timer(&mut self) {
        if !self.timer_armed {
            match self.timer.reset(TICK, Some(TICK)) {
                Ok(()) => self.timer_armed = true,
                Err(e) => log::warn!("virtio-vsock: cannot arm the timer: {e}"),
            }
        }
    }

    /// A tick: drops host programs that did not finish their `CONNECT`
    /// line and resets connections the guest did not answer in time;
    /// stops ticking when no deadline is left.
    fn expire(&mut self) {
        // Readable: the timer fired, so this read does not block.
        let _ = self.timer.wait();
        let now = Instant::now();
        let before = self.waiting.len();
        self.waiting.retain(|_, w| w.deadline > now);
        let dropped = (before - self.waiting.len()) as u64;
        self.metrics
            .host_rejected
            .fetch_add(dropped, Ordering::Relaxed);
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(&t, _)| t)
            .collect();
        for t in late {
            self.kill(t);
        }
        if self.waiting.is_empty() && self.conns.values().all(|c| c.deadline.is_none()) {
            let _ = self.timer.clear();
            self.timer_armed = false;
        }
    }

    #[cfg(test)]
    pub(super) fn set_connect_timeout(&mut self, t: Duration) {
        self.connect_timeout = t;
    }

    /// A local port no connection to guest port `peer` uses.
    fn local_port_for(&mut self, peer: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.keys.contains_key(&(p, peer)) {
                return Some(p);
            }
        }
        None
    }

    /// A packet from the guest's transmit queue whose payload (`len`
    /// bytes) fitted its chain.
    pub fn on_guest_packet(&mut self, h: &Header, payload: &[u8]) {
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            // Not from this guest or not for us: nobody to answer.
            self.metrics.tx_bad_packets.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let token = self.keys.get(&(h.dst_port, h.src_port)).copied();
        if h.op == op::RST {
            if let Some(t) = token {
                self.remove(t);
            }
            return;
        }
        if h.kind != TYPE_STREAM || !(op::REQUEST..=op::CREDIT_REQUEST).contains(&h.op) {
            self.metrics.tx_bad_packets.fetch_add(1, Ordering::Relaxed);
            match token {
                Some(t) => self.kill(t),
                None => self.queue_rst(Header::rst_reply(h, self.guest_cid)),
            }
            return;
        }
        match token {
            Some(t) => {
                let verdict = match self.conns.get_mut(&t) {
                    Some(c) => c.on_packet(h, payload),
                    None => Verdict::Reset,
                };
                if verdict == Verdict::Reset {
                    self.kill(t);
                }
            }
            None if h.op == op::REQUEST => self.guest_connect(h),
            None => self.queue_rst(Header::rst_reply(h, self.guest_cid)),
        }
    }

    /// The guest connects to host port `dst_port`: reach the program
    /// listening at `<uds_path>_<dst_port>`, or refuse.
    fn guest_connect(&mut self, h: &Header) {
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", h.dst_port));
        let stream = if self.conns.len() + self.waiting.len() >= MAX_CONNECTIONS {
            None
        } else {
            unix::connect(Path::new(&path)).ok()
        };
        let token = self.token();
        match stream.filter(|s| self.watch(s.as_raw_fd(), token).is_ok()) {
            Some(s) => {
                self.metrics.conns_added.fetch_add(1, Ordering::Relaxed);
                self.keys.insert((h.dst_port, h.src_port), token);
                self.conns.insert(token, Conn::peer(s, h, self.guest_cid));
            }
            None => {
                self.metrics.conns_refused.fetch_add(1, Ordering::Relaxed);
                self.queue_rst(Header::rst_reply(h, self.guest_cid));
            }
        }
    }

    fn queue_rst(&mut self, h: Header) {
        if self.rst.len() < MAX_RST_QUEUE {
            self.rst.push_back(h);
        } else {
            self.metrics.rst_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&mut self, token: u64) -> Option<Conn> {
        let c = self.conns.remove(&token)?;
        self.keys.remove(&(c.local_port, c.peer_port));
        // Closing the stream takes it out of the epoll set.
        Some(c)
    }

    /// Closes a connection and resets the guest's side.
    fn kill(&mut self, token: u64) {
        if let Some(c) = self.remove(token) {
            self.metrics.conns_reset.fetch_add(1, Ordering::Relaxed);
            self.queue_rst(Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: c.local_port,
                dst_port: c.peer_port,
                kind: TYPE_STREAM,
                op: op::RST,
                ..Header::default()
            });
        }
    }

    /// Whether [`Host::next_packet`] may have something.
    pub fn has_work(&self) -> bool {
        !self.rst.is_empty() || self.conns.values().any(Conn::has_work)
    }

    /// The next packet for a guest receive buffer with room for
    /// `buf.len()` payload bytes (the payload is left at the front of
    /// `buf`): waiting RSTs first, then the connections in turn.
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Option<Header> {
        if let Some(h) = self.rst.pop_front() {
            return Some(h);
        }
        let start = self.last_served;
        let (token, next) = first_packet(self.conns.range_mut(start + 1..), buf)
            .or_else(|| first_packet(self.conns.range_mut(..=start), buf))?;
        self.last_served = token;
        match next {
            Next::Packet(h) => {
                if h.op == op::SHUTDOWN {
                    self.arm_timer();
                }
                Some(h)
            }
            _ => {
                self.kill(token);
                self.rst.pop_front()
            }
        }
    }
}

/// The first connection of `conns` with a packet (or a failure) for the
/// guest.
fn first_packet<'a>(
    conns: impl Iterator<Item = (&'a u64, &'a mut Conn)>,
    buf: &mut [u8],
) -> Option<(u64, Next)> {
    for (&t, c) in conns {
        match c.next_packet(buf) {
            Next::Nothing => {}
            next => return Some((t, next)),
        }
    }
    None
}

/// The guest port of a `CONNECT <port>` line (without its newline).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let port = line.strip_prefix(b"CONNECT ")?;
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(port).ok()?.parse().ok()
}

impl Drop for Host {
    /// The socket file goes with the device, so the next VM can listen
    /// at the same path.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}
