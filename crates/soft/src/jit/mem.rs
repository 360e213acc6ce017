//! The translator's memory forms: guest loads and stores through an
//! inline TLB lookup, with the instruction's interpreter handler (through
//! the trampoline) as the slow path for page crossings, TLB misses,
//! missing rights, MMIO and stores to pages that hold decoded code.
//!
//! Register use (see [`super::emit`]): RBX is the core, R12 the context,
//! R13 the index of the instruction being run, R15 the TLB permission bit
//! a read needs at the current privilege (`PERM_SR` or `PERM_UR`; a
//! write needs it shifted left by two). RAX, RCX, RDX, RSI, RDI and R8
//! are scratch.

use iced_x86::code_asm::*;
use iced_x86::Instruction;

use super::{branch_to, byte_reg, dynamic_exit, emit_tramp, JitCtx, Layout, Top};
use crate::fast::{Alu, Fast, Kind, Loc, Mem, NO_REG};
use crate::flags::FlagOp;

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
/// [`super::native`]'s register forms).
pub(super) fn native_mem(f: &Fast) -> bool {
    let reg_or_imm = |l: Loc| matches!(l, Loc::Reg(_) | Loc::Imm);
    match f.kind {
        Kind::Mov => {
            (is_reg(f.dst) && f.src == Loc::Mem) || (f.dst == Loc::Mem && reg_or_imm(f.src))
        }
        Kind::Movzx | Kind::Movsx => {
            matches!(f.size, 32 | 64) && is_reg(f.dst) && f.src == Loc::Mem
        }
        Kind::Alu(op) => {
            !matches!(op, Alu::Adc | Alu::Sbb)
                && ((is_reg(f.dst) && f.src == Loc::Mem)
                    || (f.dst == Loc::Mem && reg_or_imm(f.src)))
        }
        Kind::Push => reg_or_imm(f.src),
        Kind::Pop => is_reg(f.dst),
        Kind::Call => f.src == Loc::Imm || is_reg(f.src),
        Kind::Jmp => is_reg(f.src),
        Kind::Ret => true,
        _ => false,
    }
}

/// RAX = the effective address of memory operand `m` (base + index *
/// scale + displacement, no segment: what LEA computes). Uses RCX.
pub(super) fn emit_ea(a: &mut CodeAssembler, l: &Layout, m: &Mem) -> Result<(), IcedError> {
    a.mov(rax, m.disp)?;
    if m.base != NO_REG {
        a.add(rax, qword_ptr(rbx + l.reg(m.base)))?;
    }
    if m.index != NO_REG {
        a.mov(rcx, qword_ptr(rbx + l.reg(m.index)))?;
        if m.scale != 0 {
            a.shl(rcx, u32::from(m.scale))?;
        }
        a.add(rax, rcx)?;
    }
    Ok(())
}

/// RAX = the linear address of memory operand `m` (64-bit code: only FS
/// and GS have a base).
fn emit_lin(a: &mut CodeAssembler, l: &Layout, m: &Mem) -> Result<(), IcedError> {
    emit_ea(a, l, m)?;
    if m.seg >= 4 {
        a.add(
            rax,
            qword_ptr(rbx + l.seg_base[usize::from(m.seg & 7).min(5)] as i32),
        )?;
    }
    Ok(())
}

