//! The x86-64 guest physical address map and the fixed I/O ports vessel's
//! machine model uses. Boot code, ACPI tables and device wiring all read
//! these constants, so the tables always describe the devices that exist.

/// Guest-physical addresses.
pub mod mem {
    /// PVH `hvm_start_info` and its memory map.
    pub const PVH_INFO_START: u64 = 0x6000;
    /// PVH module list (the initrd), after the start info.
    pub const PVH_MODLIST_START: u64 = 0x6040;
    /// PVH memory map, after the module list; runs up to the zero page.
    pub const PVH_MEMMAP_START: u64 = 0x6080;
    /// Linux zero page (`boot_params`).
    pub const ZERO_PAGE_START: u64 = 0x7000;
    /// Boot GDT: null, null, code (0x10), data (0x18), TSS (0x20, 16 bytes
    /// so a 64-bit TSS descriptor fits): six 8-byte slots.
    pub const BOOT_GDT_START: u64 = 0x500;
    pub const BOOT_GDT_SLOTS: usize = 6;
    /// Boot IDT (empty: any exception before the kernel loads its own IDT
    /// ends in a triple fault, which the VMM reports).
    pub const BOOT_IDT_START: u64 = 0x530;
    /// Identity page tables for the 64-bit entry: PML4, PDPT, four PDs
    /// (0xb000-0xefff) mapping the first 4 GiB with 2 MiB pages.
    pub const PML4_START: u64 = 0x9000;
    pub const PDPTE_START: u64 = 0xa000;
    pub const PDE_START: u64 = 0xb000;
    pub const PDE_COUNT: u64 = 4;
    /// Initial stack pointer for the 64-bit entry.
    pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
    /// Kernel command line.
    pub const CMDLINE_START: u64 = 0x20000;
    pub const CMDLINE_MAX_SIZE: usize = 0x10000;
    /// End of the low RAM that E820 reports as usable (EBDA above).
    pub const EBDA_START: u64 = 0x9fc00;
    /// ACPI tables live in the BIOS read-only area, where Linux also scans
    /// for the RSDP when no boot protocol hands it over.
    pub const ACPI_START: u64 = 0xe0000;
    pub const ACPI_END: u64 = 0x100000;
    /// Where kernels load (1 MiB).
    pub const HIMEM_START: u64 = 0x100000;
    /// The 32-bit MMIO hole below 4 GiB: PCI BARs, IOAPIC, local APIC.
    pub const MMIO_HOLE_START: u64 = 0xc000_0000;
    pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
    /// PCI memory BARs are placed here (inside the hole).
    pub const PCI_MMIO_START: u64 = 0xc000_0000;
    pub const PCI_MMIO_SIZE: u64 = 0x3000_0000;
    pub const IOAPIC_START: u64 = 0xfec0_0000;
    pub const IOAPIC_SIZE: u64 = 0x1000;
    pub const LAPIC_START: u64 = 0xfee0_0000;
    pub const LAPIC_SIZE: u64 = 0x1000;
    /// RAM above the hole starts here.
    pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
}

/// I/O ports.
pub mod ports {
    /// 8259 PICs.
    pub const PIC_MASTER: u16 = 0x20;
    pub const PIC_SLAVE: u16 = 0xa0;
    /// 8254 PIT.
    pub const PIT: u16 = 0x40;
    /// i8042 keyboard controller (data 0x60, command/status 0x64).
    pub const I8042_DATA: u16 = 0x60;
    pub const I8042_COMMAND: u16 = 0x64;
    /// i8042 keyboard IRQ.
    pub const I8042_KBD_IRQ: u32 = 1;
    /// CMOS RTC index/data.
    pub const RTC: u16 = 0x70;
    /// Port 0x80 POST code: accepted and ignored.
    pub const POST: u16 = 0x80;
    /// Debug exit: a 1-byte write of `v` stops the VM with exit status `v`.
    /// Same port as QEMU's `isa-debug-exit` (which exits with `v << 1 | 1`).
    pub const DEBUG_EXIT: u16 = 0xf4;
    /// COM1 16550 UART, IRQ 4.
    pub const COM1: u16 = 0x3f8;
    pub const COM1_IRQ: u32 = 4;
    /// PCI configuration mechanism #1 (address 0xcf8, data 0xcfc-0xcff).
    pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
    pub const PCI_CONFIG_DATA: u16 = 0xcfc;
    /// ACPI fixed-hardware registers (FADT): PM1a event block (4 bytes)
    /// and PM1a control block (2 bytes). Writing SLP_EN with SLP_TYP=5
    /// to the control block powers the VM off.
    pub const ACPI_PM1A_EVT: u16 = 0x600;
    pub const ACPI_PM1A_CNT: u16 = 0x604;
    /// The ACPI PM timer (FADT PM_TMR_BLK), 3.579545 MHz, 24 bit.
    pub const ACPI_PM_TMR: u16 = 0x608;
    /// ACPI SCI interrupt line.
    pub const ACPI_SCI_IRQ: u32 = 9;
    /// ACPI reset register (FADT RESET_REG, 1 byte): writing 0x6 resets.
    pub const ACPI_RESET: u16 = 0x60c;
    /// RTC IRQ.
    pub const RTC_IRQ: u32 = 8;
}
