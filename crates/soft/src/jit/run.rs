//! The way into translated code and back out: the context it gets
//! ([`JitCtx`]), [`run`], which enters a translation and turns its status
//! word into an [`Exit`], and the trampoline ([`tramp`]) through which
//! translated code runs an instruction's interpreter handler.

use std::cell::Cell;

use iced_x86::Instruction;

use super::link::JumpEntry;
use super::translator::{Jit, Keys, Translation};
use crate::core::Core;
use crate::exception::Stop;
use crate::fast::Fast;
use crate::vm::Signal;

/// What translated code gets: the vCPU core and room for a stop.
#[repr(C)]
pub struct JitCtx {
    pub(super) core: *mut Core,
    /// The core's TLB entries ([`crate::mmu::Tlb::entries`]).
    pub(super) tlb: *const u8,
    /// The RAM's per-page code markers and their count
    /// ([`crate::phys::Ram::code_map`]).
    pub(super) code_map: *const u8,
    pub(super) code_pages: usize,
    stop: Option<Stop>,
    /// The chain keys the run loop computed for this run: a link is
    /// followed only when it was made under one of them.
    pub(super) key: u64,
    pub(super) key_global: u64,
    /// Links still allowed in this run.
    pub(super) budget: u32,
    /// The run loop may have seen an interrupt it could not deliver yet
    /// (`SoftVcpu::maybe_irq`): STI then goes through its handler.
    pub(super) irq_maybe: bool,
    /// The vCPU's two signal flags (`Signal::attention`, then
    /// `Signal::kicked` in the next byte): a link is not followed while
    /// either is set.
    pub(super) signal: *const u16,
    /// The jump table ([`super::link::JumpTable`]).
    pub(super) jumps: *const JumpEntry,
    /// Trampoline calls by instruction code (statistics; null when not kept).
    tramps: *const Cell<u64>,
}

/// A translated block's entry point.
type Entry = unsafe extern "sysv64" fn(*mut JitCtx) -> u64;

/// Runs instruction `f` of a translated block through its interpreter
/// handler: 0 to go on, 1 when the block must stop after it, 2 when it
/// stopped (the `Stop` is left in the context).
///
/// # Safety
/// Called only by translated code, with the context [`run`] passed in
/// (its `core` valid and not otherwise borrowed while the code runs) and
/// pointers to a `Fast` and an `Instruction` of the block being run.
pub(super) unsafe extern "sysv64" fn tramp(
    ctx: *mut JitCtx,
    f: *const Fast,
    ins: *const Instruction,
) -> u64 {
    // SAFETY: per this function's contract, `ctx` is the live context of
    // `run`, whose core nothing else borrows while translated code runs,
    // and `f`/`ins` point into the block `run` holds a reference to.
    let (ctx, f, ins) = unsafe { (&mut *ctx, &*f, &*ins) };
    if !ctx.tramps.is_null() {
        let i = ins.code() as usize
            + usize::from(ins.has_lock_prefix()) * iced_x86::Code::values().len();
        // SAFETY: a non-null `tramps` points at the `Jit`'s counters, two
        // per instruction code (`i` is below that), alive for the run
        // (`run` set it from `&Jit`).
        let c = unsafe { &*ctx.tramps.add(i) };
        c.set(c.get() + 1);
    }
    // SAFETY: as above; this is the only reference to the core now.
    let core = unsafe { &mut *ctx.core };
    let epoch = core.tlb.epoch;
    let masked = !core.cpu.flags.has(crate::flags::IF);
    match (f.h)(core, f, ins) {
        // A changed TLB epoch changes the chain key, and an interrupt
        // waiting when they are just allowed must be taken: the run must
        // end.
        Ok(()) => u64::from(
            core.device_written
                || core.code_written
                || (f.sets_rip && core.cpu.rip != f.next)
                || core.tlb.epoch != epoch
                || (masked && core.cpu.flags.has(crate::flags::IF) && core.interrupt_waiting()),
        ),
        Err(s) => {
            ctx.stop = Some(s);
            2
        }
    }
}

/// How a translated block's run ended, in the interpreter's terms: the
/// instructions retired and what the block loop does next.
pub enum Outcome {
    /// Ran off the end (RIP not yet set).
    End,
    /// Instruction `i` completed and the block stops after it.
    After(usize),
    /// Instruction `i` stopped with this.
    Stopped(usize, Stop),
    /// `n` instructions completed and RIP is set: on with the next block.
    Done(usize),
}

/// How a run of translated code ended: in which block (its cache slot)
/// and how, the link of the static exit it left by (for the run loop to
/// fill in), and how many links it followed.
pub struct Exit {
    pub outcome: Outcome,
    pub slot: usize,
    pub link: Option<u32>,
    pub chained: u32,
}

/// Runs the translation `t` on `core`, following links made under chain
/// key `key` at most `budget` times while neither of `signal`'s flags is
/// set; `irq_maybe`: the run loop may hold an interrupt it could not
/// deliver yet.
///
/// # Safety
/// `t` must come from `jit.entry` for a block of `core`'s block cache,
/// with no translation, flush or block drop since (the buffer must still
/// hold the code `t` names, and every block it may link into must be
/// alive): the function jumps to `t.entry` as machine code.
pub unsafe fn run(
    core: &mut Core,
    jit: &Jit,
    t: Translation,
    keys: Keys,
    budget: u32,
    irq_maybe: bool,
    signal: &Signal,
) -> Exit {
    let jumps = &jit.jumps;
    let (code_map, code_pages) = core.ram().code_map();
    let mut ctx = JitCtx {
        tlb: core.tlb.entries(),
        code_map,
        code_pages,
        core: core as *mut Core,
        stop: None,
        key: keys.all,
        key_global: keys.global,
        budget,
        irq_maybe,
        signal: signal.attention.as_ptr().cast_const().cast(),
        jumps: jumps.e.as_ptr(),
        tramps: jit.tramps.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
    };
    // SAFETY: `t.entry` is code our emitter produced (the caller's
    // contract: it came from `Jit::entry` in the buffer's current
    // generation, so the buffer still holds it), following the sysv64 ABI and saving the registers
    // it uses. It touches only `core` (through the pointer in `ctx`, which
    // nothing else uses while it runs), the signal's flags (read), the
    // links (read) and, through `tramp`, the `Fast`/`Instruction` of the
    // blocks it runs. Those are alive: the entered block is the caller's,
    // and a link is followed only under the key it was made with, which
    // changes (`BlockCache::link_epoch`) whenever a block is dropped,
    // while nothing drops blocks during the run.
    let r = unsafe {
        let f: Entry = std::mem::transmute::<usize, Entry>(t.entry);
        f(&mut ctx)
    };
    let i = (r & 0xff) as usize;
    let outcome = match (r >> 32) & 0xf {
        0 => Outcome::End,
        1 => Outcome::After(i),
        3 => Outcome::Done(i),
        _ => Outcome::Stopped(i, ctx.stop.take().unwrap_or(Stop::Unsupported)),
    };
    Exit {
        outcome,
        slot: ((r >> 8) & 0xff_ffff) as usize,
        link: match r >> 36 {
            0 => None,
            l => Some((l - 1) as u32),
        },
        chained: if ctx.budget == u32::MAX {
            budget
        } else {
            budget - ctx.budget
        },
    }
}