/// The inline TLB lookup of `bytes` at the linear address in RAX for a
/// read or (`write`) a write: RSI = the host address. Jumps to `slow` when
/// the access crosses a page, misses the TLB, lacks the rights the entry
/// grants the fast path (which excludes MMIO, and writes before the page
/// is dirty), or writes a page that holds decoded code. Keeps RAX.
fn emit_tlb(
    a: &mut CodeAssembler,
    l: &Layout,
    bytes: u32,
    write: bool,
    slow: CodeLabel,
) -> Result<(), IcedError> {
    a.mov(ecx, eax)?;
    a.and(ecx, 0xfff)?;
    a.cmp(ecx, 0x1000 - bytes)?;
    a.ja(slow)?;
    a.mov(rdx, rax)?;
    a.shr(rdx, 12)?;
    a.mov(esi, edx)?;
    a.and(esi, (l.tlb.count - 1) as u32)?;
    a.imul_3(esi, esi, l.tlb.stride as i32)?;
    a.add(
        rsi,
        qword_ptr(r12 + std::mem::offset_of!(JitCtx, tlb) as i32),
    )?;
    a.add(rdx, 1)?;
    a.cmp(qword_ptr(rsi + l.tlb.tag as i32), rdx)?;
    a.jne(slow)?;
    if write {
        a.lea(edx, ptr(r15 * 4))?;
        a.test(byte_ptr(rsi + l.tlb.perm as i32), dl)?;
        a.jz(slow)?;
        a.mov(rdx, qword_ptr(rsi + l.tlb.pa as i32))?;
        a.shr(rdx, 12)?;
        a.cmp(
            rdx,
            qword_ptr(r12 + std::mem::offset_of!(JitCtx, code_pages) as i32),
        )?;
        a.jae(slow)?;
        a.mov(
            rdi,
            qword_ptr(r12 + std::mem::offset_of!(JitCtx, code_map) as i32),
        )?;
        a.cmp(byte_ptr(rdi + rdx), 0)?;
        a.jne(slow)?;
    } else {
        a.test(byte_ptr(rsi + l.tlb.perm as i32), r15b)?;
        a.jz(slow)?;
    }
    a.mov(rsi, qword_ptr(rsi + l.tlb.host as i32))?;
    a.add(rsi, rcx)?;
    Ok(())
}

/// `dst` = the `size`-bit value at [RSI], zero- or (`sx`) sign-extended.
fn load_mem(
    a: &mut CodeAssembler,
    dst: AsmRegister64,
    size: u8,
    sx: bool,
) -> Result<(), IcedError> {
    let d32 = low32(dst);
    match (size, sx) {
        (8, false) => a.movzx(d32, byte_ptr(rsi)),
        (16, false) => a.movzx(d32, word_ptr(rsi)),
        (32, false) => a.mov(d32, dword_ptr(rsi)),
        (8, true) => a.movsx(dst, byte_ptr(rsi)),
        (16, true) => a.movsx(dst, word_ptr(rsi)),
        (32, true) => a.movsxd(dst, dword_ptr(rsi)),
        _ => a.mov(dst, qword_ptr(rsi)),
    }
}

/// [RSI] = the low `size` bits of RDX.
fn store_mem(a: &mut CodeAssembler, size: u8) -> Result<(), IcedError> {
    match size {
        8 => a.mov(byte_ptr(rsi), dl),
        16 => a.mov(word_ptr(rsi), dx),
        32 => a.mov(dword_ptr(rsi), edx),
        _ => a.mov(qword_ptr(rsi), rdx),
    }
}

fn low32(r: AsmRegister64) -> AsmRegister32 {
    if r == rax {
        eax
    } else if r == rcx {
        ecx
    } else {
        edx
    }
}

/// `dst` = guest register `r` zero-extended from `size` bits (8-bit
/// registers in iced-x86's byte numbering).
pub(super) fn get_reg(
    a: &mut CodeAssembler,
    l: &Layout,
    dst: AsmRegister64,
    r: u8,
    size: u8,
) -> Result<(), IcedError> {
    match size {
        64 => a.mov(dst, qword_ptr(rbx + l.reg(r))),
        32 => a.mov(low32(dst), dword_ptr(rbx + l.reg(r))),
        16 => a.movzx(low32(dst), word_ptr(rbx + l.reg(r))),
        _ => a.movzx(low32(dst), byte_ptr(rbx + byte_reg(l, r))),
    }
}

/// Guest register `r` = RAX as a `size`-bit write does it (32-bit writes
/// zero-extend, 8- and 16-bit ones keep the rest).
pub(super) fn put_reg(a: &mut CodeAssembler, l: &Layout, r: u8, size: u8) -> Result<(), IcedError> {
    match size {
        64 => a.mov(qword_ptr(rbx + l.reg(r)), rax),
        32 => {
            a.mov(eax, eax)?;
            a.mov(qword_ptr(rbx + l.reg(r)), rax)
        }
        16 => a.mov(word_ptr(rbx + l.reg(r)), ax),
        _ => a.mov(byte_ptr(rbx + byte_reg(l, r)), al),
    }
}

