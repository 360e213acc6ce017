//! Snippet generation from a table of instruction forms (iced-x86 codes),
//! with operands drawn by each form's operand kinds from a seeded PRNG.
//! Flags an instruction leaves undefined are tracked so no later
//! instruction reads them and the comparison masks them.

use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, Instruction, MemoryOperand, OpCodeOperandKind as K,
    Register as R, RepPrefixKind,
};

use super::machine::*;

/// xorshift64* — deterministic, seedable, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A value biased toward edge cases.
    pub fn value(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => 1 << self.below(64),
            4 => (1u64 << self.below(64)).wrapping_sub(1),
            5 => self.below(256),
            6 => 0x8000_0000_0000_0000 | self.below(256),
            _ => self.next(),
        }
    }
}

/// The instruction forms covered (strings and a few special forms are
/// added by `special`).
pub const FORMS: &[Code] = &[
    // Integer ALU, all sizes, register/memory/immediate.
    Code::Add_rm8_r8,
    Code::Add_rm16_r16,
    Code::Add_rm32_r32,
    Code::Add_rm64_r64,
    Code::Add_r64_rm64,
    Code::Add_rm32_imm8,
    Code::Add_rm64_imm32,
    Code::Add_AL_imm8,
    Code::Or_rm8_r8,
    Code::Or_rm32_r32,
    Code::Or_r64_rm64,
    Code::Or_rm16_imm16,
    Code::Or_rm64_imm8,
    Code::Adc_rm8_r8,
    Code::Adc_rm32_r32,
    Code::Adc_rm64_r64,
    Code::Adc_rm16_imm8,
    Code::Adc_RAX_imm32,
    Code::Sbb_rm8_r8,
    Code::Sbb_rm32_r32,
    Code::Sbb_r64_rm64,
    Code::Sbb_rm64_imm8,
    Code::And_rm8_r8,
    Code::And_rm32_r32,
    Code::And_rm64_r64,
    Code::And_rm64_imm32,
    Code::And_EAX_imm32,
    Code::Sub_rm8_r8,
    Code::Sub_rm16_r16,
    Code::Sub_rm32_r32,
    Code::Sub_rm64_r64,
    Code::Sub_r32_rm32,
    Code::Sub_rm32_imm32,
    Code::Xor_rm8_r8,
    Code::Xor_rm32_r32,
    Code::Xor_rm64_r64,
    Code::Xor_rm8_imm8,
    Code::Cmp_rm8_r8,
    Code::Cmp_rm16_r16,
    Code::Cmp_rm32_r32,
    Code::Cmp_rm64_r64,
    Code::Cmp_r64_rm64,
    Code::Cmp_rm64_imm8,
    Code::Cmp_rm32_imm32,
    Code::Test_rm8_r8,
    Code::Test_rm32_r32,
    Code::Test_rm64_r64,
    Code::Test_rm64_imm32,
    Code::Inc_rm8,
    Code::Inc_rm16,
    Code::Inc_rm32,
    Code::Inc_rm64,
    Code::Dec_rm8,
    Code::Dec_rm32,
    Code::Dec_rm64,
    Code::Neg_rm8,
    Code::Neg_rm16,
    Code::Neg_rm32,
    Code::Neg_rm64,
    Code::Not_rm8,
    Code::Not_rm32,
    Code::Not_rm64,
    // Moves and extensions.
    Code::Mov_rm8_r8,
    Code::Mov_rm16_r16,
    Code::Mov_rm32_r32,
    Code::Mov_rm64_r64,
    Code::Mov_r64_rm64,
    Code::Mov_r32_rm32,
    Code::Mov_r64_imm64,
    Code::Mov_rm64_imm32,
    Code::Mov_r8_imm8,
    Code::Movzx_r32_rm8,
    Code::Movzx_r64_rm16,
    Code::Movzx_r16_rm8,
    Code::Movsx_r32_rm8,
    Code::Movsx_r64_rm16,
    Code::Movsxd_r64_rm32,
    Code::Lea_r64_m,
    Code::Lea_r32_m,
    Code::Xchg_rm8_r8,
    Code::Xchg_rm32_r32,
    Code::Xchg_rm64_r64,
    Code::Xadd_rm8_r8,
    Code::Xadd_rm32_r32,
    Code::Xadd_rm64_r64,
    Code::Cmpxchg_rm8_r8,
    Code::Cmpxchg_rm32_r32,
    Code::Cmpxchg_rm64_r64,
    Code::Cmpxchg16b_m128,
    Code::Cbw,
    Code::Cwde,
    Code::Cdqe,
    Code::Cwd,
    Code::Cdq,
    Code::Cqo,
    Code::Bswap_r32,
    Code::Bswap_r64,
    // Shifts and rotates.
    Code::Shl_rm8_1,
    Code::Shl_rm32_CL,
    Code::Shl_rm64_imm8,
    Code::Shl_rm16_imm8,
    Code::Shr_rm8_CL,
    Code::Shr_rm32_1,
    Code::Shr_rm64_imm8,
    Code::Shr_rm64_CL,
    Code::Sar_rm8_imm8,
    Code::Sar_rm32_CL,
    Code::Sar_rm64_1,
    Code::Sar_rm16_CL,
    Code::Rol_rm8_CL,
    Code::Rol_rm32_imm8,
    Code::Rol_rm64_1,
    Code::Ror_rm16_imm8,
    Code::Ror_rm32_CL,
    Code::Ror_rm64_imm8,
    Code::Rcl_rm8_1,
    Code::Rcl_rm32_CL,
    Code::Rcl_rm64_imm8,
    Code::Rcr_rm16_CL,
    Code::Rcr_rm32_1,
    Code::Rcr_rm64_CL,
    Code::Shld_rm32_r32_imm8,
    Code::Shld_rm64_r64_CL,
    Code::Shrd_rm32_r32_CL,
    Code::Shrd_rm64_r64_imm8,
    // Multiply and divide.
    Code::Mul_rm8,
    Code::Mul_rm16,
    Code::Mul_rm32,
    Code::Mul_rm64,
    Code::Imul_rm8,
    Code::Imul_rm32,
    Code::Imul_rm64,
    Code::Imul_r32_rm32,
    Code::Imul_r64_rm64,
    Code::Imul_r16_rm16_imm16,
    Code::Imul_r64_rm64_imm8,
    Code::Imul_r32_rm32_imm32,
    Code::Div_rm8,
    Code::Div_rm16,
    Code::Div_rm32,
    Code::Div_rm64,
    Code::Idiv_rm8,
    Code::Idiv_rm16,
    Code::Idiv_rm32,
    Code::Idiv_rm64,
    // Bit operations.
    Code::Bt_rm32_r32,
    Code::Bt_rm64_imm8,
    Code::Bts_rm64_r64,
    Code::Bts_rm32_imm8,
    Code::Btr_rm32_r32,
    Code::Btr_rm64_imm8,
    Code::Btc_rm64_r64,
    Code::Btc_rm16_imm8,
    Code::Bsf_r32_rm32,
    Code::Bsf_r64_rm64,
    Code::Bsr_r32_rm32,
    Code::Bsr_r64_rm64,
    Code::Popcnt_r64_rm64,
    Code::Popcnt_r32_rm32,
    Code::Lzcnt_r64_rm64,
    Code::Lzcnt_r32_rm32,
    // Conditional moves and sets.
    Code::Cmovo_r64_rm64,
    Code::Cmovb_r32_rm32,
    Code::Cmove_r64_rm64,
    Code::Cmovne_r32_rm32,
    Code::Cmovbe_r64_rm64,
    Code::Cmovs_r64_rm64,
    Code::Cmovp_r32_rm32,
    Code::Cmovl_r64_rm64,
    Code::Cmovle_r32_rm32,
    Code::Cmovg_r64_rm64,
    Code::Cmova_r16_rm16,
    Code::Seto_rm8,
    Code::Setb_rm8,
    Code::Sete_rm8,
    Code::Setbe_rm8,
    Code::Sets_rm8,
    Code::Setp_rm8,
    Code::Setl_rm8,
    Code::Setle_rm8,
    Code::Setg_rm8,
    Code::Setae_rm8,
    // Flags.
    Code::Clc,
    Code::Stc,
    Code::Cmc,
    Code::Lahf,
    Code::Sahf,
    // Stack.
    Code::Push_r64,
    Code::Pop_r64,
    Code::Pushq_imm32,
    Code::Pushq_imm8,
    Code::Push_rm64,
    Code::Pop_rm64,
    Code::Pushfq,
    // SSE/SSE2.
    Code::Movaps_xmm_xmmm128,
    Code::Movups_xmm_xmmm128,
    Code::Movups_xmmm128_xmm,
    Code::Movdqa_xmm_xmmm128,
    Code::Movdqu_xmm_xmmm128,
    Code::Movdqu_xmmm128_xmm,
    Code::Movd_xmm_rm32,
    Code::Movq_xmm_rm64,
    Code::Movd_rm32_xmm,
    Code::Movq_rm64_xmm,
    Code::Movq_xmm_xmmm64,
    Code::Movss_xmm_xmmm32,
    Code::Movsd_xmm_xmmm64,
    Code::Movsd_xmmm64_xmm,
    Code::Pxor_xmm_xmmm128,
    Code::Por_xmm_xmmm128,
    Code::Pand_xmm_xmmm128,
    Code::Pandn_xmm_xmmm128,
    Code::Xorps_xmm_xmmm128,
    Code::Andps_xmm_xmmm128,
    Code::Paddb_xmm_xmmm128,
    Code::Paddw_xmm_xmmm128,
    Code::Paddd_xmm_xmmm128,
    Code::Paddq_xmm_xmmm128,
    Code::Psubb_xmm_xmmm128,
    Code::Psubd_xmm_xmmm128,
    Code::Psubq_xmm_xmmm128,
    Code::Pcmpeqb_xmm_xmmm128,
    Code::Pcmpeqd_xmm_xmmm128,
    Code::Pminub_xmm_xmmm128,
    Code::Pmaxub_xmm_xmmm128,
    Code::Pmovmskb_r32_xmm,
    Code::Pshufd_xmm_xmmm128_imm8,
    // SSE2 forms C libraries use (exec/sse2.rs).
    Code::Pcmpgtb_xmm_xmmm128,
    Code::Pcmpgtw_xmm_xmmm128,
    Code::Pcmpgtd_xmm_xmmm128,
    Code::Pminsw_xmm_xmmm128,
    Code::Pmaxsw_xmm_xmmm128,
    Code::Pavgb_xmm_xmmm128,
    Code::Pavgw_xmm_xmmm128,
    Code::Paddsb_xmm_xmmm128,
    Code::Paddsw_xmm_xmmm128,
    Code::Paddusb_xmm_xmmm128,
    Code::Paddusw_xmm_xmmm128,
    Code::Psubsb_xmm_xmmm128,
    Code::Psubsw_xmm_xmmm128,
    Code::Psubusb_xmm_xmmm128,
    Code::Psubusw_xmm_xmmm128,
    Code::Pmullw_xmm_xmmm128,
    Code::Pmulhw_xmm_xmmm128,
    Code::Pmulhuw_xmm_xmmm128,
    Code::Pmuludq_xmm_xmmm128,
    Code::Pmaddwd_xmm_xmmm128,
    Code::Psadbw_xmm_xmmm128,
    Code::Psllw_xmm_imm8,
    Code::Pslld_xmm_imm8,
    Code::Psllq_xmm_imm8,
    Code::Psrlw_xmm_imm8,
    Code::Psrld_xmm_imm8,
    Code::Psrlq_xmm_imm8,
    Code::Psraw_xmm_imm8,
    Code::Psrad_xmm_imm8,
    Code::Psllw_xmm_xmmm128,
    Code::Psrld_xmm_xmmm128,
    Code::Psrad_xmm_xmmm128,
    Code::Psllq_xmm_xmmm128,
    Code::Packsswb_xmm_xmmm128,
    Code::Packssdw_xmm_xmmm128,
    Code::Packuswb_xmm_xmmm128,
    Code::Pshuflw_xmm_xmmm128_imm8,
    Code::Pshufhw_xmm_xmmm128_imm8,
    Code::Shufps_xmm_xmmm128_imm8,
    Code::Shufpd_xmm_xmmm128_imm8,
    Code::Unpcklps_xmm_xmmm128,
    Code::Unpckhps_xmm_xmmm128,
    Code::Unpcklpd_xmm_xmmm128,
    Code::Unpckhpd_xmm_xmmm128,
    Code::Movhlps_xmm_xmm,
    Code::Movlhps_xmm_xmm,
    Code::Movmskps_r32_xmm,
    Code::Movmskpd_r32_xmm,
    Code::Pextrw_r32_xmm_imm8,
    Code::Pinsrw_xmm_r32m16_imm8,
    Code::Cmpps_xmm_xmmm128_imm8,
    Code::Cmppd_xmm_xmmm128_imm8,
    Code::Cmpss_xmm_xmmm32_imm8,
    Code::Cmpsd_xmm_xmmm64_imm8,
    Code::Cvtdq2pd_xmm_xmmm64,
    Code::Cvtdq2ps_xmm_xmmm128,
    Code::Cvtps2pd_xmm_xmmm64,
    Code::Cvtpd2ps_xmm_xmmm128,
    Code::Cvttps2dq_xmm_xmmm128,
    Code::Cvtps2dq_xmm_xmmm128,
    Code::Cvttpd2dq_xmm_xmmm128,
    Code::Cvtpd2dq_xmm_xmmm128,
    Code::Punpcklbw_xmm_xmmm128,
    Code::Punpckldq_xmm_xmmm128,
    Code::Punpckhqdq_xmm_xmmm128,
    Code::Pslldq_xmm_imm8,
    Code::Psrldq_xmm_imm8,
    Code::Addsd_xmm_xmmm64,
    Code::Subsd_xmm_xmmm64,
    Code::Mulsd_xmm_xmmm64,
    Code::Divsd_xmm_xmmm64,
    Code::Sqrtsd_xmm_xmmm64,
    Code::Minsd_xmm_xmmm64,
    Code::Maxsd_xmm_xmmm64,
    Code::Addss_xmm_xmmm32,
    Code::Mulss_xmm_xmmm32,
    Code::Addpd_xmm_xmmm128,
    Code::Mulps_xmm_xmmm128,
    Code::Cvtsi2sd_xmm_rm64,
    Code::Cvtsi2sd_xmm_rm32,
    Code::Cvttsd2si_r64_xmmm64,
    Code::Cvttsd2si_r32_xmmm64,
    Code::Cvtsd2si_r64_xmmm64,
    Code::Cvtss2sd_xmm_xmmm32,
    Code::Cvtsd2ss_xmm_xmmm64,
    Code::Ucomisd_xmm_xmmm64,
    Code::Comisd_xmm_xmmm64,
    Code::Ucomiss_xmm_xmmm32,
    // MMX (MASKMOVQ is among the special forms).
    Code::Movd_mm_rm32,
    Code::Movq_mm_rm64,
    Code::Movd_rm32_mm,
    Code::Movq_rm64_mm,
    Code::Movq_mm_mmm64,
    Code::Movq_mmm64_mm,
    Code::Movq2dq_xmm_mm,
    Code::Movdq2q_mm_xmm,
    Code::Movntq_m64_mm,
    Code::Paddb_mm_mmm64,
    Code::Paddw_mm_mmm64,
    Code::Paddd_mm_mmm64,
    Code::Paddq_mm_mmm64,
    Code::Psubb_mm_mmm64,
    Code::Psubw_mm_mmm64,
    Code::Psubd_mm_mmm64,
    Code::Psubq_mm_mmm64,
    Code::Paddsb_mm_mmm64,
    Code::Paddsw_mm_mmm64,
    Code::Paddusb_mm_mmm64,
    Code::Paddusw_mm_mmm64,
    Code::Psubsb_mm_mmm64,
    Code::Psubsw_mm_mmm64,
    Code::Psubusb_mm_mmm64,
    Code::Psubusw_mm_mmm64,
    Code::Pmullw_mm_mmm64,
    Code::Pmulhw_mm_mmm64,
    Code::Pmulhuw_mm_mmm64,
    Code::Pmuludq_mm_mmm64,
    Code::Pmaddwd_mm_mmm64,
    Code::Pand_mm_mmm64,
    Code::Pandn_mm_mmm64,
    Code::Por_mm_mmm64,
    Code::Pxor_mm_mmm64,
    Code::Pcmpeqb_mm_mmm64,
    Code::Pcmpeqw_mm_mmm64,
    Code::Pcmpeqd_mm_mmm64,
    Code::Pcmpgtb_mm_mmm64,
    Code::Pcmpgtw_mm_mmm64,
    Code::Pcmpgtd_mm_mmm64,
    Code::Packsswb_mm_mmm64,
    Code::Packssdw_mm_mmm64,
    Code::Packuswb_mm_mmm64,
    Code::Punpcklbw_mm_mmm32,
    Code::Punpcklwd_mm_mmm32,
    Code::Punpckldq_mm_mmm32,
    Code::Punpckhbw_mm_mmm64,
    Code::Punpckhwd_mm_mmm64,
    Code::Punpckhdq_mm_mmm64,
    Code::Psllw_mm_mmm64,
    Code::Pslld_mm_mmm64,
    Code::Psllq_mm_mmm64,
    Code::Psrlw_mm_mmm64,
    Code::Psrld_mm_mmm64,
    Code::Psrlq_mm_mmm64,
    Code::Psraw_mm_mmm64,
    Code::Psrad_mm_mmm64,
    Code::Psllw_mm_imm8,
    Code::Pslld_mm_imm8,
    Code::Psllq_mm_imm8,
    Code::Psrlw_mm_imm8,
    Code::Psrld_mm_imm8,
    Code::Psrlq_mm_imm8,
    Code::Psraw_mm_imm8,
    Code::Psrad_mm_imm8,
    Code::Pavgb_mm_mmm64,
    Code::Pavgw_mm_mmm64,
    Code::Pmaxub_mm_mmm64,
    Code::Pminub_mm_mmm64,
    Code::Pmaxsw_mm_mmm64,
    Code::Pminsw_mm_mmm64,
    Code::Psadbw_mm_mmm64,
    Code::Pshufw_mm_mmm64_imm8,
    Code::Pmovmskb_r32_mm,
    Code::Pextrw_r32_mm_imm8,
    Code::Pinsrw_mm_r32m16_imm8,
    Code::Emms,
    // x87 arithmetic.
    Code::Fld_m32fp,
    Code::Fld_m64fp,
    Code::Fld_m80fp,
    Code::Fld_sti,
    Code::Fild_m16int,
    Code::Fild_m32int,
    Code::Fild_m64int,
    Code::Fst_m32fp,
    Code::Fst_m64fp,
    Code::Fstp_m64fp,
    Code::Fstp_m80fp,
    Code::Fstp_sti,
    Code::Fist_m32int,
    Code::Fistp_m64int,
    Code::Fistp_m16int,
    Code::Fld1,
    Code::Fldz,
    Code::Fadd_m64fp,
    Code::Fadd_st0_sti,
    Code::Fadd_sti_st0,
    Code::Faddp_sti_st0,
    Code::Fsub_m32fp,
    Code::Fsub_st0_sti,
    Code::Fsubp_sti_st0,
    Code::Fsubr_m64fp,
    Code::Fsubrp_sti_st0,
    Code::Fmul_m64fp,
    Code::Fmul_st0_sti,
    Code::Fmulp_sti_st0,
    Code::Fdiv_m64fp,
    Code::Fdiv_st0_sti,
    Code::Fdivp_sti_st0,
    Code::Fdivr_m32fp,
    Code::Fdivrp_sti_st0,
    Code::Fiadd_m32int,
    Code::Fimul_m16int,
    Code::Fxch_st0_sti,
    Code::Fchs,
    Code::Fabs,
    Code::Frndint,
    Code::Fcomi_st0_sti,
    Code::Fcomip_st0_sti,
    Code::Fucomi_st0_sti,
    Code::Fucomip_st0_sti,
    Code::Fcom_m64fp,
    Code::Fcomp_st0_sti,
    Code::Fucom_st0_sti,
    Code::Fucompp,
    Code::Fcompp,
    Code::Ftst,
    Code::Fnstsw_AX,
    Code::Fldpi,
    Code::Fldl2t,
    Code::Fldl2e,
    Code::Fldlg2,
    Code::Fldln2,
    Code::Ffree_sti,
    Code::Ffreep_sti,
    Code::Fincstp,
    Code::Fdecstp,
    Code::Fcmovb_st0_sti,
    Code::Fcmove_st0_sti,
    Code::Fcmovbe_st0_sti,
    Code::Fcmovu_st0_sti,
    Code::Fcmovnb_st0_sti,
    Code::Fcmovne_st0_sti,
    Code::Fcmovnbe_st0_sti,
    Code::Fcmovnu_st0_sti,
    Code::Fxam,
    Code::Ficom_m16int,
    Code::Ficom_m32int,
    Code::Ficomp_m16int,
    Code::Ficomp_m32int,
    Code::Fscale,
    Code::Fxtract,
    Code::Fsqrt,
    Code::Fprem,
    Code::Fprem1,
    Code::Fninit,
    Code::Fnclex,
    Code::Fbld_m80bcd,
    Code::Fbstp_m80bcd,
];

