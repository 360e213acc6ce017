//! The native register forms of the fast instruction kinds ([`native`],
//! [`emit_native`]): MOV, LEA, the ALU group, INC/DEC, IMUL, SHL/SHR/SAR
//! ([`emit_shift`]), CMOVcc, MOVZX/MOVSX, SETcc, direct JMP and Jcc, and
//! ROL/ROR by an immediate ([`native_rotate`], [`emit_rotate`]), each
//! setting the guest's flags as the interpreter's handler does.

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use iced_x86::Instruction;

use super::emit::{Insn, Top};
use super::exits::branch_to;
use super::hostflags::{
    call_cond, cond_to_ecx, eager_flags, emit_eager, host_szp, jcc_host, pin_guest_cf, HostFlags,
};
use super::layout::{byte_reg, Layout};
use super::{call, mem, mov_imm, Asm, RAX, RCX, RDX};
use crate::fast::{Alu, Fast, Kind, Loc};
use crate::flags::FlagOp;

/// 32- and 64-bit operands are emitted natively.
fn wide(f: &Fast) -> bool {
    f.size == 32 || f.size == 64
}

fn is_reg(l: Loc) -> bool {
    matches!(l, Loc::Reg(_))
}

fn reg_of(l: Loc) -> u8 {
    match l {
        Loc::Reg(r) => r,
        _ => 0,
    }
}

/// Whether `f` has a native translation.
pub(super) fn native(f: &Fast) -> bool {
    match f.kind {
        Kind::Nop => true,
        Kind::Mov => is_reg(f.dst) && matches!(f.src, Loc::Reg(_) | Loc::Imm),
        Kind::Lea => wide(f) && is_reg(f.dst),
        Kind::Alu(_) => is_reg(f.dst) && matches!(f.src, Loc::Reg(_) | Loc::Imm),
        Kind::Jmp | Kind::Jcc(_) => f.src == Loc::Imm,
        Kind::Inc | Kind::Dec => wide(f) && is_reg(f.dst),
        Kind::Imul2 => wide(f) && is_reg(f.dst) && is_reg(f.src),
        Kind::Setcc(_) => is_reg(f.dst),
        Kind::Cmovcc(_) => wide(f) && is_reg(f.dst) && is_reg(f.src),
        Kind::Movzx | Kind::Movsx => wide(f) && is_reg(f.dst) && is_reg(f.src),
        Kind::Shl | Kind::Shr | Kind::Sar => {
            wide(f) && is_reg(f.dst) && matches!(f.src, Loc::Imm | Loc::Reg(1))
        }
        _ => false,
    }
}

/// The rotate of `ins` when it has a native form: ROL/ROR of a 32- or
/// 64-bit register by an immediate. Returns (left, register, size,
/// count).
pub(super) fn native_rotate(f: &Fast, ins: &Instruction) -> Option<(bool, u8, u8, u32)> {
    use iced_x86::{Mnemonic, OpKind};
    if f.kind != Kind::Generic || ins.op_count() != 2 || ins.op_kind(1) != OpKind::Immediate8 {
        return None;
    }
    let left = match ins.mnemonic() {
        Mnemonic::Rol => true,
        Mnemonic::Ror => false,
        _ => return None,
    };
    if ins.has_lock_prefix() {
        return None;
    }
    let (r, size) = wide_gpr_operand0(ins)?;
    let n = u32::from(ins.immediate8()) & if size == 64 { 63 } else { 31 };
    Some((left, r, size, n))
}

/// The guest register number and size of `ins`'s first operand when it
/// is a 32- or 64-bit general register.
pub(super) fn wide_gpr_operand0(ins: &Instruction) -> Option<(u8, u8)> {
    if ins.op_kind(0) != iced_x86::OpKind::Register {
        return None;
    }
    let r = ins.op_register(0);
    let size = match r.size() {
        8 => 64u8,
        4 => 32,
        _ => return None,
    };
    r.is_gpr().then(|| (r.full_register().number() as u8, size))
}

