//! The snippet prologue: the FPU/SIMD state a snippet starts from, loaded
//! by instructions from the stack page (KVM's SET_FPU does not reach the
//! registers on this host, so both engines get it the same way): XMM0-15
//! (special and boundary lanes; YMM0-15 whole when VEX forms are drawn),
//! FNINIT, MM0-7, then either the MMX state
//! or EMMS and 0-8 x87 values of every class (FLD m80), a random x87
//! control word (FLDCW) and a random MXCSR (LDMXCSR).

use iced_x86::{Code, Instruction, MemoryOperand, Register as R};

use super::fpvalues;
use super::gen::{encode, Rng};
use super::machine::*;
use super::operands::{MMS, XMMS, YMMS};

/// Code being assembled at a guest address.
pub struct Asm {
    pub code: Vec<u8>,
    pub rip: u64,
}

impl Asm {
    pub fn raw(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
        self.rip += bytes.len() as u64;
    }

    /// `code` with a register and an absolute memory operand (or only the
    /// memory operand when `reg` is None).
    fn mem_op(&mut self, code: Code, reg: Option<R>, addr: u64) {
        let m = MemoryOperand::with_base_displ(R::None, addr as i64);
        let ins = match reg {
            Some(r) => Instruction::with2(code, r, m),
            None => Instruction::with1(code, m),
        }
        .expect("valid prologue form");
        let (b, _) = encode(&ins, self.rip).expect("encodable prologue form");
        self.raw(&b);
    }
}

/// Writes `bytes` at guest address `addr` of the stack page image.
fn put(stack: &mut [u8], addr: u64, bytes: &[u8]) {
    let o = (addr - STACK) as usize;
    stack[o..o + bytes.len()].copy_from_slice(bytes);
}

/// Emits the prologue at `CODE`, writing the values it loads into the
/// stack page image; returns the code so far and the XMM values.
pub fn emit(rng: &mut Rng, stack: &mut [u8]) -> (Asm, [[u8; 16]; 16]) {
    let mut a = Asm {
        code: Vec::new(),
        rip: CODE,
    };
    let mut xmm = [[0u8; 16]; 16];
    for (i, x) in xmm.iter_mut().enumerate() {
        *x = fpvalues::xmm(rng);
        let at = XMM_INIT + 16 * i as u64;
        put(stack, at, x);
        a.mem_op(Code::Movdqu_xmm_xmmm128, Some(XMMS[i]), at);
    }
    // With VEX forms drawn, YMM0-15 whole (a legacy load keeps bits
    // 128-255, which would carry over from the last snippet).
    if super::knobs::get().vex {
        for (i, x) in xmm.iter().enumerate() {
            let at = YMM_INIT + 32 * i as u64;
            put(stack, at, x);
            put(stack, at + 16, &fpvalues::xmm(rng));
            a.mem_op(Code::VEX_Vmovdqu_ymm_ymmm256, Some(YMMS[i]), at);
        }
    }
    a.raw(&[0xdb, 0xe3]); // FNINIT
    for (i, &r) in MMS.iter().enumerate() {
        let at = MM_INIT + 8 * i as u64;
        put(stack, at, &rng.value().to_le_bytes());
        a.mem_op(Code::Movq_mm_mmm64, Some(r), at);
    }
    // In two cases in three the x87 stack instead: EMMS empties the tags,
    // then 0-8 values are pushed.
    let fixed = super::knobs::get().fixed_fp;
    if rng.below(3) != 0 {
        a.raw(&[0x0f, 0x77]);
        if fixed {
            return finish(a, xmm, stack, 0x37f, 0x1f80);
        }
        for i in 0..rng.below(9) {
            let at = X87_INIT + 10 * i;
            put(stack, at, &fpvalues::x87(rng));
            a.mem_op(Code::Fld_m80fp, None, at);
        }
    }
    if fixed {
        return finish(a, xmm, stack, 0x37f, 0x1f80);
    }
    let (fcw, mxcsr) = (fpvalues::fcw(rng), fpvalues::mxcsr(rng));
    finish(a, xmm, stack, fcw, mxcsr)
}

/// Loads the x87 control word and MXCSR last.
fn finish(
    mut a: Asm,
    xmm: [[u8; 16]; 16],
    stack: &mut [u8],
    fcw: u16,
    mxcsr: u32,
) -> (Asm, [[u8; 16]; 16]) {
    put(stack, FCW_INIT, &fcw.to_le_bytes());
    a.mem_op(Code::Fldcw_m2byte, None, FCW_INIT);
    put(stack, MXCSR_INIT, &mxcsr.to_le_bytes());
    a.mem_op(Code::Ldmxcsr_m32, None, MXCSR_INIT);
    (a, xmm)
}
