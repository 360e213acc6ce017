//! x86-64 machine setup shared by every engine: the guest address map
//! ([`layout`]), RAM regions and the E820 map ([`memory`]), kernel and initrd
//! loading ([`loader`]), the boot-time register and memory state
//! ([`boot`]), ACPI tables ([`acpi`]), and the CPUID and MSR values vCPUs
//! start with ([`cpuid`], [`msr`]).

pub mod acpi;
pub mod boot;
pub mod cpuid;
mod gdt;
pub mod layout;
pub mod loader;
pub mod memory;
pub mod msr;

#[cfg(test)]
mod testutil;

pub use acpi::{create_acpi_tables, AcpiConfig, AcpiError};
pub use boot::{configure_boot, BootError, BootState};
pub use cpuid::{cpuid, CpuidOptions};
pub use loader::{
    kernel_end, load_initrd, load_kernel, min_ram_bytes, BootProtocol, LoadError, LoadedKernel,
};
pub use memory::{e820_map, ram_regions, E820Entry, E820Kind, MemoryError};
pub use msr::boot_msrs;
