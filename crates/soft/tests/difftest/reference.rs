//! The reference side: the snippet runs at CPL3 under KVM, where this
//! machine's KVM executes it natively on the real CPU.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
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

fn seg_to_kvm(s: &hypervisor::Segment) -> kvm_bindings::kvm_segment {
    kvm_bindings::kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present as u8,
        dpl: s.dpl,
        db: s.db as u8,
        s: s.s as u8,
        l: s.l as u8,
        g: s.g as u8,
        avl: s.avl as u8,
        unusable: s.unusable as u8,
        padding: 0,
    }
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
        let u = user_sregs();
        let mut sr = self.vcpu.get_sregs().map_err(|e| e.to_string())?;
        sr.cs = seg_to_kvm(&u.cs);
        sr.ds = seg_to_kvm(&u.ds);
        sr.es = seg_to_kvm(&u.es);
        sr.fs = seg_to_kvm(&u.fs);
        sr.gs = seg_to_kvm(&u.gs);
        sr.ss = seg_to_kvm(&u.ss);
        sr.tr = seg_to_kvm(&u.tr);
        sr.ldt = seg_to_kvm(&u.ldt);
        sr.gdt.base = u.gdt.base;
        sr.gdt.limit = u.gdt.limit;
        sr.idt.base = u.idt.base;
        sr.idt.limit = u.idt.limit;
        sr.cr0 = u.cr0;
        sr.cr2 = 0;
        sr.cr3 = u.cr3;
        sr.cr4 = u.cr4;
        sr.efer = u.efer;
        self.vcpu
            .set_sregs(&sr)
            .map_err(|e| format!("set sregs: {e}"))?;
        let mut fpu = self.vcpu.get_fpu().map_err(|e| e.to_string())?;
        fpu.xmm = s.xmm;
        fpu.mxcsr = 0x1f80;
        self.vcpu.set_fpu(&fpu).map_err(|e| e.to_string())?;
        let r = &s.regs;
        let kr = kvm_bindings::kvm_regs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        };
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
        let fpu = self.vcpu.get_fpu().map_err(|e| e.to_string())?;
        let regs = hypervisor::Regs {
            rax: kr.rax,
            rbx: kr.rbx,
            rcx: kr.rcx,
            rdx: kr.rdx,
            rsi: kr.rsi,
            rdi: kr.rdi,
            rsp: kr.rsp,
            rbp: kr.rbp,
            r8: kr.r8,
            r9: kr.r9,
            r10: kr.r10,
            r11: kr.r11,
            r12: kr.r12,
            r13: kr.r13,
            r14: kr.r14,
            r15: kr.r15,
            rip: kr.rip,
            rflags: kr.rflags,
        };
        Ok(outcome(
            &self.mem,
            &regs,
            sr.cr2,
            fpu.xmm,
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
