//! x87 arithmetic, the part compiled userspace (glibc, fio's `long double`
//! code) uses: loads and stores of 32/64/80-bit floats and 16/32/64-bit
//! integers, FLD1/FLDZ, the four operations with their reversed and
//! popping forms, FXCH, FCHS, FABS, FRNDINT, and the compares (FCOM*,
//! FUCOM*, FCOMI*, FUCOMI*, FICOM*, FTST); `more` has the rest.
//!
//! Values are 80-bit extended floats computed with `rustc_apfloat`'s
//! x87 format (64-bit significand, rounding as FCW.RC says), so results
//! are bit-exact with the hardware's for finite operands. The stack lives
//! in the ST-ordered register array of the FXSAVE image (`Fpu::st`):
//! a push rotates it one way and a pop the other, with TOP in FSW bits
//! 13:11 and the abridged tag word per physical register. Exception
//! flags (IE, ZE, OE, UE, PE, SF) are set in FSW; an unmasked one sets
//! ES and B, and the next waiting x87 or MMX instruction raises #MF.
//!
//! Modelled as this host's CPU does them, each in its own module:
//! precision control (`precision`: FCW.PC rounds to 24, 53 or 64 bits),
//! tininess judged after rounding (`tininess`), the unmasked-exception
//! responses (`response`), FOP/FIP/FDP and the environment and state
//! images (`control`, `save`), the transcendentals by the host's own x87
//! (`transcend`, `native`).

use std::cmp::Ordering;

use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};
use rustc_apfloat::ieee::{Double, Single, X87DoubleExtended as F80};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

use super::ops;

mod control;
#[cfg(test)]
mod hostcheck;
mod more;
mod native;
mod precision;
mod response;
pub mod save;
mod tininess;
mod transcend;
use crate::core::Core;
use crate::cpu::{Fpu, CR0_EM, CR0_NE, CR0_TS};
use crate::exception::{ExecResult, Fault, Stop, MF, NM};
use crate::flags::{AF, CF, OF, PF, SF, ZF};

const FSW_IE: u16 = 1 << 0;
const FSW_SF: u16 = 1 << 6;
const FSW_ES: u16 = 1 << 7;
const FSW_C0: u16 = 1 << 8;
const FSW_C1: u16 = 1 << 9;
const FSW_C2: u16 = 1 << 10;
const FSW_C3: u16 = 1 << 14;
const FSW_B: u16 = 1 << 15;
const FSW_TOP: u16 = 0x3800;

/// The QNaN "real indefinite" a masked invalid operation produces.
const INDEFINITE: u128 = (0xffffu128 << 64) | 0xc000_0000_0000_0000;

/// Whether `m` is one of the x87 instructions this module executes.
pub fn handles(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fld
            | M::Fild
            | M::Fst
            | M::Fstp
            | M::Fist
            | M::Fistp
            | M::Fld1
            | M::Fldz
            | M::Fadd
            | M::Faddp
            | M::Fiadd
            | M::Fsub
            | M::Fsubp
            | M::Fisub
            | M::Fsubr
            | M::Fsubrp
            | M::Fisubr
            | M::Fmul
            | M::Fmulp
            | M::Fimul
            | M::Fdiv
            | M::Fdivp
            | M::Fidiv
            | M::Fdivr
            | M::Fdivrp
            | M::Fidivr
            | M::Fxch
            | M::Fchs
            | M::Fabs
            | M::Frndint
            | M::Fcom
            | M::Fcomp
            | M::Fcompp
            | M::Fucom
            | M::Fucomp
            | M::Fucompp
            | M::Fcomi
            | M::Fcomip
            | M::Fucomi
            | M::Fucomip
            | M::Ftst
            | M::Ficom
            | M::Ficomp
            | M::Fnop
            | M::Fisttp
            | M::Fstpnce
    ) || more::handles(m)
        || control::handles(m)
        || save::handles(m)
        || transcend::handles(m)
}

fn check(core: &Core) -> ExecResult {
    if core.cpu.cr0 & (CR0_EM | CR0_TS) != 0 {
        return Err(Fault::new(NM).into());
    }
    if core.cpu.cr0 & CR0_NE != 0 && core.cpu.fpu.fsw & FSW_ES != 0 {
        return Err(Fault::new(MF).into());
    }
    Ok(())
}

