//! The reference side: the snippet runs at CPL3 under KVM, where this
//! machine's KVM executes it natively on the real CPU.

use kvm_bindings::{kvm_userspace_memory_region, kvm_xcr, kvm_xcrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use super::machine::*;

pub struct Reference {
    _kvm: Kvm,
    _vm: VmFd,
    vcpu: VcpuFd,
    pub mem: GuestMemoryMmap,
}

impl Reference {
    pub fn new() -> Result<Self, String> {
        let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("create vm: {e}"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
            .map_err(|e| e.to_string())?;
        let r = mem.iter().next().ok_or("no region")?;
        let host = r
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| e.to_string())? as u64;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: host,
        };
        // SAFETY: the region is a live mapping of MEM_SIZE bytes owned by
        // `mem`, which this struct keeps alive as long as the VM.
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("memory region: {e}"))?;
        let vcpu = vm.create_vcpu(0).map_err(|e| format!("create vcpu: {e}"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("cpuid: {e}"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| format!("set cpuid: {e}"))?;
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0] = kvm_xcr {
            xcr: 0,
            reserved: 0,
            value: XCR0,
        };
        vcpu.set_xcrs(&xcrs).map_err(|e| format!("set xcr0: {e}"))?;
        write_image(&mem);
        Ok(Reference {
            _kvm: kvm,
            _vm: vm,
            vcpu,
            mem,
        })
    }

    pub fn run(&mut self, s: &Snippet) -> Result<Outcome, String> {
        load(&self.mem, s);
        if let Some(at) = s.cpu_ud_at {
            // The CPU's #UD where this host's KVM would emulate.
            let _ = self
                .mem
                .write_slice(&[0x0f, 0x0b], GuestAddress(CODE + at as u64));
        }
        let u = user_sregs();
        let mut sr = self.vcpu.get_sregs().map_err(|e| e.to_string())?;
        // The snippet's segments, tables and control registers; CR2 starts
        // clear and the APIC state stays as KVM has it.
        let mut want = u;
        want.cr2 = 0;
        want.cr8 = sr.cr8;
        want.apic_base = sr.apic_base;
        kvm::convert::sregs_into_kvm(&want, &mut sr);
        self.vcpu
            .set_sregs(&sr)
            .map_err(|e| format!("set sregs: {e}"))?;
        let mut fpu = self.vcpu.get_fpu().map_err(|e| e.to_string())?;
        fpu.xmm = s.xmm;
        fpu.mxcsr = 0x1f80;
        self.vcpu.set_fpu(&fpu).map_err(|e| e.to_string())?;
        let kr = kvm::convert::regs_to_kvm(&s.regs);
        self.vcpu.set_regs(&kr).map_err(|e| e.to_string())?;
        loop {
            match self.vcpu.run() {
                Ok(VcpuExit::Hlt) => break,
                Ok(VcpuExit::IoOut(..)) | Ok(VcpuExit::IoIn(..)) => continue,
                Ok(other) => return Err(format!("unexpected exit {other:?}")),
                Err(e) => return Err(format!("run: {e}")),
            }
        }
        let kr = self.vcpu.get_regs().map_err(|e| e.to_string())?;
        let sr = self.vcpu.get_sregs().map_err(|e| e.to_string())?;
        // The state from the XSAVE image (KVM_GET_FPU reports MXCSR as 0
        // on this host).
        let x = self.vcpu.get_xsave().map_err(|e| e.to_string())?;
        let area: Vec<u8> = x.region.iter().flat_map(|w| w.to_le_bytes()).collect();
        let regs = kvm::convert::regs_from_kvm(&kr);
        Ok(outcome(
            &self.mem,
            &regs,
            sr.cr2,
            &FpuOut::from_xsave(&area),
            s.undefined_flags,
        ))
    }
}

/// Writes the snippet's code, data and stack into guest memory.
pub fn load(mem: &GuestMemoryMmap, s: &Snippet) {
    let mut page = vec![0xccu8; 0x1000];
    page[..s.code.len()].copy_from_slice(&s.code);
    let _ = mem.write_slice(&page, GuestAddress(CODE));
    let _ = mem.write_slice(&s.data, GuestAddress(DATA));
    let _ = mem.write_slice(&s.stack, GuestAddress(STACK));
    let _ = mem.write_slice(&[0u8; 0x1000], GuestAddress(KSTACK_TOP - 0x1000));
}
