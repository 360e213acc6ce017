//! Guest RAM layout: which guest-physical ranges are RAM for a given memory
//! size, and the firmware memory map (E820 / PVH memmap) the guest is told.

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::layout::mem;

/// Errors building the memory map.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    #[error("guest memory has no ram at address 0")]
    NoLowRam,
    #[error("low ram ends at {0:#x}, below the 1 MiB kernel load address")]
    LowRamTooSmall(u64),
}

/// Kind of an E820 entry, with the values the firmware interface uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

/// One entry of the firmware memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// The guest RAM regions for `mem_size` bytes of RAM: everything below
/// [`mem::MMIO_HOLE_START`] goes low, the rest starts at
/// [`mem::HIGH_RAM_START`] (4 GiB). A size of 0 gives no regions.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    let low = mem_size.min(mem::MMIO_HOLE_START);
    let high = mem_size - low;
    let mut regions = Vec::with_capacity(2);
    if low > 0 {
        regions.push((GuestAddress(0), to_usize(low)));
    }
    if high > 0 {
        regions.push((GuestAddress(mem::HIGH_RAM_START), to_usize(high)));
    }
    regions
}

/// Saturating u64 -> usize (identity on 64-bit hosts, the only ones vessel
/// builds for).
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// End (exclusive) of the RAM region that starts at guest address 0.
pub fn low_ram_end(guest_mem: &GuestMemoryMmap) -> Result<u64, MemoryError> {
    let region = guest_mem
        .find_region(GuestAddress(0))
        .ok_or(MemoryError::NoLowRam)?;
    let end = region.start_addr().raw_value().saturating_add(region.len());
    if end <= mem::HIMEM_START {
        return Err(MemoryError::LowRamTooSmall(end));
    }
    Ok(end)
}

/// The firmware memory map for `guest_mem`: low RAM below the EBDA, the
/// EBDA/VGA/BIOS area (which holds the ACPI tables) reserved, RAM from
/// 1 MiB to the end of low RAM, and every other region as RAM. The MMIO
/// hole (PCI BARs, IOAPIC, local APIC) is not listed, so it is never RAM.
pub fn e820_map(guest_mem: &GuestMemoryMmap) -> Result<Vec<E820Entry>, MemoryError> {
    let low_end = low_ram_end(guest_mem)?;
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: mem::EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: mem::EBDA_START,
            size: mem::HIMEM_START - mem::EBDA_START,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            addr: mem::HIMEM_START,
            size: low_end - mem::HIMEM_START,
            kind: E820Kind::Ram,
        },
    ];
    let mut high: Vec<E820Entry> = guest_mem
        .iter()
        .filter(|r| r.start_addr().raw_value() >= low_end)
        .map(|r| E820Entry {
            addr: r.start_addr().raw_value(),
            size: r.len(),
            kind: E820Kind::Ram,
        })
        .collect();
    high.sort_by_key(|e| e.addr);
    map.extend(high);
    Ok(map)
}

/// True when `[addr, addr + len)` lies inside one RAM region of `guest_mem`.
pub fn range_in_ram(guest_mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    if len == 0 {
        return guest_mem.address_in_range(GuestAddress(addr));
    }
    let Some(last) = addr.checked_add(len - 1) else {
        return false;
    };
    match guest_mem.find_region(GuestAddress(addr)) {
        Some(r) => r.last_addr().raw_value() >= last,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_memory_is_one_low_region() {
        assert_eq!(
            ram_regions(128 * MIB),
            vec![(GuestAddress(0), (128 * MIB) as usize)]
        );
    }

    #[test]
    fn three_gib_fills_low_ram_exactly() {
        assert_eq!(
            ram_regions(3 * GIB),
            vec![(GuestAddress(0), (3 * GIB) as usize)]
        );
    }

    #[test]
    fn four_gib_splits_around_the_hole() {
        assert_eq!(
            ram_regions(4 * GIB),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), GIB as usize)
            ]
        );
    }

    #[test]
    fn five_gib_puts_two_gib_high() {
        assert_eq!(
            ram_regions(5 * GIB),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), (2 * GIB) as usize)
            ]
        );
    }

    #[test]
    fn zero_and_one_past_the_hole() {
        assert!(ram_regions(0).is_empty());
        assert_eq!(
            ram_regions(3 * GIB + 4096),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), 4096)
            ]
        );
    }

    #[test]
    fn e820_reserves_bios_area_and_lists_high_ram() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&ram_regions(4 * GIB)).unwrap();
        let map = e820_map(&gm).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: mem::EBDA_START,
                kind: E820Kind::Ram
            }
        );
        assert_eq!(map[1].kind, E820Kind::Reserved);
        assert!(map[1].addr <= mem::ACPI_START && map[1].addr + map[1].size >= mem::ACPI_END);
        assert_eq!(map[2].addr, mem::HIMEM_START);
        assert_eq!(map[2].addr + map[2].size, mem::MMIO_HOLE_START);
        assert_eq!(
            map[3],
            E820Entry {
                addr: 4 * GIB,
                size: GIB,
                kind: E820Kind::Ram
            }
        );
        // Nothing in the map covers the IOAPIC or the local APIC.
        for e in &map {
            assert!(!(e.addr..e.addr + e.size).contains(&mem::LAPIC_START));
            assert!(!(e.addr..e.addr + e.size).contains(&mem::IOAPIC_START));
        }
    }

    #[test]
    fn e820_rejects_tiny_memory() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x80000)]).unwrap();
        assert_eq!(e820_map(&gm), Err(MemoryError::LowRamTooSmall(0x80000)));
    }

    #[test]
    fn range_checks() {
        let gm =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 * MIB as usize)]).unwrap();
        assert!(range_in_ram(&gm, 0, 16 * MIB));
        assert!(!range_in_ram(&gm, 1, 16 * MIB));
        assert!(!range_in_ram(&gm, u64::MAX, 2));
        assert!(!range_in_ram(&gm, 32 * MIB, 1));
    }
}
