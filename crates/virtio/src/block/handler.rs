//! Serving the request queue: parse, take the request's tokens from the
//! rate limiter (or leave it on the ring and wait for the limiter's
//! timer), check the sector range, move data between guest memory and
//! the image, write the status byte, return the chain.
//!
//! With the Async engine, reads, writes and flushes are handed to the
//! io_uring instead (at most its depth at once: when it is full, chains
//! stay on the ring until completions free room) and completed, in the
//! order the kernel finishes them, each time the queue is served.

use super::device::{lock, Block, CacheType, MAX_RANGES, MAX_RANGE_SECTORS};
use super::disk::{Disk, DIRECT_ALIGN};
use super::request::{
    self, Range, Request, RequestKind, ID_BYTES, SECTOR_SIZE, S_IOERR, S_OK, S_UNSUPP,
};
use super::uring::{self, Op, Reply};
use crate::device::DmaNotify;
use crate::queue::{self, Chain, QueueError, Segment};
use std::sync::atomic::Ordering;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, Permissions};

/// Where a request's answer goes.
struct Answer<'a> {
    head: u16,
    status: GuestAddress,
    writable: &'a [Segment],
}

impl Block {
    pub(super) fn process_queue(&mut self) -> Result<(), QueueError> {
        let Some(mut a) = self.active.take() else {
            return Ok(());
        };
        let r = self.drain(&mut a.queue, &a.mem, &a.dma);
        if r.as_ref().is_ok_and(|&used| used) && queue::needs_notification(&mut a.queue, &a.mem) {
            a.interrupt.signal_used_queue(0);
        }
        self.active = Some(a);
        r.map(|_| ())
    }

    /// Completes what the io_uring finished, then serves available
    /// chains until the ring is empty, the rate limiter says wait or the
    /// io_uring is full; true when any chain was returned.
    fn drain(
        &mut self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        dma: &DmaNotify,
    ) -> Result<bool, QueueError> {
        if !q.ready() {
            return Ok(false);
        }
        let mut used = self.complete_async(q, mem, dma)?;
        let r = self.serve_available(q, mem, dma, &mut used);
        if let Some(u) = &mut self.uring {
            // Also on error: what was queued belongs to the kernel now.
            u.submit();
        }
        r.map(|()| used)
    }

    fn serve_available(
        &mut self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        dma: &DmaNotify,
        used: &mut bool,
    ) -> Result<(), QueueError> {
        while self.uring.as_ref().is_none_or(|u| u.has_room()) {
            let Some(chain) = queue::pop_chain(q, mem)? else {
                break;
            };
            let (status_addr, status, len) = match request::parse(&chain, mem) {
                Ok(req) => {
                    if !self.admit(&req) {
                        // Back on the ring; the limiter's timer resumes us.
                        q.go_to_previous_position();
                        break;
                    }
                    let Some((status, len)) = self.start(&req, &chain, mem) else {
                        continue;
                    };
                    (req.status, status, len)
                }
                Err(request::ParseError::ShortHeader { status }) => (status, S_IOERR, 0),
                Err(e) => return Err(e.into_queue_error()),
            };
            let answer = Answer {
                head: chain.head,
                status: status_addr,
                writable: &chain.writable,
            };
            self.answer(q, mem, dma, &answer, (status, len))?;
            *used = true;
        }
        Ok(())
    }