/// RAX op= RCX at `size` bits (CMP and TEST as SUB and AND), setting the
/// host's flags as the guest's.
fn alu_op(a: &mut CodeAssembler, op: Alu, size: u8) -> Result<(), IcedError> {
    macro_rules! at_width {
        ($m:ident) => {
            match size {
                64 => a.$m(rax, rcx),
                32 => a.$m(eax, ecx),
                16 => a.$m(ax, cx),
                _ => a.$m(al, cl),
            }
        };
    }
    match op {
        Alu::Add => at_width!(add),
        Alu::Sub | Alu::Cmp => at_width!(sub),
        Alu::And | Alu::Test => at_width!(and),
        Alu::Or => at_width!(or),
        _ => at_width!(xor),
    }
}

/// The ALU operation `op` of RAX (destination) and RCX (source), both
/// zero-extended from `size` bits: records the lazy flags as the
/// interpreter's handlers do and leaves the result in RAX and the guest's
/// arithmetic flags in the host's.
pub(super) fn emit_alu(
    a: &mut CodeAssembler,
    l: &Layout,
    op: Alu,
    size: u8,
) -> Result<(), IcedError> {
    a.mov(qword_ptr(rbx + l.fl_dst as i32), rax)?;
    a.mov(qword_ptr(rbx + l.fl_src as i32), rcx)?;
    alu_op(a, op, size)?;
    let fop = match op {
        Alu::Add => FlagOp::Add,
        Alu::Sub | Alu::Cmp => FlagOp::Sub,
        _ => FlagOp::Logic,
    };
    a.mov(qword_ptr(rbx + l.fl_res as i32), rax)?;
    a.mov(byte_ptr(rbx + l.fl_op as i32), fop as u32)?;
    a.mov(dword_ptr(rbx + l.fl_size as i32), u32::from(size))?;
    Ok(())
}

/// Jumps to `slow` when the branch target in RDX is not canonical (the
/// handler then raises the fault). Uses RCX.
fn slow_unless_canonical(a: &mut CodeAssembler, slow: CodeLabel) -> Result<(), IcedError> {
    a.mov(rcx, rdx)?;
    a.sar(rcx, 47)?;
    a.add(rcx, 1)?;
    a.cmp(rcx, 1)?;
    a.ja(slow)
}

