//! The Async (io_uring) engine driven by a test driver: round trips and
//! flushes through the ring, an I/O error, a disk that does not answer
//! (a pipe) while other requests are served, a full ring, the rate
//! limiter, and reset and drop with I/O in flight.

use super::tests::{image, pattern, readable, rig_of, NoIrq, Rig, TempImage, DATA, HDR, STATUS};
use super::*;
use crate::block::device::{IoEngine, TOKEN_IO_DONE};
use crate::block::request::{T_FLUSH, T_GET_ID, T_IN, T_OUT};
use crate::device::VirtioDevice;
use crate::test_driver::Desc;
use rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use vm_memory::GuestAddress;

fn async_rig(file: File, sectors: u64, readonly: bool, depth: u16) -> Rig {
    let blk = Block::from_file(file, sectors, readonly, Some("vessel-async"))
        .with_uring_depth(IoEngine::Async, depth)
        .unwrap();
    assert_eq!(blk.io_engine(), IoEngine::Async);
    rig_of(blk, Arc::new(NoIrq))
}

fn open_rw(img: &TempImage) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.0)
        .unwrap()
}

/// A pipe: the read end is the "disk", the write end feeds it.
fn pipe() -> (File, File) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

impl Rig {
    fn in_flight(&self) -> usize {
        self.blk.uring.as_ref().map_or(0, |u| u.in_flight())
    }

    fn completion_fd(&self) -> RawFd {
        let fds = self.blk.event_fds();
        let (fd, _) = fds.iter().find(|(_, t)| *t == TOKEN_IO_DONE).unwrap();
        *fd
    }

    /// Publishes a request (header at `hdr`, status at `status`) and kicks.
    fn kick(&mut self, kind: u32, sector: u64, data: Option<Desc>, hdr: u64, status: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.fill(hdr, &h);
        self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        let mut descs = vec![Desc::r(hdr, 16)];
        descs.extend(data);
        descs.push(Desc::w(status, 1));
        self.tq.add_chain(&self.mem, &descs);
        self.blk.queue_notify(0).unwrap();
    }

    /// Waits for a completion signal and serves it.
    fn serve_completion(&mut self) {
        assert!(readable(self.completion_fd(), 5000), "no completion");
        self.blk.handle_event(TOKEN_IO_DONE).unwrap();
    }

    /// Serves completions until nothing is in flight.
    fn settle(&mut self) {
        while self.in_flight() > 0 {
            self.serve_completion();
        }
    }

    /// One request through the ring: (status, used len).
    fn run(&mut self, kind: u32, sector: u64, data: Option<Desc>) -> (u8, u32) {
        let before = self.tq.used_idx(&self.mem);
        self.kick(kind, sector, data, HDR, STATUS);
        self.settle();
        assert_eq!(self.tq.used_idx(&self.mem), before.wrapping_add(1));
        let used = *self.tq.used(&self.mem).last().unwrap();
        (self.status(STATUS), used.1)
    }

    fn status(&self, at: u64) -> u8 {
        self.mem.read_obj::<u8>(GuestAddress(at)).unwrap()
    }
}