fn round(f: &Fpu) -> Round {
    match (f.fcw >> 10) & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

fn top(f: &Fpu) -> usize {
    usize::from((f.fsw & FSW_TOP) >> 11)
}

fn set_top(f: &mut Fpu, t: usize) {
    f.fsw = (f.fsw & !FSW_TOP) | (((t & 7) as u16) << 11);
}

/// Whether ST(j) holds a value (abridged tag of its physical register).
fn valid(f: &Fpu, j: usize) -> bool {
    (f.ftw >> ((top(f) + j) % 8)) & 1 != 0
}

/// Records exception flags `s` (and SF for a stack fault); unmasked ones
/// make an exception pending.
fn raise(f: &mut Fpu, s: Status, stack: bool) {
    let mut bits = 0u16;
    if s.contains(Status::INVALID_OP) {
        bits |= FSW_IE;
    }
    if s.contains(Status::DIV_BY_ZERO) {
        bits |= 1 << 2;
    }
    if s.contains(Status::OVERFLOW) {
        bits |= 1 << 3;
    }
    if s.contains(Status::UNDERFLOW) {
        bits |= 1 << 4;
    }
    if s.contains(Status::INEXACT) {
        bits |= 1 << 5;
    }
    if stack {
        bits |= FSW_SF;
    }
    f.fsw |= bits;
    if bits & 0x3f & !f.fcw != 0 {
        f.fsw |= FSW_ES | FSW_B;
    }
}

const SIGN: u128 = 1 << 79;
const INT_BIT: u128 = 1 << 63;
const QUIET: u128 = 1 << 62;
const SIG: u128 = u64::MAX as u128;
const FSW_DE: u16 = 1 << 1;

fn exponent(x: u128) -> u128 {
    (x >> 64) & 0x7fff
}

/// Encodings the x87 rejects as operands (unnormals, pseudo-NaNs and
/// pseudo-infinities): the integer bit clear with a nonzero exponent.
fn unsupported(x: u128) -> bool {
    exponent(x) != 0 && x & INT_BIT == 0
}

fn is_nan(x: u128) -> bool {
    exponent(x) == 0x7fff && x & INT_BIT != 0 && x & (SIG >> 1) != 0
}

fn is_snan(x: u128) -> bool {
    is_nan(x) && x & QUIET == 0
}

fn denormal(x: u128) -> bool {
    exponent(x) == 0 && x & SIG != 0
}

fn f80(x: u128) -> F80 {
    F80::from_bits(x)
}

/// The masked response to NaN or unsupported operands, if any: the
/// indefinite for an unsupported one, else the quieted NaN the x87 picks
/// (a QNaN over an SNaN, else the larger significand, else the positive).
fn nan_operands(f: &mut Fpu, a: u128, b: Option<u128>) -> Option<u128> {
    let ops = [Some(a), b];
    if ops.iter().flatten().any(|&x| unsupported(x)) {
        raise(f, Status::INVALID_OP, false);
        return Some(INDEFINITE);
    }
    if ops.iter().flatten().any(|&x| is_snan(x)) {
        raise(f, Status::INVALID_OP, false);
    }
    match b {
        _ if !is_nan(a) && !b.is_some_and(is_nan) => None,
        None => Some(a | QUIET),
        Some(b) if !is_nan(b) => Some(a | QUIET),
        Some(b) if !is_nan(a) => Some(b | QUIET),
        Some(b) => Some(match (is_snan(a), is_snan(b)) {
            (true, false) => b,
            (false, true) => a,
            _ if b & SIG > a & SIG => b | QUIET,
            // Equal significands: the positive one.
            _ if b & SIG == a & SIG && a & SIGN != 0 => b | QUIET,
            _ => a | QUIET,
        }),
    }
}

fn note_denormals(f: &mut Fpu, xs: &[u128]) {
    if xs.iter().any(|&x| denormal(x)) {
        f.fsw |= FSW_DE;
        if f.fcw & FSW_DE == 0 {
            f.fsw |= FSW_ES | FSW_B;
        }
    }
}

/// Sets C1 when rounding made the result's magnitude larger than the
/// truncated one (`exact_bits` is the result rounded toward zero).
fn set_c1(f: &mut Fpu, status: Status, bits: u128, toward_zero_bits: u128) {
    f.fsw &= !FSW_C1;
    if status.contains(Status::INEXACT) && bits != toward_zero_bits {
        f.fsw |= FSW_C1;
    }
}

fn to_bytes(v: u128) -> [u8; 10] {
    let b = v.to_le_bytes();
    let mut r = [0u8; 10];
    r.copy_from_slice(&b[..10]);
    r
}

fn from_bytes(b: &[u8]) -> u128 {
    let mut x = [0u8; 16];
    x[..10].copy_from_slice(&b[..10]);
    u128::from_le_bytes(x)
}

/// ST(j) as raw 80-bit bits; an empty register is a stack underflow and
/// reads as the indefinite QNaN.
fn st(f: &mut Fpu, j: usize) -> u128 {
    if !valid(f, j) {
        f.fsw &= !FSW_C1;
        raise(f, Status::INVALID_OP, true);
        return INDEFINITE;
    }
    from_bytes(&f.st[j])
}

fn set_st(f: &mut Fpu, j: usize, v: u128) {
    f.st[j][..10].copy_from_slice(&to_bytes(v));
    let phys = (top(f) + j) % 8;
    f.ftw |= 1 << phys;
}

/// Pushes `v`; a full stack is an overflow and pushes the indefinite.
fn push(f: &mut Fpu, v: u128) {
    let t = (top(f) + 7) % 8;
    let v = if (f.ftw >> t) & 1 != 0 {
        f.fsw |= FSW_C1;
        raise(f, Status::INVALID_OP, true);
        INDEFINITE
    } else {
        v
    };
    set_top(f, t);
    f.st.rotate_right(1);
    set_st(f, 0, v);
}

fn pop(f: &mut Fpu) {
    let t = top(f);
    f.ftw &= !(1 << t);
    set_top(f, t + 1);
    f.st.rotate_left(1);
}

fn st_index(r: Register) -> Option<usize> {
    let v = r as u32;
    if (Register::ST0 as u32..=Register::ST7 as u32).contains(&v) {
        Some((v - Register::ST0 as u32) as usize)
    } else {
        None
    }
}

/// Widens a 32- or 64-bit float (`frac` fraction bits) to extended:
/// exact, NaNs keep their payload and kind (the caller quiets an SNaN
/// and decides on IE), and whether the source was a denormal is the
/// second value (the caller decides on DE).
fn widen(raw: u128, frac: u32, exp_bits: u32) -> (u128, bool) {
    let sign = (raw >> (frac + exp_bits)) & 1;
    let e = (raw >> frac) & ((1 << exp_bits) - 1);
    let m = raw & ((1 << frac) - 1);
    if e == (1 << exp_bits) - 1 && m != 0 {
        let v = (sign << 79) | (0x7fffu128 << 64) | INT_BIT | (m << (63 - frac));
        return (v, false);
    }
    let mut lost = false;
    let r: StatusAnd<F80> = if frac == 23 {
        Single::from_bits(raw).convert(&mut lost)
    } else {
        Double::from_bits(raw).convert(&mut lost)
    };
    (r.value.to_bits(), e == 0 && m != 0)
}

/// Reads a memory operand as an extended value (exact for every format)
/// and whether it was a 32/64-bit denormal.
fn load(core: &mut Core, ins: &Instruction, i: u32) -> ExecResult<(u128, bool)> {
    let size = ins.memory_size();
    let n = size.size().min(10);
    let (s, off) = ops::mem_loc(core, ins, i);
    let mut b = [0u8; 16];
    core.read_seg_buf(s, off, &mut b[..n])?;
    let raw = u128::from_le_bytes(b);
    let int = |v: i128| (F80::from_i128(v).value.to_bits(), false);
    Ok(match size {
        MemorySize::Float32 => widen(raw, 23, 8),
        MemorySize::Float64 => widen(raw, 52, 11),
        MemorySize::Float80 => (raw, false),
        MemorySize::Int16 => int(i128::from(raw as u16 as i16)),
        MemorySize::Int32 => int(i128::from(raw as u32 as i32)),
        MemorySize::Int64 => int(i128::from(raw as u64 as i64)),
        _ => return Err(Stop::Unsupported),
    })
}

/// Narrows to a 32- or 64-bit float as FST does; returns the bits.
fn narrow(f: &mut Fpu, v: u128, frac: u32, exp_bits: u32) -> u128 {
    let sign = (v >> 79) & 1;
    let top_bits = (sign << exp_bits) | ((1 << exp_bits) - 1);
    if unsupported(v) {
        // The negative QNaN indefinite of the narrow format.
        raise(f, Status::INVALID_OP, false);
        let indefinite = (1 << exp_bits) | ((1 << exp_bits) - 1);
        return (indefinite << frac) | (1 << (frac - 1));
    }
    if is_nan(v) {
        if is_snan(v) {
            raise(f, Status::INVALID_OP, false);
        }
        let m = ((v & (SIG >> 1)) >> (63 - frac)) | (1 << (frac - 1));
        return (top_bits << frac) | m;
    }
    // A denormal source flags no DE here (UE/PE say what happened).
    let rc = round(f);
    let mut lost = false;
    let (r, z) = if frac == 23 {
        let r: StatusAnd<Single> = f80(v).convert_r(rc, &mut lost);
        let z: StatusAnd<Single> = f80(v).convert_r(Round::TowardZero, &mut lost);
        (r.map(|x| x.to_bits()), z.value.to_bits())
    } else {
        let r: StatusAnd<Double> = f80(v).convert_r(rc, &mut lost);
        let z: StatusAnd<Double> = f80(v).convert_r(Round::TowardZero, &mut lost);
        (r.map(|x| x.to_bits()), z.value.to_bits())
    };
    // Tininess is judged after rounding (`tininess`), overflow on the
    // exact value. Unmasked, underflow is reported for a tiny value
    // even when exact.
    let mut status = r.status;
    status.remove(Status::UNDERFLOW);
    let tiny = tininess::tiny_store(f, v, frac, exp_bits);
    if tiny && (status.contains(Status::INEXACT) || f.fcw & (1 << 4) == 0) {
        status |= Status::UNDERFLOW;
    }
    if exponent(v) != 0x7fff && exponent(v) as i64 - 16383 >= 1 << (exp_bits - 1) {
        status |= Status::OVERFLOW | Status::INEXACT;
    }
    raise(f, status, false);
    set_c1(f, status, r.value, z);
    r.value
}

/// Converts `v` to the memory operand's format and stores it; the
/// flags change only once the store is done.
fn store(core: &mut Core, ins: &Instruction, v: u128) -> ExecResult {
    let size = ins.memory_size();
    let mut f = core.cpu.fpu;
    let (bits, n): (u128, usize) = match size {
        MemorySize::Float32 => (narrow(&mut f, v, 23, 8), 4),
        MemorySize::Float64 => (narrow(&mut f, v, 52, 11), 8),
        MemorySize::Float80 => (v, 10),
        MemorySize::Int16 | MemorySize::Int32 | MemorySize::Int64 => {
            let n = size.size();
            let indefinite = 1u128 << (8 * n - 1);
            if unsupported(v) || exponent(v) == 0x7fff {
                raise(&mut f, Status::INVALID_OP, false);
                (indefinite, n)
            } else {
                // FISTTP (SSE3) truncates whatever FCW.RC says.
                let rc = if ins.mnemonic() == Mnemonic::Fisttp {
                    Round::TowardZero
                } else {
                    round(&f)
                };
                let mut exact = false;
                let r = f80(v).to_i128_r(8 * n, rc, &mut exact);
                let z = f80(v).to_i128_r(8 * n, Round::TowardZero, &mut exact);
                if r.status.contains(Status::INVALID_OP) {
                    raise(&mut f, Status::INVALID_OP, false);
                    (indefinite, n)
                } else {
                    raise(&mut f, r.status, false);
                    set_c1(&mut f, r.status, r.value as u128, z.value as u128);
                    (r.value as u128 & ((1u128 << (8 * n)) - 1), n)
                }
            }
        }
        _ => return Err(Stop::Unsupported),
    };
    if response::stops(&f, response::Stopped::Store) {
        // Nothing stored; the caller's undo keeps the stack.
        core.cpu.fpu = f;
        return Ok(());
    }
    let (s, off) = ops::mem_loc(core, ins, 0);
    core.write_seg_buf(s, off, &bits.to_le_bytes()[..n])?;
    core.cpu.fpu = f;
    Ok(())
}

fn arith(m: Mnemonic, a: F80, b: F80, rc: Round) -> StatusAnd<F80> {
    use Mnemonic as M;
    match m {
        M::Fadd | M::Faddp | M::Fiadd => a.add_r(b, rc),
        M::Fsub | M::Fsubp | M::Fisub => a.sub_r(b, rc),
        M::Fsubr | M::Fsubrp | M::Fisubr => b.sub_r(a, rc),
        M::Fmul | M::Fmulp | M::Fimul => a.mul_r(b, rc),
        M::Fdiv | M::Fdivp | M::Fidiv => a.div_r(b, rc),
        _ => b.div_r(a, rc),
    }
}

/// Whether an operation whose result was rounded to the largest finite
/// magnitude overflowed (its exact result is 2^16384 or more): redone
/// with an operand halved (or the divisor doubled) where that is exact,
/// its truncated result then reaches 2^16383.
fn overflowed(m: Mnemonic, a: u128, b: u128) -> bool {
    use Mnemonic as M;
    let half = |x: u128| {
        if exponent(x) > 1 {
            f80(x).scalbn(-1)
        } else {
            f80(x)
        }
    };
    let (a2, b2) = match m {
        M::Fmul | M::Fmulp | M::Fimul if exponent(a) >= exponent(b) => (half(a), f80(b)),
        M::Fmul | M::Fmulp | M::Fimul => (f80(a), half(b)),
        M::Fdiv | M::Fdivp | M::Fidiv if exponent(a) > 1 => (half(a), f80(b)),
        M::Fdiv | M::Fdivp | M::Fidiv => (f80(a), f80(b).scalbn(1)),
        M::Fdivr | M::Fdivrp | M::Fidivr if exponent(b) > 1 => (f80(a), half(b)),
        M::Fdivr | M::Fdivrp | M::Fidivr => (f80(a).scalbn(1), f80(b)),
        _ => (half(a), half(b)),
    };
    exponent(arith(m, a2, b2, Round::TowardZero).value.to_bits()) >= 0x7ffe
}

/// One of the four operations on raw extended values with the x87's
/// masked responses: NaN and unsupported operands, the indefinite for an
/// invalid operation, DE for denormal operands, C1 for rounding up.
fn compute(f: &mut Fpu, m: Mnemonic, a: u128, b: u128, b_denormal: bool) -> u128 {
    // NaN and unsupported operands take precedence over DE.
    if let Some(r) = nan_operands(f, a, Some(b)) {
        return r;
    }
    // Division by zero reports ZE alone, even with a denormal dividend.
    let divisor = match m {
        Mnemonic::Fdivr | Mnemonic::Fdivrp | Mnemonic::Fidivr => a,
        Mnemonic::Fdiv | Mnemonic::Fdivp | Mnemonic::Fidiv => b,
        _ => 1,
    };
    if divisor & !SIGN != 0 {
        note_denormals(f, &[a, b, u128::from(b_denormal)]);
    }
    let r = arith(m, f80(a), f80(b), round(f));
    if r.status.contains(Status::INVALID_OP) {
        raise(f, Status::INVALID_OP, false);
        return INDEFINITE;
    }
    let z = arith(m, f80(a), f80(b), Round::TowardZero);
    let zb = z.value.to_bits();
    let over = z.status.contains(Status::OVERFLOW)
        || r.status.contains(Status::OVERFLOW)
        || (zb & !SIGN == (0x7ffe << 64) | SIG && overflowed(m, a, b));
    let tiny = tininess::tiny(f, m, a, b, zb, z.status);
    if (over && f.fcw & (1 << 3) == 0) || (tiny && f.fcw & (1 << 4) == 0) {
        return response::biased(f, m, a, b, over);
    }
    if let Some(p) = precision::narrow_precision(f) {
        return precision::round_to(f, z, r.value.to_bits(), p, over, tiny);
    }
    let mut status = r.status;
    status.remove(Status::UNDERFLOW);
    if status.contains(Status::INEXACT) && tiny {
        status |= Status::UNDERFLOW;
    }
    // A directed rounding control's largest finite result may hide an
    // overflow the x87 flags.
    let bits = r.value.to_bits();
    if status.contains(Status::INEXACT)
        && bits & !SIGN == (0x7ffe << 64) | SIG
        && overflowed(m, a, b)
    {
        status |= Status::OVERFLOW;
    }
    raise(f, status, false);
    set_c1(f, status, bits, z.value.to_bits());
    bits
}

/// Compares for FCOM*/FUCOM*/FCOMI*: `None` when unordered. FCOM forms
/// signal invalid for any NaN, FUCOM forms only for a signaling one.
fn compare(f: &mut Fpu, a: u128, b: u128, b_denormal: bool, ordered: bool) -> Option<Ordering> {
    if unsupported(a) || unsupported(b) {
        raise(f, Status::INVALID_OP, false);
        return None;
    }
    if is_nan(a) || is_nan(b) {
        if ordered || is_snan(a) || is_snan(b) {
            raise(f, Status::INVALID_OP, false);
        }
        return None;
    }
    note_denormals(f, &[a, b, u128::from(b_denormal)]);
    f80(a).partial_cmp(&f80(b))
}

/// Checks the registers an operation reads: if one is empty, FSW goes
/// back to `saved` (dropping flags a memory operand's conversion set)
/// with a stack underflow (IE, SF, C1 clear) added, and the operation
/// is not carried out.
fn underflow(f: &mut Fpu, saved: u16, regs: &[Option<usize>]) -> bool {
    if regs.iter().flatten().all(|&j| valid(f, j)) {
        return false;
    }
    f.fsw = saved & !FSW_C1;
    raise(f, Status::INVALID_OP, true);
    true
}

/// The other ST register operand of a register form (ST(1) if none).
fn other_st(ins: &Instruction) -> usize {
    (0..ins.op_count())
        .filter(|&i| ins.op_kind(i) == OpKind::Register)
        .filter_map(|i| st_index(ins.op_register(i)))
        .max()
        .unwrap_or(1)
}

/// Executes an x87 instruction [`handles`] names. A faulting one
/// leaves the x87 state as it was; one that completes is recorded in
/// FIP (and FOP and FDP when it raised an unmasked exception).
pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    if control::handles(m) {
        return control::exec(core, ins, m);
    }
    if save::handles(m) {
        return save::exec(core, ins, m);
    }
    check(core)?;
    let before = core.cpu.fpu;
    let flags = core.cpu.flags;
    // ES and SF are cleared while the instruction runs so that they
    // show whether this instruction raised an unmasked exception or a
    // stack fault.
    core.cpu.fpu.fsw &= !(FSW_ES | FSW_B | FSW_SF);
    if let Err(e) = exec_op(core, ins, m) {
        core.cpu.fpu = before;
        return Err(e);
    }
    let unmasked = core.cpu.fpu.fsw & FSW_ES != 0;
    if unmasked {
        let how = stopped_kind(ins, m);
        if response::stops(&core.cpu.fpu, how) {
            response::undo(core, &before, flags, how);
        }
    }
    core.cpu.fpu.fsw |= before.fsw & (FSW_ES | FSW_B | FSW_SF);
    control::record(core, ins, unmasked);
    Ok(())
}

