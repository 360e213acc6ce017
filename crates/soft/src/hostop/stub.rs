//! The host code of one instruction form: a `sysv64` function whose one
//! argument (RDI) points to a [`Ctx`]. It saves the host MXCSR, loads the
//! form's MXCSR (every exception masked), the MM, XMM/YMM and general
//! registers the instruction uses, runs the instruction (its memory
//! operand re-encoded as `[rdi]`, the start of [`Ctx::mem`]), stores RFLAGS
//! and the MXCSR it left, restores the host MXCSR, stores the registers
//! back, leaves MMX state (EMMS) and clears the YMM upper halves
//! (VZEROUPPER) before returning. It touches nothing but the context and
//! caller-saved registers. A second way out, the trap path, is where the
//! SIGFPE handler of [`super::call`] resumes a stub whose instruction
//! raised an unmasked exception.

// dynasm's expansion of dynamic registers converts u8 into u8.
#![allow(clippy::useless_conversion)]

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynasmApi, VecAssembler};
use std::mem::offset_of;

/// How many general registers a form can use: RAX, RCX and RDX (the
/// implicit operands of PCMPESTRI/PCMPISTRI, bound to the guest's own)
/// and R8-R10 (the explicit GPR operands, in order).
pub const GPR_SLOTS: usize = 6;

/// The host register number of each GPR slot.
const HOST_GPR: [u8; GPR_SLOTS] = [0, 1, 2, 8, 9, 10];

/// The state one stub works on. Vector registers hold the guest's YMM
/// registers (low half = XMM); `mem` stands for the memory operand.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Ctx {
    pub mem: [u8; 64],
    pub ymm: [[u128; 2]; 16],
    pub mm: [u64; 8],
    pub gpr: [u64; GPR_SLOTS],
    pub rflags: u64,
    /// The MXCSR the instruction runs under.
    pub mxcsr: u32,
    /// The MXCSR it left (its flags are the exceptions it raised).
    pub mxcsr_out: u32,
    /// The host's MXCSR while the stub runs.
    pub host_mxcsr: u32,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            mem: [0; 64],
            ymm: [[0; 2]; 16],
            mm: [0; 8],
            gpr: [0; GPR_SLOTS],
            rflags: 0,
            mxcsr: 0x1f80,
            mxcsr_out: 0,
            host_mxcsr: 0,
        }
    }
}

/// The registers a stub loads and stores: bit i of `vec` is XMM/YMMi,
/// of `mm` MMi, of `gpr` GPR slot i.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub vec: u16,
    pub mm: u8,
    pub gpr: u8,
}

fn bits(m: u32) -> impl Iterator<Item = u8> {
    (0..32u8).filter(move |i| m >> i & 1 != 0)
}

fn off(o: usize) -> i32 {
    // Every offset lies within `Ctx`, well below 2^31.
    o as i32
}

/// An assembled stub: its bytes, where the guest instruction lies in
/// them, and where the trap path starts.
pub struct Assembled {
    pub code: Vec<u8>,
    /// Byte range of the instruction within `code`.
    pub insn: (usize, usize),
    /// The trap path: a stub whose instruction raised an unmasked MXCSR
    /// exception resumes here (restores the host's MXCSR, leaves MMX and
    /// YMM state as the normal path does, stores nothing, returns).
    pub recover: usize,
}

/// The stub around `insn` (the re-encoded instruction), loading and
/// storing `r`; `wide` moves whole YMM registers (the host has AVX),
/// otherwise XMM registers. None if the assembler fails.
pub fn assemble(insn: &[u8], r: Regs, wide: bool) -> Option<Assembled> {
    let mut a = VecAssembler::<X64Relocation>::new(0);
    let (mem_mx, host_mx) = (
        off(offset_of!(Ctx, mxcsr)),
        off(offset_of!(Ctx, host_mxcsr)),
    );
    let out_mx = off(offset_of!(Ctx, mxcsr_out));
    let vec = |i: u8| off(offset_of!(Ctx, ymm) + 32 * usize::from(i));
    let mm = |i: u8| off(offset_of!(Ctx, mm) + 8 * usize::from(i));
    let gpr = |i: u8| off(offset_of!(Ctx, gpr) + 8 * usize::from(i));
    dynasm!(a
        ; .arch x64
        ; stmxcsr [rdi + host_mx]
        ; ldmxcsr [rdi + mem_mx]
    );
    for i in bits(r.mm.into()) {
        dynasm!(a ; movq Rm(i), QWORD [rdi + mm(i)]);
    }
    for i in bits(r.vec.into()) {
        if wide {
            dynasm!(a ; vmovdqu Ry(i), YWORD [rdi + vec(i)]);
        } else {
            dynasm!(a ; movdqu Rx(i), OWORD [rdi + vec(i)]);
        }
    }
    for i in bits(r.gpr.into()) {
        let h = HOST_GPR[usize::from(i)];
        dynasm!(a ; mov Rq(h), QWORD [rdi + gpr(i)]);
    }
    let start = a.offset().0;
    a.extend(insn.iter().copied());
    let end = a.offset().0;
    let fl = off(offset_of!(Ctx, rflags));
    dynasm!(a
        ; pushfq
        ; pop QWORD [rdi + fl]
        ; stmxcsr [rdi + out_mx]
        ; ldmxcsr [rdi + host_mx]
    );
    for i in bits(r.vec.into()) {
        if wide {
            dynasm!(a ; vmovdqu YWORD [rdi + vec(i)], Ry(i));
        } else {
            dynasm!(a ; movdqu OWORD [rdi + vec(i)], Rx(i));
        }
    }
    for i in bits(r.gpr.into()) {
        let h = HOST_GPR[usize::from(i)];
        dynasm!(a ; mov QWORD [rdi + gpr(i)], Rq(h));
    }
    for i in bits(r.mm.into()) {
        dynasm!(a ; movq QWORD [rdi + mm(i)], Rm(i));
    }
    leave(&mut a, r, wide);
    let recover = a.offset().0;
    dynasm!(a ; ldmxcsr [rdi + host_mx]);
    leave(&mut a, r, wide);
    Some(Assembled {
        code: a.finalize().ok()?,
        insn: (start, end),
        recover,
    })
}

/// EMMS after MMX use, VZEROUPPER after YMM use, return.
fn leave(a: &mut VecAssembler<X64Relocation>, r: Regs, wide: bool) {
    if r.mm != 0 {
        dynasm!(a ; .arch x64 ; emms);
    }
    if wide {
        dynasm!(a ; .arch x64 ; vzeroupper);
    }
    dynasm!(a ; .arch x64 ; ret);
}
