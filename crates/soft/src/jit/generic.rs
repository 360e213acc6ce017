//! Instructions the interpreter's fast forms leave generic that the
//! translator still emits natively ([`GenericNative`], found by
//! [`generic_native`], emitted by [`emit_generic_native`]): RDTSC(P),
//! CLI/STI, PUSHFQ, (LOCK) CMPXCHG/XADD on memory, BT/BTS/BTR/BTC, REP
//! MOVS/STOS, CDQE, NOT/NEG/BSWAP and selector reads, each with its
//! interpreter handler as the slow path where it can fail.

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use iced_x86::Instruction;

use super::emit::{Insn, Top};
use super::hostflags::{eager_flags, host_cf_to_bits, HostFlags};
use super::layout::Layout;
use super::native::wide_gpr_operand0;
use super::run::JitCtx;
use super::{call, generic_mem, mem, Asm, RAX};
use crate::core::Core;
use crate::fast::{Alu, Fast, Kind};
use crate::flags::FlagOp;

/// The RFLAGS image PUSHF stores (`exec::flow::pushf`: RF and VM read
/// as clear).
///
/// # Safety
/// Called only by translated code with the core it runs on (valid, and
/// not otherwise borrowed while this runs).
unsafe extern "sysv64" fn pushf_image(core: *const Core) -> u64 {
    // SAFETY: per the contract, `core` is the live core of `run`.
    let core = unsafe { &*core };
    core.cpu.flags.get() & !(crate::flags::RF | crate::flags::VM)
}

/// An instruction the fast forms leave to the interpreter that the
/// translator still emits natively ([`emit_generic_native`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum GenericNative {
    /// RDTSC, or RDTSCP (`true`: ECX = TSC_AUX too).
    Rdtsc(bool),
    /// CLI and STI at CPL 0.
    Cli,
    Sti,
    /// PUSHFQ.
    Pushfq,
    /// (LOCK) CMPXCHG (`true`) or XADD of a 32/64-bit memory operand
    /// with a register (size, register number).
    AtomicRmw(bool, crate::fast::Mem, u8, u8),
    /// (LOCK) BT/BTS/BTR/BTC of a 32/64-bit register or memory operand.
    BitTest(generic_mem::BitTest),
    /// REP MOVS (`true`) or REP STOS of 1 << `.1`-byte elements with
    /// 64-bit addresses and flat segments.
    RepString(bool, u8),
    Cdqe,
    /// NOT, NEG or BSWAP of a 32/64-bit register (number, size).
    Unary(iced_x86::Mnemonic, u8, u8),
    /// MOV from segment register `.1` (0-5) to 32/64-bit register `.0`.
    SelectorRead(u8, usize),
}

/// The REP MOVS/STOS form of `ins`, if it is one the translator emits:
/// REP (not REPNE), 64-bit addresses, MOVS reading through DS.
fn rep_string(ins: &Instruction) -> Option<GenericNative> {
    use iced_x86::Code;
    let (movs, scale) = match ins.code() {
        Code::Stosb_m8_AL => (false, 0),
        Code::Stosw_m16_AX => (false, 1),
        Code::Stosd_m32_EAX => (false, 2),
        Code::Stosq_m64_RAX => (false, 3),
        Code::Movsb_m8_m8 => (true, 0),
        Code::Movsw_m16_m16 => (true, 1),
        Code::Movsd_m32_m32 => (true, 2),
        Code::Movsq_m64_m64 => (true, 3),
        _ => return None,
    };
    let flat = !movs || ins.memory_segment() == iced_x86::Register::DS;
    (ins.has_rep_prefix()
        && !ins.has_repne_prefix()
        && !ins.has_lock_prefix()
        && crate::exec::ops::string_addr_size(ins) == 64
        && flat)
        .then_some(GenericNative::RepString(movs, scale))
}

