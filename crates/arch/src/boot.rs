//! Boot-time guest state: the command line, the Linux zero page or the PVH
//! start info (with the memory map, initrd and RSDP), the boot GDT, the
//! identity page tables for the 64-bit entry, and the register state the
//! bootstrap processor starts with.

use hypervisor::{DescriptorTable, FpuState, Regs, Segment, SpecialRegs};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::gdt;
use crate::layout::mem;
use crate::loader::{BootProtocol, LoadedKernel};
use crate::memory::{e820_map, E820Entry, MemoryError};

/// Errors setting up the boot state.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("command line of {len} bytes exceeds the limit of {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("command line contains a nul byte")]
    CmdlineHasNul,
    #[error("initrd at {0:#x} is not below 4 GiB")]
    InitrdAbove4G(u64),
    #[error("memory map has {0} entries, too many for the boot structure")]
    TooManyMemoryMapEntries(usize),
    #[error("guest memory layout")]
    Memory(#[from] MemoryError),
    #[error("cannot write the {what} to guest memory")]
    Write {
        what: &'static str,
        #[source]
        source: GuestMemoryError,
    },
}

/// The bootstrap processor's state at the kernel's entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootState {
    pub regs: Regs,
    pub sregs: SpecialRegs,
    pub fpu: FpuState,
}

/// GDT selectors of the boot GDT.
pub const CODE_SELECTOR: u16 = 0x10;
pub const DATA_SELECTOR: u16 = 0x18;
pub const TSS_SELECTOR: u16 = 0x20;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// IA32_APIC_BASE: this is the bootstrap processor, and the APIC is on.
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Page-table entry bits: present, writable, and (in a PD) a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_2M_PAGE: u64 = 0x83;

/// Zero-page header values for kernels without a setup header (ELF).
const BOOT_FLAG: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// "Undefined" boot loader id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Longest command line a kernel older than protocol 2.06 accepts.
const OLD_CMDLINE_MAX: usize = 255;

const PVH_MAGIC: u32 = 0x336e_c578;
/// Version 1 of `hvm_start_info` carries the memory map.
const PVH_VERSION: u32 = 1;

/// Writes the command line, the boot structures the kernel's protocol
/// wants, the boot GDT (and for the 64-bit entry the identity page tables),
/// and returns the bootstrap processor's register state.
pub fn configure_boot(
    guest_mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &str,
    initrd: Option<(GuestAddress, usize)>,
    rsdp: GuestAddress,
) -> Result<BootState, BootError> {
    let cmdline_len = write_cmdline(guest_mem, kernel, cmdline)?;
    let e820 = e820_map(guest_mem)?;
    if let Some((addr, size)) = initrd {
        let end = addr.0.checked_add(size as u64);
        if end.is_none_or(|e| e > mem::MMIO_HOLE_END) {
            return Err(BootError::InitrdAbove4G(addr.0));
        }
    }
    match kernel.protocol {
        BootProtocol::Linux64 => {
            write_zero_page(guest_mem, kernel, cmdline_len, initrd, rsdp, &e820)?;
            write_page_tables(guest_mem)?;
            let gdt = long_mode_gdt();
            write_gdt(guest_mem, &gdt)?;
            Ok(long_mode_state(kernel.entry, &gdt))
        }
        BootProtocol::Pvh => {
            write_pvh_info(guest_mem, initrd, rsdp, &e820)?;
            let gdt = pvh_gdt();
            write_gdt(guest_mem, &gdt)?;
            Ok(pvh_state(kernel.entry, &gdt))
        }
    }
}

fn write_err(what: &'static str) -> impl FnOnce(GuestMemoryError) -> BootError {
    move |source| BootError::Write { what, source }
}