/// Emits a native ROL/ROR (see [`native_rotate`]): CF and OF as the
/// interpreter sets them (OF by the count-1 rule for every count), the
/// other flags kept; no flag change for a zero count, and none at all
/// when nothing reads them (`dead`, see `emit::flags_dead_after`).
pub(super) fn emit_rotate(
    a: &mut Asm,
    l: &Layout,
    (left, r, size, n): (bool, u8, u8, u32),
    dead: bool,
) {
    if n == 0 {
        mem::get_reg(a, l, RAX, r, size);
        mem::put_reg(a, l, r, size);
        return;
    }
    if !dead {
        // The host's flags may be live, but their AF after a logic
        // operation is not the interpreter's: materialise the guest's
        // through it.
        dynasm!(a ; mov rdi, rbx);
        call(a, eager_flags as *const () as u64);
    }
    mem::get_reg(a, l, RAX, r, size);
    let n8 = n as i8;
    match (left, size) {
        (true, 64) => dynasm!(a ; rol rax, n8),
        (true, _) => dynasm!(a ; rol eax, n8),
        (false, 64) => dynasm!(a ; ror rax, n8),
        (false, _) => dynasm!(a ; ror eax, n8),
    }
    mem::put_reg(a, l, r, size);
    if dead {
        // Nothing reads the CF and OF it sets.
        return;
    }
    let bits = size as i8;
    // ECX = CF, EDX = OF.
    if left {
        dynasm!(a
            ; mov ecx, eax
            ; and ecx, 1
            ; mov rdx, rax
            ; shr rdx, bits - 1
        );
    } else {
        dynasm!(a
            ; mov rcx, rax
            ; shr rcx, bits - 1
            ; and ecx, 1
            ; mov rdx, rax
            ; shr rdx, bits - 2
        );
    }
    let cf_of = (crate::flags::CF | crate::flags::OF) as i32;
    dynasm!(a
        ; xor edx, ecx
        ; and edx, 1
        ; shl edx, 11
        ; or edx, ecx
        ; and QWORD [rbx + l.fl_bits as i32], !cf_of
        ; or QWORD [rbx + l.fl_bits as i32], rdx
    );
}

/// INC or DEC (`kind`) of RAX at `size` bits, recorded in the lazy flags
/// as the interpreter does (CF pinned before, [`pin_guest_cf`]); the
/// host's flags are then the guest's but for CF.
pub(super) fn incdec(a: &mut Asm, l: &Layout, kind: Kind, size: u8, record: bool) {
    if !record {
        incdec_op(a, kind, size);
        return;
    }
    dynasm!(a
        ; mov QWORD [rbx + l.fl_dst as i32], rax
        ; mov QWORD [rbx + l.fl_src as i32], 1
    );
    incdec_op(a, kind, size);
    let fop = if kind == Kind::Inc {
        FlagOp::Inc
    } else {
        FlagOp::Dec
    };
    dynasm!(a
        ; mov QWORD [rbx + l.fl_res as i32], rax
        ; mov BYTE [rbx + l.fl_op as i32], fop as i8
        ; mov DWORD [rbx + l.fl_size as i32], i32::from(size)
    );
}

