//! A network backend over a connected stream socket speaking QEMU's
//! "stream" netdev protocol, which passt (user-mode networking) serves:
//! each Ethernet frame is preceded by its length as a 32-bit big-endian
//! number. The frames carry no virtio-net header: on receive a zeroed
//! 12-byte header is put in front (no checksum or segmentation offload,
//! so the device offers none of them with this backend), on send the
//! guest's header is stripped.
//!
//! Reads never block (the event loop is edge-triggered: `recv` returns
//! `WouldBlock` only once the socket has nothing more); a frame is
//! written whole, waiting at most [`SEND_TIMEOUT`] for room, so the
//! length prefixes stay in step. When the peer hangs up or the stream
//! breaks, every call fails with `NotConnected` from then on and the
//! cause is logged once.

use super::device::NetBackend;
use super::tap::VNET_HDR_LEN;
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The largest Ethernet frame accepted either way: passt's largest MTU
/// (65520) plus the Ethernet and a VLAN header.
pub const MAX_ETH_FRAME: usize = 65520 + 18;
/// How long a frame's write may wait for the peer to make room.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 128 << 10;
/// Length of the frame length prefix.
const PREFIX: usize = 4;

/// Splits complete frames off a buffer of stream bytes.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

/// A length prefix no frame can have: the stream is not what we expect.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame length {0} is 0 or over {MAX_ETH_FRAME}: the stream is out of step")]
pub struct BadFrameLength(pub usize);