/// Copies the NUL-terminated command line to `CMDLINE_START`; returns its
/// length without the NUL.
fn write_cmdline(
    guest_mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &str,
) -> Result<usize, BootError> {
    let mut max = mem::CMDLINE_MAX_SIZE - 1;
    if let Some(hdr) = kernel.setup_header {
        let limit = if hdr.version >= 0x206 {
            usize::try_from(hdr.cmdline_size).unwrap_or(usize::MAX)
        } else {
            OLD_CMDLINE_MAX
        };
        max = max.min(limit);
    }
    let bytes = cmdline.as_bytes();
    if bytes.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: bytes.len(),
            max,
        });
    }
    if bytes.contains(&0) {
        return Err(BootError::CmdlineHasNul);
    }
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend_from_slice(bytes);
    buf.push(0);
    guest_mem
        .write_slice(&buf, GuestAddress(mem::CMDLINE_START))
        .map_err(write_err("command line"))?;
    Ok(bytes.len())
}

fn write_zero_page(
    guest_mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<(GuestAddress, usize)>,
    rsdp: GuestAddress,
    e820: &[E820Entry],
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    match kernel.setup_header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.boot_flag = BOOT_FLAG;
            params.hdr.header = HDRS_MAGIC;
            params.hdr.kernel_alignment = ELF_KERNEL_ALIGNMENT;
        }
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    // Both fit in 32 bits: the command line area is a low constant and its
    // length is bounded by CMDLINE_MAX_SIZE.
    params.hdr.cmd_line_ptr = mem::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        // configure_boot checked the initrd ends below 4 GiB.
        params.hdr.ramdisk_image = addr.0 as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp.0;
    if e820.len() > params.e820_table.len() {
        return Err(BootError::TooManyMemoryMapEntries(e820.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    // Bounded by the table length (128) just above.
    params.e820_entries = e820.len() as u8;
    guest_mem
        .write_obj(params, GuestAddress(mem::ZERO_PAGE_START))
        .map_err(write_err("zero page"))
}

fn write_pvh_info(
    guest_mem: &GuestMemoryMmap,
    initrd: Option<(GuestAddress, usize)>,
    rsdp: GuestAddress,
    e820: &[E820Entry],
) -> Result<(), BootError> {
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    let room = (mem::ZERO_PAGE_START - mem::PVH_MEMMAP_START) / entry_size;
    if e820.len() as u64 > room {
        return Err(BootError::TooManyMemoryMapEntries(e820.len()));
    }
    for (i, e) in e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        };
        let at = mem::PVH_MEMMAP_START + i as u64 * entry_size;
        guest_mem
            .write_obj(entry, GuestAddress(at))
            .map_err(write_err("pvh memory map"))?;
    }
    let mut info = hvm_start_info {
        magic: PVH_MAGIC,
        version: PVH_VERSION,
        cmdline_paddr: mem::CMDLINE_START,
        rsdp_paddr: rsdp.0,
        memmap_paddr: mem::PVH_MEMMAP_START,
        // Bounded by `room` above.
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some((addr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr: addr.0,
            size: size as u64,
            ..Default::default()
        };
        guest_mem
            .write_obj(module, GuestAddress(mem::PVH_MODLIST_START))
            .map_err(write_err("pvh module list"))?;
        info.nr_modules = 1;
        info.modlist_paddr = mem::PVH_MODLIST_START;
    }
    guest_mem
        .write_obj(info, GuestAddress(mem::PVH_INFO_START))
        .map_err(write_err("pvh start info"))
}

/// Identity map of the first 4 GiB with 2 MiB pages: one PML4 entry, four
/// PDPT entries, four page directories.
fn write_page_tables(guest_mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let write = |v: u64, at: u64| {
        guest_mem
            .write_obj(v, GuestAddress(at))
            .map_err(write_err("page tables"))
    };
    write(mem::PDPTE_START | PTE_PRESENT_RW, mem::PML4_START)?;
    for i in 0..mem::PDE_COUNT {
        write(
            (mem::PDE_START + i * 0x1000) | PTE_PRESENT_RW,
            mem::PDPTE_START + i * 8,
        )?;
    }
    let mut pds = Vec::with_capacity((mem::PDE_COUNT * 512 * 8) as usize);
    for page in 0..mem::PDE_COUNT * 512 {
        pds.extend_from_slice(&((page << 21) | PDE_2M_PAGE).to_le_bytes());
    }
    guest_mem
        .write_slice(&pds, GuestAddress(mem::PDE_START))
        .map_err(write_err("page tables"))
}

type Gdt = [u64; mem::BOOT_GDT_SLOTS];

/// null, null, 64-bit code (0x10), data (0x18), busy 64-bit TSS (0x20,
/// two slots; base 0 so the upper half is zero).
fn long_mode_gdt() -> Gdt {
    [
        0,
        0,
        gdt::entry(gdt::ACCESS_CODE, gdt::FLAG_G | gdt::FLAG_L, 0, 0xfffff),
        gdt::entry(gdt::ACCESS_DATA, gdt::FLAG_G | gdt::FLAG_DB, 0, 0xfffff),
        gdt::entry(gdt::ACCESS_TSS_BUSY, 0, 0, 0x67),
        0,
    ]
}

/// As the PVH ABI asks: flat 32-bit code (0x10) and data (0x18), and a
/// 32-bit TSS with base 0 and limit 0x67.
fn pvh_gdt() -> Gdt {
    [
        0,
        0,
        gdt::entry(gdt::ACCESS_CODE, gdt::FLAG_G | gdt::FLAG_DB, 0, 0xfffff),
        gdt::entry(gdt::ACCESS_DATA, gdt::FLAG_G | gdt::FLAG_DB, 0, 0xfffff),
        gdt::entry(gdt::ACCESS_TSS_BUSY, 0, 0, 0x67),
        0,
    ]
}

fn write_gdt(guest_mem: &GuestMemoryMmap, table: &Gdt) -> Result<(), BootError> {
    let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
    guest_mem
        .write_slice(&bytes, GuestAddress(mem::BOOT_GDT_START))
        .map_err(write_err("gdt"))?;
    guest_mem
        .write_obj(0u64, GuestAddress(mem::BOOT_IDT_START))
        .map_err(write_err("idt"))
}

/// Segment registers, GDTR/IDTR, LDTR and TR common to both entries.
fn segment_state(table: &Gdt) -> SpecialRegs {
    let slot = |sel: u16| table[usize::from(sel >> 3)];
    let code = gdt::segment(slot(CODE_SELECTOR), CODE_SELECTOR);
    let data = gdt::segment(slot(DATA_SELECTOR), DATA_SELECTOR);
    SpecialRegs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: gdt::segment(slot(TSS_SELECTOR), TSS_SELECTOR),
        // The reset state of LDTR: an empty LDT.
        ldt: Segment {
            limit: 0xffff,
            type_: 0x2,
            present: true,
            ..Default::default()
        },
        gdt: DescriptorTable {
            base: mem::BOOT_GDT_START,
            limit: (std::mem::size_of::<Gdt>() - 1) as u16,
        },
        idt: DescriptorTable {
            base: mem::BOOT_IDT_START,
            limit: 0,
        },
        apic_base: mem::LAPIC_START | APIC_BASE_BSP | APIC_BASE_ENABLE,
        ..Default::default()
    }
}

fn long_mode_state(entry: GuestAddress, table: &Gdt) -> BootState {
    let sregs = SpecialRegs {
        cr0: CR0_PE | CR0_ET | CR0_NE | CR0_PG,
        cr3: mem::PML4_START,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        ..segment_state(table)
    };
    let regs = Regs {
        rip: entry.0,
        rsi: mem::ZERO_PAGE_START,
        rsp: mem::BOOT_STACK_POINTER,
        rbp: mem::BOOT_STACK_POINTER,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    BootState {
        regs,
        sregs,
        fpu: FpuState::default(),
    }
}

fn pvh_state(entry: GuestAddress, table: &Gdt) -> BootState {
    let sregs = SpecialRegs {
        cr0: CR0_PE | CR0_ET,
        ..segment_state(table)
    };
    let regs = Regs {
        rip: entry.0,
        rbx: mem::PVH_INFO_START,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    BootState {
        regs,
        sregs,
        fpu: FpuState::default(),
    }
}

#[cfg(test)]
#[path = "boot_tests.rs"]
mod tests;
