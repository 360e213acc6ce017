//! Snippet generation from a table of instruction forms (iced-x86 codes),
//! with operands drawn by each form's operand kinds from a seeded PRNG.
//! Flags an instruction leaves undefined are tracked so no later
//! instruction reads them and the comparison masks them.

use iced_x86::{Code, Decoder, DecoderOptions, Encoder, Instruction, Register as R};

use super::machine::*;
use super::operands::{build, operands};
use super::{knobs, native, prefix, prologue, special};

/// xorshift64* — deterministic, seedable, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Mixed first (splitmix64's finalizer), so neighbouring seeds
        // give unrelated streams (a plain `seed | 1` made 2 and 3 one).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
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
    let k = knobs::get();
    if k.forms.is_empty() || (k.special && rng.below(12) == 0) {
        return special::draw(rng, rip);
    }
    let code = k.forms[rng.below(k.forms.len() as u64) as usize];
    if super::gather::is_gather(code) {
        return super::gather::draw(rng, code, rip);
    }
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
    let (bytes, ins) = encode(&ins, rip)?;
    let (mut bytes, ins) = if rng.below(5) == 0 {
        prefix::mutate(rng, &bytes, rip)?
    } else {
        (bytes, ins)
    };
    let next = rip + bytes.len() as u64;
    bytes.extend(super::forms::settle(&ins, next));
    Some((bytes, ins))
}

pub fn encode(ins: &Instruction, rip: u64) -> Option<(Vec<u8>, Instruction)> {
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

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The instructions of a snippet after its prologue, with the flags they
/// leave undefined.
#[derive(Default)]
struct Body {
    code: Vec<u8>,
    rip: u64,
    text: Vec<String>,
    codes: Vec<Code>,
    /// Flags undefined now.
    undefined: u64,
    /// Flags any instruction left undefined (a later one may fault before
    /// redefining them), masked in the comparison.
    mask_any: u64,
    /// Where an instruction the CPU refuses with #UD starts (see
    /// `native`).
    cpu_ud_at: Option<usize>,
    /// RBP was changed (LEAVE, ENTER): RBP-based operands are no longer
    /// aligned.
    rbp_moved: bool,
}

impl Body {
    /// Appends `ins` (encoded as `bytes`) unless it reads a flag left
    /// undefined.
    fn push(&mut self, bytes: &[u8], ins: &Instruction) -> bool {
        let read = flag_bits(ins.rflags_read());
        if read & self.undefined != 0 || (self.rbp_moved && needs_aligned_rbp(ins)) {
            return false;
        }
        self.rbp_moved |= matches!(
            ins.mnemonic(),
            iced_x86::Mnemonic::Leave | iced_x86::Mnemonic::Enter
        );
        let undef = flag_bits(ins.rflags_undefined());
        let written = if may_write_no_flags(ins) {
            0
        } else {
            flag_bits(ins.rflags_modified())
        };
        self.undefined = (self.undefined & !written) | undef;
        self.mask_any |= undef;
        if ins.is_invalid() && self.cpu_ud_at.is_none() && native::raises_ud(bytes) {
            self.cpu_ud_at = Some(self.code.len());
        }
        self.rip += bytes.len() as u64;
        self.code.extend_from_slice(bytes);
        self.text.push(format!("{ins:<40} {}", hex(bytes)));
        self.codes.push(ins.code());
        true
    }

    /// Appends the instructions of `bytes` as iced-x86 decodes them (the
    /// `DIFFTEST_REPLAY` body), whatever flags they read.
    fn replay(&mut self, bytes: &[u8]) {
        let mut d = Decoder::with_ip(64, bytes, self.rip, DecoderOptions::NONE);
        while d.can_decode() {
            let pos = d.position();
            let ins = d.decode();
            let b = &bytes[pos..pos + ins.len().max(1)];
            self.undefined = 0;
            self.push(b, &ins);
        }
    }
}

/// An operand drawn aligned off RBP (see `operands::mem_align`): after
/// LEAVE or ENTER it may be misaligned, where this host's KVM answers for
/// the CPU.
fn needs_aligned_rbp(ins: &Instruction) -> bool {
    matches!(ins.memory_base(), R::RBP | R::EBP) && super::operands::mem_align(ins.code()) > 0
}

/// A shift by CL may shift by zero, one by an immediate may be masked to
/// zero, and a REP string compare may run no iteration: then no flag is
/// written.
pub fn may_write_no_flags(ins: &Instruction) -> bool {
    use iced_x86::Mnemonic as M;
    let shift = matches!(
        ins.mnemonic(),
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    );
    let by_cl = (0..ins.op_count())
        .any(|i| ins.op_kind(i) == iced_x86::OpKind::Register && ins.op_register(i) == R::CL);
    // An immediate count the CPU masks to 0 (RCL/RCR: reduces to 0 modulo
    // the width plus one) leaves the flags as they were too.
    let by_zero = (0..ins.op_count()).any(|i| ins.op_kind(i) == iced_x86::OpKind::Immediate8) && {
        let width = ins.op0_register().size().max(ins.memory_size().size()) as u32 * 8;
        let masked = u32::from(ins.immediate8()) & if width == 64 { 0x3f } else { 0x1f };
        let narrow_rc = matches!(ins.mnemonic(), M::Rcl | M::Rcr) && width < 32;
        masked == 0 || (narrow_rc && masked % (width + 1) == 0)
    };
    (shift && (by_cl || by_zero))
        || ((ins.has_repe_prefix() || ins.has_repne_prefix())
            && matches!(
                ins.mnemonic(),
                M::Scasb
                    | M::Scasw
                    | M::Scasd
                    | M::Scasq
                    | M::Cmpsb
                    | M::Cmpsw
                    | M::Cmpsd
                    | M::Cmpsq
            ))
}

/// Generates one snippet.
pub fn snippet(rng: &mut Rng) -> Snippet {
    let n = 1 + rng.below(knobs::get().max_len);
    let mut stack = vec![0u8; 0x1000];
    for c in stack.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    let (prologue, xmm) = prologue::emit(rng, &mut stack);
    let mut body = Body {
        rip: prologue.rip,
        code: prologue.code,
        ..Body::default()
    };
    match &knobs::get().replay {
        Some(bytes) => body.replay(bytes),
        None => {
            let mut tries = 0;
            while body.text.len() < n as usize && tries < 200 {
                tries += 1;
                let Some((bytes, ins)) = one(rng, body.rip) else {
                    continue;
                };
                if !body.push(&bytes, &ins) {
                    continue;
                }
                // An instruction iced calls invalid ends the snippet (#UD).
                if ins.is_invalid() {
                    break;
                }
            }
        }
    }
    let Body {
        mut code,
        text,
        codes,
        mask_any,
        cpu_ud_at,
        ..
    } = body;
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
    regs.rbp = base() & !63;
    let arith = rng.next() & 0x8d5;
    let df = if rng.below(8) == 0 { 1 << 10 } else { 0 };
    regs.rflags = 0x202 | arith | df;
    let mut data = vec![0u8; DATA_LEN];
    for c in data.chunks_mut(8) {
        let v = rng.value().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    Snippet {
        code,
        text,
        codes,
        regs,
        data,
        stack,
        xmm,
        undefined_flags: mask_any,
        cpu_ud_at,
    }
}
