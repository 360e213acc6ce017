//! The translator's memory forms: guest loads and stores through an
//! inline TLB lookup, with the instruction's interpreter handler (through
//! the trampoline) as the slow path for page crossings, TLB misses,
//! missing rights, MMIO and stores to pages that hold decoded code. It
//! also holds what the other forms build on: guest register loads and
//! stores ([`get_reg`], [`put_reg`]), effective and linear addresses and
//! the inline TLB lookup ([`emit_ea`], [`emit_lin`], [`emit_tlb`]), and
//! the ALU operations with their lazy-flags record ([`emit_alu`],
//! [`redo_alu`], [`carry_to_r8`]). The memory work of the generic
//! instructions (bit tests, REP MOVS/STOS, XADD/CMPXCHG) is in
//! `generic_mem`.
//!
//! Register use (see [`super::emit::emit`]): RBX is the core, RBP the
//! instructions retired by links and self loops in this run, R12 the
//! context, R13 the index of the instruction being run, R15 the TLB
//! permission bit a read needs at the current privilege (`PERM_SR` or
//! `PERM_UR`; a write needs it shifted left by two). RAX, RCX, RDX, RSI,
//! RDI and R8 are scratch.

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};

use super::emit::{Insn, Top};
use super::exits::{branch_to, dynamic_exit};
use super::hostflags::{call_cond, cond_to_ecx, pin_guest_cf, HostFlags};
use super::layout::{byte_reg, Layout};
use super::native::incdec;
use super::run::JitCtx;
use super::{mov_imm, Asm, Label, RAX, RCX, RDX};
use crate::fast::{Alu, Fast, Kind, Loc, Mem, NO_REG};
use crate::flags::FlagOp;

/// Host register R8's number.
pub(super) const R8: u8 = 8;

/// The guest's stack pointer.
const RSP: u8 = 4;

fn reg_of(l: Loc) -> u8 {
    match l {
        Loc::Reg(r) => r,
        _ => 0,
    }
}

fn is_reg(l: Loc) -> bool {
    matches!(l, Loc::Reg(_))
}

/// Whether `f` has a native memory form (exclusive of
/// [`super::native::native`]'s register forms).
pub(super) fn native_mem(f: &Fast) -> bool {
    let reg_or_imm = |l: Loc| matches!(l, Loc::Reg(_) | Loc::Imm);
    match f.kind {
        Kind::Mov => {
            (is_reg(f.dst) && f.src == Loc::Mem) || (f.dst == Loc::Mem && reg_or_imm(f.src))
        }
        Kind::Movzx | Kind::Movsx => {
            matches!(f.size, 32 | 64) && is_reg(f.dst) && f.src == Loc::Mem
        }
        Kind::Alu(_) => {
            (is_reg(f.dst) && f.src == Loc::Mem) || (f.dst == Loc::Mem && reg_or_imm(f.src))
        }
        Kind::Inc | Kind::Dec => f.dst == Loc::Mem,
        Kind::Push => reg_or_imm(f.src),
        Kind::Pop => is_reg(f.dst),
        // Calls and jumps through memory too (Linux's calls through
        // pv_ops and other tables).
        Kind::Call => matches!(f.src, Loc::Reg(_) | Loc::Imm | Loc::Mem),
        Kind::Jmp => matches!(f.src, Loc::Reg(_) | Loc::Mem),
        Kind::Ret => true,
        Kind::Setcc(_) => f.dst == Loc::Mem,
        _ => false,
    }
}

/// RDX = the 64-bit target of an indirect CALL or JMP (register or
/// memory operand); to `slow` when it is not canonical, or when its
/// memory read misses the inline TLB lookup.
fn indirect_target(a: &mut Asm, l: &Layout, f: &Fast, slow: Label) {
    if f.src == Loc::Mem {
        emit_lin(a, l, &f.mem);
        emit_tlb(a, l, 8, false, slow);
        dynasm!(a ; mov rdx, QWORD [rsi]);
    } else {
        dynasm!(a ; mov rdx, QWORD [rbx + l.reg(reg_of(f.src))]);
    }
    slow_unless_canonical(a, slow);
}

