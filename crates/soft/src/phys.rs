//! Guest-physical memory as the engine sees it: the RAM regions of the
//! shared `GuestMemoryMmap` as host pointers (the one audited place in
//! this crate that touches guest RAM through raw pointers), and the
//! per-page code generations that invalidate cached decoded blocks when
//! any vCPU writes a page holding code.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

pub const PAGE: u64 = 4096;

#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    len: u64,
    host: usize,
}

/// The host address of one 4 KiB page of guest RAM. Only
/// [`Ram::page_host`] makes one, so holding a `HostPage` means the page is
/// inside a mapping the VM's `Ram` keeps alive (the engine drops its
/// vCPUs, and with them every TLB entry holding one, before the `Ram`).
/// `Option<HostPage>` is one machine word, 0 for "not RAM": translated
/// code reads it from TLB entries as a plain address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct HostPage(NonZeroUsize);

const _: () = assert!(std::mem::size_of::<Option<HostPage>>() == std::mem::size_of::<usize>());

impl HostPage {
    /// The address of byte `off` of the page, for a range of `len` bytes
    /// that must lie inside the page (checked: every caller has already
    /// split its access at page boundaries, so a failure is an engine
    /// bug, never guest input).
    #[inline(always)]
    fn at(self, off: usize, len: usize) -> usize {
        assert!(
            off <= PAGE as usize && len <= PAGE as usize - off,
            "access of {len} bytes at offset {off} crosses a RAM page"
        );
        self.0.get() + off
    }
}

/// The guest's RAM. Holds a clone of the memory object so the mappings
/// outlive every pointer taken from them.
pub struct Ram {
    _mem: GuestMemoryMmap,
    regions: Vec<Region>,
    has_code: Vec<AtomicBool>,
    gen: Vec<AtomicU32>,
    /// Bumped whenever any page holding code is written: a block checked
    /// against its pages' generations at one value of it is still valid
    /// while the value stays.
    code_epoch: AtomicU64,
}

impl std::fmt::Debug for Ram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ram")
            .field("regions", &self.regions)
            .finish()
    }
}

impl Ram {
    pub fn new(mem: &GuestMemoryMmap) -> Self {
        let mut regions = Vec::new();
        let mut end = 0u64;
        for r in mem.iter() {
            let start = r.start_addr().0;
            let len = r.len();
            // A region without a host address cannot be reached; leave it
            // to the MMIO path.
            if let Ok(p) = r.get_host_address(vm_memory::MemoryRegionAddress(0)) {
                regions.push(Region {
                    start,
                    len,
                    host: p as usize,
                });
                end = end.max(start.saturating_add(len));
            }
        }
        regions.sort_by_key(|r| r.start);
        let pages = end.div_ceil(PAGE) as usize;
        Ram {
            _mem: mem.clone(),
            regions,
            has_code: (0..pages).map(|_| AtomicBool::new(false)).collect(),
            gen: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            code_epoch: AtomicU64::new(0),
        }
    }

    /// The host address of the page holding `pa`, if it is RAM.
    #[inline]
    pub(crate) fn page_host(&self, pa: u64) -> Option<HostPage> {
        let page = pa & !(PAGE - 1);
        for r in &self.regions {
            if page >= r.start && page - r.start < r.len {
                return NonZeroUsize::new(r.host + (page - r.start) as usize).map(HostPage);
            }
        }
        None
    }

    /// Copies from RAM at `pa` (the range must lie in one page).
    #[inline]
    pub(crate) fn read(host_page: HostPage, off: usize, buf: &mut [u8]) {
        // Operand-sized reads (the interpreter's slow paths) without a
        // call to memcpy.
        if let n @ (1 | 2 | 4 | 8) = buf.len() {
            let v = Self::load(host_page, off, n).to_le_bytes();
            buf.copy_from_slice(&v[..n]);
            return;
        }
        let p = host_page.at(off, buf.len());
        // SAFETY: a `HostPage` is the start of a 4 KiB page inside a live
        // mapping owned by `Ram::_mem` (see the type), and `at` checked
        // that the range stays within that page. Other vCPUs may write the
        // same bytes concurrently, as on real hardware; the bytes are
        // plain data with no invalid values.
        unsafe { std::ptr::copy_nonoverlapping(p as *const u8, buf.as_mut_ptr(), buf.len()) }
    }

