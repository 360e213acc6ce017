//! The limiter's timerfd (vmm-sys-util's [`TimerFd`]), made non-blocking:
//! the event loop thread drains it under the device lock while a vCPU
//! thread may have re-armed it, and a blocking read of a re-armed timer
//! would hold that lock until it expired.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use vmm_sys_util::timerfd::TimerFd;

#[derive(Debug)]
pub(crate) struct Timer(TimerFd);

impl Timer {
    pub fn new() -> std::io::Result<Self> {
        let t = TimerFd::new().map_err(std::io::Error::from)?;
        let fd = t.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor this struct owns; no
        // memory is passed.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
        };
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Timer(t))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Fires once in `ns` nanoseconds (at least 1: zero would disarm).
    pub fn arm(&mut self, ns: u64) -> std::io::Result<()> {
        self.0
            .reset(Duration::from_nanos(ns.max(1)), None)
            .map_err(std::io::Error::from)
    }

    /// Reads the expiry count if there is one; never blocks.
    pub fn drain(&mut self) {
        // EAGAIN (not expired or already read) is the expected miss.
        let _ = self.0.wait();
    }

    #[cfg(test)]
    pub fn is_armed(&self) -> bool {
        self.0.is_armed().unwrap_or(false)
    }
}