/// The native form `ins` has among [`GenericNative`]'s, if any.
pub(super) fn generic_native(f: &Fast, ins: &Instruction) -> Option<GenericNative> {
    use iced_x86::{Code, Mnemonic};
    if f.kind != Kind::Generic {
        return None;
    }
    let rmw = match ins.code() {
        Code::Cmpxchg_rm32_r32 => Some((true, 32)),
        Code::Cmpxchg_rm64_r64 => Some((true, 64)),
        Code::Xadd_rm32_r32 => Some((false, 32)),
        Code::Xadd_rm64_r64 => Some((false, 64)),
        _ => None,
    };
    if let (Some((cmpxchg, size)), iced_x86::OpKind::Memory) = (rmw, ins.op0_kind()) {
        let m = crate::fast::mem_recipe(ins)?;
        let r = ins.op1_register().full_register();
        let n = (r as u32).checked_sub(iced_x86::Register::RAX as u32)?;
        return (n < 16).then_some(GenericNative::AtomicRmw(cmpxchg, m, size, n as u8));
    }
    if let Some(b) = generic_mem::bit_test(ins) {
        return Some(GenericNative::BitTest(b));
    }
    if let Some(r) = rep_string(ins) {
        return Some(r);
    }
    if ins.has_lock_prefix() {
        return None;
    }
    match ins.mnemonic() {
        Mnemonic::Rdtsc => Some(GenericNative::Rdtsc(false)),
        Mnemonic::Rdtscp => Some(GenericNative::Rdtsc(true)),
        Mnemonic::Cli => Some(GenericNative::Cli),
        Mnemonic::Pushfq if ins.code() == iced_x86::Code::Pushfq => Some(GenericNative::Pushfq),
        Mnemonic::Sti => Some(GenericNative::Sti),
        Mnemonic::Cdqe => Some(GenericNative::Cdqe),
        m @ (Mnemonic::Not | Mnemonic::Neg | Mnemonic::Bswap) => {
            let (n, size) = wide_gpr_operand0(ins)?;
            Some(GenericNative::Unary(m, n, size))
        }
        Mnemonic::Mov => {
            let sreg = ins.op_register(1);
            if ins.op_count() != 2 || !sreg.is_segment_register() {
                return None;
            }
            let (n, _) = wide_gpr_operand0(ins)?;
            let s = (sreg as usize - iced_x86::Register::ES as usize).min(5);
            Some(GenericNative::SelectorRead(n, s))
        }
        _ => None,
    }
}