/// SHL/SHR/SAR of a 32/64-bit register by an immediate or by CL, as
/// `shift_ri` and the interpreter do it: no flag change for a zero count
/// (a 32-bit register still written, zero-extended); else CF the last
/// bit out, SF/ZF/PF of the result, OF as the interpreter computes it for
/// every count, AF clear.
fn emit_shift(a: &mut Asm, l: &Layout, f: &Fast, dead: bool) {
    let bits = f.size as i8;
    let count_mask = if bits == 64 { 63 } else { 31 };
    let r = reg_of(f.dst);
    mem::get_reg(a, l, RAX, r, f.size);
    let zero = a.new_dynamic_label();
    if f.src == Loc::Imm {
        let n = (f.imm as u32) & count_mask;
        if n == 0 {
            dynasm!(a ; mov QWORD [rbx + l.reg(r)], rax);
            return;
        }
        dynasm!(a ; mov ecx, n as i32);
    } else {
        dynasm!(a
            ; mov ecx, DWORD [rbx + l.reg(1)]
            ; and ecx, count_mask as i32
            ; jz =>zero
        );
    }
    dynasm!(a ; mov r9, rax);
    match (f.kind, bits) {
        (Kind::Shl, 64) => dynasm!(a ; shl rax, cl),
        (Kind::Shl, _) => dynasm!(a ; shl eax, cl),
        (Kind::Shr, 64) => dynasm!(a ; shr rax, cl),
        (Kind::Shr, _) => dynasm!(a ; shr eax, cl),
        (_, 64) => dynasm!(a ; sar rax, cl),
        _ => dynasm!(a ; sar eax, cl),
    }
    dynasm!(a ; mov QWORD [rbx + l.reg(r)], rax);
    // Unless nothing reads the flags it leaves.
    if !dead {
        emit_shift_flags(a, l, f.kind, bits);
    }
    if f.src != Loc::Imm {
        let done = a.new_dynamic_label();
        dynasm!(a
            ; jmp =>done
            ; =>zero
            ; mov QWORD [rbx + l.reg(r)], rax
            ; =>done
        );
    }
}

/// The flags of a SHL/SHR/SAR by a count that is not zero, from the
/// host's after the shift (RAX the result, R9 the operand).
fn emit_shift_flags(a: &mut Asm, l: &Layout, kind: Kind, bits: i8) {
    host_szp(a, true);
    match kind {
        // OF = MSB(result) ^ CF.
        Kind::Shl => dynasm!(a
            ; mov r8, rax
            ; shr r8, bits - 1
            ; xor r8d, edx
            ; and r8d, 1
            ; shl r8d, 11
            ; or edx, r8d
        ),
        // OF = MSB(operand).
        Kind::Shr => dynasm!(a
            ; shr r9, bits - 1
            ; and r9d, 1
            ; shl r9d, 11
            ; or edx, r9d
        ),
        _ => {}
    }
    emit_eager(a, l);
}

/// RAX = RAX plus or minus one (INC or DEC, `kind`) at `size` bits.
pub(super) fn incdec_op(a: &mut Asm, kind: Kind, size: u8) {
    match (kind == Kind::Inc, size) {
        (true, 64) => dynasm!(a ; inc rax),
        (true, 32) => dynasm!(a ; inc eax),
        (true, 16) => dynasm!(a ; inc ax),
        (true, _) => dynasm!(a ; inc al),
        (false, 64) => dynasm!(a ; dec rax),
        (false, 32) => dynasm!(a ; dec eax),
        (false, 16) => dynasm!(a ; dec ax),
        (false, _) => dynasm!(a ; dec al),
    }
}

