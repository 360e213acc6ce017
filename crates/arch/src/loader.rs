//! Kernel and initrd loading. Detects the kernel format (ELF vmlinux with or
//! without a PVH entry note, or bzImage), checks everything the file says
//! against guest RAM before anything is copied, then lets `linux-loader` do
//! the copying.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, elf::PvhBootCapability, KernelLoader};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::mem;
use crate::memory::{low_ram_end, range_in_ram, MemoryError};

/// Errors loading a kernel or an initrd.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the image")]
    Io(#[source] std::io::Error),
    #[error("not an elf or bzimage kernel")]
    NotAKernel,
    #[error("elf image is not a little-endian x86-64 executable")]
    UnsupportedElf,
    #[error("elf program headers are malformed")]
    BadProgramHeaders,
    #[error("elf segment at {addr:#x} (+{size:#x}) is outside guest ram or below 1 MiB")]
    SegmentOutsideRam { addr: u64, size: u64 },
    #[error("elf segment data lies beyond the end of the file")]
    SegmentBeyondFile,
    #[error("kernel entry point {0:#x} is outside the loaded image")]
    EntryOutsideKernel(u64),
    #[error("bzimage boot protocol {0:#x} has no 64-bit entry")]
    BzImageTooOld(u16),
    #[error("bzimage needs {size:#x} bytes at {addr:#x}, beyond guest ram")]
    BzImageOutsideRam { addr: u64, size: u64 },
    #[error("kernel loader failed: {0}")]
    Loader(linux_loader::loader::Error),
    #[error("initrd is empty")]
    EmptyInitrd,
    #[error("initrd of {0:#x} bytes does not fit in low memory above the kernel")]
    InitrdTooLarge(u64),
    #[error("cannot copy the initrd into guest memory")]
    InitrdCopy(#[source] vm_memory::GuestMemoryError),
    #[error("guest memory layout")]
    Memory(#[from] MemoryError),
}

/// How the boot code enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
    Pvh,
    /// Linux 64-bit boot protocol: long mode, `rsi` = zero page.
    Linux64,
}

/// Where and how a kernel was loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The first instruction the vCPU runs.
    pub entry: GuestAddress,
    pub protocol: BootProtocol,
    /// Lowest guest address the kernel image occupies.
    pub kernel_start: GuestAddress,
    /// First address above the kernel image (for a bzImage: above the
    /// memory its in-place decompression needs).
    pub kernel_end: GuestAddress,
    /// The bzImage setup header, for the zero page; `None` for ELF kernels.
    pub setup_header: Option<setup_header>,
}

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELF_HEADER_LEN: usize = 64;
const PHDR_LEN: u64 = 56;
/// More program headers than any kernel has; bounds the work a hostile
/// file can ask for.
const MAX_PHDRS: u16 = 64;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
/// Offset of the "HdrS" magic in a bzImage.
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_MAGIC: [u8; 4] = *b"HdrS";
/// Offset of the 64-bit entry point from the protected-mode kernel start.
const BZIMAGE_ENTRY64_OFFSET: u64 = 0x200;
/// xloadflags bit: the kernel has the 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// initrd_addr_max of kernels older than boot protocol 2.03.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
const PAGE_SIZE: u64 = 0x1000;
/// Where a bzImage's setup header starts.
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// What Linux needs beyond its image and its initramfs (twice: packed and
/// unpacked) to boot to a shell; see [`min_ram_bytes`].
pub const LINUX_WORKING_MEMORY: u64 = 8 << 20;

/// Loads the kernel in `kernel` into guest memory, detecting its format.
/// Never panics on a malformed file: every failure is a [`LoadError`].
pub fn load_kernel(
    guest_mem: &GuestMemoryMmap,
    kernel: &mut File,
) -> Result<LoadedKernel, LoadError> {
    let file_len = kernel.seek(SeekFrom::End(0)).map_err(LoadError::Io)?;
    let mut magic = [0u8; 4];
    if read_at(kernel, 0, &mut magic)? && magic == ELF_MAGIC {
        return load_elf(guest_mem, kernel, file_len);
    }
    if read_at(kernel, BZIMAGE_MAGIC_OFFSET, &mut magic)? && magic == BZIMAGE_MAGIC {
        return load_bzimage(guest_mem, kernel);
    }
    Err(LoadError::NotAKernel)
}

/// The first guest address above what the kernel in `kernel` occupies
/// once loaded (for a bzImage: with the room it decompresses into), read
/// from its headers alone: how much RAM it needs, before any is made.
pub fn kernel_end(kernel: &mut File) -> Result<u64, LoadError> {
    let file_len = kernel.seek(SeekFrom::End(0)).map_err(LoadError::Io)?;
    let mut magic = [0u8; 4];
    if read_at(kernel, 0, &mut magic)? && magic == ELF_MAGIC {
        let (_, extent) = check_elf(&|_, _| true, kernel, file_len)?;
        return Ok(extent.end);
    }
    if read_at(kernel, BZIMAGE_MAGIC_OFFSET, &mut magic)? && magic == BZIMAGE_MAGIC {
        let mut hdr = setup_header::default();
        if !read_at(kernel, SETUP_HEADER_OFFSET, hdr.as_mut_slice())? {
            return Err(LoadError::NotAKernel);
        }
        // As linux-loader loads it: everything after the setup sectors,
        // at code32_start.
        let sects = match hdr.setup_sects {
            0 => 4,
            n => u64::from(n),
        };
        let load = u64::from(hdr.code32_start);
        let image = file_len.saturating_sub((sects + 1) * 512);
        let (at, size) = decompression_area(&hdr, load);
        return Ok(load.saturating_add(image).max(at.saturating_add(size)));
    }
    Err(LoadError::NotAKernel)
}

