//! From a [`VmConfig`] to a running VM and back: allocate memory, create the
//! engine's VM, load the kernel, write ACPI tables and boot structures, wire
//! the devices, start one thread per vCPU, and wait for the VM to stop.

use crate::config::{ConfigError, VmConfig};
use crate::console::Console;
use crate::control::{Outcome, VmControl};
use crate::device_manager::{DeviceError, DeviceManager};
use crate::engine::{self, EngineError};
use crate::live::{LiveHandles, LiveVm};
use crate::memory::{self, MemoryError};
use crate::vcpu;
use hypervisor::{EngineKind, Hypervisor, Vcpu, Vm};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open kernel {path}")]
    KernelOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load kernel {path}")]
    KernelLoad {
        path: PathBuf,
        source: arch::LoadError,
    },
    #[error("cannot open initrd {path}")]
    InitrdOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load initrd {path}")]
    InitrdLoad {
        path: PathBuf,
        source: arch::LoadError,
    },
    #[error(
        "guest memory of {have} MiB is too small for this kernel and initrd: they need at least \
         {need} MiB; use --memory {need} or more (mem_size_mib over the API)"
    )]
    MemoryTooSmall { have: u64, need: u64 },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("--cpus {requested} is more than the {engine} engine allows here ({max})")]
    TooManyCpus {
        engine: EngineKind,
        requested: usize,
        max: usize,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("{op}")]
    Hypervisor {
        op: &'static str,
        source: hypervisor::Error,
    },
    #[error("cannot build ACPI tables")]
    Acpi(#[from] arch::AcpiError),
    #[error("cannot set up the boot state")]
    Boot(#[from] arch::BootError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error("cannot set up the virtio devices")]
    Virtio(#[from] crate::virtio_devices::VirtioError),
    #[error("cannot start a vCPU thread")]
    Thread(#[source] std::io::Error),
    #[error(
        "--cpu-model {model} needs {missing}, which the {engine} engine cannot offer on this host"
    )]
    CpuModel {
        engine: EngineKind,
        model: crate::config::CpuModel,
        missing: soft::cpuid::Features,
    },
}

fn hv(op: &'static str) -> impl FnOnce(hypervisor::Error) -> Error {
    move |source| Error::Hypervisor { op, source }
}

fn open(path: &Path, err: fn(PathBuf, std::io::Error) -> Error) -> Result<File, Error> {
    File::open(path).map_err(|e| err(path.to_path_buf(), e))
}

/// Boots the VM of `config` and runs it until it stops, restarting it on a
/// guest reset when `config.reboot` is set. Returns why it finally stopped.
pub fn run_vm(config: &VmConfig, console: &Console) -> Result<Outcome, Error> {
    run_vm_with(config, console, &LiveVm::default())
}

/// [`run_vm`], with the running VM's handles published in `live` for other
/// threads (the API) while each boot runs.
pub fn run_vm_with(config: &VmConfig, console: &Console, live: &LiveVm) -> Result<Outcome, Error> {
    config.validate(memory::host_memory_mib())?;
    // Fail on unreadable files and too little memory before the engine
    // is started.
    check_memory(config)?;
    let hypervisor = engine::create(config.engine)?;
    loop {
        let outcome = run_once(config, hypervisor.as_ref(), console, live)?;
        // A kernel panic is followed by a reset (panic=-1) or by nothing:
        // either way the run failed, and the panic says why.
        if let Some(panic) = console.output().panic() {
            return Ok(match outcome {
                Outcome::Failed(why) => Outcome::Failed(why),
                _ => Outcome::Failed(format!("the guest kernel panicked: {panic}")),
            });
        }
        if outcome == Outcome::Reset && config.reboot {
            log::info!("guest reset: rebooting");
            continue;
        }
        return Ok(outcome);
    }
}

/// Fails unless the kernel and initrd of `config` (read from their
/// headers and sizes) fit its memory with what Linux needs to boot.
fn check_memory(config: &VmConfig) -> Result<(), Error> {
    let mut kernel = open(&config.kernel, |path, source| Error::KernelOpen {
        path,
        source,
    })?;
    let end = arch::kernel_end(&mut kernel).map_err(|source| Error::KernelLoad {
        path: config.kernel.clone(),
        source,
    })?;
    let initrd = match &config.initrd {
        Some(path) => {
            let f = open(path, |path, source| Error::InitrdOpen { path, source })?;
            let meta = f.metadata();
            Some(meta.map_err(|source| Error::InitrdOpen {
                path: path.clone(),
                source,
            })?)
        }
        None => None,
    };
    let need = arch::min_ram_bytes(end, initrd.map(|m| m.len())).div_ceil(1 << 20);
    if config.memory_mib < need {
        return Err(Error::MemoryTooSmall {
            have: config.memory_mib,
            need,
        });
    }
    Ok(())
}

/// One boot of the VM, from power-on to stop.
fn run_once(
    config: &VmConfig,
    hypervisor: &dyn Hypervisor,
    console: &Console,
    live: &LiveVm,
) -> Result<Outcome, Error> {
    let engine = hypervisor.kind();
    let max = hypervisor.max_vcpus();
    if config.cpus > max {
        return Err(Error::TooManyCpus {
            engine,
            requested: config.cpus,
            max,
        });
    }
    let mem = memory::create_guest_memory(config.memory_mib)?;
    let vm: Arc<dyn Vm> = Arc::from(hypervisor.create_vm().map_err(hv("cannot create the VM"))?);
    vm.set_memory(&mem).map_err(hv("cannot map guest memory"))?;
    vm.create_irq_controllers()
        .map_err(hv("cannot create the interrupt controllers"))?;

    let mut kernel_file = open(&config.kernel, |path, source| Error::KernelOpen {
        path,
        source,
    })?;
    let kernel = arch::load_kernel(&mem, &mut kernel_file).map_err(|source| Error::KernelLoad {
        path: config.kernel.clone(),
        source,
    })?;
    let initrd = match &config.initrd {
        Some(path) => {
            let mut f = open(path, |path, source| Error::InitrdOpen { path, source })?;
            Some(
                arch::load_initrd(&mem, &mut f, &kernel).map_err(|source| Error::InitrdLoad {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let rsdp = arch::create_acpi_tables(&mem, &arch::AcpiConfig { cpus: config.cpus })?;
    let boot = arch::configure_boot(&mem, &kernel, &config.cmdline, initrd, rsdp)?;

    let control = VmControl::new();
    console.output().attach(control.clone());
    let devices = DeviceManager::new(
        vm.clone(),
        control.clone(),
        config.memory_mib << 20,
        Box::new(console.output().writer()),
    )?;
    let virtio = Arc::new(crate::virtio_devices::attach(
        &config.devices,
        &mem,
        &vm,
        &devices,
    )?);
    let supported = hypervisor
        .supported_cpuid()
        .map_err(hv("cannot read the engine's CPUID"))?;
    // The CPU model: the engine's table cut down to the model's features.
    let supported = config
        .cpu_model
        .apply(&supported)
        .map_err(|e| Error::CpuModel {
            engine,
            model: e.model,
            missing: e.missing,
        })?;
    // KVM's paravirtual clock, EOI and TLB-flush interfaces are served by
    // KVM itself; the software engine does not offer them yet.
    let cpuid_opts = arch::CpuidOptions {
        kvm_pv: engine == EngineKind::Kvm,
        pv_unhalt: false,
    };

    let mut vcpus: Vec<Box<dyn Vcpu>> = Vec::with_capacity(config.cpus);
    for index in 0..config.cpus {
        let mut vcpu = vm
            .create_vcpu(index, devices.io.clone())
            .map_err(hv("cannot create a vCPU"))?;
        vcpu.set_cpuid(&arch::cpuid(&supported, index, config.cpus, &cpuid_opts))
            .map_err(hv("cannot set CPUID"))?;
        vcpu.set_msrs(&arch::boot_msrs())
            .map_err(hv("cannot set MSRs"))?;
        if index == 0 {
            vcpu.set_special_regs(&boot.sregs)
                .map_err(hv("cannot set the boot CPU's segment registers"))?;
            vcpu.set_regs(&boot.regs)
                .map_err(hv("cannot set the boot CPU's registers"))?;
            vcpu.set_fpu(&boot.fpu)
                .map_err(hv("cannot set the boot CPU's FPU state"))?;
        }
        control.add_vcpu(vcpu.kicker());
        vcpus.push(vcpu);
    }

    console.attach(devices.console_input(), control.clone());
    live.set(LiveHandles {
        control: control.clone(),
        io: devices.io.clone(),
        i8042: devices.i8042.clone(),
        virtio,
    });
    let mut threads = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        let vcpu_control = control.clone();
        let name = format!("vcpu{}", vcpu.index());
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || vcpu::run_loop(vcpu, engine, vcpu_control));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                control.stop(Outcome::UserStop);
                join_all(threads);
                console.detach();
                live.clear();
                return Err(Error::Thread(e));
            }
        }
    }
    let outcome = control.wait();
    join_all(threads);
    console.detach();
    live.clear();
    Ok(outcome)
}

fn join_all(threads: Vec<std::thread::JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
}
