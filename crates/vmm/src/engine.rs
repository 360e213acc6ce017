//! Picks the engine that runs the vCPUs.
//!
//! KVM is only worth using where the CPU's virtualization extensions back it.
//! On a host whose `/dev/kvm` emulates guest kernel code (such as the PVM
//! module), an unmodified kernel runs far faster on vessel's own software
//! engine, so `auto` picks KVM only when it is hardware-assisted.

use crate::config::EngineChoice;
use hypervisor::{EngineKind, Hypervisor};
use kvm::detect::{DeviceState, KvmSupport};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot use KVM")]
    Kvm(#[source] hypervisor::Error),
}

/// What was found and what `auto` would pick, for `vessel info` and for
/// the start-up line of `vessel run`.
pub struct EngineReport {
    pub kvm: KvmSupport,
    pub auto_choice: EngineKind,
    pub auto_reason: String,
}

/// Inspects the host.
pub fn report() -> EngineReport {
    let kvm = kvm::detect::detect();
    let (auto_choice, auto_reason) = auto_choice(&kvm);
    EngineReport {
        kvm,
        auto_choice,
        auto_reason,
    }
}

fn auto_choice(kvm: &KvmSupport) -> (EngineKind, String) {
    match kvm.device {
        DeviceState::Available if kvm.hardware_assisted() => (
            EngineKind::Kvm,
            "/dev/kvm is backed by hardware virtualization".to_string(),
        ),
        DeviceState::Available => (
            EngineKind::Soft,
            "/dev/kvm is not hardware-assisted (it emulates guest kernel code), \
             so the software engine is faster"
                .to_string(),
        ),
        DeviceState::Missing => (EngineKind::Soft, "/dev/kvm is missing".to_string()),
        DeviceState::NoPermission => (
            EngineKind::Soft,
            "/dev/kvm is not accessible to this user".to_string(),
        ),
    }
}

/// Creates the engine for `choice`.
pub fn create(choice: EngineChoice) -> Result<Box<dyn Hypervisor>, EngineError> {
    let kind = match choice {
        EngineChoice::Kvm => EngineKind::Kvm,
        EngineChoice::Soft => EngineKind::Soft,
        EngineChoice::Auto => {
            let report = report();
            // Said at start so a user knows which kind of virtualization runs
            // the guest; only on a terminal, so piped output stays clean.
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!(
                    "vessel: engine {} ({})",
                    report.auto_choice, report.auto_reason
                );
            }
            report.auto_choice
        }
    };
    match kind {
        EngineKind::Kvm => Ok(Box::new(
            kvm::KvmHypervisor::new().map_err(EngineError::Kvm)?,
        )),
        EngineKind::Soft => Ok(Box::new(soft::SoftHypervisor::with_config(
            soft::SoftConfig::from_env(),
        ))),
    }
}
