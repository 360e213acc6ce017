//! The vsock device against a fake guest driving its queues and real
//! host programs on Unix sockets in a temporary directory.

use super::*;
use crate::device::{Activation, Interrupt, VirtioDevice};
use crate::test_driver::{guest_memory, Desc, TestQueue};
use crate::vsock::connection::{BUF_ALLOC, SHUTDOWN_TIMEOUT};
use crate::vsock::device::{VsockConfig, EVENT, TOKEN_HOST};
use crate::vsock::packet::{op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CID: u64 = 3;
const RX_BUF: u32 = 4096;

struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

struct Rig {
    dir: PathBuf,
    uds: PathBuf,
    mem: GuestMemoryMmap,
    rx: TestQueue,
    tx: TestQueue,
    dev: Vsock,
    /// Receive chain head to its header address.
    rx_bufs: HashMap<u16, u64>,
    next_rx_buf: u64,
    rx_seen: usize,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(name: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("vessel-vsock-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let mem = guest_memory();
    let rx = TestQueue::new(&mem, GuestAddress(0x1000), 64);
    let tx = TestQueue::new(&mem, GuestAddress(0x4000), 64);
    let ev = TestQueue::new(&mem, GuestAddress(0x7000), 64);
    let mut dev = Vsock::new(&VsockConfig {
        guest_cid: CID as u32,
        uds_path: uds.clone(),
    })
    .unwrap();
    dev.activate(Activation {
        mem: mem.clone(),
        queues: vec![rx.queue(), tx.queue(), ev.queue()],
        features: 0,
        interrupt: Arc::new(NoIrq),
        dma: Default::default(),
    })
    .unwrap();
    Rig {
        dir,
        uds,
        mem,
        rx,
        tx,
        dev,
        rx_bufs: HashMap::new(),
        next_rx_buf: 0x10_0000,
        rx_seen: 0,
    }
}

fn guest_hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        kind: TYPE_STREAM,
        op,
        buf_alloc: 1 << 20,
        ..Header::default()
    }
}

impl Rig {
    /// Offers `n` receive chains (a header buffer and a 4 KiB one each,
    /// as Linux 6.1 lays them out) and kicks the queue.
    fn give_rx(&mut self, n: usize) {
        for _ in 0..n {
            let at = self.next_rx_buf;
            self.next_rx_buf += 0x2000;
            if self.next_rx_buf > 0xf0_0000 {
                self.next_rx_buf = 0x10_0000;
            }
            let head = self
                .rx
                .add_chain(&self.mem, &[Desc::w(at, 44), Desc::w(at + 0x100, RX_BUF)]);
            self.rx_bufs.insert(head, at);
        }
        self.dev.queue_notify(RX).unwrap();
    }

    /// Packets the device put in the receive queue since the last call.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.rx.used(&self.mem);
        let new = used[self.rx_seen..].to_vec();
        self.rx_seen = used.len();
        new.into_iter()
            .map(|(id, len)| {
                let at = self.rx_bufs[&(id as u16)];
                let mut raw = [0u8; HDR_LEN];
                self.mem.read_slice(&mut raw, GuestAddress(at)).unwrap();
                let h = Header::from_bytes(&raw);
                assert_eq!(len, HDR_LEN as u32 + h.len, "used length");
                let mut data = vec![0u8; h.len as usize];
                self.mem
                    .read_slice(&mut data, GuestAddress(at + 0x100))
                    .unwrap();
                (h, data)
            })
            .collect()
    }

    /// Sends one packet (header and payload in two buffers).
    fn send(&mut self, mut h: Header, payload: &[u8]) -> Result<(), QueueError> {
        if h.len == 0 {
            h.len = payload.len() as u32;
        }
        self.mem
            .write_slice(&h.to_bytes(), GuestAddress(0x8000))
            .unwrap();
        self.mem.write_slice(payload, GuestAddress(0x9000)).unwrap();
        let mut descs = vec![Desc::r(0x8000, HDR_LEN as u32)];
        if !payload.is_empty() {
            descs.push(Desc::r(0x9000, payload.len() as u32));
        }
        self.tx.add_chain(&self.mem, &descs);
        self.dev.queue_notify(TX)
    }

    fn host_event(&mut self) {
        // Let the kernel pass the bytes on before the device looks.
        std::thread::sleep(Duration::from_millis(20));
        self.dev.handle_event(TOKEN_HOST).unwrap();
    }

    /// A host program connected through `CONNECT port` up to the guest's
    /// RESPONSE: its stream and the local port the device picked.
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut s = UnixStream::connect(&self.uds).unwrap();
        s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        self.host_event();
        self.give_rx(1);
        let got = self.received();
        assert_eq!(got.len(), 1, "one REQUEST");
        let req = got[0].0;
        assert_eq!(
            (req.op, req.src_cid, req.dst_cid, req.dst_port),
            (op::REQUEST, HOST_CID, CID, port)
        );
        assert!(req.src_port >= 1 << 30, "an ephemeral port");
        assert_eq!(req.buf_alloc, BUF_ALLOC);
        self.send(guest_hdr(op::RESPONSE, port, req.src_port), &[])
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while b[0] != b'\n' {
            s.read_exact(&mut b).unwrap();
            line.push(b[0]);
        }
        assert_eq!(line, format!("OK {}\n", req.src_port).into_bytes());
        (s, req.src_port)
    }
}