/// RAX = the effective address of memory operand `m` (base + index *
/// scale + displacement, no segment: what LEA computes). Uses RCX.
pub(super) fn emit_ea(a: &mut Asm, l: &Layout, m: &Mem) {
    mov_imm(a, RAX, m.disp);
    if m.base != NO_REG {
        dynasm!(a ; add rax, QWORD [rbx + l.reg(m.base)]);
    }
    if m.index != NO_REG {
        dynasm!(a ; mov rcx, QWORD [rbx + l.reg(m.index)]);
        if m.scale != 0 {
            dynasm!(a ; shl rcx, m.scale as i8);
        }
        dynasm!(a ; add rax, rcx);
    }
}

/// RAX = the linear address of memory operand `m` (64-bit code: only FS
/// and GS have a base).
pub(super) fn emit_lin(a: &mut Asm, l: &Layout, m: &Mem) {
    emit_ea(a, l, m);
    if m.seg >= 4 {
        let base = l.seg_base[usize::from(m.seg & 7).min(5)] as i32;
        dynasm!(a ; add rax, QWORD [rbx + base]);
    }
}

/// The inline TLB lookup of `bytes` at the linear address in RAX for a
/// read or (`write`) a write: RSI = the host address. Jumps to `slow` when
/// the access crosses a page, misses the TLB, lacks the rights the entry
/// grants the fast path (which excludes MMIO, and writes before the page
/// is dirty), or writes a page that holds decoded code. Keeps RAX.
pub(super) fn emit_tlb(a: &mut Asm, l: &Layout, bytes: u32, write: bool, slow: Label) {
    let tlb = std::mem::offset_of!(JitCtx, tlb) as i32;
    dynasm!(a
        ; mov ecx, eax
        ; and ecx, 0xfff
        ; cmp ecx, (0x1000 - bytes) as i32
        ; ja =>slow
        ; mov rdx, rax
        ; shr rdx, 12
        ; mov esi, edx
        ; and esi, (l.tlb.count - 1) as i32
        ; shl esi, l.tlb.stride.trailing_zeros() as i8
        ; add rsi, QWORD [r12 + tlb]
        ; add rdx, 1
        ; cmp QWORD [rsi + l.tlb.tag as i32], rdx
        ; jne =>slow
    );
    if write {
        let pages = std::mem::offset_of!(JitCtx, code_pages) as i32;
        let map = std::mem::offset_of!(JitCtx, code_map) as i32;
        dynasm!(a
            ; lea edx, [r15 * 4]
            ; test BYTE [rsi + l.tlb.perm as i32], dl
            ; jz =>slow
            ; mov rdx, QWORD [rsi + l.tlb.pa as i32]
            ; shr rdx, 12
            ; cmp rdx, QWORD [r12 + pages]
            ; jae =>slow
            ; mov rdi, QWORD [r12 + map]
            ; cmp BYTE [rdi + rdx], 0
            ; jne =>slow
        );
    } else {
        dynasm!(a
            ; test BYTE [rsi + l.tlb.perm as i32], r15b
            ; jz =>slow
        );
    }
    dynasm!(a
        ; mov rsi, QWORD [rsi + l.tlb.host as i32]
        ; add rsi, rcx
    );
}

/// Register `dst` (RAX, RCX or RDX) = the `size`-bit value at [RSI],
/// zero- or (`sx`) sign-extended.
fn load_mem(a: &mut Asm, dst: u8, size: u8, sx: bool) {
    match (size, sx) {
        (8, false) => dynasm!(a ; movzx Rd(dst), BYTE [rsi]),
        (16, false) => dynasm!(a ; movzx Rd(dst), WORD [rsi]),
        (32, false) => dynasm!(a ; mov Rd(dst), DWORD [rsi]),
        (8, true) => dynasm!(a ; movsx Rq(dst), BYTE [rsi]),
        (16, true) => dynasm!(a ; movsx Rq(dst), WORD [rsi]),
        (32, true) => dynasm!(a ; movsxd Rq(dst), DWORD [rsi]),
        _ => dynasm!(a ; mov Rq(dst), QWORD [rsi]),
    }
}

/// [RSI] = the low `size` bits of RDX.
fn store_mem(a: &mut Asm, size: u8) {
    match size {
        8 => dynasm!(a ; mov BYTE [rsi], dl),
        16 => dynasm!(a ; mov WORD [rsi], dx),
        32 => dynasm!(a ; mov DWORD [rsi], edx),
        _ => dynasm!(a ; mov QWORD [rsi], rdx),
    }
}

