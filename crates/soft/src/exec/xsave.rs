//! The XSAVE-managed state: XCR0 (XSETBV/XGETBV), the XSAVE family
//! (XSAVE, XSAVEOPT, XSAVEC, XRSTOR of standard and compacted images),
//! the CPU's tracking of which components are in use (XINUSE) and
//! modified since the last XRSTOR, the part of CPUID that follows XCR0,
//! and the standard-format image `hypervisor::Vcpu::xsave` reads and
//! writes.
//!
//! Components: x87 (0), SSE (1), AVX (2). What the CPU does, as measured on
//! the host (Intel, with the init and modified optimizations):
//! - XINUSE\[i\] is set by any instruction that writes component i (reads,
//!   FNSTSW, FNSTCW, FXSAVE leave it; FWAIT sets the x87 bit) and cleared
//!   only by XRSTOR of an init component and, for AVX (and SSE), by
//!   VZEROUPPER (VZEROALL). It does not follow values: PXOR XMM0,XMM0 on
//!   an init SSE state sets it.
//! - XSAVE writes every requested component and XSTATE_BV =
//!   (old & !RFBM) | (XINUSE & RFBM); MXCSR when SSE or AVX is requested.
//! - XSAVEOPT skips requested components that are init, or unmodified
//!   since an XRSTOR from the same address; MXCSR is always written.
//! - XSAVEC (compacted, XCOMP_BV = RFBM | 1<<63) writes only components in
//!   use, treating SSE as in use when MXCSR is not 1F80H; MXCSR goes with
//!   the SSE component.
//! - XRSTOR loads MXCSR whenever SSE or AVX is requested (standard form);
//!   in the compacted form only with the SSE component, and an init SSE
//!   component sets MXCSR to 1F80H.

use iced_x86::{Instruction, Mnemonic, OpKind};

use crate::core::Core;
use crate::cpu::{Fpu, CR0_TS, CR4_OSXSAVE, RAX, RCX, RDX};
use crate::cpuid::Feature;
use crate::exception::{ExecResult, Fault, Stop};
use crate::exec::ops;
use crate::exec::x87::save::{self, MXCSR_MASK};
use crate::mmu::Access;

pub const X87: u8 = 1 << 0;
pub const SSE: u8 = 1 << 1;
pub const AVX: u8 = 1 << 2;
/// The components the engine models.
pub const SUPPORTED: u64 = 0b111;

const MXCSR_RESET: u32 = 0x1f80;
const LEGACY: usize = 512;
const HEADER: usize = 512;
const AVX_AT: usize = 576;
/// Legacy region, header and AVX component.
pub const AREA: usize = AVX_AT + 256;
const XMM_AT: usize = 160;
const XCOMP_COMPACT: u64 = 1 << 63;

/// CPUID.(EAX=0DH,ECX=1):EAX bit 2: XGETBV with ECX = 1.
const XGETBV1_BIT: u32 = 1 << 2;

/// Marks the components an instruction that completed wrote (XINUSE and
/// the modified set), for the x87, MMX and SSE instructions; the VEX
/// instructions mark their own.
#[inline]
pub fn note_write(f: &mut Fpu, ins: &Instruction, m: Mnemonic) {
    let bits = written(ins, m);
    f.xinuse |= bits;
    f.xmodified |= bits;
}

/// Marks `bits` written (the VEX instructions' side of [`note_write`]).
#[inline]
pub fn mark(f: &mut Fpu, bits: u8) {
    f.xinuse |= bits;
    f.xmodified |= bits;
}

