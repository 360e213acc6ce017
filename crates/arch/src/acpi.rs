//! ACPI tables describing vessel's machine: RSDP, XSDT, FADT (with the
//! fixed-hardware PM registers, not hardware-reduced), FACS, MADT (local
//! APICs, IOAPIC, ISA overrides, LINT1 NMI) and a DSDT (`_S5`, the PCI host
//! bridge, COM1, RTC, i8042). Everything goes in the BIOS area
//! [`mem::ACPI_START`, `mem::ACPI_END`), where Linux also scans for the RSDP.
//! Table encoding is `acpi_tables`'; the MADT is assembled here because that
//! crate has no x86 override/NMI entries nor a way to set the MADT flags.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Name, Package,
    ResourceTemplate, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::{facs::FACS, rsdp::Rsdp, sdt::Sdt, xsdt::XSDT, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::layout::{mem, ports};

/// Errors building the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("{0} vcpus cannot be described (1 to {max} allowed)", max = MAX_CPUS)]
    BadCpuCount(usize),
    #[error("acpi tables need {needed:#x} bytes, more than the acpi window")]
    TablesTooLarge { needed: u64 },
    #[error("cannot write the acpi tables to guest memory")]
    Write(#[source] GuestMemoryError),
}

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs; APIC IDs are 0..cpus and the IOAPIC gets ID `cpus`.
    pub cpus: usize,
}

/// Local APIC and IOAPIC IDs are 8-bit and the IOAPIC takes the ID after
/// the last vCPU.
pub const MAX_CPUS: usize = 254;

const OEM_ID: [u8; 6] = *b"VESSEL";
const OEM_REVISION: u32 = 1;
const RSDP_LEN: u64 = 36;

/// FADT IAPC_BOOT_ARCH: legacy devices (COM1, RTC) present, 8042 present,
/// no VGA (so Linux does not probe for one).
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_8042: u16 = 1 << 1;
const IAPC_NO_VGA: u16 = 1 << 2;
/// Writing this to the reset register resets the machine.
const RESET_VALUE: u8 = 6;

/// MADT flags: the machine also has dual 8259 PICs.
const MADT_PCAT_COMPAT: u32 = 1;
const MADT_REVISION: u8 = 5;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// MPS INTI flags: polarity active high (bits 0-1 = 01), trigger edge
/// (bits 2-3 = 01) or level (11).
const INTI_EDGE_HIGH: u16 = 0x5;
const INTI_LEVEL_HIGH: u16 = 0xd;
/// The PIT's IRQ 0 arrives at IOAPIC pin 2.
const PIT_IRQ: u8 = 0;
const PIT_GSI: u32 = 2;
const ALL_PROCESSORS: u8 = 0xff;

const DSDT_REVISION: u8 = 2;

/// A bump allocator over the ACPI window.
struct Window {
    next: u64,
}

impl Window {
    fn place(&mut self, len: usize, align: u64) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(align);
        let end = addr.saturating_add(len as u64);
        if end > mem::ACPI_END {
            return Err(AcpiError::TablesTooLarge {
                needed: end - mem::ACPI_START,
            });
        }
        self.next = end;
        Ok(addr)
    }
}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// Builds the tables for `cfg`, writes them into the ACPI window of
/// `guest_mem`, and returns the address of the RSDP.
pub fn create_acpi_tables(
    guest_mem: &GuestMemoryMmap,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    if cfg.cpus == 0 || cfg.cpus > MAX_CPUS {
        return Err(AcpiError::BadCpuCount(cfg.cpus));
    }
    let mut window = Window {
        next: mem::ACPI_START + RSDP_LEN,
    };
    let write = |bytes: &[u8], addr: u64| {
        guest_mem
            .write_slice(bytes, GuestAddress(addr))
            .map_err(AcpiError::Write)
    };

    let dsdt = dsdt();
    let dsdt_addr = window.place(dsdt.len(), 16)?;
    write(dsdt.as_slice(), dsdt_addr)?;

    let facs = bytes_of(&FACS::new());
    let facs_addr = window.place(facs.len(), 64)?;
    write(&facs, facs_addr)?;

    let fadt = fadt(dsdt_addr, facs_addr);
    let fadt_addr = window.place(fadt.len(), 16)?;
    write(&fadt, fadt_addr)?;

    let madt = madt(cfg.cpus);
    let madt_addr = window.place(madt.len(), 16)?;
    write(madt.as_slice(), madt_addr)?;

    let mut xsdt = XSDT::new(OEM_ID, *b"VESSXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = bytes_of(&xsdt);
    let xsdt_addr = window.place(xsdt.len(), 16)?;
    write(&xsdt, xsdt_addr)?;

    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));
    write(&rsdp, mem::ACPI_START)?;
    Ok(GuestAddress(mem::ACPI_START))
}

fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let io = |bits: u8, access: AccessSize, port: u16| {
        GAS::new(GasSpace::SystemIo, bits, 0, access, u64::from(port))
    };
    let mut b = FADTBuilder::new(OEM_ID, *b"VESSFACP", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .firmware_ctrl_64(facs_addr)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // Set = no fixed-feature power/sleep button.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    // The layout constant is a small ISA IRQ number.
    b.sci_int = (ports::ACPI_SCI_IRQ as u16).into();
    b.pm1a_evt_blk = u32::from(ports::ACPI_PM1A_EVT).into();
    b.pm1_evt_len = 4;
    b.pm1a_cnt_blk = u32::from(ports::ACPI_PM1A_CNT).into();
    b.pm1_cnt_len = 2;
    b.pm_tmr_blk = u32::from(ports::ACPI_PM_TMR).into();
    b.pm_tmr_len = 4;
    b.x_pm1a_evt_blk = io(32, AccessSize::WordAccess, ports::ACPI_PM1A_EVT);
    b.x_pm1a_cnt_blk = io(16, AccessSize::WordAccess, ports::ACPI_PM1A_CNT);
    b.x_pm_tmr_blk = io(32, AccessSize::DwordAccess, ports::ACPI_PM_TMR);
    b.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_NO_VGA).into();
    b.reset_reg = io(8, AccessSize::ByteAccess, ports::ACPI_RESET);
    b.reset_value = RESET_VALUE;
    bytes_of(&b.finalize())
}

