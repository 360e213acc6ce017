//! The engine under test: the same snippet through `soft::SoftHypervisor`
//! and the engine-neutral traits, exactly as the VMM drives it, on one
//! vCPU per tier of the engine.

use std::sync::Arc;

use hypervisor::{FpuState, Hypervisor, Vcpu, VmExit};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::machine::*;
use super::reference::load;

/// A tier of the engine: which of its execution paths run the snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Every block translated on its first run (`SoftConfig::hot_after`
    /// 0); a block the emitter fails on is a test failure
    /// (`SoftConfig::strict`), not a quiet fallback.
    Jit,
    /// The interpreter with its pre-resolved fast handlers.
    Interp,
    /// The interpreter alone (`SoftConfig::fast_handlers` off).
    Slow,
}

impl Tier {
    /// The tiers `DIFFTEST_TIERS` names (`jit,interp,slow`; all by default).
    pub fn from_env() -> Vec<Tier> {
        let all = [Tier::Jit, Tier::Interp, Tier::Slow];
        match std::env::var("DIFFTEST_TIERS") {
            Ok(v) => all
                .into_iter()
                .filter(|t| v.split(',').any(|x| x.trim() == t.name()))
                .collect(),
            Err(_) => all.to_vec(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tier::Jit => "jit",
            Tier::Interp => "interp",
            Tier::Slow => "slow",
        }
    }

    /// The engine's settings for this tier: every block translated on
    /// its first run, and a block the translator refuses is an error.
    fn config(self) -> soft::SoftConfig {
        let (translate, fast_handlers) = match self {
            Tier::Jit => (true, true),
            Tier::Interp => (false, true),
            Tier::Slow => (false, false),
        };
        soft::SoftConfig {
            translate,
            fast_handlers,
            hot_after: 0,
            strict: true,
            ..soft::SoftConfig::default()
        }
    }
}

pub struct SoftRunner {
    pub tier: Tier,
    _vm: Box<dyn hypervisor::Vm>,
    vcpu: Box<dyn Vcpu>,
    pub mem: GuestMemoryMmap,
}

impl SoftRunner {
    pub fn new(tier: Tier) -> Self {
        let hv = soft::SoftHypervisor::with_config(tier.config());
        let vm = hv.create_vm().expect("soft vm");
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("memory");
        vm.set_memory(&mem).expect("set memory");
        let mut vcpu = vm
            .create_vcpu(0, Arc::new(hypervisor::NoDevices))
            .expect("vcpu");
        write_image(&mem);
        let mut x = vcpu.xsave().expect("xsave state");
        x.xcr0 = XCR0;
        vcpu.set_xsave(&x).expect("xcr0");
        SoftRunner {
            tier,
            _vm: vm,
            vcpu,
            mem,
        }
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
        let x = self.vcpu.xsave().map_err(|e| e.to_string())?;
        Ok(outcome(
            &self.mem,
            &regs,
            sr.cr2,
            &FpuOut::from_xsave(&x.area),
            s.undefined_flags,
        ))
    }
}