fn written(ins: &Instruction, m: Mnemonic) -> u8 {
    use Mnemonic as M;
    match m {
        M::Fnstsw | M::Fnstcw | M::Fxsave | M::Fxsave64 | M::Stmxcsr => return 0,
        M::Ldmxcsr => return SSE,
        M::Fxrstor | M::Fxrstor64 => return X87 | SSE,
        M::Emms | M::Wait => return X87,
        M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd | M::Ptest => return 0,
        M::Pcmpestri | M::Pcmpistri | M::Pcmpestri64 => return 0,
        _ => {}
    }
    if super::x87::handles(m) || is_x87_control(m) {
        return X87;
    }
    let mut bits = 0;
    for i in 0..ins.op_count() {
        if ins.op_kind(i) == OpKind::Register {
            let r = ins.op_register(i);
            if r.is_mm() {
                bits |= X87;
            } else if i == 0 && r.is_xmm() {
                bits |= SSE;
            }
        }
    }
    bits
}

fn is_x87_control(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fninit
            | M::Finit
            | M::Fnclex
            | M::Fclex
            | M::Fldcw
            | M::Fstcw
            | M::Fstsw
            | M::Fnstenv
            | M::Fstenv
            | M::Fldenv
            | M::Fnsave
            | M::Fsave
            | M::Frstor
    )
}

/// The XSAVE-family instructions and XSETBV/XGETBV.
pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    if core.cpu.cr4 & CR4_OSXSAVE == 0 {
        return Err(Fault::ud().into());
    }
    match m {
        M::Xgetbv => return xgetbv(core),
        M::Xsetbv => return xsetbv(core),
        _ => {}
    }
    let needs = match m {
        M::Xsaveopt | M::Xsaveopt64 => Some(Feature::Xsaveopt),
        M::Xsavec | M::Xsavec64 => Some(Feature::Xsavec),
        _ => None,
    };
    if needs.is_some_and(|f| !core.features.has(f)) {
        return Err(Fault::ud().into());
    }
    if core.cpu.cr0 & CR0_TS != 0 {
        return Err(Fault::new(crate::exception::NM).into());
    }
    let rex_w = matches!(m, M::Xsave64 | M::Xsaveopt64 | M::Xsavec64 | M::Xrstor64);
    match m {
        M::Xsave | M::Xsave64 => save(core, ins, Kind::Plain, rex_w),
        M::Xsaveopt | M::Xsaveopt64 => save(core, ins, Kind::Opt, rex_w),
        M::Xsavec | M::Xsavec64 => save(core, ins, Kind::Compact, rex_w),
        M::Xrstor | M::Xrstor64 => restore(core, ins, rex_w),
        _ => core.unsupported(),
    }
}

/// Whether the vCPU's CPUID advertises XGETBV with ECX = 1 (leaf 0xD.1
/// EAX bit 2); a vCPU without a CPUID table is unrestricted, as
/// [`crate::cpuid::Features::from_cpuid`] has it.
fn has_xgetbv1(core: &Core) -> bool {
    core.cpuid.is_empty()
        || core
            .cpuid
            .iter()
            .find(|e| e.function == 0xd && e.index == 1)
            .is_some_and(|e| e.eax & XGETBV1_BIT != 0)
}

/// The XCR0 bits the vCPU's CPUID advertises (leaf 0xD.0 EDX:EAX), within
/// what the engine models; without a leaf 0xD, what the features allow.
fn advertised_xcr0(core: &Core) -> u64 {
    let own = if core.features.has(Feature::Avx) {
        SUPPORTED
    } else {
        u64::from(X87 | SSE)
    };
    core.cpuid
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map_or(own, |e| u64::from(e.eax) | (u64::from(e.edx) << 32))
        & SUPPORTED
}

fn xgetbv(core: &mut Core) -> ExecResult {
    let v = match core.cpu.gpr[RCX] as u32 {
        0 => core.cpu.fpu.xcr0,
        1 if has_xgetbv1(core) => core.cpu.fpu.xcr0 & u64::from(core.cpu.fpu.xinuse),
        _ => return Err(Fault::gp(0).into()),
    };
    core.cpu.set_gpr(RAX, 32, v);
    core.cpu.set_gpr(RDX, 32, v >> 32);
    Ok(())
}