const P64: &[R] = &[
    R::RAX,
    R::RCX,
    R::RDX,
    R::R8,
    R::R9,
    R::R10,
    R::R11,
    R::R12,
    R::R13,
    R::R14,
    R::R15,
];
const P32: &[R] = &[
    R::EAX,
    R::ECX,
    R::EDX,
    R::R8D,
    R::R9D,
    R::R10D,
    R::R11D,
    R::R12D,
    R::R13D,
    R::R14D,
    R::R15D,
];
const P16: &[R] = &[
    R::AX,
    R::CX,
    R::DX,
    R::R8W,
    R::R9W,
    R::R10W,
    R::R11W,
    R::R12W,
    R::R13W,
    R::R14W,
    R::R15W,
];
const P8: &[R] = &[
    R::AL,
    R::CL,
    R::DL,
    R::AH,
    R::CH,
    R::DH,
    R::R8L,
    R::R9L,
    R::R10L,
    R::R11L,
    R::R12L,
    R::R13L,
    R::R14L,
    R::R15L,
];
const BASES: &[R] = &[R::RBX, R::RSI, R::RDI, R::RBP];

fn pick(rng: &mut Rng, p: &[R]) -> R {
    p[rng.below(p.len() as u64) as usize]
}

fn xmm(rng: &mut Rng) -> R {
    // XMM0-15 are consecutive in iced-x86's Register.
    let n = rng.below(16) as u32;
    let all = [
        R::XMM0,
        R::XMM1,
        R::XMM2,
        R::XMM3,
        R::XMM4,
        R::XMM5,
        R::XMM6,
        R::XMM7,
        R::XMM8,
        R::XMM9,
        R::XMM10,
        R::XMM11,
        R::XMM12,
        R::XMM13,
        R::XMM14,
        R::XMM15,
    ];
    all[n as usize]
}