/// Register `dst` (RAX, RCX or RDX) = guest register `r` zero-extended
/// from `size` bits (8-bit registers in iced-x86's byte numbering).
pub(super) fn get_reg(a: &mut Asm, l: &Layout, dst: u8, r: u8, size: u8) {
    match size {
        64 => dynasm!(a ; mov Rq(dst), QWORD [rbx + l.reg(r)]),
        32 => dynasm!(a ; mov Rd(dst), DWORD [rbx + l.reg(r)]),
        16 => dynasm!(a ; movzx Rd(dst), WORD [rbx + l.reg(r)]),
        _ => dynasm!(a ; movzx Rd(dst), BYTE [rbx + byte_reg(l, r)]),
    }
}

/// Guest register `r` = RAX as a `size`-bit write does it (32-bit writes
/// zero-extend, 8- and 16-bit ones keep the rest).
pub(super) fn put_reg(a: &mut Asm, l: &Layout, r: u8, size: u8) {
    match size {
        64 => dynasm!(a ; mov QWORD [rbx + l.reg(r)], rax),
        32 => dynasm!(a
            ; mov eax, eax
            ; mov QWORD [rbx + l.reg(r)], rax
        ),
        16 => dynasm!(a ; mov WORD [rbx + l.reg(r)], ax),
        _ => dynasm!(a ; mov BYTE [rbx + byte_reg(l, r)], al),
    }
}

/// Redoes ALU operation `op` on the operands of the lazy flags' record
/// (and for ADC/SBB its carry in), which gives the host the guest's
/// flags. Uses RAX, RCX and RDX.
pub(super) fn redo_alu(a: &mut Asm, l: &Layout, op: Alu, size: u8) {
    dynasm!(a
        ; mov rax, QWORD [rbx + l.fl_dst as i32]
        ; mov rcx, QWORD [rbx + l.fl_src as i32]
    );
    if matches!(op, Alu::Adc | Alu::Sbb) {
        dynasm!(a
            ; movzx edx, BYTE [rbx + l.fl_cin as i32]
            ; bt edx, 0
        );
    }
    alu_op(a, op, size);
}

/// R8D = the guest's CF (0 or 1), as ADC and SBB need it before anything
/// of theirs runs: from the host's flags when `fl` can make them live,
/// else through `hostflags::cond`. Uses the caller-saved registers.
pub(super) fn carry_to_r8(a: &mut Asm, l: &Layout, fl: &mut HostFlags) {
    if fl.make_live(a, l, 2) {
        dynasm!(a
            ; setb r8b
            ; movzx r8d, r8b
        );
    } else {
        call_cond(a, 2, fl);
        dynasm!(a ; mov r8d, eax);
    }
}

/// RAX op= RCX at `size` bits (CMP and TEST as SUB and AND; ADC and SBB
/// with the carry in R8D), setting the host's flags as the guest's.
fn alu_op(a: &mut Asm, op: Alu, size: u8) {
    macro_rules! at_width {
        ($m:tt) => {
            match size {
                64 => dynasm!(a ; $m rax, rcx),
                32 => dynasm!(a ; $m eax, ecx),
                16 => dynasm!(a ; $m ax, cx),
                _ => dynasm!(a ; $m al, cl),
            }
        };
    }
    match op {
        Alu::Add => at_width!(add),
        Alu::Adc => at_width!(adc),
        Alu::Sbb => at_width!(sbb),
        Alu::Sub | Alu::Cmp => at_width!(sub),
        Alu::And | Alu::Test => at_width!(and),
        Alu::Or => at_width!(or),
        _ => at_width!(xor),
    }
}

