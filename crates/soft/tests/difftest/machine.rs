//! The machine image every snippet runs in (identical on both engines):
//! 4-level identity paging, a GDT with user segments and a TSS, an IDT
//! whose handlers push their vector and HLT, a user code page, a user
//! stack page and two user data pages. Snippets start at CPL3.

use hypervisor::{DescriptorTable, Regs, Segment, SpecialRegs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: usize = 4 << 20;
pub const GDT: u64 = 0x500;
pub const TSS: u64 = 0x600;
pub const IDT: u64 = 0x6000;
pub const STUBS: u64 = 0x7000;
pub const KSTACK_TOP: u64 = 0x9000;
pub const CODE: u64 = 0x10_0000;
pub const STACK: u64 = 0x20_0000;
pub const DATA: u64 = 0x20_1000;
pub const DATA_LEN: usize = 0x2000;
pub const USER_RSP: u64 = STACK + 0x800;
/// Where the prologue loads XMM0-15 from.
pub const XMM_INIT: u64 = STACK + 0xe00;
/// Where the prologue loads MM0-7 from.
pub const MM_INIT: u64 = STACK + 0xd80;
/// Where the prologue loads the x87 control word from.
pub const FCW_INIT: u64 = STACK + 0xd70;
/// Where the prologue loads MXCSR from.
pub const MXCSR_INIT: u64 = STACK + 0xd74;
/// Where the prologue loads the x87 stack from (8 m80 values).
pub const X87_INIT: u64 = STACK + 0xc00;
/// Where the prologue loads YMM0-15 from (when VEX forms are drawn).
pub const YMM_INIT: u64 = STACK + 0x900;
/// The FS and GS segment bases.
pub const FS_BASE: u64 = 0x1000;
pub const GS_BASE: u64 = 0u64.wrapping_sub(0x1000);
/// XCR0 in both machines: x87, SSE and AVX state enabled.
pub const XCR0: u64 = 7;

pub fn write_image(mem: &GuestMemoryMmap) {
    let w = |a: u64, v: u64| {
        mem.write_obj(v, GuestAddress(a))
            .expect("image fits in memory")
    };
    // Paging: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 (0-2M), PT 0x5000 (2-4M).
    w(0x1000, 0x2000 | 7);
    w(0x2000, 0x3000 | 7);
    w(0x3000, 0x4000 | 7);
    w(0x3008, 0x5000 | 7);
    for p in 0..10u64 {
        w(0x4000 + p * 8, (p << 12) | 3); // supervisor RW
    }
    w(0x4000 + 0x100 * 8, CODE | 5); // user, read-only code
    w(0x5000, STACK | 7);
    w(0x5008, DATA | 7);
    w(0x5010, (DATA + 0x1000) | 7);
    // GDT.
    let gdt = [
        0u64,
        0x00af_9b00_0000_ffff, // 0x08 kernel code 64
        0x00cf_9300_0000_ffff, // 0x10 kernel data
        0x00cf_f300_0000_ffff, // 0x18 user data
        0x00af_fb00_0000_ffff, // 0x20 user code 64
    ];
    for (i, d) in gdt.iter().enumerate() {
        w(GDT + 8 * i as u64, *d);
    }
    let tss_desc = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x8b << 40) | ((TSS >> 24) << 56);
    w(GDT + 0x28, tss_desc);
    w(GDT + 0x30, 0);
    // TSS: RSP0.
    w(TSS + 4, KSTACK_TOP);
    // IDT: 32 interrupt gates to the stubs.
    for v in 0..32u64 {
        let off = STUBS + 4 * v;
        let lo = (off & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((off >> 16) << 48);
        w(IDT + 16 * v, lo);
        w(IDT + 16 * v + 8, 0);
        // push imm8 v; hlt; nop
        mem.write_slice(&[0x6a, v as u8, 0xf4, 0x90], GuestAddress(off))
            .expect("stub fits");
    }
}

fn seg(selector: u16, code: bool, dpl: u8) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: true,
        dpl,
        db: !code,
        s: true,
        l: code,
        g: true,
        avl: false,
        unusable: false,
    }
}