fn xsetbv(core: &mut Core) -> ExecResult {
    if core.cpu.cpl() != 0 || core.cpu.gpr[RCX] as u32 != 0 {
        return Err(Fault::gp(0).into());
    }
    let v = (core.cpu.gpr[RAX] & 0xffff_ffff) | (core.cpu.gpr[RDX] << 32);
    if !valid_xcr0(v, advertised_xcr0(core)) {
        return Err(Fault::gp(0).into());
    }
    core.cpu.fpu.xcr0 = v;
    Err(Stop::EndBlock)
}

/// XSETBV's rules: x87 always on, no unsupported bit, AVX only with SSE.
pub fn valid_xcr0(v: u64, supported: u64) -> bool {
    v & 1 != 0 && v & !supported == 0 && !(v & u64::from(AVX) != 0 && v & u64::from(SSE) == 0)
}

/// CPUID leaf 0xD's answers that follow XCR0: EBX of sub-leaf 0 (the
/// standard-format size for the enabled components) and of sub-leaf 1
/// (the compacted size).
pub fn cpuid_size(xcr0: u64) -> u32 {
    if xcr0 & u64::from(AVX) != 0 {
        AREA as u32
    } else {
        AVX_AT as u32
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Opt,
    Compact,
}

/// The memory operand's linear address, checked for 64-byte alignment
/// and for the segment limit over `len` bytes.
fn area_lin(core: &Core, ins: &Instruction, len: usize, write: bool) -> Result<u64, Fault> {
    let (s, off) = ops::mem_loc(core, ins, 0);
    let lin = core.seg_lin(s, off, len as u64, write)?;
    if lin % 64 != 0 {
        return Err(Fault::gp(0));
    }
    Ok(lin)
}

/// How many XMM/YMM registers the mode has.
fn regs(core: &Core) -> usize {
    if core.cpu.mode64() {
        16
    } else {
        8
    }
}

fn save(core: &mut Core, ins: &Instruction, kind: Kind, rex_w: bool) -> ExecResult {
    let f = core.cpu.fpu;
    let rfbm = (f.xcr0 & (core.cpu.gpr[RAX] & 0xffff_ffff | core.cpu.gpr[RDX] << 32)) as u8;
    let len = if rfbm & AVX != 0 { AREA } else { AVX_AT };
    let lin = area_lin(core, ins, len, true)?;
    core.translate(lin, Access::Write, false)?;
    core.translate(lin + len as u64 - 1, Access::Write, false)?;
    let n = regs(core);
    let mut img = [0u8; AREA];
    encode(&f, &mut img, rex_w);
    let mut bv = f.xinuse & rfbm;
    let (x87, sse, avx, mxcsr) = match kind {
        Kind::Plain => (rfbm & X87, rfbm & SSE, rfbm & AVX, rfbm & (SSE | AVX)),
        Kind::Opt => {
            let same = f.xrstor_at == lin;
            let keep = |b: u8| bv & b != 0 && !(same && f.xmodified & b == 0);
            (
                u8::from(keep(X87)),
                u8::from(keep(SSE)),
                u8::from(keep(AVX)),
                rfbm & (SSE | AVX),
            )
        }
        Kind::Compact => {
            if rfbm & SSE != 0 && f.mxcsr != MXCSR_RESET {
                bv |= SSE;
            }
            (bv & X87, bv & SSE, bv & AVX, bv & SSE)
        }
    };
    if x87 != 0 {
        put(core, lin, &img, 0..24)?;
        put(core, lin, &img, 32..160)?;
    }
    if mxcsr != 0 {
        put(core, lin, &img, 24..32)?;
    }
    if sse != 0 {
        put(core, lin, &img, XMM_AT..XMM_AT + 16 * n)?;
    }
    if avx != 0 {
        put(core, lin, &img, AVX_AT..AVX_AT + 16 * n)?;
    }
    let hdr = lin + HEADER as u64;
    if kind == Kind::Compact {
        let words = [u64::from(bv), u64::from(rfbm) | XCOMP_COMPACT];
        core.write_lin_u(hdr, 8, words[0], false)?;
        core.write_lin_u(hdr + 8, 8, words[1], false)?;
    } else {
        let old = core.read_lin_u(hdr, 8, Access::Write, false)?;
        let rf = u64::from(rfbm);
        core.write_lin_u(hdr, 8, (old & !rf) | u64::from(bv), false)?;
    }
    Ok(())
}

fn put(core: &mut Core, lin: u64, img: &[u8; AREA], r: std::ops::Range<usize>) -> ExecResult {
    core.write_lin(lin + r.start as u64, &img[r], false)
}

fn restore(core: &mut Core, ins: &Instruction, rex_w: bool) -> ExecResult {
    let rfbm =
        (core.cpu.fpu.xcr0 & (core.cpu.gpr[RAX] & 0xffff_ffff | core.cpu.gpr[RDX] << 32)) as u8;
    let lin = area_lin(core, ins, AVX_AT, false)?;
    let mut hdr = [0u8; 64];
    read(core, lin + HEADER as u64, &mut hdr)?;
    let word = |i: usize| u64::from_le_bytes(hdr[i..i + 8].try_into().unwrap_or([0; 8]));
    let (bv, comp) = (word(0), word(8));
    let compact = comp & XCOMP_COMPACT != 0;
    let xcr0 = core.cpu.fpu.xcr0;
    let bad = if compact {
        !core.features.has(Feature::Xsavec)
            || comp & !XCOMP_COMPACT & !xcr0 != 0
            || bv & !comp != 0
            || hdr[16..].iter().any(|&b| b != 0)
    } else {
        bv & !xcr0 != 0 || hdr[8..24].iter().any(|&b| b != 0)
    };
    if bad {
        return Err(Fault::gp(0).into());
    }
    let bv = bv as u8;
    let len = if rfbm & AVX != 0 && (!compact || comp & u64::from(AVX) != 0) {
        AREA
    } else {
        AVX_AT
    };
    let lin = area_lin(core, ins, len, false)?;
    let mut img = [0u8; AREA];
    read(core, lin, &mut img[..LEGACY])?;
    if len == AREA {
        read(core, lin + AVX_AT as u64, &mut img[AVX_AT..])?;
    }
    let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
    let load_mxcsr = if compact {
        rfbm & bv & SSE != 0
    } else {
        rfbm & (SSE | AVX) != 0
    };
    if load_mxcsr && mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp(0).into());
    }
    let n = regs(core);
    let f = &mut core.cpu.fpu;
    apply(f, &img, rfbm, bv, n, rex_w);
    if load_mxcsr {
        f.mxcsr = mxcsr;
    } else if compact && rfbm & SSE != 0 {
        f.mxcsr = MXCSR_RESET;
    }
    f.xinuse = (f.xinuse & !rfbm) | (bv & rfbm);
    f.xmodified = 0;
    f.xrstor_at = if compact { u64::MAX } else { lin };
    Ok(())
}

