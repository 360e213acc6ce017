//! The engine under test: the same snippet through `soft::SoftHypervisor`
//! and the engine-neutral traits, exactly as the VMM drives it.

use std::sync::Arc;

use hypervisor::{FpuState, Hypervisor, Vcpu, VmExit};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::machine::*;
use super::reference::load;

pub struct SoftRunner {
    _vm: Box<dyn hypervisor::Vm>,
    vcpu: Box<dyn Vcpu>,
    pub mem: GuestMemoryMmap,
}

impl SoftRunner {
    pub fn new() -> Self {
        let hv = soft::SoftHypervisor::new();
        let vm = hv.create_vm().expect("soft vm");
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("memory");
        vm.set_memory(&mem).expect("set memory");
        let vcpu = vm
            .create_vcpu(0, Arc::new(hypervisor::NoDevices))
            .expect("vcpu");
        write_image(&mem);
        SoftRunner { _vm: vm, vcpu, mem }
    }

    pub fn run(&mut self, s: &Snippet) -> Result<Outcome, String> {
        load(&self.mem, s);
        self.vcpu
            .set_special_regs(&user_sregs())
            .map_err(|e| e.to_string())?;
        let fpu = FpuState {
            xmm: s.xmm,
            ..Default::default()
        };
        self.vcpu.set_fpu(&fpu).map_err(|e| e.to_string())?;
        self.vcpu.set_regs(&s.regs).map_err(|e| e.to_string())?;
        match self.vcpu.run().map_err(|e| e.to_string())? {
            VmExit::Hlt => {}
            other => return Err(format!("unexpected exit {other:?}")),
        }
        let regs = self.vcpu.regs().map_err(|e| e.to_string())?;
        let sr = self.vcpu.special_regs().map_err(|e| e.to_string())?;
        let fpu = self.vcpu.fpu().map_err(|e| e.to_string())?;
        Ok(outcome(
            &self.mem,
            &regs,
            sr.cr2,
            &FpuOut {
                xmm: fpu.xmm,
                st: fpu.st,
                ftw: fpu.ftw,
                fsw: fpu.fsw,
            },
            s.undefined_flags,
        ))
    }
}
