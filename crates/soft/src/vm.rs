//! The soft engine's VM: guest memory shared by its vCPUs, the interrupt
//! controllers (created on request, as KVM's in-kernel irqchip is), and
//! the wake-up signals through which controllers and kickers reach vCPU
//! threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use devices::irqchip::IrqChip;
use hypervisor::{DeviceIo, EngineKind, Error, Result, Vcpu, Vm};
use vm_memory::GuestMemoryMmap;

use crate::config::SoftConfig;
use crate::phys::Ram;
use crate::vcpu::SoftVcpu;

/// State every vCPU of a VM shares.
pub struct Shared {
    pub ram: Ram,
    pub irq: OnceLock<Arc<IrqChip>>,
    /// Turns TSC deadlines into instants.
    pub tsc: crate::vcpu::TscClock,
}

/// Wakes one vCPU thread: for interrupts, start-up IPIs and kicks.
/// `attention` and `kicked` come first and side by side (`repr(C)`), so
/// translated code tests both with one 16-bit load.
#[derive(Default)]
#[repr(C)]
pub struct Signal {
    /// The irqchip may have something for this vCPU.
    pub attention: AtomicBool,
    /// The VMM wants the thread back.
    pub kicked: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

// Translated code reads both flags as one 16-bit word.
const _: () = assert!(std::mem::offset_of!(Signal, kicked) == 1);
const _: () = assert!(std::mem::offset_of!(Signal, attention) == 0);

impl Signal {
    pub fn wake(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    pub fn notify(&self) {
        self.attention.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Sleeps until notified, kicked, or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.attention.load(Ordering::SeqCst) || self.kicked.load(Ordering::SeqCst) {
            return;
        }
        let _ = self.cv.wait_timeout(g, timeout);
    }
}

impl hypervisor::VcpuKicker for Signal {
    fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn clear(&self) {
        self.kicked.store(false, Ordering::SeqCst);
    }
}

/// A VM on the soft engine.
#[derive(Default)]
pub struct SoftVm {
    shared: OnceLock<Arc<Shared>>,
    signals: Arc<Mutex<Vec<Arc<Signal>>>>,
    config: SoftConfig,
}

fn engine_err(what: &str) -> Error {
    Error::Engine(format!("soft engine: {what}"))
}

impl SoftVm {
    pub fn new() -> Self {
        SoftVm::default()
    }

    /// A VM whose vCPUs run as `config` says.
    pub fn with_config(config: SoftConfig) -> Self {
        SoftVm {
            config,
            ..SoftVm::default()
        }
    }

    fn shared(&self) -> Result<&Arc<Shared>> {
        self.shared
            .get()
            .ok_or_else(|| engine_err("memory is not set"))
    }

    fn irq(&self) -> Result<&Arc<IrqChip>> {
        self.shared()?
            .irq
            .get()
            .ok_or_else(|| engine_err("interrupt controllers are not created"))
    }
}

/// Device DMA into guest RAM, reported to the page generations so
/// decoded blocks of overwritten code are dropped.
struct DmaInvalidator(Arc<Shared>);

impl hypervisor::DmaObserver for DmaInvalidator {
    fn written(&self, gpa: u64, len: u64) {
        self.0.ram.note_range(gpa, len);
    }
}

impl Vm for SoftVm {
    fn dma_observer(&self) -> Option<Arc<dyn hypervisor::DmaObserver>> {
        let shared = self.shared.get()?.clone();
        Some(Arc::new(DmaInvalidator(shared)))
    }

    fn set_memory(&self, memory: &GuestMemoryMmap) -> Result<()> {
        let shared = Arc::new(Shared {
            ram: Ram::new(memory),
            irq: OnceLock::new(),
            tsc: crate::vcpu::TscClock::new(),
        });
        self.shared
            .set(shared)
            .map_err(|_| engine_err("memory is already set"))
    }

    fn create_irq_controllers(&self) -> Result<()> {
        let signals = self.signals.clone();
        let notify = Arc::new(move |cpu: usize| {
            let s = signals.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(sig) = s.get(cpu) {
                sig.notify();
            }
        });
        let chip = Arc::new(IrqChip::new(notify));
        // vCPUs created before this call get their local APIC now.
        let n = self.signals.lock().unwrap_or_else(|e| e.into_inner()).len();
        for i in 0..n {
            chip.add_cpu(i);
        }
        self.shared()?
            .irq
            .set(chip)
            .map_err(|_| engine_err("interrupt controllers already exist"))
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()> {
        self.irq()?.set_irq_line(gsi, level);
        Ok(())
    }

    fn signal_msi(&self, address: u64, data: u32) -> Result<()> {
        self.irq()?.signal_msi(address, data);
        Ok(())
    }

    fn create_vcpu(&self, index: usize, io: Arc<dyn DeviceIo>) -> Result<Box<dyn Vcpu>> {
        if index >= crate::MAX_VCPUS {
            return Err(Error::TooManyVcpus {
                engine: EngineKind::Soft,
                max: crate::MAX_VCPUS,
                requested: index + 1,
            });
        }
        let shared = self.shared()?.clone();
        let sig = Arc::new(Signal::default());
        {
            let mut s = self.signals.lock().unwrap_or_else(|e| e.into_inner());
            while s.len() <= index {
                s.push(Arc::new(Signal::default()));
            }
            s[index] = sig.clone();
        }
        if let Some(irq) = shared.irq.get() {
            irq.add_cpu(index);
        }
        Ok(Box::new(SoftVcpu::new(
            shared,
            io,
            index,
            sig,
            &self.config,
        )))
    }
}
