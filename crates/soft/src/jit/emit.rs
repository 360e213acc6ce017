//! The block emitter: assembles a block's translation ([`emit`]): the
//! prologue and the chain entry, each instruction in its native, memory,
//! generic-native or trampoline form ([`emit_one`]), the block's end,
//! the epilogue and the out-of-line slow paths ([`SlowPath`]); and the
//! flag-liveness pass that lets instructions skip flag work nothing
//! reads ([`flags_dead_after`]).

use dynasmrt::{dynasm, DynasmApi, DynasmError, DynasmLabelApi};
use iced_x86::Instruction;

use super::exits::{chain_exit, emit_tramp, LOOP_ROUNDS};
use super::generic::{emit_generic_native, generic_native, GenericNative};
use super::hostflags::HostFlags;
use super::layout::Layout;
use super::link::LinkPool;
use super::native::{emit_native, emit_rotate, incdec_op, native, native_rotate};
use super::run::JitCtx;
use super::{mem, mov_imm, Asm, Label, RAX};
use crate::cache::Block;
use crate::core::Core;
use crate::fast::{Alu, Fast, Kind, Loc};

/// Where a block may loop back to its own start inside translated code,
/// and where its exits lead.
#[derive(Clone, Copy)]
pub(super) struct Top<'a> {
    /// The block's first guest address.
    pub(super) lin: u64,
    /// The label of its first instruction, when looping in code is safe
    /// (no interpreter-run instruction that could change what the block
    /// was validated against).
    pub(super) label: Option<Label>,
    /// The links that static exits get.
    pub(super) links: &'a LinkPool,
    /// Slow paths to emit after the block's body.
    slow: &'a std::cell::RefCell<Vec<SlowPath<'a>>>,
    /// The block's way out to the run loop (restores the host's registers
    /// and returns the status in RAX).
    pub(super) exit: Label,
}

/// The instruction being emitted: its fast form and decoded instruction,
/// its index in the block, and whether nothing reads the flags it leaves
/// ([`flags_dead_after`]).
#[derive(Clone, Copy)]
pub(super) struct Insn<'a> {
    pub(super) f: &'a Fast,
    pub(super) ins: &'a Instruction,
    pub(super) i: u32,
    pub(super) dead: bool,
}

/// A slow path, emitted after the block's body so the hot path stays
/// short and falls through: instruction `i`'s trampoline, then (`redo`)
/// its ALU operation or INC/DEC at its size redone on the recorded
/// operands for the host's flags, then back.
struct SlowPath<'a> {
    at: Label,
    back: Label,
    f: &'a Fast,
    ins: &'a Instruction,
    i: u32,
    redo: Option<(Kind, u8)>,
}

impl<'a> Top<'a> {
    /// Queues the out-of-line slow path of instruction `x`: its handler
    /// through the trampoline at `at`, then back to `back`, redoing
    /// `redo` for the host's flags.
    pub(super) fn slow_path(&self, at: Label, back: Label, x: Insn<'a>, redo: Option<(Kind, u8)>) {
        let Insn { f, ins, i, .. } = x;
        self.slow.borrow_mut().push(SlowPath {
            at,
            back,
            f,
            ins,
            i,
            redo,
        });
    }
}

impl SlowPath<'_> {
    fn emit(&self, a: &mut Asm, l: &Layout, exit: Label) {
        dynasm!(a ; =>self.at);
        emit_tramp(a, self.f, self.ins, self.i, exit);
        match self.redo {
            Some((Kind::Alu(op), size)) => mem::redo_alu(a, l, op, size),
            Some((kind, size)) => {
                dynasm!(a ; mov rax, QWORD [rbx + l.fl_dst as i32]);
                incdec_op(a, kind, size);
            }
            None => {}
        }
        dynasm!(a ; jmp =>self.back);
    }
}

