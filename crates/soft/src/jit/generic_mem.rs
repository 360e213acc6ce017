//! The memory work of the generic instructions the translator emits
//! natively (`generic`): BT/BTS/BTR/BTC of a register or memory operand
//! ([`bit_test`], [`emit_bit_test`]), REP MOVS/STOS within a page
//! ([`emit_rep_string`]) and (LOCK) XADD/CMPXCHG on memory
//! ([`emit_xadd`], [`emit_cmpxchg`]), built on the inline TLB lookup of
//! the memory forms (`mem`), each going to the instruction's slow path
//! with nothing changed when it cannot finish inline.

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use iced_x86::Instruction;

use super::layout::Layout;
use super::mem::{emit_lin, emit_tlb, get_reg, put_reg, R8};
use super::{Asm, Label, RAX, RCX, RDX};
use crate::fast::Mem;
use crate::flags::FlagOp;

/// A BT, BTS, BTR or BTC the translator emits natively: its operation,
/// operand size (32 or 64), the operand tested (a register number or a
/// memory recipe) and the bit offset (an immediate or a register).
#[derive(Clone, Copy, Debug)]
pub(super) struct BitTest {
    op: iced_x86::Mnemonic,
    size: u8,
    dst: Result<u8, Mem>,
    bit: Result<u8, u8>,
}

/// The native form of `ins` if it is a BT/BTS/BTR/BTC of a 32/64-bit
/// register or memory operand by an immediate or a register.
pub(super) fn bit_test(ins: &Instruction) -> Option<BitTest> {
    use iced_x86::{Mnemonic, OpKind};
    let op = ins.mnemonic();
    if !matches!(
        op,
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) {
        return None;
    }
    let gpr = |r: iced_x86::Register| -> Option<u8> {
        let n = (r.full_register() as u32).checked_sub(iced_x86::Register::RAX as u32)?;
        (r.is_gpr() && n < 16).then_some(n as u8)
    };
    let size = match ins.op0_kind() {
        OpKind::Register => ins.op0_register().size(),
        OpKind::Memory => ins.memory_size().size(),
        _ => return None,
    };
    let size = match size {
        8 => 64,
        4 => 32,
        _ => return None,
    };
    let dst = match ins.op0_kind() {
        OpKind::Register => Ok(gpr(ins.op0_register())?),
        _ => Err(crate::fast::mem_recipe(ins)?),
    };
    let bit = match ins.op1_kind() {
        OpKind::Immediate8 => Ok(ins.immediate8() & (size - 1)),
        OpKind::Register => Err(gpr(ins.op1_register())?),
        _ => return None,
    };
    Some(BitTest { op, size, dst, bit })
}

/// Emits `b` with CF left as the bit's old value in the host's flags
/// (nothing else of them meaningful); to `slow` with nothing changed
/// when a memory operand misses the inline TLB lookup. A memory operand
/// with a register offset addresses the bit string: the offset's signed
/// quotient by the size picks the element.
pub(super) fn emit_bit_test(a: &mut Asm, l: &Layout, b: &BitTest, slow: Label) {
    use iced_x86::Mnemonic;
    let write = b.op != Mnemonic::Bt;
    // RCX = the bit number within the element.
    match b.bit {
        Ok(n) => dynasm!(a ; mov ecx, i32::from(n)),
        Err(r) => get_reg(a, l, RCX, r, b.size),
    }
    let m = match b.dst {
        Ok(r) => {
            get_reg(a, l, RAX, r, b.size);
            macro_rules! op {
                ($o:tt) => {
                    if b.size == 64 {
                        dynasm!(a ; $o rax, rcx)
                    } else {
                        dynasm!(a ; $o eax, ecx)
                    }
                };
            }
            match b.op {
                Mnemonic::Bt => op!(bt),
                Mnemonic::Bts => op!(bts),
                Mnemonic::Btr => op!(btr),
                _ => op!(btc),
            }
            if write {
                // MOV keeps the flags (put_reg's zero-extension too).
                put_reg(a, l, r, b.size);
            }
            return;
        }
        Err(m) => m,
    };
    let bytes = b.size / 8;
    if b.bit.is_err() {
        // R8 = the element's byte offset: sign-extended offset >> log2(size) * bytes.
        if b.size == 64 {
            dynasm!(a
                ; mov r8, rcx
                ; sar r8, 6
                ; shl r8, 3
                ; and ecx, 63
            );
        } else {
            dynasm!(a
                ; movsxd r8, ecx
                ; sar r8, 5
                ; shl r8, 2
                ; and ecx, 31
            );
        }
        // R9 keeps RCX across the EA and TLB code (which use it).
        dynasm!(a ; mov r9, rcx);
        emit_lin(a, l, &m);
        dynasm!(a ; add rax, r8);
    } else {
        dynasm!(a ; mov r9, rcx);
        emit_lin(a, l, &m);
    }
    if write {
        locked_operand(a, l, u32::from(bytes), slow);
    } else {
        emit_tlb(a, l, u32::from(bytes), false, slow);
    }
    dynasm!(a ; mov rcx, r9);
    macro_rules! op {
        ($o:tt) => {
            if b.size == 64 {
                dynasm!(a ; lock $o QWORD [rsi], rcx)
            } else {
                dynasm!(a ; lock $o DWORD [rsi], ecx)
            }
        };
    }
    match b.op {
        Mnemonic::Bt => {
            if b.size == 64 {
                dynasm!(a ; bt QWORD [rsi], rcx)
            } else {
                dynasm!(a ; bt DWORD [rsi], ecx)
            }
        }
        Mnemonic::Bts => op!(bts),
        Mnemonic::Btr => op!(btr),
        _ => op!(btc),
    }
}

