//! Host Unix stream sockets the device opens itself: a connection to a
//! host program's listener made without blocking, so a listener whose
//! backlog is full (or a program that never accepts) refuses the guest's
//! connection instead of stalling the thread that serves the device.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects to the stream listener at `path` without waiting: a full
/// backlog is `WouldBlock`, no listener `NotFound`/`ConnectionRefused`.
/// The stream returned is non-blocking.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    // One byte stays for the terminating NUL.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path does not fit a unix socket address",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain system call with constant arguments; it returns a
    // new descriptor or -1 and touches no memory of ours.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor socket() just created; nothing else
    // owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid, NUL-terminated sockaddr_un that lives
    // across the call, and `len` (at most its size) covers only it; the
    // kernel reads it and writes nothing back.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn connects_to_a_listener_and_refuses_without_one() {
        let dir = std::env::temp_dir().join(format!("vessel-vsock-unix-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("l");
        let _ = std::fs::remove_file(&path);
        assert!(connect(&path).is_err(), "nothing listens yet");
        let listener = UnixListener::bind(&path).unwrap();
        let mut s = connect(&path).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        s.set_nonblocking(false).unwrap();
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        assert!(connect(&dir.join("x".repeat(200))).is_err(), "too long");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
