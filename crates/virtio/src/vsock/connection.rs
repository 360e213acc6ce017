//! One vsock stream: a host Unix stream paired with a guest port, its
//! state, and the credit accounting of both directions (virtio 1.2
//! section 5.10.6.3). Host to guest: data is read from the host stream
//! only as far as the guest's advertised buffer (`buf_alloc` minus what
//! it has not yet forwarded) allows, so nothing is buffered here. Guest to
//! host: data the host stream does not take at once is held in a buffer
//! of at most [`BUF_ALLOC`] bytes, which is what we advertise; a guest
//! that sends past it is reset.

use super::packet::{op, Header, HOST_CID, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The receive buffer we advertise per connection: the most guest data
/// held for a slow host program.
pub const BUF_ALLOC: u32 = 256 << 10;
/// How long the guest has to answer our SHUTDOWN of both directions
/// with a RST before we send ours.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded bytes the guest has not heard of that make us tell it.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A host program asked (`CONNECT`): the REQUEST goes to the guest,
    /// whose RESPONSE makes the connection.
    LocalInit,
    Established,
}

/// Control packets a connection owes the guest, sent as receive buffers
/// allow; at most one of each is owed.
mod owed {
    pub const REQUEST: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const CREDIT_UPDATE: u8 = 4;
}

/// What becomes of a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Close it and tell the guest with a RST.
    Reset,
}

/// What a connection has for the guest's next receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Nothing,
    /// A packet; its payload (`len` bytes) is at the front of the buffer.
    Packet(Header),
    /// The host stream failed: close it and reset the guest's side.
    Reset,
}

pub struct Conn {
    stream: UnixStream,
    guest_cid: u64,
    pub local_port: u32,
    pub peer_port: u32,
    pub state: State,
    owed: u8,
    /// Host to guest: bytes sent, and the guest's buffer and count of
    /// bytes it passed on.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// A CREDIT_REQUEST went out since the guest last had room.
    asked_credit: bool,
    /// Guest to host: bytes not yet taken by the host stream; the first
    /// `tx_own` are ours (the `OK` line), the rest the guest's.
    tx_buf: VecDeque<u8>,
    tx_own: usize,
    fwd_cnt: Wrapping<u32>,
    fwd_cnt_told: Wrapping<u32>,
    /// Readiness of the host stream as epoll last said (edge-triggered:
    /// true until a call would block).
    pub readable: bool,
    pub writable: bool,
    /// The host program closed its end entirely.
    host_hup: bool,
    host_eof: bool,
    /// SHUTDOWN flags the guest sent.
    guest_shut: u32,
    host_write_shut: bool,
    /// When the connection is given up if the guest has not answered:
    /// our REQUEST (no RESPONSE yet) or our SHUTDOWN of both directions
    /// (no RST yet).
    pub deadline: Option<Instant>,
}

impl Conn {
    /// A connection the host program asked for with `CONNECT peer_port`.
    /// The guest has `timeout` to answer.
    pub fn local(stream: UnixStream, guest_cid: u64, ports: (u32, u32), timeout: Duration) -> Conn {
        let (local_port, peer_port) = ports;
        let mut c = Conn::new(stream, guest_cid, local_port, peer_port, State::LocalInit);
        c.owed = owed::REQUEST;
        c.deadline = Some(Instant::now() + timeout);
        c
    }

    /// A connection the guest asked for (its REQUEST), accepted.
    pub fn peer(stream: UnixStream, request: &Header, guest_cid: u64) -> Conn {
        let mut c = Conn::new(
            stream,
            guest_cid,
            request.dst_port,
            request.src_port,
            State::Established,
        );
        c.learn_credit(request);
        c.owed = owed::RESPONSE;
        c
    }

    fn new(stream: UnixStream, guest_cid: u64, local: u32, peer: u32, state: State) -> Conn {
        Conn {
            stream,
            guest_cid,
            local_port: local,
            peer_port: peer,
            state,
            owed: 0,
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            asked_credit: false,
            tx_buf: VecDeque::new(),
            tx_own: 0,
            fwd_cnt: Wrapping(0),
            fwd_cnt_told: Wrapping(0),
            readable: true,
            writable: true,
            host_hup: false,
            host_eof: false,
            guest_shut: 0,
            host_write_shut: false,
            deadline: None,
        }
    }

