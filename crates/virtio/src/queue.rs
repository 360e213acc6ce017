//! Descriptor chains as devices see them: popped from a split virtqueue
//! (the ring bookkeeping is `virtio-queue`'s) and validated here, once,
//! before any device reads them. A chain is accepted only if every
//! descriptor lies inside guest memory, the chain ends (no bad index, no
//! loop, at most [`MAX_CHAIN_DESCRIPTORS`]), its total length is at most
//! [`MAX_CHAIN_BYTES`], and no device-readable buffer follows a
//! device-writable one. Everything that fails here is a protocol error the
//! device answers with NEEDS_RESET.

use std::num::Wrapping;
use std::sync::atomic::Ordering;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError, GuestMemoryMmap, Permissions};

/// Longest chain a device accepts, indirect tables included.
pub const MAX_CHAIN_DESCRIPTORS: usize = 1024;
/// Most bytes one chain may describe.
pub const MAX_CHAIN_BYTES: u64 = 256 << 20;

/// One buffer of a chain, inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A validated descriptor chain: readable buffers first, then writable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
}

/// The driver broke the queue protocol.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue is not ready")]
    NotReady,
    #[error("available index runs more than the queue size ahead")]
    AvailIndex,
    #[error("cannot read the available ring")]
    AvailRing(#[source] virtio_queue::Error),
    #[error("chain at head {head} does not end (bad index, loop or unreadable descriptor)")]
    BrokenChain { head: u16 },
    #[error("chain at head {head} has no descriptors")]
    EmptyChain { head: u16 },
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    DescriptorOutOfBounds { addr: u64, len: u32 },
    #[error("chain at head {head} has a readable descriptor after a writable one")]
    ReadableAfterWritable { head: u16 },
    #[error("chain at head {head} has more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooManyDescriptors { head: u16 },
    #[error("chain at head {head} describes more than {MAX_CHAIN_BYTES} bytes")]
    ChainTooLarge { head: u16 },
    #[error("cannot update the used ring")]
    UsedRing(#[source] virtio_queue::Error),
    #[error("queue {0} does not exist")]
    NoSuchQueue(u16),
    #[error("a request needs {needed} but the chain has {got}")]
    MissingBuffer {
        needed: &'static str,
        got: &'static str,
    },
    #[error("guest memory access failed")]
    Memory(#[source] GuestMemoryError),
}

/// Takes the next available chain off `queue` and validates it; `None`
/// when the driver has offered nothing new.
pub fn pop_chain(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Option<Chain>, QueueError> {
    if !queue.ready() {
        return Err(QueueError::NotReady);
    }
    let descriptors = match next_head(queue, mem)? {
        Some(d) => d,
        None => {
            // The ring looks empty: ask for a kick when the driver adds
            // more (with EVENT_IDX this writes avail_event; without, it
            // clears NO_NOTIFY), then look once more for what raced in.
            queue
                .enable_notification(mem)
                .map_err(QueueError::AvailRing)?;
            match next_head(queue, mem)? {
                Some(d) => d,
                None => return Ok(None),
            }
        }
    };
    let head = descriptors.head_index();
    let mut chain = Chain {
        head,
        readable: Vec::new(),
        writable: Vec::new(),
    };
    let mut count = 0usize;
    let mut total = 0u64;
    let mut last_has_next = false;
    for d in descriptors {
        count += 1;
        if count > MAX_CHAIN_DESCRIPTORS {
            return Err(QueueError::TooManyDescriptors { head });
        }
        last_has_next = d.has_next();
        total += u64::from(d.len());
        if total > MAX_CHAIN_BYTES {
            return Err(QueueError::ChainTooLarge { head });
        }
        let (addr, len) = (d.addr(), d.len());
        if len == 0 {
            continue;
        }
        let access = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !mem.check_range(addr, len as usize, access) {
            return Err(QueueError::DescriptorOutOfBounds { addr: addr.0, len });
        }
        let seg = Segment { addr, len };
        if d.is_write_only() {
            chain.writable.push(seg);
        } else if chain.writable.is_empty() {
            chain.readable.push(seg);
        } else {
            return Err(QueueError::ReadableAfterWritable { head });
        }
    }
    if count == 0 {
        return Err(QueueError::EmptyChain { head });
    }
    // The chain iterator stops silently on a bad next index, an
    // exhausted length budget (a loop) or an unreadable descriptor; the
    // last descriptor it gave still pointing onwards is how that shows.
    if last_has_next {
        return Err(QueueError::BrokenChain { head });
    }
    Ok(Some(chain))
}

type Descriptors<'a> = virtio_queue::DescriptorChain<&'a GuestMemoryMmap>;

/// The next available head, unvalidated.
fn next_head<'a>(
    queue: &mut Queue,
    mem: &'a GuestMemoryMmap,
) -> Result<Option<Descriptors<'a>>, QueueError> {
    let mut iter = queue.iter(mem).map_err(|e| match e {
        virtio_queue::Error::InvalidAvailRingIndex => QueueError::AvailIndex,
        e => QueueError::AvailRing(e),
    })?;
    Ok(iter.next())
}

/// Returns chain `head` to the driver with `len` bytes written.
pub fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), QueueError> {
    queue.add_used(mem, head, len).map_err(QueueError::UsedRing)
}