/// Guest RAM, in bytes, to boot a kernel ending at `kernel_end` with an
/// initrd of `initrd` bytes. With an initrd (a Linux initramfs boot) the
/// kernel unpacks it beside the copy vessel loads, and needs working
/// memory besides. Measured with the default guest (a 62 MiB kernel
/// extent): with a 2.8 MiB initramfs it boots with 73 MiB and panics out
/// of memory with 72 (this asks 76), with a 5.0 MiB one it needs 77 (this
/// asks 80): [`LINUX_WORKING_MEMORY`] leaves 3 MiB over the edge.
pub fn min_ram_bytes(kernel_end: u64, initrd: Option<u64>) -> u64 {
    match initrd {
        Some(size) => kernel_end
            .saturating_add(size.saturating_mul(2))
            .saturating_add(LINUX_WORKING_MEMORY),
        None => kernel_end,
    }
}

/// Reads `buf.len()` bytes at `offset`; `Ok(false)` when the file is shorter.
fn read_at<R: Read + Seek>(file: &mut R, offset: u64, buf: &mut [u8]) -> Result<bool, LoadError> {
    file.seek(SeekFrom::Start(offset)).map_err(LoadError::Io)?;
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(LoadError::Io(e)),
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// What the ELF checks found, for the result.
struct ElfExtent {
    start: u64,
    end: u64,
}

/// Checks the ELF header and program headers against the file and guest
/// RAM (`fits(addr, len)`: the range lies in one RAM region), so that
/// `linux-loader` only ever copies what is known to fit.
fn check_elf(
    fits: &dyn Fn(u64, u64) -> bool,
    file: &mut File,
    file_len: u64,
) -> Result<(u64, ElfExtent), LoadError> {
    let mut ehdr = [0u8; ELF_HEADER_LEN];
    if !read_at(file, 0, &mut ehdr)? {
        return Err(LoadError::UnsupportedElf);
    }
    // EI_CLASS = ELFCLASS64, EI_DATA = little endian, e_machine = x86-64.
    if ehdr[4] != 2 || ehdr[5] != 1 || u16_at(&ehdr, 18) != EM_X86_64 {
        return Err(LoadError::UnsupportedElf);
    }
    let entry = u64_at(&ehdr, 24);
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u16_at(&ehdr, 54);
    let phnum = u16_at(&ehdr, 56);
    if u64::from(phentsize) != PHDR_LEN
        || phnum == 0
        || phnum > MAX_PHDRS
        || phoff < ELF_HEADER_LEN as u64
    {
        return Err(LoadError::BadProgramHeaders);
    }
    let table_end = phoff
        .checked_add(PHDR_LEN * u64::from(phnum))
        .ok_or(LoadError::BadProgramHeaders)?;
    if table_end > file_len {
        return Err(LoadError::BadProgramHeaders);
    }
    let mut extent = ElfExtent {
        start: u64::MAX,
        end: 0,
    };
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; PHDR_LEN as usize];
        if !read_at(file, phoff + i * PHDR_LEN, &mut ph)? {
            return Err(LoadError::BadProgramHeaders);
        }
        let p_type = u32_at(&ph, 0);
        let offset = u64_at(&ph, 8);
        let paddr = u64_at(&ph, 24);
        let filesz = u64_at(&ph, 32);
        let memsz = u64_at(&ph, 40);
        if p_type != PT_LOAD && p_type != PT_NOTE {
            continue;
        }
        let data_end = offset
            .checked_add(filesz)
            .ok_or(LoadError::SegmentBeyondFile)?;
        if data_end > file_len {
            return Err(LoadError::SegmentBeyondFile);
        }
        if p_type != PT_LOAD || memsz == 0 {
            continue;
        }
        if filesz > memsz {
            return Err(LoadError::BadProgramHeaders);
        }
        // Segments go at p_paddr (no relocation), never below 1 MiB where
        // the boot structures live, and entirely inside one RAM region.
        if paddr < mem::HIMEM_START || !fits(paddr, memsz) {
            return Err(LoadError::SegmentOutsideRam {
                addr: paddr,
                size: memsz,
            });
        }
        extent.start = extent.start.min(paddr);
        extent.end = extent.end.max(paddr.saturating_add(memsz));
    }
    if extent.end == 0 {
        return Err(LoadError::BadProgramHeaders);
    }
    Ok((entry, extent))
}

