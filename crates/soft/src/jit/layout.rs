//! The byte offsets inside `Core` that translated code reads and writes
//! (general registers, RIP, segment bases and selectors, the lazy flags,
//! the TLB, the retired count, CR4, TSC offset and TSC_AUX), taken from
//! the live core once per translation ([`Layout::of`]).

use crate::core::Core;
use crate::flags::Flags;

/// Byte offsets of what translated code touches inside `Core`.
pub(super) struct Layout {
    /// The base of each segment's descriptor cache.
    pub(super) seg_base: [usize; 6],
    /// Each segment register's selector.
    pub(super) seg_sel: [usize; 6],
    pub(super) tlb: crate::mmu::TlbLayout,
    pub(super) gpr: usize,
    pub(super) rip: usize,
    pub(super) retired: usize,
    pub(super) cr4: usize,
    pub(super) tsc_offset: usize,
    pub(super) tsc_aux: usize,
    pub(super) fl_bits: usize,
    pub(super) fl_op: usize,
    pub(super) fl_size: usize,
    pub(super) fl_dst: usize,
    pub(super) fl_src: usize,
    pub(super) fl_res: usize,
    pub(super) fl_cin: usize,
}

impl Layout {
    pub(super) fn of(core: &Core) -> Layout {
        let base = core as *const Core as usize;
        let gpr = core.cpu.gpr.as_ptr() as usize - base;
        let rip = &core.cpu.rip as *const u64 as usize - base;
        let flags = &core.cpu.flags as *const Flags as usize - base;
        let l = Flags::layout();
        let seg_base = std::array::from_fn(|i| &core.cpu.seg[i].base as *const u64 as usize - base);
        let seg_sel =
            std::array::from_fn(|i| &core.cpu.seg[i].selector as *const u16 as usize - base);
        Layout {
            seg_base,
            seg_sel,
            tlb: crate::mmu::Tlb::layout(),
            gpr,
            rip,
            retired: &core.retired as *const u64 as usize - base,
            cr4: &core.cpu.cr4 as *const u64 as usize - base,
            tsc_offset: &core.cpu.msr.tsc_offset as *const u64 as usize - base,
            tsc_aux: &core.cpu.msr.tsc_aux as *const _ as usize - base,
            fl_bits: flags + l.bits,
            fl_op: flags + l.op,
            fl_size: flags + l.size,
            fl_dst: flags + l.dst,
            fl_src: flags + l.src,
            fl_res: flags + l.res,
            fl_cin: flags + l.cin,
        }
    }

    pub(super) fn reg(&self, r: u8) -> i32 {
        (self.gpr + 8 * usize::from(r & 15)) as i32
    }
}

/// The byte offset in `Core` of 8-bit register `r` in iced-x86's
/// byte-register numbering (0-3 AL-BL, 4-7 AH-BH, 8-19 SPL-R15L).
pub(super) fn byte_reg(l: &Layout, r: u8) -> i32 {
    let r = usize::from(r);
    let (g, hi) = match r {
        0..=3 => (r, 0),
        4..=7 => (r - 4, 1),
        _ => ((r - 4) & 15, 0),
    };
    (l.gpr + 8 * g + hi) as i32
}
