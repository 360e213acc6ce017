//! Serving the queues: each chain's device-readable buffers are one FUSE
//! request, its device-writable buffers receive the reply. The request is
//! copied out of guest memory into a host buffer, screened by
//! [`super::filter`], then handed to the FUSE server, whose reply lands in
//! a memfd (the server's writer writes to a file descriptor) and is copied
//! into the chain. Requests and replies are at most [`MAX_MESSAGE`] bytes:
//! a longer request is refused with `EINVAL`, a reply never grows past the
//! writable buffers the driver gave.

use super::device::{Fs, FuseServer};
use super::filter::{self, Verdict, OUT_HEADER_LEN};
use super::metrics::FsMetrics;
use crate::queue::{self, Chain, QueueError};
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

/// Largest request or reply: the server's 1 MiB data limit (what it
/// offers as max_write and max_pages in INIT) plus a page for headers.
pub const MAX_MESSAGE: usize = (1 << 20) + 0x1000;

/// The FUSE server and the buffers requests pass through.
pub(super) struct Session {
    server: FuseServer,
    read_only: bool,
    /// Where the server's writer puts each reply.
    sink: File,
    request: Vec<u8>,
    reply: Vec<u8>,
    metrics: Arc<FsMetrics>,
}

/// A memfd for replies.
fn reply_sink() -> io::Result<File> {
    // SAFETY: the name is a NUL-terminated string literal; memfd_create
    // reads nothing else and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"vessel-fs-reply".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created, is valid and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl Session {
    pub(super) fn new(
        server: FuseServer,
        read_only: bool,
        metrics: Arc<FsMetrics>,
    ) -> io::Result<Self> {
        Ok(Session {
            server,
            read_only,
            sink: reply_sink()?,
            request: vec![0; MAX_MESSAGE],
            reply: vec![0; MAX_MESSAGE],
            metrics,
        })
    }

    /// Answers one chain: returns the bytes of the reply in `self.reply`.
    fn answer(&mut self, mem: &GuestMemoryMmap, chain: &Chain) -> Result<usize, QueueError> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let request_len = queue::segments_len(&chain.readable);
        let reply_cap = queue::segments_len(&chain.writable).min(MAX_MESSAGE as u64) as usize;
        let got = queue::read_segments(mem, &chain.readable, 0, &mut self.request)?;
        let request = &self.request[..got];
        let verdict = if request_len > MAX_MESSAGE as u64 {
            Verdict::Refuse(libc::EINVAL)
        } else {
            filter::check(request, self.read_only)
        };
        let header = filter::header(request);
        if let Verdict::Refuse(errno) = verdict {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            let unique = header.map_or(0, |h| h.unique);
            return Ok(self.error_reply(unique, errno, reply_cap));
        }
        let served = self.serve(got, reply_cap);
        let n = match served {
            Ok(n) => n,
            Err(e) => {
                self.metrics.server_errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("virtio-fs: request failed: {e}");
                0
            }
        };
        if n > 0 {
            return Ok(n);
        }
        // Nothing written. FORGET and friends carry no reply buffers; a
        // request the server failed on still gets an answer, so that the
        // guest's waiter ends.
        let (unique, opcode) = header.map_or((0, 0), |h| (h.unique, h.opcode));
        let errno = if filter::has_no_reply(opcode) {
            0
        } else {
            libc::EIO
        };
        Ok(self.error_reply(unique, errno, reply_cap))
    }

    /// Runs the FUSE server on `self.request[..len]`; the reply is read
    /// back into `self.reply`.
    fn serve(&mut self, len: usize, reply_cap: usize) -> io::Result<usize> {
        self.sink.seek(SeekFrom::Start(0))?;
        let reader = Reader::<()>::from_fuse_buffer(FuseBuf::new(&mut self.request[..len]))
            .map_err(io::Error::other)?;
        let writer = FuseDevWriter::<()>::new(self.sink.as_raw_fd(), &mut self.reply[..reply_cap])
            .map_err(io::Error::other)?;
        self.server
            .handle_message(reader, writer.into(), None, None)
            .map_err(io::Error::other)?;
        let written =
            usize::try_from(self.sink.stream_position()?).map_or(reply_cap, |w| w.min(reply_cap));
        self.sink.read_exact_at(&mut self.reply[..written], 0)?;
        Ok(written)
    }

    /// Puts an error-only reply in `self.reply` if it fits the chain.
    fn error_reply(&mut self, unique: u64, errno: i32, reply_cap: usize) -> usize {
        if reply_cap < OUT_HEADER_LEN {
            return 0;
        }
        self.reply[..OUT_HEADER_LEN].copy_from_slice(&filter::error_reply(unique, errno));
        OUT_HEADER_LEN
    }
}

impl Fs {
    pub(super) fn process_queue(&mut self, index: u16) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let q = a
            .queues
            .get_mut(usize::from(index))
            .ok_or(QueueError::NoSuchQueue(index))?;
        if !q.ready() {
            return Ok(());
        }
        let mut used = false;
        while let Some(chain) = queue::pop_chain(q, &a.mem)? {
            let n = self.session.answer(&a.mem, &chain)?;
            let written =
                queue::write_segments(&a.mem, &chain.writable, 0, &self.session.reply[..n])?;
            a.dma
                .segments(&queue::split_segments(&chain.writable, written as u64).0);
            // At most MAX_MESSAGE.
            queue::add_used(q, &a.mem, chain.head, written as u32)?;
            used = true;
        }
        if used && queue::needs_notification(q, &a.mem) {
            a.interrupt.signal_used_queue(index);
        }
        Ok(())
    }
}
