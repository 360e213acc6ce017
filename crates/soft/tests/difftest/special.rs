//! Forms the operand tables cannot draw: string instructions (with REP),
//! XLAT, MASKMOVQ/MASKMOVDQU (implicit RDI), LEAVE (with and without
//! 66h), CALL to the next instruction, the branches, each made to jump
//! over a `lea r8, [r8+1]` so the path taken shows in R8: Jcc (rel8 and
//! rel32), JMP, LOOP/LOOPE/LOOPNE, JRCXZ/JECXZ and RET (to an address
//! pushed before it), and the instructions that fault here: CLI/STI
//! (#GP at CPL3 with IOPL 0) and UD0/UD1/UD2. Not INT3/INT n (this host's
//! KVM delivers them without the gate's DPL check, or answers #UD) nor
//! port I/O (the TSS's I/O bitmap, at offset 0, allows some ports; the
//! engine checks only IOPL, a known gap).

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Register as R, RepPrefixKind};

use super::gen::{encode, Rng};
use super::operands::{pick, MMS, XMMS};
use super::prefix;

/// The forms `draw` gives (for `COVERED.md`).
pub const SPECIAL: &[Code] = &[
    Code::Movsb_m8_m8,
    Code::Movsw_m16_m16,
    Code::Movsd_m32_m32,
    Code::Movsq_m64_m64,
    Code::Stosb_m8_AL,
    Code::Stosw_m16_AX,
    Code::Stosd_m32_EAX,
    Code::Stosq_m64_RAX,
    Code::Lodsb_AL_m8,
    Code::Lodsw_AX_m16,
    Code::Lodsd_EAX_m32,
    Code::Lodsq_RAX_m64,
    Code::Cmpsb_m8_m8,
    Code::Cmpsw_m16_m16,
    Code::Cmpsq_m64_m64,
    Code::Scasb_AL_m8,
    Code::Scasd_EAX_m32,
    Code::Scasq_RAX_m64,
    Code::Xlat_m8,
    Code::Call_rel32_64,
    Code::Maskmovq_rDI_mm_mm,
    Code::Maskmovdqu_rDI_xmm_xmm,
    Code::Mov_r32_imm32,
    Code::Leavew,
    Code::Leaveq,
    Code::Jo_rel8_64,
    Code::Jno_rel8_64,
    Code::Jb_rel8_64,
    Code::Jae_rel8_64,
    Code::Je_rel8_64,
    Code::Jne_rel8_64,
    Code::Jbe_rel8_64,
    Code::Ja_rel8_64,
    Code::Js_rel8_64,
    Code::Jns_rel8_64,
    Code::Jp_rel8_64,
    Code::Jnp_rel8_64,
    Code::Jl_rel8_64,
    Code::Jge_rel8_64,
    Code::Jle_rel8_64,
    Code::Jg_rel8_64,
    Code::Jo_rel32_64,
    Code::Jno_rel32_64,
    Code::Jb_rel32_64,
    Code::Jae_rel32_64,
    Code::Je_rel32_64,
    Code::Jne_rel32_64,
    Code::Jbe_rel32_64,
    Code::Ja_rel32_64,
    Code::Js_rel32_64,
    Code::Jns_rel32_64,
    Code::Jp_rel32_64,
    Code::Jnp_rel32_64,
    Code::Jl_rel32_64,
    Code::Jge_rel32_64,
    Code::Jle_rel32_64,
    Code::Jg_rel32_64,
    Code::Jmp_rel8_64,
    Code::Loop_rel8_64_RCX,
    Code::Loope_rel8_64_RCX,
    Code::Loopne_rel8_64_RCX,
    Code::Jrcxz_rel8_64,
    Code::Jecxz_rel8_64,
    Code::Retnq,
    Code::Retnq_imm16,
    Code::Scasw_AX_m16,
    Code::Pushfw,
    Code::Cli,
    Code::Sti,
    Code::Ud0_r32_rm32,
    Code::Ud1_r32_rm32,
    Code::Ud2,
];

/// `lea r8, [r8+1]`: what a branch jumps over.
const MARK: [u8; 4] = [0x4d, 0x8d, 0x40, 0x01];

/// A REP prefix kind: none, or REPE/REPNE at random.
fn rep(rng: &mut Rng) -> RepPrefixKind {
    match rng.below(3) {
        0 => RepPrefixKind::None,
        1 => RepPrefixKind::Repe,
        _ => RepPrefixKind::Repne,
    }
}