/// The CPL3 long-mode state snippets start in.
pub fn user_sregs() -> SpecialRegs {
    let data = seg(0x1b, false, 3);
    SpecialRegs {
        cs: seg(0x23, true, 3),
        ds: data,
        es: data,
        // Non-zero FS and GS bases, so an override that is wrongly ignored
        // (or wrongly applied) shows: FS one page up, GS one page down.
        fs: Segment {
            base: FS_BASE,
            ..data
        },
        gs: Segment {
            base: GS_BASE,
            ..data
        },
        ss: data,
        tr: Segment {
            base: TSS,
            limit: 0x67,
            selector: 0x28,
            type_: 0xb,
            present: true,
            ..Default::default()
        },
        ldt: Segment {
            type_: 2,
            present: true,
            unusable: true,
            ..Default::default()
        },
        gdt: DescriptorTable {
            base: GDT,
            limit: 0x37,
        },
        idt: DescriptorTable {
            base: IDT,
            limit: 32 * 16 - 1,
        },
        cr0: 0x8001_0033,
        cr2: 0,
        cr3: 0x1000,
        // PAE, OSFXSR, OSXMMEXCPT, FSGSBASE (RD/WR FS/GS BASE at CPL3),
        // OSXSAVE (XCR0 = `XCR0`).
        cr4: 0x5_0620,
        cr8: 0,
        efer: 0xd01,
        apic_base: 0xfee0_0900,
    }
}

/// One test case: code bytes, start registers, data contents, XMM values.
#[derive(Debug, Clone)]
pub struct Snippet {
    pub code: Vec<u8>,
    pub text: Vec<String>,
    /// The forms of `text`, in order.
    pub codes: Vec<iced_x86::Code>,
    pub regs: Regs,
    pub data: Vec<u8>,
    pub stack: Vec<u8>,
    pub xmm: [[u8; 16]; 16],
    /// RFLAGS bits whose final value is undefined.
    pub undefined_flags: u64,
    /// The offset in `code` of an instruction the CPU refuses with #UD
    /// but this host's KVM emulates: the reference runs UD2 there.
    pub cpu_ud_at: Option<usize>,
}

/// What a snippet left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub gpr: [u64; 16],
    pub vector: u64,
    pub error: Option<u64>,
    pub rip: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub cr2: Option<u64>,
    pub data: Vec<u8>,
    pub stack: Vec<u8>,
    pub xmm: Vec<[u8; 16]>,
    /// The 80-bit x87 registers (MM0-7 in their low 64 bits), ST order.
    pub st: Vec<[u8; 10]>,
    /// The abridged x87 tag word.
    pub ftw: u8,
    pub fsw: u16,
    pub fcw: u16,
    pub mxcsr: u32,
    /// FOP, FIP, FDP unless `DIFFTEST_X87_POINTERS=0`.
    pub x87_pointers: Option<(u16, u64, u64)>,
    /// Bits 128-255 of YMM0-15.
    pub ymm_hi: Vec<[u8; 16]>,
    /// XSTATE_BV of the XSAVE image unless `DIFFTEST_XSTATE_BV=0`.
    pub xstate_bv: Option<u64>,
}

/// The x87/SSE/AVX state a snippet left, read from a standard-format
/// XSAVE image (both engines give one), each component at its initial
/// configuration where XSTATE_BV says so.
pub struct FpuOut {
    pub xmm: [[u8; 16]; 16],
    pub ymm_hi: [[u8; 16]; 16],
    pub st: [[u8; 16]; 8],
    pub ftw: u8,
    pub fsw: u16,
    pub fcw: u16,
    pub mxcsr: u32,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub xstate_bv: u64,
}

