//! Snippet generation from a table of instruction forms (iced-x86 codes),
//! with operands drawn by each form's operand kinds from a seeded PRNG.
//! Flags an instruction leaves undefined are tracked so no later
//! instruction reads them and the comparison masks them.

use std::sync::OnceLock;

use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, Instruction, MemoryOperand, Register as R,
    RepPrefixKind,
};

use super::machine::*;
use super::operands::{build, operands, pick, MMS};

/// Every form of `forms::AREAS`, collected once.
fn forms() -> &'static [Code] {
    static ALL: OnceLock<Vec<Code>> = OnceLock::new();
    ALL.get_or_init(super::forms::all)
}

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
        _ => {
            let all = forms();
            all[rng.below(all.len() as u64) as usize]
        }
    };
    let ops = operands(rng, code)?;
    let mut ins = build(code, &ops);
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
        9 => Instruction::with_maskmovq(64, pick(rng, MMS), pick(rng, MMS), R::None).ok()?,
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
    regs.rbp = base() & !31;
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
