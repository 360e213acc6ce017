//! virtio-fs: the fuzzer's bytes are a stream of FUSE requests sent to a
//! shared directory (a small tree made fresh for each run): each picks an
//! opcode (mostly ones the device serves), an inode number (mostly small,
//! so ones handed out get hit), a reply buffer size, and a body of raw
//! bytes (often a plausible name, sometimes with `/` or `..`). After the
//! run, a file beside the shared directory must be untouched, and a
//! read-only share (chosen by the first byte) must be exactly as made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio::device::{Activation, Interrupt};
use virtio::fs::{Fs, FsConfig, REQUEST};
use virtio::test_driver::{Desc, TestQueue};
use virtio::VirtioDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

static RUN: AtomicU64 = AtomicU64::new(0);
const REQ: u64 = 0x10000;
const REPLY: u64 = 0x80000;
const NAMES: &[&[u8]] = &[
    b"a",
    b"sub",
    b"link",
    b"..",
    b".",
    b"../outside",
    b"sub/a",
    b"new",
];

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (a, b) = data.split_at(n);
    *data = b;
    Some(a)
}

/// Names, modes, sizes and contents of everything under `dir`.
fn snapshot(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        let data = if m.is_file() {
            std::fs::read(&p).unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push(format!(
            "{} {:o} {} {:?}",
            p.display(),
            m.mode(),
            m.len(),
            data
        ));
        if m.is_dir() {
            snapshot(&p, out);
        }
    }
}

fn request(op: u32, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(40 + body.len());
    r.extend_from_slice(&((40 + body.len()) as u32).to_le_bytes());
    r.extend_from_slice(&op.to_le_bytes());
    r.extend_from_slice(&1u64.to_le_bytes());
    r.extend_from_slice(&nodeid.to_le_bytes());
    r.extend_from_slice(&[0; 16]);
    r.extend_from_slice(body);
    r
}

fuzz_target!(|input: &[u8]| {
    let base = std::env::temp_dir().join(format!(
        "vessel-fuzz-fs-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let share = base.join("share");
    let _ = std::fs::create_dir_all(share.join("sub"));
    let _ = std::fs::write(share.join("a"), b"inside");
    let _ = std::fs::write(share.join("sub/a"), b"deeper");
    let _ = std::os::unix::fs::symlink("../outside", share.join("link"));
    let _ = std::fs::write(base.join("outside"), b"keep");
    let mut data = input;
    let read_only = take(&mut data, 1).is_some_and(|b| b[0] & 1 == 1);
    let mut before = Vec::new();
    snapshot(&share, &mut before);

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let hiprio = TestQueue::new(&mem, GuestAddress(0), 16);
    let mut q = TestQueue::new(&mem, GuestAddress(0x1000), 16);
    let Ok(mut dev) = Fs::new(&FsConfig {
        tag: "fuzz".into(),
        host_dir: share.clone(),
        read_only,
    }) else {
        let _ = std::fs::remove_dir_all(&base);
        return;
    };
    dev.activate(Activation {
        mem: mem.clone(),
        queues: vec![hiprio.queue(), q.queue()],
        features: 0,
        interrupt: Arc::new(NoIrq),
        dma: Default::default(),
    })
    .unwrap();
    while let Some(head) = take(&mut data, 4) {
        let op = if head[0] < 200 {
            u32::from(head[0] % 47)
        } else {
            u32::from_le_bytes([head[0], head[1], head[2], head[3]])
        };
        let nodeid = if head[1] < 240 {
            u64::from(head[1] % 8)
        } else {
            u64::MAX - u64::from(head[1])
        };
        let reply_len = u32::from(head[2]) * 64;
        let body_len = usize::from(head[3] % 128);
        let Some(raw) = take(&mut data, body_len) else {
            break;
        };
        let mut body = raw.to_vec();
        // Often a known name where the body starts (or after a 16-byte
        // argument struct), NUL-terminated.
        if head[3] & 0x80 != 0 {
            let name = NAMES[usize::from(head[2]) % NAMES.len()];
            let at = if head[0] & 1 == 0 {
                0
            } else {
                body.len().min(16)
            };
            body.truncate(at);
            body.resize(at, 0);
            body.extend_from_slice(name);
            body.push(0);
        }
        let req = request(op, nodeid, &body);
        let _ = mem.write_slice(&req, GuestAddress(REQ));
        q.add_chain(
            &mem,
            &[
                Desc::r(REQ, req.len() as u32),
                Desc::w(REPLY, reply_len.max(1)),
            ],
        );
        let _ = dev.queue_notify(REQUEST);
    }
    drop(dev);
    assert_eq!(
        std::fs::read(base.join("outside")).ok().as_deref(),
        Some(&b"keep"[..]),
        "a file outside the share changed"
    );
    if read_only {
        let mut after = Vec::new();
        snapshot(&share, &mut after);
        assert_eq!(before, after, "a read-only share changed");
    }
    let _ = std::fs::remove_dir_all(&base);
});
