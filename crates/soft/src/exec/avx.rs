//! VEX-encoded SIMD instructions (AVX, AVX2, FMA, F16C): the checks every
//! VEX instruction makes before it touches an operand, the instructions
//! the engine runs itself (VZEROUPPER, VZEROALL, VLDMXCSR, VSTMXCSR, the
//! masked moves and, in `avx_gather.rs`, the gathers), and the XSAVE
//! in-use tracking of their register writes. Every other VEX form runs on
//! the host CPU's own instruction through [`crate::hostop`].
//!
//! What iced-x86 already turns into `Code::INVALID` (and so #UD): a VEX
//! prefix after 66/F2/F3/LOCK/REX, VEX.vvvv other than 1111b where the
//! form has no vvvv operand, VEX.L=1 where the form requires L=0, and a
//! gather whose destination, index and mask registers are not distinct.

use iced_x86::{Code, CpuidFeature, EncodingKind, Instruction, Mnemonic, OpKind, Register};

use crate::core::Core;
use crate::cpu::{CR0_TS, CR4_OSXSAVE};
use crate::exception::{ExecResult, Fault, Stop, NM};
use crate::exec::ops;
use crate::exec::xsave::{AVX, SSE};
use crate::mmu::Access;

/// Whether `ins` is VEX-encoded.
#[inline]
pub fn is_vex(ins: &Instruction) -> bool {
    ins.encoding() == EncodingKind::VEX
}

/// Executes a VEX-encoded SIMD instruction.
pub fn exec(core: &mut Core, ins: &Instruction) -> ExecResult {
    check(core)?;
    match ins.code() {
        Code::VEX_Vzeroupper => return zero_upper(core, false),
        Code::VEX_Vzeroall => return zero_upper(core, true),
        Code::VEX_Vldmxcsr_m32 => return ldmxcsr(core, ins),
        Code::VEX_Vstmxcsr_m32 => {
            let (s, off) = ops::mem_loc(core, ins, 0);
            return core.write_seg(s, off, 4, u64::from(core.cpu.fpu.mxcsr));
        }
        c if masked_move(c) => return masked(core, ins),
        _ if ins.is_vsib() => return super::avx_gather::exec(core, ins),
        _ => {}
    }
    let Some(r) = crate::hostop::exec(core, ins) else {
        // A VEX family the engine does not offer (FMA4, AVX-VNNI, ...)
        // is #UD, as on a CPU without it; a form of the four it offers
        // that hostop cannot run is the engine's gap.
        return if ins.cpuid_features().iter().all(|f| {
            matches!(
                f,
                CpuidFeature::AVX | CpuidFeature::AVX2 | CpuidFeature::FMA | CpuidFeature::F16C
            )
        }) {
            core.unsupported()
        } else {
            Err(Fault::ud().into())
        };
    };
    if !matches!(r, Err(Stop::Fault(_) | Stop::Unsupported)) {
        note(core, ins);
    }
    r
}

/// The checks of every VEX instruction, in the CPU's order: #UD outside
/// protected mode, without CR4.OSXSAVE or with XCR0 lacking SSE or AVX;
/// #NM with CR0.TS.
fn check(core: &Core) -> ExecResult {
    let c = &core.cpu;
    let ymm = u64::from(SSE | AVX);
    if !c.protected() || c.cr4 & CR4_OSXSAVE == 0 || c.fpu.xcr0 & ymm != ymm {
        return Err(Fault::ud().into());
    }
    if c.cr0 & CR0_TS != 0 {
        return Err(Fault::new(NM).into());
    }
    Ok(())
}

