//! Serving the balloon queues. Inflated pages are dropped from the host
//! with madvise(MADV_DONTNEED) (they read back as zeros if the guest
//! touches them again, which is what a deflated page may be); the host
//! address comes from vm-memory after checking the page lies in guest RAM,
//! and this is the only place the device crate turns guest memory into a
//! raw pointer.

use super::device::{Balloon, DEFLATE, INFLATE, PAGE_SHIFT, STATS};
use crate::queue::{self, QueueError};
use std::sync::atomic::Ordering;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryBackend, Permissions};

const PAGE: usize = 1 << PAGE_SHIFT;
/// Most page numbers read from one chain (Linux sends at most 256).
const MAX_PFNS: u64 = 4096;

impl Balloon {
    pub(super) fn process_pages(&mut self, q: u16) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let Some(queue) = a.queues.get_mut(usize::from(q)) else {
            return Err(QueueError::NoSuchQueue(q));
        };
        if !queue.ready() {
            return Ok(());
        }
        let mut used = false;
        while let Some(chain) = queue::pop_chain(queue, &a.mem)? {
            let n = (queue::segments_len(&chain.readable) / 4).min(MAX_PFNS) as usize;
            let mut raw = vec![0u8; n * 4];
            queue::read_segments(&a.mem, &chain.readable, 0, &mut raw)?;
            for pfn in raw.chunks_exact(4) {
                let pfn = u32::from_le_bytes([pfn[0], pfn[1], pfn[2], pfn[3]]);
                let addr = GuestAddress(u64::from(pfn) << PAGE_SHIFT);
                if q == INFLATE {
                    discard_page(&a.mem, addr);
                    // The page now reads as zeros: to the engine, a write.
                    a.dma.written(addr, PAGE as u64);
                    self.metrics.inflated.fetch_add(1, Ordering::Relaxed);
                } else if q == DEFLATE {
                    self.metrics.deflated.fetch_add(1, Ordering::Relaxed);
                }
            }
            queue::add_used(queue, &a.mem, chain.head, 0)?;
            used = true;
        }
        if used && queue::needs_notification(queue, &a.mem) {
            a.interrupt.signal_used_queue(q);
        }
        Ok(())
    }

    pub(super) fn process_stats(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let Some(queue) = a.queues.get_mut(usize::from(STATS)) else {
            return Err(QueueError::NoSuchQueue(STATS));
        };
        if !queue.ready() {
            return Ok(());
        }
        while let Some(chain) = queue::pop_chain(queue, &a.mem)? {
            // Each entry is a packed { le16 tag; le64 val; }.
            let n = (queue::segments_len(&chain.readable) / 10).min(64) as usize;
            let mut raw = vec![0u8; n * 10];
            queue::read_segments(&a.mem, &chain.readable, 0, &mut raw)?;
            let entries = raw
                .chunks_exact(10)
                .map(|e| {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&e[2..]);
                    (u16::from_le_bytes([e[0], e[1]]), u64::from_le_bytes(v))
                })
                .collect();
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).entries = entries;
            self.metrics.stats_updates.fetch_add(1, Ordering::Relaxed);
            // Keep the buffer: returning it is how we ask for the next update.
            if let Some(old) = a.stats_chain.replace(chain) {
                queue::add_used(queue, &a.mem, old.head, 0)?;
            }
        }
        Ok(())
    }

    /// Once a second: ask for fresh statistics, apply a delayed deflate.
    pub(super) fn tick(&mut self) -> Result<(), QueueError> {
        let deflate_due = match (&self.active, self.config.deflate_after) {
            (Some(a), Some(after)) => self.target_pages() != 0 && a.started.elapsed() >= after,
            _ => false,
        };
        if deflate_due {
            log::info!("balloon: deflating to 0 pages");
            self.config.deflate_after = None;
            self.set_target_pages(0);
        }
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if let (Some(chain), Some(queue)) =
            (a.stats_chain.take(), a.queues.get_mut(usize::from(STATS)))
        {
            queue::add_used(queue, &a.mem, chain.head, 0)?;
            a.interrupt.signal_used_queue(STATS);
        }
        Ok(())
    }
}

