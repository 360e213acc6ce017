//! The seam between the VMM and the engines that run guest CPUs.
//!
//! vessel runs the same machine model (memory, devices, boot code) on two
//! engines: KVM (hardware-assisted full virtualization) and its own x86-64
//! software engine. This crate owns the traits both implement
//! ([`Hypervisor`], [`Vm`], [`Vcpu`]), the engine-neutral register state the
//! boot code fills in, the [`VmExit`] reasons a vCPU returns for, and the
//! [`DeviceIo`] callback through which an engine hands port and MMIO accesses
//! to the device bus. Nothing here knows about a particular engine.

mod regs;
mod xsave;

pub use regs::{CpuidEntry, DescriptorTable, FpuState, Regs, Segment, SpecialRegs};
pub use xsave::{
    XsaveState, XFEATURE_AVX, XFEATURE_SSE, XFEATURE_X87, XSAVE_AVX_OFFSET, XSAVE_AVX_SIZE,
    XSAVE_HEADER_OFFSET, XSAVE_HEADER_SIZE, XSAVE_LEGACY_SIZE, XSAVE_MIN_SIZE,
};

use std::sync::Arc;
use vm_memory::GuestMemoryMmap;
pub use vmm_sys_util::eventfd::EventFd;

/// Which engine runs the vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// Linux KVM (`/dev/kvm`).
    Kvm,
    /// vessel's own x86-64 CPU engine.
    Soft,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Kvm => "kvm",
            EngineKind::Soft => "soft",
        })
    }
}