/// Records the XSAVE components a completed VEX instruction wrote, as
/// this host's CPU tracks them: a 256-bit form (VEX.L=1) writing a vector
/// register puts SSE and AVX in use, even with an XMM destination
/// (VEXTRACTF128, VCVTPD2DQ); a 128-bit or scalar form puts SSE in use
/// and, having cleared the upper half, counts AVX as modified. Forms that
/// only read vectors (VPTEST, VCOMISS, stores) change nothing.
pub(crate) fn note(core: &mut Core, ins: &Instruction) {
    use Mnemonic as M;
    if ins.op0_kind() != OpKind::Register {
        return;
    }
    let r = ins.op0_register();
    if !(r.is_xmm() || r.is_ymm())
        || matches!(
            ins.mnemonic(),
            M::Vptest
                | M::Vtestps
                | M::Vtestpd
                | M::Vcomiss
                | M::Vucomiss
                | M::Vcomisd
                | M::Vucomisd
                | M::Vpcmpestri
                | M::Vpcmpistri
                | M::Vpcmpestri64
        )
    {
        return;
    }
    let f = &mut core.cpu.fpu;
    if wide(ins) {
        f.xinuse |= SSE | AVX;
    } else {
        f.xinuse |= SSE;
    }
    f.xmodified |= SSE | AVX;
}

/// Whether a VEX form is 256-bit (VEX.L=1): it names a YMM register or a
/// 32-byte memory operand (every L=1 form does; 128-bit and scalar forms
/// never do).
fn wide(ins: &Instruction) -> bool {
    (0..ins.op_count()).any(|i| match ins.op_kind(i) {
        OpKind::Register => ins.op_register(i).is_ymm(),
        OpKind::Memory => ins.memory_size().size() == 32 || ins.memory_index().is_ymm(),
        _ => false,
    })
}

/// The register number of a vector register and whether it is a YMM.
pub(crate) fn vreg(r: Register) -> (usize, bool) {
    if r.is_ymm() {
        (
            (r as usize).wrapping_sub(Register::YMM0 as usize) & 15,
            true,
        )
    } else {
        (
            (r as usize).wrapping_sub(Register::XMM0 as usize) & 15,
            false,
        )
    }
}

/// The 32 bytes of YMM`n`.
pub(crate) fn get_ymm(core: &Core, n: usize) -> [u8; 32] {
    let f = &core.cpu.fpu;
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&f.xmm[n & 15].to_le_bytes());
    b[16..].copy_from_slice(&f.ymm_hi[n & 15].to_le_bytes());
    b
}

/// Writes YMM`n` (the upper half zeroed for an XMM destination, as VEX.128
/// does).
pub(crate) fn set_ymm(core: &mut Core, n: usize, b: &[u8; 32], ymm: bool) {
    let f = &mut core.cpu.fpu;
    let lo: [u8; 16] = b[..16].try_into().unwrap_or([0; 16]);
    let hi: [u8; 16] = b[16..].try_into().unwrap_or([0; 16]);
    f.xmm[n & 15] = u128::from_le_bytes(lo);
    f.ymm_hi[n & 15] = if ymm { u128::from_le_bytes(hi) } else { 0 };
}

/// VZEROUPPER (`all` false) and VZEROALL: the registers of the mode (8
/// outside 64-bit mode); both leave the cleared components in their
/// initial configuration.
fn zero_upper(core: &mut Core, all: bool) -> ExecResult {
    let n = if core.cpu.mode64() { 16 } else { 8 };
    let f = &mut core.cpu.fpu;
    for i in 0..n {
        f.ymm_hi[i] = 0;
        if all {
            f.xmm[i] = 0;
        }
    }
    let cleared = if all { SSE | AVX } else { AVX };
    f.xinuse &= !cleared;
    f.xmodified |= cleared;
    Ok(())
}

fn ldmxcsr(core: &mut Core, ins: &Instruction) -> ExecResult {
    let (s, off) = ops::mem_loc(core, ins, 0);
    let v = core.read_seg(s, off, 4)? as u32;
    if v & 0xffff_0000 != 0 {
        return Err(Fault::gp(0).into());
    }
    core.cpu.fpu.mxcsr = v;
    crate::exec::xsave::mark(&mut core.cpu.fpu, SSE);
    Ok(())
}