    /// Loads a little-endian value of `bytes` (1, 2, 4 or 8) bytes at
    /// `off` in a RAM page (the range must lie in the page).
    #[inline(always)]
    pub(crate) fn load(host_page: HostPage, off: usize, bytes: usize) -> u64 {
        let p = host_page.at(off, bytes.min(8));
        // SAFETY: as in `read`: a live RAM page, the range checked by
        // `at` (at most 8 bytes are read); the loads are
        // unaligned-tolerant and any bit pattern is valid.
        unsafe {
            match bytes {
                8 => std::ptr::read_unaligned(p as *const u64),
                4 => u64::from(std::ptr::read_unaligned(p as *const u32)),
                2 => u64::from(std::ptr::read_unaligned(p as *const u16)),
                _ => u64::from(*(p as *const u8)),
            }
        }
    }

    /// Stores the low `bytes` (1, 2, 4 or 8) bytes of `v` at `off` in a
    /// RAM page; returns true when the page held cached code.
    #[inline(always)]
    pub(crate) fn store(
        &self,
        pa: u64,
        host_page: HostPage,
        off: usize,
        bytes: usize,
        v: u64,
    ) -> bool {
        let p = host_page.at(off, bytes.min(8));
        // SAFETY: as in `load`; other vCPUs may touch the same bytes, as
        // on hardware, and guest RAM is never referenced by Rust refs.
        unsafe {
            match bytes {
                8 => std::ptr::write_unaligned(p as *mut u64, v),
                4 => std::ptr::write_unaligned(p as *mut u32, v as u32),
                2 => std::ptr::write_unaligned(p as *mut u16, v as u16),
                _ => *(p as *mut u8) = v as u8,
            }
        }
        self.note_write(pa)
    }

    /// Copies into RAM; returns true when the page held cached code (now
    /// invalidated).
    #[inline]
    pub(crate) fn write(&self, pa: u64, host_page: HostPage, off: usize, buf: &[u8]) -> bool {
        let p = host_page.at(off, buf.len());
        // SAFETY: as in `read`: a live, page-bounded range of guest RAM.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p as *mut u8, buf.len()) }
        self.note_write(pa)
    }

