//! The translator's host code buffer: one shared-memory object mapped
//! twice, read-write (where the emitter copies code) and read-execute
//! (where it runs), so no page is ever writable and executable through
//! the same mapping. A bump allocator hands out space; when it is full
//! the whole buffer starts over and its generation moves on, which
//! invalidates every translation made before.

use std::ptr;

/// Why the buffer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BufError {
    #[error("memfd_create: {0}")]
    Memfd(std::io::Error),
    #[error("ftruncate: {0}")]
    Truncate(std::io::Error),
    #[error("mmap: {0}")]
    Map(std::io::Error),
}

/// A double-mapped code buffer.
pub struct CodeBuf {
    rw: *mut u8,
    rx: *mut u8,
    size: usize,
    used: usize,
    /// Bumped whenever the buffer starts over.
    pub gen: u64,
}

impl CodeBuf {
    /// A buffer of `size` bytes (a multiple of the page size).
    pub fn new(size: usize) -> Result<CodeBuf, BufError> {
        let name = c"vessel-jit";
        // SAFETY: a valid NUL-terminated name and flags; the result is
        // checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(BufError::Memfd(std::io::Error::last_os_error()));
        }
        let close = |fd| {
            // SAFETY: `fd` is ours and closed once (the mappings keep the
            // object alive).
            unsafe { libc::close(fd) };
        };
        // SAFETY: `fd` is the memfd just created.
        if unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
            let e = std::io::Error::last_os_error();
            close(fd);
            return Err(BufError::Truncate(e));
        }
        let map = |prot| {
            // SAFETY: a fresh shared mapping of our own memfd; the kernel
            // picks the address, nothing else is overlapped.
            let p = unsafe { libc::mmap(ptr::null_mut(), size, prot, libc::MAP_SHARED, fd, 0) };
            if p == libc::MAP_FAILED {
                Err(BufError::Map(std::io::Error::last_os_error()))
            } else {
                Ok(p.cast::<u8>())
            }
        };
        let rw = match map(libc::PROT_READ | libc::PROT_WRITE) {
            Ok(p) => p,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        };
        let rx = match map(libc::PROT_READ | libc::PROT_EXEC) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: `rw` was mapped above with this size.
                unsafe { libc::munmap(rw.cast(), size) };
                close(fd);
                return Err(e);
            }
        };
        close(fd);
        Ok(CodeBuf {
            rw,
            rx,
            size,
            used: 0,
            gen: 1,
        })
    }

    /// The executable address the next allocation will get.
    pub fn next_addr(&self) -> u64 {
        self.rx as u64 + self.used as u64
    }

    /// Room left in bytes.
    pub fn room(&self) -> usize {
        self.size - self.used
    }

    /// Drops every translation: the buffer starts over.
    pub fn reset(&mut self) {
        self.used = 0;
        self.gen = self.gen.wrapping_add(1);
    }

    /// Copies `code` (assembled for [`CodeBuf::next_addr`]) in and returns
    /// its executable address, or None when it does not fit.
    pub fn put(&mut self, code: &[u8]) -> Option<usize> {
        if code.len() > self.room() {
            return None;
        }
        let at = self.used;
        // SAFETY: `at + code.len() <= size`, inside the writable mapping,
        // which no Rust reference covers; the bytes at this offset are
        // not running (a bump allocator never reuses space before
        // `reset`, and nothing runs translated code while the buffer is
        // being written).
        unsafe { ptr::copy_nonoverlapping(code.as_ptr(), self.rw.add(at), code.len()) };
        // Keep entries 16-byte aligned.
        self.used = (at + code.len() + 15) & !15;
        self.used = self.used.min(self.size);
        Some(self.rx as usize + at)
    }
}

impl CodeBuf {
    /// The code emitted since the buffer last started over, and the
    /// address it runs at (for profiling dumps).
    pub fn used_code(&self) -> (u64, &[u8]) {
        // SAFETY: the first `used` bytes of the read-write mapping hold
        // emitted code, written only through `put` (which needs `&mut
        // self`, so not while this borrow lives).
        let code = unsafe { std::slice::from_raw_parts(self.rw, self.used) };
        (self.rx as u64, code)
    }
}

impl Drop for CodeBuf {
    fn drop(&mut self) {
        // SAFETY: both mappings were made in `new` with `size` and nothing
        // runs from them any more (the owner is being dropped).
        unsafe {
            libc::munmap(self.rw.cast(), self.size);
            libc::munmap(self.rx.cast(), self.size);
        }
    }
}

// SAFETY: the buffer owns its two mappings outright (no other handle to
// the memfd survives `new`); moving it to another thread moves that
// ownership with it.
unsafe impl Send for CodeBuf {}