/// Errors an engine reports. Engines wrap their own error types in `Engine`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not supported by the {engine} engine")]
    Unsupported {
        engine: EngineKind,
        what: &'static str,
    },
    #[error("the {engine} engine allows at most {max} vCPUs, {requested} requested")]
    TooManyVcpus {
        engine: EngineKind,
        max: usize,
        requested: usize,
    },
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Engine(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The device side of port I/O and MMIO, called by an engine on the vCPU
/// thread that made the access. Reads fill `data` (its length is the access
/// size); an access nothing claims reads as all ones and writes are dropped.
pub trait DeviceIo: Send + Sync {
    fn pio_read(&self, port: u16, data: &mut [u8]);
    fn pio_write(&self, port: u16, data: &[u8]);
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

/// A machine without devices: port and MMIO reads float high (all ones,
/// as an unclaimed bus reads), writes go nowhere. For bare-CPU guests in
/// tests and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDevices;

impl DeviceIo for NoDevices {
    fn pio_read(&self, _: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, _: u16, _: &[u8]) {}
    fn mmio_read(&self, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _: u64, _: &[u8]) {}
}

/// Why [`Vcpu::run`] returned. Port and MMIO accesses never show up here:
/// the engine hands them to [`DeviceIo`] and keeps running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The vCPU executed HLT with interrupts disabled, or HLT where the
    /// engine leaves idling to the VMM. Engines that can sleep until an
    /// interrupt (KVM's in-kernel APIC, the soft engine) never return this
    /// for an ordinary idle HLT.
    Hlt,
    /// A triple fault or another architectural shutdown condition.
    Shutdown,
    /// The guest asked for a system reset through the engine (e.g. KVM's
    /// system-event exit).
    Reset,
    /// The guest asked to be powered off through the engine.
    PowerOff,
    /// [`VcpuKicker::kick`] interrupted the run: the VMM wants the thread back.
    Interrupted,
    /// The engine could not execute an instruction. `bytes` are the
    /// instruction bytes at `rip` when they could be read.
    EmulationFailure { rip: u64, bytes: Vec<u8> },
    /// An exit the engine has no handling for; the text says which.
    Unhandled(String),
}

/// A handle another thread uses to make a running vCPU return
/// [`VmExit::Interrupted`]. Kicking an idle or stopped vCPU is harmless; a
/// kick that arrives before `run` is entered makes the next `run` return at
/// once.
pub trait VcpuKicker: Send + Sync {
    fn kick(&self);
    /// Clears a pending kick so the next `run` enters the guest.
    fn clear(&self);
}

/// Told when something other than a vCPU (a device's DMA) wrote guest
/// RAM. Engines that keep state derived from guest memory (the soft
/// engine's decoded-code cache) use it to notice; hardware-assisted
/// engines see such writes through the hardware and need nothing.
pub trait DmaObserver: Send + Sync {
    /// `len` bytes at guest-physical `gpa` were written.
    fn written(&self, gpa: u64, len: u64);
}

/// An engine: creates VMs.
pub trait Hypervisor: Send + Sync {
    fn kind(&self) -> EngineKind;
    /// The most vCPUs one VM may have on this engine.
    fn max_vcpus(&self) -> usize;
    /// The CPUID leaves this engine can expose, before the VMM filters them.
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>>;
    fn create_vm(&self) -> Result<Box<dyn Vm>>;
}

/// Interrupt delivery and memory of one VM, shared by its vCPU threads and
/// its devices.
pub trait Vm: Send + Sync {
    /// Maps all regions of `memory` into the guest's physical address space.
    /// Called once, before any vCPU is created.
    fn set_memory(&self, memory: &GuestMemoryMmap) -> Result<()>;
    /// Creates the interrupt controllers (PIC, IOAPIC, local APICs) and the
    /// PIT. Called once, after `set_memory`, before any vCPU is created.
    fn create_irq_controllers(&self) -> Result<()>;
    /// Drives the level of interrupt line `gsi` (an IOAPIC input; GSIs 0-15
    /// also reach the PIC).
    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()>;
    /// Delivers a message-signalled interrupt.
    fn signal_msi(&self, address: u64, data: u32) -> Result<()>;
    /// Creates vCPU `index` (0 is the bootstrap processor). Its accesses
    /// to ports and non-RAM addresses go to `io`.
    fn create_vcpu(&self, index: usize, io: Arc<dyn DeviceIo>) -> Result<Box<dyn Vcpu>>;
    /// Asks the engine to turn guest writes (of any size and value) to the
    /// MMIO address `addr` into a signal on `fd`, inside the engine, so the
    /// vCPU does not return to the VMM for them (KVM's ioeventfd). `Ok(true)`:
    /// from now on such writes signal `fd` and no longer reach
    /// [`DeviceIo`]. `Ok(false)` (the default): the engine has no such path
    /// and the writes keep going to [`DeviceIo`].
    fn register_ioevent(&self, fd: &EventFd, addr: u64) -> Result<bool> {
        let _ = (fd, addr);
        Ok(false)
    }
    /// Undoes [`Vm::register_ioevent`] for `fd` at `addr`.
    fn unregister_ioevent(&self, fd: &EventFd, addr: u64) -> Result<()> {
        let _ = (fd, addr);
        Ok(())
    }
    /// What devices must tell after they write guest RAM, or `None` when
    /// the engine needs no telling (the default). Valid after
    /// [`Vm::set_memory`].
    fn dma_observer(&self) -> Option<Arc<dyn DmaObserver>> {
        None
    }
}

/// One virtual CPU. Lives on its own thread.
pub trait Vcpu: Send {
    fn index(&self) -> usize;
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()>;
    /// Writes model-specific registers, as (index, value) pairs.
    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<()>;
    fn get_msr(&mut self, index: u32) -> Result<u64>;
    fn regs(&mut self) -> Result<Regs>;
    fn set_regs(&mut self, regs: &Regs) -> Result<()>;
    fn special_regs(&mut self) -> Result<SpecialRegs>;
    fn set_special_regs(&mut self, sregs: &SpecialRegs) -> Result<()>;
    fn fpu(&mut self) -> Result<FpuState>;
    fn set_fpu(&mut self, fpu: &FpuState) -> Result<()>;
    /// XCR0 and the whole XSAVE-managed state as a standard-format image
    /// (see [`XsaveState`]).
    fn xsave(&mut self) -> Result<XsaveState>;
    /// Sets XCR0 (first) and then the state from a standard-format image,
    /// as XRSTOR with every component XCR0 enables requested would.
    fn set_xsave(&mut self, state: &XsaveState) -> Result<()>;
    /// Reads `buf.len()` bytes at guest-virtual address `gva` as the vCPU
    /// would see them now (used to report the bytes of a failed
    /// instruction). Fails where the address does not translate.
    fn read_virtual(&mut self, gva: u64, buf: &mut [u8]) -> Result<()>;
    /// Runs the vCPU until an exit the VMM must see.
    fn run(&mut self) -> Result<VmExit>;
    fn kicker(&self) -> Arc<dyn VcpuKicker>;
    /// Guest instructions this vCPU has retired, when the engine counts
    /// them (the software engine does; KVM does not).
    fn instructions_retired(&self) -> Option<u64> {
        None
    }
}
