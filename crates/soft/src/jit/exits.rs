//! How translated code leaves a block or an instruction: taken branches
//! and self loops ([`branch_to`]), static exits through a link
//! ([`chain_exit`]), indirect exits through the jump table
//! ([`dynamic_exit`]), the checks before either is followed
//! ([`key_check`], [`follow`]), and the call of the trampoline that runs
//! an instruction through its interpreter handler ([`emit_tramp`]).

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use iced_x86::Instruction;

use super::emit::Top;
use super::layout::Layout;
use super::link::{JumpEntry, Link, JUMPS};
use super::run::{tramp, JitCtx};
use super::{call, mov_imm, Asm, Label, RAX, RCX, RDX, RSI};
use crate::fast::Fast;

/// Emits a call of [`tramp`] for instruction `i`.
pub(super) fn emit_tramp(a: &mut Asm, f: &Fast, ins: &Instruction, i: u32, exit: Label) {
    set_index(a, i);
    dynasm!(a ; mov rdi, r12);
    mov_imm(a, RSI, f as *const Fast as u64);
    mov_imm(a, RDX, ins as *const Instruction as u64);
    call(a, tramp as *const () as u64);
    dynasm!(a
        ; test eax, eax
        ; jnz =>exit
    );
}

/// The translated code's rounds of a block looping to itself before it
/// goes back to the run loop (which then looks at interrupts).
pub(super) const LOOP_ROUNDS: u32 = 32;

/// A taken branch of instruction `i` to `f.imm`: back to the block's top
/// while the round budget (R14) lasts, counting the round's instructions
/// as retired; else RIP = target and out with status 1.
pub(super) fn branch_to(a: &mut Asm, l: &Layout, f: &Fast, i: u32, top: Top) {
    if let (true, Some(t)) = (f.imm == top.lin, top.label) {
        let out = a.new_dynamic_label();
        dynasm!(a
            ; sub r14d, 1
            ; jz =>out
            ; add rbp, (i + 1) as i32
            ; jmp =>t
            ; =>out
        );
    }
    mov_imm(a, RAX, f.imm);
    dynasm!(a ; mov QWORD [rbx + l.rip as i32], rax);
    chain_exit(a, i + 1, top);
}

/// The status of an exit that left with RIP set and nothing else to do
/// but count its instructions (static and dynamic exits): the run loop
/// need not look at the block's instructions (cold in the cache after a
/// run of links).
const DONE: u32 = 3;

/// A static exit after `count` instructions with RIP set: on to the
/// linked translation when the link was made under this run's key, no
/// interrupt or kick waits and the budget lasts (the instructions then
/// count as retired here); else out with status [`DONE`], `count` and
/// the link's number for the run loop to fill in.
pub(super) fn chain_exit(a: &mut Asm, count: u32, top: Top) {
    let exit = top.exit;
    let Some((link, addr)) = top.links.alloc() else {
        set_index(a, count);
        dynasm!(a
            ; mov eax, DONE as i32
            ; jmp =>exit
        );
        return;
    };
    let out = a.new_dynamic_label();
    mov_imm(a, RDX, addr);
    key_check(a, RDX, std::mem::offset_of!(Link, key), out);
    follow(a, count, out);
    dynasm!(a
        ; jmp QWORD [rdx + std::mem::offset_of!(Link, target) as i32]
        ; =>out
    );
    mov_imm(a, RCX, (u64::from(link) + 1) << 36);
    dynasm!(a ; or r13, rcx);
    set_index(a, count);
    dynasm!(a
        ; mov eax, DONE as i32
        ; jmp =>exit
    );
}

/// An exit of instruction `i` to the target in RDX (RIP already set): on
/// to the target's translation when the jump table has it under this
/// run's key, no interrupt or kick waits and the budget lasts; else out
/// with status [`DONE`].
pub(super) fn dynamic_exit(a: &mut Asm, i: u32, exit: Label) {
    let out = a.new_dynamic_label();
    dynasm!(a
        ; mov rcx, rdx
        ; shr rcx, 12
        ; xor rcx, rdx
        ; and ecx, (JUMPS - 1) as i32
        ; shl ecx, 5
        ; add rcx, QWORD [r12 + std::mem::offset_of!(JitCtx, jumps) as i32]
        ; cmp QWORD [rcx + std::mem::offset_of!(JumpEntry, rip) as i32], rdx
        ; jne =>out
    );
    key_check(a, RCX, std::mem::offset_of!(JumpEntry, key), out);
    follow(a, i + 1, out);
    dynasm!(a
        ; jmp QWORD [rcx + std::mem::offset_of!(JumpEntry, target) as i32]
        ; =>out
    );
    set_index(a, i + 1);
    dynasm!(a
        ; mov eax, DONE as i32
        ; jmp =>exit
    );
}

/// Goes on when the key at `[base + off]` is one of this run's two
/// keys, else to `out`. Uses RAX.
fn key_check(a: &mut Asm, base: u8, off: usize, out: Label) {
    let ok = a.new_dynamic_label();
    let off = off as i32;
    dynasm!(a
        ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, key) as i32]
        ; cmp QWORD [Rq(base) + off], rax
        ; je =>ok
        ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, key_global) as i32]
        ; cmp QWORD [Rq(base) + off], rax
        ; jne =>out
        ; =>ok
    );
}

/// The checks before a link or jump-table entry is followed (no
/// interrupt or kick waiting, budget left; else to `out`), then `count`
/// instructions retired (in RBP). Keeps RCX and RDX.
fn follow(a: &mut Asm, count: u32, out: Label) {
    dynasm!(a
        ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, signal) as i32]
        ; cmp WORD [rax], 0
        ; jne =>out
    );
    dynasm!(a
        ; sub DWORD [r12 + std::mem::offset_of!(JitCtx, budget) as i32], 1
        ; jb =>out
        ; add rbp, count as i32
    );
}

/// Puts instruction index `i` into R13's low byte (the rest holds the
/// block's cache slot and, at a static exit, its link).
fn set_index(a: &mut Asm, i: u32) {
    dynasm!(a ; mov r13b, i as i8);
}
