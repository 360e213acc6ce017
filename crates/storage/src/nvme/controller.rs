//! The NVMe controller behind BAR 0: the register file (CAP, VS, CC,
//! CSTS, AQA, ASQ, ACQ), enable/disable/shutdown, the doorbells and the
//! submission/completion queue pairs they drive. Commands are run when
//! their SQ tail doorbell is written, on the writing vCPU's thread; a full
//! completion queue leaves the rest for its head doorbell.

use super::command::{Command, Outcome};
use devices::pci::msix::Msix;
use virtio::block::Image;
use virtio::device::DmaNotify;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// Register offsets.
pub const REG_CAP: u64 = 0x00;
pub const REG_CC: u64 = 0x14;
pub const REG_AQA: u64 = 0x24;
pub const REG_ASQ: u64 = 0x28;
pub const REG_ACQ: u64 = 0x30;
/// First doorbell (stride 4 bytes: CAP.DSTRD = 0).
pub const DOORBELLS: u64 = 0x1000;
pub const DOORBELLS_END: u64 = 0x2000;

/// NVMe 1.4.
pub const VERSION: u32 = 0x0001_0400;
/// I/O queue pairs a driver can get.
pub const MAX_IO_QUEUES: u16 = 4;
/// Largest queue (CAP.MQES + 1).
pub const MAX_QUEUE_ENTRIES: u32 = 1024;
const SQ_ENTRY: u64 = 64;
const CQ_ENTRY: u64 = 16;

const CC_EN: u32 = 1;
const CC_SHN_MASK: u32 = 3 << 14;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 1 << 1;
const CSTS_SHST_DONE: u32 = 2 << 2;

/// CAP: MQES, contiguous queues required, 10 s timeout, NVM command set,
/// 4 KiB pages only.
pub const CAP: u64 = (MAX_QUEUE_ENTRIES as u64 - 1) | 1 << 16 | 20 << 24 | 1 << 37;

#[derive(Debug, Clone, Copy)]
pub(super) struct SubQueue {
    pub base: u64,
    pub size: u32,
    pub head: u32,
    pub tail: u32,
    pub cqid: u16,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CompQueue {
    pub base: u64,
    pub size: u32,
    pub head: u32,
    pub tail: u32,
    pub phase: bool,
    /// MSI-X vector when interrupts are enabled.
    pub vector: Option<u16>,
}

impl CompQueue {
    fn full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }
}

/// One controller with one namespace (ID 1) over `image`.
pub struct Controller {
    pub(super) mem: GuestMemoryMmap,
    pub(super) dma: DmaNotify,
    pub(super) image: Image,
    pub(super) msix: Msix,
    pub(super) serial: String,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    /// Indexed by queue ID; 0 is the admin pair.
    pub(super) sqs: Vec<Option<SubQueue>>,
    pub(super) cqs: Vec<Option<CompQueue>>,
    /// Outstanding Asynchronous Event Requests (never completed: the
    /// controller reports no events).
    pub(super) aers: u8,
    pub(super) write_cache: bool,
}

/// An access's bytes out of a little-endian register value.
fn read_bytes(value: u64, shift: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        let bit = (shift + i as u64) * 8;
        *b = if bit < 64 { (value >> bit) as u8 } else { 0 };
    }
}

impl Controller {
    pub fn new(mem: GuestMemoryMmap, image: Image, msix: Msix, serial: String) -> Self {
        let slots = usize::from(MAX_IO_QUEUES) + 1;
        let write_cache = image.flushes();
        Controller {
            mem,
            dma: DmaNotify::default(),
            image,
            msix,
            serial,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            sqs: vec![None; slots],
            cqs: vec![None; slots],
            aers: 0,
            write_cache,
        }
    }

    pub fn set_dma_notify(&mut self, dma: DmaNotify) {
        self.dma = dma;
    }

    pub fn msix(&mut self) -> &mut Msix {
        &mut self.msix
    }

    pub fn ready(&self) -> bool {
        self.csts & CSTS_RDY != 0
    }

    pub fn fatal(&self) -> bool {
        self.csts & CSTS_CFS != 0
    }