#[test]
fn write_flush_read_round_trip_through_the_ring() {
    let img = image("async-rw", &vec![0u8; 64 << 10]);
    let mut r = async_rig(open_rw(&img), 128, false, 16);
    let data = pattern(8192, 11);
    r.fill(DATA, &data);
    // Two buffers, so the write is a two-iovec writev.
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&T_OUT.to_le_bytes());
    h[8..].copy_from_slice(&16u64.to_le_bytes());
    r.fill(HDR, &h);
    let descs = [
        Desc::r(HDR, 16),
        Desc::r(DATA, 4096),
        Desc::r(DATA + 4096, 4096),
        Desc::w(STATUS, 1),
    ];
    r.tq.add_chain(&r.mem, &descs);
    r.blk.queue_notify(0).unwrap();
    assert_eq!(r.in_flight(), 1);
    r.settle();
    assert_eq!(r.status(STATUS), S_OK);
    assert_eq!(&std::fs::read(&img.0).unwrap()[8192..16384], &data[..]);
    assert_eq!(r.run(T_FLUSH, 0, None), (S_OK, 1));
    r.fill(DATA, &[0u8; 8192]);
    assert_eq!(r.run(T_IN, 16, Some(Desc::w(DATA, 8192))), (S_OK, 8193));
    assert_eq!(r.fetch(DATA, 8192), data);
    let m = &r.blk.metrics;
    assert_eq!(m.writes.load(Ordering::Relaxed), 1);
    assert_eq!(m.reads.load(Ordering::Relaxed), 1);
    assert_eq!(m.read_bytes.load(Ordering::Relaxed), 8192);
    assert_eq!(m.flushes.load(Ordering::Relaxed), 1);
    // Checks before the ring still answer at once.
    assert_eq!(r.run(T_IN, 127, Some(Desc::w(DATA, 1024))).0, S_IOERR);
    assert_eq!(r.run(T_IN, 0, Some(Desc::w(DATA, 100))).0, S_IOERR);
    assert_eq!(r.run(T_GET_ID, 0, Some(Desc::w(DATA, 20))), (S_OK, 21));
    assert_eq!(&r.fetch(DATA, 12), b"vessel-async");
}

/// The kernel's error (a read on a write-only descriptor: EBADF) is the
/// request's I/O error status; the queue goes on.
#[test]
fn io_error_from_the_ring_is_ioerr() {
    let img = image("async-err", &pattern(8192, 4));
    let wronly = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.0)
        .unwrap();
    let mut r = async_rig(wronly, 16, false, 16);
    assert_eq!(r.run(T_IN, 0, Some(Desc::w(DATA, 4096))), (S_IOERR, 1));
    assert_eq!(r.blk.metrics.errors.load(Ordering::Relaxed), 1);
    assert_eq!(r.blk.metrics.reads.load(Ordering::Relaxed), 0);
    r.fill(DATA, &[0x5a; 512]);
    assert_eq!(r.run(T_OUT, 1, Some(Desc::r(DATA, 512))), (S_OK, 1));
    assert!(std::fs::read(&img.0).unwrap()[512..1024]
        .iter()
        .all(|&b| b == 0x5a));
}

/// A read the disk does not answer yet (an empty pipe) stays in flight
/// while a later request is served; it completes when data arrives.
#[test]
fn slow_disk_does_not_stall_the_queue() {
    let (disk, mut feed) = pipe();
    let mut r = async_rig(disk, 8, true, 16);
    r.kick(T_IN, 0, Some(Desc::w(DATA, 4096)), HDR, STATUS);
    assert_eq!(r.in_flight(), 1);
    r.kick(
        T_GET_ID,
        0,
        Some(Desc::w(DATA + 0x2000, 20)),
        HDR + 0x100,
        STATUS + 1,
    );
    assert_eq!(r.tq.used_idx(&r.mem), 1, "GET_ID answered past the read");
    assert_eq!(r.status(STATUS + 1), S_OK);
    assert_eq!(r.status(STATUS), 0xff, "the read is not answered yet");
    let data = pattern(4096, 9);
    feed.write_all(&data).unwrap();
    r.serve_completion();
    assert_eq!(r.tq.used_idx(&r.mem), 2);
    assert_eq!(r.status(STATUS), S_OK);
    assert_eq!(r.tq.used(&r.mem)[1].1, 4097);
    assert_eq!(r.fetch(DATA, 4096), data);
}

