//! SSE/SSE2: the checks every SSE instruction makes (CR0.EM/TS,
//! CR4.OSFXSR), 128-bit moves, float logical operations and MXCSR access;
//! the XMM operand access and alignment rule the SSE modules share. The
//! float arithmetic, compares, (U)COMIS and conversions run by the host's
//! own instruction (`crate::hostop`). Instructions with an MMX register
//! go to `mmx`; packed integer operations live in `sse2`; the x87 (with
//! FXSAVE/FXRSTOR) is in `x87`.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::ops::{self, read, write};
use crate::core::Core;
use crate::cpu::{CR0_EM, CR0_TS, CR4_OSFXSR};
use crate::exception::{ExecResult, Fault, Stop, NM};

pub(super) fn xmm_index(r: Register) -> Option<usize> {
    let v = r as u32;
    if (Register::XMM0 as u32..=Register::XMM15 as u32).contains(&v) {
        Some((v - Register::XMM0 as u32) as usize)
    } else {
        None
    }
}

fn check(core: &Core) -> ExecResult {
    if core.cpu.cr0 & CR0_EM != 0 || core.cpu.cr4 & CR4_OSFXSR == 0 {
        return Err(Fault::ud().into());
    }
    if core.cpu.cr0 & CR0_TS != 0 {
        return Err(Fault::new(NM).into());
    }
    Ok(())
}

/// Whether the linear address of `seg:off` (segment base included, as
/// the CPU checks it) is not a multiple of `align`; a segment fault on
/// the operand comes first.
pub(crate) fn misaligned(
    core: &Core,
    seg: usize,
    off: u64,
    align: u64,
    write: bool,
) -> Result<bool, Fault> {
    let lin = core.seg_lin(seg, off, align, write)?;
    Ok(lin % align != 0)
}

/// Reads a 128-bit (or narrower, zero-extended) operand.
pub(super) fn get(core: &mut Core, ins: &Instruction, i: u32, aligned: bool) -> ExecResult<u128> {
    match ins.op_kind(i) {
        OpKind::Register => {
            let r = ins.op_register(i);
            if let Some(x) = xmm_index(r) {
                Ok(core.cpu.fpu.xmm[x])
            } else {
                Ok(u128::from(ops::reg_get(&core.cpu, r)))
            }
        }
        OpKind::Memory => {
            let size = ins.memory_size().size();
            let (s, off) = ops::mem_loc(core, ins, i);
            if size == 16 && aligned && misaligned(core, s, off, 16, false)? {
                return Err(Fault::gp(0).into());
            }
            let mut b = [0u8; 16];
            core.read_seg_buf(s, off, &mut b[..size.min(16)])?;
            Ok(u128::from_le_bytes(b))
        }
        _ => Ok(u128::from(ins.immediate(i))),
    }
}

/// Writes operand `i`: a whole XMM register, a GPR, or `bytes` of memory.
pub(super) fn put(
    core: &mut Core,
    ins: &Instruction,
    i: u32,
    v: u128,
    bytes: usize,
    aligned: bool,
) -> ExecResult {
    match ins.op_kind(i) {
        OpKind::Register => {
            let r = ins.op_register(i);
            if let Some(x) = xmm_index(r) {
                core.cpu.fpu.xmm[x] = v;
            } else {
                ops::reg_set(&mut core.cpu, r, v as u64);
            }
            Ok(())
        }
        _ => {
            let (s, off) = ops::mem_loc(core, ins, i);
            if bytes == 16 && aligned && misaligned(core, s, off, 16, true)? {
                return Err(Fault::gp(0).into());
            }
            core.write_seg_buf(s, off, &v.to_le_bytes()[..bytes])
        }
    }
}

pub(super) fn lanes<const N: usize>(a: u128, b: u128, f: impl Fn(u64, u64) -> u64) -> u128 {
    let bits = 128 / N;
    let m: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let mut r = 0u128;
    for i in 0..N {
        let x = ((a >> (i * bits)) & m) as u64;
        let y = ((b >> (i * bits)) & m) as u64;
        r |= (u128::from(f(x, y)) & m) << (i * bits);
    }
    r
}

/// Bit i of the result is the sign bit of byte i of `a` (PMOVMSKB).
pub(super) fn byte_signs(a: u128, bytes: u32) -> u64 {
    (0..bytes).fold(0u64, |acc, i| {
        acc | ((((a >> (i * 8 + 7)) & 1) as u64) << i)
    })
}

/// The float arithmetic, compares and conversions: run by the host's own
/// instruction ([`crate::hostop`]), exact under the guest's MXCSR.
fn on_host(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Addss
            | M::Addsd
            | M::Addps
            | M::Addpd
            | M::Subss
            | M::Subsd
            | M::Subps
            | M::Subpd
            | M::Mulss
            | M::Mulsd
            | M::Mulps
            | M::Mulpd
            | M::Divss
            | M::Divsd
            | M::Divps
            | M::Divpd
            | M::Minss
            | M::Minsd
            | M::Minps
            | M::Minpd
            | M::Maxss
            | M::Maxsd
            | M::Maxps
            | M::Maxpd
            | M::Sqrtss
            | M::Sqrtsd
            | M::Sqrtps
            | M::Sqrtpd
            | M::Rcpss
            | M::Rcpps
            | M::Rsqrtss
            | M::Rsqrtps
            | M::Cmpss
            | M::Cmpsd
            | M::Cmpps
            | M::Cmppd
            | M::Comiss
            | M::Comisd
            | M::Ucomiss
            | M::Ucomisd
            | M::Cvtsi2ss
            | M::Cvtsi2sd
            | M::Cvtss2si
            | M::Cvtsd2si
            | M::Cvttss2si
            | M::Cvttsd2si
            | M::Cvtss2sd
            | M::Cvtsd2ss
            | M::Cvtdq2ps
            | M::Cvtdq2pd
            | M::Cvtps2dq
            | M::Cvtpd2dq
            | M::Cvttps2dq
            | M::Cvttpd2dq
            | M::Cvtps2pd
            | M::Cvtpd2ps
            | M::Cvtpi2ps
            | M::Cvtpi2pd
    )
}

pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    if super::mmx::uses_mmx(ins) {
        return super::mmx::exec(core, ins, m);
    }
    if m == M::Emms {
        return super::mmx::emms(core);
    }
    check(core)?;
    if on_host(m) {
        return crate::hostop::exec(core, ins).unwrap_or(Err(Stop::Unsupported));
    }
    match m {
        M::Movaps
        | M::Movapd
        | M::Movdqa
        | M::Movups
        | M::Movupd
        | M::Movdqu
        | M::Movntdq
        | M::Movntps
        | M::Movntpd
        | M::Lddqu => {
            let al = matches!(
                m,
                M::Movaps | M::Movapd | M::Movdqa | M::Movntdq | M::Movntps | M::Movntpd
            );
            let v = get(core, ins, 1, al)?;
            put(core, ins, 0, v, 16, al)
        }
        M::Movd | M::Movq => {
            let dst_x =
                ins.op_kind(0) == OpKind::Register && xmm_index(ins.op_register(0)).is_some();
            let bytes = if m == M::Movd { 4 } else { 8 };
            let mask: u128 = if bytes == 4 {
                0xffff_ffff
            } else {
                u64::MAX.into()
            };
            let v = get(core, ins, 1, false)? & mask;
            if dst_x {
                put(core, ins, 0, v, 16, false)
            } else if ins.op_kind(0) == OpKind::Register {
                ops::reg_set(&mut core.cpu, ins.op_register(0), v as u64);
                Ok(())
            } else {
                put(core, ins, 0, v, bytes, false)
            }
        }
        M::Movss | M::Movsd => {
            let bytes = if m == M::Movss { 4 } else { 8 };
            let mask: u128 = if bytes == 4 {
                0xffff_ffff
            } else {
                u64::MAX.into()
            };
            let v = get(core, ins, 1, false)? & mask;
            if ins.op_kind(0) == OpKind::Register {
                let both_reg = ins.op_kind(1) == OpKind::Register;
                let d = if both_reg {
                    (get(core, ins, 0, false)? & !mask) | v
                } else {
                    v
                };
                put(core, ins, 0, d, 16, false)
            } else {
                put(core, ins, 0, v, bytes, false)
            }
        }
        M::Movlps | M::Movlpd | M::Movhps | M::Movhpd => {
            let high = matches!(m, M::Movhps | M::Movhpd);
            if ins.op_kind(0) == OpKind::Register {
                let d = get(core, ins, 0, false)?;
                let s = get(core, ins, 1, false)? & u128::from(u64::MAX);
                let r = if high {
                    (d & u128::from(u64::MAX)) | (s << 64)
                } else {
                    (d & !u128::from(u64::MAX)) | s
                };
                put(core, ins, 0, r, 16, false)
            } else {
                let s = get(core, ins, 1, false)?;
                let v = if high { s >> 64 } else { s };
                put(core, ins, 0, v, 8, false)
            }
        }
        M::Movnti => {
            let size = ops::op_size(ins, 0);
            let v = read(core, ins, 1, size)?;
            write(core, ins, 0, size, v)
        }
        M::Xorps | M::Xorpd | M::Orps | M::Orpd | M::Andps | M::Andpd | M::Andnps | M::Andnpd => {
            let a = get(core, ins, 0, false)?;
            let b = get(core, ins, 1, true)?;
            let r = match m {
                M::Xorps | M::Xorpd => a ^ b,
                M::Orps | M::Orpd => a | b,
                M::Andps | M::Andpd => a & b,
                _ => !a & b,
            };
            put(core, ins, 0, r, 16, false)
        }
        M::Pmovmskb => {
            let a = get(core, ins, 1, false)?;
            ops::reg_set(&mut core.cpu, ins.op_register(0), byte_signs(a, 16));
            Ok(())
        }
        M::Pshufd => {
            let a = get(core, ins, 1, true)?;
            let imm = ins.immediate(2) as u32;
            let r = (0..4).fold(0u128, |acc, i| {
                let sel = (imm >> (2 * i)) & 3;
                acc | (((a >> (32 * sel)) & 0xffff_ffff) << (32 * i))
            });
            put(core, ins, 0, r, 16, false)
        }
        M::Pslldq | M::Psrldq => {
            let a = get(core, ins, 0, false)?;
            let n = (ins.immediate(1) as u32).min(16) * 8;
            let r = if n >= 128 {
                0
            } else if m == M::Pslldq {
                a << n
            } else {
                a >> n
            };
            put(core, ins, 0, r, 16, false)
        }
        M::Ldmxcsr => {
            let v = read(core, ins, 0, 32)? as u32;
            if v & 0xffff_0000 != 0 {
                return Err(Fault::gp(0).into());
            }
            core.cpu.fpu.mxcsr = v;
            Ok(())
        }
        M::Stmxcsr => {
            let v = core.cpu.fpu.mxcsr;
            write(core, ins, 0, 32, u64::from(v))
        }
        _ => super::sse2::exec(core, ins, m),
    }
}