/// How an unmasked exception stops `m` (see `response`).
fn stopped_kind(ins: &Instruction, m: Mnemonic) -> response::Stopped {
    use response::Stopped;
    use Mnemonic as M;
    let mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
    match m {
        M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp
        | M::Ficom
        | M::Ficomp
        | M::Ftst
        | M::Fcomi
        | M::Fcomip
        | M::Fucomi
        | M::Fucomip => Stopped::Compare,
        M::Fst | M::Fstp | M::Fist | M::Fistp | M::Fisttp | M::Fbstp if mem => Stopped::Store,
        M::Fld | M::Fild => Stopped::Load,
        _ => Stopped::Other,
    }
}

/// Carries out an x87 arithmetic instruction.
fn exec_op(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    if transcend::handles(m) {
        transcend::exec(&mut core.cpu.fpu, m);
        return Ok(());
    }
    let mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
    match m {
        M::Fld | M::Fild => {
            let saved = core.cpu.fpu.fsw;
            let (mut v, den, empty) = if mem {
                let (v, den) = load(core, ins, 0)?;
                (v, den, false)
            } else {
                let j = other_st(ins);
                let empty = !valid(&core.cpu.fpu, j);
                (st(&mut core.cpu.fpu, j), false, empty)
            };
            let f = &mut core.cpu.fpu;
            let narrow = matches!(ins.memory_size(), MemorySize::Float32 | MemorySize::Float64);
            if valid(f, 7) {
                // Stack overflow: only its own flags (push sets them), or
                // the underflow of an empty source.
                if !empty {
                    f.fsw = saved;
                }
            } else {
                if den {
                    note_denormals(f, &[1]);
                }
                if mem && narrow && is_snan(v) {
                    raise(f, Status::INVALID_OP, false);
                    v |= QUIET;
                }
            }
            f.fsw &= !FSW_C1;
            push(f, v);
            if empty {
                f.fsw &= !FSW_C1;
            }
        }
        M::Fnop => {}
        M::Fld1 | M::Fldz => {
            let f = &mut core.cpu.fpu;
            f.fsw &= !FSW_C1;
            let v = if m == M::Fld1 {
                F80::from_u128(1).value.to_bits()
            } else {
                0
            };
            push(f, v);
        }
        M::Fst | M::Fstp | M::Fstpnce | M::Fist | M::Fistp | M::Fisttp => {
            if mem {
                let v = st(&mut core.cpu.fpu, 0);
                core.cpu.fpu.fsw &= !FSW_C1;
                store(core, ins, v)?;
            } else {
                let f = &mut core.cpu.fpu;
                let j = other_st(ins);
                if m == M::Fstpnce && !valid(f, 0) {
                    // FSTPNCE (D9 D8+i) of an empty ST(0) only pops: no
                    // exception, ST(i) untouched (host results).
                    f.fsw &= !FSW_C1;
                } else {
                    let v = st(f, 0);
                    f.fsw &= !FSW_C1;
                    set_st(f, j, v);
                }
            }
            if matches!(m, M::Fstp | M::Fstpnce | M::Fistp | M::Fisttp) {
                pop(&mut core.cpu.fpu);
            }
        }
        M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr => {
            // Memory forms: ST(0) = ST(0) op m. Register forms: the first
            // operand is both destination and left operand.
            let saved = core.cpu.fpu.fsw;
            let (dst, src, (b, den)) = if mem {
                (0, None, load(core, ins, 0)?)
            } else {
                let d = st_index(ins.op_register(0)).unwrap_or(0);
                let s = st_index(ins.op_register(1)).unwrap_or(0);
                (d, Some(s), (0, false))
            };
            let f = &mut core.cpu.fpu;
            f.fsw &= !FSW_C1;
            let r = if underflow(f, saved, &[Some(dst), src]) {
                INDEFINITE
            } else {
                let a = st(f, dst);
                let b = src.map_or(b, |s| st(f, s));
                compute(f, m, a, b, den)
            };
            set_st(f, dst, r);
            if matches!(
                m,
                M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp
            ) {
                pop(f);
            }
        }
        M::Fxch => {
            let j = other_st(ins);
            let f = &mut core.cpu.fpu;
            let a = st(f, 0);
            let b = st(f, j);
            set_st(f, 0, b);
            set_st(f, j, a);
            f.fsw &= !FSW_C1;
        }
        M::Fchs | M::Fabs => {
            let f = &mut core.cpu.fpu;
            f.fsw &= !FSW_C1;
            let v = if underflow(f, f.fsw, &[Some(0)]) {
                INDEFINITE
            } else {
                let a = st(f, 0);
                if m == M::Fchs {
                    a ^ SIGN
                } else {
                    a & !SIGN
                }
            };
            set_st(f, 0, v);
        }
        M::Frndint => {
            let f = &mut core.cpu.fpu;
            f.fsw &= !FSW_C1;
            let a = st(f, 0);
            let v = match nan_operands(f, a, None) {
                Some(v) => v,
                None => {
                    note_denormals(f, &[a]);
                    let r = f80(a).round_to_integral(round(f));
                    let z = f80(a).round_to_integral(Round::TowardZero);
                    raise(f, r.status, false);
                    let bits = r.value.to_bits();
                    set_c1(f, r.status, bits & !SIGN, z.value.to_bits() & !SIGN);
                    bits
                }
            };
            set_st(f, 0, v);
        }
        M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => {
            let j = other_st(ins);
            let f = &mut core.cpu.fpu;
            let ord = if underflow(f, f.fsw, &[Some(0), Some(j)]) {
                None
            } else {
                let a = st(f, 0);
                let b = st(f, j);
                compare(f, a, b, false, matches!(m, M::Fcomi | M::Fcomip))
            };
            if matches!(m, M::Fcomip | M::Fucomip) {
                pop(f);
            }
            let fl = match ord {
                None => ZF | PF | CF,
                Some(Ordering::Less) => CF,
                Some(Ordering::Equal) => ZF,
                Some(Ordering::Greater) => 0,
            };
            let old = core.cpu.flags.get() & !(OF | SF | AF | ZF | PF | CF);
            core.cpu.flags.set_arith(old | fl);
        }
        M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp
        | M::Ftst
        | M::Ficom
        | M::Ficomp => {
            let saved = core.cpu.fpu.fsw;
            let (src, (b, den)) = if mem {
                (None, load(core, ins, 0)?)
            } else if m == M::Ftst {
                (None, (0, false))
            } else {
                (Some(other_st(ins)), (0, false))
            };
            let f = &mut core.cpu.fpu;
            let ordered = !matches!(m, M::Fucom | M::Fucomp | M::Fucompp);
            let ord = if underflow(f, saved, &[Some(0), src]) {
                None
            } else {
                let a = st(f, 0);
                let b = src.map_or(b, |s| st(f, s));
                compare(f, a, b, den, ordered)
            };
            let cc = match ord {
                None => FSW_C3 | FSW_C2 | FSW_C0,
                Some(Ordering::Less) => FSW_C0,
                Some(Ordering::Equal) => FSW_C3,
                Some(Ordering::Greater) => 0,
            };
            f.fsw = (f.fsw & !(FSW_C3 | FSW_C2 | FSW_C1 | FSW_C0)) | cc;
            if matches!(m, M::Fcomp | M::Fucomp | M::Fcompp | M::Fucompp | M::Ficomp) {
                pop(f);
            }
            if matches!(m, M::Fcompp | M::Fucompp) {
                pop(f);
            }
        }
        _ => return more::exec(core, ins, m),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_of(v: u128) -> f64 {
        let mut lost = false;
        let d: StatusAnd<Double> = f80(v).convert(&mut lost);
        f64::from_bits(d.value.to_bits() as u64)
    }

    fn of_f64(x: f64) -> u128 {
        widen(u128::from(x.to_bits()), 52, 11).0
    }

    #[test]
    fn stack_push_pop_and_tags() {
        let mut f = Fpu::default();
        push(&mut f, of_f64(1.5));
        push(&mut f, of_f64(2.0));
        assert_eq!(top(&f), 6);
        assert_eq!(f.ftw, 0b1100_0000);
        assert_eq!(f64_of(st(&mut f, 0)), 2.0);
        assert_eq!(f64_of(st(&mut f, 1)), 1.5);
        pop(&mut f);
        assert_eq!(top(&f), 7);
        assert_eq!(f64_of(st(&mut f, 0)), 1.5);
        assert_eq!(f.fsw & FSW_IE, 0);
        // ST(1) is empty now: reading it underflows to the indefinite.
        let v = st(&mut f, 1);
        assert_eq!(v, INDEFINITE);
        assert_eq!(f.fsw & (FSW_IE | FSW_SF), FSW_IE | FSW_SF);
    }

    #[test]
    fn extended_precision_is_kept() {
        // 1 + 2^-60 is exact in 64 bits of significand, not in 53.
        let one = of_f64(1.0);
        let tiny = of_f64(2f64.powi(-60));
        let mut f = Fpu::default();
        let r = compute(&mut f, Mnemonic::Fadd, one, tiny, false);
        assert_eq!(r & SIG, (1 << 63) | 8);
        assert_eq!(to_bytes(one), [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
        let r = compute(&mut f, Mnemonic::Fdivr, of_f64(3.0), one, false);
        assert_eq!(f64_of(r), 1.0 / 3.0);
        assert_eq!(f.fsw & (1 << 5), 1 << 5);
        // Tiny before rounding, normal after: UE (host result).
        let mut f = Fpu::default();
        let min = 1u128 << 64 | INT_BIT;
        let r = compute(&mut f, Mnemonic::Fmul, min, (0x3ffe << 64) | SIG, false);
        assert_eq!((r, f.fsw & 0x23f), (min, 0x230));
        // Rounding down to the largest finite: OE only when the exact
        // result reaches 2^16384 (host results).
        let max = (0x7ffe << 64) | SIG;
        let mut f = Fpu {
            fcw: 0x77f,
            ..Fpu::default()
        };
        let r = compute(
            &mut f,
            Mnemonic::Fmul,
            max,
            (0x3fff << 64) | INT_BIT | 1,
            false,
        );
        assert_eq!((r, f.fsw & 0x23f), (max, 0x28));
        f.fsw = 0;
        let r = compute(
            &mut f,
            Mnemonic::Faddp,
            max,
            (0x7fbe << 64) | INT_BIT,
            false,
        );
        assert_eq!((r, f.fsw & 0x23f), (max, 0x20));
        // FST to m32 overflowing toward zero: the largest finite, OE.
        let mut f = Fpu {
            fcw: 0xf7f,
            ..Fpu::default()
        };
        let r = narrow(&mut f, (0x7ffe << 64) | 0xc000_0000_0000_0000, 23, 8);
        assert_eq!((r, f.fsw & 0x23f), (0x7f7f_ffff, 0x28));
        // 0/0 is invalid: the indefinite.
        assert_eq!(compute(&mut f, Mnemonic::Fdiv, 0, 0, false), INDEFINITE);
    }

    #[test]
    fn nan_operands_follow_the_x87() {
        let mut f = Fpu::default();
        let q = (0x7fffu128 << 64) | INT_BIT | QUIET | 5;
        let s = (0x7fffu128 << 64) | INT_BIT | 9;
        assert_eq!(nan_operands(&mut f, q, Some(s)), Some(q));
        assert_eq!(nan_operands(&mut f, s, Some(0)), Some(s | QUIET));
        assert_eq!(nan_operands(&mut f, q | SIGN, Some(q)), Some(q));
        assert_eq!(f.fsw & FSW_IE, FSW_IE);
        // An unnormal is unsupported: the indefinite.
        assert_eq!(nan_operands(&mut f, 1u128 << 64, Some(0)), Some(INDEFINITE));
    }
}
