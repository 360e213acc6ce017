//! Segment descriptors: encoding the boot GDT's 8-byte entries and
//! decoding them into the hidden segment state the vCPU registers carry,
//! so the in-memory GDT and the loaded segment registers always agree.

use hypervisor::Segment;

/// Access byte: present, DPL 0, code/data, execute/read, accessed.
pub const ACCESS_CODE: u8 = 0x9b;
/// Access byte: present, DPL 0, code/data, read/write, accessed.
pub const ACCESS_DATA: u8 = 0x93;
/// Access byte: present, system, busy 32/64-bit TSS (type 0xb).
pub const ACCESS_TSS_BUSY: u8 = 0x8b;

/// Flags nibble: 4 KiB granularity.
pub const FLAG_G: u8 = 0x8;
/// Flags nibble: 32-bit default operand size.
pub const FLAG_DB: u8 = 0x4;
/// Flags nibble: 64-bit code segment.
pub const FLAG_L: u8 = 0x2;

/// Encodes a descriptor from its access byte, flags nibble, base and
/// 20-bit limit (in the units `FLAG_G` selects).
pub const fn entry(access: u8, flags: u8, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((flags & 0xf) as u64) << 52)
        | (((base >> 24) & 0xff) << 56)
}

/// The hidden segment state a CPU loads from descriptor `desc` when the
/// selector `selector` is loaded.
pub fn segment(desc: u64, selector: u16) -> Segment {
    let base = ((desc >> 16) & 0xff_ffff) | (((desc >> 56) & 0xff) << 24);
    let raw_limit = ((desc & 0xffff) | (((desc >> 48) & 0xf) << 16)) as u32;
    let access = (desc >> 40) as u8;
    let flags = ((desc >> 52) & 0xf) as u8;
    let g = flags & FLAG_G != 0;
    Segment {
        base,
        limit: if g {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: access & 0xf,
        present: access & 0x80 != 0,
        dpl: (access >> 5) & 0x3,
        db: flags & FLAG_DB != 0,
        s: access & 0x10 != 0,
        l: flags & FLAG_L != 0,
        g,
        avl: flags & 0x1 != 0,
        unusable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_classic_flat_descriptors() {
        assert_eq!(
            entry(ACCESS_CODE, FLAG_G | FLAG_L, 0, 0xfffff),
            0x00af_9b00_0000_ffff
        );
        assert_eq!(
            entry(ACCESS_DATA, FLAG_G | FLAG_DB, 0, 0xfffff),
            0x00cf_9300_0000_ffff
        );
        assert_eq!(
            entry(ACCESS_CODE, FLAG_G | FLAG_DB, 0, 0xfffff),
            0x00cf_9b00_0000_ffff
        );
    }

    #[test]
    fn decodes_what_it_encodes() {
        let s = segment(
            entry(ACCESS_CODE, FLAG_G | FLAG_L, 0x1234_5678, 0xfffff),
            0x10,
        );
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(
            (s.type_, s.present, s.s, s.l, s.db, s.g, s.dpl),
            (0xb, true, true, true, false, true, 0)
        );
        let t = segment(entry(ACCESS_TSS_BUSY, 0, 0, 0x67), 0x20);
        assert_eq!((t.limit, t.type_, t.s, t.g), (0x67, 0xb, false, false));
    }
}
