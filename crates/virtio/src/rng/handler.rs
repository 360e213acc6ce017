//! Serving the request queue: every chain's writable buffers are filled
//! with random bytes (at most [`MAX_BYTES_PER_REQUEST`] per chain); a chain
//! with readable buffers is still answered, they are just not read.

use super::device::Rng;
use crate::queue::{self, QueueError};
use std::sync::atomic::Ordering;
use virtio_queue::QueueT;

/// Bytes given per request at most; Linux asks for far less.
pub const MAX_BYTES_PER_REQUEST: usize = 64 << 10;

/// Fills `buf` from the host's getrandom.
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into the
        // valid, exclusively borrowed buffer `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl Rng {
    pub(super) fn process_queue(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if !a.queue.ready() {
            return Ok(());
        }
        let mut used = false;
        let mut buf = Vec::new();
        while let Some(chain) = queue::pop_chain(&mut a.queue, &a.mem)? {
            let want = (queue::segments_len(&chain.writable) as usize).min(MAX_BYTES_PER_REQUEST);
            buf.resize(want, 0);
            let written = match fill_random(&mut buf) {
                Ok(()) => {
                    let n = queue::write_segments(&a.mem, &chain.writable, 0, &buf)?;
                    a.dma.segments(&chain.writable);
                    n
                }
                Err(e) => {
                    log::warn!("getrandom failed: {e}");
                    0
                }
            };
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .bytes
                .fetch_add(written as u64, Ordering::Relaxed);
            // At most MAX_BYTES_PER_REQUEST.
            queue::add_used(&mut a.queue, &a.mem, chain.head, written as u32)?;
            used = true;
        }
        if used && queue::needs_notification(&mut a.queue, &a.mem) {
            a.interrupt.signal_used_queue(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Activation, Interrupt, VirtioDevice};
    use crate::test_driver::{guest_memory, Desc, TestQueue};
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    use vm_memory::{Bytes, GuestAddress};

    #[derive(Default)]
    struct Count(AtomicU32);
    impl Interrupt for Count {
        fn signal_used_queue(&self, _: u16) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn signal_config_change(&self) {}
    }

    #[test]
    fn fills_writable_buffers_and_caps_huge_ones() {
        let mem = guest_memory();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let irq = Arc::new(Count::default());
        let mut rng = Rng::new();
        rng.activate(Activation {
            mem: mem.clone(),
            queues: vec![tq.queue()],
            features: 0,
            interrupt: irq.clone(),
            dma: Default::default(),
        })
        .unwrap();
        tq.add_chain(&mem, &[Desc::w(0x10000, 64)]);
        tq.add_chain(&mem, &[Desc::w(0x20000, 1 << 20)]);
        rng.queue_notify(0).unwrap();
        let used = tq.used(&mem);
        assert_eq!(used, vec![(0, 64), (1, MAX_BYTES_PER_REQUEST as u32)]);
        let mut b = [0u8; 64];
        mem.read_slice(&mut b, GuestAddress(0x10000)).unwrap();
        assert!(b.iter().any(|&x| x != 0));
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        assert!(rng.queue_notify(1).is_err());
        // A broken chain is an error for the transport to act on.
        tq.add_chain(&mem, &[Desc::w(u64::MAX - 1, 64)]);
        assert!(rng.queue_notify(0).is_err());
    }
}
