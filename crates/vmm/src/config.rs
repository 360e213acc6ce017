//! What a VM is made of, as the user asked for it, and the checks that make a
//! request bootable before anything is allocated.

use std::path::PathBuf;

pub use soft::cpuid::{CpuModel, Features};

/// Which engine runs the vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// KVM where it is hardware-assisted, the software engine elsewhere.
    #[default]
    Auto,
    Kvm,
    Soft,
}

/// One VM's configuration.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub engine: EngineChoice,
    /// The instruction set the guest's CPUID advertises, on either engine.
    pub cpu_model: CpuModel,
    /// When false, a guest reboot ends vessel with status 0 instead of
    /// restarting the guest.
    pub reboot: bool,
    /// Paravirtual devices (disks, NICs, entropy, balloon).
    pub devices: crate::virtio_devices::DeviceConfig,
}

/// A configuration that cannot be booted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--memory must be at least {min} MiB, got {got}")]
    MemoryTooSmall { min: u64, got: u64 },
    #[error("--memory {got} MiB is more than this host has ({host} MiB of RAM)")]
    MemoryTooLarge { got: u64, host: u64 },
    #[error("--cpus must be at least 1")]
    NoCpus,
    #[error("--cpus {0} is more than vessel supports (254: one IOAPIC ID is needed)")]
    TooManyCpus(usize),
    #[error("kernel command line is {len} bytes, more than the {max} bytes allowed")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineHasNul,
}

/// The smallest guest vessel boots: room for the boot structures below 1 MiB
/// and a small kernel above it.
pub const MIN_MEMORY_MIB: u64 = 2;

impl VmConfig {
    /// Checks the parts of the configuration that need no I/O.
    /// `host_memory_mib` is the host's total RAM.
    pub fn validate(&self, host_memory_mib: u64) -> Result<(), ConfigError> {
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall {
                min: MIN_MEMORY_MIB,
                got: self.memory_mib,
            });
        }
        if self.memory_mib > host_memory_mib {
            return Err(ConfigError::MemoryTooLarge {
                got: self.memory_mib,
                host: host_memory_mib,
            });
        }
        if self.cpus == 0 {
            return Err(ConfigError::NoCpus);
        }
        if self.cpus > 254 {
            return Err(ConfigError::TooManyCpus(self.cpus));
        }
        let max = arch::layout::mem::CMDLINE_MAX_SIZE - 1;
        if self.cmdline.len() > max {
            return Err(ConfigError::CmdlineTooLong {
                len: self.cmdline.len(),
                max,
            });
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineHasNul);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            kernel: PathBuf::from("k"),
            initrd: None,
            cmdline: String::new(),
            cpus: 1,
            memory_mib: 128,
            engine: EngineChoice::Auto,
            cpu_model: CpuModel::Max,
            reboot: true,
            devices: Default::default(),
        }
    }

    #[test]
    fn accepts_a_small_vm() {
        assert_eq!(config().validate(1024), Ok(()));
    }

    #[test]
    fn rejects_zero_memory_and_cpus() {
        let mut c = config();
        c.memory_mib = 0;
        assert!(matches!(
            c.validate(1024),
            Err(ConfigError::MemoryTooSmall { .. })
        ));
        let mut c = config();
        c.cpus = 0;
        assert_eq!(c.validate(1024), Err(ConfigError::NoCpus));
    }

    #[test]
    fn rejects_more_memory_than_the_host_has() {
        let mut c = config();
        c.memory_mib = 2048;
        assert_eq!(
            c.validate(1024),
            Err(ConfigError::MemoryTooLarge {
                got: 2048,
                host: 1024
            })
        );
    }

    #[test]
    fn rejects_long_cmdline() {
        let mut c = config();
        c.cmdline = "x".repeat(arch::layout::mem::CMDLINE_MAX_SIZE);
        assert!(matches!(
            c.validate(1024),
            Err(ConfigError::CmdlineTooLong { .. })
        ));
    }
}