/// Reads guest memory at `lin` into `buf` in pieces of at most 16 bytes.
fn read(core: &mut Core, lin: u64, buf: &mut [u8]) -> ExecResult {
    for (i, c) in buf.chunks_mut(16).enumerate() {
        core.read_lin(lin + 16 * i as u64, c, Access::Read, false)?;
    }
    Ok(())
}

/// Loads the components of `rfbm` from `img` (those with an XSTATE_BV bit)
/// or to their initial configuration (those without); the first `n`
/// XMM/YMM registers.
fn apply(f: &mut Fpu, img: &[u8; AREA], rfbm: u8, bv: u8, n: usize, rex_w: bool) {
    if rfbm & X87 != 0 {
        if bv & X87 != 0 {
            decode_x87(f, img, rex_w);
        } else {
            init_x87(f);
        }
    }
    if rfbm & SSE != 0 {
        for i in 0..n {
            f.xmm[i] = if bv & SSE != 0 {
                lane(img, XMM_AT + 16 * i)
            } else {
                0
            };
        }
    }
    if rfbm & AVX != 0 {
        for i in 0..n {
            f.ymm_hi[i] = if bv & AVX != 0 {
                lane(img, AVX_AT + 16 * i)
            } else {
                0
            };
        }
    }
}

fn lane(img: &[u8; AREA], at: usize) -> u128 {
    u128::from_le_bytes(img[at..at + 16].try_into().unwrap_or([0; 16]))
}