    /// Writes the status byte and returns the chain with `len` data
    /// bytes written.
    fn answer(
        &self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        dma: &DmaNotify,
        a: &Answer,
        (status, len): (u8, u32),
    ) -> Result<(), QueueError> {
        if status != S_OK {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        mem.write_obj(status, a.status)
            .map_err(QueueError::Memory)?;
        // Read data, the ID and the status byte all land in the chain's
        // writable buffers.
        dma.segments(a.writable);
        queue::add_used(q, mem, a.head, len.saturating_add(1))
    }

    /// Runs the request now, or hands it to the io_uring (`None`).
    fn start(&mut self, req: &Request, chain: &Chain, mem: &GuestMemoryMmap) -> Option<(u8, u32)> {
        let op = match req.kind {
            _ if self.uring.is_none() => return Some(self.execute(req, mem)),
            RequestKind::In | RequestKind::Out => {
                // A chain holds at most MAX_CHAIN_BYTES.
                let Ok(total) = u32::try_from(queue::segments_len(&req.data)) else {
                    return Some((S_IOERR, 0));
                };
                if req.kind == RequestKind::In {
                    Op::Read(total)
                } else {
                    Op::Write(total)
                }
            }
            RequestKind::Flush if self.passes_flush() => Op::Flush,
            _ => return Some(self.execute(req, mem)),
        };
        let reply = Reply {
            head: chain.head,
            status: req.status,
            op,
            writable: chain.writable.clone(),
        };
        match self.submit(req, mem, reply) {
            Ok(()) => None,
            Err(status) => Some((status, 0)),
        }
    }

    /// Whether a flush reaches the image (not read-only, not Unsafe).
    fn passes_flush(&self) -> bool {
        !self.readonly && self.cache == CacheType::Writeback
    }

    /// Checks a read, write or flush and queues it on the io_uring.
    fn submit(&mut self, req: &Request, mem: &GuestMemoryMmap, reply: Reply) -> Result<(), u8> {
        let Some(ring) = self.uring.as_mut() else {
            return Err(S_IOERR);
        };
        let b = lock(&self.backend);
        let r = match reply.op {
            Op::Flush => {
                self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
                ring.push_flush(mem, b.disk.file(), reply)
            }
            Op::Write(_) if self.readonly => return Err(S_IOERR),
            Op::Read(total) | Op::Write(total) => {
                let total = u64::from(total);
                if !total.is_multiple_of(SECTOR_SIZE) {
                    return Err(S_IOERR);
                }
                let offset = b.disk.checked_offset(req.sector, total).ok_or(S_IOERR)?;
                let access = match reply.op {
                    Op::Read(_) => Permissions::Write,
                    _ => Permissions::Read,
                };
                let iovecs = uring::host_iovecs(mem, &req.data, access).map_err(|_| S_IOERR)?;
                let aligned = uring::aligned(&iovecs, DIRECT_ALIGN);
                let file = b.disk.file_for(offset, total, aligned);
                ring.push_rw(mem, file, offset, iovecs, reply)
            }
        };
        r.map_err(|e| {
            log::warn!("virtio-blk: cannot queue a request on io_uring: {e:?}");
            S_IOERR
        })
    }

    /// Answers the requests the io_uring finished; true when any was.
    fn complete_async(
        &mut self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        dma: &DmaNotify,
    ) -> Result<bool, QueueError> {
        let Some(ring) = self.uring.as_mut() else {
            return Ok(false);
        };
        let done = ring.reap();
        let used = !done.is_empty();
        for (reply, res) in done {
            let outcome = self.outcome(reply.op, res);
            let answer = Answer {
                head: reply.head,
                status: reply.status,
                writable: &reply.writable,
            };
            self.answer(q, mem, dma, &answer, outcome)?;
        }
        Ok(used)
    }

    /// Status and data length of a finished request: all its bytes moved,
    /// or an I/O error (a short transfer is the image shrinking or the
    /// host disk filling up).
    fn outcome(&self, op: Op, res: i32) -> (u8, u32) {
        let m = &self.metrics;
        let moved = u32::try_from(res).ok();
        match op {
            Op::Read(n) if moved == Some(n) => {
                m.reads.fetch_add(1, Ordering::Relaxed);
                m.read_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                (S_OK, n)
            }
            Op::Write(n) if moved == Some(n) => {
                m.writes.fetch_add(1, Ordering::Relaxed);
                m.write_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                (S_OK, 0)
            }
            Op::Flush if res == 0 => (S_OK, 0),
            _ => {
                log::warn!("virtio-blk: async {op:?} failed: result {res}");
                (S_IOERR, 0)
            }
        }
    }

    /// Takes the request's tokens: one operation, and its data bytes for
    /// reads and writes.
    fn admit(&mut self, req: &Request) -> bool {
        let bytes = match req.kind {
            RequestKind::In | RequestKind::Out => queue::segments_len(&req.data),
            _ => 0,
        };
        let ok = self.limiter.lock().consume_request(bytes);
        if !ok {
            self.metrics
                .rate_limiter_throttled
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Runs a request; returns the status and the bytes written into the
    /// guest's data buffers.
    pub(super) fn execute(&mut self, req: &Request, mem: &GuestMemoryMmap) -> (u8, u32) {
        let m = self.metrics.clone();
        let backend = self.backend.clone();
        let mut b = lock(&backend);
        let disk = &mut b.disk;
        match req.kind {
            RequestKind::In => match rw(disk, req, mem, false) {
                Ok(n) => {
                    m.reads.fetch_add(1, Ordering::Relaxed);
                    m.read_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                    (S_OK, n)
                }
                Err(s) => (s, 0),
            },
            RequestKind::Out if self.readonly => (S_IOERR, 0),
            RequestKind::Out => match rw(disk, req, mem, true) {
                Ok(n) => {
                    m.writes.fetch_add(1, Ordering::Relaxed);
                    m.write_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                    (S_OK, 0)
                }
                Err(s) => (s, 0),
            },
            RequestKind::Flush => {
                m.flushes.fetch_add(1, Ordering::Relaxed);
                // Unsafe: nothing to pass on (the flag is not offered).
                let skip = self.readonly || self.cache == CacheType::Unsafe;
                match skip || disk.sync() {
                    true => (S_OK, 0),
                    false => (S_IOERR, 0),
                }
            }
            RequestKind::GetId => {
                let n = queue::write_segments(mem, &req.data, 0, &self.id).unwrap_or(0);
                if n == 0 && ID_BYTES > 0 {
                    (S_IOERR, 0)
                } else {
                    (S_OK, n as u32)
                }
            }
            RequestKind::Discard | RequestKind::WriteZeroes if self.readonly => (S_IOERR, 0),
            RequestKind::Discard | RequestKind::WriteZeroes => {
                let ranges = match request::parse_ranges(mem, &req.data, MAX_RANGES) {
                    Ok(r) => r,
                    Err(request::RangeError::Flags(_)) => return (S_UNSUPP, 0),
                    Err(_) => return (S_IOERR, 0),
                };
                let zero = req.kind == RequestKind::WriteZeroes;
                for r in ranges {
                    if let Err(s) = discard_or_zero(disk, r, zero) {
                        return (s, 0);
                    }
                }
                (S_OK, 0)
            }
            RequestKind::Unsupported(_) => (S_UNSUPP, 0),
        }
    }
}

/// A read or write; returns the bytes put into guest buffers.
fn rw(disk: &mut Disk, req: &Request, mem: &GuestMemoryMmap, write: bool) -> Result<u32, u8> {
    let total = queue::segments_len(&req.data);
    if !total.is_multiple_of(SECTOR_SIZE) {
        return Err(S_IOERR);
    }
    let offset = disk.checked_offset(req.sector, total).ok_or(S_IOERR)?;
    disk.transfer(mem, &req.data, offset, write)?;
    // The chain total is at most MAX_CHAIN_BYTES.
    Ok(if write { 0 } else { total as u32 })
}

fn discard_or_zero(disk: &Disk, r: Range, zero: bool) -> Result<(), u8> {
    if r.sectors > MAX_RANGE_SECTORS {
        return Err(S_IOERR);
    }
    let bytes = u64::from(r.sectors) * SECTOR_SIZE;
    let offset = disk.checked_offset(r.sector, bytes).ok_or(S_IOERR)?;
    if bytes == 0 {
        return Ok(());
    }
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let mode = if !zero || r.unmap {
        punch
    } else {
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
    };
    if disk.fallocate(mode, offset, bytes) {
        return Ok(());
    }
    if !zero {
        // Discard is a hint: a file system without hole punching
        // simply keeps the data.
        return Ok(());
    }
    if mode != punch && disk.fallocate(punch, offset, bytes) {
        return Ok(());
    }
    disk.write_zeroes_slowly(offset, bytes)
}

#[cfg(test)]
mod async_tests;
#[cfg(test)]
mod tests;
