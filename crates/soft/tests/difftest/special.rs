//! Forms the operand tables cannot draw: string instructions (with REP),
//! XLAT, MASKMOVQ/MASKMOVDQU (implicit RDI), LEAVE (with and without
//! 66h), CALL to the next instruction, the branches, each made to jump
//! over a `lea r8, [r8+1]` so the path taken shows in R8: Jcc (rel8 and
//! rel32), JMP, LOOP/LOOPE/LOOPNE, JRCXZ/JECXZ and RET (to an address
//! pushed before it), indirect JMP/CALL (through a register or a
//! RIP-relative quadword), POPF of a pushed image with TF clear, and
//! the instructions that fault here: CLI/STI
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
    Code::Ud0_r16_rm16,
    Code::Ud0_r64_rm64,
    Code::Ud1_r16_rm16,
    Code::Ud1_r64_rm64,
    Code::Cmpsd_m32_m32,
    Code::Jmp_rel32_64,
    Code::Jmp_rm64,
    Code::Call_rm64,
    Code::Loop_rel8_64_ECX,
    Code::Loope_rel8_64_ECX,
    Code::Loopne_rel8_64_ECX,
    Code::Popfq,
    Code::Popfw,
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
        14 if rng.below(2) == 0 => Instruction::with_cmpsq(64, R::None, r).ok()?,
        14 => Instruction::with_cmpsd(64, R::None, r).ok()?,
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
    let mut b = match rng.below(5) {
        0 => vec![0xfa],
        1 => vec![0xfb],
        2 => vec![0x0f, 0xff, 0xc0 | imm & 0x3f],
        3 => vec![0x0f, 0xb9, 0xc0 | imm & 0x3f],
        _ => vec![0x0f, 0x0b],
    };
    // UD0/UD1 at 16 and 64 bits too.
    if b.len() == 3 {
        match rng.below(3) {
            0 => b.insert(0, 0x66),
            1 => b.insert(0, 0x48),
            _ => {}
        }
    }
    prefix::decoded(b, rip)
}

/// A branch over `MARK`: taken, R8 stays; not taken, R8 grows by one.
fn branch(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let cc = rng.below(16) as u8;
    let skip = MARK.len() as u8;
    match rng.below(10) {
        0 => return ret(rng, rip),
        1 => return indirect(rng, rip),
        2 => return popf(rng, rip),
        _ => {}
    }
    let lp = [0xe0, 0xe1, 0xe2][rng.below(3) as usize];
    let mut b = match rng.below(9) {
        0..=2 => vec![0x70 | cc, skip],
        3 | 4 => vec![0x0f, 0x80 | cc, skip, 0, 0, 0],
        5 if rng.below(2) == 0 => vec![0xeb, skip],
        5 => vec![0xe9, skip, 0, 0, 0],
        // LOOP/LOOPE/LOOPNE on RCX, or on ECX with 67h.
        6 => vec![lp, skip],
        7 => vec![0x67, lp, skip],
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

/// An indirect JMP or CALL over `MARK`: through a register loaded by
/// `lea r, [rip+d]`, or through memory (a RIP-relative quadword in the
/// code page right after the instruction holding the target).
fn indirect(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let call = rng.below(2) == 0;
    let modrm_reg = if call { 0x10 } else { 0x20 };
    let (mut b, at) = if rng.below(2) == 0 {
        // lea r, [rip+d] (7 bytes), then ff /2 or /4 with r (3 bytes
        // with REX.B for R8-R15, else 2).
        let r = [0u8, 1, 2, 9, 10, 11, 12, 13, 14, 15][rng.below(10) as usize];
        let rex_b = r >= 8;
        let jump_len = if rex_b { 3 } else { 2 };
        let d = (jump_len + MARK.len()) as u32;
        let mut b = vec![0x48 | u8::from(rex_b) << 2, 0x8d, 0x05 | (r & 7) << 3];
        b.extend_from_slice(&d.to_le_bytes());
        let at = b.len();
        if rex_b {
            b.push(0x41);
        }
        b.extend_from_slice(&[0xff, 0xc0 | modrm_reg | (r & 7)]);
        (b, at)
    } else {
        // ff /2 or /4 [rip+0], the target's address, then MARK.
        let target = rip + 6 + 8 + MARK.len() as u64;
        let mut b = vec![0xff, 0x05 | modrm_reg, 0, 0, 0, 0];
        b.extend_from_slice(&target.to_le_bytes());
        (b, 0)
    };
    let ins = Decoder::with_ip(64, &b[at..], rip + at as u64, DecoderOptions::NONE).decode();
    if ins.is_invalid() {
        return None;
    }
    b.extend_from_slice(&MARK);
    Some((b, ins))
}

/// PUSH of a random RFLAGS image with TF and AC clear, then POPFQ or
/// POPFW: at CPL3 IF and IOPL stay, the arithmetic flags, DF, ID and NT
/// are loaded. A set TF would single-step (a #DB the engine does not
/// deliver); a set AC makes this host's CPU raise #AC on a misaligned
/// access although the guest's CR0.AM is clear (PVM runs the guest's
/// CPL3 code under the host's CR0, AM set), and the engine has no
/// alignment checks.
fn popf(rng: &mut Rng, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let v = (rng.next() as u32) & !(0x100 | 0x4_0000);
    let mut b = vec![0x68];
    b.extend_from_slice(&v.to_le_bytes());
    let at = b.len();
    if rng.below(3) == 0 {
        b.push(0x66);
    }
    b.push(0x9d);
    let ins = Decoder::with_ip(64, &b[at..], rip + at as u64, DecoderOptions::NONE).decode();
    Some((b, ins))
}
