//! The vCPU thread: runs one vCPU until the VM stops, turning the exits the
//! engine hands back into stop requests with messages a user can act on.

use crate::control::{Outcome, VmControl};
use hypervisor::{EngineKind, Vcpu, VmExit};
use std::sync::Arc;

/// Runs `vcpu` until the VM stops.
pub fn run_loop(mut vcpu: Box<dyn Vcpu>, engine: EngineKind, control: Arc<VmControl>) {
    let index = vcpu.index();
    while !control.is_stopping() {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) => {
                control.stop(Outcome::Failed(format!("vCPU {index}: {e}")));
                break;
            }
        };
        match exit {
            VmExit::Interrupted => {
                if control.is_paused() {
                    control.park_while_paused();
                    // The pause's kick is spent; a stop that came since is
                    // seen at the top of the loop.
                    vcpu.kicker().clear();
                }
            }
            VmExit::Hlt => {
                control.vcpu_halted_forever();
                control.wait();
                break;
            }
            VmExit::Reset => control.stop(Outcome::Reset),
            VmExit::PowerOff => control.stop(Outcome::PowerOff),
            VmExit::Shutdown => {
                let rip = vcpu.regs().map(|r| r.rip).unwrap_or_default();
                control.stop(Outcome::Failed(format!(
                    "the guest triple-faulted on vCPU {index} (the CPU shut down; last RIP {rip:#x})"
                )));
            }
            VmExit::EmulationFailure { rip, bytes } => {
                control.stop(Outcome::Failed(emulation_failure_message(
                    engine, index, rip, &bytes,
                )));
            }
            VmExit::Unhandled(what) => control.stop(Outcome::Failed(format!(
                "vCPU {index} stopped on an exit vessel does not handle: {what}"
            ))),
        }
    }
    if let Some(n) = vcpu.instructions_retired() {
        control.add_retired(n);
    }
}

/// Names the instruction that could not run, by address and bytes.
pub fn emulation_failure_message(
    engine: EngineKind,
    index: usize,
    rip: u64,
    bytes: &[u8],
) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let bytes = if hex.is_empty() {
        "unreadable".to_string()
    } else {
        hex.join(" ")
    };
    let hint = match engine {
        EngineKind::Kvm => {
            "; KVM on this host emulates this guest code in software and cannot run that \
             instruction: try --engine soft"
        }
        EngineKind::Soft => "; the software engine does not implement it yet",
    };
    format!(
        "the {engine} engine could not execute the instruction at RIP {rip:#x} on vCPU {index} \
         (bytes: {bytes}){hint}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_names_rip_and_bytes() {
        let m = emulation_failure_message(
            EngineKind::Kvm,
            0,
            0xffff_8000_0000_1234,
            &[0x48, 0x0f, 0xae, 0x2f],
        );
        assert!(m.contains("0xffff800000001234"), "{m}");
        assert!(m.contains("48 0f ae 2f"), "{m}");
        assert!(m.contains("--engine soft"), "{m}");
    }
}
