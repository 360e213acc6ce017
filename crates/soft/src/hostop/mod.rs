//! hostop: SIMD and float instructions executed exactly, by the host
//! CPU's own instruction on a copy of the guest's registers.
//!
//! [`exec`] takes a decoded guest instruction whose form is on the
//! allow-list ([`allow`]), renames its general registers and memory
//! operand onto a small fixed context ([`form`]), and runs a stub made
//! once per renamed form ([`stub`], cached per vCPU in [`Stubs`]) under
//! the guest's MXCSR: rounding, DAZ, FTZ and exception masks.
//! The guest-visible effects are then the engine's:
//!
//! - Before: the caller has made its instruction class's checks that
//!   precede operand access (CR0.EM/TS, CR4.OSFXSR or OSXSAVE/XCR0, #UD
//!   for prefixes and forms, #MF for MMX forms). hostop checks alignment
//!   (#GP(0)) and reads a memory source through the core's checked
//!   access (segment and page faults) into the context's buffer.
//! - MXCSR exceptions: the host CPU decides. With every exception masked
//!   the stub cannot trap, and the flags it raised are the guest's. With
//!   one unmasked, the host instruction traps exactly when the guest's
//!   would, with the flags the SDM's pre-/post-computation rules give
//!   (caught by [`call`]'s SIGFPE handler); the guest then gets #XM
//!   (vector 19) when CR4.OSXMMEXCPT is set, else #UD, with those flags
//!   and the destination unchanged (an MMX form still makes the x87-to-MMX
//!   transition, as the CPU does).
//! - After: the raised MXCSR flags are recorded first (a store that
//!   faults still leaves them, as the CPU does for VCVTPS2PH), then a
//!   memory destination is written (a fault leaves everything else
//!   unchanged), then the vector registers (whole YMM, so legacy forms
//!   keep the upper halves and VEX.128 forms clear them, as the
//!   instruction did), MM registers (with the x87-to-MMX transition),
//!   general registers and the RFLAGS bits the instruction writes.

pub mod allow;
mod call;
mod form;
mod stub;

pub use call::Stubs;

use iced_x86::Instruction;

use crate::core::Core;
use crate::cpu::CR4_OSXMMEXCPT;
use crate::exception::{ExecResult, Fault, Stop, XM};
use crate::exec::{mmx, ops, sse};
use call::{Entry, Ran};
use form::{Form, Plan};
use stub::Ctx;

/// MXCSR exception flags (bits 0-5).
const FLAGS: u32 = 0x3f;

/// Executes `ins` with the host's instruction. None when its form is not
/// one hostop runs (not on the allow-list, an operand the stubs do not
/// model, or no executable memory on this host): the caller decides
/// what the guest sees. Some(result) otherwise, with every effect of
/// the instruction applied (or none, on a fault).
pub fn exec(core: &mut Core, ins: &Instruction) -> Option<ExecResult> {
    let form = form::remap(ins)?;
    let e = core.hostop.entry(&form.key)?;
    Some(run(core, ins, &form, &e))
}

fn run(core: &mut Core, ins: &Instruction, form: &Form, e: &Entry) -> ExecResult {
    let p = &e.plan;
    let size = usize::from(p.mem_size);
    let mut ctx = Ctx::default();
    let loc = match form.mem_op {
        Some(i) if size > 0 => Some(ops::mem_loc(core, ins, i)),
        _ => None,
    };
    if let Some((s, off)) = loc {
        let align = u64::from(p.align);
        if align != 0 && sse::misaligned(core, s, off, align, p.mem_write && !p.mem_read)? {
            return Err(Fault::gp(0).into());
        }
        if p.mem_read {
            core.read_seg_buf(s, off, &mut ctx.mem[..size])?;
        }
    }
    load(core, form, p, &mut ctx);
    let raised = match numeric(core, e, &mut ctx)? {
        Ok(raised) => raised,
        Err(flags) => {
            core.cpu.fpu.mxcsr |= flags;
            if p.regs.mm != 0 {
                // The CPU enters MMX state even when the result faults.
                mmx::enter(&mut core.cpu.fpu);
            }
            return Err(xm(core).into());
        }
    };
    // The CPU records the flags before the store: VCVTPS2PH to memory
    // that faults leaves them set (measured).
    core.cpu.fpu.mxcsr |= raised;
    if let (Some((s, off)), true) = (loc, p.mem_write) {
        core.write_seg_buf(s, off, &ctx.mem[..size])?;
    }
    commit(core, form, p, &ctx);
    Ok(())
}

/// The exception an unmasked MXCSR exception raises.
fn xm(core: &Core) -> Fault {
    if core.cpu.cr4 & CR4_OSXMMEXCPT != 0 {
        Fault::new(XM)
    } else {
        Fault::ud()
    }
}

fn bits(m: u32) -> impl Iterator<Item = usize> {
    (0..32usize).filter(move |i| m >> i & 1 != 0)
}

/// Copies the registers the stub uses into the context.
fn load(core: &Core, form: &Form, p: &Plan, ctx: &mut Ctx) {
    let f = &core.cpu.fpu;
    for i in bits(p.regs.vec.into()) {
        ctx.ymm[i] = [f.xmm[i], f.ymm_hi[i]];
    }
    for i in bits(p.regs.mm.into()) {
        ctx.mm[i] = mmx::mm_read(f, i);
    }
    for s in bits(p.regs.gpr.into()) {
        let g = usize::from(form.bound[s]);
        ctx.gpr[s] = core.cpu.gpr.get(g).copied().unwrap_or(0);
    }
}

/// Runs the stub under the guest's MXCSR (flags cleared).
/// `Ok(Ok(flags))`: the instruction completed, raising `flags`;
/// `Ok(Err(flags))`: it raised an unmasked exception, and `flags` are
/// those the CPU set.
fn numeric(core: &Core, e: &Entry, ctx: &mut Ctx) -> ExecResult<Result<u32, u32>> {
    // Bits 16-31 are reserved (#GP on LDMXCSR, so a stub must never load
    // them); the engine never lets the guest set them, and this keeps it
    // so.
    ctx.mxcsr = core.cpu.fpu.mxcsr & 0xffff & !FLAGS;
    match core.hostop.run(e, ctx) {
        Ran::Done => Ok(Ok(ctx.mxcsr_out & FLAGS)),
        Ran::Trapped => Ok(Err(ctx.mxcsr_out & FLAGS)),
        Ran::Refused => Err(Stop::Unsupported),
    }
}

/// Copies the instruction's register results back to the guest.
fn commit(core: &mut Core, form: &Form, p: &Plan, ctx: &Ctx) {
    let f = &mut core.cpu.fpu;
    for i in bits(p.regs.vec.into()) {
        [f.xmm[i], f.ymm_hi[i]] = ctx.ymm[i];
    }
    if p.regs.mm != 0 {
        mmx::enter(f);
        for i in bits(p.mm_written.into()) {
            mmx::mm_write(f, i, ctx.mm[i]);
        }
    }
    for s in bits(p.gpr_written.into()) {
        let g = usize::from(form.bound[s]);
        if let Some(r) = core.cpu.gpr.get_mut(g) {
            *r = ctx.gpr[s];
        }
    }
    if p.flags != 0 {
        let old = core.cpu.flags.get();
        core.cpu
            .flags
            .set_arith((old & !p.flags) | (ctx.rflags & p.flags));
    }
}