fn mm(rng: &mut Rng) -> R {
    [
        R::MM0,
        R::MM1,
        R::MM2,
        R::MM3,
        R::MM4,
        R::MM5,
        R::MM6,
        R::MM7,
    ][rng.below(8) as usize]
}

fn mem(rng: &mut Rng) -> MemoryOperand {
    let base = pick(rng, BASES);
    let disp = rng.below(256) as i64 - 128;
    let disp = if rng.below(4) == 0 { disp & !15 } else { disp };
    MemoryOperand::with_base_displ(base, disp)
}

#[derive(Clone, Copy)]
enum Op {
    Reg(R),
    Mem(MemoryOperand),
    Imm(u64),
}

fn operand(rng: &mut Rng, k: K) -> Option<Op> {
    let rm = rng.below(3) == 0;
    Some(match k {
        K::r8_or_mem => {
            if rm {
                Op::Mem(mem(rng))
            } else {
                Op::Reg(pick(rng, P8))
            }
        }
        K::r16_or_mem => {
            if rm {
                Op::Mem(mem(rng))
            } else {
                Op::Reg(pick(rng, P16))
            }
        }
        K::r32_or_mem => {
            if rm {
                Op::Mem(mem(rng))
            } else {
                Op::Reg(pick(rng, P32))
            }
        }
        K::r64_or_mem => {
            if rm {
                Op::Mem(mem(rng))
            } else {
                Op::Reg(pick(rng, P64))
            }
        }
        // RBP stays 16-byte aligned for SSE memory operands: under this
        // machine's KVM a misaligned SSE access at CPL3 comes back as #UD
        // (its emulator's verdict), not the CPU's #GP.
        K::xmm_or_mem => {
            if rm {
                Op::Mem(MemoryOperand::with_base_displ(
                    R::RBP,
                    (rng.below(16) as i64 - 8) * 16,
                ))
            } else {
                Op::Reg(xmm(rng))
            }
        }
        // MMX memory operands have no alignment rule.
        K::mm_or_mem => {
            if rm {
                Op::Mem(mem(rng))
            } else {
                Op::Reg(mm(rng))
            }
        }
        K::mm_reg | K::mm_rm => Op::Reg(mm(rng)),
        K::st0 => Op::Reg(R::ST0),
        K::sti_opcode => Op::Reg(
            [
                R::ST0,
                R::ST1,
                R::ST2,
                R::ST3,
                R::ST4,
                R::ST5,
                R::ST6,
                R::ST7,
            ][rng.below(8) as usize],
        ),
        K::mem => Op::Mem(mem(rng)),
        K::r8_reg | K::r8_opcode => Op::Reg(pick(rng, P8)),
        K::r16_reg | K::r16_opcode | K::r16_rm => Op::Reg(pick(rng, P16)),
        K::r32_reg | K::r32_opcode | K::r32_rm => Op::Reg(pick(rng, P32)),
        K::r64_reg | K::r64_opcode | K::r64_rm => Op::Reg(pick(rng, P64)),
        K::xmm_reg | K::xmm_rm => Op::Reg(xmm(rng)),
        K::al => Op::Reg(R::AL),
        K::cl => Op::Reg(R::CL),
        K::ax => Op::Reg(R::AX),
        K::eax => Op::Reg(R::EAX),
        K::rax => Op::Reg(R::RAX),
        K::imm8_const_1 => Op::Imm(1),
        K::imm8 | K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => Op::Imm(rng.value() & 0xff),
        K::imm16 => Op::Imm(rng.value() & 0xffff),
        K::imm32 | K::imm32sex64 => Op::Imm(rng.value() & 0xffff_ffff),
        K::imm64 => Op::Imm(rng.value()),
        _ => return None,
    })
}

