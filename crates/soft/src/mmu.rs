//! The soft MMU: translation of linear to physical addresses through the
//! guest's page tables (32-bit, PAE and 4-level paging), with accessed and
//! dirty bits, user/supervisor, write-protect and NX checks, and a small
//! direct-mapped TLB flushed on CR3 writes, INVLPG and paging-mode changes.

use crate::cpu::{Cpu, CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE, EFER_NXE};
use crate::exception::{Fault, PF};
use crate::phys::{HostPage, Ram, PAGE};

const TLB_SIZE: usize = 4096;

/// How memory is accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

// Translated code turns an index into an offset with a shift.
const _: () = assert!(std::mem::size_of::<Entry>().is_power_of_two());

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Linear page number + 1 (0 = empty).
    tag: u64,
    /// Physical page address.
    pa: u64,
    /// The page's host address when it is RAM (`None` is 0 to translated
    /// code).
    host: Option<HostPage>,
    writable: bool,
    user: bool,
    nx: bool,
    dirty: bool,
    /// A global page (PTE.G with CR4.PGE): CR3 writes leave it alone.
    global: bool,
    /// Accesses the fast path may make without a walk: `PERM_*` bits,
    /// set only for RAM pages.
    perm: u8,
}

/// Supervisor read, user read, supervisor write, user write: what a TLB
/// entry allows the fast path (writes only once the page is dirty).
pub const PERM_SR: u8 = 1;
pub const PERM_UR: u8 = 2;
pub const PERM_SW: u8 = 4;
pub const PERM_UW: u8 = 8;
/// Instruction fetch allowed (not NX, or NX not enabled).
pub const PERM_X: u8 = 16;

/// A resolved page: physical page address and its host page if RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub pa: u64,
    pub host: Option<HostPage>,
}

/// Translation lookaside buffer.
#[derive(Debug, Clone)]
pub struct Tlb {
    e: Vec<Entry>,
    /// Bumped by every flush: code that cached a translation (the block
    /// loop re-running a block) checks it is unchanged.
    pub epoch: u64,
    /// Bumped by the flushes that may drop the translation of a global
    /// page holding code that translations were linked into (not by CR3
    /// writes, nor by INVLPG of other pages): what relies on global pages
    /// alone (the translator's links into kernel code) checks this one.
    pub global_epoch: u64,
    /// Linear page numbers of global pages that blocks were decoded from
    /// (a superset: pages stay after their blocks go).
    global_code: std::collections::HashSet<u64>,
    /// Slots filled with non-global entries since the last flush, so a
    /// CR3 write clears those instead of scanning the whole table (a
    /// Debian boot writes CR3 about 18,000 times).
    nonglobal: Vec<u32>,
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            e: vec![Entry::default(); TLB_SIZE],
            epoch: 0,
            global_epoch: 0,
            global_code: std::collections::HashSet::new(),
            nonglobal: Vec::new(),
        }
    }
}

/// Where the translator ([`crate::jit`]) finds a TLB entry's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlbLayout {
    /// Bytes per entry (a power of two: translated code shifts by it).
    pub stride: usize,
    pub tag: usize,
    pub pa: usize,
    pub host: usize,
    pub perm: usize,
    /// Entries (a power of two: the index is the page number masked).
    pub count: usize,
}

impl Tlb {
    pub(crate) fn layout() -> TlbLayout {
        TlbLayout {
            stride: std::mem::size_of::<Entry>(),
            tag: std::mem::offset_of!(Entry, tag),
            pa: std::mem::offset_of!(Entry, pa),
            host: std::mem::offset_of!(Entry, host),
            perm: std::mem::offset_of!(Entry, perm),
            count: TLB_SIZE,
        }
    }

    /// The entry array, for translated code's inline lookups (valid
    /// while this TLB lives; flushes rewrite entries in place).
    pub(crate) fn entries(&self) -> *const u8 {
        self.e.as_ptr().cast()
    }

    pub fn flush(&mut self) {
        self.e.iter_mut().for_each(|e| e.tag = 0);
        self.nonglobal.clear();
        self.epoch = self.epoch.wrapping_add(1);
        self.global_epoch = self.global_epoch.wrapping_add(1);
    }

