//! The KVM engine: runs vessel's machine model on Linux KVM
//! (`/dev/kvm`), hardware-assisted full virtualization.
//!
//! This crate owns the [`hypervisor`] trait implementations on top of
//! `kvm-ioctls`: [`KvmHypervisor`] (the `/dev/kvm` handle), the VM
//! ([`vm::KvmVm`]: memory slots, in-kernel irqchip and PIT, interrupt
//! injection), the vCPU ([`vcpu::KvmVcpu`]: registers, the `KVM_RUN` loop
//! that hands port and MMIO exits to [`hypervisor::DeviceIo`]), the
//! signal-based kicker ([`kick`]) and the host probe behind `vessel info`
//! ([`detect`]).

pub mod convert;
pub mod detect;
pub mod kick;
pub mod vcpu;
pub mod vm;
mod xsave;

use hypervisor::{CpuidEntry, EngineKind, Hypervisor, Vm};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;

pub use detect::{detect, KvmSupport};
pub use kick::KvmKicker;
pub use vcpu::KvmVcpu;
pub use vm::KvmVm;

/// The path of the KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// The only KVM API version there has ever been (`KVM_GET_API_VERSION`).
const KVM_API_VERSION: i32 = 12;

/// What went wrong inside the KVM engine, beyond a failed ioctl (those are
/// reported as [`hypervisor::Error::Os`] naming the ioctl).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "/dev/kvm is missing: load kvm_intel or kvm_amd, run where KVM exists, \
         or use --engine soft"
    )]
    DeviceMissing,
    #[error("permission denied on /dev/kvm: run as root or add the user to the kvm group")]
    DevicePermission,
    #[error("unexpected KVM API version {0} (expected 12)")]
    ApiVersion(i32),
    #[error("guest memory is already set")]
    MemoryAlreadySet,
    #[error("guest memory is not set")]
    MemoryNotSet,
    #[error("guest memory region at {start:#x} has an invalid size")]
    BadRegion { start: u64 },
    #[error("interrupt controllers already created")]
    IrqChipAlreadyCreated,
    #[error("cannot build the interrupt routing table: {0}")]
    Routing(String),
    #[error("too many cpuid entries: {0}")]
    TooManyCpuidEntries(usize),
    #[error("too many msrs: {0}")]
    TooManyMsrs(usize),
    #[error("kvm accepted {accepted} of {requested} msrs (first refused: {refused:#x})")]
    MsrRejected {
        accepted: usize,
        requested: usize,
        refused: u32,
    },
    #[error("msr {0:#x} cannot be read")]
    MsrUnreadable(u32),
    #[error("guest-virtual address {0:#x} does not translate")]
    Untranslatable(u64),
    #[error("guest-physical address {0:#x} is not in guest memory")]
    NotInMemory(u64),
    #[error("cannot install the kick signal handler (errno {0})")]
    SignalHandler(i32),
}

impl From<Error> for hypervisor::Error {
    fn from(e: Error) -> Self {
        hypervisor::Error::Engine(e.to_string())
    }
}

/// Wraps a failed ioctl as [`hypervisor::Error::Os`] naming `op`.
pub(crate) fn os_error(op: &'static str, e: kvm_ioctls::Error) -> hypervisor::Error {
    hypervisor::Error::Os {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// The KVM engine: an open `/dev/kvm`.
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` and checks the API version. A missing device or a
    /// permission problem yields an error that says what to do about it.
    pub fn new() -> hypervisor::Result<Self> {
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::DeviceMissing.into(),
            libc::EACCES | libc::EPERM => Error::DevicePermission.into(),
            _ => hypervisor::Error::Open {
                path: KVM_DEVICE.to_string(),
                source: std::io::Error::from_raw_os_error(e.errno()),
            },
        })?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION {
            return Err(Error::ApiVersion(version).into());
        }
        Ok(KvmHypervisor { kvm })
    }

    /// The underlying `kvm-ioctls` handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }
}

impl Hypervisor for KvmHypervisor {
    fn kind(&self) -> EngineKind {
        EngineKind::Kvm
    }

    fn max_vcpus(&self) -> usize {
        // KVM_CAP_MAX_VCPUS, falling back to KVM_CAP_NR_VCPUS (and to 4
        // when neither answers), as kvm-ioctls implements it.
        self.kvm.get_max_vcpus()
    }

    fn supported_cpuid(&self) -> hypervisor::Result<Vec<CpuidEntry>> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| os_error("KVM_GET_SUPPORTED_CPUID", e))?;
        Ok(cpuid
            .as_slice()
            .iter()
            .map(convert::cpuid_from_kvm)
            .collect())
    }

    fn create_vm(&self) -> hypervisor::Result<Box<dyn Vm>> {
        Ok(Box::new(KvmVm::new(&self.kvm)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_message_names_device_and_remedies() {
        let msg = Error::DeviceMissing.to_string();
        assert!(msg.contains("/dev/kvm"));
        assert!(msg.contains("missing"));
        assert!(msg.contains("--engine soft"));
    }

    #[test]
    fn permission_message_names_the_kvm_group() {
        let msg = hypervisor::Error::from(Error::DevicePermission).to_string();
        assert!(msg.contains("/dev/kvm"));
        assert!(msg.contains("kvm group"));
    }

    #[test]
    fn os_error_names_the_ioctl() {
        let e = os_error("KVM_CREATE_VCPU", kvm_ioctls::Error::new(libc::EEXIST));
        let msg = e.to_string();
        assert!(msg.starts_with("KVM_CREATE_VCPU failed"), "{msg}");
    }
}