/// Emits `g`, instruction `i` (`f`, `ins`): RDTSC (the host's TSC plus
/// the guest's offset, as `exec::system::rdtsc`, with the trampoline as
/// the slow path while CR4.TSD is set), CDQE, NOT, NEG, BSWAP and
/// selector reads. `fl` is updated to what the host's flags hold after
/// it.
pub(super) fn emit_generic_native<'a>(
    a: &mut Asm,
    l: &Layout,
    x: Insn<'a>,
    g: GenericNative,
    fl: &mut HostFlags,
    top: Top<'a>,
) {
    use iced_x86::Mnemonic;
    let dead = x.dead;
    match g {
        GenericNative::Rdtsc(aux) => {
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            dynasm!(a
                ; test BYTE [rbx + l.cr4 as i32], 4
                ; jnz =>slow
                ; rdtsc
                ; shl rdx, 32
                ; or rax, rdx
                ; add rax, QWORD [rbx + l.tsc_offset as i32]
                ; mov ecx, eax
                ; mov QWORD [rbx + l.reg(0)], rcx
                ; shr rax, 32
                ; mov QWORD [rbx + l.reg(2)], rax
            );
            if aux {
                dynasm!(a
                    ; mov eax, DWORD [rbx + l.tsc_aux as i32]
                    ; mov QWORD [rbx + l.reg(1)], rax
                );
            }
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::Cli | GenericNative::Sti => {
            // At CPL 0 neither faults; elsewhere the handler decides. STI
            // that sets IF goes to the handler when an interrupt may be
            // waiting (one the run loop saw, or one raised since: the
            // attention flag), which then ends the run for it.
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            let bits = l.fl_bits as i32;
            let is_if = crate::flags::IF as i32;
            dynasm!(a
                ; test BYTE [rbx + l.seg_sel[crate::cpu::CS] as i32], 3
                ; jnz =>slow
            );
            if matches!(g, GenericNative::Cli) {
                dynasm!(a ; and QWORD [rbx + bits], !is_if);
            } else {
                dynasm!(a
                    ; test DWORD [rbx + bits], is_if
                    ; jnz =>done
                    ; cmp BYTE [r12 + std::mem::offset_of!(JitCtx, irq_maybe) as i32], 0
                    ; jne =>slow
                    ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, signal) as i32]
                    ; cmp WORD [rax], 0
                    ; jne =>slow
                    ; or QWORD [rbx + bits], is_if
                );
            }
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::BitTest(b) => {
            // Only CF changes: the other flags are made eager first
            // (unless nothing reads them), then CF is set in the word.
            if !dead {
                dynasm!(a ; mov rdi, rbx);
                call(a, eager_flags as *const () as u64);
            }
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            generic_mem::emit_bit_test(a, l, &b, slow);
            if !dead {
                host_cf_to_bits(a, l);
            }
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            // The guest's CF changed: redoing an earlier operation no
            // longer gives its flags.
            *fl = HostFlags::UNKNOWN;
        }
        GenericNative::AtomicRmw(cmpxchg, m, size, r) => {
            // Atomic on the host (devices share the memory); the handler
            // takes what the inline path does not (misaligned, a TLB
            // miss, a page holding code).
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            let op = if cmpxchg {
                generic_mem::emit_cmpxchg(a, l, &m, size, r, slow);
                Alu::Sub
            } else {
                generic_mem::emit_xadd(a, l, &m, size, r, slow);
                Alu::Add
            };
            dynasm!(a ; =>done);
            let redo = (!dead).then_some((Kind::Alu(op), size));
            top.slow_path(slow, done, x, redo);
            *fl = if dead {
                HostFlags::UNKNOWN
            } else {
                HostFlags::alu(op, size)
            };
        }
        GenericNative::RepString(movs, scale) => {
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            generic_mem::emit_rep_string(a, l, movs, scale, slow, done);
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::Pushfq => {
            // The image from the flags' record (no side effects), then
            // the push with the inline TLB lookup; the handler on a miss.
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            dynasm!(a ; mov rdi, rbx);
            call(a, pushf_image as *const () as u64);
            dynasm!(a ; mov r8, rax);
            mem::push_r8(a, l, slow);
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::Cdqe => {
            dynasm!(a
                ; movsxd rax, DWORD [rbx + l.reg(0)]
                ; mov QWORD [rbx + l.reg(0)], rax
            );
        }
        GenericNative::Unary(m, n, size) => {
            mem::get_reg(a, l, RAX, n, size);
            match (m, size) {
                (Mnemonic::Not, _) => dynasm!(a ; not rax),
                (Mnemonic::Bswap, 64) => dynasm!(a ; bswap rax),
                (Mnemonic::Bswap, _) => dynasm!(a ; bswap eax),
                (_, 64) if dead => dynasm!(a ; neg rax),
                (_, _) if dead => dynasm!(a ; neg eax),
                (_, s) => {
                    // As the interpreter: SUB of the operand from zero.
                    dynasm!(a
                        ; mov QWORD [rbx + l.fl_src as i32], rax
                        ; mov QWORD [rbx + l.fl_dst as i32], 0
                    );
                    if s == 64 {
                        dynasm!(a ; neg rax);
                    } else {
                        dynasm!(a ; neg eax);
                    }
                    dynasm!(a
                        ; mov QWORD [rbx + l.fl_res as i32], rax
                        ; mov BYTE [rbx + l.fl_op as i32], FlagOp::Sub as i8
                        ; mov DWORD [rbx + l.fl_size as i32], i32::from(s)
                    );
                    *fl = HostFlags::alu(Alu::Sub, s);
                }
            }
            // NOT and BSWAP change no flags, and storing keeps the host's.
            mem::put_reg(a, l, n, size);
        }
        GenericNative::SelectorRead(n, s) => {
            // The selector, zero-extended.
            dynasm!(a
                ; movzx eax, WORD [rbx + l.seg_sel[s] as i32]
                ; mov QWORD [rbx + l.reg(n)], rax
            );
        }
    }
}