/// With two slots, a third request stays on the ring until one
/// completes.
#[test]
fn full_ring_leaves_requests_on_the_queue() {
    let (disk, mut feed) = pipe();
    let mut r = async_rig(disk, 64, true, 2);
    for i in 0..3u64 {
        let data = Desc::w(DATA + i * 0x1000, 4096);
        r.kick(T_IN, i * 8, Some(data), HDR + i * 0x100, STATUS + i);
    }
    assert_eq!(r.in_flight(), 2);
    assert_eq!(
        queue::pending(&r.blk.active.as_ref().unwrap().queue, &r.mem),
        1
    );
    let mut sent = Vec::new();
    for i in 0..3u8 {
        let chunk = pattern(4096, 20 + i);
        feed.write_all(&chunk).unwrap();
        sent.push(chunk);
        r.serve_completion();
        assert_eq!(r.tq.used_idx(&r.mem), u16::from(i) + 1);
    }
    assert_eq!(r.in_flight(), 0);
    let mut got: Vec<Vec<u8>> = (0..3).map(|i| r.fetch(DATA + i * 0x1000, 4096)).collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "each read got one chunk");
    assert!((0..3).all(|i| r.status(STATUS + i) == S_OK));
}

/// Reset with a read in flight returns, answers nothing and leaves the
/// guest's buffers alone, even when data arrives afterwards.
#[test]
fn reset_with_io_in_flight_drops_it() {
    let (disk, mut feed) = pipe();
    let mut r = async_rig(disk, 8, true, 16);
    r.fill(DATA, &[0x11; 4096]);
    r.kick(T_IN, 0, Some(Desc::w(DATA, 4096)), HDR, STATUS);
    assert_eq!(r.in_flight(), 1);
    r.blk.reset();
    assert_eq!(r.in_flight(), 0);
    let _ = feed.write_all(&[0x22; 4096]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    r.blk.handle_event(TOKEN_IO_DONE).unwrap();
    assert_eq!(r.tq.used_idx(&r.mem), 0);
    assert_eq!(r.status(STATUS), 0xff);
    assert_eq!(r.fetch(DATA, 4096), vec![0x11; 4096]);
}

/// Dropping the device with a read in flight neither hangs nor leaves
/// the kernel writing into freed memory.
#[test]
fn drop_with_io_in_flight_returns() {
    let (disk, _feed) = pipe();
    let mut r = async_rig(disk, 8, true, 16);
    r.kick(T_IN, 0, Some(Desc::w(DATA, 4096)), HDR, STATUS);
    assert_eq!(r.in_flight(), 1);
    drop(r);
}

/// One operation per 100 ms: the second read waits on the ring for the
/// limiter's timer before it is submitted.
#[test]
fn rate_limiter_throttles_before_submitting() {
    let img = image("async-limit", &pattern(16384, 6));
    let one_op = RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 100,
        }),
    };
    let mut cfg = crate::block::BlockConfig::new(&img.0);
    cfg.rate_limiter = Some(one_op);
    cfg.io_engine = IoEngine::Async;
    let mut r = rig_of(Block::new(&cfg).unwrap(), Arc::new(NoIrq));
    r.kick(T_IN, 0, Some(Desc::w(DATA, 4096)), HDR, STATUS);
    r.kick(
        T_IN,
        8,
        Some(Desc::w(DATA + 0x1000, 4096)),
        HDR + 0x100,
        STATUS + 1,
    );
    r.settle();
    assert_eq!(r.tq.used_idx(&r.mem), 1);
    let q = &r.blk.active.as_ref().unwrap().queue;
    assert_eq!(queue::pending(q, &r.mem), 1, "the second waits on the ring");
    let timer = r.blk.event_fds()[0];
    assert_eq!(timer.1, crate::block::TOKEN_RATE_LIMIT);
    assert!(readable(timer.0, 2000), "the timer fires");
    r.blk.handle_event(timer.1).unwrap();
    r.settle();
    assert_eq!(r.tq.used_idx(&r.mem), 2);
    assert_eq!(r.fetch(DATA + 0x1000, 4096), pattern(16384, 6)[4096..8192]);
}