/// Emits REP STOS (`movs` false) or REP MOVS of elements of 1 << `scale`
/// bytes, forward, in 64-bit code with flat segments, when the whole
/// string lies in one page on each side: the host's REP STOS/MOVS on the
/// guest's memory, then RDI (and RSI) advanced and RCX zero. To `done`
/// at once when RCX is zero; to `slow` with nothing changed when DF is
/// set, the string is longer than a page or crosses one, or an inline
/// TLB lookup misses (MMIO, a page holding code, ...). The host's REP
/// MOVS gives element order's result for overlapping strings too.
pub(super) fn emit_rep_string(
    a: &mut Asm,
    l: &Layout,
    movs: bool,
    scale: u8,
    slow: Label,
    done: Label,
) {
    const RSI_: u8 = 6;
    const RDI_: u8 = 7;
    let max: i32 = 4096 >> scale;
    let df = crate::flags::DF as i32;
    dynasm!(a
        ; mov rcx, QWORD [rbx + l.reg(RCX)]
        ; test rcx, rcx
        ; jz =>done
        ; test DWORD [rbx + l.fl_bits as i32], df
        ; jnz =>slow
        ; cmp rcx, max
        ; ja =>slow
        ; mov r8, rcx
        ; shl r8, scale as i8
        ; mov rax, QWORD [rbx + l.reg(RDI_)]
        ; mov edx, eax
        ; and edx, 0xfff
        ; add rdx, r8
        ; cmp rdx, 0x1000
        ; ja =>slow
    );
    emit_tlb(a, l, 1, true, slow);
    dynasm!(a ; mov r9, rsi);
    if movs {
        dynasm!(a
            ; mov rax, QWORD [rbx + l.reg(RSI_)]
            ; mov edx, eax
            ; and edx, 0xfff
            ; add rdx, r8
            ; cmp rdx, 0x1000
            ; ja =>slow
        );
        emit_tlb(a, l, 1, false, slow);
    } else {
        dynasm!(a ; mov rax, QWORD [rbx + l.reg(0)]);
    }
    dynasm!(a
        ; mov rdi, r9
        ; mov rcx, r8
        ; shr rcx, scale as i8
    );
    match (movs, scale) {
        (false, 0) => dynasm!(a ; rep stosb),
        (false, 1) => dynasm!(a ; rep stosw),
        (false, 2) => dynasm!(a ; rep stosd),
        (false, _) => dynasm!(a ; rep stosq),
        (true, 0) => dynasm!(a ; rep movsb),
        (true, 1) => dynasm!(a ; rep movsw),
        (true, 2) => dynasm!(a ; rep movsd),
        (true, _) => dynasm!(a ; rep movsq),
    }
    dynasm!(a ; add QWORD [rbx + l.reg(RDI_)], r8);
    if movs {
        dynasm!(a ; add QWORD [rbx + l.reg(RSI_)], r8);
    }
    dynasm!(a ; mov QWORD [rbx + l.reg(RCX)], 0);
}