fn init_x87(f: &mut Fpu) {
    f.fcw = 0x37f;
    f.fsw = 0;
    f.ftw = 0;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
    f.st = [[0; 16]; 8];
}

/// Writes the legacy region (x87, MXCSR, XMM0-15) and the AVX component
/// of `f` into `img`; the header is left zero.
pub fn encode(f: &Fpu, img: &mut [u8; AREA], rex_w: bool) {
    let mut legacy = [0u8; LEGACY];
    save::legacy_region_write(f, &mut legacy, rex_w, 16);
    img[..LEGACY].copy_from_slice(&legacy);
    for i in 0..16 {
        img[AVX_AT + 16 * i..AVX_AT + 16 * i + 16].copy_from_slice(&f.ymm_hi[i].to_le_bytes());
    }
}

fn decode_x87(f: &mut Fpu, img: &[u8; AREA], rex_w: bool) {
    let mut legacy = [0u8; LEGACY];
    legacy.copy_from_slice(&img[..LEGACY]);
    save::read_x87(f, &legacy, rex_w);
}

/// The state as `hypervisor::Vcpu::xsave` gives it: a standard-format
/// image whose XSTATE_BV marks the legacy region's components (x87, SSE)
/// present whenever XCR0 enables them and AVX as XINUSE says, as KVM's
/// KVM_GET_XSAVE reports it (measured with the differential harness:
/// after VZEROALL with MXCSR at 1F80H, KVM's image still has SSE set).
pub fn state(f: &Fpu) -> hypervisor::XsaveState {
    let mut img = [0u8; AREA];
    encode(f, &mut img, true);
    let bv = (u64::from(f.xinuse) | u64::from(X87 | SSE)) & f.xcr0;
    img[HEADER..HEADER + 8].copy_from_slice(&bv.to_le_bytes());
    hypervisor::XsaveState {
        xcr0: f.xcr0,
        area: img.to_vec(),
    }
}

/// Why [`set_state`] refused an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadState {
    #[error("XCR0 {0:#x} is not a valid combination of x87, SSE and AVX")]
    Xcr0(u64),
    #[error("the XSAVE image is shorter than its legacy region and header")]
    Short,
    #[error("XSTATE_BV {0:#x} has components XCR0 does not enable")]
    XstateBv(u64),
    #[error("MXCSR {0:#x} sets reserved bits")]
    Mxcsr(u32),
}