fn madt(cpus: usize) -> Sdt {
    let mut madt = Sdt::new(
        *b"APIC",
        44,
        MADT_REVISION,
        OEM_ID,
        *b"VESSAPIC",
        OEM_REVISION,
    );
    // LAPIC_START is below 4 GiB (a layout constant).
    madt.write_u32(36, mem::LAPIC_START as u32);
    madt.write_u32(40, MADT_PCAT_COMPAT);
    // cpus <= MAX_CPUS (254), checked by the caller, so IDs fit in a byte.
    for id in 0..cpus as u8 {
        madt.append_slice(&[MADT_LOCAL_APIC, 8, id, id, 1, 0, 0, 0]);
    }
    let mut ioapic = vec![MADT_IO_APIC, 12, cpus as u8, 0];
    ioapic.extend_from_slice(&(mem::IOAPIC_START as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    madt.append_slice(&ioapic);
    madt.append_slice(&interrupt_override(PIT_IRQ, PIT_GSI, INTI_EDGE_HIGH));
    let sci = ports::ACPI_SCI_IRQ;
    madt.append_slice(&interrupt_override(sci as u8, sci, INTI_LEVEL_HIGH));
    // NMI on LINT1 of every local APIC; polarity and trigger as the bus says.
    madt.append_slice(&[MADT_LOCAL_APIC_NMI, 6, ALL_PROCESSORS, 0, 0, 1]);
    madt
}

fn interrupt_override(irq: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut v = vec![MADT_INTERRUPT_OVERRIDE, 10, 0 /* ISA */, irq];
    v.extend_from_slice(&gsi.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v
}

fn dsdt() -> Sdt {
    let mut body = Vec::new();
    // \_S5: SLP_TYPa = 5 is what the PM1a control block powers off on.
    aml::Name::new("_S5_".into(), &Package::new(vec![&5u8, &0u8, &0u8, &0u8]))
        .to_aml_bytes(&mut body);
    body.extend(pci_host_bridge());
    isa_devices(&mut body);
    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        *b"VESSDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&body);
    dsdt
}

fn pci_host_bridge() -> Vec<u8> {
    // PCI_MMIO_START + PCI_MMIO_SIZE is at most 4 GiB (layout constants).
    let mmio_first = mem::PCI_MMIO_START as u32;
    let mmio_last = (mem::PCI_MMIO_START + mem::PCI_MMIO_SIZE - 1) as u32;
    let bus = AddressSpace::<u16>::new_bus_number(0, 0xff);
    let config_ports = IO::new(ports::PCI_CONFIG_ADDRESS, ports::PCI_CONFIG_ADDRESS, 1, 8);
    let io_low = AddressSpace::<u16>::new_io(0, ports::PCI_CONFIG_ADDRESS - 1, None);
    let io_high = AddressSpace::<u16>::new_io(ports::PCI_CONFIG_ADDRESS + 8, 0xffff, None);
    let mmio = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        mmio_first,
        mmio_last,
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &config_ports, &io_low, &io_high, &mmio]);
    let hid = EISAName::new("PNP0A03");
    let children: Vec<(&str, &dyn Aml)> = vec![
        ("_HID", &hid),
        ("_SEG", &0u8),
        ("_BBN", &0u8),
        ("_UID", &0u8),
        ("_CRS", &crs),
    ];
    let names: Vec<Name> = children
        .into_iter()
        .map(|(n, v)| Name::new(n.into(), v))
        .collect();
    let refs: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    bytes_of(&Device::new("_SB_.PCI0".into(), refs))
}

/// One ISA device under \_SB: its PNP id, I/O ranges (base, length) and IRQ.
fn isa_device(sink: &mut Vec<u8>, path: &str, hid: &str, io: &[(u16, u8)], irq: u32) {
    let ranges: Vec<IO> = io
        .iter()
        .map(|&(base, len)| IO::new(base, base, 1, len))
        .collect();
    // ISA interrupts: edge triggered, active high, exclusive.
    let irq = Interrupt::new(true, true, false, false, irq);
    let mut resources: Vec<&dyn Aml> = ranges.iter().map(|r| r as &dyn Aml).collect();
    resources.push(&irq);
    let crs = ResourceTemplate::new(resources);
    let hid = Name::new("_HID".into(), &EISAName::new(hid));
    let uid = Name::new("_UID".into(), &0u8);
    let crs = Name::new("_CRS".into(), &crs);
    Device::new(path.into(), vec![&hid, &uid, &crs]).to_aml_bytes(sink);
}

fn isa_devices(sink: &mut Vec<u8>) {
    isa_device(
        sink,
        "_SB_.COM1",
        "PNP0501",
        &[(ports::COM1, 8)],
        ports::COM1_IRQ,
    );
    isa_device(
        sink,
        "_SB_.RTC_",
        "PNP0B00",
        &[(ports::RTC, 2)],
        ports::RTC_IRQ,
    );
    isa_device(
        sink,
        "_SB_.KBD_",
        "PNP0303",
        &[(ports::I8042_DATA, 1), (ports::I8042_COMMAND, 1)],
        ports::I8042_KBD_IRQ,
    );
}

#[cfg(test)]
#[path = "acpi_tests.rs"]
mod tests;
