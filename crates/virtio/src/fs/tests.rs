//! The device over a real temporary directory, driven the way the guest's
//! FUSE client drives it, including hostile requests.

use super::filter::opcode;
use super::*;
use crate::device::{Activation, Interrupt, VirtioDevice};
use crate::test_driver::{guest_memory, Desc, TestQueue};
use std::os::unix::fs::{symlink, MetadataExt};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

const REQ: u64 = 0x100000;
const REPLY: u64 = 0x400000;

struct Guest {
    mem: GuestMemoryMmap,
    queue: TestQueue,
    dev: Fs,
    unique: u64,
}

impl Guest {
    fn new(dir: &std::path::Path, read_only: bool) -> Self {
        let mem = guest_memory();
        let hiprio = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let queue = TestQueue::new(&mem, GuestAddress(0x8000), 16);
        let mut dev = Fs::new(&FsConfig {
            tag: "share".into(),
            host_dir: dir.to_path_buf(),
            read_only,
        })
        .unwrap();
        dev.activate(Activation {
            mem: mem.clone(),
            queues: vec![hiprio.queue(), queue.queue()],
            features: 0,
            interrupt: Arc::new(NoIrq),
            dma: Default::default(),
        })
        .unwrap();
        let mut g = Guest {
            mem,
            queue,
            dev,
            unique: 0,
        };
        // INIT: major 7, minor 31, max_readahead, flags.
        let init = g.call(
            opcode::INIT,
            0,
            &[7, 31, 0, 0].map(u32::to_le_bytes).concat(),
        );
        assert_eq!(error(&init), 0, "INIT failed");
        g
    }

    /// Sends one request (header + `body`) for `nodeid`; returns the reply.
    fn call(&mut self, op: u32, nodeid: u64, body: &[u8]) -> Vec<u8> {
        self.raw(&request(op, nodeid, self.unique, body), 1 << 20)
    }

    fn raw(&mut self, req: &[u8], reply_len: u32) -> Vec<u8> {
        self.unique += 1;
        self.mem.write_slice(req, GuestAddress(REQ)).unwrap();
        let before = self.queue.used(&self.mem).len();
        self.queue.add_chain(
            &self.mem,
            &[Desc::r(REQ, req.len() as u32), Desc::w(REPLY, reply_len)],
        );
        self.dev.queue_notify(REQUEST).unwrap();
        let used = self.queue.used(&self.mem);
        assert_eq!(used.len(), before + 1, "request not answered");
        let len = used[before].1 as usize;
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(REPLY)).unwrap();
        out
    }

    /// LOOKUP of `name` in `parent`: (errno, nodeid, size, mode).
    fn lookup(&mut self, parent: u64, name: &[u8]) -> (i32, u64, u64, u32) {
        let mut body = name.to_vec();
        body.push(0);
        let r = self.call(opcode::LOOKUP, parent, &body);
        if error(&r) != 0 {
            return (error(&r), 0, 0, 0);
        }
        // fuse_entry_out: nodeid, generation, 2 valid u64, 2 nsec u32,
        // then fuse_attr: ino, size, blocks, 3 times, 3 nsec, mode.
        (
            0,
            u64_at(&r, 16),
            u64_at(&r, 64),
            u32_at(&r, 16 + 40 + 76 - 16),
        )
    }
}

fn request(op: u32, nodeid: u64, unique: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; filter::IN_HEADER_LEN];
    r[0..4].copy_from_slice(&((filter::IN_HEADER_LEN + body.len()) as u32).to_le_bytes());
    r[4..8].copy_from_slice(&op.to_le_bytes());
    r[8..16].copy_from_slice(&unique.to_le_bytes());
    r[16..24].copy_from_slice(&nodeid.to_le_bytes());
    r.extend_from_slice(body);
    r
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The positive errno of a reply (0 for success).
fn error(reply: &[u8]) -> i32 {
    assert!(reply.len() >= 16, "reply shorter than a header: {reply:?}");
    -(u32_at(reply, 4) as i32)
}