/// One special form at `rip`: its bytes and how the first instruction
/// decodes.
pub fn draw(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    match rng.below(6) {
        0 | 1 => return branch(rng, rip),
        2 => return faulting(rng, rip),
        _ => {}
    }
    let r = rep(rng);
    let ins = match rng.below(22) {
        0 => Instruction::with_movsb(64, R::None, r).ok()?,
        1 => Instruction::with_movsw(64, R::None, r).ok()?,
        2 => Instruction::with_movsd(64, R::None, r).ok()?,
        3 => Instruction::with_movsq(64, R::None, r).ok()?,
        4 => Instruction::with_stosb(64, r).ok()?,
        5 => Instruction::with_stosw(64, r).ok()?,
        6 => Instruction::with_stosd(64, r).ok()?,
        7 => Instruction::with_stosq(64, r).ok()?,
        8 => Instruction::with_lodsb(64, R::None, RepPrefixKind::None).ok()?,
        9 => Instruction::with_lodsw(64, R::None, RepPrefixKind::None).ok()?,
        10 => Instruction::with_lodsd(64, R::None, RepPrefixKind::None).ok()?,
        11 => Instruction::with_lodsq(64, R::None, RepPrefixKind::None).ok()?,
        12 => Instruction::with_cmpsb(64, R::None, r).ok()?,
        13 => Instruction::with_cmpsw(64, R::None, r).ok()?,
        14 => Instruction::with_cmpsq(64, R::None, r).ok()?,
        15 => Instruction::with_scasb(64, r).ok()?,
        16 => Instruction::with_scasd(64, r).ok()?,
        17 if rng.below(2) == 0 => Instruction::with_scasq(64, r).ok()?,
        17 => Instruction::with_scasw(64, r).ok()?,
        18 => return prefix::decoded(vec![0xd7], rip), // XLAT
        19 if rng.below(2) == 0 => return prefix::decoded(vec![0x66, 0x9c], rip), // PUSHFW
        19 => Instruction::with_branch(Code::Call_rel32_64, rip + 5).ok()?,
        20 => match rng.below(3) {
            0 => Instruction::with_maskmovq(64, pick(rng, MMS), pick(rng, MMS), R::None).ok()?,
            1 => {
                Instruction::with_maskmovdqu(64, pick(rng, XMMS), pick(rng, XMMS), R::None).ok()?
            }
            _ => Instruction::with2(Code::Mov_r32_imm32, R::ECX, rng.below(24) as u32).ok()?,
        },
        // LEAVE, with an operand-size prefix in one case in two.
        _ if rng.below(2) == 0 => return prefix::decoded(vec![0x66, 0xc9], rip),
        _ => return prefix::decoded(vec![0xc9], rip),
    };
    encode(&ins, rip)
}

/// An instruction CPL3 may not use in this machine (or one that always
/// raises #UD): the fault ends the snippet.
fn faulting(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let imm = rng.below(256) as u8;
    let b = match rng.below(5) {
        0 => vec![0xfa],
        1 => vec![0xfb],
        2 => vec![0x0f, 0xff, 0xc0 | imm & 0x3f],
        3 => vec![0x0f, 0xb9, 0xc0 | imm & 0x3f],
        _ => vec![0x0f, 0x0b],
    };
    prefix::decoded(b, rip)
}

/// A branch over `MARK`: taken, R8 stays; not taken, R8 grows by one.
fn branch(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let cc = rng.below(16) as u8;
    let skip = MARK.len() as u8;
    if rng.below(8) == 0 {
        return ret(rng, rip);
    }
    let mut b = match rng.below(8) {
        0..=2 => vec![0x70 | cc, skip],
        3 | 4 => vec![0x0f, 0x80 | cc, skip, 0, 0, 0],
        5 => vec![0xeb, skip],
        6 => vec![[0xe0, 0xe1, 0xe2][rng.below(3) as usize], skip],
        _ if rng.below(2) == 0 => vec![0xe3, skip],
        _ => vec![0x67, 0xe3, skip],
    };
    let ins = Decoder::with_ip(64, &b, rip, DecoderOptions::NONE).decode();
    if ins.is_invalid() {
        return None;
    }
    b.extend_from_slice(&MARK);
    Some((b, ins))
}

/// PUSH of the address after `MARK`, then RET (or RET imm16 with a small
/// count): the return skips the marker.
fn ret(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let pop = rng.below(3) == 0;
    let ret_len = if pop { 3 } else { 1 };
    let target = rip + 5 + ret_len + MARK.len() as u64;
    let target = u32::try_from(target).ok()?;
    let mut b = vec![0x68];
    b.extend_from_slice(&target.to_le_bytes());
    if pop {
        b.extend_from_slice(&[0xc2, 8 * rng.below(3) as u8, 0]);
    } else {
        b.push(0xc3);
    }
    let ins = Decoder::with_ip(64, &b, rip, DecoderOptions::NONE).decode();
    b.extend_from_slice(&MARK);
    Some((b, ins))
}
