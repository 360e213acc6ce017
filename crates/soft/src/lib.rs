//! vessel's own x86-64 CPU engine: full virtualization in software.
//!
//! Guest code is decoded with iced-x86 into blocks cached by address
//! ([`cache`]); common 64-bit forms are compiled into pre-resolved records
//! with their own handlers ([`fast`]), the rest interpreted ([`exec`]),
//! over the architectural
//! state ([`cpu`]) with lazily computed flags ([`flags`]), a soft MMU with
//! a TLB ([`mmu`]), precise exceptions and IDT delivery ([`interrupt`]).
//! Privileged instructions are emulated, port and MMIO accesses go to the
//! VMM's [`hypervisor::DeviceIo`] except those of the engine's own
//! interrupt controllers (`devices::irqchip`). [`SoftHypervisor`]
//! implements the engine-neutral `hypervisor` traits.

mod cache;
mod config;
mod core;
mod cpu;
pub mod cpuid;
mod exception;
mod exec;
mod fast;
mod flags;
mod hostop;
mod interrupt;
mod jit;
mod mmu;
mod phys;
mod sample;
mod seg;
mod vcpu;
mod vm;

pub use config::SoftConfig;
pub use vcpu::SoftVcpu;
pub use vm::SoftVm;

use hypervisor::{CpuidEntry, EngineKind, Hypervisor, Result, Vm};

/// The most vCPUs a soft VM may have.
pub const MAX_VCPUS: usize = 64;

/// The soft engine.
#[derive(Debug, Default, Clone)]
pub struct SoftHypervisor {
    config: SoftConfig,
}

impl SoftHypervisor {
    /// The engine with its default tiers and no diagnostics.
    pub fn new() -> Self {
        SoftHypervisor::default()
    }

    /// The engine with `config` for every VM it makes.
    pub fn with_config(config: SoftConfig) -> Self {
        SoftHypervisor { config }
    }
}

pub use cpuid::leaves::SIGNATURE;

impl Hypervisor for SoftHypervisor {
    fn kind(&self) -> EngineKind {
        EngineKind::Soft
    }

    fn max_vcpus(&self) -> usize {
        MAX_VCPUS
    }

    /// The `max` model: everything the engine runs exactly on this host
    /// ([`cpuid::leaves`] describes the table, [`cpuid::CpuModel`] cuts
    /// it down to a smaller model).
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        Ok(cpuid::leaves::table(cpuid::Features::engine_max()))
    }

    fn create_vm(&self) -> Result<Box<dyn Vm>> {
        Ok(Box::new(SoftVm::with_config(self.config.clone())))
    }
}
