//! Extracting the uncompressed ELF `vmlinux` from a bzImage, for engines
//! that enter the kernel directly (PVH) instead of running its in-guest
//! decompressor. Handles the payload compressions Debian and other
//! distributions build with: LZ4 (the kernel's legacy frame), gzip, xz and
//! zstd. The payload is located from the boot header (protocol 2.08+); if
//! that fails, every compression magic in the image is tried and the first
//! result that is an ELF file wins.

use std::io::Read;

/// Upper bound on an uncompressed kernel, so a corrupt or hostile image
/// cannot make us allocate without limit.
pub const MAX_VMLINUX: usize = 512 << 20;

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const XZ_MAGIC: [u8; 6] = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Each legacy LZ4 block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// How many magic-number candidates the fallback scan tries per format.
const MAX_SCAN_CANDIDATES: usize = 32;

/// Payload compressions we can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Lz4Legacy,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    const ALL: [Compression; 4] = [Self::Lz4Legacy, Self::Gzip, Self::Xz, Self::Zstd];

    fn magic(self) -> &'static [u8] {
        match self {
            Self::Lz4Legacy => &LZ4_LEGACY_MAGIC,
            Self::Gzip => &GZIP_MAGIC,
            Self::Xz => &XZ_MAGIC,
            Self::Zstd => &ZSTD_MAGIC,
        }
    }

    fn detect(data: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|c| data.starts_with(c.magic()))
    }
}

/// Errors from extracting vmlinux.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("no compressed ELF kernel found in the image (tried lz4, gzip, xz, zstd)")]
    NoElfPayload,
    #[error("{0:?} payload is corrupt: {1}")]
    Corrupt(Compression, String),
    #[error("{0:?} payload expands beyond {MAX_VMLINUX} bytes")]
    TooLarge(Compression),
    #[error("{0:?} payload does not hold an ELF file")]
    NotElf(Compression),
}

/// Returns the ELF vmlinux inside `bzimage`.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, ExtractError> {
    if let Some(payload) = header_payload(bzimage) {
        if let Some(kind) = Compression::detect(payload) {
            if let Ok(elf) = decompress_elf(kind, payload) {
                return Ok(elf);
            }
        }
    }
    scan_for_payload(bzimage)
}

/// The compressed payload as the boot header (protocol 2.08+) locates it.
fn header_payload(image: &[u8]) -> Option<&[u8]> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let version = u16::from_le_bytes(image.get(0x206..0x208)?.try_into().ok()?);
    if version < 0x208 {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32::from_le_bytes(image.get(0x248..0x24c)?.try_into().ok()?) as usize;
    let length = u32::from_le_bytes(image.get(0x24c..0x250)?.try_into().ok()?) as usize;
    let start = (setup_sects + 1) * 512 + offset;
    image.get(start..start.checked_add(length)?)
}

fn scan_for_payload(image: &[u8]) -> Result<Vec<u8>, ExtractError> {
    for kind in Compression::ALL {
        let magic = kind.magic();
        let starts = image
            .windows(magic.len())
            .enumerate()
            .filter(|(_, w)| *w == magic)
            .map(|(i, _)| i)
            .take(MAX_SCAN_CANDIDATES);
        for start in starts {
            if let Ok(elf) = decompress_elf(kind, &image[start..]) {
                return Ok(elf);
            }
        }
    }
    Err(ExtractError::NoElfPayload)
}

fn decompress_elf(kind: Compression, data: &[u8]) -> Result<Vec<u8>, ExtractError> {
    let out = decompress(kind, data)?;
    if !out.starts_with(b"\x7fELF") {
        return Err(ExtractError::NotElf(kind));
    }
    Ok(out)
}

/// Decompresses one stream of `kind` at the start of `data`; trailing bytes
/// (the kernel build appends the uncompressed size) are ignored.
pub fn decompress(kind: Compression, data: &[u8]) -> Result<Vec<u8>, ExtractError> {
    match kind {
        Compression::Lz4Legacy => lz4_legacy(data),
        Compression::Gzip => read_capped(kind, flate2::read::GzDecoder::new(data)),
        Compression::Xz => xz(data),
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(data)
                .map_err(|e| ExtractError::Corrupt(kind, e.to_string()))?;
            read_capped(kind, decoder)
        }
    }
}

fn read_capped(kind: Compression, reader: impl Read) -> Result<Vec<u8>, ExtractError> {
    let mut out = Vec::new();
    reader
        .take(MAX_VMLINUX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ExtractError::Corrupt(kind, e.to_string()))?;
    if out.len() > MAX_VMLINUX {
        return Err(ExtractError::TooLarge(kind));
    }
    Ok(out)
}

/// One xz stream, driven by hand: xz2's reader treats bytes after the
/// stream's end (the kernel's size trailer) as corruption.
fn xz(data: &[u8]) -> Result<Vec<u8>, ExtractError> {
    use xz2::stream::{Action, Status, Stream};
    let kind = Compression::Xz;
    let corrupt = |e: xz2::stream::Error| ExtractError::Corrupt(kind, e.to_string());
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0).map_err(corrupt)?;
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() == out.capacity() {
            if out.len() >= MAX_VMLINUX {
                return Err(ExtractError::TooLarge(kind));
            }
            out.reserve(out.len().clamp(1 << 20, 64 << 20));
        }
        let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        let input = data.get(consumed..).unwrap_or(&[]);
        let before = (stream.total_in(), out.len());
        let status = stream
            .process_vec(input, &mut out, Action::Run)
            .map_err(corrupt)?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if (stream.total_in(), out.len()) == before && out.len() < out.capacity() {
            return Err(ExtractError::Corrupt(kind, "truncated stream".into()));
        }
    }
}

