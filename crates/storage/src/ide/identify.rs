//! The 512-byte IDENTIFY DEVICE answer of the drive: LBA28 and LBA48,
//! PIO modes 0-4, multiword DMA 0-2 (no Ultra DMA: PIIX3 has none),
//! FLUSH CACHE (EXT), the write cache when the image flushes.

use super::ata::MAX_MULTIPLE;

/// ATA strings: space padded, the two bytes of each word swapped.
fn string(words: &mut [u16], text: &str) {
    let mut bytes = vec![b' '; words.len() * 2];
    for (b, c) in bytes
        .iter_mut()
        .zip(text.bytes().filter(|c| c.is_ascii_graphic() || *c == b' '))
    {
        *b = c;
    }
    for (w, pair) in words.iter_mut().zip(bytes.chunks(2)) {
        *w = u16::from(pair[0]) << 8 | u16::from(pair[1]);
    }
}

pub fn drive(serial: &str, sectors: u64, write_cache: bool, multiple: u16) -> Vec<u8> {
    let mut w = [0u16; 256];
    w[0] = 0x0040; // fixed drive
                   // A CHS geometry for old software; LBA is what counts.
    let cyl = (sectors / (16 * 63)).clamp(1, 16383) as u16;
    w[1] = cyl;
    w[3] = 16;
    w[6] = 63;
    string(&mut w[10..20], serial);
    string(&mut w[23..27], "1.0");
    string(&mut w[27..47], "vessel IDE disk");
    w[47] = 0x8000 | MAX_MULTIPLE;
    w[49] = 0x0300; // LBA, DMA
    w[50] = 0x4000;
    w[53] = 0x0006; // words 64-70 and 88 valid
    w[54] = cyl;
    w[55] = 16;
    w[56] = 63;
    let chs = u32::from(cyl) * 16 * 63;
    w[57] = chs as u16;
    w[58] = (chs >> 16) as u16;
    w[59] = 0x0100 | multiple;
    let lba28 = sectors.min(0x0fff_ffff) as u32;
    w[60] = lba28 as u16;
    w[61] = (lba28 >> 16) as u16;
    w[63] = 0x0407; // MWDMA 0-2 supported, mode 2 selected
    w[64] = 0x0003; // PIO 3 and 4
    w[65] = 120;
    w[66] = 120;
    w[67] = 120;
    w[68] = 120;
    w[80] = 0x00f0; // ATA/ATAPI-4 to -7
    let cache = if write_cache { 1 << 5 } else { 0 };
    w[82] = 0x4000 | cache; // NOP, write cache
    w[83] = 0x7400; // FLUSH CACHE EXT, FLUSH CACHE, LBA48
    w[84] = 0x4000;
    w[85] = 0x4000 | cache;
    w[86] = 0x3400;
    w[87] = 0x4000;
    w[93] = 0x4009 | 1 << 13; // master passed diagnostics, 80-wire cable
    for (i, word) in w[100..104].iter_mut().enumerate() {
        *word = (sectors >> (16 * i)) as u16;
    }
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}