/// Emits instruction `i` of a block (`f`, `ins`): natively when it has a
/// native form, else as a trampoline call. `fl` is what the host's flags
/// hold before it, updated to after it; `dead`: nothing reads the flags
/// it leaves ([`flags_dead_after`]).
fn emit_one<'a>(a: &mut Asm, l: &Layout, x: Insn<'a>, fl: &mut HostFlags, top: Top<'a>) {
    let Insn { f, ins, i, dead } = x;
    if native(f) {
        emit_native(a, l, x, fl, top);
        match f.kind {
            Kind::Alu(op) => *fl = HostFlags::alu(op, f.size),
            Kind::Inc | Kind::Dec => *fl = HostFlags::INCDEC,
            // They write the guest's flags eagerly.
            Kind::Imul2 | Kind::Shl | Kind::Shr | Kind::Sar => *fl = HostFlags::UNKNOWN,
            // Guest flags untouched, host flags changed by the emitted
            // address arithmetic or TEST.
            Kind::Lea | Kind::Cmovcc(_) => fl.clobbered(),
            // Jcc and SETcc leave the flags as `make_live` left them;
            // MOV, MOVZX/MOVSX, NOP change neither.
            _ => {}
        }
        return;
    }
    if mem::native_mem(f) {
        mem::emit_mem_form(a, l, x, fl, top);
        match f.kind {
            Kind::Alu(op) => *fl = HostFlags::alu(op, f.size),
            Kind::Inc | Kind::Dec => *fl = HostFlags::INCDEC,
            // Loads, stores, PUSH/POP: the TLB lookup changes the host's
            // flags only.
            _ => fl.clobbered(),
        }
        return;
    }
    if let Some(rot) = native_rotate(f, ins) {
        emit_rotate(a, l, rot, dead);
        *fl = HostFlags::UNKNOWN;
        return;
    }
    if let Some(g) = generic_native(f, ins) {
        emit_generic_native(a, l, x, g, fl, top);
        return;
    }
    emit_tramp(a, f, ins, i, top.exit);
    *fl = HostFlags::UNKNOWN;
}

/// How an instruction's translation uses the guest's arithmetic flags,
/// for [`flags_dead_after`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagUse {
    /// Writes all six and reads none, and cannot fault or leave the
    /// block.
    Kills,
    /// Neither reads nor writes them, and cannot fault or leave.
    Neutral,
    /// Anything else: reads them, writes only some, may fault (the
    /// guest's handler then sees RFLAGS) or may leave the block.
    Reads,
}

fn flag_use(f: &Fast, ins: &Instruction) -> FlagUse {
    use iced_x86::Mnemonic;
    if native(f) {
        return match f.kind {
            Kind::Alu(op) if !matches!(op, Alu::Adc | Alu::Sbb) => FlagUse::Kills,
            Kind::Imul2 => FlagUse::Kills,
            // A count of zero changes no flags.
            Kind::Shl | Kind::Shr | Kind::Sar
                if f.src == Loc::Imm
                    && (f.imm as u32) & if f.size == 64 { 63 } else { 31 } != 0 =>
            {
                FlagUse::Kills
            }
            Kind::Nop | Kind::Mov | Kind::Lea | Kind::Movzx | Kind::Movsx => FlagUse::Neutral,
            _ => FlagUse::Reads,
        };
    }
    match generic_native(f, ins) {
        Some(GenericNative::Unary(Mnemonic::Neg, ..)) => FlagUse::Kills,
        Some(GenericNative::Cdqe | GenericNative::Unary(..) | GenericNative::SelectorRead(..)) => {
            FlagUse::Neutral
        }
        // RDTSC may fault on its slow path; the rest are trampolines.
        _ => FlagUse::Reads,
    }
}

/// For each instruction of `b`, whether nothing reads the arithmetic
/// flags it leaves: the next instruction to touch them writes all six
/// before any reads them, with nothing between that could fault or
/// leave the block (at the block's end they are live). Such an
/// instruction's translation skips its flag work (the lazy record, eager
/// flags, a rotate's CF/OF), and a comparison becomes nothing.
fn flags_dead_after(b: &Block) -> Vec<bool> {
    let mut dead = vec![false; b.fast.len()];
    let mut live = true;
    for (i, (f, ins)) in b.fast.iter().zip(&b.instrs).enumerate().rev() {
        dead[i] = !live;
        match flag_use(f, ins) {
            FlagUse::Kills => live = false,
            FlagUse::Neutral => {}
            FlagUse::Reads => live = true,
        }
    }
    dead
}