/// Drops the host backing of one guest page; pages outside RAM are ignored.
fn discard_page(mem: &vm_memory::GuestMemoryMmap, addr: GuestAddress) {
    if !GuestMemory::check_range(mem, addr, PAGE, Permissions::ReadWrite) {
        log::debug!("balloon: page {:#x} is not guest RAM", addr.0);
        return;
    }
    // check_range said the page is mapped; a page never straddles two
    // regions because regions are page aligned.
    let Ok(host) = GuestMemoryBackend::get_host_address(mem, addr) else {
        return;
    };
    // SAFETY: `host..host + PAGE` is inside a mapping vm-memory owns for the
    // guest's lifetime; MADV_DONTNEED on private anonymous memory only
    // replaces the page with zeros on next touch, which the guest allowed
    // by putting it in the balloon.
    let r = unsafe { libc::madvise(host.cast(), PAGE, libc::MADV_DONTNEED) };
    if r != 0 {
        log::debug!(
            "balloon: madvise failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balloon::{Balloon, BalloonConfig};
    use crate::device::{Activation, Interrupt, VirtioDevice};
    use crate::test_driver::{guest_memory, Desc, TestQueue};
    use std::sync::Arc;
    use vm_memory::Bytes;

    struct NoIrq;
    impl Interrupt for NoIrq {
        fn signal_used_queue(&self, _: u16) {}
        fn signal_config_change(&self) {}
    }

    #[test]
    fn inflate_zeroes_pages_and_stats_are_kept() {
        let mem = guest_memory();
        let qs: Vec<TestQueue> = (0..3)
            .map(|i| TestQueue::new(&mem, GuestAddress(0x1000 + i * 0x2000), 8))
            .collect();
        let mut b = Balloon::new(BalloonConfig {
            target_mib: 1,
            deflate_after: None,
        });
        let mut cfg = [0u8; 4];
        b.read_config(0, &mut cfg);
        assert_eq!(u32::from_le_bytes(cfg), 256);
        b.activate(Activation {
            mem: mem.clone(),
            queues: qs.iter().map(|q| q.queue()).collect(),
            features: 0,
            interrupt: Arc::new(NoIrq),
            dma: Default::default(),
        })
        .unwrap();
        mem.write_slice(&[0xab; 4096], GuestAddress(0x40000))
            .unwrap();
        // Page 0x40 in RAM, one far outside it.
        let pfns: Vec<u8> = [0x40u32, 0xffff_ffff]
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        mem.write_slice(&pfns, GuestAddress(0x30000)).unwrap();
        let mut inflate = TestQueue::new(&mem, qs[0].desc, 8);
        inflate.add_chain(&mem, &[Desc::r(0x30000, 8)]);
        b.queue_notify(INFLATE).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x40000)).unwrap(), 0);
        assert_eq!(inflate.used(&mem).len(), 1);
        // Stats: two entries, the buffer is held until the timer ticks.
        let mut s = Vec::new();
        for (tag, val) in [(4u16, 1000u64), (5, 2000)] {
            s.extend_from_slice(&tag.to_le_bytes());
            s.extend_from_slice(&val.to_le_bytes());
        }
        mem.write_slice(&s, GuestAddress(0x50000)).unwrap();
        let mut stats = TestQueue::new(&mem, qs[2].desc, 8);
        stats.add_chain(&mem, &[Desc::r(0x50000, 20)]);
        b.queue_notify(STATS).unwrap();
        assert_eq!(b.stats.lock().unwrap().entries, vec![(4, 1000), (5, 2000)]);
        assert!(stats.used(&mem).is_empty());
        b.tick().unwrap();
        assert_eq!(stats.used(&mem).len(), 1);
        // The driver reports progress through `actual`.
        b.write_config(4, &256u32.to_le_bytes());
        b.write_config(0, &[9; 4]);
        let mut all = [0u8; 8];
        b.read_config(0, &mut all);
        assert_eq!(all, [0, 1, 0, 0, 0, 1, 0, 0]);
    }
}
