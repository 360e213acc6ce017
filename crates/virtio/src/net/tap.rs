//! A TAP interface: opened through /dev/net/tun in non-blocking mode with
//! IFF_VNET_HDR, header size and offloads set by ioctl. The only unsafe
//! code is the ioctls on the fd this type owns.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// TUNSETOFFLOAD bits.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;

/// Bytes of the virtio-net header with VERSION_1 (num_buffers included).
pub const VNET_HDR_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap name {0:?} is empty or longer than 15 bytes")]
    Name(String),
    #[error("cannot open /dev/net/tun")]
    Open(#[source] std::io::Error),
    #[error("{op} failed")]
    Ioctl {
        op: &'static str,
        source: std::io::Error,
    },
}

pub struct Tap {
    file: File,
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    /// Opens (or creates) TAP interface `name`.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() > 15 || name.contains('\0') {
            return Err(TapError::Name(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let tap = Tap { file };
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which
        // IfReq matches in size and layout; `req` outlives the call.
        let r = unsafe { libc::ioctl(tap.fd(), TUNSETIFF, &mut req as *mut IfReq) };
        tap.check(r, "TUNSETIFF")?;
        let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer.
        let r = unsafe { libc::ioctl(tap.fd(), TUNSETVNETHDRSZ, &size as *const libc::c_int) };
        tap.check(r, "TUNSETVNETHDRSZ")?;
        Ok(tap)
    }

    fn check(&self, r: libc::c_int, op: &'static str) -> Result<(), TapError> {
        if r < 0 {
            Err(TapError::Ioctl {
                op,
                source: std::io::Error::last_os_error(),
            })
        } else {
            Ok(())
        }
    }

    /// Which offloaded packets the TAP may hand us.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        let r = unsafe { libc::ioctl(self.fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
        self.check(r, "TUNSETOFFLOAD")
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// One frame (with its header) into `buf`; `WouldBlock` when none.
    pub fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    /// One frame (with its header).
    pub fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
}
