//! Serving the request queue: parse, take the request's tokens from the
//! rate limiter (or leave it on the ring and wait for the limiter's
//! timer), check the sector range, move data between guest memory and
//! the image, write the status byte, return the chain.

use super::device::{lock, Block, CacheType, MAX_RANGES, MAX_RANGE_SECTORS};
use super::disk::Disk;
use super::request::{
    self, Range, Request, RequestKind, ID_BYTES, SECTOR_SIZE, S_IOERR, S_OK, S_UNSUPP,
};
use crate::device::DmaNotify;
use crate::queue::{self, QueueError};
use std::sync::atomic::Ordering;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

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

    /// Serves available chains until the ring is empty or the rate
    /// limiter says wait; true when any was returned.
    fn drain(
        &mut self,
        q: &mut virtio_queue::Queue,
        mem: &GuestMemoryMmap,
        dma: &DmaNotify,
    ) -> Result<bool, QueueError> {
        if !q.ready() {
            return Ok(false);
        }
        let mut used = false;
        while let Some(chain) = queue::pop_chain(q, mem)? {
            let (status_addr, status, len) = match request::parse(&chain, mem) {
                Ok(req) => {
                    if !self.admit(&req) {
                        // Back on the ring; the limiter's timer resumes us.
                        q.go_to_previous_position();
                        break;
                    }
                    let (status, len) = self.execute(&req, mem);
                    (req.status, status, len)
                }
                Err(request::ParseError::ShortHeader { status }) => (status, S_IOERR, 0),
                Err(e) => return Err(e.into_queue_error()),
            };
            if status != S_OK {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            }
            mem.write_obj(status, status_addr)
                .map_err(QueueError::Memory)?;
            // Read data, the ID and the status byte all land in the
            // chain's writable buffers.
            dma.segments(&chain.writable);
            queue::add_used(q, mem, chain.head, len.saturating_add(1))?;
            used = true;
        }
        Ok(used)
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
mod tests;
