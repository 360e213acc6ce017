//! The 4 KiB Identify data structures the controller returns: the
//! controller (CNS 01h), namespace 1 (CNS 00h), the active namespace list
//! (CNS 02h) and namespace 1's (empty) identification descriptor list
//! (CNS 03h).

/// Bytes of every Identify structure.
pub const IDENTIFY_BYTES: usize = 4096;
/// PCI vendor of the controller (Red Hat's QEMU ID range, as emulated
/// NVMe controllers commonly use).
pub const VENDOR: u16 = 0x1b36;
/// Maximum Data Transfer Size as a power of two of 4 KiB pages.
pub const MDTS: u8 = 7;

/// What the guest is told about the disk.
pub struct Facts<'a> {
    pub serial: &'a str,
    pub sectors: u64,
    pub readonly: bool,
    pub write_cache: bool,
    pub version: u32,
}

fn ascii(buf: &mut [u8], text: &str) {
    buf.fill(b' ');
    for (b, c) in buf
        .iter_mut()
        .zip(text.bytes().filter(|c| c.is_ascii_graphic() || *c == b' '))
    {
        *b = c;
    }
}

pub fn controller(f: &Facts) -> Vec<u8> {
    let mut d = vec![0u8; IDENTIFY_BYTES];
    d[0..2].copy_from_slice(&VENDOR.to_le_bytes());
    d[2..4].copy_from_slice(&VENDOR.to_le_bytes());
    ascii(&mut d[4..24], f.serial);
    ascii(&mut d[24..64], "vessel NVMe disk");
    ascii(&mut d[64..72], "1.0");
    d[77] = MDTS;
    d[80..84].copy_from_slice(&f.version.to_le_bytes());
    d[258] = 3; // ACL: 4 aborts
    d[259] = 3; // AERL: 4 async event requests
    d[512] = 0x66; // SQES: 64-byte entries
    d[513] = 0x44; // CQES: 16-byte entries
    d[516..520].copy_from_slice(&1u32.to_le_bytes()); // NN
    d[525] = u8::from(f.write_cache); // VWC
    let nqn = format!("nqn.2026-12.dev.vessel:nvme:{}", f.serial);
    let n = nqn.len().min(256);
    d[768..768 + n].copy_from_slice(&nqn.as_bytes()[..n]);
    // Power state 0: 25 W, the only one.
    d[2048..2050].copy_from_slice(&2500u16.to_le_bytes());
    d
}

pub fn namespace(f: &Facts) -> Vec<u8> {
    let mut d = vec![0u8; IDENTIFY_BYTES];
    for at in [0, 8, 16] {
        d[at..at + 8].copy_from_slice(&f.sectors.to_le_bytes());
    }
    // NSATTR bit 0: write protected.
    d[99] = u8::from(f.readonly);
    // LBA format 0: 512-byte data, no metadata (LBADS = 9).
    d[130] = 9;
    d
}

/// Active namespaces above `after`: namespace 1 only.
pub fn active_list(after: u32) -> Vec<u8> {
    let mut d = vec![0u8; IDENTIFY_BYTES];
    if after == 0 {
        d[0..4].copy_from_slice(&1u32.to_le_bytes());
    }
    d
}
