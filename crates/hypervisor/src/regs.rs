//! Engine-neutral x86-64 register state: what the boot code sets and what a
//! snapshot saves. Layouts follow the architecture, not any engine's ABI.

/// General-purpose registers, RIP and RFLAGS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register with its hidden descriptor cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    /// Descriptor type field (4 bits).
    pub type_: u8,
    pub present: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Default operation size (D/B).
    pub db: bool,
    /// S bit: code/data (true) or system (false).
    pub s: bool,
    /// 64-bit code segment (L).
    pub l: bool,
    /// Granularity: limit in 4 KiB units.
    pub g: bool,
    pub avl: bool,
    /// Unusable (a null selector loaded in protected mode).
    pub unusable: bool,
}

/// GDTR or IDTR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// Segment, control and system registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialRegs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
}

impl SpecialRegs {
    /// Switches to flat 32-bit protected mode without paging, as a small
    /// test guest or a 32-bit entry needs: CS a 4 GiB execute/read segment
    /// (selector 0x8), DS/ES/FS/GS/SS 4 GiB read/write (0x10), CR0.PE set.
    /// The hidden state is set directly; no GDT in memory is needed.
    pub fn set_flat_protected_mode(&mut self) {
        let data = Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x10,
            type_: 3,
            present: true,
            dpl: 0,
            db: true,
            s: true,
            l: false,
            g: true,
            avl: false,
            unusable: false,
        };
        self.cs = Segment {
            selector: 0x8,
            type_: 0xb,
            ..data
        };
        self.ds = data;
        self.es = data;
        self.fs = data;
        self.gs = data;
        self.ss = data;
        self.cr0 |= 1; // PE
    }

    /// Switches to flat 64-bit long mode at CPL0 with 4-level paging rooted
    /// at `cr3`: the segments of [`SpecialRegs::set_flat_protected_mode`]
    /// with a 64-bit CS, a busy 64-bit TSS and no LDT (hidden state only,
    /// no GDT in memory), CR0.PG/PE/MP/ET/NE, CR4.PAE/OSFXSR/OSXMMEXCPT,
    /// EFER.LME/LMA.
    pub fn set_flat_long_mode(&mut self, cr3: u64) {
        self.set_flat_protected_mode();
        self.cs.l = true;
        self.cs.db = false;
        self.tr = Segment {
            type_: 0xb,
            present: true,
            limit: 0x67,
            ..Default::default()
        };
        self.ldt = Segment {
            type_: 2,
            present: true,
            unusable: true,
            ..Default::default()
        };
        self.cr0 = 0x8000_0033;
        self.cr3 = cr3;
        self.cr4 = 0x620;
        self.efer = 0x500;
    }
}

/// x87/SSE state in the FXSAVE image's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpuState {
    /// x87 registers ST0-ST7, 80 bits each in the low 10 bytes.
    pub st: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word, as FXSAVE stores it.
    pub ftw: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
}

impl Default for FpuState {
    fn default() -> Self {
        // The state after FNINIT plus the reset value of MXCSR.
        FpuState {
            st: [[0; 16]; 8],
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            last_opcode: 0,
            last_ip: 0,
            last_dp: 0,
            xmm: [[0; 16]; 16],
            mxcsr: 0x1f80,
        }
    }
}

/// One CPUID leaf/subleaf and the values it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// True when `index` selects a subleaf (ECX matters).
    pub significant_index: bool,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}
