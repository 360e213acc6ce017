//! Tests for the kernel and initrd loader: hand-built ELF and bzImage files,
//! and hostile variants of them.

use super::*;
use crate::testutil::TempFile;
use linux_loader::loader::bootparam::setup_header;
use vm_memory::{ByteValued, Bytes};

const MIB: u64 = 1 << 20;

fn guest(size: u64) -> GuestMemoryMmap {
    // Test memory sizes are small constants; from_ranges cannot fail.
    GuestMemoryMmap::from_ranges(&crate::memory::ram_regions(size)).expect("test memory")
}

/// One program header for [`elf`].
struct Seg {
    p_type: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Builds a little ELF64 x86-64 executable: header, program headers, then
/// `payload` at file offset 0x1000.
fn elf(entry: u64, segs: &[Seg], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[0..4].copy_from_slice(&ELF_MAGIC);
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    for (i, s) in segs.iter().enumerate() {
        let o = 64 + i * 56;
        f[o..o + 4].copy_from_slice(&s.p_type.to_le_bytes());
        f[o + 8..o + 16].copy_from_slice(&s.offset.to_le_bytes());
        f[o + 16..o + 24].copy_from_slice(&s.paddr.to_le_bytes());
        f[o + 24..o + 32].copy_from_slice(&s.paddr.to_le_bytes());
        f[o + 32..o + 40].copy_from_slice(&s.filesz.to_le_bytes());
        f[o + 40..o + 48].copy_from_slice(&s.memsz.to_le_bytes());
        f[o + 48..o + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    }
    f.extend_from_slice(payload);
    f
}

const CODE: &[u8] = &[0xf4, 0xeb, 0xfd, 0x90]; // hlt; jmp back; nop

fn plain_elf() -> Vec<u8> {
    elf(
        0x100000,
        &[Seg {
            p_type: PT_LOAD,
            offset: 0x1000,
            paddr: 0x100000,
            filesz: 4,
            memsz: 0x2000,
        }],
        CODE,
    )
}

/// An ELF with a Xen PHYS32_ENTRY note saying `pvh_entry`.
fn pvh_elf(pvh_entry: u32) -> Vec<u8> {
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&pvh_entry.to_le_bytes());
    let note_len = note.len() as u64;
    let mut payload = CODE.to_vec();
    payload.resize(16, 0);
    payload.extend_from_slice(&note);
    elf(
        0x100000,
        &[
            Seg {
                p_type: PT_LOAD,
                offset: 0x1000,
                paddr: 0x100000,
                filesz: 16,
                memsz: 16,
            },
            Seg {
                p_type: PT_NOTE,
                offset: 0x1010,
                paddr: 0,
                filesz: note_len,
                memsz: note_len,
            },
        ],
        &payload,
    )
}

/// A minimal bzImage: one setup sector after the boot sector, then `body`.
fn bzimage(version: u16, xloadflags: u16, body: &[u8]) -> Vec<u8> {
    let hdr = setup_header {
        setup_sects: 1,
        boot_flag: 0xaa55,
        header: 0x5372_6448,
        version,
        loadflags: 1,
        code32_start: 0x100000,
        initrd_addr_max: 0x7fff_ffff,
        kernel_alignment: 0x20_0000,
        xloadflags,
        cmdline_size: 2048,
        init_size: 0x40_0000,
        relocatable_kernel: 1,
        pref_address: 0x100_0000,
        ..Default::default()
    };
    let mut f = vec![0u8; 1024];
    let raw = hdr.as_slice();
    f[0x1f1..0x1f1 + raw.len()].copy_from_slice(raw);
    f.extend_from_slice(body);
    f
}

fn load_bytes(gm: &GuestMemoryMmap, bytes: &[u8]) -> Result<LoadedKernel, LoadError> {
    let t = TempFile::with_contents(bytes);
    load_kernel(gm, &mut t.open())
}

#[test]
fn empty_file_is_not_a_kernel() {
    let gm = guest(16 * MIB);
    assert!(matches!(load_bytes(&gm, &[]), Err(LoadError::NotAKernel)));
}

#[test]
fn garbage_is_not_a_kernel() {
    let gm = guest(16 * MIB);
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(matches!(load_bytes(&gm, &junk), Err(LoadError::NotAKernel)));
}

#[test]
fn tiny_elf_loads_at_its_physical_address() {
    let gm = guest(16 * MIB);
    let k = load_bytes(&gm, &plain_elf()).unwrap();
    assert_eq!(k.protocol, BootProtocol::Linux64);
    assert_eq!(k.entry, GuestAddress(0x100000));
    assert_eq!(k.kernel_start, GuestAddress(0x100000));
    assert_eq!(k.kernel_end, GuestAddress(0x102000));
    assert!(k.setup_header.is_none());
    let mut got = [0u8; 4];
    gm.read_slice(&mut got, GuestAddress(0x100000)).unwrap();
    assert_eq!(got, CODE);
}

#[test]
fn elf_with_pvh_note_uses_pvh() {
    let gm = guest(16 * MIB);
    let k = load_bytes(&gm, &pvh_elf(0x100004)).unwrap();
    assert_eq!(k.protocol, BootProtocol::Pvh);
    assert_eq!(k.entry, GuestAddress(0x100004));
}

#[test]
fn pvh_entry_outside_the_image_is_refused() {
    let gm = guest(16 * MIB);
    assert!(matches!(
        load_bytes(&gm, &pvh_elf(0x5000)),
        Err(LoadError::EntryOutsideKernel(0x5000))
    ));
}

#[test]
fn every_truncation_of_an_elf_fails_cleanly() {
    let gm = guest(16 * MIB);
    for image in [plain_elf(), pvh_elf(0x100004)] {
        for len in 0..image.len() {
            assert!(
                load_bytes(&gm, &image[..len]).is_err(),
                "prefix of {len} bytes loaded"
            );
        }
    }
}

#[test]
fn elf_segment_beyond_ram_is_refused() {
    let gm = guest(16 * MIB);
    let image = elf(
        0x100000,
        &[Seg {
            p_type: PT_LOAD,
            offset: 0x1000,
            paddr: 0xff_f000,
            filesz: 4,
            memsz: 0x2000,
        }],
        CODE,
    );
    assert!(matches!(
        load_bytes(&gm, &image),
        Err(LoadError::SegmentOutsideRam { .. })
    ));
    let image = elf(
        0x100000,
        &[Seg {
            p_type: PT_LOAD,
            offset: 0x1000,
            paddr: u64::MAX - 1,
            filesz: 4,
            memsz: 4,
        }],
        CODE,
    );
    assert!(matches!(
        load_bytes(&gm, &image),
        Err(LoadError::SegmentOutsideRam { .. })
    ));
}

#[test]
fn elf_segment_over_boot_structures_is_refused() {
    let gm = guest(16 * MIB);
    let image = elf(
        0x100000,
        &[Seg {
            p_type: PT_LOAD,
            offset: 0x1000,
            paddr: 0x7000,
            filesz: 4,
            memsz: 4,
        }],
        CODE,
    );
    assert!(matches!(
        load_bytes(&gm, &image),
        Err(LoadError::SegmentOutsideRam { addr: 0x7000, .. })
    ));
}

#[test]
fn elf_segment_data_past_end_of_file_is_refused() {
    let gm = guest(16 * MIB);
    for offset in [0x1000, u64::MAX - 2] {
        let image = elf(
            0x100000,
            &[Seg {
                p_type: PT_LOAD,
                offset,
                paddr: 0x100000,
                filesz: 0x10000,
                memsz: 0x10000,
            }],
            CODE,
        );
        assert!(matches!(
            load_bytes(&gm, &image),
            Err(LoadError::SegmentBeyondFile)
        ));
    }
}

#[test]
fn elf_with_hostile_note_fails_cleanly() {
    let gm = guest(16 * MIB);
    let image = elf(
        0x100000,
        &[
            Seg {
                p_type: PT_LOAD,
                offset: 0x1000,
                paddr: 0x100000,
                filesz: 4,
                memsz: 4,
            },
            Seg {
                p_type: PT_NOTE,
                offset: u64::MAX - 8,
                paddr: 0,
                filesz: 8,
                memsz: 8,
            },
        ],
        CODE,
    );
    assert!(load_bytes(&gm, &image).is_err());
    // A note whose name size runs past the segment.
    let mut payload = CODE.to_vec();
    payload.extend_from_slice(&[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x12, 0, 0, 0,
    ]);
    let image = elf(
        0x100000,
        &[
            Seg {
                p_type: PT_LOAD,
                offset: 0x1000,
                paddr: 0x100000,
                filesz: 4,
                memsz: 4,
            },
            Seg {
                p_type: PT_NOTE,
                offset: 0x1004,
                paddr: 0,
                filesz: 12,
                memsz: 12,
            },
        ],
        &payload,
    );
    assert!(load_bytes(&gm, &image).is_err());
}

#[test]
fn elf_of_wrong_class_or_machine_is_refused() {
    let gm = guest(16 * MIB);
    let mut image = plain_elf();
    image[4] = 1; // ELFCLASS32
    assert!(matches!(
        load_bytes(&gm, &image),
        Err(LoadError::UnsupportedElf)
    ));
    let mut image = plain_elf();
    image[18] = 40; // ARM
    assert!(matches!(
        load_bytes(&gm, &image),
        Err(LoadError::UnsupportedElf)
    ));
}

#[test]
fn elf_with_too_many_program_headers_is_refused() {
    let gm = guest(16 * MIB);
    let mut image = plain_elf();
    image[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(
        load_bytes(&gm, &image),
        Err(LoadError::BadProgramHeaders)
    ));
}

#[test]
fn bzimage_uses_the_64_bit_entry() {
    let gm = guest(64 * MIB);
    let k = load_bytes(&gm, &bzimage(0x20f, XLF_KERNEL_64, &[0xaa; 4096])).unwrap();
    assert_eq!(k.protocol, BootProtocol::Linux64);
    assert_eq!(k.entry, GuestAddress(0x100200));
    assert_eq!(k.kernel_start, GuestAddress(0x100000));
    // It decompresses at pref_address (16 MiB, above its aligned load
    // address) into init_size (4 MiB): kernel_end covers that.
    assert_eq!(k.kernel_end, GuestAddress(0x140_0000));
    assert_eq!(k.setup_header.map(|h| h.version), Some(0x20f));
    assert_eq!(gm.read_obj::<u8>(GuestAddress(0x100fff)).unwrap(), 0xaa);
}

#[test]
fn bzimage_decompression_area() {
    let mut hdr = setup_header {
        version: 0x20f,
        relocatable_kernel: 1,
        kernel_alignment: 0x20_0000,
        pref_address: 0x10_0000,
        init_size: 0x1000,
        ..Default::default()
    };
    // Relocatable: the load address rounded up to the alignment...
    assert_eq!(decompression_area(&hdr, 0x30_0000), (0x40_0000, 0x1000));
    // ...but not below pref_address.
    hdr.pref_address = 0x100_0000;
    assert_eq!(decompression_area(&hdr, 0x30_0000), (0x100_0000, 0x1000));
    // Fixed kernels always use pref_address.
    hdr.relocatable_kernel = 0;
    assert_eq!(decompression_area(&hdr, 0x200_0000), (0x100_0000, 0x1000));
    // Before protocol 2.10 nothing is known.
    hdr.version = 0x209;
    assert_eq!(decompression_area(&hdr, 0x10_0000), (0x10_0000, 0));
}

#[test]
fn bzimage_without_64_bit_entry_is_refused() {
    let gm = guest(64 * MIB);
    assert!(matches!(
        load_bytes(&gm, &bzimage(0x20f, 0, &[0; 512])),
        Err(LoadError::BzImageTooOld(0x20f))
    ));
    assert!(matches!(
        load_bytes(&gm, &bzimage(0x205, 0, &[0; 512])),
        Err(LoadError::BzImageTooOld(0x205))
    ));
}

#[test]
fn bzimage_larger_than_ram_is_refused() {
    let gm = guest(2 * MIB);
    assert!(load_bytes(&gm, &bzimage(0x20f, XLF_KERNEL_64, &[0; 0x200000])).is_err());
    // Fits as a file, but its decompression area (4 MiB) does not.
    assert!(matches!(
        load_bytes(&gm, &bzimage(0x20f, XLF_KERNEL_64, &[0; 4096])),
        Err(LoadError::BzImageOutsideRam { .. })
    ));
}

#[test]
fn every_truncation_of_a_bzimage_fails_cleanly() {
    let gm = guest(64 * MIB);
    let image = bzimage(0x20f, XLF_KERNEL_64, &[0x11; 64]);
    for len in 0..1024 {
        assert!(
            load_bytes(&gm, &image[..len]).is_err(),
            "prefix of {len} bytes loaded"
        );
    }
}

fn load_initrd_bytes(
    gm: &GuestMemoryMmap,
    bytes: &[u8],
    k: &LoadedKernel,
) -> Result<(GuestAddress, usize), LoadError> {
    let t = TempFile::with_contents(bytes);
    load_initrd(gm, &mut t.open(), k)
}

#[test]
fn initrd_goes_page_aligned_to_the_top_of_low_ram() {
    let gm = guest(64 * MIB);
    let k = load_bytes(&gm, &plain_elf()).unwrap();
    let data = vec![0x5a; 5000];
    let (addr, size) = load_initrd_bytes(&gm, &data, &k).unwrap();
    assert_eq!(size, 5000);
    assert_eq!(addr.0 % 4096, 0);
    assert!(addr.0 + 5000 <= 64 * MIB && addr.0 + 5000 > 64 * MIB - 4096);
    assert_eq!(
        gm.read_obj::<u8>(GuestAddress(addr.0 + 4999)).unwrap(),
        0x5a
    );
}

#[test]
fn initrd_stays_below_the_hole_and_initrd_addr_max() {
    let gm = guest(5 << 30);
    let k = load_bytes(&gm, &bzimage(0x20f, XLF_KERNEL_64, &[0; 512])).unwrap();
    let (addr, _) = load_initrd_bytes(&gm, &[1; 100], &k).unwrap();
    // initrd_addr_max is 0x7fffffff in the test image.
    assert_eq!(addr.0, 0x8000_0000 - 4096);
    let k = load_bytes(&gm, &plain_elf()).unwrap();
    let (addr, _) = load_initrd_bytes(&gm, &[1; 100], &k).unwrap();
    assert_eq!(addr.0, mem::MMIO_HOLE_START - 4096);
}

#[test]
fn initrd_errors() {
    let gm = guest(4 * MIB);
    let k = load_bytes(&gm, &plain_elf()).unwrap();
    assert!(matches!(
        load_initrd_bytes(&gm, &[], &k),
        Err(LoadError::EmptyInitrd)
    ));
    assert!(matches!(
        load_initrd_bytes(&gm, &vec![0; 3 * MIB as usize], &k),
        Err(LoadError::InitrdTooLarge(_))
    ));
    assert!(matches!(
        load_initrd_bytes(&gm, &vec![0; 8 * MIB as usize], &k),
        Err(LoadError::InitrdTooLarge(_))
    ));
}

/// Loads a real kernel named by `ARCH_TEST_KERNEL` (skipped when unset):
/// `ARCH_TEST_KERNEL=/path/to/vmlinuz cargo test -p arch real_kernel`.
#[test]
fn real_kernel_from_env() {
    let Some(path) = std::env::var_os("ARCH_TEST_KERNEL") else {
        return;
    };
    let gm = guest(256 * MIB);
    let mut f = File::open(path).unwrap();
    let k = load_kernel(&gm, &mut f).unwrap();
    eprintln!("{k:?}");
    assert!(k.kernel_end.0 > k.kernel_start.0);
    if let Some(hdr) = k.setup_header {
        assert_eq!(k.entry.0, k.kernel_start.0 + 0x200);
        let (addr, size) = load_initrd_bytes(&gm, &[7; 100_000], &k).unwrap();
        assert!(
            addr.0 >= k.kernel_end.0 && addr.0 + size as u64 <= u64::from(hdr.initrd_addr_max) + 1
        );
    }
}

/// Flips every header byte of each image to a few values: whatever comes
/// out, loading returns instead of panicking, and a success still points
/// into guest RAM.
#[test]
fn corrupted_headers_never_panic() {
    let gm = guest(64 * MIB);
    let images = [
        (plain_elf(), 0..0x100),
        (pvh_elf(0x100004), 0..0x100),
        (bzimage(0x20f, XLF_KERNEL_64, &[0x11; 64]), 0x1f1..0x270),
    ];
    for (image, range) in images {
        for pos in range {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = image.clone();
                bad[pos] = v;
                if let Ok(k) = load_bytes(&gm, &bad) {
                    assert!(
                        k.entry.0 < 64 * MIB,
                        "byte {pos:#x}={v:#x}: entry {:#x}",
                        k.entry.0
                    );
                }
            }
        }
    }
}