    /// A CR3 write: every entry but the global pages' goes (as on the
    /// hardware), and global pages keep their epoch.
    pub fn flush_nonglobal(&mut self) {
        if self.nonglobal.len() >= TLB_SIZE / 2 {
            self.e
                .iter_mut()
                .filter(|e| !e.global)
                .for_each(|e| e.tag = 0);
        } else {
            for &i in &self.nonglobal {
                let e = &mut self.e[i as usize];
                if !e.global {
                    e.tag = 0;
                }
            }
        }
        self.nonglobal.clear();
        self.epoch = self.epoch.wrapping_add(1);
    }

    pub fn flush_page(&mut self, lin: u64) {
        self.epoch = self.epoch.wrapping_add(1);
        let vpn = lin >> 12;
        // Links into global code depend on no other page's mapping.
        if self.global_code.contains(&vpn) {
            self.global_epoch = self.global_epoch.wrapping_add(1);
        }
        let e = &mut self.e[(vpn as usize) % TLB_SIZE];
        if e.tag == vpn + 1 {
            e.tag = 0;
        }
    }

    /// Notes that a block decoded from the global page of `lin` may be
    /// linked into: an INVLPG of that page must move the global epoch.
    pub fn note_global_code(&mut self, lin: u64) {
        self.global_code.insert(lin >> 12);
    }

    /// Whether the TLB holds `lin` as a global page.
    pub fn is_global(&self, lin: u64) -> bool {
        let vpn = lin >> 12;
        let e = &self.e[(vpn as usize) % TLB_SIZE];
        e.tag == vpn + 1 && e.global
    }

    /// The host page and physical page of `lin` when the TLB holds it as
    /// RAM with all of the `need` permission bits (`PERM_*`).
    #[inline(always)]
    pub(crate) fn fast(&self, lin: u64, need: u8) -> Option<(HostPage, u64)> {
        let vpn = lin >> 12;
        // The index is reduced modulo the table size.
        let e = &self.e[(vpn as usize) % TLB_SIZE];
        if e.tag == vpn + 1 && e.perm & need == need {
            Some((e.host?, e.pa))
        } else {
            None
        }
    }
}

fn perm_of(cpu: &Cpu, e: &Entry) -> u8 {
    if e.host.is_none() {
        return 0;
    }
    let mut p = PERM_SR;
    if !(e.nx && cpu.efer & EFER_NXE != 0) {
        p |= PERM_X;
    }
    if e.user {
        p |= PERM_UR;
    }
    if e.dirty {
        if e.writable || cpu.cr0 & CR0_WP == 0 {
            p |= PERM_SW;
        }
        if e.writable && e.user {
            p |= PERM_UW;
        }
    }
    p
}

/// Who makes the access: `user` is true for CPL3 accesses other than
/// implicit supervisor ones (descriptor tables, TSS, IDT).
#[derive(Debug, Clone, Copy)]
pub struct Who {
    pub user: bool,
}

fn pf(cpu: &mut Cpu, lin: u64, acc: Access, who: Who, present: bool) -> Fault {
    cpu.cr2 = lin;
    let mut code = 0u32;
    if present {
        code |= 1;
    }
    if acc == Access::Write {
        code |= 2;
    }
    if who.user {
        code |= 4;
    }
    if acc == Access::Exec && cpu.efer & EFER_NXE != 0 {
        code |= 0x10;
    }
    Fault::with_code(PF, code)
}

fn read_pte(ram: &Ram, pa: u64, wide: bool) -> Option<u64> {
    let host = ram.page_host(pa)?;
    let off = (pa & (PAGE - 1)) as usize;
    if wide {
        let mut b = [0u8; 8];
        Ram::read(host, off, &mut b);
        Some(u64::from_le_bytes(b))
    } else {
        let mut b = [0u8; 4];
        Ram::read(host, off, &mut b);
        Some(u64::from(u32::from_le_bytes(b)))
    }
}

