//! Bus-master IDE (SFF-8038i) for the primary channel: the command
//! register (start, direction), the status register (active, error,
//! interrupt, drive DMA-capable bits) and the PRD table pointer. When a
//! DMA command is pending and the engine is started, the PRD table is
//! walked (every entry checked against guest memory, at most
//! [`MAX_PRDS`] entries) and the data moved in one go.

use super::ata::DmaRequest;
use virtio::block::{Image, ImageError};
use virtio::device::DmaNotify;
use virtio::queue::Segment;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

const CMD_START: u8 = 0x01;
/// Direction: the device writes memory (a read from disk).
const CMD_TO_MEMORY: u8 = 0x08;
const ST_ACTIVE: u8 = 0x01;
const ST_ERROR: u8 = 0x02;
const ST_INTR: u8 = 0x04;
/// Drive 0/1 DMA capable: scratch bits the driver sets.
const ST_CAPABLE: u8 = 0x60;
/// Entries walked at most: a 64 KiB table.
pub const MAX_PRDS: u64 = 8192;
const PRD_EOT: u32 = 1 << 31;

#[derive(Debug, Default)]
pub struct BusMaster {
    command: u8,
    status: u8,
    prd: u32,
}

impl BusMaster {
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let regs = [
            self.command,
            0,
            self.status,
            0,
            self.prd as u8,
            (self.prd >> 8) as u8,
            (self.prd >> 16) as u8,
            (self.prd >> 24) as u8,
        ];
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = usize::try_from(at)
                .ok()
                .and_then(|a| regs.get(a))
                .copied()
                .unwrap_or(0);
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            match offset.saturating_add(i as u64) {
                0 => {
                    if v & CMD_START == 0 {
                        self.status &= !ST_ACTIVE;
                    } else if self.command & CMD_START == 0 {
                        self.status |= ST_ACTIVE;
                    }
                    self.command = v & (CMD_START | CMD_TO_MEMORY);
                }
                2 => {
                    self.status = (self.status & !ST_CAPABLE) | (v & ST_CAPABLE);
                    self.status &= !(v & (ST_ERROR | ST_INTR));
                }
                o @ 4..=7 => {
                    let shift = (o - 4) * 8;
                    self.prd = (self.prd & !(0xff << shift)) | u32::from(v) << shift;
                    self.prd &= !3;
                }
                _ => {}
            }
        }
    }

    /// The channel raised its interrupt.
    pub fn interrupt(&mut self) {
        self.status |= ST_INTR;
    }

    /// Moves the data of `req` if the engine is running; `None` while it
    /// is not started.
    pub fn run(
        &mut self,
        req: &DmaRequest,
        mem: &GuestMemoryMmap,
        image: &mut Image,
        dma: &DmaNotify,
    ) -> Option<Result<(), ImageError>> {
        if self.status & ST_ACTIVE == 0 {
            return None;
        }
        self.status &= !ST_ACTIVE;
        let to_memory = self.command & CMD_TO_MEMORY != 0;
        let segs = match (to_memory == req.read)
            .then(|| self.segments(mem, req.sectors * 512))
            .flatten()
        {
            Some(s) => s,
            None => {
                self.status |= ST_ERROR;
                return Some(Err(ImageError::Io));
            }
        };
        let r = image.transfer(mem, &segs, req.lba, !req.read);
        if req.read {
            dma.segments(&segs);
        }
        Some(r)
    }

    /// The first `len` bytes the PRD table describes; `None` when an entry
    /// leaves guest memory or the table ends short.
    fn segments(&self, mem: &GuestMemoryMmap, len: u64) -> Option<Vec<Segment>> {
        let mut segs = Vec::new();
        let mut left = len;
        let mut at = u64::from(self.prd);
        for _ in 0..MAX_PRDS {
            let addr: u32 = mem.read_obj(GuestAddress(at)).ok()?;
            let ctl: u32 = mem.read_obj(GuestAddress(at + 4)).ok()?;
            let count = match ctl & 0xffff {
                0 => 0x10000,
                n => u64::from(n & !1),
            };
            let take = count.min(left);
            let base = u64::from(addr & !1);
            if take > 0 {
                if !mem.check_range(GuestAddress(base), take as usize, Permissions::ReadWrite) {
                    return None;
                }
                // take <= 64 KiB.
                segs.push(Segment {
                    addr: GuestAddress(base),
                    len: take as u32,
                });
            }
            left -= take;
            if left == 0 {
                return Some(segs);
            }
            if ctl & PRD_EOT != 0 {
                return None;
            }
            at += 8;
        }
        None
    }
}
