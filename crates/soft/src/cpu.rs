//! Architectural state of one x86-64 CPU: general registers, RIP, RFLAGS,
//! segment registers with their descriptor caches, control registers, the
//! MSRs the engine models and the x87/SSE register file.

use crate::flags::Flags;
use hypervisor::{DescriptorTable, Segment};

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_MP: u64 = 1 << 1;
pub const CR0_EM: u64 = 1 << 2;
pub const CR0_TS: u64 = 1 << 3;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_OSFXSR: u64 = 1 << 9;
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
pub const CR4_OSXSAVE: u64 = 1 << 18;
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

/// Segment register numbers, in iced-x86's order.
pub const ES: usize = 0;
pub const CS: usize = 1;
pub const SS: usize = 2;
pub const DS: usize = 3;
pub const FS: usize = 4;
pub const GS: usize = 5;

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// MSR numbers the engine models.
pub mod msr {
    pub const TSC: u32 = 0x10;
    pub const TSC_ADJUST: u32 = 0x3b;
    pub const APIC_BASE: u32 = 0x1b;
    pub const MTRRCAP: u32 = 0xfe;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const TSC_DEADLINE: u32 = 0x6e0;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
    /// AMD microcode patch level (read-only, 0 here).
    pub const PATCH_LEVEL: u32 = 0x8b;
    /// AMD hardware configuration; bit 24: the TSC counts at the P0 rate.
    pub const HWCR: u32 = 0xc001_0015;
    /// AMD northbridge configuration (Linux sets extended config space
    /// access, bit 46, through it).
    pub const NB_CFG: u32 = 0xc001_001f;
}

/// DR6's value with no debug condition recorded (reserved bits set).
pub const DR6_INIT: u64 = 0xffff_0ff0;
/// DR6.BS: the last #DB was a single-step trap.
pub const DR6_BS: u64 = 1 << 14;

/// x87 and SSE registers, kept in FXSAVE terms.
#[derive(Debug, Clone, Copy)]
pub struct Fpu {
    pub st: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftw: u8,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub xmm: [u128; 16],
    /// Bits 128-255 of YMM0-15 (the XSAVE AVX component).
    pub ymm_hi: [u128; 16],
    pub mxcsr: u32,
    /// XCR0: the state components XSETBV enabled (x87 always).
    pub xcr0: u64,
    /// XINUSE: the XSAVE components not in their initial configuration
    /// as the CPU tracks it (set by writes, cleared by XRSTOR of an init
    /// component and VZEROUPPER/VZEROALL; `exec/xsave.rs`).
    pub xinuse: u8,
    /// The components written since the last XRSTOR (XSAVEOPT's modified
    /// optimization).
    pub xmodified: u8,
    /// The linear address of the last standard-form XRSTOR, or `u64::MAX`.
    pub xrstor_at: u64,
}

impl Default for Fpu {
    fn default() -> Self {
        Fpu {
            st: [[0; 16]; 8],
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            xmm: [0; 16],
            ymm_hi: [0; 16],
            mxcsr: 0x1f80,
            xcr0: 1,
            xinuse: 0,
            xmodified: 0,
            xrstor_at: u64::MAX,
        }
    }
}

/// The modelled MSRs other than EFER and the segment bases.
#[derive(Debug, Clone, Copy, Default)]
pub struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub pat: u64,
    pub misc_enable: u64,
    pub tsc_aux: u64,
    pub mtrr_def_type: u64,
    pub hwcr: u64,
    pub tsc_adjust: u64,
    pub nb_cfg: u64,
    /// Added to the host TSC to give the guest TSC.
    pub tsc_offset: u64,
}

/// One CPU's architectural state.
#[derive(Debug, Clone)]
pub struct Cpu {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub flags: Flags,
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: DescriptorTable,
    pub idtr: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub msr: Msrs,
    pub fpu: Fpu,
    /// Interrupts are inhibited for one instruction (after STI, MOV SS).
    pub int_shadow: bool,
    /// DR6, the debug status: the engine sets BS on a single-step trap.
    pub dr6: u64,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::reset()
    }
}

fn real_seg(selector: u16, base: u64, code: bool) -> Segment {
    Segment {
        base,
        limit: 0xffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: true,
        dpl: 0,
        db: false,
        s: true,
        l: false,
        g: false,
        avl: false,
        unusable: false,
    }
}

