//! Prefix variations: raw prefix bytes put in front of (or changed in) an
//! encoded instruction, then decoded again by iced-x86 as the CPU decodes
//! them: segment overrides (ignored ES/CS/SS/DS, FS/GS adding their
//! bases), 66h, 67h, F2h/F3h, LOCK (#UD where illegal), REX.W set or
//! cleared, a plain REX, and a REX made void by a legacy prefix after it.

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use super::gen::Rng;

const LEGACY: &[u8] = &[
    0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3,
];
const SEGMENTS: &[u8] = &[0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65];

/// Where the REX prefix of `b` is or would go (after the legacy
/// prefixes).
fn rex_at(b: &[u8]) -> usize {
    b.iter().take_while(|x| LEGACY.contains(x)).count()
}

fn is_rex(x: u8) -> bool {
    x & 0xf0 == 0x40
}

/// One variation applied to `b`.
fn vary(rng: &mut Rng, b: &mut Vec<u8>) {
    match rng.below(8) {
        0 => b.insert(0, SEGMENTS[rng.below(SEGMENTS.len() as u64) as usize]),
        1 => b.insert(0, 0x66),
        2 => b.insert(0, 0x67),
        3 => b.insert(0, [0xf2, 0xf3][rng.below(2) as usize]),
        4 => b.insert(0, 0xf0),
        5 => {
            let at = rex_at(b);
            match b.get(at) {
                Some(&x) if is_rex(x) => b[at] = x ^ 8,
                _ => b.insert(at, [0x40, 0x48][rng.below(2) as usize]),
            }
        }
        // A REX followed by a legacy prefix is ignored.
        6 => {
            b.insert(0, 0x3e);
            b.insert(0, 0x40 | rng.below(16) as u8);
        }
        _ => b.insert(0, [0x64, 0x65][rng.below(2) as usize]),
    }
}

/// `bytes` (an instruction at `rip`) with one or two random prefix
/// variations, and how it decodes; None when the result is incomplete
/// (the variation lengthened an immediate past the bytes) or longer than
/// an instruction may be. An invalid decoding is kept: the CPU raises #UD.
pub fn mutate(rng: &mut Rng, bytes: &[u8], rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let mut b = bytes.to_vec();
    vary(rng, &mut b);
    if rng.below(4) == 0 {
        vary(rng, &mut b);
    }
    let (b, ins) = decoded(b, rip)?;
    let was = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE).decode();
    // Not an instruction of a feature the engine does not advertise (the
    // CPU has it: RDPID from RDSEED with F3h), and no alignment the
    // operand was not drawn for (66h turning an MMX form into an SSE
    // one): see `operands::mem_align`.
    let unaligned = super::operands::mem_align(ins.code()) > super::operands::mem_align(was.code());
    if unaligned
        || !super::advertised::is_advertised(ins.code())
        || restore_via_fs_gs(&ins)
        || writes_rsp(&ins)
    {
        return None;
    }
    Some((b, ins))
}

/// FXRSTOR/XRSTOR through an FS or GS override: where the image makes
/// the CPU raise #GP (reserved MXCSR bits), this host's KVM emulates the
/// instruction and succeeds, by all signs reading another image (MOV and
/// STMXCSR through the same overrides agree with the engine), where the
/// CPU and the engine fault.
fn restore_via_fs_gs(ins: &Instruction) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(
        ins.segment_prefix(),
        iced_x86::Register::FS | iced_x86::Register::GS
    ) && matches!(
        ins.mnemonic(),
        M::Fxrstor | M::Fxrstor64 | M::Xrstor | M::Xrstor64 | M::Xrstors | M::Xrstors64
    )
}

/// Does a variation make the instruction write RSP (a voided REX turns
/// R12 into RSP)? The stack then points anywhere, and the generator's
/// PUSHF/POPF pairs (after RDRAND) would fault before they settle the
/// random value.
fn writes_rsp(ins: &Instruction) -> bool {
    ins.op_count() > 0
        && ins.op_kind(0) == iced_x86::OpKind::Register
        && ins.op_register(0).full_register() == iced_x86::Register::RSP
}

/// `bytes` decoded at `rip`, cut to the instruction's length.
pub fn decoded(mut b: Vec<u8>, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    if b.len() > 15 {
        return None;
    }
    let mut d = Decoder::with_ip(64, &b, rip, DecoderOptions::NONE);
    let ins = d.decode();
    if ins.is_invalid() {
        return (d.last_error() == DecoderError::InvalidInstruction).then_some((b, ins));
    }
    b.truncate(ins.len());
    Some((b, ins))
}