impl FpuOut {
    pub fn from_xsave(area: &[u8]) -> FpuOut {
        let b = |o: usize, n: usize| -> u64 {
            area.get(o..o + n).map_or(0, |v| {
                v.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x))
            })
        };
        let reg = |o: usize| -> [u8; 16] {
            area.get(o..o + 16)
                .and_then(|v| v.try_into().ok())
                .unwrap_or([0; 16])
        };
        let bv = b(512, 8);
        let x87 = bv & 1 != 0;
        let sse = bv & 2 != 0;
        let avx = bv & 4 != 0;
        let pick = |on: bool, v: u64, init: u64| if on { v } else { init };
        FpuOut {
            xmm: std::array::from_fn(|i| if sse { reg(160 + 16 * i) } else { [0; 16] }),
            ymm_hi: std::array::from_fn(|i| if avx { reg(576 + 16 * i) } else { [0; 16] }),
            st: std::array::from_fn(|i| if x87 { reg(32 + 16 * i) } else { [0; 16] }),
            fcw: pick(x87, b(0, 2), 0x37f) as u16,
            fsw: pick(x87, b(2, 2), 0) as u16,
            ftw: pick(x87, b(4, 1), 0) as u8,
            fop: pick(x87, b(6, 2), 0) as u16,
            fip: pick(x87, b(8, 8), 0),
            fdp: pick(x87, b(16, 8), 0),
            mxcsr: b(24, 4) as u32,
            xstate_bv: bv,
        }
    }
}

fn has_error(v: u64) -> bool {
    matches!(v, 8 | 10..=14 | 17)
}

/// Reads the outcome after the handler's HLT.
pub fn outcome(
    mem: &GuestMemoryMmap,
    regs: &Regs,
    cr2: u64,
    fpu: &FpuOut,
    undefined: u64,
) -> Outcome {
    let q = |a: u64| -> u64 { mem.read_obj(GuestAddress(a)).unwrap_or(u64::MAX) };
    let sp = regs.rsp;
    let vector = q(sp);
    let (error, f) = if has_error(vector) {
        (Some(q(sp + 8)), sp + 16)
    } else {
        (None, sp + 8)
    };
    let mut data = vec![0u8; DATA_LEN];
    let mut stack = vec![0u8; 0x1000];
    let _ = mem.read_slice(&mut data, GuestAddress(DATA));
    let _ = mem.read_slice(&mut stack, GuestAddress(STACK));
    let g = [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, 0, regs.rbp, regs.rsi, regs.rdi, regs.r8, regs.r9,
        regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ];
    Outcome {
        gpr: g,
        vector,
        error,
        rip: q(f),
        rflags: q(f + 16) & !undefined,
        rsp: q(f + 24),
        cr2: (vector == 14).then_some(cr2),
        data,
        stack,
        xmm: fpu.xmm.to_vec(),
        // Only registers tagged valid: where an empty register's bytes sit
        // in the saved image is the host's business (after EMMS with TOP
        // not 0 this host's image is rotated from the FXSAVE order), and
        // no x87 instruction reads them.
        st: fpu
            .st
            .iter()
            .enumerate()
            .map(|(j, r)| {
                let phys = (usize::from((fpu.fsw >> 11) & 7) + j) % 8;
                let mut v = [0u8; 10];
                if fpu.ftw >> phys & 1 != 0 {
                    v.copy_from_slice(&r[..10]);
                }
                v
            })
            .collect(),
        ftw: fpu.ftw,
        fsw: fpu.fsw,
        fcw: fpu.fcw,
        mxcsr: fpu.mxcsr,
        x87_pointers: super::knobs::get()
            .x87_pointers
            .then_some((fpu.fop, fpu.fip, fpu.fdp)),
        ymm_hi: fpu.ymm_hi.to_vec(),
        xstate_bv: super::knobs::get().xstate_bv.then_some(fpu.xstate_bv),
    }
}
