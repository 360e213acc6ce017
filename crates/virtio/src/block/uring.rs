//! The Async engine's ring (Firecracker's `io_engine: Async`): reads,
//! writes and flushes handed to an io_uring, so a slow image does not
//! hold up the queue. Owns the ring, the eventfd the kernel signals
//! completions on (registered with the ring, watched by the event loop),
//! and the requests in flight: at most `depth`, each kept with what the
//! guest must be told (descriptor head, status byte, length) until the
//! kernel reports it done. Reads and writes go straight between the
//! image and guest memory through iovecs of the guest buffers' host
//! addresses; nothing is completed to the guest, reset or dropped before
//! the kernel has finished with those buffers.

use crate::queue::Segment;
use io_uring::{opcode, types, IoUring};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Most iovecs one read or write may take (the kernel's UIO_MAXIOV).
pub const MAX_IOVECS: usize = 1024;
/// The user_data of cancel requests, which have no slot.
const CANCEL: u64 = u64::MAX;

/// What the request does, with the bytes it must move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Read(u32),
    Write(u32),
    Flush,
}

/// What the guest is told when a request completes.
#[derive(Debug)]
pub(super) struct Reply {
    pub head: u16,
    pub status: GuestAddress,
    pub op: Op,
    /// The chain's writable buffers (reported to the DMA observer).
    pub writable: Vec<Segment>,
}

/// Host addresses of guest buffers, in the kernel's iovec layout.
struct IoVecs {
    _held: Vec<libc::iovec>,
}

// SAFETY: the pointers are never dereferenced by this process; they are
// handed to the kernel only. What they point to is guest RAM, which the
// ring's owner keeps mapped (a `GuestMemoryMmap` clone) until every
// request using them is done, whichever thread that happens on.
unsafe impl Send for IoVecs {}

/// A request in flight.
struct Pending {
    reply: Reply,
    /// Kept until completion: the kernel reads it when it consumes the
    /// entry, which a failed `io_uring_enter` can delay.
    _iovecs: IoVecs,
    /// Keeps the image open even if the drive's image is swapped.
    _file: Arc<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("io_uring_setup failed (the host kernel lacks io_uring or forbids it, e.g. kernel.io_uring_disabled or a seccomp filter: use the sync engine, io=sync or io_engine Sync)")]
    Setup(#[source] std::io::Error),
    #[error("cannot create the completion eventfd")]
    EventFd(#[source] std::io::Error),
    #[error(
        "cannot register the completion eventfd with io_uring (use io=sync or io_engine Sync)"
    )]
    RegisterEventFd(#[source] std::io::Error),
}

/// Why a request could not be handed to the ring (answered IOERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubmitError {
    /// A guest buffer is not mapped (cannot happen for validated chains).
    BadBuffer,
    /// More pieces than one readv/writev takes.
    TooManyIovecs,
    /// Every slot is taken (callers check [`AsyncIo::has_room`] first).
    Full,
}

pub(super) struct AsyncIo {
    ring: IoUring,
    eventfd: EventFd,
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
    /// Guest memory the requests in flight point into, held until none is.
    mem: Option<GuestMemoryMmap>,
}