/// Whether the driver wants an interrupt for what was just used (event
/// index suppression); true when that cannot be read.
pub fn needs_notification(queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    queue.needs_notification(mem).unwrap_or(true)
}

/// How many chains the driver has offered that are not yet taken.
pub fn pending(queue: &Queue, mem: &GuestMemoryMmap) -> u16 {
    queue
        .avail_idx(mem, Ordering::Acquire)
        .map_or(0, |idx| (idx - Wrapping(queue.next_avail())).0)
}

/// Total bytes of `segs`.
pub fn segments_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Splits `segs` at byte `at`: the first `at` bytes and the rest.
pub fn split_segments(segs: &[Segment], at: u64) -> (Vec<Segment>, Vec<Segment>) {
    let mut front = Vec::new();
    let mut back = Vec::new();
    let mut left = at;
    for s in segs {
        let len = u64::from(s.len);
        if left >= len {
            front.push(*s);
            left -= len;
        } else if left == 0 {
            back.push(*s);
        } else {
            // left < len <= u32::MAX
            let l = left as u32;
            front.push(Segment {
                addr: s.addr,
                len: l,
            });
            back.push(Segment {
                addr: GuestAddress(s.addr.0 + u64::from(l)),
                len: s.len - l,
            });
            left = 0;
        }
    }
    (front, back)
}

/// Copies from `segs` (skipping the first `skip` bytes) into `buf`;
/// returns how many bytes were copied.
pub fn read_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    skip: u64,
    buf: &mut [u8],
) -> Result<usize, QueueError> {
    let (_, rest) = split_segments(segs, skip);
    let mut done = 0usize;
    for s in rest {
        if done == buf.len() {
            break;
        }
        let n = (s.len as usize).min(buf.len() - done);
        mem.read_slice(&mut buf[done..done + n], s.addr)
            .map_err(QueueError::Memory)?;
        done += n;
    }
    Ok(done)
}

