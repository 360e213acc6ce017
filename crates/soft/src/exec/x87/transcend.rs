//! F2XM1, FYL2X, FYL2XP1, FPTAN, FPATAN, FSIN, FCOS and FSINCOS: the
//! guest's x87 state, control word included, is handed to the host
//! CPU's own instruction (`native`), whose results, condition codes,
//! stack changes and exception flags come back into the guest state,
//! with the response to an unmasked exception (ES and B set, the
//! exponent-adjusted result of an unmasked underflow) the CPU's own.

use iced_x86::Mnemonic;

use super::native::{self, Op};
use super::*;

/// Whether `m` is one of the instructions this module executes.
pub fn handles(m: Mnemonic) -> bool {
    op(m).is_some()
}

fn op(m: Mnemonic) -> Option<Op> {
    use Mnemonic as M;
    Some(match m {
        M::F2xm1 => Op::F2xm1,
        M::Fyl2x => Op::Fyl2x,
        M::Fyl2xp1 => Op::Fyl2xp1,
        M::Fptan => Op::Fptan,
        M::Fpatan => Op::Fpatan,
        M::Fsin => Op::Fsin,
        M::Fcos => Op::Fcos,
        M::Fsincos => Op::Fsincos,
        _ => return None,
    })
}

/// Executes an instruction [`handles`] names on `f`.
pub fn exec(f: &mut Fpu, m: Mnemonic) {
    let Some(op) = op(m) else {
        return;
    };
    // The host runs under the guest's FCW with no flags set, so the
    // flags it reports are the instruction's own, and an unmasked
    // exception gets the CPU's own response.
    let mut g = *f;
    g.fsw &= !(0x7f | FSW_ES | FSW_B);
    let out = native::run(op, &save::save_image(&g));
    let raised = out.fsw & 0x7f;
    let kept = FSW_C0 | FSW_C1 | FSW_C2 | FSW_C3 | FSW_TOP;
    f.fsw = (out.fsw & kept) | (f.fsw & 0x7f) | raised;
    if raised & 0x3f & !f.fcw != 0 {
        f.fsw |= FSW_ES | FSW_B;
    }
    f.ftw = out.ftw;
    for (r, v) in f.st.iter_mut().zip(out.st.iter()) {
        r[..10].copy_from_slice(v);
        r[10..].fill(0);
    }
}