/// RSI = the host address of the `bytes`-byte operand at the linear
/// address in RAX for a locked read-modify-write, through the inline TLB
/// write path; to `slow` when it misses or the operand is misaligned (a
/// locked access that splits a cache line is slow on the host: the
/// handler takes it).
fn locked_operand(a: &mut Asm, l: &Layout, bytes: u32, slow: Label) {
    dynasm!(a
        ; test al, (bytes - 1) as i8
        ; jnz =>slow
    );
    emit_tlb(a, l, bytes, true, slow);
}

/// (LOCK) XADD [m], register `r` at `size` (32 or 64) bits: the host's
/// LOCK XADD on the guest's memory, the old value into the register (a
/// 32-bit one zero-extended), and the ADD's flags recorded and left in
/// the host's. To `slow` with nothing changed as [`emit_cmpxchg`].
pub(super) fn emit_xadd(a: &mut Asm, l: &Layout, m: &Mem, size: u8, r: u8, slow: Label) {
    emit_lin(a, l, m);
    locked_operand(a, l, u32::from(size / 8), slow);
    get_reg(a, l, RAX, r, size);
    dynasm!(a ; mov rcx, rax);
    if size == 64 {
        dynasm!(a
            ; lock xadd QWORD [rsi], rax
            ; lea r8, [rax + rcx]
        );
    } else {
        dynasm!(a
            ; lock xadd DWORD [rsi], eax
            ; lea r8d, [rax + rcx]
        );
    }
    // MOV and LEA keep the host's flags (the ADD's).
    put_reg(a, l, r, size);
    store_record(a, l, [RAX, RCX, R8], FlagOp::Add, size);
}

/// (LOCK) CMPXCHG [m], register `r` at `size` (32 or 64) bits: the
/// host's LOCK CMPXCHG on the guest's memory, RAX written back only when
/// the comparison fails (as the handler: EAX then zero-extends), and the
/// flags of CMP accumulator, old value recorded and left in the host's
/// flags. To `slow` with nothing changed when the operand is misaligned
/// (a split lock is slow on the host, and the handler knows the rest) or
/// the inline TLB lookup misses.
pub(super) fn emit_cmpxchg(a: &mut Asm, l: &Layout, m: &Mem, size: u8, r: u8, slow: Label) {
    let same = a.new_dynamic_label();
    emit_lin(a, l, m);
    locked_operand(a, l, u32::from(size / 8), slow);
    get_reg(a, l, RDX, r, size);
    get_reg(a, l, RAX, 0, size);
    dynasm!(a ; mov rcx, rax);
    if size == 64 {
        dynasm!(a
            ; lock cmpxchg QWORD [rsi], rdx
            ; jz =>same
            ; mov QWORD [rbx + l.reg(0)], rax
            ; =>same
            ; mov r8, rcx
            ; sub r8, rax
        );
    } else {
        dynasm!(a
            ; lock cmpxchg DWORD [rsi], edx
            ; jz =>same
            ; mov eax, eax
            ; mov QWORD [rbx + l.reg(0)], rax
            ; =>same
            ; mov r8d, ecx
            ; sub r8d, eax
        );
    }
    // The SUB gives the host the CMP's flags again; MOVs keep them.
    store_record(a, l, [RCX, RAX, R8], FlagOp::Sub, size);
}

/// Stores the lazy flags' record of operation `op` at `size` bits with
/// the destination, source and result operands in host registers
/// `regs`, as `Flags::set_lazy` does (MOVs: the host's flags stay).
fn store_record(a: &mut Asm, l: &Layout, regs: [u8; 3], op: FlagOp, size: u8) {
    let [dst, src, res] = regs;
    dynasm!(a
        ; mov QWORD [rbx + l.fl_dst as i32], Rq(dst)
        ; mov QWORD [rbx + l.fl_src as i32], Rq(src)
        ; mov QWORD [rbx + l.fl_res as i32], Rq(res)
        ; mov BYTE [rbx + l.fl_op as i32], op as i8
        ; mov DWORD [rbx + l.fl_size as i32], i32::from(size)
    );
}
