//! x87 arithmetic, the part compiled userspace (glibc, fio's `long double`
//! code) uses: loads and stores of 32/64/80-bit floats and 16/32/64-bit
//! integers, FLD1/FLDZ, the four operations with their reversed and
//! popping forms, FXCH, FCHS, FABS, FRNDINT, and the compares (FCOM*,
//! FUCOM*, FCOMI*, FUCOMI*, FTST).
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
//! Not modelled: precision control (FCW.PC; results are always rounded
//! to 64 bits, Linux's default), the denormal-operand flag, C1 as the
//! round-up indicator, FIP/FDP/FOP, and unmasked-exception results (the
//! masked response is always stored).

use std::cmp::Ordering;

use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};
use rustc_apfloat::ieee::{Double, Single, X87DoubleExtended as F80};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

use super::ops;
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
    )
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
    f.ftw >> ((top(f) + j) % 8) & 1 != 0
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

fn to_bytes(v: F80) -> [u8; 10] {
    let b = v.to_bits().to_le_bytes();
    let mut r = [0u8; 10];
    r.copy_from_slice(&b[..10]);
    r
}

fn from_bytes(b: &[u8]) -> F80 {
    let mut x = [0u8; 16];
    x[..10].copy_from_slice(&b[..10]);
    F80::from_bits(u128::from_le_bytes(x))
}

/// ST(j); an empty register is a stack underflow and reads as the
/// indefinite QNaN.
fn st(f: &mut Fpu, j: usize) -> F80 {
    if !valid(f, j) {
        f.fsw &= !FSW_C1;
        raise(f, Status::INVALID_OP, true);
        return F80::from_bits(INDEFINITE);
    }
    from_bytes(&f.st[j])
}

fn set_st(f: &mut Fpu, j: usize, v: F80) {
    f.st[j][..10].copy_from_slice(&to_bytes(v));
    let phys = (top(f) + j) % 8;
    f.ftw |= 1 << phys;
}

