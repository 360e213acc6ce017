//! The image behind a block device: opening it (read-only, or with
//! O_DIRECT beside the buffered descriptor), its size, and the positioned
//! I/O requests turn into: reads and writes between the image and guest
//! buffers, fdatasync, and discard/write-zeroes through fallocate.
//!
//! With O_DIRECT the host page cache is bypassed for requests whose
//! offset and length are multiples of [`DIRECT_ALIGN`] (all of a Linux
//! guest's page-cache I/O): they go through a bounce buffer aligned for
//! the host, since guest buffers are not. Anything else (a 512-byte
//! partition-table read, the unaligned tail of an odd-sized image) uses
//! the buffered descriptor; Linux keeps the two coherent (a direct read
//! writes back dirty cached pages of its range first, a direct write
//! drops them).
//!
//! The Async engine takes the descriptors themselves ([`Disk::file`],
//! [`Disk::file_for`]): each is shared, so a request in flight keeps its
//! image open even when the drive gets a new one.

use super::device::BlockError;
use super::request::{SECTOR_SIZE, S_IOERR};
use crate::queue::{self, Segment};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vm_memory::{Bytes, GuestMemoryMmap};

/// Offset, length and buffer alignment of direct I/O (the host page).
pub const DIRECT_ALIGN: usize = 4096;
/// Bytes moved per direct I/O system call.
pub const BOUNCE_BYTES: usize = 1 << 20;

/// An aligned buffer for O_DIRECT transfers, carved out of a Vec.
struct Bounce {
    buf: Vec<u8>,
    start: usize,
}

impl Bounce {
    fn new() -> Self {
        let buf = vec![0u8; BOUNCE_BYTES + DIRECT_ALIGN];
        // align_offset on a u8 pointer always succeeds; the Vec is never
        // resized, so the offset stays right.
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        Bounce { buf, start }
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        &mut self.buf[self.start..self.start + len.min(BOUNCE_BYTES)]
    }
}

/// The O_DIRECT descriptor and its bounce buffer.
struct Direct {
    file: Arc<File>,
    bounce: Bounce,
}

/// An open image.
pub struct Disk {
    file: Arc<File>,
    direct: Option<Direct>,
    pub(super) sectors: u64,
    pub(super) path: Option<PathBuf>,
    /// Holds a lock on the image (see `lock.rs`).
    pub(super) locked: bool,
}

fn open_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Open {
        path: path.to_path_buf(),
        source,
    }
}

impl Disk {
    /// Opens `path` (for writing unless `readonly`, and a second time
    /// with O_DIRECT when `direct`).
    pub fn open(path: &Path, readonly: bool, direct: bool) -> Result<Self, BlockError> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(!readonly);
        let file = opts.open(path).map_err(open_err(path))?;
        let len = file
            .metadata()
            .map_err(|source| BlockError::Size {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let direct = if direct {
            let file = opts
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map_err(|source| BlockError::Direct {
                    path: path.to_path_buf(),
                    source,
                })?;
            Some(Direct {
                file: Arc::new(file),
                bounce: Bounce::new(),
            })
        } else {
            None
        };
        Ok(Disk {
            file: Arc::new(file),
            direct,
            sectors: len / SECTOR_SIZE,
            path: Some(path.to_path_buf()),
            locked: false,
        })
    }

    /// A disk over an already open (buffered) file.
    pub fn from_file(file: File, sectors: u64) -> Self {
        Disk {
            file: Arc::new(file),
            direct: None,
            sectors,
            path: None,
            locked: false,
        }
    }

    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Byte offset of `sector` if `[sector, sector + bytes)` lies on the disk.
    pub fn checked_offset(&self, sector: u64, bytes: u64) -> Option<u64> {
        let end_bytes = sector.checked_mul(SECTOR_SIZE)?.checked_add(bytes)?;
        (end_bytes <= self.sectors.checked_mul(SECTOR_SIZE)?).then_some(sector * SECTOR_SIZE)
    }

    /// The buffered descriptor.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The descriptor for `total` bytes at `offset` between the image and
    /// buffers all aligned to [`DIRECT_ALIGN`] (`aligned_buffers`): the
    /// O_DIRECT one where the drive has it and the request allows it.
    pub fn file_for(&self, offset: u64, total: u64, aligned_buffers: bool) -> Arc<File> {
        let align = DIRECT_ALIGN as u64;
        match &self.direct {
            Some(d)
                if aligned_buffers
                    && offset.is_multiple_of(align)
                    && total.is_multiple_of(align) =>
            {
                d.file.clone()
            }
            _ => self.file.clone(),
        }
    }

    /// Moves `total` bytes between the image at `offset` and `segs`
    /// (into the image when `write`); the range was checked.
    pub fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        offset: u64,
        write: bool,
    ) -> Result<(), u8> {
        let total = queue::segments_len(segs);
        let align = DIRECT_ALIGN as u64;
        let r = match self.direct.as_mut() {
            Some(d) if offset.is_multiple_of(align) && total.is_multiple_of(align) => {
                d.transfer(mem, segs, offset, total, write)
            }
            _ => buffered(&self.file, mem, segs, offset, write),
        };
        r.map_err(|e| {
            let what = if write { "write" } else { "read" };
            log::warn!("virtio-blk {what} at {offset:#x} failed: {e}");
            S_IOERR
        })
    }

