//! virtio-net queues: the fuzzer's bytes are guest memory (rx ring at 0,
//! tx ring at 0x1000) and the frames the host side delivers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use virtio::device::{Activation, Interrupt};
use virtio::net::{Net, NetBackend};
use virtio::test_driver::TestQueue;
use virtio::VirtioDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

struct Frames(Vec<Vec<u8>>);
impl NetBackend for Frames {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.pop() {
            Some(f) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(n)
            }
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        Ok(frame.len())
    }
    fn set_offload(&mut self, _: u32) -> std::io::Result<()> {
        Ok(())
    }
    fn fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let rx = TestQueue::new(&mem, GuestAddress(0), 16);
    let tx = TestQueue::new(&mem, GuestAddress(0x1000), 16);
    // First half is guest memory (rings at 0 and 0x1000), the rest frames.
    let split = (rest.len() / 2).min(0x4000);
    let _ = mem.write_slice(&rest[..split], GuestAddress(0));
    let frames: Vec<Vec<u8>> = rest[split..].chunks(1500).map(<[u8]>::to_vec).collect();
    let mut net = Net::with_backend(Box::new(Frames(frames)), [2, 0, 0, 0, 0, 1]);
    let features = if ctl & 1 != 0 { 1 << 15 } else { 0 };
    net.activate(Activation {
        mem: mem.clone(),
        queues: vec![rx.queue(), tx.queue()],
        features,
        interrupt: Arc::new(NoIrq),
        dma: Default::default(),
    })
    .unwrap();
    let _ = net.queue_notify(1);
    let _ = net.queue_notify(0);
    let _ = net.handle_event(0);
});