fn write_pte(ram: &Ram, pa: u64, wide: bool, v: u64) {
    if let Some(host) = ram.page_host(pa) {
        let off = (pa & (PAGE - 1)) as usize;
        if wide {
            ram.write(pa, host, off, &v.to_le_bytes());
        } else {
            ram.write(pa, host, off, &(v as u32).to_le_bytes());
        }
    }
}

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const A: u64 = 0x20;
const D: u64 = 0x40;
const PS: u64 = 0x80;
const NXB: u64 = 1 << 63;
/// Global (in a leaf entry).
const G: u64 = 0x100;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Translates `lin`; fills the TLB on success.
pub fn translate(
    cpu: &mut Cpu,
    tlb: &mut Tlb,
    ram: &Ram,
    lin: u64,
    acc: Access,
    who: Who,
) -> Result<Page, Fault> {
    let vpn = lin >> 12;
    let slot = (vpn as usize) % TLB_SIZE;
    let e = tlb.e[slot];
    // A hit that lacks the rights (or the dirty bit) walks again, as the
    // hardware drops a TLB entry that faults: guests upgrade PTE rights
    // without flushing and rely on that.
    if e.tag == vpn + 1 && check(cpu, &e, acc, who) && (acc != Access::Write || e.dirty) {
        return Ok(Page {
            pa: e.pa,
            host: e.host,
        });
    }
    if e.tag == vpn + 1 {
        tlb.e[slot].tag = 0;
    }
    let ent = walk(cpu, ram, lin, acc, who)?;
    let mut ent = Entry {
        tag: vpn + 1,
        ..ent
    };
    ent.perm = perm_of(cpu, &ent);
    tlb.e[slot] = ent;
    // Once half the table is listed, the next CR3 write scans it all.
    if !ent.global && tlb.nonglobal.len() < TLB_SIZE / 2 {
        tlb.nonglobal.push(slot as u32);
    }
    Ok(Page {
        pa: ent.pa,
        host: ent.host,
    })
}

fn check(cpu: &Cpu, e: &Entry, acc: Access, who: Who) -> bool {
    if who.user && !e.user {
        return false;
    }
    match acc {
        Access::Write => e.writable || (!who.user && cpu.cr0 & CR0_WP == 0),
        Access::Exec => !(e.nx && cpu.efer & EFER_NXE != 0),
        Access::Read => true,
    }
}

