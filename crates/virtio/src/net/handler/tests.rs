//! The network device against an in-memory backend.

use super::*;
use crate::device::{Activation, Interrupt, VirtioDevice};
use crate::net::device::{DEFAULT_MAC, F_MRG_RXBUF};
use crate::net::NetBackend;
use crate::net::{TOKEN_RX, TOKEN_RX_RATE_LIMIT, TOKEN_TX_RATE_LIMIT};
use crate::test_driver::{guest_memory, Desc, TestQueue};
use rate_limiter::{
    RateLimiter, RateLimiterConfig, RateLimiterUpdate, SharedRateLimiter, TokenBucketConfig,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Default)]
struct Wire {
    incoming: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    offload: u32,
}

struct Fake(Arc<Mutex<Wire>>);

impl NetBackend for Fake {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.lock().unwrap().incoming.pop_front() {
            Some(f) => {
                buf[..f.len()].copy_from_slice(&f);
                Ok(f.len())
            }
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().sent.push(frame.to_vec());
        Ok(frame.len())
    }
    fn set_offload(&mut self, f: u32) -> std::io::Result<()> {
        self.0.lock().unwrap().offload = f;
        Ok(())
    }
    fn fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

struct Rig {
    mem: GuestMemoryMmap,
    rx: TestQueue,
    tx: TestQueue,
    net: Net,
    wire: Arc<Mutex<Wire>>,
}

fn rig(features: u64) -> Rig {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let net = Net::with_backend(Box::new(Fake(wire.clone())), DEFAULT_MAC);
    rig_of(net, wire, features)
}

fn rig_of(mut net: Net, wire: Arc<Mutex<Wire>>, features: u64) -> Rig {
    let mem = guest_memory();
    let rx = TestQueue::new(&mem, GuestAddress(0x1000), 16);
    let tx = TestQueue::new(&mem, GuestAddress(0x4000), 16);
    net.activate(Activation {
        mem: mem.clone(),
        queues: vec![rx.queue(), tx.queue()],
        features,
        interrupt: Arc::new(NoIrq),
        dma: Default::default(),
    })
    .unwrap();
    Rig {
        mem,
        rx,
        tx,
        net,
        wire,
    }
}

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn transmit_gathers_header_and_payload() {
    let mut r = rig(0);
    let f = frame(1000);
    r.mem.write_slice(&f[..12], GuestAddress(0x10000)).unwrap();
    r.mem.write_slice(&f[12..], GuestAddress(0x20000)).unwrap();
    r.tx.add_chain(&r.mem, &[Desc::r(0x10000, 12), Desc::r(0x20000, 988)]);
    r.net.queue_notify(TX).unwrap();
    assert_eq!(r.wire.lock().unwrap().sent, vec![f]);
    assert_eq!(r.tx.used(&r.mem), vec![(0, 0)]);
    // A chain with nothing to send is returned, not sent.
    r.tx.add_chain(&r.mem, &[Desc::w(0x10000, 64)]);
    r.net.queue_notify(TX).unwrap();
    assert_eq!(r.wire.lock().unwrap().sent.len(), 1);
    assert_eq!(r.tx.used(&r.mem).len(), 2);
    assert_eq!(r.net.metrics.tx_dropped.load(Ordering::Relaxed), 1);
    // A broken chain is a protocol error.
    r.tx.add_chain(&r.mem, &[Desc::r(u64::MAX - 8, 64)]);
    assert!(r.net.queue_notify(TX).is_err());
}

#[test]
fn mergeable_receive_spans_buffers_and_waits_for_more() {
    let mut r = rig(F_MRG_RXBUF | crate::net::device::F_GUEST_CSUM);
    assert_eq!(r.wire.lock().unwrap().offload, crate::net::tap::TUN_F_CSUM);
    let f = frame(5000);
    r.wire.lock().unwrap().incoming.push_back(f.clone());
    // Two 2 KiB buffers are not enough: the frame waits.
    r.rx.add_chain(&r.mem, &[Desc::w(0x10000, 2048)]);
    r.rx.add_chain(&r.mem, &[Desc::w(0x11000, 2048)]);
    r.net.handle_event(crate::net::device::TOKEN_RX).unwrap();
    assert!(r.rx.used(&r.mem).is_empty());
    r.rx.add_chain(&r.mem, &[Desc::w(0x12000, 2048)]);
    r.net.queue_notify(RX).unwrap();
    assert_eq!(r.rx.used(&r.mem), vec![(0, 2048), (1, 2048), (2, 904)]);
    let mut got = vec![0u8; 5000];
    r.mem
        .read_slice(&mut got[..2048], GuestAddress(0x10000))
        .unwrap();
    r.mem
        .read_slice(&mut got[2048..4096], GuestAddress(0x11000))
        .unwrap();
    r.mem
        .read_slice(&mut got[4096..], GuestAddress(0x12000))
        .unwrap();
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(got[12..], f[12..]);
}

#[test]
fn without_mergeable_buffers_a_frame_must_fit_one_chain() {
    let mut r = rig(0);
    r.wire.lock().unwrap().incoming.push_back(frame(3000));
    r.wire.lock().unwrap().incoming.push_back(frame(100));
    r.rx.add_chain(&r.mem, &[Desc::w(0x10000, 1526)]);
    r.net.queue_notify(RX).unwrap();
    // The big frame is dropped, the small one uses the buffer.
    assert_eq!(r.rx.used(&r.mem), vec![(0, 100)]);
    assert_eq!(r.net.metrics.rx_dropped.load(Ordering::Relaxed), 1);
    // A receive chain with readable buffers only is handed back unused.
    r.rx.add_chain(&r.mem, &[Desc::r(0x10000, 1526)]);
    r.wire.lock().unwrap().incoming.push_back(frame(100));
    r.net.queue_notify(RX).unwrap();
    assert_eq!(r.rx.used(&r.mem).last(), Some(&(1, 0)));
}

#[test]
fn hostile_buffers_are_dropped_or_wait_never_crash() {
    let mut r = rig(F_MRG_RXBUF);
    // A transmit chain longer than any frame is dropped and returned.
    r.tx.add_chain(
        &r.mem,
        &[Desc::r(0x10000, 12), Desc::r(0x20000, MAX_FRAME as u32)],
    );
    r.net.queue_notify(TX).unwrap();
    assert!(r.wire.lock().unwrap().sent.is_empty());
    assert_eq!(r.tx.used(&r.mem), vec![(0, 0)]);
    // Receive buffers too small for the header: the frame still spreads
    // over them and num_buffers goes where the first one has room.
    let f = frame(40);
    r.wire.lock().unwrap().incoming.push_back(f.clone());
    for i in 0..5 {
        r.rx.add_chain(&r.mem, &[Desc::w(0x30000 + i * 0x100, 8)]);
    }
    r.net.queue_notify(RX).unwrap();
    assert_eq!(
        r.rx.used(&r.mem),
        vec![(0, 8), (1, 8), (2, 8), (3, 8), (4, 8)]
    );
    // A frame larger than the whole ring can hold waits for buffers
    // instead of looping or being cut.
    r.wire.lock().unwrap().incoming.push_back(frame(60000));
    for i in 0..11 {
        r.rx.add_chain(&r.mem, &[Desc::w(0x40000 + i * 0x1000, 16)]);
    }
    r.net.queue_notify(RX).unwrap();
    assert_eq!(r.rx.used(&r.mem).len(), 5, "nothing more used yet");
    assert_eq!(r.net.metrics.rx_packets.load(Ordering::Relaxed), 1);
}

/// One frame per 100 ms each way.
fn one_frame_per_100ms() -> SharedRateLimiter {
    let cfg = RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 100,
        }),
    };
    SharedRateLimiter::new(RateLimiter::new(&cfg).unwrap())
}