fn end_of(bytes: &[u8]) -> Result<u64, LoadError> {
    let t = TempFile::with_contents(bytes);
    kernel_end(&mut t.open())
}

/// kernel_end reads from the headers what loading finds, without RAM.
#[test]
fn kernel_end_matches_what_loading_finds() {
    let gm = guest(64 * MIB);
    let elf = plain_elf();
    assert_eq!(
        end_of(&elf).unwrap(),
        load_bytes(&gm, &elf).unwrap().kernel_end.0
    );
    let bz = bzimage(0x20f, XLF_KERNEL_64, &[0xaa; 4096]);
    assert_eq!(
        end_of(&bz).unwrap(),
        load_bytes(&gm, &bz).unwrap().kernel_end.0
    );
    // An ELF far beyond any RAM given still has an end.
    let high = elf_at(0x7000_0000);
    assert_eq!(end_of(&high).unwrap(), 0x7000_2000);
    assert!(matches!(end_of(&[]), Err(LoadError::NotAKernel)));
    assert!(matches!(
        end_of(&elf[..100]),
        Err(LoadError::BadProgramHeaders)
    ));
}

fn elf_at(paddr: u64) -> Vec<u8> {
    elf(
        paddr,
        &[Seg {
            p_type: PT_LOAD,
            offset: 0x1000,
            paddr,
            filesz: 4,
            memsz: 0x2000,
        }],
        CODE,
    )
}

#[test]
fn min_ram_counts_the_initrd_twice_and_linux_working_memory() {
    assert_eq!(min_ram_bytes(40 * MIB, None), 40 * MIB);
    assert_eq!(
        min_ram_bytes(62 * MIB, Some(3 * MIB)),
        68 * MIB + LINUX_WORKING_MEMORY
    );
    assert_eq!(min_ram_bytes(u64::MAX, Some(u64::MAX)), u64::MAX);
}