/// Emits native memory form `f` (one of [`native_mem`]'s) of instruction
/// `i`, its trampoline as the slow path. After an ALU form the host's
/// flags hold the guest's on both paths (the slow path redoes the
/// operation on the operands the handler recorded).
pub(super) fn emit_mem_form(
    a: &mut CodeAssembler,
    l: &Layout,
    f: &Fast,
    ins: &Instruction,
    i: u32,
    exit: CodeLabel,
    top: Top,
) -> Result<(), IcedError> {
    let mut slow = a.create_label();
    let mut done = a.create_label();
    let size = f.size;
    let bytes = u32::from(size / 8);
    match f.kind {
        Kind::Mov if f.src == Loc::Mem => {
            emit_lin(a, l, &f.mem)?;
            emit_tlb(a, l, bytes, false, slow)?;
            load_mem(a, rax, size, false)?;
            put_reg(a, l, reg_of(f.dst), size)?;
        }
        Kind::Mov => {
            emit_lin(a, l, &f.mem)?;
            emit_tlb(a, l, bytes, true, slow)?;
            match f.src {
                Loc::Imm => a.mov(rdx, f.imm)?,
                s => get_reg(a, l, rdx, reg_of(s), size)?,
            }
            store_mem(a, size)?;
        }
        Kind::Movzx | Kind::Movsx => {
            emit_lin(a, l, &f.mem)?;
            emit_tlb(a, l, u32::from(f.size2 / 8), false, slow)?;
            load_mem(a, rax, f.size2, f.kind == Kind::Movsx)?;
            put_reg(a, l, reg_of(f.dst), size)?;
        }
        Kind::Alu(op) if f.src == Loc::Mem => {
            emit_lin(a, l, &f.mem)?;
            emit_tlb(a, l, bytes, false, slow)?;
            load_mem(a, rcx, size, false)?;
            get_reg(a, l, rax, reg_of(f.dst), size)?;
            emit_alu(a, l, op, size)?;
            if !matches!(op, Alu::Cmp | Alu::Test) {
                put_reg(a, l, reg_of(f.dst), size)?;
            }
        }
        Kind::Alu(op) => {
            let read_only = matches!(op, Alu::Cmp | Alu::Test);
            emit_lin(a, l, &f.mem)?;
            emit_tlb(a, l, bytes, !read_only, slow)?;
            load_mem(a, rax, size, false)?;
            match f.src {
                Loc::Imm => a.mov(rcx, f.imm)?,
                s => get_reg(a, l, rcx, reg_of(s), size)?,
            }
            emit_alu(a, l, op, size)?;
            if !read_only {
                a.mov(rdx, rax)?;
                store_mem(a, size)?;
            }
        }
        Kind::Push | Kind::Call => {
            // A call through a register: its target (in R8) must be
            // canonical before anything changes.
            let indirect = f.kind == Kind::Call && f.src != Loc::Imm;
            if indirect {
                a.mov(rdx, qword_ptr(rbx + l.reg(reg_of(f.src))))?;
                slow_unless_canonical(a, slow)?;
                a.mov(r8, rdx)?;
            }
            a.mov(rax, qword_ptr(rbx + l.reg(RSP)))?;
            a.sub(rax, 8)?;
            emit_tlb(a, l, 8, true, slow)?;
            match (f.kind, f.src) {
                (Kind::Call, _) => a.mov(rdx, f.next)?,
                (_, Loc::Imm) => a.mov(rdx, f.imm)?,
                (_, s) => a.mov(rdx, qword_ptr(rbx + l.reg(reg_of(s))))?,
            }
            a.mov(qword_ptr(rsi), rdx)?;
            a.mov(qword_ptr(rbx + l.reg(RSP)), rax)?;
            if indirect {
                a.mov(rdx, r8)?;
                a.mov(qword_ptr(rbx + l.rip as i32), rdx)?;
                dynamic_exit(a, l, i, exit)?;
            } else if f.kind == Kind::Call {
                branch_to(a, l, f, i, exit, top)?;
            }
        }
        Kind::Pop => {
            a.mov(rax, qword_ptr(rbx + l.reg(RSP)))?;
            emit_tlb(a, l, 8, false, slow)?;
            a.mov(rdx, qword_ptr(rsi))?;
            a.add(rax, 8)?;
            // As the handler: RSP first, so POP RSP leaves the value.
            a.mov(qword_ptr(rbx + l.reg(RSP)), rax)?;
            a.mov(qword_ptr(rbx + l.reg(reg_of(f.dst))), rdx)?;
        }
        Kind::Ret => {
            a.mov(rax, qword_ptr(rbx + l.reg(RSP)))?;
            emit_tlb(a, l, 8, false, slow)?;
            a.mov(rdx, qword_ptr(rsi))?;
            slow_unless_canonical(a, slow)?;
            a.add(rax, 8)?;
            a.mov(qword_ptr(rbx + l.reg(RSP)), rax)?;
            a.mov(qword_ptr(rbx + l.rip as i32), rdx)?;
            dynamic_exit(a, l, i, exit)?;
        }
        Kind::Jmp => {
            // Through a register.
            a.mov(rdx, qword_ptr(rbx + l.reg(reg_of(f.src))))?;
            slow_unless_canonical(a, slow)?;
            a.mov(qword_ptr(rbx + l.rip as i32), rdx)?;
            dynamic_exit(a, l, i, exit)?;
        }
        _ => unreachable!("not a native memory form"),
    }
    a.jmp(done)?;
    a.set_label(&mut slow)?;
    emit_tramp(a, f, ins, i, exit)?;
    if let Kind::Alu(op) = f.kind {
        // The handler recorded the operands; redo the operation for the
        // host's flags.
        a.mov(rax, qword_ptr(rbx + l.fl_dst as i32))?;
        a.mov(rcx, qword_ptr(rbx + l.fl_src as i32))?;
        alu_op(a, op, size)?;
    }
    a.set_label(&mut done)?;
    Ok(())
}
