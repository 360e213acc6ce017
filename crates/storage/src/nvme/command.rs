//! Submission queue entries and what the controller does with them: the
//! admin commands a driver needs to bring up I/O queues (Identify, Create
//! and Delete I/O SQ/CQ, Set/Get Features, Get Log Page, Abort, Async
//! Event Request, Keep Alive) and the NVM I/O commands Read, Write and
//! Flush. Every field is checked; a bad one gives an error status.

use super::controller::{CompQueue, Controller, SubQueue, MAX_IO_QUEUES, MAX_QUEUE_ENTRIES};
use super::identify::{self, Facts, IDENTIFY_BYTES, MDTS};
use super::prp::{self, PrpError, PAGE};
use virtio::block::ImageError;

/// Status codes: (SCT << 8 | SC), plus Do Not Retry for errors.
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const INVALID_OPCODE: u16 = 0x01;
    pub const INVALID_FIELD: u16 = 0x02;
    pub const DATA_TRANSFER_ERROR: u16 = 0x04;
    pub const INTERNAL_ERROR: u16 = 0x06;
    pub const INVALID_NAMESPACE: u16 = 0x0b;
    pub const PRP_OFFSET_INVALID: u16 = 0x13;
    pub const LBA_OUT_OF_RANGE: u16 = 0x80;
    pub const CQ_INVALID: u16 = 0x100;
    pub const INVALID_QUEUE_ID: u16 = 0x101;
    pub const INVALID_QUEUE_SIZE: u16 = 0x102;
    pub const AER_LIMIT: u16 = 0x105;
    pub const INVALID_VECTOR: u16 = 0x108;
    pub const INVALID_LOG_PAGE: u16 = 0x109;
    pub const INVALID_QUEUE_DELETION: u16 = 0x10c;
    pub const READ_ONLY: u16 = 0x182;
    pub const WRITE_FAULT: u16 = 0x280;
    pub const READ_ERROR: u16 = 0x281;
    /// Do Not Retry.
    pub const DNR: u16 = 1 << 14;
}

use status::*;

/// The fields of a 64-byte submission queue entry the controller uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Command {
    pub opcode: u8,
    /// FUSE and PSDT (non-zero: fused or SGL, neither supported).
    pub flags: u8,
    pub cid: u16,
    pub nsid: u32,
    pub prp1: u64,
    pub prp2: u64,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
}

fn le32(b: &[u8; 64], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8; 64], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

impl Command {
    pub fn parse(b: &[u8; 64]) -> Self {
        Command {
            opcode: b[0],
            flags: b[1],
            cid: u16::from_le_bytes([b[2], b[3]]),
            nsid: le32(b, 4),
            prp1: le64(b, 24),
            prp2: le64(b, 32),
            cdw10: le32(b, 40),
            cdw11: le32(b, 44),
            cdw12: le32(b, 48),
        }
    }
}

/// What happened to a command.
pub enum Outcome {
    /// Complete it with this DW0 and status.
    Done { dw0: u32, status: u16 },
    /// Left outstanding (an Asynchronous Event Request).
    Pending,
}

type Result<T> = std::result::Result<T, u16>;

fn done(r: Result<u32>) -> Outcome {
    match r {
        Ok(dw0) => Outcome::Done {
            dw0,
            status: SUCCESS,
        },
        Err(s) => Outcome::Done {
            dw0: 0,
            status: s | DNR,
        },
    }
}

fn prp_status(e: PrpError) -> u16 {
    match e {
        PrpError::Offset => PRP_OFFSET_INVALID,
        PrpError::Memory => DATA_TRANSFER_ERROR,
    }
}

/// Admin opcodes.
const DELETE_SQ: u8 = 0x00;
const CREATE_SQ: u8 = 0x01;
const GET_LOG_PAGE: u8 = 0x02;
const DELETE_CQ: u8 = 0x04;
const CREATE_CQ: u8 = 0x05;
const IDENTIFY: u8 = 0x06;
const ABORT: u8 = 0x08;
const SET_FEATURES: u8 = 0x09;
const GET_FEATURES: u8 = 0x0a;
const ASYNC_EVENT: u8 = 0x0c;
const KEEP_ALIVE: u8 = 0x18;
/// NVM opcodes.
const FLUSH: u8 = 0x00;
const WRITE: u8 = 0x01;
const READ: u8 = 0x02;
/// Features.
const FEAT_ARBITRATION: u32 = 0x01;
const FEAT_POWER: u32 = 0x02;
const FEAT_TEMPERATURE: u32 = 0x04;
const FEAT_WRITE_CACHE: u32 = 0x06;
const FEAT_QUEUES: u32 = 0x07;
const FEAT_COALESCING: u32 = 0x08;
const FEAT_VECTOR_CONFIG: u32 = 0x09;
const FEAT_ASYNC_EVENT: u32 = 0x0b;

