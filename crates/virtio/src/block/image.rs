//! [`Image`]: the block backend for disk front ends other than virtio-blk
//! (the emulated NVMe and IDE controllers): the same image file, O_DIRECT,
//! read-only mode and locking as a virtio drive, with sector-checked
//! reads, writes and flushes between the image and guest buffers.

use super::device::{BlockConfig, BlockError, CacheType};
use super::disk::Disk;
use crate::queue::Segment;
use vm_memory::GuestMemoryMmap;

/// Why a transfer failed, for the front end's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// The range leaves the disk.
    OutOfRange,
    /// A write to a read-only image.
    ReadOnly,
    /// The host read, write or flush failed.
    Io,
}

/// An open, locked disk image.
pub struct Image {
    disk: Disk,
    readonly: bool,
    cache: CacheType,
}

impl Image {
    /// Opens (and unless `lock` is off, locks) the image of `cfg`; its
    /// rate limiter and I/O engine are not used here.
    pub fn open(cfg: &BlockConfig) -> Result<Self, BlockError> {
        let mut disk = Disk::open(&cfg.path, cfg.readonly, cfg.direct)?;
        if cfg.lock {
            disk.take_lock(cfg.readonly)?;
        }
        Ok(Image {
            disk,
            readonly: cfg.readonly,
            cache: cfg.cache,
        })
    }

    /// A writeback image over an already open file of `sectors` sectors,
    /// unlocked (tests and fuzz targets use a memfd).
    pub fn from_file(file: std::fs::File, sectors: u64, readonly: bool) -> Self {
        Image {
            disk: Disk::from_file(file, sectors),
            readonly,
            cache: CacheType::Writeback,
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.disk.sectors
    }

    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Whether guest flushes reach stable storage (cache=writeback).
    pub fn flushes(&self) -> bool {
        self.cache == CacheType::Writeback
    }

    /// Moves the bytes of `segs` between guest memory and the image from
    /// 512-byte sector `sector` on (into the image when `write`). The
    /// segments must lie in guest memory (the caller checked them).
    pub fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        sector: u64,
        write: bool,
    ) -> Result<(), ImageError> {
        if write && self.readonly {
            return Err(ImageError::ReadOnly);
        }
        let total = crate::queue::segments_len(segs);
        let offset = self
            .disk
            .checked_offset(sector, total)
            .ok_or(ImageError::OutOfRange)?;
        self.disk
            .transfer(mem, segs, offset, write)
            .map_err(|_| ImageError::Io)
    }

    /// Reads (or with `write`, writes) `buf`, whole sectors, at 512-byte
    /// sector `sector`: for front ends that move data through their own
    /// buffer (IDE PIO).
    pub fn buffer_io(&self, sector: u64, buf: &mut [u8], write: bool) -> Result<(), ImageError> {
        use std::os::unix::fs::FileExt;
        if write && self.readonly {
            return Err(ImageError::ReadOnly);
        }
        let offset = self
            .disk
            .checked_offset(sector, buf.len() as u64)
            .ok_or(ImageError::OutOfRange)?;
        let file = self.disk.file();
        let r = if write {
            file.write_all_at(buf, offset)
        } else {
            file.read_exact_at(buf, offset)
        };
        r.map_err(|_| ImageError::Io)
    }

    /// Data to stable storage (nothing to do for cache=unsafe).
    pub fn flush(&self) -> Result<(), ImageError> {
        if !self.flushes() || self.readonly || self.disk.sync() {
            Ok(())
        } else {
            Err(ImageError::Io)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_driver::guest_memory;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn checks_range_and_read_only() {
        let p = std::env::temp_dir().join(format!("vessel-image-{}", std::process::id()));
        std::fs::write(&p, vec![7u8; 4096]).unwrap();
        let mem = guest_memory();
        let seg = |len| {
            [Segment {
                addr: GuestAddress(0x1000),
                len,
            }]
        };
        let mut img = Image::open(&BlockConfig::new(&p)).unwrap();
        assert_eq!(img.sectors(), 8);
        img.transfer(&mem, &seg(512), 7, false).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 7);
        assert_eq!(
            img.transfer(&mem, &seg(1024), 7, false),
            Err(ImageError::OutOfRange)
        );
        assert_eq!(
            img.transfer(&mem, &seg(512), u64::MAX, true),
            Err(ImageError::OutOfRange)
        );
        img.flush().unwrap();
        let mut buf = [1u8; 512];
        img.buffer_io(1, &mut buf, true).unwrap();
        let mut back = [0u8; 1024];
        img.buffer_io(0, &mut back, false).unwrap();
        assert_eq!(back[512..], buf);
        assert_eq!(
            img.buffer_io(8, &mut buf, false),
            Err(ImageError::OutOfRange)
        );
        drop(img);
        let mut ro = Image::open(&BlockConfig {
            readonly: true,
            ..BlockConfig::new(&p)
        })
        .unwrap();
        assert_eq!(
            ro.transfer(&mem, &seg(512), 0, true),
            Err(ImageError::ReadOnly)
        );
        let _ = std::fs::remove_file(p);
    }
}
