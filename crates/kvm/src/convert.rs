//! Conversions between the engine-neutral register types of
//! [`hypervisor`] and the `kvm_bindings` structures KVM's ioctls take.
//! Fields KVM has and vessel does not (padding, the pending-interrupt
//! bitmap of `kvm_sregs`) are preserved by the callers, not invented here.

use hypervisor::{CpuidEntry, DescriptorTable, FpuState, Regs, Segment, SpecialRegs};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs,
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
};

pub fn regs_from_kvm(r: &kvm_regs) -> Regs {
    Regs {
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
    }
}

pub fn regs_to_kvm(r: &Regs) -> kvm_regs {
    kvm_regs {
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
    }
}

pub fn segment_from_kvm(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

pub fn segment_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        // Only the low 4 bits are the type field; DPL is 2 bits.
        type_: s.type_ & 0xf,
        present: u8::from(s.present),
        dpl: s.dpl & 3,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: u8::from(s.avl),
        unusable: u8::from(s.unusable),
        padding: 0,
    }
}

fn dtable_from_kvm(d: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: d.base,
        limit: d.limit,
    }
}

fn dtable_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

pub fn sregs_from_kvm(s: &kvm_sregs) -> SpecialRegs {
    SpecialRegs {
        cs: segment_from_kvm(&s.cs),
        ds: segment_from_kvm(&s.ds),
        es: segment_from_kvm(&s.es),
        fs: segment_from_kvm(&s.fs),
        gs: segment_from_kvm(&s.gs),
        ss: segment_from_kvm(&s.ss),
        tr: segment_from_kvm(&s.tr),
        ldt: segment_from_kvm(&s.ldt),
        gdt: dtable_from_kvm(&s.gdt),
        idt: dtable_from_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
    }
}

/// Writes `s` over `k`, keeping `k`'s pending-interrupt bitmap.
pub fn sregs_into_kvm(s: &SpecialRegs, k: &mut kvm_sregs) {
    k.cs = segment_to_kvm(&s.cs);
    k.ds = segment_to_kvm(&s.ds);
    k.es = segment_to_kvm(&s.es);
    k.fs = segment_to_kvm(&s.fs);
    k.gs = segment_to_kvm(&s.gs);
    k.ss = segment_to_kvm(&s.ss);
    k.tr = segment_to_kvm(&s.tr);
    k.ldt = segment_to_kvm(&s.ldt);
    k.gdt = dtable_to_kvm(&s.gdt);
    k.idt = dtable_to_kvm(&s.idt);
    k.cr0 = s.cr0;
    k.cr2 = s.cr2;
    k.cr3 = s.cr3;
    k.cr4 = s.cr4;
    k.cr8 = s.cr8;
    k.efer = s.efer;
    k.apic_base = s.apic_base;
}

pub fn fpu_from_kvm(f: &kvm_fpu) -> FpuState {
    FpuState {
        st: f.fpr,
        fcw: f.fcw,
        fsw: f.fsw,
        ftw: f.ftwx,
        last_opcode: f.last_opcode,
        last_ip: f.last_ip,
        last_dp: f.last_dp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
    }
}

pub fn fpu_to_kvm(f: &FpuState) -> kvm_fpu {
    kvm_fpu {
        fpr: f.st,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftw,
        pad1: 0,
        last_opcode: f.last_opcode,
        last_ip: f.last_ip,
        last_dp: f.last_dp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
        pad2: 0,
    }
}

pub fn cpuid_from_kvm(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        significant_index: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

pub fn cpuid_to_kvm(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: if e.significant_index {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        padding: [0; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regs_round_trip() {
        let r = Regs {
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rsp: 7,
            rbp: 8,
            r8: 9,
            r9: 10,
            r10: 11,
            r11: 12,
            r12: 13,
            r13: 14,
            r14: 15,
            r15: 16,
            rip: 17,
            rflags: 0x202,
        };
        assert_eq!(regs_from_kvm(&regs_to_kvm(&r)), r);
    }

    #[test]
    fn sregs_round_trip_keeps_interrupt_bitmap() {
        let seg = Segment {
            base: 0x1000,
            limit: 0xffff_ffff,
            selector: 0x10,
            type_: 0xb,
            present: true,
            dpl: 0,
            db: false,
            s: true,
            l: true,
            g: true,
            avl: false,
            unusable: false,
        };
        let s = SpecialRegs {
            cs: seg,
            ds: Segment { type_: 3, ..seg },
            tr: Segment {
                s: false,
                unusable: true,
                ..seg
            },
            gdt: DescriptorTable {
                base: 0x500,
                limit: 0x1f,
            },
            cr0: 0x8000_0011,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0x500,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        let mut k = kvm_sregs {
            interrupt_bitmap: [1, 2, 3, 4],
            ..Default::default()
        };
        sregs_into_kvm(&s, &mut k);
        assert_eq!(k.interrupt_bitmap, [1, 2, 3, 4]);
        assert_eq!(k.cs.l, 1);
        assert_eq!(k.tr.unusable, 1);
        assert_eq!(sregs_from_kvm(&k), s);
    }

    #[test]
    fn segment_fields_are_masked_to_their_width() {
        let k = segment_to_kvm(&Segment {
            type_: 0xfb,
            dpl: 7,
            ..Default::default()
        });
        assert_eq!(k.type_, 0xb);
        assert_eq!(k.dpl, 3);
    }

    #[test]
    fn fpu_round_trip() {
        let mut f = FpuState::default();
        f.st[3][0] = 0x55;
        f.xmm[15][15] = 0xaa;
        f.ftw = 0x80;
        f.last_ip = 0x1234;
        assert_eq!(fpu_from_kvm(&fpu_to_kvm(&f)), f);
    }

    #[test]
    fn cpuid_significant_index_maps_to_flag() {
        let e = CpuidEntry {
            function: 7,
            index: 0,
            significant_index: true,
            ebx: 0x1234,
            ..Default::default()
        };
        let k = cpuid_to_kvm(&e);
        assert_eq!(k.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        assert_eq!(cpuid_from_kvm(&k), e);
        let plain = cpuid_to_kvm(&CpuidEntry::default());
        assert_eq!(plain.flags, 0);
    }
}