impl FrameDecoder {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` until all its bytes are in.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, BadFrameLength> {
        let rest = &self.buf[self.start..];
        let Some(prefix) = rest.get(..PREFIX) else {
            return Ok(None);
        };
        let mut len = [0u8; PREFIX];
        len.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_ETH_FRAME {
            return Err(BadFrameLength(len));
        }
        if rest.len() < PREFIX + len {
            self.compact();
            return Ok(None);
        }
        let from = self.start + PREFIX;
        self.start = from + len;
        Ok(Some(&self.buf[from..from + len]))
    }

    /// Drops consumed bytes once they are most of the buffer.
    fn compact(&mut self) {
        if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// `frame` (after the virtio-net header) with its length prefix; `None`
/// when it is empty or too large to send.
pub fn encode_frame(frame_with_header: &[u8]) -> Option<Vec<u8>> {
    let eth = frame_with_header.get(VNET_HDR_LEN..)?;
    if eth.is_empty() || eth.len() > MAX_ETH_FRAME {
        return None;
    }
    let len = u32::try_from(eth.len()).ok()?;
    let mut out = Vec::with_capacity(PREFIX + eth.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(eth);
    Some(out)
}

/// The backend: a connected Unix stream socket (passt's `--socket`).
pub struct StreamBackend {
    sock: UnixStream,
    decoder: FrameDecoder,
    chunk: Vec<u8>,
    broken: bool,
}

impl StreamBackend {
    /// Takes over a connected socket; it is left in blocking mode, with
    /// writes bounded by [`SEND_TIMEOUT`] and reads made non-blocking per
    /// call.
    pub fn new(sock: UnixStream) -> io::Result<Self> {
        sock.set_nonblocking(false)?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(StreamBackend {
            sock,
            decoder: FrameDecoder::default(),
            chunk: vec![0; READ_CHUNK],
            broken: false,
        })
    }

    fn fail(&mut self, why: &str) -> io::Error {
        if !self.broken {
            log::error!("user network: {why}; the guest's network is down from now on");
            self.broken = true;
        }
        io::Error::from(ErrorKind::NotConnected)
    }

    /// Reads what the socket has without waiting: `Ok(0)` at end of stream.
    fn read_some(&mut self) -> io::Result<usize> {
        // SAFETY: recv writes at most `chunk.len()` bytes into `chunk`,
        // which this struct owns and which outlives the call; the fd is
        // the socket this struct owns.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.chunk.as_mut_ptr().cast(),
                self.chunk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // n >= 0 and at most chunk.len().
        Ok(n as usize)
    }
}

impl NetBackend for StreamBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.broken {
            return Err(io::Error::from(ErrorKind::NotConnected));
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let total = VNET_HDR_LEN + frame.len();
                    let Some(out) = buf.get_mut(..total) else {
                        // Cannot happen with the device's buffer; skip it.
                        continue;
                    };
                    out[..VNET_HDR_LEN].fill(0);
                    out[VNET_HDR_LEN..].copy_from_slice(frame);
                    return Ok(total);
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(&e.to_string())),
            }
            match self.read_some() {
                Ok(0) => return Err(self.fail("passt closed the connection (did it exit?)")),
                Ok(n) => {
                    let (decoder, chunk) = (&mut self.decoder, &self.chunk);
                    decoder.push(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(e),
                Err(e) => return Err(self.fail(&format!("reading from passt failed: {e}"))),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(io::Error::from(ErrorKind::NotConnected));
        }
        let Some(bytes) = encode_frame(frame) else {
            return Err(io::Error::from(ErrorKind::InvalidInput));
        };
        // write_all retries on EINTR; a timeout or error mid-frame leaves
        // the stream out of step, so the connection is given up.
        match self.sock.write_all(&bytes) {
            Ok(()) => Ok(frame.len()),
            Err(e) => Err(self.fail(&format!("writing to passt failed: {e}"))),
        }
    }

    fn set_offload(&mut self, _tun_flags: u32) -> io::Result<()> {
        Ok(())
    }

    fn offloads(&self) -> bool {
        false
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn with_header(eth: &[u8]) -> Vec<u8> {
        let mut f = vec![0xAA; VNET_HDR_LEN];
        f.extend_from_slice(eth);
        f
    }

    #[test]
    fn decoder_splits_frames_across_pushes() {
        let mut d = FrameDecoder::default();
        let mut stream = encode_frame(&with_header(b"first")).unwrap();
        stream.extend(encode_frame(&with_header(b"second!")).unwrap());
        d.push(&stream[..3]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&stream[3..12]);
        assert_eq!(d.next_frame(), Ok(Some(&b"first"[..])));
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&stream[12..]);
        assert_eq!(d.next_frame(), Ok(Some(&b"second!"[..])));
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn decoder_refuses_impossible_lengths() {
        let mut d = FrameDecoder::default();
        d.push(&0u32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(BadFrameLength(0)));
        let mut d = FrameDecoder::default();
        d.push(&u32::MAX.to_be_bytes());
        assert_eq!(d.next_frame(), Err(BadFrameLength(u32::MAX as usize)));
    }

    #[test]
    fn encode_strips_the_header_and_prefixes_the_length() {
        let out = encode_frame(&with_header(&[1, 2, 3])).unwrap();
        assert_eq!(out, [0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(encode_frame(&[0; VNET_HDR_LEN]), None);
        assert_eq!(encode_frame(&[0; 4]), None);
        assert_eq!(
            encode_frame(&vec![0; VNET_HDR_LEN + MAX_ETH_FRAME + 1]),
            None
        );
    }

    #[test]
    fn backend_round_trip_over_a_socket_pair() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::new(ours).unwrap();
        let mut buf = vec![0u8; 70_000];
        assert_eq!(b.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        // Two frames in one write, then half of a third.
        let big = vec![7u8; 60_000];
        let mut wire = encode_frame(&with_header(b"hello")).unwrap();
        wire.extend(encode_frame(&with_header(&big)).unwrap());
        let third = encode_frame(&with_header(b"tail")).unwrap();
        wire.extend_from_slice(&third[..5]);
        peer.write_all(&wire).unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&buf[VNET_HDR_LEN..n], b"hello");
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(n, VNET_HDR_LEN + big.len());
        assert!(buf[VNET_HDR_LEN..n].iter().all(|&x| x == 7));
        assert_eq!(b.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        peer.write_all(&third[5..]).unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[VNET_HDR_LEN..n], b"tail");

        assert_eq!(b.send(&with_header(b"out")).unwrap(), VNET_HDR_LEN + 3);
        let mut got = [0u8; 7];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 0, 0, 3, b'o', b'u', b't']);
        assert!(!b.offloads());
    }

    #[test]
    fn backend_reports_a_hang_up_and_stays_down() {
        let (ours, peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::new(ours).unwrap();
        drop(peer);
        let mut buf = vec![0u8; 100];
        assert_eq!(
            b.recv(&mut buf).unwrap_err().kind(),
            ErrorKind::NotConnected
        );
        assert_eq!(
            b.send(&with_header(b"x")).unwrap_err().kind(),
            ErrorKind::NotConnected
        );
    }

    #[test]
    fn backend_drops_a_corrupt_stream() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::new(ours).unwrap();
        peer.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2]).unwrap();
        let mut buf = vec![0u8; 100];
        assert_eq!(
            b.recv(&mut buf).unwrap_err().kind(),
            ErrorKind::NotConnected
        );
    }
}