impl Cpu {
    /// The state after RESET/INIT (real mode at F000:FFF0).
    pub fn reset() -> Self {
        let data = real_seg(0, 0, false);
        let mut seg = [data; 6];
        seg[CS] = real_seg(0xf000, 0xffff_0000, true);
        Cpu {
            gpr: [0; 16],
            rip: 0xfff0,
            flags: Flags::default(),
            seg,
            ldtr: Segment {
                type_: 2,
                present: true,
                limit: 0xffff,
                ..Default::default()
            },
            tr: Segment {
                type_: 0xb,
                present: true,
                limit: 0xffff,
                ..Default::default()
            },
            gdtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: CR0_ET | (1 << 30) | (1 << 29),
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            apic_base: 0xfee0_0000 | (1 << 11),
            msr: Msrs {
                pat: 0x0007_0406_0007_0406,
                misc_enable: 1,
                hwcr: 1 << 24,
                ..Default::default()
            },
            fpu: Fpu::default(),
            int_shadow: false,
            dr6: DR6_INIT,
        }
    }

    #[inline]
    pub fn protected(&self) -> bool {
        self.cr0 & CR0_PE != 0
    }

    #[inline]
    pub fn long_active(&self) -> bool {
        self.efer & EFER_LMA != 0
    }

    /// 64-bit mode (long mode with a 64-bit code segment).
    #[inline]
    pub fn mode64(&self) -> bool {
        self.long_active() && self.seg[CS].l
    }

    /// The default operand/address size of the code segment, in bits.
    #[inline]
    pub fn bitness(&self) -> u32 {
        if self.mode64() {
            64
        } else if self.protected() && self.seg[CS].db {
            32
        } else {
            16
        }
    }

    /// Current privilege level.
    #[inline]
    pub fn cpl(&self) -> u8 {
        if !self.protected() {
            0
        } else {
            self.seg[CS].selector as u8 & 3
        }
    }

    /// The width of the stack pointer in bits.
    #[inline]
    pub fn stack_size(&self) -> u32 {
        if self.mode64() {
            64
        } else if self.protected() && self.seg[SS].db {
            32
        } else {
            16
        }
    }

    /// Reads the 8-bit register with iced-x86 number `n` (AH-BH are 4-7
    /// without REX).
    #[inline]
    pub fn get8(&self, n: usize) -> u64 {
        if (4..8).contains(&n) {
            (self.gpr[n - 4] >> 8) & 0xff
        } else if n >= 8 {
            self.gpr[(n - 4) & 15] & 0xff
        } else {
            self.gpr[n] & 0xff
        }
    }

    #[inline]
    pub fn set8(&mut self, n: usize, v: u64) {
        if (4..8).contains(&n) {
            let r = &mut self.gpr[n - 4];
            *r = (*r & !0xff00) | ((v & 0xff) << 8);
        } else {
            let i = if n >= 8 { (n - 4) & 15 } else { n };
            let r = &mut self.gpr[i];
            *r = (*r & !0xff) | (v & 0xff);
        }
    }

    /// Writes general register `n` with operand size `size` (bits):
    /// 32-bit writes zero-extend, 16-bit writes merge.
    #[inline]
    pub fn set_gpr(&mut self, n: usize, size: u32, v: u64) {
        let r = &mut self.gpr[n & 15];
        match size {
            64 => *r = v,
            32 => *r = v & 0xffff_ffff,
            16 => *r = (*r & !0xffff) | (v & 0xffff),
            _ => *r = (*r & !0xff) | (v & 0xff),
        }
    }

    /// Sets a segment register in real mode (base = selector * 16).
    pub fn load_real_seg(&mut self, s: usize, selector: u16) {
        let protected = self.protected();
        let r = &mut self.seg[s];
        r.selector = selector;
        r.base = u64::from(selector) << 4;
        if !protected {
            r.present = true;
            r.unusable = false;
            r.s = true;
            // Real mode keeps the descriptor cache's limit and attributes.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_registers_alias_correctly() {
        let mut c = Cpu::reset();
        c.gpr[RAX] = 0x1122_3344;
        assert_eq!(c.get8(4), 0x33); // AH
        c.set8(4, 0xaa);
        assert_eq!(c.gpr[RAX], 0x1122_aa44);
        c.set8(8, 0x55); // SPL
        assert_eq!(c.gpr[RSP] & 0xff, 0x55);
        c.set8(19, 0x66); // R15L
        assert_eq!(c.gpr[15], 0x66);
    }

    #[test]
    fn sized_writes_zero_extend_or_merge() {
        let mut c = Cpu::reset();
        c.gpr[1] = u64::MAX;
        c.set_gpr(1, 32, 5);
        assert_eq!(c.gpr[1], 5);
        c.gpr[2] = u64::MAX;
        c.set_gpr(2, 16, 0);
        assert_eq!(c.gpr[2], 0xffff_ffff_ffff_0000);
    }

    #[test]
    fn reset_is_real_mode() {
        let c = Cpu::reset();
        assert_eq!(c.bitness(), 16);
        assert_eq!(c.cpl(), 0);
        assert_eq!(c.seg[CS].base + c.rip, 0xffff_fff0);
    }
}