fn masked_move(c: Code) -> bool {
    matches!(
        c,
        Code::VEX_Vmaskmovps_xmm_xmm_m128
            | Code::VEX_Vmaskmovps_ymm_ymm_m256
            | Code::VEX_Vmaskmovpd_xmm_xmm_m128
            | Code::VEX_Vmaskmovpd_ymm_ymm_m256
            | Code::VEX_Vmaskmovps_m128_xmm_xmm
            | Code::VEX_Vmaskmovps_m256_ymm_ymm
            | Code::VEX_Vmaskmovpd_m128_xmm_xmm
            | Code::VEX_Vmaskmovpd_m256_ymm_ymm
            | Code::VEX_Vpmaskmovd_xmm_xmm_m128
            | Code::VEX_Vpmaskmovd_ymm_ymm_m256
            | Code::VEX_Vpmaskmovq_xmm_xmm_m128
            | Code::VEX_Vpmaskmovq_ymm_ymm_m256
            | Code::VEX_Vpmaskmovd_m128_xmm_xmm
            | Code::VEX_Vpmaskmovd_m256_ymm_ymm
            | Code::VEX_Vpmaskmovq_m128_xmm_xmm
            | Code::VEX_Vpmaskmovq_m256_ymm_ymm
            | Code::VEX_Vmaskmovdqu_rDI_xmm_xmm
    )
}

/// VMASKMOVPS/PD, VPMASKMOVD/Q and VMASKMOVDQU: each element moves when
/// the top bit of its mask element is set. Only those elements are
/// accessed (a masked-off element never faults); a store checks every
/// element it writes before writing any; a load zeroes the masked-off
/// elements.
fn masked(core: &mut Core, ins: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let esize = match ins.mnemonic() {
        M::Vmaskmovpd | M::Vpmaskmovq => 8,
        M::Vmaskmovdqu => 1,
        _ => 4,
    };
    let store = ins.op0_kind() != OpKind::Register;
    // VMASKMOVDQU names its source before its mask; the others the mask
    // (VEX.vvvv) first.
    let (mask_reg, data_reg) = match (store, esize) {
        (true, 1) => (ins.op2_register(), ins.op1_register()),
        (true, _) => (ins.op1_register(), ins.op2_register()),
        (false, _) => (ins.op1_register(), ins.op0_register()),
    };
    let (mask_n, ymm) = vreg(mask_reg);
    let count = if ymm { 32 } else { 16 } / esize;
    let mask = get_ymm(core, mask_n);
    let on = |j: usize| mask[j * esize + esize - 1] & 0x80 != 0;
    let (s, off) = ops::mem_loc(core, ins, if store { 0 } else { 2 });
    let asz = ops::addr_size(ins);
    let at = |j: usize| off.wrapping_add((j * esize) as u64) & crate::flags::mask(asz);
    let (data_n, _) = vreg(data_reg);
    if store {
        let data = get_ymm(core, data_n);
        let mut lins = [0u64; 16];
        for j in (0..count).filter(|&j| on(j)) {
            let lin = core.seg_lin(s, at(j), esize as u64, true)?;
            core.translate(lin, Access::Write, false)?;
            core.translate(lin + esize as u64 - 1, Access::Write, false)?;
            lins[j] = lin;
        }
        for j in (0..count).filter(|&j| on(j)) {
            core.write_lin(lins[j], &data[j * esize..(j + 1) * esize], false)?;
        }
        return Ok(());
    }
    let mut out = [0u8; 32];
    for j in (0..count).filter(|&j| on(j)) {
        core.read_seg_buf(s, at(j), &mut out[j * esize..(j + 1) * esize])?;
    }
    set_ymm(core, data_n, &out, ymm);
    note(core, ins);
    Ok(())
}