impl AsyncIo {
    /// A ring for at most `depth` requests at once.
    pub fn new(depth: u16) -> Result<Self, UringError> {
        let depth = depth.max(1);
        let ring = IoUring::new(u32::from(depth).next_power_of_two()).map_err(UringError::Setup)?;
        let eventfd =
            EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(UringError::EventFd)?;
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(UringError::RegisterEventFd)?;
        Ok(AsyncIo {
            ring,
            eventfd,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..usize::from(depth)).rev().collect(),
            mem: None,
        })
    }

    /// The fd that becomes readable when requests complete.
    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Queues a read (`Op::Read`) or write of the guest buffers
    /// `iovecs` (from [`host_iovecs`]) at `offset` of `file`. The entry
    /// reaches the kernel at the next [`Self::submit`].
    pub fn push_rw(
        &mut self,
        mem: &GuestMemoryMmap,
        file: Arc<File>,
        offset: u64,
        iovecs: Vec<libc::iovec>,
        reply: Reply,
    ) -> Result<(), SubmitError> {
        let n = u32::try_from(iovecs.len())
            .ok()
            .filter(|&n| n as usize <= MAX_IOVECS)
            .ok_or(SubmitError::TooManyIovecs)?;
        let fd = types::Fd(file.as_raw_fd());
        let entry = match reply.op {
            Op::Read(_) => opcode::Readv::new(fd, iovecs.as_ptr(), n)
                .offset(offset)
                .build(),
            _ => opcode::Writev::new(fd, iovecs.as_ptr(), n)
                .offset(offset)
                .build(),
        };
        self.push(mem, entry, reply, IoVecs { _held: iovecs }, file)
    }

    /// Queues an fdatasync of `file`.
    pub fn push_flush(
        &mut self,
        mem: &GuestMemoryMmap,
        file: Arc<File>,
        reply: Reply,
    ) -> Result<(), SubmitError> {
        let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        let none = IoVecs { _held: Vec::new() };
        self.push(mem, entry, reply, none, file)
    }

    fn push(
        &mut self,
        mem: &GuestMemoryMmap,
        entry: io_uring::squeue::Entry,
        reply: Reply,
        iovecs: IoVecs,
        file: Arc<File>,
    ) -> Result<(), SubmitError> {
        let slot = self.free.pop().ok_or(SubmitError::Full)?;
        let entry = entry.user_data(slot as u64);
        // SAFETY: the entry points at `iovecs` (a heap array that does not
        // move when the Vec is moved into the slot below) and through them
        // at guest RAM, and names `file`'s descriptor. The slot keeps the
        // array and the file until the kernel reports the entry done, and
        // `self.mem` keeps guest RAM mapped until no slot is taken: reset
        // and drop wait for every request ([`Self::cancel_all`]), and a
        // request is completed to the guest only from its CQE, so the
        // guest cannot reuse a buffer the kernel still writes.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            self.free.push(slot);
            return Err(SubmitError::Full);
        }
        if self.mem.is_none() {
            self.mem = Some(mem.clone());
        }
        self.slots[slot] = Some(Pending {
            reply,
            _iovecs: iovecs,
            _file: file,
        });
        Ok(())
    }

    /// Hands the queued entries to the kernel. Entries it did not take
    /// (it is short of memory: EAGAIN) stay queued; the eventfd is
    /// signalled so the event loop comes back and submits them, even when
    /// nothing else is in flight to wake it.
    pub fn submit(&mut self) {
        loop {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("virtio-blk: io_uring submit failed ({e}); retrying");
                    if let Err(e) = self.eventfd.write(1) {
                        log::error!("virtio-blk: cannot schedule the retry: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// The requests the kernel has finished, with their results (bytes
    /// moved, or a negative errno). Clears the eventfd first, so a
    /// completion arriving after this call signals it again.
    pub fn reap(&mut self) -> Vec<(Reply, i32)> {
        let _ = self.eventfd.read();
        let finished: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|cqe| (cqe.user_data(), cqe.result()))
            .collect();
        let mut done = Vec::with_capacity(finished.len());
        for (user_data, res) in finished {
            if let Some(p) = self.take(user_data) {
                done.push((p.reply, res));
            }
        }
        if self.free.len() == self.slots.len() {
            self.mem = None;
        }
        done
    }

    fn take(&mut self, user_data: u64) -> Option<Pending> {
        let slot = usize::try_from(user_data).ok()?;
        let p = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(p)
    }

    /// Cancels what can be cancelled and waits for everything in flight;
    /// nothing is reported to the guest. Used on reset and drop, so no
    /// completion writes into guest memory afterwards.
    pub fn cancel_all(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        // SAFETY: a cancel entry points at no memory.
        let _ = unsafe { self.ring.submission().push(&cancel) };
        while self.in_flight() > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Guest memory stays mapped (self.mem) until the
                    // requests finish; only the guest's view suffers.
                    log::error!("virtio-blk: cannot wait for io_uring requests: {e}");
                    return;
                }
            }
            let dropped = self.reap().len();
            log::debug!("virtio-blk: {dropped} requests in flight dropped on reset");
        }
    }
}

impl Drop for AsyncIo {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// Host addresses of `segs`, split where guest memory regions end;
/// `access` is what the I/O does to them (a read from the image writes).
pub(super) fn host_iovecs(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    access: Permissions,
) -> Result<Vec<libc::iovec>, SubmitError> {
    let mut v = Vec::with_capacity(segs.len());
    for s in segs {
        let slices = mem
            .get_slices(s.addr, s.len as usize, access)
            .map_err(|_| SubmitError::BadBuffer)?;
        for slice in slices {
            let slice = slice.map_err(|_| SubmitError::BadBuffer)?;
            v.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
            if v.len() > MAX_IOVECS {
                return Err(SubmitError::TooManyIovecs);
            }
        }
    }
    Ok(v)
}

/// Whether every iovec starts and ends on an `align` boundary (what
/// O_DIRECT needs of buffers).
pub(super) fn aligned(iovecs: &[libc::iovec], align: usize) -> bool {
    iovecs
        .iter()
        .all(|io| (io.iov_base as usize).is_multiple_of(align) && io.iov_len.is_multiple_of(align))
}