/// The ALU operation `op` of RAX (destination) and RCX (source), both
/// zero-extended from `size` bits (ADC and SBB: with the carry in R8D,
/// see [`carry_to_r8`]): records the lazy flags as the interpreter's
/// handlers do and leaves the result in RAX and the guest's arithmetic
/// flags in the host's. Without `record` (nothing reads the flags) only
/// the operation.
pub(super) fn emit_alu(a: &mut Asm, l: &Layout, op: Alu, size: u8, record: bool) {
    let carry = matches!(op, Alu::Adc | Alu::Sbb);
    if !record {
        if carry {
            dynasm!(a ; bt r8d, 0);
        }
        alu_op(a, op, size);
        return;
    }
    dynasm!(a
        ; mov QWORD [rbx + l.fl_dst as i32], rax
        ; mov QWORD [rbx + l.fl_src as i32], rcx
    );
    if carry {
        dynasm!(a
            ; mov BYTE [rbx + l.fl_cin as i32], r8b
            ; bt r8d, 0
        );
    }
    alu_op(a, op, size);
    let fop = match op {
        Alu::Add => FlagOp::Add,
        Alu::Adc => FlagOp::Adc,
        Alu::Sbb => FlagOp::Sbb,
        Alu::Sub | Alu::Cmp => FlagOp::Sub,
        _ => FlagOp::Logic,
    };
    // MOV leaves the host's flags alone.
    dynasm!(a
        ; mov QWORD [rbx + l.fl_res as i32], rax
        ; mov BYTE [rbx + l.fl_op as i32], fop as i8
        ; mov DWORD [rbx + l.fl_size as i32], i32::from(size)
    );
}

/// Pushes R8 on the guest's stack (64-bit), or goes to `slow` with
/// nothing changed when the inline TLB lookup misses.
pub(super) fn push_r8(a: &mut Asm, l: &Layout, slow: Label) {
    dynasm!(a
        ; mov rax, QWORD [rbx + l.reg(RSP)]
        ; sub rax, 8
    );
    emit_tlb(a, l, 8, true, slow);
    dynasm!(a
        ; mov QWORD [rsi], r8
        ; mov QWORD [rbx + l.reg(RSP)], rax
    );
}

/// Jumps to `slow` when the branch target in RDX is not canonical (the
/// handler then raises the fault). Uses RCX.
fn slow_unless_canonical(a: &mut Asm, slow: Label) {
    dynasm!(a
        ; mov rcx, rdx
        ; sar rcx, 47
        ; add rcx, 1
        ; cmp rcx, 1
        ; ja =>slow
    );
}