/// Emits the native form of `f` (one of [`native`]'s).
///
/// `fl`: what the host's flags hold before it; updated to after it.
pub(super) fn emit_native(a: &mut Asm, l: &Layout, x: Insn, fl: &mut HostFlags, top: Top) {
    let Insn { f, i, dead, .. } = x;
    match f.kind {
        Kind::Nop => {}
        Kind::Mov => {
            match f.src {
                Loc::Imm => mov_imm(a, RAX, f.imm),
                s => mem::get_reg(a, l, RAX, reg_of(s), f.size),
            }
            mem::put_reg(a, l, reg_of(f.dst), f.size);
        }
        Kind::Lea => {
            mem::emit_ea(a, l, &f.mem);
            if f.size == 32 {
                dynasm!(a ; mov eax, eax);
            }
            dynasm!(a ; mov QWORD [rbx + l.reg(reg_of(f.dst))], rax);
        }
        // A comparison nothing reads.
        Kind::Alu(Alu::Cmp | Alu::Test) if dead => {}
        Kind::Alu(op) => {
            if matches!(op, Alu::Adc | Alu::Sbb) {
                mem::carry_to_r8(a, l, fl);
            }
            mem::get_reg(a, l, RAX, reg_of(f.dst), f.size);
            match f.src {
                Loc::Imm => mov_imm(a, RCX, f.imm),
                s => mem::get_reg(a, l, RCX, reg_of(s), f.size),
            }
            mem::emit_alu(a, l, op, f.size, !dead);
            if !matches!(op, Alu::Cmp | Alu::Test) {
                mem::put_reg(a, l, reg_of(f.dst), f.size);
            }
        }
        Kind::Jcc(cc) => {
            // Not taken: on with the next instruction.
            let skip = a.new_dynamic_label();
            if fl.make_live(a, l, cc) {
                jcc_host(a, cc ^ 1, skip);
            } else {
                call_cond(a, cc, fl);
                dynasm!(a
                    ; test eax, eax
                    ; jz =>skip
                );
            }
            branch_to(a, l, f, i, top);
            dynasm!(a ; =>skip);
        }
        Kind::Inc | Kind::Dec => {
            if !dead {
                pin_guest_cf(a, l, fl);
            }
            let r = reg_of(f.dst);
            mem::get_reg(a, l, RAX, r, f.size);
            incdec(a, l, f.kind, f.size, !dead);
            dynasm!(a ; mov QWORD [rbx + l.reg(r)], rax);
        }
        Kind::Jmp => branch_to(a, l, f, i, top),
        Kind::Setcc(cc) => {
            cond_to_ecx(a, l, cc, fl);
            dynasm!(a ; mov BYTE [rbx + byte_reg(l, reg_of(f.dst))], cl);
        }
        Kind::Cmovcc(cc) => {
            // As `cmov_rr`: the destination is written either way (a
            // 32-bit one zero-extended).
            cond_to_ecx(a, l, cc, fl);
            mem::get_reg(a, l, RAX, reg_of(f.dst), f.size);
            mem::get_reg(a, l, RDX, reg_of(f.src), f.size);
            dynasm!(a
                ; test ecx, ecx
                ; cmovne rax, rdx
                ; mov QWORD [rbx + l.reg(reg_of(f.dst))], rax
            );
        }
        Kind::Movzx | Kind::Movsx => {
            let src = reg_of(f.src);
            let sx = f.kind == Kind::Movsx;
            match (f.size2, sx) {
                (8, false) => dynasm!(a ; movzx eax, BYTE [rbx + byte_reg(l, src)]),
                (16, false) => dynasm!(a ; movzx eax, WORD [rbx + l.reg(src)]),
                (8, true) => dynasm!(a ; movsx rax, BYTE [rbx + byte_reg(l, src)]),
                (16, true) => dynasm!(a ; movsx rax, WORD [rbx + l.reg(src)]),
                (32, true) => dynasm!(a ; movsxd rax, DWORD [rbx + l.reg(src)]),
                _ => mem::get_reg(a, l, RAX, src, f.size2.max(32)),
            }
            if f.size == 32 {
                dynasm!(a ; mov eax, eax);
            }
            dynasm!(a ; mov QWORD [rbx + l.reg(reg_of(f.dst))], rax);
        }
        Kind::Imul2 => {
            // As `imul_rr`: CF = OF = signed overflow, SF/ZF/PF of the
            // result, AF clear.
            let r = reg_of(f.dst);
            mem::get_reg(a, l, RAX, r, f.size);
            mem::get_reg(a, l, RCX, reg_of(f.src), f.size);
            if f.size == 64 {
                dynasm!(a ; imul rax, rcx);
            } else {
                dynasm!(a ; imul eax, ecx);
            }
            dynasm!(a
                ; seto r8b
                ; mov QWORD [rbx + l.reg(r)], rax
            );
            if dead {
                return;
            }
            if f.size == 64 {
                dynasm!(a ; test rax, rax);
            } else {
                dynasm!(a ; test eax, eax);
            }
            host_szp(a, false);
            dynasm!(a
                ; movzx r8d, r8b
                ; imul r8d, r8d, (crate::flags::CF | crate::flags::OF) as i32
                ; or edx, r8d
            );
            emit_eager(a, l);
        }
        Kind::Shl | Kind::Shr | Kind::Sar => emit_shift(a, l, f, dead),
        _ => {}
    }
}