    /// Marks a write to physical page of `pa`; true when it held code.
    #[inline]
    pub fn note_write(&self, pa: u64) -> bool {
        let i = (pa / PAGE) as usize;
        match self.has_code.get(i) {
            Some(c) if c.load(Ordering::Relaxed) => {
                c.store(false, Ordering::Relaxed);
                if let Some(g) = self.gen.get(i) {
                    g.fetch_add(1, Ordering::Release);
                }
                self.code_epoch.fetch_add(1, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Marks a write of `len` bytes at `pa` made outside the engine (device
    /// DMA): every page it touches that held code gets a new generation.
    pub fn note_range(&self, pa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = pa / PAGE;
        let last = pa.saturating_add(len - 1) / PAGE;
        // Pages past the end of RAM hold no code; stop there so a huge
        // length costs nothing.
        let last = last.min(self.has_code.len() as u64);
        for page in first..=last {
            self.note_write(page * PAGE);
        }
    }

    /// The per-page "holds decoded code" markers (one byte each, nonzero
    /// when set) and their count, for translated code's inline stores:
    /// a store to a marked page takes the checked path.
    pub(crate) fn code_map(&self) -> (*const u8, usize) {
        (self.has_code.as_ptr().cast(), self.has_code.len())
    }

    /// The code-write epoch (see the field).
    #[inline(always)]
    pub fn code_epoch(&self) -> u64 {
        self.code_epoch.load(Ordering::Acquire)
    }

    /// Marks a page as holding decoded code and returns its generation.
    pub fn mark_code(&self, pa: u64) -> u32 {
        let i = (pa / PAGE) as usize;
        if let Some(c) = self.has_code.get(i) {
            c.store(true, Ordering::Relaxed);
        }
        self.generation(pa)
    }

    #[inline]
    pub fn generation(&self, pa: u64) -> u32 {
        self.gen
            .get((pa / PAGE) as usize)
            .map(|g| g.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Atomically compares and exchanges an aligned value of `size` bytes
    /// (1, 2, 4, 8). Returns the old value and whether a page holding code
    /// was written; stores `new` only when the old value equalled `expect`.
    pub(crate) fn cmpxchg(
        &self,
        pa: u64,
        host_page: HostPage,
        off: usize,
        size: usize,
        expect: u64,
        new: u64,
    ) -> (u64, bool) {
        use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8};
        assert!(
            off.is_multiple_of(size) && matches!(size, 1 | 2 | 4 | 8),
            "atomic access of {size} bytes at offset {off} is not aligned"
        );
        let p = host_page.at(off, size);
        // In every arm below, `p` is inside a live RAM page (see `read`) and
        // aligned to `size` (the caller checked alignment), so it is valid
        // for an atomic of that width; other threads only access guest RAM
        // through raw copies or atomics, never references.
        let old = match size {
            1 => {
                // SAFETY: aligned, live guest RAM (see above).
                let a = unsafe { AtomicU8::from_ptr(p as *mut u8) };
                match a.compare_exchange(
                    expect as u8,
                    new as u8,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(v) | Err(v) => u64::from(v),
                }
            }
            2 => {
                // SAFETY: aligned, live guest RAM (see above).
                let a = unsafe { AtomicU16::from_ptr(p as *mut u16) };
                match a.compare_exchange(
                    expect as u16,
                    new as u16,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(v) | Err(v) => u64::from(v),
                }
            }
            4 => {
                // SAFETY: aligned, live guest RAM (see above).
                let a = unsafe { AtomicU32::from_ptr(p as *mut u32) };
                match a.compare_exchange(
                    expect as u32,
                    new as u32,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(v) | Err(v) => u64::from(v),
                }
            }
            _ => {
                // SAFETY: aligned, live guest RAM (see above).
                let a = unsafe { AtomicU64::from_ptr(p as *mut u64) };
                match a.compare_exchange(expect, new, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                }
            }
        };
        let expect = expect & crate::flags::mask(size as u32 * 8);
        let code = old == expect && self.note_write(pa);
        (old, code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn ram() -> Ram {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        Ram::new(&mem)
    }

    #[test]
    fn reads_back_writes_and_tracks_code() {
        let r = ram();
        let h = r.page_host(0x2000).unwrap();
        assert!(!r.write(0x2010, h, 0x10, &[1, 2, 3]));
        let mut b = [0u8; 3];
        Ram::read(h, 0x10, &mut b);
        assert_eq!(b, [1, 2, 3]);
        let g = r.mark_code(0x2000);
        assert!(r.write(0x2010, h, 0x10, &[4]));
        assert_ne!(r.generation(0x2000), g);
        assert!(r.page_host(0x10000).is_none());
    }

    #[test]
    fn dma_writes_invalidate_code_pages() {
        let r = ram();
        let g1 = r.mark_code(0x1000);
        let g2 = r.mark_code(0x3000);
        let epoch = r.code_epoch();
        // Ends on the last byte of page 1: page 3 is untouched.
        r.note_range(0x0800, 0x1800);
        assert_ne!(r.generation(0x1000), g1);
        assert_eq!(r.generation(0x3000), g2);
        assert_ne!(r.code_epoch(), epoch);
        // Empty and absurd ranges are harmless.
        r.note_range(0x3000, 0);
        assert_eq!(r.generation(0x3000), g2);
        r.note_range(u64::MAX - 10, u64::MAX);
        r.note_range(0x2000, u64::MAX);
        assert_ne!(r.generation(0x3000), g2);
    }

    #[test]
    fn cmpxchg_only_stores_on_match() {
        let r = ram();
        let h = r.page_host(0).unwrap();
        r.write(0, h, 8, &5u64.to_le_bytes());
        assert_eq!(r.cmpxchg(8, h, 8, 8, 4, 9).0, 5);
        assert_eq!(r.cmpxchg(8, h, 8, 8, 5, 9).0, 5);
        let mut b = [0u8; 8];
        Ram::read(h, 8, &mut b);
        assert_eq!(u64::from_le_bytes(b), 9);
    }

    #[test]
    fn sized_loads_and_stores() {
        let r = ram();
        let h = r.page_host(0x3000).unwrap();
        r.store(0x3000, h, 0xffc, 4, 0x1122_3344_5566_7788);
        assert_eq!(Ram::load(h, 0xffc, 4), 0x5566_7788);
        assert_eq!(Ram::load(h, 0xffd, 2), 0x6677);
        assert_eq!(Ram::load(h, 0xfff, 1), 0x55);
        r.store(0x3000, h, 0x11, 8, u64::MAX);
        assert_eq!(Ram::load(h, 0x10, 8), 0xffff_ffff_ffff_ff00);
        r.mark_code(0x3000);
        assert!(r.store(0x3000, h, 0, 1, 1));
    }
}