/// Assembles the translation of `b` for address `at`: the code and the
/// offset of its chain entry.
pub(super) fn emit(
    core: &Core,
    b: &Block,
    slot: u32,
    links: &LinkPool,
    at: u64,
) -> Result<(Vec<u8>, usize), DynasmError> {
    let l = Layout::of(core);
    let mut a = Asm::new(at as usize);
    let exit = a.new_dynamic_label();
    // Entry: RSP is 8 mod 16; six pushes and 8 bytes make calls aligned.
    // R15: the TLB right a read needs at this privilege (CPL changes
    // only in trampolined instructions, which end the run).
    // RBP: the instructions retired in this run by links and self loops,
    // added to the core's count on the way out.
    dynasm!(a
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; push r14
        ; push r15
        ; sub rsp, 8
        ; xor ebp, ebp
        ; mov r12, rdi
        ; mov rbx, QWORD [rdi + std::mem::offset_of!(JitCtx, core) as i32]
        ; movzx r15d, WORD [rbx + l.seg_sel[crate::cpu::CS] as i32]
        ; and r15d, 3
        ; cmp r15d, 3
        ; mov r15d, i32::from(crate::mmu::PERM_SR)
        ; mov eax, i32::from(crate::mmu::PERM_UR)
        ; cmove r15d, eax
    );
    // The chain entry: other translations' links jump here with RBX,
    // R12 and R15 as this run set them up.
    let chain = a.offset().0;
    let top_label = a.new_dynamic_label();
    dynasm!(a
        ; mov r13d, (slot << 8) as i32
        ; mov r14d, LOOP_ROUNDS as i32
        ; =>top_label
    );
    let loops = b.fast.iter().all(|f| f.kind != Kind::Generic);
    let slow = std::cell::RefCell::new(Vec::new());
    let top = Top {
        lin: b.lin,
        label: loops.then_some(top_label),
        links,
        slow: &slow,
        exit,
    };
    let n = b.fast.len() as u32;
    let mut fl = HostFlags::UNKNOWN;
    let dead = flags_dead_after(b);
    for (i, (f, ins)) in b.fast.iter().zip(&b.instrs).enumerate() {
        let d = dead[i];
        let x = Insn {
            f,
            ins,
            i: i as u32,
            dead: d,
        };
        emit_one(&mut a, &l, x, &mut fl, top);
        if d {
            // Nothing reads the flags before they are all written again.
            fl = HostFlags::UNKNOWN;
        }
    }
    let ends_in_jump = b.fast.last().is_some_and(|f| {
        matches!(f.kind, Kind::Jmp | Kind::Call | Kind::Ret) && (native(f) || mem::native_mem(f))
    });
    if ends_in_jump {
        // Only a jump to the next instruction gets here (status 0, with
        // RIP set): the block ran off its end.
        dynasm!(a ; xor eax, eax);
    } else {
        let next = b.fast.last().map_or(b.lin, |f| f.next);
        mov_imm(&mut a, RAX, next);
        dynasm!(a ; mov QWORD [rbx + l.rip as i32], rax);
        chain_exit(&mut a, n, top);
    }
    dynasm!(a
        ; =>exit
        ; add QWORD [rbx + l.retired as i32], rbp
        ; shl rax, 32
        ; or rax, r13
        ; add rsp, 8
        ; pop r15
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbp
        ; pop rbx
        ; ret
    );
    // Out of the hot path, after the return: nothing falls into them.
    for s in slow.borrow().iter() {
        s.emit(&mut a, &l, exit);
    }
    Ok((a.finalize()?, chain))
}