/// Both halves of the Number of Queues answer: MAX_IO_QUEUES, 0-based.
const QUEUES_GRANTED: u32 = (MAX_IO_QUEUES as u32 - 1) * 0x1_0001;

impl Controller {
    pub(super) fn admin(&mut self, c: &Command) -> Outcome {
        if c.flags != 0 {
            return done(Err(INVALID_FIELD));
        }
        match c.opcode {
            ASYNC_EVENT => {
                if self.aers > 3 {
                    return done(Err(AER_LIMIT));
                }
                self.aers += 1;
                Outcome::Pending
            }
            DELETE_SQ => done(self.delete_sq(c)),
            CREATE_SQ => done(self.create_sq(c)),
            GET_LOG_PAGE => done(self.log_page(c)),
            DELETE_CQ => done(self.delete_cq(c)),
            CREATE_CQ => done(self.create_cq(c)),
            IDENTIFY => done(self.identify(c)),
            // Bit 0 set: the command was not aborted.
            ABORT => done(Ok(1)),
            SET_FEATURES => done(self.set_feature(c)),
            GET_FEATURES => done(self.get_feature(c)),
            KEEP_ALIVE => done(Ok(0)),
            _ => done(Err(INVALID_OPCODE)),
        }
    }

    /// Queue ID and size (1-based) of a create command; the ID must be a
    /// free I/O queue slot of `queues`.
    fn new_queue<T>(queues: &[Option<T>], c: &Command) -> Result<(usize, u32)> {
        let qid = usize::from(c.cdw10 as u16);
        let size = (c.cdw10 >> 16) + 1;
        if qid == 0 || !matches!(queues.get(qid), Some(None)) {
            return Err(INVALID_QUEUE_ID);
        }
        if !(2..=MAX_QUEUE_ENTRIES).contains(&size) {
            return Err(INVALID_QUEUE_SIZE);
        }
        // Physically contiguous (PC) is required: CAP.CQR.
        if c.cdw11 & 1 == 0 || !c.prp1.is_multiple_of(PAGE) {
            return Err(INVALID_FIELD);
        }
        Ok((qid, size))
    }

    fn create_cq(&mut self, c: &Command) -> Result<u32> {
        let (qid, size) = Self::new_queue(&self.cqs, c)?;
        if !self.io_cq_entry_ok() || !self.in_memory(c.prp1, u64::from(size) * 16) {
            return Err(INVALID_FIELD);
        }
        let vector = (c.cdw11 >> 16) as u16;
        if vector >= self.msix.vectors() {
            return Err(INVALID_VECTOR);
        }
        self.cqs[qid] = Some(CompQueue {
            base: c.prp1,
            size,
            head: 0,
            tail: 0,
            phase: true,
            vector: (c.cdw11 & 2 != 0).then_some(vector),
        });
        Ok(0)
    }

    fn create_sq(&mut self, c: &Command) -> Result<u32> {
        let (qid, size) = Self::new_queue(&self.sqs, c)?;
        let cqid = (c.cdw11 >> 16) as u16;
        if cqid == 0 || !matches!(self.cqs.get(usize::from(cqid)), Some(Some(_))) {
            return Err(CQ_INVALID);
        }
        if !self.io_sq_entry_ok() || !self.in_memory(c.prp1, u64::from(size) * 64) {
            return Err(INVALID_FIELD);
        }
        self.sqs[qid] = Some(SubQueue {
            base: c.prp1,
            size,
            head: 0,
            tail: 0,
            cqid,
        });
        Ok(0)
    }

    fn delete_sq(&mut self, c: &Command) -> Result<u32> {
        let qid = usize::from(c.cdw10 as u16);
        match self.sqs.get_mut(qid) {
            Some(q @ Some(_)) if qid != 0 => {
                *q = None;
                Ok(0)
            }
            _ => Err(INVALID_QUEUE_ID),
        }
    }

    fn delete_cq(&mut self, c: &Command) -> Result<u32> {
        let qid = c.cdw10 as u16;
        if qid == 0 || !matches!(self.cqs.get(usize::from(qid)), Some(Some(_))) {
            return Err(INVALID_QUEUE_ID);
        }
        if self.sqs.iter().flatten().any(|s| s.cqid == qid) {
            return Err(INVALID_QUEUE_DELETION);
        }
        self.cqs[usize::from(qid)] = None;
        Ok(0)
    }

