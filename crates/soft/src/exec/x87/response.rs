//! What an x87 instruction leaves when it raises an exception whose FCW
//! mask bit is clear. An invalid operation (stack faults included), a
//! denormal operand or a division by zero is detected before the
//! operation: unmasked, the instruction changes nothing but FSW (its
//! exception flags, SF, C1 for a stack fault, ES and B): no result, no
//! push or pop, no EFLAGS from FCOMI. A store to memory also writes
//! nothing (and does not pop) on an unmasked overflow or underflow; an
//! arithmetic result in a register is delivered with its exponent
//! adjusted by 24576 instead ([`biased`]). An unmasked precision
//! exception delivers the result as a masked one.

use super::*;

const FSW_ZE: u16 = 1 << 2;
const FSW_OE: u16 = 1 << 3;
const FSW_UE: u16 = 1 << 4;

/// The exceptions that stop an instruction when unmasked: the
/// pre-computation ones, for a store to memory overflow and underflow
/// too; a load (FLD m32/m64) still pushes its denormal operand.
fn stopping(how: Stopped) -> u16 {
    match how {
        Stopped::Store => FSW_IE | FSW_DE | FSW_ZE | FSW_OE | FSW_UE,
        Stopped::Load => FSW_IE | FSW_ZE,
        _ => FSW_IE | FSW_DE | FSW_ZE,
    }
}

/// Whether `f` (the state after an instruction that started with ES
/// clear) holds an unmasked exception that stops the instruction.
pub(super) fn stops(f: &Fpu, how: Stopped) -> bool {
    f.fsw & !f.fcw & stopping(how) != 0
}

/// Undoes an instruction that an unmasked exception stopped: the state
/// goes back to `before` but for FSW's flags of the stopping
/// exceptions, SF and (after a stack fault) C1, and ES and B, which say
/// the exception is pending.
/// A compare (`compare`) still sets its condition codes or EFLAGS as
/// a masked one would (unordered for an invalid operand, the order for
/// a denormal one): only its pops are undone (checked on the host).
pub(super) fn undo(core: &mut Core, before: &Fpu, flags: crate::flags::Flags, how: Stopped) {
    let after = core.cpu.fpu.fsw;
    let f = &mut core.cpu.fpu;
    *f = *before;
    if how == Stopped::Compare {
        f.fsw = (after & !FSW_TOP) | (before.fsw & FSW_TOP) | FSW_ES | FSW_B;
        return;
    }
    // SF is set only by this instruction's stack fault (the caller
    // cleared it), whose C1 says overflow or underflow; C2 is as the
    // instruction left it (FPREM clears it first).
    let mut kept = after & (stopping(how) | FSW_SF | FSW_C2);
    if after & FSW_SF != 0 {
        kept |= after & FSW_C1;
    }
    f.fsw = (f.fsw & !(FSW_C1 | FSW_C2)) | kept | FSW_ES | FSW_B;
    core.cpu.flags = flags;
}

/// The kind of instruction an unmasked exception stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// FCOM*, FUCOM*, FICOM*, FTST, FCOMI*, FUCOMI*.
    Compare,
    /// A store to memory (FST, FIST, FISTTP, FBSTP).
    Store,
    /// FLD, FILD.
    Load,
    Other,
}

/// A far smaller addend only matters as a sticky bit: it is replaced by
/// one of its sign 100 binades below the larger operand, so that both
/// can be scaled exactly.
fn sticky(a: u128, b: u128) -> (u128, u128) {
    let (ea, eb) = (exponent(a).max(1), exponent(b).max(1));
    let small = |big_e: u128, x: u128| (x & SIGN) | ((big_e - 100) << 64) | INT_BIT;
    if b & !SIGN != 0 && ea > eb + 100 {
        (a, small(ea, b))
    } else if a & !SIGN != 0 && eb > ea + 100 {
        (small(eb, a), b)
    } else {
        (a, b)
    }
}

/// The unmasked response to an overflow (`over`) or underflow of one of
/// the four operations with a register destination: the result times
/// 2^-24576 (overflow) or 2^24576 (underflow), computed from operands
/// scaled so that it does neither and rounded as usual; OE or UE is
/// raised, with PE when that result is inexact (an underflow is
/// reported even when exact).
pub(super) fn biased(f: &mut Fpu, m: Mnemonic, a: u128, b: u128, over: bool) -> u128 {
    use Mnemonic as M;
    let k: i32 = if over { -12288 } else { 12288 };
    let s = |x: u128, by: i32| f80(x).scalbn(by).to_bits();
    let (a2, b2) = match m {
        M::Fmul | M::Fmulp | M::Fimul => (s(a, k), s(b, k)),
        M::Fdiv | M::Fdivp | M::Fidiv => (s(a, k), s(b, -k)),
        M::Fdivr | M::Fdivrp | M::Fidivr => (s(a, -k), s(b, k)),
        _ => {
            let (a, b) = sticky(a, b);
            (s(a, 2 * k), s(b, 2 * k))
        }
    };
    let mut g = Fpu {
        fcw: f.fcw | 0x3f,
        fsw: 0,
        ..*f
    };
    let r = compute(&mut g, m, a2, b2, false);
    let mut status = if over {
        Status::OVERFLOW
    } else {
        Status::UNDERFLOW
    };
    if g.fsw & (1 << 5) != 0 {
        status |= Status::INEXACT;
    }
    raise(f, status, false);
    f.fsw = (f.fsw & !FSW_C1) | (g.fsw & FSW_C1);
    r
}