fn open_body(flags: i32) -> Vec<u8> {
    [(flags as u32).to_le_bytes(), [0; 4]].concat()
}

fn read_body(fh: u64, offset: u64, size: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&fh.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0; 20]);
    b
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello"), b"hello, guest\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    symlink("../../etc/passwd", dir.path().join("sub/link")).unwrap();
    dir
}

#[test]
fn config_space_holds_tag_and_one_request_queue() {
    let dir = tree();
    let g = Guest::new(dir.path(), false);
    let mut space = [0xffu8; 40];
    g.dev.read_config(0, &mut space);
    assert_eq!(&space[..5], b"share");
    assert!(space[5..36].iter().all(|&b| b == 0));
    assert_eq!(u32_at(&space, 36), 1);
    assert_eq!(g.dev.device_type(), 26);
    assert!(Fs::new(&FsConfig {
        tag: "x".repeat(37),
        host_dir: dir.path().into(),
        read_only: false
    })
    .is_err());
    assert!(Fs::new(&FsConfig {
        tag: "t".into(),
        host_dir: dir.path().join("hello"),
        read_only: false
    })
    .is_err());
}

#[test]
fn lookup_open_and_read_a_file() {
    let dir = tree();
    let mut g = Guest::new(dir.path(), false);
    let (err, node, size, mode) = g.lookup(1, b"hello");
    assert_eq!((err, size), (0, 13));
    assert_eq!(mode & libc::S_IFMT, libc::S_IFREG);
    let open = g.call(opcode::OPEN, node, &open_body(libc::O_RDONLY));
    assert_eq!(error(&open), 0);
    let fh = u64_at(&open, 16);
    let data = g.call(opcode::READ, node, &read_body(fh, 7, 100));
    assert_eq!(error(&data), 0);
    assert_eq!(&data[16..], b"guest\n");
}