#[test]
fn host_connect_reaches_the_guest_and_streams_both_ways() {
    let mut r = rig("connect");
    let (mut s, local) = r.host_connect(52);
    assert_eq!(r.dev.connections(), 1);

    s.write_all(b"hello").unwrap();
    r.host_event();
    r.give_rx(1);
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.op, got[0].0.src_port, got[0].0.dst_port),
        (op::RW, local, 52)
    );
    assert_eq!(got[0].1, b"hello");

    r.send(guest_hdr(op::RW, 52, local), b"world").unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"world");

    // The guest resets: the host program sees the end of its stream.
    r.send(guest_hdr(op::RST, 52, local), &[]).unwrap();
    assert_eq!(r.dev.connections(), 0);
    assert_eq!(s.read(&mut b).unwrap(), 0);
}

#[test]
fn guest_connects_to_a_host_listener_or_is_refused() {
    let mut r = rig("guest");
    r.give_rx(4);
    // Nothing listens on port 1234: RST.
    r.send(guest_hdr(op::REQUEST, 5000, 1234), &[]).unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.op, got[0].0.dst_port, got[0].0.src_port),
        (op::RST, 5000, 1234)
    );

    let mut path = r.uds.clone().into_os_string();
    path.push("_1234");
    let listener = UnixListener::bind(&path).unwrap();
    r.send(guest_hdr(op::REQUEST, 5000, 1234), &[]).unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, op::RESPONSE);
    assert_eq!(got[0].0.buf_alloc, BUF_ALLOC);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    r.send(guest_hdr(op::RW, 5000, 1234), b"ping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");

    // The guest stops sending: the host reads the end; then it closes
    // both ways and gets its RST.
    let mut shut = guest_hdr(op::SHUTDOWN, 5000, 1234);
    shut.flags = SHUTDOWN_SEND;
    r.send(shut, &[]).unwrap();
    assert_eq!(s.read(&mut b).unwrap(), 0, "end of stream");
    shut.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    r.send(shut, &[]).unwrap();
    r.give_rx(1);
    let got = r.received();
    assert_eq!(got.last().map(|p| p.0.op), Some(op::RST));
    assert_eq!(r.dev.connections(), 0);
}

#[test]
fn host_data_waits_for_the_guests_credit() {
    let mut r = rig("credit");
    let (mut s, local) = r.host_connect(7);
    // The guest has room for 100 bytes only.
    let mut small = guest_hdr(op::CREDIT_UPDATE, 7, local);
    small.buf_alloc = 100;
    r.send(small, &[]).unwrap();
    s.write_all(&[0xab; 1000]).unwrap();
    r.host_event();
    r.give_rx(8);
    let got = r.received();
    let data: usize = got
        .iter()
        .filter(|p| p.0.op == op::RW)
        .map(|p| p.1.len())
        .sum();
    assert_eq!(data, 100, "no more than the credit");
    assert_eq!(got.last().map(|p| p.0.op), Some(op::CREDIT_REQUEST));
    // Nothing more while the credit stays used up.
    r.host_event();
    assert!(r.received().is_empty());
    // The guest passed the 100 bytes on: 100 more.
    small.fwd_cnt = 100;
    r.send(small, &[]).unwrap();
    let got = r.received();
    let data: usize = got.iter().map(|p| p.1.len()).sum();
    assert_eq!(data, 100);
}