    /// How many bytes the guest can take now. A guest whose counters
    /// claim more forwarded than was sent gets nothing more.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn learn_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        if self.peer_credit() > 0 {
            self.asked_credit = false;
        }
    }

    fn header(&mut self, op: u16, flags: u32, len: u32) -> Header {
        self.fwd_cnt_told = self.fwd_cnt;
        // Every packet carries our counters: no separate update is owed.
        self.owed &= !owed::CREDIT_UPDATE;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Whether the guest could use data from the host stream now.
    pub fn wants_host_data(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.guest_shut & SHUTDOWN_RCV == 0
    }

    /// Whether there is anything to send the guest.
    pub fn has_work(&self) -> bool {
        self.owed != 0 || (self.wants_host_data() && (self.peer_credit() > 0 || !self.asked_credit))
    }

    /// The next packet for a guest receive buffer with room for `buf.len()`
    /// payload bytes: owed control packets first, then host data.
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Next {
        for (flag, op) in [
            (owed::REQUEST, op::REQUEST),
            (owed::RESPONSE, op::RESPONSE),
            (owed::CREDIT_UPDATE, op::CREDIT_UPDATE),
        ] {
            if self.owed & flag != 0 {
                self.owed &= !flag;
                return Next::Packet(self.header(op, 0, 0));
            }
        }
        if !self.wants_host_data() {
            return Next::Nothing;
        }
        let credit = self.peer_credit();
        if credit == 0 {
            if self.asked_credit {
                return Next::Nothing;
            }
            self.asked_credit = true;
            return Next::Packet(self.header(op::CREDIT_REQUEST, 0, 0));
        }
        let room = buf.len().min(credit as usize).min(MAX_PAYLOAD as usize);
        if room == 0 {
            return Next::Nothing;
        }
        loop {
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => return self.host_ended(),
                Ok(n) => {
                    // n <= MAX_PAYLOAD
                    self.rx_cnt += Wrapping(n as u32);
                    return Next::Packet(self.header(op::RW, 0, n as u32));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Next::Nothing;
                }
                Err(_) => return Next::Reset,
            }
        }
    }

    /// The host stream ended: tell the guest we send no more (and receive
    /// no more when the host program closed entirely: the guest then has
    /// `shutdown_timeout` to send its RST).
    fn host_ended(&mut self) -> Next {
        self.host_eof = true;
        self.readable = false;
        let mut flags = SHUTDOWN_SEND;
        if self.host_hup {
            flags |= SHUTDOWN_RCV;
            self.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
        }
        Next::Packet(self.header(op::SHUTDOWN, flags, 0))
    }

    /// A packet from the guest for this connection (RST is handled by the
    /// caller). `payload` is the packet's `len` bytes.
    pub fn on_packet(&mut self, h: &Header, payload: &[u8]) -> Verdict {
        self.learn_credit(h);
        match (self.state, h.op) {
            (State::LocalInit, op::RESPONSE) => {
                self.state = State::Established;
                self.deadline = None;
                let line = format!("OK {}\n", self.local_port);
                self.tx_own = line.len();
                self.tx_buf.extend(line.as_bytes());
                self.flush()
            }
            (State::Established, op::RW) => self.forward(payload),
            (State::Established, op::CREDIT_UPDATE) => Verdict::Keep,
            (State::Established, op::CREDIT_REQUEST) => {
                self.owed |= owed::CREDIT_UPDATE;
                Verdict::Keep
            }
            (State::Established, op::SHUTDOWN) => {
                self.guest_shut |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.after_guest_shutdown()
            }
            _ => Verdict::Reset,
        }
    }

    /// Guest data for the host stream: written at once where it goes,
    /// held where it does not.
    fn forward(&mut self, payload: &[u8]) -> Verdict {
        if self.guest_shut & SHUTDOWN_SEND != 0 {
            return Verdict::Reset;
        }
        let held = self.tx_buf.len() - self.tx_own;
        if held + payload.len() > BUF_ALLOC as usize {
            // The guest ignored our credit.
            return Verdict::Reset;
        }
        let mut done = 0;
        if self.tx_buf.is_empty() {
            match write_some(&mut self.stream, &mut self.writable, payload) {
                Ok(n) => done = n,
                Err(()) => return Verdict::Reset,
            }
            self.count_forwarded(done);
        }
        self.tx_buf.extend(&payload[done..]);
        self.maybe_owe_credit_update();
        Verdict::Keep
    }

    fn count_forwarded(&mut self, n: usize) {
        // n <= BUF_ALLOC + the OK line
        self.fwd_cnt += Wrapping(n as u32);
    }

    fn maybe_owe_credit_update(&mut self) {
        if (self.fwd_cnt - self.fwd_cnt_told).0 >= CREDIT_UPDATE_THRESHOLD {
            self.owed |= owed::CREDIT_UPDATE;
        }
    }

    /// Writes held bytes to the host stream (it became writable).
    pub fn flush(&mut self) -> Verdict {
        while !self.tx_buf.is_empty() && self.writable {
            let (front, _) = self.tx_buf.as_slices();
            let n = match write_some(&mut self.stream, &mut self.writable, front) {
                Ok(n) => n,
                Err(()) => return Verdict::Reset,
            };
            self.tx_buf.drain(..n);
            let own = n.min(self.tx_own);
            self.tx_own -= own;
            self.count_forwarded(n - own);
        }
        self.maybe_owe_credit_update();
        if self.tx_buf.is_empty() {
            self.after_guest_shutdown()
        } else {
            Verdict::Keep
        }
    }

    /// The host program closed its end entirely. Where the guest has
    /// said it receives no more, nobody is left to hear the end of the
    /// stream: the connection is over.
    pub fn host_hung_up(&mut self) -> Verdict {
        self.host_hup = true;
        if self.guest_shut & SHUTDOWN_RCV != 0 {
            Verdict::Reset
        } else {
            Verdict::Keep
        }
    }

    pub fn has_held_data(&self) -> bool {
        !self.tx_buf.is_empty()
    }

    /// Passes the guest's SHUTDOWN on once its data is all written: no
    /// more sending closes the host stream for writing; both directions
    /// closed ends the connection (the guest waits for our RST).
    fn after_guest_shutdown(&mut self) -> Verdict {
        if !self.tx_buf.is_empty() {
            return Verdict::Keep;
        }
        if self.guest_shut == SHUTDOWN_RCV | SHUTDOWN_SEND {
            return Verdict::Reset;
        }
        if self.guest_shut & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Verdict::Keep
    }
}

/// Writes as much of `data` as `stream` takes now; `writable` turns false
/// when it would block. An error or a closed stream is `Err`.
fn write_some(stream: &mut UnixStream, writable: &mut bool, data: &[u8]) -> Result<usize, ()> {
    let mut done = 0;
    while done < data.len() && *writable {
        match stream.write(&data[done..]) {
            Ok(0) => return Err(()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => *writable = false,
            Err(_) => return Err(()),
        }
    }
    Ok(done)
}