fn build(code: Code, ops: &[Op]) -> Option<Instruction> {
    let mut ins = Instruction::default();
    ins.set_code(code);
    for (i, op) in ops.iter().enumerate() {
        let i = i as u32;
        match *op {
            Op::Reg(r) => {
                ins.set_op_kind(i, iced_x86::OpKind::Register);
                ins.set_op_register(i, r);
            }
            Op::Mem(m) => {
                ins.set_op_kind(i, iced_x86::OpKind::Memory);
                ins.set_memory_base(m.base);
                ins.set_memory_index(R::None);
                ins.set_memory_displacement64(m.displacement as u64);
                ins.set_memory_displ_size(1);
                ins.set_memory_index_scale(1);
            }
            Op::Imm(v) => {
                let kind = match code.op_code().op_kind(i) {
                    K::imm8 | K::imm8_const_1 => iced_x86::OpKind::Immediate8,
                    K::imm8sex16 => iced_x86::OpKind::Immediate8to16,
                    K::imm8sex32 => iced_x86::OpKind::Immediate8to32,
                    K::imm8sex64 => iced_x86::OpKind::Immediate8to64,
                    K::imm16 => iced_x86::OpKind::Immediate16,
                    K::imm32 => iced_x86::OpKind::Immediate32,
                    K::imm32sex64 => iced_x86::OpKind::Immediate32to64,
                    _ => iced_x86::OpKind::Immediate64,
                };
                ins.set_op_kind(i, kind);
                match kind {
                    iced_x86::OpKind::Immediate8 => ins.set_immediate8(v as u8),
                    iced_x86::OpKind::Immediate8to16
                    | iced_x86::OpKind::Immediate8to32
                    | iced_x86::OpKind::Immediate8to64 => ins.set_immediate8(v as u8),
                    iced_x86::OpKind::Immediate16 => ins.set_immediate16(v as u16),
                    iced_x86::OpKind::Immediate32 | iced_x86::OpKind::Immediate32to64 => {
                        ins.set_immediate32(v as u32)
                    }
                    _ => ins.set_immediate64(v),
                }
            }
        }
    }
    Some(ins)
}

