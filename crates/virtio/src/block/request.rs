//! Parsing a block request out of a validated chain: a 16-byte header
//! (type, reserved, sector) at the start of the readable buffers, data
//! buffers, and the status byte as the last writable byte. Kept free of
//! I/O so the fuzz target can feed it arbitrary chains.

use crate::queue::{self, Chain, QueueError, Segment};
use vm_memory::{GuestAddress, GuestMemoryMmap};

pub const SECTOR_SIZE: u64 = 512;
pub const HEADER_SIZE: u64 = 16;
/// The GET_ID string length.
pub const ID_BYTES: usize = 20;

/// Request types (virtio 1.2 section 5.2.6).
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

/// Status byte values.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Unsupported(u32),
}

/// A parsed request. `data` are the buffers the request reads or fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    pub sector: u64,
    pub data: Vec<Segment>,
    pub status: GuestAddress,
}

/// What makes a chain unanswerable or a request malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// No writable byte for the status: nothing can be reported, so the
    /// chain is a protocol error.
    #[error("request has no status byte")]
    NoStatus,
    /// The request is answered with an I/O error status.
    #[error("request header is shorter than 16 bytes")]
    ShortHeader { status: GuestAddress },
}

impl ParseError {
    pub fn into_queue_error(self) -> QueueError {
        QueueError::MissingBuffer {
            needed: "a writable status byte",
            got: "none",
        }
    }
}

/// Parses `chain` into a request.
pub fn parse(chain: &Chain, mem: &GuestMemoryMmap) -> Result<Request, ParseError> {
    let wlen = queue::segments_len(&chain.writable);
    if wlen == 0 {
        return Err(ParseError::NoStatus);
    }
    let (wdata, status_seg) = queue::split_segments(&chain.writable, wlen - 1);
    let status = status_seg
        .first()
        .map(|s| s.addr)
        .ok_or(ParseError::NoStatus)?;
    let mut header = [0u8; HEADER_SIZE as usize];
    let got = queue::read_segments(mem, &chain.readable, 0, &mut header)
        .map_err(|_| ParseError::ShortHeader { status })?;
    if got < header.len() {
        return Err(ParseError::ShortHeader { status });
    }
    let [a, b, c, d, _, _, _, _, s @ ..] = header;
    let kind = match u32::from_le_bytes([a, b, c, d]) {
        T_IN => RequestKind::In,
        T_OUT => RequestKind::Out,
        T_FLUSH => RequestKind::Flush,
        T_GET_ID => RequestKind::GetId,
        T_DISCARD => RequestKind::Discard,
        T_WRITE_ZEROES => RequestKind::WriteZeroes,
        t => RequestKind::Unsupported(t),
    };
    let sector = u64::from_le_bytes(s);
    let (_, rdata) = queue::split_segments(&chain.readable, HEADER_SIZE);
    let data = match kind {
        RequestKind::In | RequestKind::GetId => wdata,
        RequestKind::Out | RequestKind::Discard | RequestKind::WriteZeroes => rdata,
        RequestKind::Flush | RequestKind::Unsupported(_) => Vec::new(),
    };
    Ok(Request {
        kind,
        sector,
        data,
        status,
    })
}

/// One range of a discard or write-zeroes request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub sector: u64,
    pub sectors: u32,
    pub unmap: bool,
}

/// Why a range list is refused (answered with a status, not a reset).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("range list is not a whole number of 16-byte entries")]
    Ragged,
    #[error("more than {0} ranges")]
    TooMany(u32),
    #[error("unknown range flags {0:#x}")]
    Flags(u32),
    #[error("guest memory access failed")]
    Memory,
}

/// Reads the ranges of a discard/write-zeroes request.
pub fn parse_ranges(
    mem: &GuestMemoryMmap,
    data: &[Segment],
    max: u32,
) -> Result<Vec<Range>, RangeError> {
    let len = queue::segments_len(data);
    if !len.is_multiple_of(16) || len == 0 {
        return Err(RangeError::Ragged);
    }
    if len / 16 > u64::from(max) {
        return Err(RangeError::TooMany(max));
    }
    let mut out = Vec::new();
    for i in 0..len / 16 {
        let mut e = [0u8; 16];
        let got =
            queue::read_segments(mem, data, i * 16, &mut e).map_err(|_| RangeError::Memory)?;
        if got != 16 {
            return Err(RangeError::Memory);
        }
        let [s0, s1, s2, s3, s4, s5, s6, s7, n0, n1, n2, n3, f0, f1, f2, f3] = e;
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        if flags & !1 != 0 {
            return Err(RangeError::Flags(flags));
        }
        out.push(Range {
            sector: u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
            sectors: u32::from_le_bytes([n0, n1, n2, n3]),
            unmap: flags & 1 != 0,
        });
    }
    Ok(out)
}