#[test]
fn writes_reach_the_host_and_read_only_refuses_them() {
    let dir = tree();
    let mut g = Guest::new(dir.path(), false);
    // MKDIR: mode, umask, name.
    let mkdir = [0o755u32.to_le_bytes(), [0; 4]].concat();
    let r = g.call(opcode::MKDIR, 1, &[mkdir.as_slice(), b"made\0"].concat());
    assert_eq!(error(&r), 0);
    assert!(dir.path().join("made").is_dir());
    // UNLINK.
    assert_eq!(error(&g.call(opcode::UNLINK, 1, b"hello\0")), 0);
    assert!(!dir.path().join("hello").exists());

    let dir = tree();
    let mut ro = Guest::new(dir.path(), true);
    let (_, node, ..) = ro.lookup(1, b"hello");
    assert_eq!(error(&ro.call(opcode::UNLINK, 1, b"hello\0")), libc::EROFS);
    let r = ro.call(opcode::MKDIR, 1, &[mkdir.as_slice(), b"made\0"].concat());
    assert_eq!(error(&r), libc::EROFS);
    let w = ro.call(opcode::OPEN, node, &open_body(libc::O_WRONLY));
    assert_eq!(error(&w), libc::EROFS);
    let t = ro.call(
        opcode::OPEN,
        node,
        &open_body(libc::O_RDONLY | libc::O_TRUNC),
    );
    assert_eq!(error(&t), libc::EROFS);
    assert_eq!(
        error(&ro.call(opcode::SETATTR, node, &[0; 88])),
        libc::EROFS
    );
    assert_eq!(
        std::fs::read(dir.path().join("hello")).unwrap(),
        b"hello, guest\n"
    );
    assert!(!dir.path().join("made").exists());
    assert!(
        g.dev
            .metrics
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[test]
fn hostile_names_and_inodes_stay_inside_the_share() {
    let dir = tree();
    let outside = dir.path().parent().unwrap().metadata().unwrap().ino();
    let mut g = Guest::new(dir.path(), false);
    // ".." of the root is the root itself.
    let (err, node, ..) = g.lookup(1, b"..");
    assert_eq!(err, 0);
    let attr = g.call(opcode::GETATTR, node, &[0; 16]);
    assert_eq!(error(&attr), 0);
    // fuse_attr_out: attr_valid, nsec, dummy, then fuse_attr (ino first).
    assert_ne!(u64_at(&attr, 32), outside);
    assert_eq!(g.lookup(1, b"sub/link").0, libc::EINVAL);
    assert_eq!(g.lookup(1, b"../etc").0, libc::EINVAL);
    // Inode numbers never handed out.
    for bad in [0, 2, 999, u64::MAX] {
        assert_ne!(error(&g.call(opcode::GETATTR, bad, &[0; 16])), 0);
        assert_ne!(g.lookup(bad, b"hello").0, 0);
    }
    // A symlink is given as it is, never followed by the device.
    let (_, sub, ..) = g.lookup(1, b"sub");
    let (err, link, _, mode) = g.lookup(sub, b"link");
    assert_eq!((err, mode & libc::S_IFMT), (0, libc::S_IFLNK));
    let r = g.call(opcode::READLINK, link, &[]);
    assert_eq!(&r[16..], b"../../etc/passwd");
    let open = g.call(opcode::OPEN, link, &open_body(libc::O_RDONLY));
    assert_ne!(error(&open), 0, "opened a symlink's target");
}

#[test]
fn malformed_requests_get_errors() {
    let dir = tree();
    let mut g = Guest::new(dir.path(), false);
    // Shorter than a header.
    assert_eq!(error(&g.raw(&[1, 2, 3], 64)), libc::EINVAL);
    // Unknown and reserved opcodes.
    for op in [0, 7, 19, 39, 1000] {
        assert_eq!(error(&g.call(op, 1, &[0; 8])), libc::ENOSYS, "opcode {op}");
    }
    // The header's length disagrees with the message.
    let mut lying = request(opcode::LOOKUP, 1, 9, b"hello\0");
    lying[0..4].copy_from_slice(&4096u32.to_le_bytes());
    assert_ne!(error(&g.raw(&lying, 256)), 0);
    lying[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_ne!(error(&g.raw(&lying, 256)), 0);
    // A name without its NUL, a READ bigger than the reply buffer.
    assert_ne!(error(&g.call(opcode::LOOKUP, 1, b"hello")), 0);
    let (_, node, ..) = g.lookup(1, b"hello");
    let fh = u64_at(&g.call(opcode::OPEN, node, &open_body(libc::O_RDONLY)), 16);
    let small = g.raw(
        &request(opcode::READ, node, 5, &read_body(fh, 0, 1 << 20)),
        32,
    );
    assert!(small.len() <= 32);
    // A reply buffer too small for even a header gets nothing.
    assert!(g
        .raw(&request(opcode::GETATTR, 1, 6, &[0; 16]), 8)
        .is_empty());
    // The device still serves afterwards.
    assert_eq!(g.lookup(1, b"hello").0, 0);
}

#[test]
fn reset_forgets_the_inodes_handed_out() {
    let dir = tree();
    let mut g = Guest::new(dir.path(), false);
    let (_, node, ..) = g.lookup(1, b"hello");
    assert_eq!(error(&g.call(opcode::GETATTR, node, &[0; 16])), 0);
    g.dev.reset();
    let queue = TestQueue::new(&g.mem, GuestAddress(0x8000), 16);
    let hiprio = TestQueue::new(&g.mem, GuestAddress(0x1000), 16);
    g.dev
        .activate(Activation {
            mem: g.mem.clone(),
            queues: vec![hiprio.queue(), queue.queue()],
            features: 0,
            interrupt: Arc::new(NoIrq),
            dma: Default::default(),
        })
        .unwrap();
    g.queue = queue;
    assert_ne!(error(&g.call(opcode::GETATTR, node, &[0; 16])), 0);
    assert_eq!(g.lookup(1, b"hello").0, 0);
}