    /// Copies `data` to the command's PRPs (at most `limit` bytes of it).
    fn give(&mut self, c: &Command, data: &[u8], limit: usize) -> Result<u32> {
        let n = data.len().min(limit);
        let segs = prp::segments(&self.mem, c.prp1, c.prp2, n as u64).map_err(prp_status)?;
        virtio::queue::write_segments(&self.mem, &segs, 0, &data[..n])
            .map_err(|_| DATA_TRANSFER_ERROR)?;
        self.dma.segments(&segs);
        Ok(0)
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            serial: &self.serial,
            sectors: self.image.sectors(),
            readonly: self.image.readonly(),
            write_cache: self.image.flushes(),
            version: super::controller::VERSION,
        }
    }

    fn identify(&mut self, c: &Command) -> Result<u32> {
        let data = match c.cdw10 & 0xff {
            0x00 if c.nsid == 1 => identify::namespace(&self.facts()),
            // Namespace 1 has no identifiers to list.
            0x03 if c.nsid == 1 => vec![0; IDENTIFY_BYTES],
            0x00 | 0x03 => return Err(INVALID_NAMESPACE),
            0x01 => identify::controller(&self.facts()),
            0x02 if c.nsid < 0xffff_fffe => identify::active_list(c.nsid),
            _ => return Err(INVALID_FIELD),
        };
        self.give(c, &data, IDENTIFY_BYTES)
    }

    /// Error, SMART and firmware logs, all zero (nothing to report).
    fn log_page(&mut self, c: &Command) -> Result<u32> {
        let lid = c.cdw10 & 0xff;
        if !(1..=3).contains(&lid) {
            return Err(INVALID_LOG_PAGE);
        }
        let dwords = ((c.cdw10 >> 16) | (c.cdw11 & 0xffff) << 16) as usize + 1;
        let zeros = [0u8; 4096];
        self.give(c, &zeros, dwords.saturating_mul(4))
    }

    fn set_feature(&mut self, c: &Command) -> Result<u32> {
        match c.cdw10 & 0xff {
            FEAT_QUEUES => {
                // 0xffff asks for 65536 queues: not allowed.
                if c.cdw11 & 0xffff == 0xffff || c.cdw11 >> 16 == 0xffff {
                    return Err(INVALID_FIELD);
                }
                Ok(QUEUES_GRANTED)
            }
            FEAT_WRITE_CACHE => {
                self.write_cache = c.cdw11 & 1 != 0;
                Ok(0)
            }
            FEAT_ARBITRATION | FEAT_POWER | FEAT_TEMPERATURE | FEAT_COALESCING
            | FEAT_VECTOR_CONFIG | FEAT_ASYNC_EVENT => Ok(0),
            _ => Err(INVALID_FIELD),
        }
    }

    fn get_feature(&mut self, c: &Command) -> Result<u32> {
        match c.cdw10 & 0xff {
            FEAT_QUEUES => Ok(QUEUES_GRANTED),
            FEAT_WRITE_CACHE => Ok(u32::from(self.write_cache)),
            FEAT_TEMPERATURE => Ok(0x0157), // 343 K threshold
            FEAT_VECTOR_CONFIG => Ok(c.cdw11 & 0xffff),
            FEAT_ARBITRATION | FEAT_POWER | FEAT_COALESCING | FEAT_ASYNC_EVENT => Ok(0),
            _ => Err(INVALID_FIELD),
        }
    }

    pub(super) fn io(&mut self, c: &Command) -> Outcome {
        if c.flags != 0 {
            return done(Err(INVALID_FIELD));
        }
        if !matches!(c.opcode, FLUSH | WRITE | READ) {
            return done(Err(INVALID_OPCODE));
        }
        if c.nsid != 1 {
            return done(Err(INVALID_NAMESPACE));
        }
        done(match c.opcode {
            FLUSH => self.image.flush().map(|()| 0).map_err(|_| WRITE_FAULT),
            op => self.read_write(c, op == WRITE),
        })
    }

    fn read_write(&mut self, c: &Command, write: bool) -> Result<u32> {
        let slba = u64::from(c.cdw10) | u64::from(c.cdw11) << 32;
        let blocks = u64::from(c.cdw12 & 0xffff) + 1;
        let bytes = blocks * 512;
        if bytes > PAGE << MDTS {
            return Err(INVALID_FIELD);
        }
        if slba
            .checked_add(blocks)
            .is_none_or(|end| end > self.image.sectors())
        {
            return Err(LBA_OUT_OF_RANGE);
        }
        let segs = prp::segments(&self.mem, c.prp1, c.prp2, bytes).map_err(prp_status)?;
        let r = self.image.transfer(&self.mem, &segs, slba, write);
        if !write {
            self.dma.segments(&segs);
        }
        r.map(|()| 0).map_err(|e| match e {
            ImageError::OutOfRange => LBA_OUT_OF_RANGE,
            ImageError::ReadOnly => READ_ONLY,
            ImageError::Io if write => WRITE_FAULT,
            ImageError::Io => READ_ERROR,
        })
    }
}