fn flag_bits(iced: u32) -> u64 {
    use iced_x86::RflagsBits as F;
    let mut v = 0;
    for (b, r) in [
        (F::OF, 1u64 << 11),
        (F::SF, 1 << 7),
        (F::ZF, 1 << 6),
        (F::AF, 1 << 4),
        (F::CF, 1),
        (F::PF, 1 << 2),
        (F::DF, 1 << 10),
    ] {
        if iced & b != 0 {
            v |= r;
        }
    }
    v
}

/// One random instruction: encoded bytes and its decoded form.
fn one(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let code = match rng.below(12) {
        0 => return special(rng, rip),
        _ => FORMS[rng.below(FORMS.len() as u64) as usize],
    };
    let oc = code.op_code();
    let mut ops = Vec::new();
    for i in 0..oc.op_count() {
        ops.push(operand(rng, oc.op_kind(i))?);
    }
    let mut ins = build(code, &ops)?;
    if ins.op_count() > 0 && ins.op_kind(0) == iced_x86::OpKind::Memory && rng.below(4) == 0 {
        let m = code.mnemonic();
        use iced_x86::Mnemonic as M;
        if matches!(
            m,
            M::Add
                | M::Or
                | M::Adc
                | M::Sbb
                | M::And
                | M::Sub
                | M::Xor
                | M::Inc
                | M::Dec
                | M::Neg
                | M::Not
                | M::Xadd
                | M::Cmpxchg
                | M::Bts
                | M::Btr
                | M::Btc
        ) {
            ins.set_has_lock_prefix(true);
        }
    }
    encode(&ins, rip)
}

