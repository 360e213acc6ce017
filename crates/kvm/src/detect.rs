//! What KVM this host offers: whether `/dev/kvm` can be opened, which
//! module serves it (VT-x, AMD-V, or PVM without hardware virtualization),
//! its limits and capabilities. Behind `vessel info` and the engine choice.

use std::fmt;
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

use crate::KVM_DEVICE;

/// Whether `/dev/kvm` can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    Missing,
    NoPermission,
    Available,
}

/// The host CPU's virtualization extension, from `/proc/cpuinfo` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVirt {
    Vmx,
    Svm,
    None,
}

/// A CPU vendor's hardware virtualization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
}

/// Which KVM implementation serves `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// kvm_intel (VT-x) or kvm_amd (AMD-V).
    Hardware(Vendor),
    /// The PVM module: guest CPL3 runs natively, CPL0 is emulated.
    Pvm,
    Unknown,
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmSupport {
    pub device: DeviceState,
    pub api_version: Option<i32>,
    pub cpu_virt: CpuVirt,
    pub backend: Backend,
    pub max_vcpus: Option<usize>,
    /// Capabilities vessel cares about and whether KVM reports them.
    pub caps: Vec<(&'static str, bool)>,
}

impl KvmSupport {
    /// True when `/dev/kvm` is usable and backed by VT-x or AMD-V.
    pub fn hardware_assisted(&self) -> bool {
        self.device == DeviceState::Available && matches!(self.backend, Backend::Hardware(_))
    }
}

/// The capabilities reported by [`detect`].
const CAPS: &[(&str, Cap)] = &[
    ("IRQCHIP", Cap::Irqchip),
    ("IOEVENTFD", Cap::Ioeventfd),
    ("IRQFD", Cap::Irqfd),
    ("PIT2", Cap::Pit2),
    ("SIGNAL_MSI", Cap::SignalMsi),
    ("IMMEDIATE_EXIT", Cap::ImmediateExit),
    ("SPLIT_IRQCHIP", Cap::SplitIrqchip),
    ("SET_TSS_ADDR", Cap::SetTssAddr),
    ("EXT_CPUID", Cap::ExtCpuid),
    ("XSAVE", Cap::Xsave),
    ("XCRS", Cap::Xcrs),
    ("COALESCED_MMIO", Cap::CoalescedMmio),
    ("COALESCED_PIO", Cap::CoalescedPio),
    ("DIRTY_LOG_RING", Cap::DirtyLogRing),
    ("X86_USER_SPACE_MSR", Cap::X86UserSpaceMsr),
    ("TSC_CONTROL", Cap::TscControl),
];

/// Probes this host: `/dev/kvm`, `/proc/cpuinfo`, `/sys/module`.
pub fn detect() -> KvmSupport {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_virt = cpu_virt_from_cpuinfo(&cpuinfo);
    let module = |name: &str| Path::new("/sys/module").join(name).exists();
    let backend = classify_backend(
        module("kvm_pvm"),
        module("kvm_intel"),
        module("kvm_amd"),
        cpu_virt,
    );

    let (device, kvm) = match Kvm::new() {
        Ok(kvm) => (DeviceState::Available, Some(kvm)),
        Err(e) if matches!(e.errno(), libc::EACCES | libc::EPERM) => {
            (DeviceState::NoPermission, None)
        }
        Err(_) if Path::new(KVM_DEVICE).exists() => (DeviceState::NoPermission, None),
        Err(_) => (DeviceState::Missing, None),
    };
    let api_version = kvm.as_ref().map(Kvm::get_api_version);
    let max_vcpus = kvm.as_ref().map(Kvm::get_max_vcpus);
    let caps = match &kvm {
        Some(kvm) => CAPS
            .iter()
            .map(|&(name, cap)| (name, kvm.check_extension(cap)))
            .collect(),
        None => Vec::new(),
    };
    KvmSupport {
        device,
        api_version,
        cpu_virt,
        backend,
        max_vcpus,
        caps,
    }
}

/// Reads the virtualization flag from the first `flags` line.
fn cpu_virt_from_cpuinfo(cpuinfo: &str) -> CpuVirt {
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f)
        .unwrap_or("");
    let mut virt = CpuVirt::None;
    for flag in flags.split_whitespace() {
        match flag {
            "vmx" => virt = CpuVirt::Vmx,
            "svm" => virt = CpuVirt::Svm,
            _ => {}
        }
    }
    virt
}