    /// The 64-bit register pair holding `offset` and the byte shift in it.
    fn reg64(&self, offset: u64) -> u64 {
        match offset & !7 {
            REG_CAP => CAP,
            0x08 => u64::from(VERSION),
            0x10 => u64::from(self.cc) << 32,
            0x18 => u64::from(self.csts) << 32,
            0x20 => u64::from(self.aqa) << 32,
            REG_ASQ => self.asq,
            REG_ACQ => self.acq,
            _ => 0,
        }
    }

    /// A register read of 1 to 8 bytes; doorbells and reserved registers
    /// read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= DOORBELLS || data.len() > 8 {
            data.fill(0);
            return;
        }
        read_bytes(self.reg64(offset), offset & 7, data);
    }

    /// A register write; only aligned dword and qword writes count.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        match *data {
            [a, b, c, d] if offset.is_multiple_of(4) => {
                self.write32(offset, u32::from_le_bytes([a, b, c, d]))
            }
            [a, b, c, d, e, f, g, h] if offset.is_multiple_of(8) => {
                self.write32(offset, u32::from_le_bytes([a, b, c, d]));
                self.write32(offset + 4, u32::from_le_bytes([e, f, g, h]));
            }
            _ => {}
        }
    }

    fn write32(&mut self, offset: u64, v: u32) {
        let lo = |r: u64| (r & !0xffff_ffff) | u64::from(v);
        let hi = |r: u64| (r & 0xffff_ffff) | u64::from(v) << 32;
        match offset {
            REG_CC => self.set_cc(v),
            // Admin queue registers change only while disabled.
            REG_AQA if !self.ready() => self.aqa = v & 0x0fff_0fff,
            REG_ASQ if !self.ready() => self.asq = lo(self.asq) & !0xfff,
            0x2c if !self.ready() => self.asq = hi(self.asq),
            REG_ACQ if !self.ready() => self.acq = lo(self.acq) & !0xfff,
            0x34 if !self.ready() => self.acq = hi(self.acq),
            o if (DOORBELLS..DOORBELLS_END).contains(&o) => self.doorbell((o - DOORBELLS) / 4, v),
            _ => {}
        }
    }

    fn set_cc(&mut self, v: u32) {
        let old = self.cc;
        self.cc = v;
        if v & CC_EN == 0 {
            if old & CC_EN != 0 || self.csts != 0 {
                self.disable();
            }
            return;
        }
        if old & CC_EN == 0 {
            self.enable();
        }
        if v & CC_SHN_MASK != 0 && old & CC_SHN_MASK == 0 {
            if let Err(e) = self.image.flush() {
                log::warn!("nvme: flush at shutdown failed: {e:?}");
            }
            self.csts |= CSTS_SHST_DONE;
        }
    }

    /// CC.EN 1 -> 0: queues gone, CSTS cleared.
    fn disable(&mut self) {
        self.sqs.fill(None);
        self.cqs.fill(None);
        self.aers = 0;
        self.csts = 0;
    }

    /// CC.EN 0 -> 1: the admin queues from AQA/ASQ/ACQ, or CFS when the
    /// driver asked for something the controller does not do.
    fn enable(&mut self) {
        let css = (self.cc >> 4) & 7;
        let mps = (self.cc >> 7) & 0xf;
        let sq_size = (self.aqa & 0xfff) + 1;
        let cq_size = ((self.aqa >> 16) & 0xfff) + 1;
        let ok = css == 0
            && mps == 0
            && sq_size >= 2
            && cq_size >= 2
            && self.in_memory(self.asq, u64::from(sq_size) * SQ_ENTRY)
            && self.in_memory(self.acq, u64::from(cq_size) * CQ_ENTRY);
        if !ok {
            log::warn!("nvme: cannot enable: cc {:#x} aqa {:#x}", self.cc, self.aqa);
            self.csts = CSTS_CFS;
            return;
        }
        self.sqs[0] = Some(SubQueue {
            base: self.asq,
            size: sq_size,
            head: 0,
            tail: 0,
            cqid: 0,
        });
        self.cqs[0] = Some(CompQueue {
            base: self.acq,
            size: cq_size,
            head: 0,
            tail: 0,
            phase: true,
            vector: Some(0),
        });
        self.csts = CSTS_RDY;
    }

    pub(super) fn in_memory(&self, base: u64, len: u64) -> bool {
        base.checked_add(len).is_some()
            && usize::try_from(len).is_ok_and(|l| {
                self.mem
                    .check_range(GuestAddress(base), l, Permissions::ReadWrite)
            })
    }

    pub(super) fn io_sq_entry_ok(&self) -> bool {
        (self.cc >> 16) & 0xf == 6
    }

    pub(super) fn io_cq_entry_ok(&self) -> bool {
        (self.cc >> 20) & 0xf == 4
    }

    /// Doorbell `index`: even is SQ (index/2)'s tail, odd its CQ's head.
    /// A value past the queue's end is ignored.
    fn doorbell(&mut self, index: u64, value: u32) {
        if !self.ready() || self.fatal() {
            return;
        }
        let Ok(qid) = usize::try_from(index / 2) else {
            return;
        };
        if index.is_multiple_of(2) {
            let Some(Some(sq)) = self.sqs.get_mut(qid) else {
                return;
            };
            if value >= sq.size {
                return;
            }
            sq.tail = value;
            self.run_sq(qid);
        } else {
            let Some(Some(cq)) = self.cqs.get_mut(qid) else {
                return;
            };
            if value >= cq.size {
                return;
            }
            cq.head = value;
            // Room again: serve the SQs that stopped on this CQ.
            for s in 0..self.sqs.len() {
                if self.sqs[s].is_some_and(|q| usize::from(q.cqid) == qid && q.head != q.tail) {
                    self.run_sq(s);
                }
            }
        }
    }

    /// Runs SQ `qid`'s new commands while its CQ has room, then interrupts.
    fn run_sq(&mut self, qid: usize) {
        let mut posted = None;
        while let Some(Some(sq)) = self.sqs.get(qid).copied() {
            let cqid = usize::from(sq.cqid);
            let Some(Some(cq)) = self.cqs.get(cqid).copied() else {
                break;
            };
            if sq.head == sq.tail || cq.full() {
                break;
            }
            let mut raw = [0u8; 64];
            let at = sq.base + u64::from(sq.head) * SQ_ENTRY;
            if self.mem.read_slice(&mut raw, GuestAddress(at)).is_err() {
                self.csts |= CSTS_CFS;
                break;
            }
            let head = (sq.head + 1) % sq.size;
            if let Some(Some(s)) = self.sqs.get_mut(qid) {
                s.head = head;
            }
            let cmd = Command::parse(&raw);
            let outcome = if qid == 0 {
                self.admin(&cmd)
            } else {
                self.io(&cmd)
            };
            let Outcome::Done { dw0, status } = outcome else {
                continue;
            };
            // The command may have deleted its own CQ (a hostile driver):
            // nothing to post to then.
            if self.post(cqid, dw0, head, qid as u16, cmd.cid, status) {
                posted = Some(cqid);
            }
            if self.fatal() {
                break;
            }
        }
        if let Some(cqid) = posted {
            if let Some(Some(CompQueue {
                vector: Some(v), ..
            })) = self.cqs.get(cqid)
            {
                let v = *v;
                self.msix.trigger(v);
            }
        }
    }

    /// Writes one completion entry; false when the CQ is gone or unwritable.
    fn post(
        &mut self,
        cqid: usize,
        dw0: u32,
        sq_head: u32,
        sqid: u16,
        cid: u16,
        status: u16,
    ) -> bool {
        let Some(Some(cq)) = self.cqs.get_mut(cqid) else {
            return false;
        };
        let at = cq.base + u64::from(cq.tail) * CQ_ENTRY;
        let mut head = [0u8; 12];
        head[0..4].copy_from_slice(&dw0.to_le_bytes());
        // sq_head < queue size <= 1024.
        head[8..10].copy_from_slice(&(sq_head as u16).to_le_bytes());
        head[10..12].copy_from_slice(&sqid.to_le_bytes());
        let dw3 = u32::from(cid) | u32::from(cq.phase) << 16 | u32::from(status & 0x7fff) << 17;
        // The phase bit goes last, in one aligned store, so the driver
        // never sees a new phase over old bytes.
        let ok = self.mem.write_slice(&head, GuestAddress(at)).is_ok()
            && self.mem.write_obj(dw3, GuestAddress(at + 12)).is_ok();
        if !ok {
            self.csts |= CSTS_CFS;
            return false;
        }
        self.dma.written(GuestAddress(at), CQ_ENTRY);
        cq.tail += 1;
        if cq.tail == cq.size {
            cq.tail = 0;
            cq.phase = !cq.phase;
        }
        true
    }
}