fn load_elf(
    guest_mem: &GuestMemoryMmap,
    file: &mut File,
    file_len: u64,
) -> Result<LoadedKernel, LoadError> {
    let fits = |addr, len| range_in_ram(guest_mem, addr, len);
    let (e_entry, extent) = check_elf(&fits, file, file_len)?;
    let result = Elf::load(guest_mem, None, file, Some(GuestAddress(mem::HIMEM_START)))
        .map_err(LoadError::Loader)?;
    let (entry, protocol) = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => (addr.0, BootProtocol::Pvh),
        _ => (e_entry, BootProtocol::Linux64),
    };
    if !(extent.start..extent.end).contains(&entry) {
        return Err(LoadError::EntryOutsideKernel(entry));
    }
    Ok(LoadedKernel {
        entry: GuestAddress(entry),
        protocol,
        kernel_start: GuestAddress(extent.start),
        kernel_end: GuestAddress(extent.end),
        setup_header: None,
    })
}

fn load_bzimage(guest_mem: &GuestMemoryMmap, file: &mut File) -> Result<LoadedKernel, LoadError> {
    let result = BzImage::load(guest_mem, None, file, Some(GuestAddress(mem::HIMEM_START)))
        .map_err(LoadError::Loader)?;
    // linux-loader only returns Ok with the header it parsed.
    let hdr = result.setup_header.ok_or(LoadError::NotAKernel)?;
    let version = hdr.version;
    // The 64-bit entry is documented from protocol 2.06 on; from 2.12 the
    // kernel says explicitly whether it has one.
    if version < 0x206 || (version >= 0x20c && hdr.xloadflags & XLF_KERNEL_64 == 0) {
        return Err(LoadError::BzImageTooOld(version));
    }
    let load = result.kernel_load.0;
    let image_end = result.kernel_end;
    let (decompress_at, init_size) = decompression_area(&hdr, load);
    let end = image_end.max(decompress_at.saturating_add(init_size));
    if !range_in_ram(guest_mem, load, image_end - load)
        || !range_in_ram(guest_mem, decompress_at, init_size)
    {
        return Err(LoadError::BzImageOutsideRam {
            addr: load,
            size: end.saturating_sub(load),
        });
    }
    Ok(LoadedKernel {
        entry: GuestAddress(load + BZIMAGE_ENTRY64_OFFSET),
        protocol: BootProtocol::Linux64,
        kernel_start: GuestAddress(load.min(decompress_at)),
        kernel_end: GuestAddress(end),
        setup_header: Some(hdr),
    })
}

/// Where a bzImage loaded at `load` decompresses itself and how much room
/// it needs there (protocol 2.10+; older kernels say nothing, and get
/// `(load, 0)`). As the kernel's own 64-bit entry code does: a relocatable
/// kernel uses its load address rounded up to `kernel_alignment`, but never
/// less than `pref_address` (its link-time address); a fixed one always
/// uses `pref_address`.
fn decompression_area(hdr: &setup_header, load: u64) -> (u64, u64) {
    if hdr.version < 0x20a {
        return (load, 0);
    }
    let pref = hdr.pref_address;
    let align = u64::from(hdr.kernel_alignment);
    let at = if hdr.relocatable_kernel != 0 && align.is_power_of_two() {
        load.saturating_add(align - 1) & !(align - 1)
    } else {
        pref
    };
    (at.max(pref), u64::from(hdr.init_size))
}

/// Copies the initrd to the top of low RAM (page aligned, below the
/// bzImage's `initrd_addr_max`) and returns its address and size.
pub fn load_initrd(
    guest_mem: &GuestMemoryMmap,
    initrd: &mut File,
    kernel: &LoadedKernel,
) -> Result<(GuestAddress, usize), LoadError> {
    let size = initrd.seek(SeekFrom::End(0)).map_err(LoadError::Io)?;
    if size == 0 {
        return Err(LoadError::EmptyInitrd);
    }
    let size_usize = usize::try_from(size).map_err(|_| LoadError::InitrdTooLarge(size))?;
    let mut top = low_ram_end(guest_mem)?.min(mem::MMIO_HOLE_START);
    if let Some(hdr) = kernel.setup_header {
        let max = if hdr.version >= 0x203 {
            u64::from(hdr.initrd_addr_max)
        } else {
            DEFAULT_INITRD_ADDR_MAX
        };
        top = top.min(max.saturating_add(1));
    }
    let addr = top
        .checked_sub(size)
        .ok_or(LoadError::InitrdTooLarge(size))?
        & !(PAGE_SIZE - 1);
    let overlaps_kernel = addr < kernel.kernel_end.0 && kernel.kernel_start.0 < addr + size;
    if addr < mem::HIMEM_START || overlaps_kernel {
        return Err(LoadError::InitrdTooLarge(size));
    }
    initrd.seek(SeekFrom::Start(0)).map_err(LoadError::Io)?;
    guest_mem
        .read_exact_volatile_from(GuestAddress(addr), initrd, size_usize)
        .map_err(LoadError::InitrdCopy)?;
    Ok((GuestAddress(addr), size_usize))
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
