//! Physical Region Page lists: the guest buffers of one command, as
//! PRP1, PRP2 and (for more than two pages) PRP list pages chained by
//! their last entry. Every page and every list entry is checked to lie in
//! guest memory; each list page must give at least one data page before
//! it chains, so a hostile chain cannot loop.

use virtio::queue::Segment;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// The memory page size (CC.MPS = 0).
pub const PAGE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrpError {
    /// A list pointer is not qword aligned, a later entry not page aligned,
    /// or a list page chains before giving data.
    #[error("prp entry has an invalid offset")]
    Offset,
    /// A page or list entry lies outside guest memory.
    #[error("prp entry outside guest memory")]
    Memory,
}

fn page(
    mem: &GuestMemoryMmap,
    addr: u64,
    len: u64,
    out: &mut Vec<Segment>,
) -> Result<(), PrpError> {
    let ok = addr
        .checked_add(len)
        .is_some_and(|_| mem.check_range(GuestAddress(addr), len as usize, Permissions::ReadWrite));
    if !ok {
        return Err(PrpError::Memory);
    }
    // Contiguous pages become one segment. len <= PAGE fits u32.
    match out.last_mut() {
        Some(s) if s.addr.0.checked_add(u64::from(s.len)) == Some(addr) && s.len < 1 << 30 => {
            s.len += len as u32
        }
        _ => out.push(Segment {
            addr: GuestAddress(addr),
            len: len as u32,
        }),
    }
    Ok(())
}

/// The segments of a `len`-byte transfer described by `prp1`/`prp2`.
pub fn segments(
    mem: &GuestMemoryMmap,
    prp1: u64,
    prp2: u64,
    len: u64,
) -> Result<Vec<Segment>, PrpError> {
    let mut out = Vec::new();
    if len == 0 {
        return Ok(out);
    }
    let first = len.min(PAGE - prp1 % PAGE);
    page(mem, prp1, first, &mut out)?;
    let mut left = len - first;
    if left == 0 {
        return Ok(out);
    }
    if left <= PAGE {
        if !prp2.is_multiple_of(PAGE) {
            return Err(PrpError::Offset);
        }
        page(mem, prp2, left, &mut out)?;
        return Ok(out);
    }
    let mut list = prp2;
    if !list.is_multiple_of(8) {
        return Err(PrpError::Offset);
    }
    loop {
        let entries = (PAGE - list % PAGE) / 8;
        for i in 0..entries {
            let at = GuestAddress(list + i * 8);
            let entry: u64 = mem.read_obj(at).map_err(|_| PrpError::Memory)?;
            if i == entries - 1 && left > PAGE {
                // The last entry points at the next list page.
                if i == 0 || !entry.is_multiple_of(8) {
                    return Err(PrpError::Offset);
                }
                list = entry;
                break;
            }
            if !entry.is_multiple_of(PAGE) {
                return Err(PrpError::Offset);
            }
            let n = left.min(PAGE);
            page(mem, entry, n, &mut out)?;
            left -= n;
            if left == 0 {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn total(s: &[Segment]) -> u64 {
        s.iter().map(|s| u64::from(s.len)).sum()
    }

    #[test]
    fn one_and_two_pages() {
        let m = mem();
        let s = segments(&m, 0x1200, 0, 0x200).unwrap();
        assert_eq!(s.len(), 1);
        let s = segments(&m, 0x1200, 0x5000, 0x1000).unwrap();
        assert_eq!(total(&s), 0x1000);
        assert_eq!(s[1].addr.0, 0x5000);
        assert_eq!(s[1].len, 0x200);
        assert_eq!(segments(&m, 0x1200, 0x5008, 0x1000), Err(PrpError::Offset));
        assert_eq!(segments(&m, 0xff_f000, 0, 0x1000), Err(PrpError::Memory));
    }

    #[test]
    fn lists_chain_and_merge() {
        let m = mem();
        // A list at the end of a page: two data entries, then a chain to
        // a second list with one more.
        let list = 0x2ff0;
        m.write_obj(0x10000u64, GuestAddress(list)).unwrap();
        m.write_obj(0x3000u64, GuestAddress(list + 8)).unwrap();
        m.write_obj(0x11000u64, GuestAddress(0x3000)).unwrap();
        m.write_obj(0x12000u64, GuestAddress(0x3008)).unwrap();
        let s = segments(&m, 0xf000, list, 0x4000).unwrap();
        assert_eq!(total(&s), 0x4000);
        assert_eq!(s.len(), 1, "0xf000..0x13000 is contiguous: {s:?}");
    }

    #[test]
    fn hostile_lists_fail() {
        let m = mem();
        // A list page whose only entry chains to itself.
        m.write_obj(0x2ff8u64, GuestAddress(0x2ff8)).unwrap();
        assert_eq!(segments(&m, 0x1000, 0x2ff8, 0x3000), Err(PrpError::Offset));
        // An unaligned data entry, a list outside memory, an address wrap.
        m.write_obj(0x4001u64, GuestAddress(0x6000)).unwrap();
        assert_eq!(segments(&m, 0x1000, 0x6000, 0x3000), Err(PrpError::Offset));
        assert_eq!(
            segments(&m, 0x1000, 0x1000_0000, 0x3000),
            Err(PrpError::Memory)
        );
        assert_eq!(
            segments(&m, u64::MAX - 0xfff, 0, 0x1000),
            Err(PrpError::Memory)
        );
        m.write_obj(!0xfffu64, GuestAddress(0x7000)).unwrap();
        assert_eq!(segments(&m, 0x1000, 0x7000, 0x3000), Err(PrpError::Memory));
    }
}