/// Copies `data` into `segs` from byte `skip` on; returns how many bytes
/// fit.
pub fn write_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    skip: u64,
    data: &[u8],
) -> Result<usize, QueueError> {
    let (_, rest) = split_segments(segs, skip);
    let mut done = 0usize;
    for s in rest {
        if done == data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - done);
        mem.write_slice(&data[done..done + n], s.addr)
            .map_err(QueueError::Memory)?;
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_driver::{guest_memory, Desc, TestQueue};

    #[test]
    fn well_formed_chain_is_split_into_readable_and_writable() {
        let mem = guest_memory();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut q = tq.queue();
        tq.add_chain(
            &mem,
            &[
                Desc::r(0x10000, 16),
                Desc::r(0x11000, 512),
                Desc::w(0x12000, 1),
            ],
        );
        let chain = pop_chain(&mut q, &mem).unwrap().unwrap();
        assert_eq!(chain.readable.len(), 2);
        assert_eq!(
            chain.writable,
            vec![Segment {
                addr: GuestAddress(0x12000),
                len: 1
            }]
        );
        assert!(pop_chain(&mut q, &mem).unwrap().is_none());
        add_used(&mut q, &mem, chain.head, 1).unwrap();
        assert_eq!(tq.used(&mem), vec![(u32::from(chain.head), 1)]);
    }

    #[test]
    fn descriptor_outside_memory_is_refused() {
        let mem = guest_memory();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut q = tq.queue();
        tq.add_chain(&mem, &[Desc::r(0x10000, 16), Desc::w(u64::MAX - 10, 100)]);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::DescriptorOutOfBounds { .. })
        ));
        tq.add_chain(&mem, &[Desc::w(crate::test_driver::MEM_SIZE - 4, 8)]);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::DescriptorOutOfBounds { .. })
        ));
    }

    #[test]
    fn loops_bad_indices_and_order_are_refused() {
        let mem = guest_memory();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 8);
        let mut q = tq.queue();
        // 0 -> 1 -> 0: a loop.
        tq.write_desc(&mem, 0, 0x10000, 4, TestQueue::NEXT, 1);
        tq.write_desc(&mem, 1, 0x10000, 4, TestQueue::NEXT, 0);
        tq.publish(&mem, 0);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::BrokenChain { head: 0 })
        ));
        // Next index past the table.
        tq.write_desc(&mem, 2, 0x10000, 4, TestQueue::NEXT, 200);
        tq.publish(&mem, 2);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::BrokenChain { head: 2 })
        ));
        // Head index past the table.
        tq.publish(&mem, 9);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::EmptyChain { head: 9 })
        ));
        // Readable after writable.
        tq.add_chain(&mem, &[Desc::w(0x10000, 4), Desc::r(0x11000, 4)]);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::ReadableAfterWritable { .. })
        ));
    }

    #[test]
    fn huge_lengths_and_runaway_avail_index_are_refused() {
        let mem = guest_memory();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 8);
        let mut q = tq.queue();
        tq.add_chain(&mem, &[Desc::r(0x10000, u32::MAX)]);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::ChainTooLarge { .. })
        ));
        tq.set_avail_idx(&mem, 1000);
        assert!(matches!(
            pop_chain(&mut q, &mem),
            Err(QueueError::AvailIndex)
        ));
    }

    #[test]
    fn indirect_tables_are_followed_and_checked() {
        let mem = guest_memory();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 8);
        let mut q = tq.queue();
        // An indirect table of two descriptors at 0x20000.
        TestQueue::write_desc_at(
            &mem,
            GuestAddress(0x20000),
            0,
            0x10000,
            16,
            TestQueue::NEXT,
            1,
        );
        TestQueue::write_desc_at(
            &mem,
            GuestAddress(0x20000),
            1,
            0x11000,
            1,
            TestQueue::WRITE,
            0,
        );
        tq.write_desc(&mem, 0, 0x20000, 32, TestQueue::INDIRECT, 0);
        tq.publish(&mem, 0);
        let c = pop_chain(&mut q, &mem).unwrap().unwrap();
        assert_eq!((c.readable.len(), c.writable.len()), (1, 1));
        // A table whose length is not a whole number of descriptors.
        tq.write_desc(&mem, 1, 0x20000, 20, TestQueue::INDIRECT, 0);
        tq.publish(&mem, 1);
        assert!(pop_chain(&mut q, &mem).is_err());
        // A table outside memory.
        tq.write_desc(&mem, 2, u64::MAX - 15, 16, TestQueue::INDIRECT, 0);
        tq.publish(&mem, 2);
        assert!(pop_chain(&mut q, &mem).is_err());
    }

    #[test]
    fn draining_asks_for_the_next_kick_with_event_idx() {
        let mem = guest_memory();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 8);
        let mut q = tq.queue();
        q.set_event_idx(true);
        for _ in 0..3 {
            tq.add_chain(&mem, &[Desc::w(0x10000, 4)]);
            while pop_chain(&mut q, &mem).unwrap().is_some() {}
            // avail_event sits after the used ring's 8 entries.
            let avail_event: u16 = mem.read_obj(GuestAddress(tq.used.0 + 4 + 8 * 8)).unwrap();
            assert_eq!(
                avail_event,
                q.next_avail(),
                "driver kicks on the next buffer"
            );
        }
    }

    #[test]
    fn split_and_copy_across_segments() {
        let mem = guest_memory();
        let segs = [
            Segment {
                addr: GuestAddress(0x10000),
                len: 3,
            },
            Segment {
                addr: GuestAddress(0x20000),
                len: 5,
            },
        ];
        let (a, b) = split_segments(&segs, 4);
        assert_eq!(segments_len(&a), 4);
        assert_eq!(
            b,
            vec![Segment {
                addr: GuestAddress(0x20001),
                len: 4
            }]
        );
        assert_eq!(write_segments(&mem, &segs, 1, b"abcdefghij").unwrap(), 7);
        let mut out = [0u8; 8];
        assert_eq!(read_segments(&mem, &segs, 0, &mut out).unwrap(), 8);
        assert_eq!(&out, b"\0abcdefg");
    }
}