/// Whether `fd` becomes readable within `ms`.
fn readable(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

fn limited_rig() -> Rig {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let net = Net::with_backend(Box::new(Fake(wire.clone())), DEFAULT_MAC)
        .with_rate_limiters(one_frame_per_100ms(), one_frame_per_100ms());
    rig_of(net, wire, 0)
}

fn token_fd(r: &Rig, token: u32) -> std::os::fd::RawFd {
    r.net
        .event_fds()
        .into_iter()
        .find_map(|(fd, t)| (t == token).then_some(fd))
        .expect("the limiter's timer is watched")
}

#[test]
fn transmit_waits_for_its_limiter_timer() {
    let mut r = limited_rig();
    r.mem
        .write_slice(&frame(100), GuestAddress(0x10000))
        .unwrap();
    r.tx.add_chain(&r.mem, &[Desc::r(0x10000, 100)]);
    r.tx.add_chain(&r.mem, &[Desc::r(0x10000, 100)]);
    r.net.queue_notify(TX).unwrap();
    assert_eq!(r.wire.lock().unwrap().sent.len(), 1, "one frame per 100 ms");
    assert_eq!(
        r.tx.used(&r.mem).len(),
        1,
        "the second chain stays on the ring"
    );
    assert_eq!(
        r.net
            .metrics
            .tx_rate_limiter_throttled
            .load(Ordering::Relaxed),
        1
    );
    assert!(readable(token_fd(&r, TOKEN_TX_RATE_LIMIT), 2000));
    r.net.handle_event(TOKEN_TX_RATE_LIMIT).unwrap();
    assert_eq!(r.wire.lock().unwrap().sent.len(), 2);
    assert_eq!(r.tx.used(&r.mem).len(), 2);
}

#[test]
fn receive_waits_for_its_limiter_timer_and_handle_updates_lift_it() {
    let mut r = limited_rig();
    let handle = r.net.handle();
    for _ in 0..3 {
        r.wire.lock().unwrap().incoming.push_back(frame(200));
    }
    for i in 0..3 {
        r.rx.add_chain(&r.mem, &[Desc::w(0x10000 + i * 0x1000, 2048)]);
    }
    r.net.handle_event(TOKEN_RX).unwrap();
    assert_eq!(r.rx.used(&r.mem).len(), 1, "one frame per 100 ms");
    assert!(readable(token_fd(&r, TOKEN_RX_RATE_LIMIT), 2000));
    r.net.handle_event(TOKEN_RX_RATE_LIMIT).unwrap();
    assert_eq!(r.rx.used(&r.mem).len(), 2, "the waiting frame, once");
    // Lift the receive limit; transmit keeps its own.
    let off = RateLimiterUpdate::replace(&RateLimiterConfig::default());
    handle
        .update_rate_limiters(&off, &RateLimiterUpdate::default())
        .unwrap();
    assert!(readable(token_fd(&r, TOKEN_RX_RATE_LIMIT), 50), "woken");
    r.net.handle_event(TOKEN_RX_RATE_LIMIT).unwrap();
    assert_eq!(r.rx.used(&r.mem).len(), 3);
    let (rx, tx) = handle.rate_limiter_configs();
    assert!(rx.is_unlimited());
    assert!(!tx.is_unlimited());
    assert_eq!(r.net.metrics.rx_packets.load(Ordering::Relaxed), 3);
}