fn encode(ins: &Instruction, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let mut e = Encoder::new(64);
    e.encode(ins, rip).ok()?;
    let bytes = e.take_buffer();
    let mut d = Decoder::with_ip(64, &bytes, rip, DecoderOptions::NONE);
    let dec = d.decode();
    if dec.is_invalid() {
        return None;
    }
    Some((bytes, dec))
}

/// String instructions, MASKMOVQ and a near CALL to the next instruction.
fn special(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let rep = if rng.below(2) == 0 {
        RepPrefixKind::None
    } else {
        RepPrefixKind::Repe
    };
    let ins = match rng.below(11) {
        0 => Instruction::with_movsb(64, R::None, rep).ok()?,
        1 => Instruction::with_movsq(64, R::None, rep).ok()?,
        2 => Instruction::with_stosd(64, rep).ok()?,
        3 => Instruction::with_stosb(64, rep).ok()?,
        4 => Instruction::with_lodsw(64, R::None, RepPrefixKind::None).ok()?,
        5 => Instruction::with_cmpsb(
            64,
            R::None,
            if rng.below(2) == 0 {
                RepPrefixKind::Repe
            } else {
                RepPrefixKind::Repne
            },
        )
        .ok()?,
        6 => Instruction::with_scasd(
            64,
            if rng.below(2) == 0 {
                RepPrefixKind::Repe
            } else {
                RepPrefixKind::Repne
            },
        )
        .ok()?,
        7 => Instruction::with_cmpsq(64, R::None, RepPrefixKind::None).ok()?,
        8 => Instruction::with_branch(Code::Call_rel32_64, rip + 5).ok()?,
        9 => Instruction::with_maskmovq(64, mm(rng), mm(rng), R::None).ok()?,
        _ => Instruction::with2(Code::Mov_r32_imm32, R::ECX, rng.below(24) as u32).ok()?,
    };
    encode(&ins, rip)
}

