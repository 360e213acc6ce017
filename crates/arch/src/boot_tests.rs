//! Tests for the boot state: what lands in guest memory and in the
//! registers for each protocol.

use super::*;
use linux_loader::loader::bootparam::setup_header;
use vm_memory::Bytes;

const MIB: u64 = 1 << 20;

fn guest(size: u64) -> GuestMemoryMmap {
    // Test memory sizes are small constants; from_ranges cannot fail.
    GuestMemoryMmap::from_ranges(&crate::memory::ram_regions(size)).expect("test memory")
}

fn kernel(protocol: BootProtocol, setup_header: Option<setup_header>) -> LoadedKernel {
    LoadedKernel {
        entry: GuestAddress(0x100_0000),
        protocol,
        kernel_start: GuestAddress(0x100_0000),
        kernel_end: GuestAddress(0x200_0000),
        setup_header,
    }
}

const RSDP: GuestAddress = GuestAddress(mem::ACPI_START);

#[test]
fn linux64_registers_are_long_mode() {
    let gm = guest(256 * MIB);
    let s = configure_boot(
        &gm,
        &kernel(BootProtocol::Linux64, None),
        "console=ttyS0",
        None,
        RSDP,
    )
    .unwrap();
    assert_eq!(s.regs.rip, 0x100_0000);
    assert_eq!(s.regs.rsi, mem::ZERO_PAGE_START);
    assert_eq!(s.regs.rsp, mem::BOOT_STACK_POINTER);
    assert_eq!(s.regs.rflags, 2);
    assert_eq!(s.sregs.cs.selector, 0x10);
    assert!(s.sregs.cs.l && !s.sregs.cs.db && s.sregs.cs.present && s.sregs.cs.s);
    assert_eq!(s.sregs.cs.type_, 0xb);
    for seg in [s.sregs.ds, s.sregs.es, s.sregs.fs, s.sregs.gs, s.sregs.ss] {
        assert_eq!(seg.selector, 0x18);
        assert_eq!(seg.type_, 0x3);
    }
    assert_eq!(s.sregs.tr.type_, 0xb);
    assert_eq!(s.sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
    assert_eq!(s.sregs.cr4, CR4_PAE);
    assert_eq!(s.sregs.efer, EFER_LME | EFER_LMA);
    assert_eq!(s.sregs.cr3, mem::PML4_START);
    assert_eq!(s.sregs.apic_base, 0xfee0_0900);
    assert_eq!(s.fpu.fcw, 0x37f);
}

#[test]
fn gdt_in_memory_matches_the_segment_registers() {
    let gm = guest(256 * MIB);
    for protocol in [BootProtocol::Linux64, BootProtocol::Pvh] {
        let s = configure_boot(&gm, &kernel(protocol, None), "", None, RSDP).unwrap();
        for seg in [s.sregs.cs, s.sregs.ds, s.sregs.ss, s.sregs.tr] {
            let desc: u64 = gm
                .read_obj(GuestAddress(s.sregs.gdt.base + u64::from(seg.selector)))
                .unwrap();
            assert_eq!(
                gdt::segment(desc, seg.selector),
                seg,
                "{protocol:?} selector {:#x}",
                seg.selector
            );
        }
        assert!(u64::from(s.sregs.gdt.limit) >= u64::from(s.sregs.tr.selector) + 15);
    }
}

#[test]
fn page_tables_identity_map_four_gib() {
    let gm = guest(256 * MIB);
    configure_boot(&gm, &kernel(BootProtocol::Linux64, None), "", None, RSDP).unwrap();
    let read = |a: u64| gm.read_obj::<u64>(GuestAddress(a)).unwrap();
    assert_eq!(read(mem::PML4_START), mem::PDPTE_START | 3);
    for i in 0..4 {
        assert_eq!(
            read(mem::PDPTE_START + i * 8),
            (mem::PDE_START + i * 0x1000) | 3
        );
    }
    assert_eq!(read(mem::PDPTE_START + 32), 0);
    assert_eq!(read(mem::PDE_START), 0x83);
    // The last 2 MiB page below 4 GiB.
    assert_eq!(read(mem::PDE_START + 4 * 4096 - 8), 0xffe0_0000 | 0x83);
}

#[test]
fn zero_page_for_elf_kernel() {
    let gm = guest(5 << 30);
    let initrd = Some((GuestAddress(0x8000_0000), 0x1234));
    configure_boot(
        &gm,
        &kernel(BootProtocol::Linux64, None),
        "root=/dev/vda",
        initrd,
        RSDP,
    )
    .unwrap();
    let p: boot_params = gm.read_obj(GuestAddress(mem::ZERO_PAGE_START)).unwrap();
    assert_eq!({ p.hdr.boot_flag }, 0xaa55);
    assert_eq!({ p.hdr.header }, 0x5372_6448);
    assert_eq!({ p.hdr.type_of_loader }, 0xff);
    assert_eq!({ p.hdr.cmd_line_ptr }, mem::CMDLINE_START as u32);
    assert_eq!({ p.hdr.cmdline_size }, 13);
    assert_eq!({ p.hdr.ramdisk_image }, 0x8000_0000);
    assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
    assert_eq!({ p.acpi_rsdp_addr }, mem::ACPI_START);
    assert_eq!(p.e820_entries, 4);
    let e = p.e820_table;
    assert_eq!(
        ({ e[0].addr }, { e[0].size }, { e[0].r#type }),
        (0, mem::EBDA_START, 1)
    );
    assert_eq!(({ e[1].addr }, { e[1].r#type }), (mem::EBDA_START, 2));
    assert_eq!(
        ({ e[2].addr }, { e[2].size }, { e[2].r#type }),
        (mem::HIMEM_START, mem::MMIO_HOLE_START - mem::HIMEM_START, 1)
    );
    assert_eq!(
        ({ e[3].addr }, { e[3].size }, { e[3].r#type }),
        (1 << 32, 2 << 30, 1)
    );
    let mut cmdline = [0u8; 14];
    gm.read_slice(&mut cmdline, GuestAddress(mem::CMDLINE_START))
        .unwrap();
    assert_eq!(&cmdline, b"root=/dev/vda\0");
}

#[test]
fn zero_page_keeps_the_bzimage_header() {
    let gm = guest(256 * MIB);
    let hdr = setup_header {
        version: 0x20f,
        header: 0x5372_6448,
        boot_flag: 0xaa55,
        setup_sects: 27,
        cmdline_size: 2047,
        init_size: 0x123_4000,
        ..Default::default()
    };
    configure_boot(
        &gm,
        &kernel(BootProtocol::Linux64, Some(hdr)),
        "quiet",
        None,
        RSDP,
    )
    .unwrap();
    let p: boot_params = gm.read_obj(GuestAddress(mem::ZERO_PAGE_START)).unwrap();
    assert_eq!({ p.hdr.version }, 0x20f);
    assert_eq!({ p.hdr.setup_sects }, 27);
    assert_eq!({ p.hdr.init_size }, 0x123_4000);
    assert_eq!({ p.hdr.cmdline_size }, 5);
    assert_eq!({ p.hdr.ramdisk_image }, 0);
}

#[test]
fn command_line_limits() {
    let gm = guest(256 * MIB);
    let hdr = setup_header {
        version: 0x20f,
        cmdline_size: 8,
        ..Default::default()
    };
    let k = kernel(BootProtocol::Linux64, Some(hdr));
    assert!(configure_boot(&gm, &k, "12345678", None, RSDP).is_ok());
    assert!(matches!(
        configure_boot(&gm, &k, "123456789", None, RSDP),
        Err(BootError::CmdlineTooLong { len: 9, max: 8 })
    ));
    let k = kernel(BootProtocol::Pvh, None);
    let long = "x".repeat(mem::CMDLINE_MAX_SIZE);
    assert!(matches!(
        configure_boot(&gm, &k, &long, None, RSDP),
        Err(BootError::CmdlineTooLong { .. })
    ));
    assert!(matches!(
        configure_boot(&gm, &k, "a\0b", None, RSDP),
        Err(BootError::CmdlineHasNul)
    ));
}

#[test]
fn initrd_must_sit_below_4g() {
    let gm = guest(5 << 30);
    let k = kernel(BootProtocol::Linux64, None);
    let initrd = Some((GuestAddress(1 << 32), 4096));
    assert!(matches!(
        configure_boot(&gm, &k, "", initrd, RSDP),
        Err(BootError::InitrdAbove4G(_))
    ));
}

#[test]
fn pvh_start_info_and_registers() {
    let gm = guest(256 * MIB);
    let initrd = Some((GuestAddress(0x800_0000), 0x5000));
    let s = configure_boot(
        &gm,
        &kernel(BootProtocol::Pvh, None),
        "console=hvc0",
        initrd,
        RSDP,
    )
    .unwrap();
    assert_eq!(s.regs.rip, 0x100_0000);
    assert_eq!(s.regs.rbx, mem::PVH_INFO_START);
    assert_eq!(s.regs.rflags, 2);
    assert_eq!(s.sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE);
    assert_eq!(s.sregs.efer, 0);
    assert_eq!(
        (
            s.sregs.cs.selector,
            s.sregs.cs.type_,
            s.sregs.cs.db,
            s.sregs.cs.l
        ),
        (0x10, 0xb, true, false)
    );
    assert_eq!((s.sregs.cs.base, s.sregs.cs.limit), (0, 0xffff_ffff));
    assert_eq!((s.sregs.ds.selector, s.sregs.ds.limit), (0x18, 0xffff_ffff));
    assert_eq!((s.sregs.tr.base, s.sregs.tr.limit), (0, 0x67));

    let info: hvm_start_info = gm.read_obj(GuestAddress(mem::PVH_INFO_START)).unwrap();
    assert_eq!(info.magic, 0x336e_c578);
    assert_eq!(info.version, 1);
    assert_eq!(info.cmdline_paddr, mem::CMDLINE_START);
    assert_eq!(info.rsdp_paddr, mem::ACPI_START);
    assert_eq!(info.nr_modules, 1);
    let module: hvm_modlist_entry = gm.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
    assert_eq!((module.paddr, module.size), (0x800_0000, 0x5000));
    assert_eq!(info.memmap_entries, 3);
    let last: hvm_memmap_table_entry = gm
        .read_obj(GuestAddress(info.memmap_paddr + 2 * 24))
        .unwrap();
    assert_eq!(
        (last.addr, last.size, last.type_),
        (mem::HIMEM_START, 255 * MIB, 1)
    );
    let reserved: hvm_memmap_table_entry =
        gm.read_obj(GuestAddress(info.memmap_paddr + 24)).unwrap();
    assert_eq!((reserved.addr, reserved.type_), (mem::EBDA_START, 2));
}

#[test]
fn pvh_without_initrd_has_no_modules() {
    let gm = guest(256 * MIB);
    configure_boot(&gm, &kernel(BootProtocol::Pvh, None), "", None, RSDP).unwrap();
    let info: hvm_start_info = gm.read_obj(GuestAddress(mem::PVH_INFO_START)).unwrap();
    assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
}