#[test]
fn the_host_closing_shuts_the_guest_side_down() {
    let mut r = rig("close");
    let (s, local) = r.host_connect(9);
    drop(s);
    r.host_event();
    r.give_rx(2);
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, op::SHUTDOWN);
    assert_eq!(got[0].0.flags, SHUTDOWN_SEND | SHUTDOWN_RCV);
    assert_eq!(got[0].0.src_port, local);
    // The guest never sends its RST: ours follows after the timeout.
    std::thread::sleep(SHUTDOWN_TIMEOUT + Duration::from_millis(600));
    r.host_event();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.op, got[0].0.src_port), (op::RST, local));
    assert_eq!(r.dev.connections(), 0);
}

#[test]
fn unanswered_requests_and_silent_programs_time_out() {
    let mut r = rig("timeout");
    r.dev.host.set_connect_timeout(Duration::from_millis(200));
    let mut asked = UnixStream::connect(&r.uds).unwrap();
    asked.write_all(b"CONNECT 77\n").unwrap();
    let mut silent = UnixStream::connect(&r.uds).unwrap();
    silent.write_all(b"CONN").unwrap();
    r.host_event();
    r.give_rx(4);
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.op, got[0].0.dst_port), (op::REQUEST, 77));
    std::thread::sleep(Duration::from_millis(1200));
    r.host_event();
    let got = r.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.op, got[0].0.dst_port), (op::RST, 77));
    assert_eq!(r.dev.connections(), 0);
    let mut b = [0u8; 1];
    for s in [&mut asked, &mut silent] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut b).unwrap(), 0, "closed");
    }
}

#[test]
fn the_host_closing_after_the_guest_stopped_receiving_ends_it() {
    let mut r = rig("rcv-closed");
    let (s, local) = r.host_connect(10);
    let mut shut = guest_hdr(op::SHUTDOWN, 10, local);
    shut.flags = SHUTDOWN_RCV;
    r.send(shut, &[]).unwrap();
    drop(s);
    r.host_event();
    r.give_rx(2);
    let got = r.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.op, op::RST);
    assert_eq!(r.dev.connections(), 0);
}

#[test]
fn a_guest_that_ignores_credit_is_reset() {
    let mut r = rig("overrun");
    let (s, local) = r.host_connect(11);
    // The host program never reads: the socket buffer fills, then ours.
    let chunk = vec![0x5a; MAX_PAYLOAD as usize];
    let mut sent = 0usize;
    while r.dev.connections() == 1 && sent < 64 << 20 {
        r.send(guest_hdr(op::RW, 11, local), &chunk).unwrap();
        sent += chunk.len();
    }
    assert_eq!(r.dev.connections(), 0, "reset after {sent} bytes");
    assert!(sent > BUF_ALLOC as usize);
    r.give_rx(4);
    let got = r.received();
    assert!(
        got.iter().any(|p| p.0.op == op::RST && p.0.dst_port == 11),
        "{got:?}"
    );
    drop(s);
}

#[test]
fn forwarded_data_is_advertised_to_the_guest() {
    let mut r = rig("fwd");
    let (mut s, local) = r.host_connect(12);
    let chunk = vec![1u8; 32 << 10];
    for _ in 0..4 {
        r.send(guest_hdr(op::RW, 12, local), &chunk).unwrap();
    }
    let mut sink = vec![0u8; 128 << 10];
    s.read_exact(&mut sink).unwrap();
    r.give_rx(2);
    let got = r.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(got[0].0.fwd_cnt, 128 << 10);
}

