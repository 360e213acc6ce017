//! Queue parsing plus block request handling: the fuzzer's bytes are the
//! guest's memory (descriptor table, rings, headers, data) and the device
//! serves whatever the available ring says, against a 64 KiB in-memory
//! image, on the Sync engine or (when the first byte's bit 1 is set) the
//! Async one: its completions are served, then a reset drains the rest.
//! Nothing may panic; broken chains must come back as errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use virtio::block::{Block, IoEngine, TOKEN_IO_DONE};
use virtio::device::{Activation, Interrupt};
use virtio::test_driver::TestQueue;
use virtio::VirtioDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

fn memfd(len: u64) -> File {
    // SAFETY: memfd_create with a NUL-terminated name returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"fuzz-disk".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).expect("size the image");
    f
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let tq = TestQueue::new(&mem, GuestAddress(0), 16);
    let _ = mem.write_slice(&data[..data.len().min(1 << 20)], GuestAddress(0));
    let readonly = data.first().is_some_and(|b| b & 1 != 0);
    let engine = match data.first().is_some_and(|b| b & 2 != 0) {
        true => IoEngine::Async,
        false => IoEngine::Sync,
    };
    let mut blk = Block::from_file(memfd(64 << 10), 128, readonly, Some("fuzz"))
        .with_io_engine(engine)
        .expect("io_uring on the fuzzing host");
    blk.activate(Activation {
        mem: mem.clone(),
        queues: vec![tq.queue()],
        features: 0,
        interrupt: Arc::new(NoIrq),
        dma: Default::default(),
    })
    .unwrap();
    for _ in 0..2 {
        let _ = blk.queue_notify(0);
        let _ = blk.handle_event(TOKEN_IO_DONE);
    }
    blk.reset();
});