/// Sets XCR0 and the state from a standard-format image, as XRSTOR with
/// every enabled component requested does.
pub fn set_state(f: &mut Fpu, s: &hypervisor::XsaveState) -> Result<(), BadState> {
    if !valid_xcr0(s.xcr0, SUPPORTED) {
        return Err(BadState::Xcr0(s.xcr0));
    }
    if s.area.len() < AVX_AT {
        return Err(BadState::Short);
    }
    let bv = s.xstate_bv();
    if bv & !s.xcr0 != 0 {
        return Err(BadState::XstateBv(bv));
    }
    let mut img = [0u8; AREA];
    let n = s.area.len().min(AREA);
    img[..n].copy_from_slice(&s.area[..n]);
    let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(BadState::Mxcsr(mxcsr));
    }
    let rfbm = s.xcr0 as u8;
    f.xcr0 = s.xcr0;
    apply(f, &img, rfbm, bv as u8, 16, true);
    f.mxcsr = mxcsr;
    f.xinuse = bv as u8;
    f.xmodified = 0;
    f.xrstor_at = u64::MAX;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcr0_rules() {
        assert!(valid_xcr0(1, SUPPORTED));
        assert!(valid_xcr0(3, SUPPORTED));
        assert!(valid_xcr0(7, SUPPORTED));
        assert!(!valid_xcr0(0, SUPPORTED));
        assert!(!valid_xcr0(2, SUPPORTED));
        assert!(!valid_xcr0(5, SUPPORTED));
        assert!(!valid_xcr0(0xf, SUPPORTED));
        assert!(!valid_xcr0(7, 3));
    }

    #[test]
    fn sizes_follow_xcr0() {
        assert_eq!(cpuid_size(3), 576);
        assert_eq!(cpuid_size(7), 832);
    }

    #[test]
    fn written_components() {
        use iced_x86::{Code, Register};
        let pxor = Instruction::with2(Code::Pxor_xmm_xmmm128, Register::XMM0, Register::XMM1)
            .unwrap_or_default();
        assert_eq!(written(&pxor, Mnemonic::Pxor), SSE);
        let comiss = Instruction::with2(Code::Comiss_xmm_xmmm32, Register::XMM0, Register::XMM1)
            .unwrap_or_default();
        assert_eq!(written(&comiss, Mnemonic::Comiss), 0);
        let movd = Instruction::with2(Code::Movd_rm32_xmm, Register::EAX, Register::XMM1)
            .unwrap_or_default();
        assert_eq!(written(&movd, Mnemonic::Movd), 0);
        let mmx = Instruction::with2(Code::Movd_rm32_mm, Register::EAX, Register::MM1)
            .unwrap_or_default();
        assert_eq!(written(&mmx, Mnemonic::Movd), X87);
        assert_eq!(written(&Instruction::default(), Mnemonic::Fnstsw), 0);
        assert_eq!(written(&Instruction::default(), Mnemonic::Wait), X87);
    }

    #[test]
    fn state_round_trips_and_init_components_reset() {
        let mut f = Fpu {
            xcr0: 7,
            xinuse: X87 | SSE | AVX,
            mxcsr: 0x1f81,
            ..Fpu::default()
        };
        f.xmm[3] = 0x1234;
        f.ymm_hi[15] = u128::MAX;
        f.st[2][0] = 9;
        let s = state(&f);
        assert_eq!(s.xstate_bv(), 7);
        assert_eq!(s.area.len(), AREA);
        let mut g = Fpu::default();
        set_state(&mut g, &s).unwrap();
        assert_eq!(
            (g.xmm, g.ymm_hi, g.st, g.mxcsr),
            (f.xmm, f.ymm_hi, f.st, f.mxcsr)
        );
        let mut s2 = s.clone();
        s2.set_xstate_bv(X87.into());
        set_state(&mut g, &s2).unwrap();
        assert_eq!(g.xmm, [0; 16]);
        assert_eq!(g.ymm_hi, [0; 16]);
        assert_eq!(g.mxcsr, 0x1f81);
        assert_eq!(g.xinuse, X87);
    }

    #[test]
    fn bad_states_are_refused() {
        let mut f = Fpu::default();
        let mut s = state(&Fpu {
            xcr0: 3,
            ..Fpu::default()
        });
        s.set_xstate_bv(7);
        assert_eq!(set_state(&mut f, &s), Err(BadState::XstateBv(7)));
        s.xcr0 = 5;
        assert_eq!(set_state(&mut f, &s), Err(BadState::Xcr0(5)));
        s.xcr0 = 7;
        s.area[26] = 1;
        assert!(matches!(set_state(&mut f, &s), Err(BadState::Mxcsr(_))));
        s.area.truncate(100);
        assert_eq!(set_state(&mut f, &s), Err(BadState::Short));
    }
}