#[test]
fn hostile_packets_get_rst_or_are_dropped() {
    let mut r = rig("hostile");
    r.give_rx(8);
    // Another guest's cid, or not for the host: dropped silently.
    let mut h = guest_hdr(op::REQUEST, 1, 2);
    h.src_cid = 4;
    r.send(h, &[]).unwrap();
    let mut h = guest_hdr(op::REQUEST, 1, 2);
    h.dst_cid = 7;
    r.send(h, &[]).unwrap();
    assert!(r.received().is_empty());
    // Unknown op, wrong type, packets for no connection, a length the
    // chain does not hold: RST each.
    r.send(guest_hdr(99, 1, 2), &[]).unwrap();
    let mut h = guest_hdr(op::REQUEST, 1, 2);
    h.kind = 2;
    r.send(h, &[]).unwrap();
    r.send(guest_hdr(op::RW, 1, 2), b"x").unwrap();
    let mut h = guest_hdr(op::RW, 1, 2);
    h.len = 5000;
    r.send(h, b"short").unwrap();
    let mut h = guest_hdr(op::RW, 1, 2);
    h.len = u32::MAX;
    r.send(h, b"short").unwrap();
    let got = r.received();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|p| p.0.op == op::RST && p.0.dst_port == 1));
    // A RST for nothing gets no answer.
    r.send(guest_hdr(op::RST, 1, 2), &[]).unwrap();
    assert!(r.received().is_empty());
    // A chain too short for a header breaks the queue protocol.
    r.tx.add_chain(&r.mem, &[Desc::r(0x8000, 10)]);
    assert!(r.dev.queue_notify(TX).is_err());
    // So does a receive chain with no room for one.
    let mut r = rig("hostile-rx");
    r.send(guest_hdr(op::RW, 1, 2), b"x").unwrap();
    r.rx.add_chain(&r.mem, &[Desc::w(0x10_0000, 8)]);
    assert!(r.dev.queue_notify(RX).is_err());
    assert!(r.dev.queue_notify(EVENT).is_ok());
    assert!(r.dev.queue_notify(3).is_err());
}

#[test]
fn bad_connect_lines_are_dropped_and_reset_closes_everything() {
    let mut r = rig("lines");
    let mut bad = UnixStream::connect(&r.uds).unwrap();
    bad.write_all(b"CONNECT x\n").unwrap();
    let mut long = UnixStream::connect(&r.uds).unwrap();
    long.write_all(&[b'7'; 100]).unwrap();
    r.host_event();
    let mut b = [0u8; 1];
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for s in [&mut bad, &mut long] {
        // Closed with unread bytes: a reset rather than an end.
        match s.read(&mut b) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    assert_eq!(r.dev.connections(), 0);

    let (mut s, _) = r.host_connect(5);
    assert_eq!(r.dev.connections(), 1);
    r.dev.reset();
    assert_eq!(r.dev.connections(), 0);
    assert_eq!(s.read(&mut b).unwrap(), 0, "closed on reset");
}

#[test]
fn the_socket_path_must_be_free_and_goes_with_the_device() {
    let r = rig("path");
    let uds = r.uds.clone();
    let again = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    assert!(matches!(again, Err(crate::vsock::VsockError::Host(_))));
    let cid = Vsock::new(&VsockConfig {
        guest_cid: 2,
        uds_path: r.dir.join("other"),
    });
    assert!(matches!(cid, Err(crate::vsock::VsockError::ReservedCid(2))));
    drop(r);
    assert!(!uds.exists());
}

#[test]
fn busy_connections_take_turns() {
    let mut r = rig("turns");
    let (mut a, pa) = r.host_connect(21);
    let (mut b, pb) = r.host_connect(22);
    a.write_all(&[1u8; 64 << 10]).unwrap();
    b.write_all(&[2u8; 64 << 10]).unwrap();
    r.host_event();
    r.give_rx(8);
    let got = r.received();
    let ports: Vec<u32> = got.iter().map(|p| p.0.src_port).collect();
    assert_eq!(ports.len(), 8);
    // Neither stream starves the other: they alternate.
    for pair in ports.chunks(2) {
        assert!(pair.contains(&pa) && pair.contains(&pb), "{ports:?}");
    }
    assert!(got.iter().all(|p| p.1.len() == RX_BUF as usize));
}