/// Emits native memory form `f` (one of [`native_mem`]'s) of instruction
/// `i`, its trampoline as the slow path; `fl` is what the host's flags
/// hold before it. After an ALU form the host's flags hold the guest's on
/// both paths (the slow path redoes the operation on the operands the
/// handler recorded), after INC/DEC all but CF. `dead`: nothing reads
/// the flags it leaves, so none are recorded or redone.
pub(super) fn emit_mem_form<'a>(
    a: &mut Asm,
    l: &Layout,
    x: Insn<'a>,
    fl: &mut HostFlags,
    top: Top<'a>,
) {
    let Insn { f, i, dead, .. } = x;
    let slow = a.new_dynamic_label();
    let done = a.new_dynamic_label();
    let size = f.size;
    let bytes = u32::from(size / 8);
    // The guest's carry is read before the TLB lookup changes the host's
    // flags.
    match f.kind {
        Kind::Alu(Alu::Adc | Alu::Sbb) => carry_to_r8(a, l, fl),
        Kind::Inc | Kind::Dec if !dead => pin_guest_cf(a, l, fl),
        _ => {}
    }
    match f.kind {
        Kind::Inc | Kind::Dec => {
            emit_lin(a, l, &f.mem);
            emit_tlb(a, l, bytes, true, slow);
            load_mem(a, RAX, size, false);
            incdec(a, l, f.kind, size, !dead);
            dynasm!(a ; mov rdx, rax);
            store_mem(a, size);
        }
        Kind::Mov if f.src == Loc::Mem => {
            emit_lin(a, l, &f.mem);
            emit_tlb(a, l, bytes, false, slow);
            load_mem(a, RAX, size, false);
            put_reg(a, l, reg_of(f.dst), size);
        }
        Kind::Mov => {
            emit_lin(a, l, &f.mem);
            emit_tlb(a, l, bytes, true, slow);
            match f.src {
                Loc::Imm => mov_imm(a, RDX, f.imm),
                s => get_reg(a, l, RDX, reg_of(s), size),
            }
            store_mem(a, size);
        }
        Kind::Movzx | Kind::Movsx => {
            emit_lin(a, l, &f.mem);
            emit_tlb(a, l, u32::from(f.size2 / 8), false, slow);
            load_mem(a, RAX, f.size2, f.kind == Kind::Movsx);
            put_reg(a, l, reg_of(f.dst), size);
        }
        Kind::Alu(op) if f.src == Loc::Mem => {
            emit_lin(a, l, &f.mem);
            emit_tlb(a, l, bytes, false, slow);
            load_mem(a, RCX, size, false);
            get_reg(a, l, RAX, reg_of(f.dst), size);
            emit_alu(a, l, op, size, !dead);
            if !matches!(op, Alu::Cmp | Alu::Test) {
                put_reg(a, l, reg_of(f.dst), size);
            }
        }
        Kind::Alu(op) => {
            let read_only = matches!(op, Alu::Cmp | Alu::Test);
            emit_lin(a, l, &f.mem);
            emit_tlb(a, l, bytes, !read_only, slow);
            load_mem(a, RAX, size, false);
            match f.src {
                Loc::Imm => mov_imm(a, RCX, f.imm),
                s => get_reg(a, l, RCX, reg_of(s), size),
            }
            emit_alu(a, l, op, size, !dead);
            if !read_only {
                dynasm!(a ; mov rdx, rax);
                store_mem(a, size);
            }
        }
        Kind::Push | Kind::Call => {
            // A call through a register or memory: its target (in R8)
            // must be read and canonical before anything changes.
            let indirect = f.kind == Kind::Call && f.src != Loc::Imm;
            if indirect {
                indirect_target(a, l, f, slow);
                dynasm!(a ; mov r8, rdx);
            }
            dynasm!(a
                ; mov rax, QWORD [rbx + l.reg(RSP)]
                ; sub rax, 8
            );
            emit_tlb(a, l, 8, true, slow);
            match (f.kind, f.src) {
                (Kind::Call, _) => mov_imm(a, RDX, f.next),
                (_, Loc::Imm) => mov_imm(a, RDX, f.imm),
                (_, s) => dynasm!(a ; mov rdx, QWORD [rbx + l.reg(reg_of(s))]),
            }
            dynasm!(a
                ; mov QWORD [rsi], rdx
                ; mov QWORD [rbx + l.reg(RSP)], rax
            );
            if indirect {
                dynasm!(a
                    ; mov rdx, r8
                    ; mov QWORD [rbx + l.rip as i32], rdx
                );
                dynamic_exit(a, i, top.exit);
            } else if f.kind == Kind::Call {
                branch_to(a, l, f, i, top);
            }
        }
        Kind::Setcc(cc) => {
            // The condition before the TLB lookup changes the host's
            // flags.
            cond_to_ecx(a, l, cc, fl);
            dynasm!(a ; mov r8d, ecx);
            emit_lin(a, l, &f.mem);
            emit_tlb(a, l, 1, true, slow);
            dynasm!(a ; mov BYTE [rsi], r8b);
        }
        Kind::Pop => {
            dynasm!(a ; mov rax, QWORD [rbx + l.reg(RSP)]);
            emit_tlb(a, l, 8, false, slow);
            // As the handler: RSP first, so POP RSP leaves the value.
            dynasm!(a
                ; mov rdx, QWORD [rsi]
                ; add rax, 8
                ; mov QWORD [rbx + l.reg(RSP)], rax
                ; mov QWORD [rbx + l.reg(reg_of(f.dst))], rdx
            );
        }
        Kind::Ret => {
            dynasm!(a ; mov rax, QWORD [rbx + l.reg(RSP)]);
            emit_tlb(a, l, 8, false, slow);
            dynasm!(a ; mov rdx, QWORD [rsi]);
            slow_unless_canonical(a, slow);
            dynasm!(a
                ; add rax, 8
                ; mov QWORD [rbx + l.reg(RSP)], rax
                ; mov QWORD [rbx + l.rip as i32], rdx
            );
            dynamic_exit(a, i, top.exit);
        }
        Kind::Jmp => {
            // Through a register or memory.
            indirect_target(a, l, f, slow);
            dynasm!(a ; mov QWORD [rbx + l.rip as i32], rdx);
            dynamic_exit(a, i, top.exit);
        }
        _ => unreachable!("not a native memory form"),
    }
    dynasm!(a ; =>done);
    // The handler records the operands; the slow path redoes the
    // operation for the host's flags.
    let redo = match f.kind {
        _ if dead => None,
        Kind::Alu(_) | Kind::Inc | Kind::Dec => Some((f.kind, size)),
        _ => None,
    };
    top.slow_path(slow, done, x, redo);
}