fn walk(cpu: &mut Cpu, ram: &Ram, lin: u64, acc: Access, who: Who) -> Result<Entry, Fault> {
    if cpu.cr0 & CR0_PG == 0 {
        let pa = lin & 0xffff_f000 & !(PAGE - 1);
        let pa = if cpu.long_active() {
            lin & !(PAGE - 1)
        } else {
            pa
        };
        return Ok(Entry {
            tag: 0,
            pa,
            host: ram.page_host(pa),
            writable: true,
            user: true,
            nx: false,
            dirty: true,
            global: false,
            perm: 0,
        });
    }
    let (levels, wide, mut table): (u32, bool, u64) = if cpu.long_active() {
        (4, true, cpu.cr3 & ADDR)
    } else if cpu.cr4 & CR4_PAE != 0 {
        // The PDPTE is read at each walk here (real CPUs cache the four
        // PDPTEs at CR3 load; guests do not rely on the difference).
        let idx = (lin >> 30) & 3;
        let pdpte_pa = (cpu.cr3 & 0xffff_ffe0) + idx * 8;
        let pdpte = read_pte(ram, pdpte_pa, true).unwrap_or(0);
        if pdpte & P == 0 {
            return Err(pf(cpu, lin, acc, who, false));
        }
        (2, true, pdpte & ADDR)
    } else {
        (2, false, cpu.cr3 & 0xffff_f000)
    };
    let mut writable = true;
    let mut user = true;
    let mut nx = false;
    let mut level = levels;
    loop {
        let shift = if wide {
            12 + 9 * (level - 1)
        } else {
            12 + 10 * (level - 1)
        };
        let idx = if wide {
            (lin >> shift) & 0x1ff
        } else {
            (lin >> shift) & 0x3ff
        };
        let pte_pa = table + idx * if wide { 8 } else { 4 };
        let pte = match read_pte(ram, pte_pa, wide) {
            Some(v) => v,
            None => return Err(pf(cpu, lin, acc, who, false)),
        };
        if pte & P == 0 {
            return Err(pf(cpu, lin, acc, who, false));
        }
        writable &= pte & RW != 0;
        user &= pte & US != 0;
        nx |= wide && pte & NXB != 0;
        let large = level > 1
            && pte & PS != 0
            && (level <= 2 || (level == 3 && wide))
            && (wide || cpu.cr4 & CR4_PSE != 0);
        if level == 1 || large {
            let ent = Entry {
                tag: 0,
                pa: 0,
                host: None,
                writable,
                user,
                nx,
                dirty: pte & D != 0,
                global: pte & G != 0 && cpu.cr4 & CR4_PGE != 0,
                perm: 0,
            };
            if !check(cpu, &ent, acc, who) {
                return Err(pf(cpu, lin, acc, who, true));
            }
            let mut new = pte | A;
            if acc == Access::Write {
                new |= D;
            }
            if new != pte {
                write_pte(ram, pte_pa, wide, new);
            }
            let pa = if large {
                let size = 1u64 << shift;
                let base = if wide {
                    pte & ADDR & !(size - 1)
                } else {
                    // 4 MiB page: bits 13-20 hold physical address bits 32-39.
                    (pte & 0xffc0_0000) | ((pte & 0x001f_e000) << 19)
                };
                base + (lin & (size - 1) & !(PAGE - 1))
            } else {
                pte & if wide { ADDR } else { 0xffff_f000 }
            };
            return Ok(Entry {
                pa,
                host: ram.page_host(pa),
                dirty: new & D != 0,
                ..ent
            });
        }
        if pte & A == 0 {
            write_pte(ram, pte_pa, wide, pte | A);
        }
        table = pte & if wide { ADDR } else { 0xffff_f000 };
        level -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{CR0_PE, EFER_LMA, EFER_LME};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn setup(pte_flags: u64) -> (Cpu, Ram, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100000)]).unwrap();
        // PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 -> page 0x8000 at va 0x400000.
        mem.write_obj(0x2000u64 | 7, GuestAddress(0x1000)).unwrap();
        mem.write_obj(0x3000u64 | 7, GuestAddress(0x2000)).unwrap();
        mem.write_obj(0x4000u64 | 7, GuestAddress(0x3000 + 2 * 8))
            .unwrap();
        mem.write_obj(0x8000u64 | pte_flags, GuestAddress(0x4000))
            .unwrap();
        let mut cpu = Cpu::reset();
        cpu.cr0 |= CR0_PE | CR0_PG | CR0_WP;
        cpu.cr4 |= CR4_PAE;
        cpu.efer = EFER_LME | EFER_LMA | EFER_NXE;
        cpu.cr3 = 0x1000;
        let ram = Ram::new(&mem);
        (cpu, ram, mem)
    }

    /// A CR3 write drops the non-global entries and keeps the global
    /// one, both while the filled slots are listed and once so many were
    /// filled that the whole table is scanned.
    #[test]
    fn cr3_write_keeps_only_global_entries() {
        for fills in [1u64, TLB_SIZE as u64] {
            let (mut cpu, ram, mem) = setup(P | RW);
            cpu.cr4 |= CR4_PGE;
            let mut tlb = Tlb::default();
            let who = Who { user: false };
            // The page at 0x400000 global, its neighbours' PTEs not.
            mem.write_obj(0x8000u64 | P | RW | G, GuestAddress(0x4000))
                .unwrap();
            for i in 1..512u64 {
                mem.write_obj(0x8000u64 | P | RW, GuestAddress(0x4000 + 8 * i))
                    .unwrap();
            }
            translate(&mut cpu, &mut tlb, &ram, 0x400000, Access::Read, who).unwrap();
            for i in 0..fills {
                // (INVLPG first, so every round fills a slot again.)
                let lin = 0x401000 + (i % 511) * PAGE;
                tlb.flush_page(lin);
                translate(&mut cpu, &mut tlb, &ram, lin, Access::Read, who).unwrap();
            }
            assert_eq!(tlb.nonglobal.len() >= TLB_SIZE / 2, fills > 1);
            tlb.flush_nonglobal();
            assert!(
                tlb.fast(0x400000, PERM_SR).is_some(),
                "{fills}: global dropped"
            );
            assert!(tlb.is_global(0x400000));
            for i in 0..fills.min(511) {
                let lin = 0x401000 + i * PAGE;
                assert!(tlb.fast(lin, PERM_SR).is_none(), "{fills}: {lin:#x} kept");
            }
        }
    }

    #[test]
    fn walk_sets_accessed_and_dirty() {
        let (mut cpu, ram, mem) = setup(P | RW);
        let mut tlb = Tlb::default();
        let p = translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400123,
            Access::Read,
            Who { user: false },
        )
        .unwrap();
        assert_eq!(p.pa, 0x8000);
        let pte: u64 = mem.read_obj(GuestAddress(0x4000)).unwrap();
        assert_eq!(pte & (A | D), A);
        translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400123,
            Access::Write,
            Who { user: false },
        )
        .unwrap();
        let pte: u64 = mem.read_obj(GuestAddress(0x4000)).unwrap();
        assert_eq!(pte & D, D);
    }

    #[test]
    fn faults_carry_error_code_and_cr2() {
        let (mut cpu, ram, _mem) = setup(P | NXB);
        let mut tlb = Tlb::default();
        let e = translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400000,
            Access::Write,
            Who { user: false },
        )
        .unwrap_err();
        assert_eq!(e.error, Some(3));
        assert_eq!(cpu.cr2, 0x400000);
        let e = translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400000,
            Access::Read,
            Who { user: true },
        )
        .unwrap_err();
        assert_eq!(e.error, Some(5));
        let e = translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400000,
            Access::Exec,
            Who { user: false },
        )
        .unwrap_err();
        assert_eq!(e.error, Some(0x11));
        let e = translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x600000,
            Access::Read,
            Who { user: false },
        )
        .unwrap_err();
        assert_eq!(e.error, Some(0));
    }

    #[test]
    fn faulting_hit_walks_again_and_sees_upgraded_rights() {
        let (mut cpu, ram, mem) = setup(P);
        let mut tlb = Tlb::default();
        let sup = Who { user: false };
        translate(&mut cpu, &mut tlb, &ram, 0x400000, Access::Read, sup).unwrap();
        // The guest makes the page writable without INVLPG.
        mem.write_obj(0x8000u64 | P | RW | A, GuestAddress(0x4000))
            .unwrap();
        let p = translate(&mut cpu, &mut tlb, &ram, 0x400000, Access::Write, sup).unwrap();
        assert_eq!(p.pa, 0x8000);
        assert!(tlb.fast(0x400000, PERM_SW).is_some());
    }

    #[test]
    fn global_epoch_moves_only_when_a_global_page_may_change() {
        let read = |cpu: &mut Cpu, tlb: &mut Tlb, ram: &Ram| {
            translate(cpu, tlb, ram, 0x400000, Access::Read, Who { user: false }).unwrap();
        };
        for (flags, pge, global) in [(P | G, true, true), (P | G, false, false), (P, true, false)] {
            let (mut cpu, ram, _mem) = setup(flags);
            if pge {
                cpu.cr4 |= CR4_PGE;
            }
            let mut tlb = Tlb::default();
            read(&mut cpu, &mut tlb, &ram);
            assert_eq!(tlb.is_global(0x400000), global);
            // A CR3 write: every translation goes, global pages keep
            // their epoch.
            let (e, g) = (tlb.epoch, tlb.global_epoch);
            tlb.flush_nonglobal();
            assert_eq!((tlb.epoch, tlb.global_epoch), (e + 1, g));
            // INVLPG keeps it too, unless global code was noted on the
            // page; a full flush moves it.
            read(&mut cpu, &mut tlb, &ram);
            tlb.flush_page(0x400000);
            assert_eq!(tlb.global_epoch, g);
            tlb.note_global_code(0x400123);
            tlb.flush_page(0x401000);
            assert_eq!(tlb.global_epoch, g);
            tlb.flush_page(0x400000);
            assert_eq!(tlb.global_epoch, g + 1);
            tlb.flush();
            assert_eq!(tlb.global_epoch, g + 2);
        }
    }

    #[test]
    fn tlb_is_used_until_flushed() {
        let (mut cpu, ram, mem) = setup(P | RW);
        let mut tlb = Tlb::default();
        translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400000,
            Access::Read,
            Who { user: false },
        )
        .unwrap();
        mem.write_obj(0u64, GuestAddress(0x4000)).unwrap();
        assert!(translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400000,
            Access::Read,
            Who { user: false }
        )
        .is_ok());
        tlb.flush_page(0x400000);
        assert!(translate(
            &mut cpu,
            &mut tlb,
            &ram,
            0x400000,
            Access::Read,
            Who { user: false }
        )
        .is_err());
    }
}