/// The LZ4 "legacy" frame the kernel build writes (`lz4 -l`): the magic,
/// then blocks of `u32 LE compressed size` + an LZ4 block of at most 8 MiB
/// output, until the input ends or a size cannot be a block (the kernel's
/// appended 4-byte length). lz4_flex decodes blocks but not this framing.
fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>, ExtractError> {
    let kind = Compression::Lz4Legacy;
    let corrupt = |msg: &str| ExtractError::Corrupt(kind, msg.to_string());
    let mut rest = data
        .strip_prefix(&LZ4_LEGACY_MAGIC[..])
        .ok_or_else(|| corrupt("missing magic"))?;
    let mut out: Vec<u8> = Vec::new();
    let mut blocks = 0usize;
    while let Some(size_bytes) = rest.get(..4) {
        // A second magic starts a concatenated frame.
        if size_bytes == LZ4_LEGACY_MAGIC {
            rest = &rest[4..];
            continue;
        }
        let size = u32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]])
            as usize;
        let Some(block) = rest.get(4..4 + size).filter(|_| size > 0) else {
            break; // trailer or end of stream
        };
        let old = out.len();
        out.resize(old + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[old..])
            .map_err(|e| ExtractError::Corrupt(kind, e.to_string()))?;
        out.truncate(old + n);
        if out.len() > MAX_VMLINUX {
            return Err(ExtractError::TooLarge(kind));
        }
        rest = &rest[4 + size..];
        blocks += 1;
    }
    if blocks == 0 {
        return Err(corrupt("no blocks"));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A fake ELF "kernel": the magic and some compressible, varied bytes.
    pub(crate) fn fake_elf(len: usize) -> Vec<u8> {
        let mut v = b"\x7fELF\x02\x01\x01".to_vec();
        v.extend((0..len).map(|i| ((i * 7) ^ (i >> 9)) as u8));
        v
    }

    pub(crate) fn compress(kind: Compression, data: &[u8]) -> Vec<u8> {
        match kind {
            Compression::Lz4Legacy => {
                let mut out = LZ4_LEGACY_MAGIC.to_vec();
                for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
                    let block = lz4_flex::block::compress(chunk);
                    out.extend((block.len() as u32).to_le_bytes());
                    out.extend(block);
                }
                out
            }
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }

    /// A bzImage-like blob: boot sector + setup with a 2.15 header pointing
    /// at the payload, which is followed by the 4-byte size trailer.
    pub(crate) fn fake_bzimage(kind: Compression, elf: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let mut payload = vec![0xaau8; 64]; // stand-in for decompressor code
        let payload_offset = payload.len() as u32;
        let compressed = compress(kind, elf);
        let payload_len = compressed.len() as u32 + 4;
        payload.extend(compressed);
        payload.extend((elf.len() as u32).to_le_bytes());
        let mut img = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        img[0x1f1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&payload_len.to_le_bytes());
        img.extend(payload);
        img
    }

    #[test]
    fn extracts_each_compression_through_the_header() {
        let elf = fake_elf(300_000);
        for kind in Compression::ALL {
            let img = fake_bzimage(kind, &elf);
            let got = extract_vmlinux(&img).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(got, elf, "{kind:?}");
        }
    }

    #[test]
    fn scans_for_magic_when_header_is_missing() {
        let elf = fake_elf(10_000);
        for kind in Compression::ALL {
            let mut img = fake_bzimage(kind, &elf);
            img[0x202..0x206].copy_from_slice(b"XXXX");
            assert_eq!(extract_vmlinux(&img).unwrap(), elf, "{kind:?}");
        }
    }

    #[test]
    fn lz4_legacy_spans_several_blocks() {
        let elf = fake_elf(LZ4_LEGACY_BLOCK * 2 + 12345);
        let img = fake_bzimage(Compression::Lz4Legacy, &elf);
        assert_eq!(extract_vmlinux(&img).unwrap(), elf);
    }

    #[test]
    fn non_elf_payload_is_rejected() {
        let img = fake_bzimage(Compression::Gzip, b"not an elf at all, just text");
        assert!(matches!(
            extract_vmlinux(&img),
            Err(ExtractError::NoElfPayload)
        ));
    }

    #[test]
    fn corrupt_or_empty_input_is_an_error_not_a_panic() {
        assert!(extract_vmlinux(&[]).is_err());
        let mut img = fake_bzimage(Compression::Lz4Legacy, &fake_elf(50_000));
        let len = img.len();
        img[len - 2000..len - 4].fill(0xff);
        assert!(extract_vmlinux(&img).is_err());
        // A header whose payload runs past the end.
        let mut img = fake_bzimage(Compression::Zstd, &fake_elf(1000));
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            extract_vmlinux(&img).is_ok(),
            "scan fallback should still work"
        );
    }
}
