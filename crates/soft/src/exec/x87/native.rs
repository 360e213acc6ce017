//! The x87 transcendentals (F2XM1, FYL2X, FYL2XP1, FPTAN, FPATAN, FSIN,
//! FCOS, FSINCOS) run by the host CPU's own instruction, so that their
//! results, last bits included, are the CPU's (the architecture leaves
//! them implementation-defined: an Intel and an AMD host differ there).
//!
//! The whole guest x87 state goes to the host x87 with FRSTOR (the
//! 108-byte image FNSAVE would write, with the guest's control word and
//! the exception flags cleared), the one instruction runs, FXSAVE reads
//! the state back and FNINIT leaves the host's x87 empty, as the
//! x86-64 ABI expects it between calls; the host's control word is put
//! back. Stack faults, NaN and unsupported operands, C1/C2, the
//! out-of-range case and the responses to unmasked exceptions are thus
//! the CPU's own. The guest chooses only the data: the instruction is
//! one of eight fixed ones.
//!
//! Why nothing traps on the host: an unmasked x87 exception is only
//! recorded (ES) by the instruction that raises it and delivered by the
//! next *waiting* x87 instruction. After the instruction come only
//! FXSAVE and FNINIT, which do not wait, and FNINIT clears ES before
//! the waiting FLDCW; FNCLEX before FRSTOR (which waits) clears any
//! pending host exception, and the image FRSTOR loads has no flags.
//!
//! This is the engine's only x87 inline assembly.

/// The instructions this module runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    F2xm1,
    Fyl2x,
    Fyl2xp1,
    Fptan,
    Fpatan,
    Fsin,
    Fcos,
    Fsincos,
}

/// The host's x87 state after the instruction.
pub(super) struct After {
    /// FSW: TOP, condition codes, the flags the instruction raised.
    pub fsw: u16,
    /// The abridged tag word.
    pub ftw: u8,
    /// ST(0)-ST(7), 80 bits each.
    pub st: [[u8; 10]; 8],
}

/// The memory the stub reads and writes: FXSAVE needs 16-byte
/// alignment. The offsets are the stub's: FRSTOR's image at 512, the
/// host's control word at 620, a store's destination at 624 (`out`,
/// for the tests' FST stubs).
#[repr(C, align(64))]
pub(super) struct Area {
    pub(super) fxsave: [u8; 512],
    pub(super) frstor: [u8; 108],
    pub(super) host_cw: u16,
    pub(super) out: u64,
}

macro_rules! stub {
    ($name:ident, $ins:literal) => {
        fn $name(a: &mut Area) {
            // SAFETY: the asm reads `a.frstor` (108 bytes) and writes
            // `a.fxsave` (512 bytes, 64-byte aligned), `a.host_cw` and (a
            // store's stub) `a.out`, all inside `*a`, which the exclusive
            // borrow keeps valid. It only
            // changes x87 state, declared clobbered (ST0-7 and the MMX
            // registers they alias), and leaves the host x87 as the ABI
            // wants it: empty (FNINIT) with the host's own control word.
            // No waiting instruction runs while an exception is pending
            // (see the module comment), so nothing traps.
            unsafe {
                std::arch::asm!(
                    "fnstcw word ptr [{a} + 620]",
                    "fnclex",
                    "frstor [{a} + 512]",
                    $ins,
                    "fxsave [{a}]",
                    "fninit",
                    "fldcw word ptr [{a} + 620]",
                    a = in(reg) a as *mut Area,
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    out("mm0") _, out("mm1") _, out("mm2") _, out("mm3") _,
                    out("mm4") _, out("mm5") _, out("mm6") _, out("mm7") _,
                    options(nostack),
                );
            }
        }
    };
}

#[cfg(test)]
pub(super) use stub;

stub!(f2xm1, "f2xm1");
stub!(fyl2x, "fyl2x");
stub!(fyl2xp1, "fyl2xp1");
stub!(fptan, "fptan");
stub!(fpatan, "fpatan");
stub!(fsin, "fsin");
stub!(fcos, "fcos");
stub!(fsincos, "fsincos");

/// Runs `op` on the host x87 loaded with `image` (FNSAVE's 108-byte
/// layout: 28-byte environment, then ST(0)-ST(7)).
pub(super) fn run(op: Op, image: &[u8; 108]) -> After {
    let mut a = Area {
        fxsave: [0; 512],
        frstor: *image,
        host_cw: 0,
        out: 0,
    };
    match op {
        Op::F2xm1 => f2xm1(&mut a),
        Op::Fyl2x => fyl2x(&mut a),
        Op::Fyl2xp1 => fyl2xp1(&mut a),
        Op::Fptan => fptan(&mut a),
        Op::Fpatan => fpatan(&mut a),
        Op::Fsin => fsin(&mut a),
        Op::Fcos => fcos(&mut a),
        Op::Fsincos => fsincos(&mut a),
    }
    let img = &a.fxsave;
    let mut st = [[0u8; 10]; 8];
    for (j, r) in st.iter_mut().enumerate() {
        r.copy_from_slice(&img[32 + 16 * j..42 + 16 * j]);
    }
    After {
        fsw: u16::from_le_bytes([img[2], img[3]]),
        ftw: img[4],
        st,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FSIN of 1.0 with one register valid: TOP 7, sin(1) in ST(0).
    #[test]
    fn sine_of_one_runs_on_the_host() {
        let mut image = [0u8; 108];
        image[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        image[4..6].copy_from_slice(&(7u16 << 11).to_le_bytes());
        // Physical register 7 (ST(0)) valid, the others empty.
        image[8..10].copy_from_slice(&0x3fffu16.to_le_bytes());
        let one = (0x3fffu128 << 64) | (1 << 63);
        image[28..38].copy_from_slice(&one.to_le_bytes()[..10]);
        let out = run(Op::Fsin, &image);
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&out.st[0]);
        // sin(1) = 0.8414709848078965066525...
        assert_eq!(u128::from_le_bytes(b), 0x3ffe_d76a_a478_4867_7021);
        assert_eq!((out.fsw >> 11) & 7, 7);
        assert_eq!(out.ftw, 0x80);
        assert_eq!(out.fsw & 0x20, 0x20);
    }
}
