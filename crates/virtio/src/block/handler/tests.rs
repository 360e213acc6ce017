//! The block device driven by a test driver over a temporary image.

use super::*;
use crate::block::device::{F_FLUSH, TOKEN_RATE_LIMIT};
use crate::block::request::{T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES};
use crate::device::{Activation, Interrupt, VirtioDevice};
use crate::test_driver::{guest_memory, Desc, TestQueue};
use rate_limiter::{RateLimiterConfig, RateLimiterUpdate, TokenBucketConfig};
use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use vm_memory::GuestAddress;

pub(super) struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

pub(super) struct TempImage(pub(super) PathBuf);
impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) fn image(name: &str, bytes: &[u8]) -> TempImage {
    let p = std::env::temp_dir().join(format!("vessel-blk-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    TempImage(p)
}

pub(super) struct Rig {
    pub(super) mem: GuestMemoryMmap,
    pub(super) tq: TestQueue,
    pub(super) blk: Block,
}

fn rig(img: &TempImage, readonly: bool) -> Rig {
    let file = if readonly {
        File::open(&img.0).unwrap()
    } else {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img.0)
            .unwrap()
    };
    let sectors = file.metadata().unwrap().len() / 512;
    let blk = Block::from_file(file, sectors, readonly, Some("vessel-disk-0"));
    rig_of(blk, Arc::new(NoIrq))
}

/// `blk` activated with one 16-entry queue.
pub(super) fn rig_of(mut blk: Block, irq: Arc<dyn Interrupt>) -> Rig {
    let mem = guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
    blk.activate(Activation {
        mem: mem.clone(),
        queues: vec![tq.queue()],
        features: 0,
        interrupt: irq,
        dma: Default::default(),
    })
    .unwrap();
    Rig { mem, tq, blk }
}

pub(super) const HDR: u64 = 0x10000;
pub(super) const DATA: u64 = 0x20000;
pub(super) const STATUS: u64 = 0x30000;

impl Rig {
    /// Submits one request; returns (status, used len).
    fn submit(&mut self, kind: u32, sector: u64, data: Option<Desc>) -> (u8, u32) {
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut descs = vec![Desc::r(HDR, 16)];
        descs.extend(data);
        descs.push(Desc::w(STATUS, 1));
        self.tq.add_chain(&self.mem, &descs);
        self.blk.queue_notify(0).unwrap();
        let used = *self.tq.used(&self.mem).last().unwrap();
        (
            self.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            used.1,
        )
    }
    pub(super) fn fill(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }
    pub(super) fn fetch(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_then_read_round_trips_through_the_file() {
    let img = image("rw", &vec![0u8; 64 << 10]);
    let mut r = rig(&img, false);
    let data = pattern(4096, 7);
    r.fill(DATA, &data);
    assert_eq!(r.submit(T_OUT, 8, Some(Desc::r(DATA, 4096))), (S_OK, 1));
    assert_eq!(&std::fs::read(&img.0).unwrap()[4096..8192], &data[..]);
    r.fill(DATA, &[0u8; 4096]);
    assert_eq!(r.submit(T_IN, 8, Some(Desc::w(DATA, 4096))), (S_OK, 4097));
    assert_eq!(r.fetch(DATA, 4096), data);
    assert_eq!(r.submit(T_FLUSH, 0, None), (S_OK, 1));
    assert_eq!(r.blk.metrics.reads.load(Ordering::Relaxed), 1);
}

#[test]
fn out_of_range_and_ragged_requests_fail_with_ioerr() {
    let img = image("range", &vec![0u8; 8192]);
    let mut r = rig(&img, false);
    assert_eq!(r.submit(T_IN, 16, Some(Desc::w(DATA, 512))).0, S_IOERR);
    assert_eq!(r.submit(T_IN, 15, Some(Desc::w(DATA, 1024))).0, S_IOERR);
    assert_eq!(
        r.submit(T_OUT, u64::MAX / 256, Some(Desc::r(DATA, 512))).0,
        S_IOERR
    );
    assert_eq!(r.submit(T_IN, 0, Some(Desc::w(DATA, 100))).0, S_IOERR);
    assert_eq!(r.submit(T_IN, 15, Some(Desc::w(DATA, 512))).0, S_OK);
    assert_eq!(r.submit(77, 0, None).0, S_UNSUPP);
    assert_eq!(std::fs::read(&img.0).unwrap(), vec![0u8; 8192]);
}

#[test]
fn readonly_disk_refuses_writes_and_keeps_the_file() {
    let original = pattern(8192, 3);
    let img = image("ro", &original);
    let mut r = rig(&img, true);
    assert_ne!(r.blk.features() & super::super::device::F_RO, 0);
    r.fill(DATA, &[0xaa; 512]);
    assert_eq!(r.submit(T_OUT, 0, Some(Desc::r(DATA, 512))).0, S_IOERR);
    assert_eq!(
        r.submit(T_WRITE_ZEROES, 0, Some(Desc::r(DATA, 16))).0,
        S_IOERR
    );
    assert_eq!(r.submit(T_DISCARD, 0, Some(Desc::r(DATA, 16))).0, S_IOERR);
    assert_eq!(r.submit(T_FLUSH, 0, None).0, S_OK);
    assert_eq!(r.submit(T_IN, 0, Some(Desc::w(DATA, 512))), (S_OK, 513));
    assert_eq!(r.fetch(DATA, 512), original[..512]);
    assert_eq!(std::fs::read(&img.0).unwrap(), original);
}

#[test]
fn get_id_and_write_zeroes() {
    let img = image("id", &pattern(16384, 9));
    let mut r = rig(&img, false);
    assert_eq!(r.submit(T_GET_ID, 0, Some(Desc::w(DATA, 20))), (S_OK, 21));
    assert_eq!(&r.fetch(DATA, 13), b"vessel-disk-0");
    // Zero sectors 8..16 (4 KiB).
    let mut range = [0u8; 16];
    range[..8].copy_from_slice(&8u64.to_le_bytes());
    range[8..12].copy_from_slice(&8u32.to_le_bytes());
    r.fill(DATA, &range);
    assert_eq!(r.submit(T_WRITE_ZEROES, 0, Some(Desc::r(DATA, 16))).0, S_OK);
    let disk = std::fs::read(&img.0).unwrap();
    assert_eq!(disk.len(), 16384);
    assert!(disk[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(disk[..4096], pattern(16384, 9)[..4096]);
    // Unknown flags are unsupported; a range past the end is an error.
    range[12] = 2;
    r.fill(DATA, &range);
    assert_eq!(
        r.submit(T_WRITE_ZEROES, 0, Some(Desc::r(DATA, 16))).0,
        S_UNSUPP
    );
    range[12] = 1;
    range[..8].copy_from_slice(&30u64.to_le_bytes());
    r.fill(DATA, &range);
    assert_eq!(r.submit(T_DISCARD, 0, Some(Desc::r(DATA, 16))).0, S_IOERR);
    assert_eq!(r.submit(T_DISCARD, 0, Some(Desc::r(DATA, 10))).0, S_IOERR);
}

#[test]
fn malformed_chains() {
    let img = image("bad", &vec![0u8; 4096]);
    let mut r = rig(&img, false);
    // No writable status byte: protocol error.
    r.tq.add_chain(&r.mem, &[Desc::r(HDR, 16)]);
    assert!(r.blk.queue_notify(0).is_err());
    let mut r = rig(&img, false);
    // A header shorter than 16 bytes gets an I/O error status.
    r.tq.add_chain(&r.mem, &[Desc::r(HDR, 8), Desc::w(STATUS, 1)]);
    r.blk.queue_notify(0).unwrap();
    assert_eq!(r.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
    // The header may be split across descriptors.
    let mut hdr = [0u8; 16];
    hdr[..4].copy_from_slice(&T_IN.to_le_bytes());
    r.fill(HDR, &hdr[..5]);
    r.fill(HDR + 0x100, &hdr[5..]);
    r.tq.add_chain(
        &r.mem,
        &[
            Desc::r(HDR, 5),
            Desc::r(HDR + 0x100, 11),
            Desc::w(DATA, 512),
            Desc::w(STATUS, 1),
        ],
    );
    r.blk.queue_notify(0).unwrap();
    assert_eq!(r.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
}

/// The guest buffers a read fills are reported to the engine's DMA
/// observer (the soft engine drops decoded code there).
#[test]
fn reads_report_the_buffers_they_fill() {
    struct Record(std::sync::Mutex<Vec<(u64, u64)>>);
    impl hypervisor::DmaObserver for Record {
        fn written(&self, gpa: u64, len: u64) {
            self.0.lock().unwrap().push((gpa, len));
        }
    }
    let img = image("dma", &pattern(8192, 3));
    let mem = guest_memory();
    let tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
    let file = File::open(&img.0).unwrap();
    let mut blk = Block::from_file(file, 16, true, None);
    let record = Arc::new(Record(std::sync::Mutex::new(Vec::new())));
    let observer: Arc<dyn hypervisor::DmaObserver> = record.clone();
    blk.activate(Activation {
        mem: mem.clone(),
        queues: vec![tq.queue()],
        features: 0,
        interrupt: Arc::new(NoIrq),
        dma: crate::device::DmaNotify::new(Some(observer)),
    })
    .unwrap();
    let mut r = Rig { mem, tq, blk };
    assert_eq!(r.submit(T_IN, 0, Some(Desc::w(DATA, 4096))), (S_OK, 4097));
    let seen = record.0.lock().unwrap().clone();
    assert!(seen.contains(&(DATA, 4096)), "{seen:?}");
    assert!(seen.contains(&(STATUS, 1)), "{seen:?}");
}

/// Counts config-change notifications.
#[derive(Default)]
struct ConfigIrq(std::sync::atomic::AtomicU32);
impl Interrupt for ConfigIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn limited(img: &TempImage, cfg: RateLimiterConfig) -> Rig {
    let mut bc = crate::block::BlockConfig::new(&img.0);
    bc.rate_limiter = Some(cfg);
    rig_of(Block::new(&bc).unwrap(), Arc::new(NoIrq))
}

/// Whether `fd` becomes readable within `ms`.
pub(super) fn readable(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

impl Rig {
    /// Publishes a 4 KiB read of `sector` into `data` and kicks.
    fn kick_read(&mut self, hdr: u64, sector: u64, data: u64, status: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&T_IN.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.fill(hdr, &h);
        let descs = [Desc::r(hdr, 16), Desc::w(data, 4096), Desc::w(status, 1)];
        self.tq.add_chain(&self.mem, &descs);
        self.blk.queue_notify(0).unwrap();
    }
}

/// Two reads against one operation per 100 ms: the second stays on the
/// ring until the limiter's timer fires and the event is handled.
#[test]
fn throttled_queue_resumes_when_the_timer_fires() {
    let img = image("limit", &pattern(16384, 5));
    let one_op = RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 100,
        }),
    };
    let mut r = limited(&img, one_op);
    let fds = r.blk.event_fds();
    assert_eq!(fds.len(), 1);
    assert_eq!(fds[0].1, TOKEN_RATE_LIMIT);
    r.kick_read(HDR, 0, DATA, STATUS);
    r.kick_read(HDR + 0x100, 8, DATA + 0x1000, STATUS + 1);
    assert_eq!(r.tq.used_idx(&r.mem), 1, "the second request waits");
    assert_eq!(
        r.blk.metrics.rate_limiter_throttled.load(Ordering::Relaxed),
        1
    );
    // Another kick while waiting changes nothing.
    r.blk.queue_notify(0).unwrap();
    assert_eq!(r.tq.used_idx(&r.mem), 1);
    assert!(readable(fds[0].0, 2000), "the timer fires");
    r.blk.handle_event(TOKEN_RATE_LIMIT).unwrap();
    assert_eq!(r.tq.used_idx(&r.mem), 2, "served after the timer");
    assert_eq!(
        r.mem.read_obj::<u8>(GuestAddress(STATUS + 1)).unwrap(),
        S_OK
    );
    assert_eq!(r.fetch(DATA + 0x1000, 4096), pattern(16384, 5)[4096..8192]);
}

/// 8 KiB per 100 ms: four 4 KiB reads take at least 100 ms, and a
/// handle's update lifts the limit for a waiting queue at once.
#[test]
fn bandwidth_limit_and_update_through_the_handle() {
    let img = image("bw", &pattern(65536, 1));
    let bw = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 8192,
            one_time_burst: 0,
            refill_time_ms: 100,
        }),
        ops: None,
    };
    let mut r = limited(&img, bw);
    let handle = r.blk.handle();
    assert_eq!(handle.rate_limiter_config(), bw);
    let fd = r.blk.event_fds()[0].0;
    for i in 0..4u64 {
        r.kick_read(HDR + i * 0x100, i * 8, DATA + i * 0x1000, STATUS + i);
    }
    assert_eq!(r.tq.used_idx(&r.mem), 2, "8 KiB went through");
    handle
        .update_rate_limiter(&RateLimiterUpdate::replace(&RateLimiterConfig::default()))
        .unwrap();
    assert!(readable(fd, 50), "the update wakes the waiting queue");
    r.blk.handle_event(TOKEN_RATE_LIMIT).unwrap();
    assert_eq!(r.tq.used_idx(&r.mem), 4, "unlimited now");
    assert_eq!(
        r.fetch(DATA + 0x3000, 4096),
        pattern(65536, 1)[3 * 4096..4 * 4096]
    );
}

/// A new image through the handle: new capacity in the config space, a
/// config-change notification, reads from the new file.
#[test]
fn swapped_image_is_a_disk_change() {
    let old = image("old", &pattern(8192, 1));
    let new = image("new", &pattern(32768, 2));
    let irq = Arc::new(ConfigIrq::default());
    let blk = Block::new(&crate::block::BlockConfig::new(&old.0)).unwrap();
    let handle = blk.handle();
    let mut r = rig_of(blk, irq.clone());
    let capacity = |r: &Rig| {
        let mut c = [0u8; 8];
        r.blk.read_config(0, &mut c);
        u64::from_le_bytes(c)
    };
    assert_eq!(capacity(&r), 16);
    assert!(handle
        .swap_image(Path::new("/nonexistent/disk.img"))
        .is_err());
    assert_eq!(handle.path().as_deref(), Some(old.0.as_path()), "kept");
    assert_eq!(handle.swap_image(&new.0).unwrap(), 64);
    assert_eq!(capacity(&r), 64);
    assert_eq!(handle.sectors(), 64);
    assert_eq!(irq.0.load(Ordering::SeqCst), 1, "config change raised");
    assert_eq!(r.submit(T_IN, 40, Some(Desc::w(DATA, 4096))), (S_OK, 4097));
    assert_eq!(r.fetch(DATA, 4096), pattern(32768, 2)[20480..24576]);
}

#[test]
fn unsafe_cache_offers_no_flush() {
    use crate::block::CacheType;
    let img = image("unsafe", &vec![0u8; 4096]);
    let file = File::open(&img.0).unwrap();
    let blk = Block::from_file(file, 8, false, None);
    assert_ne!(blk.features() & F_FLUSH, 0, "writeback by default");
    let blk = blk.with_cache(CacheType::Unsafe);
    assert_eq!(blk.features() & F_FLUSH, 0);
    let mut r = rig_of(blk, Arc::new(NoIrq));
    assert_eq!(
        r.submit(T_FLUSH, 0, None),
        (S_OK, 1),
        "answered, not passed on"
    );
}
