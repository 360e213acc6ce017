//! The binary translator: turns a hot cached block
//! ([`crate::cache::Block`]) into host x86-64 code and runs it, leaving
//! the guest in the state the interpreter would have left it in.
//!
//! # What a translation is
//!
//! The translation of a block is one function, `extern "sysv64"
//! fn(*mut JitCtx) -> u64`, emitted with dynasm-rs into a [`CodeBuf`]
//! once the block has run often enough (64-bit code only; see
//! [`Jit::entry`]). Guest registers stay in the `Cpu` register file and
//! are loaded and stored around each instruction, and flag-setting
//! instructions record in the lazy-flags struct exactly what the
//! interpreter's handlers would, so the interpreter and translated code
//! share one flags representation. Each instruction is emitted in the
//! first of these forms that fits it:
//!
//! - a native register form (`native`): MOV, LEA, the ALU group,
//!   INC/DEC, two-operand IMUL, SHL/SHR/SAR by an immediate or CL,
//!   ROL/ROR by an immediate, CMOVcc, MOVZX/MOVSX, SETcc, direct JMP and
//!   Jcc, NOP (32/64-bit operands for most);
//! - a native memory form (`mem`): loads, stores, the ALU group,
//!   INC/DEC and SETcc on memory, PUSH/POP, CALL (direct, or through a
//!   register or memory), JMP through a register or memory, RET, all
//!   through an inline TLB lookup;
//! - an instruction the interpreter's fast forms leave generic but the
//!   translator still emits natively (`generic`): RDTSC(P), CLI/STI,
//!   PUSHFQ, (LOCK) CMPXCHG/XADD, BT/BTS/BTR/BTC, REP MOVS/STOS, CDQE,
//!   NOT/NEG/BSWAP, MOV from a segment register;
//! - anything else: a call of the trampoline (`run::tramp`), which runs
//!   the instruction's interpreter handler.
//!
//! A native form that cannot finish inline (a TLB miss, a page crossing,
//! MMIO, a store to a page holding code, CR4.TSD, CPL above 0) jumps to
//! an out-of-line slow path that runs the instruction through the
//! trampoline, emitted after the block's body so the hot path falls
//! through (`emit`). Between instructions the emitter tracks what the
//! host's RFLAGS hold (`hostflags`): conditions and carries read them
//! directly while they are the guest's, and an instruction whose flags
//! nothing reads before they are all written again skips its flag work
//! (the liveness pass in `emit`).
//!
//! Inside translated code RBX holds the core, R12 the context
//! ([`JitCtx`]), R13 the block's cache slot and the index of the
//! instruction being run (the status word's low bits), R14 the rounds a
//! block may still loop to its own start, R15 the TLB right a read needs
//! at the current privilege, and RBP the instructions retired in this run
//! by links and self loops (added to the core's count on the way out).
//!
//! # How a run ends
//!
//! The translated code returns `(link << 36) | (status << 32) | (slot <<
//! 8) | index`, where `slot` is the cache slot of the block it stopped in
//! (runs follow links from block to block) and `link` (plus one) the link
//! cell of the static exit it left by: status 0 when it ran off the
//! block's end (index = the block's length), 1 when instruction `index`
//! completed but the block must stop after it (a device or code write,
//! a trampolined branch), 2 when instruction `index` stopped with the
//! `Stop` left in the context (no state changed by it), 3 when it left by
//! a static or indirect exit with RIP set after `index` instructions. The
//! run loop ([`run()`]) turns that into what the interpreter's block loop
//! would have done, so both paths retire the same instructions and leave
//! the same state. A block's exits (`exits`) go straight on to the
//! next translation when they can: static exits through a link filled in
//! by the run loop, indirect ones (RET, JMP/CALL through a register or
//! memory) through the jump table (`link`), both only under the chain
//! keys of the run (`SoftVcpu`'s chain keys).
//!
//! A translation lives beside its block (`Block::jit`) and dies with it:
//! the block cache's validation stays the only judge of whether cached
//! code is current. When the code buffer is full it starts over and every
//! translation made before is dropped (by generation).
//!
//! # Where things are
//!
//! - `translator`: [`Jit`], one vCPU's translator: when a block is
//!   translated, the code buffer, links and jump table it owns, the
//!   statistics and profiling output.
//! - `run`: the way into translated code ([`JitCtx`],
//!   [`run()`], [`Outcome`], [`Exit`]) and the trampoline back into the
//!   interpreter.
//! - `emit`: the block emitter: prologue and chain entry, one
//!   instruction at a time, flag liveness, slow paths, epilogue.
//! - `native`: the native register forms; `mem`: the memory forms and
//!   the register, address, TLB and ALU pieces all forms use;
//!   `generic`: the natively emitted generic instructions, and
//!   `generic_mem` their memory work (bit tests, REP MOVS/STOS,
//!   XADD/CMPXCHG).
//! - `hostflags`: what the host's flags hold, conditions and the
//!   flag helpers translated code calls.
//! - `exits`: branches, self loops, static and dynamic exits, the
//!   trampoline call.
//! - `link`: the links and the jump table exits follow.
//! - `layout`: the offsets in `Core` translated code reads and writes.
//! - `buf`: the code buffer.

// dynasm!'s expansion converts a dynamic register number with `.into()`
// even when it already has the register type.
#![allow(clippy::useless_conversion)]

mod buf;
mod emit;
mod exits;
mod generic;
mod generic_mem;
mod hostflags;
mod layout;
mod link;
mod mem;
mod native;
mod run;
mod translator;

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, VecAssembler};

pub use buf::CodeBuf;
pub use run::{run, Outcome};
pub use translator::{Jit, Keys, PendingLink, FAILED};

/// The assembler translations are emitted with: dynasm-rs encodes each
/// instruction form at compile time, so emitting a block costs about a
/// microsecond (iced-x86's `CodeAssembler` took about 100 µs, which kept
/// all but the hottest blocks with the interpreter).
type Asm = VecAssembler<X64Relocation>;

type Label = DynamicLabel;

/// Host register numbers for the helpers that take one.
const RAX: u8 = 0;

const RCX: u8 = 1;

const RDX: u8 = 2;

const RSI: u8 = 6;

/// Host register `r` = `v`, in the shortest encoding.
fn mov_imm(a: &mut Asm, r: u8, v: u64) {
    if let Ok(v) = u32::try_from(v) {
        dynasm!(a ; mov Rd(r), v as i32);
    } else if let Ok(v) = i32::try_from(v as i64) {
        dynasm!(a ; mov Rq(r), v);
    } else {
        dynasm!(a ; mov Rq(r), QWORD v as i64);
    }
}

/// Calls the host function at `f` (through RAX).
fn call(a: &mut Asm, f: u64) {
    mov_imm(a, RAX, f);
    dynasm!(a ; call rax);
}