/// Generates one snippet.
pub fn snippet(rng: &mut Rng) -> Snippet {
    let n = 1 + rng.below(5);
    let mut code = Vec::new();
    let mut text = Vec::new();
    let mut undefined = 0u64;
    let mut mask_any = 0u64;
    let mut rip = CODE;
    // Prologue: load XMM0-15 from the top of the user stack page (KVM's
    // SET_FPU does not reach the registers on this host).
    for i in 0..16u32 {
        let r = [
            R::XMM0,
            R::XMM1,
            R::XMM2,
            R::XMM3,
            R::XMM4,
            R::XMM5,
            R::XMM6,
            R::XMM7,
            R::XMM8,
            R::XMM9,
            R::XMM10,
            R::XMM11,
            R::XMM12,
            R::XMM13,
            R::XMM14,
            R::XMM15,
        ][i as usize];
        let ins = Instruction::with2(
            Code::Movdqu_xmm_xmmm128,
            r,
            MemoryOperand::with_base_displ(R::None, (XMM_INIT + 16 * u64::from(i)) as i64),
        )
        .expect("valid form");
        let (b, _) = encode(&ins, rip).expect("encodable");
        rip += b.len() as u64;
        code.extend_from_slice(&b);
    }
    // Then a known x87/MMX state: FNINIT, FLDCW (random rounding control
    // in one case in two), MM0-7 from the stack page, and
    // in one case in two EMMS, so the first MMX instruction finds the tags
    // empty and x87 loads find room on the stack.
    code.extend_from_slice(&[0xdb, 0xe3]);
    rip += 2;
    let ins = Instruction::with1(
        Code::Fldcw_m2byte,
        MemoryOperand::with_base_displ(R::None, FCW_INIT as i64),
    )
    .expect("valid form");
    let (b, _) = encode(&ins, rip).expect("encodable");
    rip += b.len() as u64;
    code.extend_from_slice(&b);
    for i in 0..8u32 {
        let r = [
            R::MM0,
            R::MM1,
            R::MM2,
            R::MM3,
            R::MM4,
            R::MM5,
            R::MM6,
            R::MM7,
        ][i as usize];
        let ins = Instruction::with2(
            Code::Movq_mm_mmm64,
            r,
            MemoryOperand::with_base_displ(R::None, (MM_INIT + 8 * u64::from(i)) as i64),
        )
        .expect("valid form");
        let (b, _) = encode(&ins, rip).expect("encodable");
        rip += b.len() as u64;
        code.extend_from_slice(&b);
    }
    if rng.below(2) == 0 {
        code.extend_from_slice(&[0x0f, 0x77]);
        rip += 2;
    }
    let mut tries = 0;
    while text.len() < n as usize && tries < 200 {
        tries += 1;
        let Some((bytes, ins)) = one(rng, rip) else {
            continue;
        };
        let read = flag_bits(ins.rflags_read());
        if read & undefined != 0 {
            continue;
        }
        let undef = flag_bits(ins.rflags_undefined());
        // A shift by CL may shift by zero and write nothing.
        let by_cl = (0..ins.op_count())
            .any(|i| ins.op_kind(i) == iced_x86::OpKind::Register && ins.op_register(i) == R::CL)
            && matches!(
                ins.mnemonic(),
                iced_x86::Mnemonic::Shl
                    | iced_x86::Mnemonic::Shr
                    | iced_x86::Mnemonic::Sar
                    | iced_x86::Mnemonic::Rol
                    | iced_x86::Mnemonic::Ror
                    | iced_x86::Mnemonic::Rcl
                    | iced_x86::Mnemonic::Rcr
                    | iced_x86::Mnemonic::Shld
                    | iced_x86::Mnemonic::Shrd
            );
        let maybe_none = by_cl
            || ((ins.has_repe_prefix() || ins.has_repne_prefix())
                && matches!(
                    ins.mnemonic(),
                    iced_x86::Mnemonic::Scasb
                        | iced_x86::Mnemonic::Scasw
                        | iced_x86::Mnemonic::Scasd
                        | iced_x86::Mnemonic::Scasq
                        | iced_x86::Mnemonic::Cmpsb
                        | iced_x86::Mnemonic::Cmpsw
                        | iced_x86::Mnemonic::Cmpsd
                        | iced_x86::Mnemonic::Cmpsq
                ));
        let written = if maybe_none {
            0
        } else {
            flag_bits(ins.rflags_modified())
        };
        undefined = (undefined & !written) | undef;
        // A later instruction may fault before redefining a flag, so the
        // comparison masks every flag any instruction left undefined.
        mask_any |= undef;
        rip += bytes.len() as u64;
        code.extend_from_slice(&bytes);
        text.push(format!("{ins}"));
    }
    code.push(0xf4); // HLT at CPL3: #GP ends the snippet.
    let mut regs = hypervisor::Regs {
        rax: rng.value(),
        rcx: if rng.below(2) == 0 {
            rng.below(20)
        } else {
            rng.value()
        },
        rdx: rng.value(),
        r8: rng.value(),
        r9: rng.value(),
        r10: rng.value(),
        r11: rng.value(),
        r12: rng.value(),
        r13: rng.value(),
        r14: rng.value(),
        r15: rng.value(),
        rsp: USER_RSP,
        rip: CODE,
        ..Default::default()
    };
    let mut base = || DATA + 0x200 + rng.below(DATA_LEN as u64 - 0x400);
    regs.rbx = base();
    regs.rsi = base();
    regs.rdi = base();
    regs.rbp = base() & !15;
    let arith = rng.next() & 0x8d5;
    let df = if rng.below(8) == 0 { 1 << 10 } else { 0 };
    regs.rflags = 0x202 | arith | df;
    let mut data = vec![0u8; DATA_LEN];
    for c in data.chunks_mut(8) {
        let v = rng.value().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    let mut stack = vec![0u8; 0x1000];
    for c in stack.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    let mut xmm = [[0u8; 16]; 16];
    for (i, x) in xmm.iter_mut().enumerate() {
        let lo = match rng.below(4) {
            0 => (rng.below(2000) as f64 - 1000.0).to_bits(),
            1 => {
                (rng.below(2000) as f32 - 1000.0).to_bits() as u64
                    | (((rng.below(100) as f32).to_bits() as u64) << 32)
            }
            _ => rng.value(),
        };
        x[..8].copy_from_slice(&lo.to_le_bytes());
        x[8..].copy_from_slice(&rng.value().to_le_bytes());
        let o = (XMM_INIT - STACK) as usize + 16 * i;
        stack[o..o + 16].copy_from_slice(x);
    }
    let rc = if rng.below(2) == 0 {
        0
    } else {
        rng.below(4) as u16
    };
    let o = (FCW_INIT - STACK) as usize;
    stack[o..o + 2].copy_from_slice(&(0x37f | rc << 10).to_le_bytes());
    for i in 0..8 {
        let o = (MM_INIT - STACK) as usize + 8 * i;
        stack[o..o + 8].copy_from_slice(&rng.value().to_le_bytes());
    }
    Snippet {
        code,
        text,
        regs,
        data,
        stack,
        xmm,
        undefined_flags: mask_any,
    }
}
