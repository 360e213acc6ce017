//! vessel's own x86-64 CPU engine: full virtualization in software.
//!
//! Guest code is decoded with iced-x86 into blocks cached by address
//! ([`cache`]); common 64-bit forms are compiled into pre-resolved records
//! with their own handlers ([`fast`]), the rest interpreted ([`exec`]),
//! over the architectural
//! state ([`cpu`]) with lazily computed flags ([`flags`]), a soft MMU with
//! a TLB ([`mmu`]), precise exceptions and IDT delivery ([`interrupt`]).
//! Privileged instructions are emulated, port and MMIO accesses go to the
//! VMM's [`hypervisor::DeviceIo`] except those of the engine's own
//! interrupt controllers (`devices::irqchip`). [`SoftHypervisor`]
//! implements the engine-neutral `hypervisor` traits.

pub mod cache;
pub mod core;
pub mod cpu;
pub mod exception;
pub mod exec;
pub mod fast;
pub mod flags;
pub mod hostop;
pub mod interrupt;
pub mod jit;
pub mod mmu;
pub mod phys;
pub mod sample;
pub mod seg;
pub mod vcpu;
pub mod vm;

pub use vcpu::SoftVcpu;
pub use vm::SoftVm;

use hypervisor::{CpuidEntry, EngineKind, Hypervisor, Result, Vm};

/// The most vCPUs a soft VM may have.
pub const MAX_VCPUS: usize = 64;

/// The soft engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoftHypervisor;

impl SoftHypervisor {
    pub fn new() -> Self {
        SoftHypervisor
    }
}

/// CPUID 1 / 0x8000_0001 EAX: family 0xf + extended family 1 = 0x10,
/// model 0, stepping 2.
pub const SIGNATURE: u32 = 0x0010_0f02;

fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index: 0,
        significant_index: false,
        eax,
        ebx,
        ecx,
        edx,
    }
}

fn text(s: &[u8; 16]) -> [u32; 4] {
    [0, 1, 2, 3].map(|i| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]))
}

impl Hypervisor for SoftHypervisor {
    fn kind(&self) -> EngineKind {
        EngineKind::Soft
    }

    fn max_vcpus(&self) -> usize {
        MAX_VCPUS
    }

    /// What the interpreter implements: an AMD-flavoured CPU with fpu tsc
    /// msr pae cx8 apic sep pge cmov pat clflush mmx fxsr sse sse2, cx16
    /// popcnt, syscall nx rdtscp lm, lahf_lm abm, an invariant TSC and
    /// TSC_ADJUST, FXSAVE that always saves the x87 error pointers.
    ///
    /// The identity is AMD family 0x10 model 0 stepping 2 (an early K10
    /// signature): Linux treats it plainly. AMD means no Meltdown and so no
    /// page-table isolation; family 0x10 is on Linux's speculative store
    /// bypass whitelist and outside its Retbleed, SRSO and Zen errata
    /// lists (family 0x17 picked the Zen1 FPDSS/DIV0 and SRSO paths), and
    /// model 0 stays below the E400 idle erratum (model 2 stepping 1 and
    /// up) and the HWCR "TSC counts at P0" check (model 2 and up).
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        // "AuthenticAMD" in EBX, EDX, ECX order.
        let vendor = *b"AuthenticAMD\0\0\0\0";
        let v = text(&vendor);
        let edx1 = (1 << 0)
            | (1 << 3)
            | (1 << 4)
            | (1 << 5)
            | (1 << 6)
            | (1 << 8)
            | (1 << 9)
            | (1 << 13)
            | (1 << 15)
            | (1 << 16)
            | (1 << 19)
            | (1 << 23)
            | (1 << 24)
            | (1 << 25)
            | (1 << 26);
        // CX16, POPCNT, TSC-deadline (bit 24: Linux then skips its 100 ms
        // calibration of the APIC timer against the PIT), hypervisor.
        let ecx1 = (1 << 13) | (1 << 23) | (1 << 24) | (1 << 31);
        // The AMD leaf mirrors bits 0-9 (fpu..apic), 12-17 (mtrr..pse36),
        // 23 (mmx) and 24 (fxsr) of leaf 1.
        let edx81 = (1 << 11) | (1 << 20) | (1 << 27) | (1 << 29) | (edx1 & 0x0183_f3ff);
        let ecx81 = 1 | (1 << 5);
        let b1 = text(b"vessel soft x86-");
        let b2 = text(b"64 engine\0\0\0\0\0\0\0");
        let b3 = [0u32; 4];
        Ok(vec![
            leaf(0, 7, v[0], v[2], v[1]),
            // Family 0x10 model 0 stepping 2; CLFLUSH line 8 (64 bytes).
            leaf(1, SIGNATURE, 8 << 8, ecx1, edx1),
            // Structured extended features: only TSC_ADJUST (EBX bit 1).
            // With an invariant TSC it lets Linux skip the clocksource
            // watchdog, which would otherwise judge the TSC against
            // jiffies that lag while a slow guest keeps interrupts off.
            CpuidEntry {
                significant_index: true,
                ..leaf(7, 0, 1 << 1, 0, 0)
            },
            leaf(0x8000_0000, 0x8000_0008, v[0], v[2], v[1]),
            leaf(0x8000_0001, SIGNATURE, 0, ecx81, edx81),
            leaf(0x8000_0002, b1[0], b1[1], b1[2], b1[3]),
            leaf(0x8000_0003, b2[0], b2[1], b2[2], b2[3]),
            leaf(0x8000_0004, b3[0], b3[1], b3[2], b3[3]),
            // Invariant TSC (EDX bit 8): the guest TSC is the host's,
            // constant-rate and never stopping, so Linux trusts it as
            // its clocksource and sched_clock.
            leaf(0x8000_0007, 0, 0, 0, 1 << 8),
            // 48-bit linear, 40-bit physical addresses; XSAVEERPTR (EBX
            // bit 2): FXSAVE saves the error pointers, so Linux skips the
            // old AMD FNCLEX/EMMS/FILD scrub before every FXRSTOR.
            leaf(0x8000_0008, 0x3028, 1 << 2, 0, 0),
        ])
    }

    fn create_vm(&self) -> Result<Box<dyn Vm>> {
        Ok(Box::new(SoftVm::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's x86-64 baseline needs MMX in both CPUID leaves.
    #[test]
    fn advertises_mmx() {
        let leaves = SoftHypervisor::new()
            .supported_cpuid()
            .expect("static table");
        for f in [1, 0x8000_0001] {
            let e = leaves.iter().find(|e| e.function == f).expect("leaf");
            assert_ne!(e.edx & (1 << 23), 0, "leaf {f:#x}");
        }
    }
}