    /// Data (and what is needed to find it) to stable storage.
    pub fn sync(&self) -> bool {
        self.file.sync_data().is_ok()
    }

    pub fn fallocate(&self, mode: i32, offset: u64, len: u64) -> bool {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return false;
        };
        // SAFETY: fallocate on a file descriptor this disk owns; it
        // touches no memory of ours.
        unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) == 0 }
    }

    pub fn write_zeroes_slowly(&self, offset: u64, bytes: u64) -> Result<(), u8> {
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < bytes {
            let n = (bytes - done).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..n], offset + done)
                .map_err(|_| S_IOERR)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Through the page cache: vm-memory's volatile copies straight between
/// guest memory and the file.
fn buffered(
    file: &File,
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    offset: u64,
    write: bool,
) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsFd;
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    for seg in segs {
        let len = seg.len as usize;
        let mut fd = file.as_fd();
        let r = if write {
            mem.write_all_volatile_to(seg.addr, &mut fd, len)
        } else {
            mem.read_exact_volatile_from(seg.addr, &mut fd, len)
        };
        r.map_err(std::io::Error::other)?;
    }
    Ok(())
}

impl Direct {
    /// Aligned chunks through the bounce buffer.
    fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        offset: u64,
        total: u64,
        write: bool,
    ) -> std::io::Result<()> {
        let mut done = 0u64;
        while done < total {
            // At most BOUNCE_BYTES, a multiple of DIRECT_ALIGN.
            let n = (total - done).min(BOUNCE_BYTES as u64) as usize;
            let buf = self.bounce.slice(n);
            if write {
                let got =
                    queue::read_segments(mem, segs, done, buf).map_err(std::io::Error::other)?;
                if got != n {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.file.write_all_at(buf, offset + done)?;
            } else {
                self.file.read_exact_at(buf, offset + done)?;
                queue::write_segments(mem, segs, done, buf).map_err(std::io::Error::other)?;
            }
            done += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_driver::guest_memory;
    use vm_memory::GuestAddress;

    struct Temp(PathBuf);
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp(name: &str, bytes: &[u8]) -> Temp {
        let p = std::env::temp_dir().join(format!("vessel-disk-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        Temp(p)
    }

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    #[test]
    fn bounce_buffer_is_aligned() {
        let mut b = Bounce::new();
        let s = b.slice(BOUNCE_BYTES);
        assert_eq!(s.as_ptr() as usize % DIRECT_ALIGN, 0);
        assert_eq!(s.len(), BOUNCE_BYTES);
        assert_eq!(b.slice(usize::MAX).len(), BOUNCE_BYTES, "clamped");
    }

    /// Direct I/O over unaligned guest buffers, bigger than the bounce
    /// buffer, and an unaligned request through the buffered path.
    #[test]
    fn direct_disk_moves_unaligned_guest_buffers() {
        let size = 3 << 20;
        let img = temp("direct", &vec![0u8; size]);
        let mut disk = match Disk::open(&img.0, false, true) {
            Ok(d) => d,
            Err(BlockError::Direct { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) =>
            {
                eprintln!("O_DIRECT SKIPPED: {} does not support it", img.0.display());
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(disk.is_direct());
        let mem = guest_memory();
        let data: Vec<u8> = (0..(2 << 20) + 4096).map(|i| (i % 251) as u8).collect();
        mem.write_slice(&data, GuestAddress(0x10_0003)).unwrap();
        // Two segments at odd addresses, 2 MiB + 4 KiB in all.
        let segs = [
            seg(0x10_0003, 4096 + 7),
            seg(0x10_0003 + 4096 + 7, (2 << 20) - 7),
        ];
        disk.transfer(&mem, &segs, 4096, true).unwrap();
        let file = std::fs::read(&img.0).unwrap();
        assert_eq!(&file[4096..4096 + data.len()], &data[..]);
        let back = [seg(0x50_0001, (2 << 20) + 4096)];
        disk.transfer(&mem, &back, 4096, false).unwrap();
        let mut got = vec![0u8; data.len()];
        mem.read_slice(&mut got, GuestAddress(0x50_0001)).unwrap();
        assert_eq!(got, data);
        // 512 bytes at 512: the buffered path, same file.
        mem.write_slice(&[0xab; 512], GuestAddress(0x1000)).unwrap();
        disk.transfer(&mem, &[seg(0x1000, 512)], 512, true).unwrap();
        assert!(std::fs::read(&img.0).unwrap()[512..1024]
            .iter()
            .all(|&b| b == 0xab));
        assert!(disk.sync());
    }

    #[test]
    fn missing_image_names_the_path() {
        let Err(e) = Disk::open(Path::new("/nonexistent/vessel.img"), true, false) else {
            panic!("a missing image opened");
        };
        assert!(matches!(e, BlockError::Open { .. }));
        assert!(e.to_string().contains("/nonexistent/vessel.img"));
    }
}