/// Pushes `v`; a full stack is an overflow and pushes the indefinite.
fn push(f: &mut Fpu, v: F80) {
    let t = (top(f) + 7) % 8;
    let v = if f.ftw >> t & 1 != 0 {
        f.fsw |= FSW_C1;
        raise(f, Status::INVALID_OP, true);
        F80::from_bits(INDEFINITE)
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

/// Reads a memory operand as an extended value (exact for every format).
fn load(core: &mut Core, ins: &Instruction, i: u32) -> ExecResult<F80> {
    let size = ins.memory_size();
    let n = size.size().min(10);
    let (s, off) = ops::mem_loc(core, ins, i);
    let mut b = [0u8; 16];
    core.read_seg_buf(s, off, &mut b[..n])?;
    let raw = u128::from_le_bytes(b);
    let mut lost = false;
    let r: StatusAnd<F80> = match size {
        MemorySize::Float32 => Single::from_bits(raw).convert(&mut lost),
        MemorySize::Float64 => Double::from_bits(raw).convert(&mut lost),
        MemorySize::Float80 => Status::OK.and(F80::from_bits(raw)),
        MemorySize::Int16 => F80::from_i128(i128::from(raw as u16 as i16)),
        MemorySize::Int32 => F80::from_i128(i128::from(raw as u32 as i32)),
        MemorySize::Int64 => F80::from_i128(i128::from(raw as u64 as i64)),
        _ => return Err(Stop::Unsupported),
    };
    raise(&mut core.cpu.fpu, r.status, false);
    Ok(r.value)
}

/// Converts `v` to the memory operand's format and stores it.
fn store(core: &mut Core, ins: &Instruction, v: F80) -> ExecResult {
    let size = ins.memory_size();
    let rc = round(&core.cpu.fpu);
    let mut lost = false;
    let (status, bits, n): (Status, u128, usize) = match size {
        MemorySize::Float32 => {
            let r: StatusAnd<Single> = v.convert_r(rc, &mut lost);
            (r.status, r.value.to_bits(), 4)
        }
        MemorySize::Float64 => {
            let r: StatusAnd<Double> = v.convert_r(rc, &mut lost);
            (r.status, r.value.to_bits(), 8)
        }
        MemorySize::Float80 => (Status::OK, v.to_bits(), 10),
        MemorySize::Int16 | MemorySize::Int32 | MemorySize::Int64 => {
            let n = size.size();
            let mut exact = false;
            let r = v.to_i128_r(8 * n, rc, &mut exact);
            if r.status.contains(Status::INVALID_OP) {
                // NaN or out of range: the integer indefinite.
                (Status::INVALID_OP, 1u128 << (8 * n - 1), n)
            } else {
                (r.status, r.value as u128, n)
            }
        }
        _ => return Err(Stop::Unsupported),
    };
    let (s, off) = ops::mem_loc(core, ins, 0);
    core.write_seg_buf(s, off, &bits.to_le_bytes()[..n])?;
    raise(&mut core.cpu.fpu, status, false);
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

/// Compares for FCOM*/FUCOM*/FCOMI*: `None` when unordered. FCOM forms
/// signal invalid for any NaN, FUCOM forms only for a signaling one.
fn compare(f: &mut Fpu, a: F80, b: F80, ordered: bool) -> Option<Ordering> {
    let r = a.partial_cmp(&b);
    if r.is_none() && (ordered || a.is_signaling() || b.is_signaling()) {
        raise(f, Status::INVALID_OP, false);
    }
    r
}

/// Executes an x87 instruction [`handles`] names.
pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    check(core)?;
    let mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
    match m {
        M::Fld | M::Fild => {
            let v = if mem {
                load(core, ins, 0)?
            } else {
                let j = st_index(ins.op_register(0)).unwrap_or(0);
                st(&mut core.cpu.fpu, j)
            };
            let f = &mut core.cpu.fpu;
            f.fsw &= !FSW_C1;
            push(f, v);
        }
        M::Fld1 | M::Fldz => {
            let f = &mut core.cpu.fpu;
            f.fsw &= !FSW_C1;
            let v = if m == M::Fld1 {
                F80::from_u128(1).value
            } else {
                F80::ZERO
            };
            push(f, v);
        }
        M::Fst | M::Fstp | M::Fist | M::Fistp => {
            let v = st(&mut core.cpu.fpu, 0);
            if mem {
                store(core, ins, v)?;
            } else {
                let j = st_index(ins.op_register(0)).unwrap_or(0);
                set_st(&mut core.cpu.fpu, j, v);
            }
            let f = &mut core.cpu.fpu;
            f.fsw &= !FSW_C1;
            if matches!(m, M::Fstp | M::Fistp) {
                pop(f);
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
            let (dst, a, b) = if mem {
                let b = load(core, ins, 0)?;
                (0, st(&mut core.cpu.fpu, 0), b)
            } else {
                let d = st_index(ins.op_register(0)).unwrap_or(0);
                let s = st_index(ins.op_register(1)).unwrap_or(0);
                let f = &mut core.cpu.fpu;
                let a = st(f, d);
                (d, a, st(f, s))
            };
            let f = &mut core.cpu.fpu;
            let r = arith(m, a, b, round(f));
            raise(f, r.status, false);
            f.fsw &= !FSW_C1;
            set_st(f, dst, r.value);
            if matches!(m, M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp) {
                pop(f);
            }
        }
        M::Fxch => {
            let j = (0..ins.op_count())
                .filter_map(|i| st_index(ins.op_register(i)))
                .max()
                .unwrap_or(1);
            let f = &mut core.cpu.fpu;
            let a = st(f, 0);
            let b = st(f, j);
            set_st(f, 0, b);
            set_st(f, j, a);
            f.fsw &= !FSW_C1;
        }
        M::Fchs | M::Fabs | M::Frndint => {
            let f = &mut core.cpu.fpu;
            let a = st(f, 0);
            let v = match m {
                M::Fchs => -a,
                M::Fabs => a.abs(),
                _ => {
                    let r = a.round_to_integral(round(f));
                    raise(f, r.status, false);
                    r.value
                }
            };
            f.fsw &= !FSW_C1;
            set_st(f, 0, v);
        }
        M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => {
            let j = st_index(ins.op_register(1)).unwrap_or(1);
            let f = &mut core.cpu.fpu;
            let a = st(f, 0);
            let b = st(f, j);
            let ord = compare(f, a, b, matches!(m, M::Fcomi | M::Fcomip));
            f.fsw &= !FSW_C1;
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
        M::Fcom | M::Fcomp | M::Fcompp | M::Fucom | M::Fucomp | M::Fucompp | M::Ftst => {
            let b = if mem {
                load(core, ins, 0)?
            } else if m == M::Ftst {
                F80::ZERO
            } else {
                let j = (0..ins.op_count())
                    .filter_map(|i| st_index(ins.op_register(i)))
                    .max()
                    .unwrap_or(1);
                st(&mut core.cpu.fpu, j)
            };
            let f = &mut core.cpu.fpu;
            let a = st(f, 0);
            let ordered = !matches!(m, M::Fucom | M::Fucomp | M::Fucompp);
            let cc = match compare(f, a, b, ordered) {
                None => FSW_C3 | FSW_C2 | FSW_C0,
                Some(Ordering::Less) => FSW_C0,
                Some(Ordering::Equal) => FSW_C3,
                Some(Ordering::Greater) => 0,
            };
            f.fsw = (f.fsw & !(FSW_C3 | FSW_C2 | FSW_C1 | FSW_C0)) | cc;
            if matches!(m, M::Fcomp | M::Fucomp | M::Fcompp | M::Fucompp) {
                pop(f);
            }
            if matches!(m, M::Fcompp | M::Fucompp) {
                pop(f);
            }
        }
        _ => return Err(Stop::Unsupported),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_of(v: F80) -> f64 {
        let mut lost = false;
        let d: StatusAnd<Double> = v.convert(&mut lost);
        f64::from_bits(d.value.to_bits() as u64)
    }

    fn of_f64(x: f64) -> F80 {
        let mut lost = false;
        let r: StatusAnd<F80> = Double::from_bits(u128::from(x.to_bits())).convert(&mut lost);
        r.value
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
        assert!(v.is_nan());
        assert_eq!(f.fsw & (FSW_IE | FSW_SF), FSW_IE | FSW_SF);
    }

    #[test]
    fn extended_precision_is_kept() {
        // 1 + 2^-60 is exact in 64 bits of significand, not in 53.
        let one = of_f64(1.0);
        let tiny = of_f64(2f64.powi(-60));
        let r = arith(Mnemonic::Fadd, one, tiny, Round::NearestTiesToEven);
        assert_eq!(r.value.to_bits() & 0xffff_ffff_ffff_ffff, (1 << 63) | 8);
        assert_eq!(to_bytes(one), [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
        let r = arith(Mnemonic::Fdivr, of_f64(3.0), one, Round::NearestTiesToEven);
        assert!(r.status.contains(Status::INEXACT));
    }
}
