//! Serving the request queue: parse, check the sector range, move data
//! between guest memory and the image with positioned I/O through
//! vm-memory's volatile copies, write the status byte, return the chain.

use super::device::{Block, MAX_RANGES, MAX_RANGE_SECTORS};
use super::request::{
    self, Range, Request, RequestKind, ID_BYTES, SECTOR_SIZE, S_IOERR, S_OK, S_UNSUPP,
};
use crate::device::DmaNotify;
use crate::queue::{self, QueueError};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use virtio_queue::QueueT;
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

    /// Serves every available chain; true when any was returned.
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

    /// Runs a request; returns the status and the bytes written into the
    /// guest's data buffers.
    pub(super) fn execute(&mut self, req: &Request, mem: &GuestMemoryMmap) -> (u8, u32) {
        let m = self.metrics.clone();
        match req.kind {
            RequestKind::In => match self.rw(req, mem, false) {
                Ok(n) => {
                    m.reads.fetch_add(1, Ordering::Relaxed);
                    m.read_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                    (S_OK, n)
                }
                Err(s) => (s, 0),
            },
            RequestKind::Out if self.readonly => (S_IOERR, 0),
            RequestKind::Out => match self.rw(req, mem, true) {
                Ok(n) => {
                    m.writes.fetch_add(1, Ordering::Relaxed);
                    m.write_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                    (S_OK, 0)
                }
                Err(s) => (s, 0),
            },
            RequestKind::Flush => {
                m.flushes.fetch_add(1, Ordering::Relaxed);
                match self.readonly || self.file.sync_data().is_ok() {
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
                    if let Err(s) = self.discard_or_zero(r, zero) {
                        return (s, 0);
                    }
                }
                (S_OK, 0)
            }
            RequestKind::Unsupported(_) => (S_UNSUPP, 0),
        }
    }

    /// Byte offset of `sector` if `[sector, sector + bytes)` lies on the disk.
    fn checked_offset(&self, sector: u64, bytes: u64) -> Option<u64> {
        let end_bytes = sector.checked_mul(SECTOR_SIZE)?.checked_add(bytes)?;
        (end_bytes <= self.sectors.checked_mul(SECTOR_SIZE)?).then_some(sector * SECTOR_SIZE)
    }

    fn rw(&mut self, req: &Request, mem: &GuestMemoryMmap, write: bool) -> Result<u32, u8> {
        let total = queue::segments_len(&req.data);
        if !total.is_multiple_of(SECTOR_SIZE) {
            return Err(S_IOERR);
        }
        let mut offset = self.checked_offset(req.sector, total).ok_or(S_IOERR)?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|_| S_IOERR)?;
        for seg in &req.data {
            let len = seg.len as usize;
            let r = if write {
                mem.write_all_volatile_to(seg.addr, &mut self.file, len)
            } else {
                mem.read_exact_volatile_from(seg.addr, &mut self.file, len)
            };
            if let Err(e) = r {
                log::warn!(
                    "virtio-blk {} at {offset:#x} failed: {e}",
                    if write { "write" } else { "read" }
                );
                return Err(S_IOERR);
            }
            offset += u64::from(seg.len);
        }
        // The chain total is at most MAX_CHAIN_BYTES.
        Ok(if write { 0 } else { total as u32 })
    }

    fn discard_or_zero(&mut self, r: Range, zero: bool) -> Result<(), u8> {
        if r.sectors > MAX_RANGE_SECTORS {
            return Err(S_IOERR);
        }
        let bytes = u64::from(r.sectors) * SECTOR_SIZE;
        let offset = self.checked_offset(r.sector, bytes).ok_or(S_IOERR)?;
        if bytes == 0 {
            return Ok(());
        }
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let mode = if !zero || r.unmap {
            punch
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        if self.fallocate(mode, offset, bytes) {
            return Ok(());
        }
        if !zero {
            // Discard is a hint: a file system without hole punching
            // simply keeps the data.
            return Ok(());
        }
        if mode != punch && self.fallocate(punch, offset, bytes) {
            return Ok(());
        }
        self.write_zeroes_slowly(offset, bytes)
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> bool {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return false;
        };
        // SAFETY: fallocate on a file descriptor this device owns; it
        // touches no memory of ours.
        unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) == 0 }
    }

    fn write_zeroes_slowly(&mut self, offset: u64, bytes: u64) -> Result<(), u8> {
        use std::os::unix::fs::FileExt;
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < bytes {
            let n = (bytes - done).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..n], offset + done)
                .map_err(|_| S_IOERR)?;
            done += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