/// PVM wins when loaded (it serves /dev/kvm without VT-x/AMD-V); otherwise
/// the vendor module or, failing that, the CPU flag decides.
fn classify_backend(pvm: bool, intel: bool, amd: bool, cpu: CpuVirt) -> Backend {
    if pvm {
        Backend::Pvm
    } else if intel || (!amd && cpu == CpuVirt::Vmx) {
        Backend::Hardware(Vendor::Intel)
    } else if amd || cpu == CpuVirt::Svm {
        Backend::Hardware(Vendor::Amd)
    } else {
        Backend::Unknown
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceState::Missing => "missing",
            DeviceState::NoPermission => "no permission (run as root or join the kvm group)",
            DeviceState::Available => "available",
        })
    }
}

impl fmt::Display for CpuVirt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuVirt::Vmx => "vmx (Intel VT-x)",
            CpuVirt::Svm => "svm (AMD-V)",
            CpuVirt::None => "none",
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Hardware(Vendor::Intel) => "kvm_intel (hardware-assisted)",
            Backend::Hardware(Vendor::Amd) => "kvm_amd (hardware-assisted)",
            Backend::Pvm => "kvm_pvm (no hardware virtualization: guest kernel code is emulated)",
            Backend::Unknown => "unknown",
        })
    }
}

impl fmt::Display for KvmSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "KVM device:         {KVM_DEVICE} {}", self.device)?;
        if let Some(v) = self.api_version {
            writeln!(f, "KVM API version:    {v}")?;
        }
        writeln!(f, "CPU virtualization: {}", self.cpu_virt)?;
        writeln!(f, "KVM backend:        {}", self.backend)?;
        writeln!(
            f,
            "hardware-assisted:  {}",
            if self.hardware_assisted() {
                "yes"
            } else {
                "no"
            }
        )?;
        if let Some(n) = self.max_vcpus {
            writeln!(f, "max vCPUs:          {n}")?;
        }
        if !self.caps.is_empty() {
            let list = |want: bool| {
                self.caps
                    .iter()
                    .filter(|(_, has)| *has == want)
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            writeln!(f, "capabilities:       {}", list(true))?;
            writeln!(f, "missing:            {}", list(false))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_flags_are_parsed() {
        let amd = "processor\t: 0\nflags\t\t: fpu vme svm lm\n";
        assert_eq!(cpu_virt_from_cpuinfo(amd), CpuVirt::Svm);
        let intel = "flags\t\t: fpu vmx\nflags\t\t: fpu\n";
        assert_eq!(cpu_virt_from_cpuinfo(intel), CpuVirt::Vmx);
        // "svm" only counts as a whole word.
        assert_eq!(
            cpu_virt_from_cpuinfo("flags : svmx hypervisor\n"),
            CpuVirt::None
        );
        assert_eq!(cpu_virt_from_cpuinfo(""), CpuVirt::None);
    }

    #[test]
    fn pvm_module_wins_over_cpu_flags() {
        assert_eq!(
            classify_backend(true, false, false, CpuVirt::Svm),
            Backend::Pvm
        );
        assert_eq!(
            classify_backend(false, false, true, CpuVirt::Svm),
            Backend::Hardware(Vendor::Amd)
        );
        assert_eq!(
            classify_backend(false, true, false, CpuVirt::Vmx),
            Backend::Hardware(Vendor::Intel)
        );
        assert_eq!(
            classify_backend(false, false, false, CpuVirt::None),
            Backend::Unknown
        );
    }

    #[test]
    fn hardware_assisted_needs_device_and_hardware_backend() {
        let mut s = KvmSupport {
            device: DeviceState::Available,
            api_version: Some(12),
            cpu_virt: CpuVirt::Vmx,
            backend: Backend::Hardware(Vendor::Intel),
            max_vcpus: Some(8),
            caps: vec![("IRQCHIP", true), ("TSC_CONTROL", false)],
        };
        assert!(s.hardware_assisted());
        let text = s.to_string();
        assert!(text.contains("hardware-assisted:  yes"), "{text}");
        assert!(text.contains("missing:            TSC_CONTROL"), "{text}");
        s.backend = Backend::Pvm;
        assert!(!s.hardware_assisted());
        s.backend = Backend::Hardware(Vendor::Amd);
        s.device = DeviceState::Missing;
        assert!(!s.hardware_assisted());
    }

    #[test]
    fn this_host_is_pvm_when_the_module_is_loaded() {
        if !Path::new("/sys/module/kvm_pvm").exists() {
            eprintln!("skipped: no kvm_pvm module on this host");
            return;
        }
        let s = detect();
        assert_eq!(s.backend, Backend::Pvm);
        assert!(!s.hardware_assisted());
        print!("{s}");
    }
}
