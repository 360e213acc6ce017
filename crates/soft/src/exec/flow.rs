//! Stack and near control transfer: PUSH/POP (incl. PUSHF/POPF, PUSHA/
//! POPA), CALL/RET/JMP near, Jcc, LOOP*, JrCXZ, ENTER/LEAVE.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::bits::cc_index;
use super::ops::{self, read, write};
use crate::core::{canonical, Core};
use crate::cpu::{RBP, RCX, RSP, SS};
use crate::exception::{ExecResult, Fault, Stop};
use crate::flags::{self, mask};

/// Pushes `bytes` bytes; RSP changes only when the write succeeded.
pub fn push(core: &mut Core, bytes: u64, v: u64) -> ExecResult {
    let ss = core.cpu.stack_size();
    let sp = core.cpu.gpr[RSP];
    let new = sp.wrapping_sub(bytes) & mask(ss);
    core.write_seg(SS, new, bytes as usize, v)?;
    core.cpu.set_gpr(RSP, ss, new);
    Ok(())
}

/// Reads the value at the top of the stack plus `skip` bytes.
pub fn peek(core: &mut Core, bytes: u64, skip: u64) -> ExecResult<u64> {
    let ss = core.cpu.stack_size();
    let sp = core.cpu.gpr[RSP].wrapping_add(skip) & mask(ss);
    core.read_seg(SS, sp, bytes as usize)
}

/// Moves RSP by `delta` bytes at the stack's width.
pub fn adjust_sp(core: &mut Core, delta: u64) {
    let ss = core.cpu.stack_size();
    let new = core.cpu.gpr[RSP].wrapping_add(delta) & mask(ss);
    core.cpu.set_gpr(RSP, ss, new);
}

/// Sets RIP to a branch target, masked to the operand size, with the
/// canonical check of 64-bit mode.
pub fn branch(core: &mut Core, target: u64, size: u32) -> ExecResult {
    let t = target & mask(size);
    if core.cpu.mode64() {
        if !canonical(t) {
            return Err(Fault::gp(0).into());
        }
    } else {
        let cs = &core.cpu.seg[crate::cpu::CS];
        if core.cpu.protected() && t > u64::from(cs.limit) {
            return Err(Fault::gp(0).into());
        }
    }
    core.cpu.rip = t;
    Ok(())
}

fn branch_size(core: &Core, ins: &Instruction) -> u32 {
    match ins.op_kind(0) {
        OpKind::NearBranch16 => 16,
        OpKind::NearBranch32 => 32,
        OpKind::NearBranch64 => 64,
        _ => {
            if core.cpu.mode64() {
                64
            } else {
                ops::op_size(ins, 0)
            }
        }
    }
}

fn target(core: &mut Core, ins: &Instruction) -> ExecResult<(u64, u32)> {
    let size = branch_size(core, ins);
    match ins.op_kind(0) {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            Ok((ins.near_branch_target(), size))
        }
        _ => {
            let osz = ops::op_size(ins, 0);
            Ok((read(core, ins, 0, osz)?, size))
        }
    }
}

pub fn push_ins(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes = (-ins.stack_pointer_increment()) as u64;
    let v = match ins.op_kind(0) {
        OpKind::Register | OpKind::Memory => {
            let s = ops::op_size(ins, 0);
            read(core, ins, 0, s.min(bytes as u32 * 8))?
        }
        _ => ins.immediate(0),
    };
    push(core, bytes, v & mask(bytes as u32 * 8))
}

pub fn pop_ins(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes = ins.stack_pointer_increment() as u64;
    let v = peek(core, bytes, 0)?;
    if ins.op_kind(0) == OpKind::Register {
        let r = ins.op_register(0);
        if r.is_segment_register() {
            // A failed load changes no segment (only CR2, when reading the
            // descriptor faulted, which must stay for the #PF): putting
            // RSP back undoes the pop.
            let sp = core.cpu.gpr[RSP];
            adjust_sp(core, bytes);
            if let Err(e) = super::system::load_seg(core, ops::seg_index(r), v as u16) {
                core.cpu.gpr[RSP] = sp;
                return Err(e);
            }
            if ops::seg_index(r) == SS {
                core.cpu.int_shadow = true;
            }
            return Ok(());
        }
        adjust_sp(core, bytes);
        write(core, ins, 0, bytes as u32 * 8, v)
    } else {
        // POP to memory: the address uses RSP after the pop.
        let sp = core.cpu.gpr[RSP];
        adjust_sp(core, bytes);
        if let Err(e) = write(core, ins, 0, bytes as u32 * 8, v) {
            core.cpu.gpr[RSP] = sp;
            return Err(e);
        }
        Ok(())
    }
}

pub fn call(core: &mut Core, ins: &Instruction) -> ExecResult {
    let (t, size) = target(core, ins)?;
    let bytes = (-ins.stack_pointer_increment()) as u64;
    let ret = core.cpu.rip;
    let sp = core.cpu.gpr[RSP];
    push(core, bytes, ret)?;
    if let Err(e) = branch(core, t, size) {
        core.cpu.gpr[RSP] = sp;
        return Err(e);
    }
    Ok(())
}

pub fn ret(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes = if core.cpu.mode64() {
        if ins.code() == iced_x86::Code::Retnw || ins.code() == iced_x86::Code::Retnw_imm16 {
            2
        } else {
            8
        }
    } else {
        match ins.code() {
            iced_x86::Code::Retnw | iced_x86::Code::Retnw_imm16 => 2,
            _ => 4,
        }
    };
    let t = peek(core, bytes, 0)?;
    branch(core, t, bytes as u32 * 8)?;
    let extra = if ins.op_count() > 0 {
        u64::from(ins.immediate16())
    } else {
        0
    };
    adjust_sp(core, bytes + extra);
    Ok(())
}

pub fn jmp(core: &mut Core, ins: &Instruction) -> ExecResult {
    let (t, size) = target(core, ins)?;
    branch(core, t, size)
}

pub fn jcc(core: &mut Core, ins: &Instruction) -> ExecResult {
    let cc = ins.condition_code() as u8;
    if core.cpu.flags.cond(cc_index(cc)) {
        let size = branch_size(core, ins);
        branch(core, ins.near_branch_target(), size)?;
    }
    Ok(())
}

/// LOOP, LOOPE, LOOPNE, JCXZ/JECXZ/JRCXZ.
pub fn loop_ins(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    // The counter width is the address size: the register iced names in
    // the second operand-less form is implied by the code.
    let asz = match ins.code() {
        iced_x86::Code::Loop_rel8_16_CX
        | iced_x86::Code::Loop_rel8_32_CX
        | iced_x86::Code::Loope_rel8_16_CX
        | iced_x86::Code::Loope_rel8_32_CX
        | iced_x86::Code::Loopne_rel8_16_CX
        | iced_x86::Code::Loopne_rel8_32_CX
        | iced_x86::Code::Jcxz_rel8_16
        | iced_x86::Code::Jcxz_rel8_32 => 16,
        iced_x86::Code::Loop_rel8_16_ECX
        | iced_x86::Code::Loop_rel8_32_ECX
        | iced_x86::Code::Loop_rel8_64_ECX
        | iced_x86::Code::Loope_rel8_16_ECX
        | iced_x86::Code::Loope_rel8_32_ECX
        | iced_x86::Code::Loope_rel8_64_ECX
        | iced_x86::Code::Loopne_rel8_16_ECX
        | iced_x86::Code::Loopne_rel8_32_ECX
        | iced_x86::Code::Loopne_rel8_64_ECX
        | iced_x86::Code::Jecxz_rel8_16
        | iced_x86::Code::Jecxz_rel8_32
        | iced_x86::Code::Jecxz_rel8_64 => 32,
        _ => 64,
    };
    let c = core.cpu.gpr[RCX] & mask(asz);
    let size = branch_size(core, ins);
    let take = match m {
        Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => c == 0,
        _ => {
            let n = c.wrapping_sub(1) & mask(asz);
            let ok = match m {
                Mnemonic::Loope => n != 0 && core.cpu.flags.zf(),
                Mnemonic::Loopne => n != 0 && !core.cpu.flags.zf(),
                _ => n != 0,
            };
            if ok {
                branch(core, ins.near_branch_target(), size)?;
            }
            core.cpu.set_gpr(RCX, asz, n);
            return Ok(());
        }
    };
    if take {
        branch(core, ins.near_branch_target(), size)?;
    }
    Ok(())
}

pub fn leave(core: &mut Core, ins: &Instruction) -> ExecResult {
    // The operand size (66h: 16 bits) is how much is popped into
    // (E/R)BP; RSP is set from RBP at the stack size.
    let bytes: u64 = match ins.code() {
        iced_x86::Code::Leavew => 2,
        iced_x86::Code::Leaved => 4,
        _ => 8,
    };
    let ss = core.cpu.stack_size();
    let bp = core.cpu.gpr[RBP] & mask(ss);
    let v = core.read_seg(SS, bp, bytes as usize)?;
    core.cpu.set_gpr(RSP, ss, bp.wrapping_add(bytes));
    core.cpu.set_gpr(RBP, bytes as u32 * 8, v);
    Ok(())
}

pub fn enter(core: &mut Core, ins: &Instruction) -> ExecResult {
    let alloc = u64::from(ins.immediate16());
    let level = u64::from(ins.immediate8_2nd()) & 31;
    let osz: u64 = match ins.code() {
        iced_x86::Code::Enterw_imm16_imm8 => 2,
        iced_x86::Code::Enterd_imm16_imm8 => 4,
        _ => 8,
    };
    let saved = core.cpu.gpr;
    let r = (|| {
        push(core, osz, core.cpu.gpr[RBP])?;
        let frame = core.cpu.gpr[RSP];
        let ss = core.cpu.stack_size();
        let mut bp = saved[RBP];
        for _ in 1..level.max(1) {
            if level == 0 {
                break;
            }
            bp = bp.wrapping_sub(osz) & mask(ss);
            let v = core.read_seg(SS, bp, osz as usize)?;
            push(core, osz, v)?;
        }
        if level > 0 {
            push(core, osz, frame)?;
        }
        let sp = core.cpu.gpr[RSP].wrapping_sub(alloc) & mask(ss);
        // The new stack top must be writable (segment and paging), as
        // the CPU checks after its pushes.
        core.probe_write(SS, sp)?;
        core.cpu.set_gpr(RBP, osz as u32 * 8, frame);
        core.cpu.set_gpr(RSP, ss, sp);
        Ok(())
    })();
    if r.is_err() {
        core.cpu.gpr = saved;
    }
    r
}

pub fn pushf(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes = (-ins.stack_pointer_increment()) as u64;
    let v = core.cpu.flags.get() & !(flags::RF | flags::VM);
    push(core, bytes, v & mask(bytes as u32 * 8))
}

pub fn popf(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes = ins.stack_pointer_increment() as u64;
    let v = peek(core, bytes, 0)?;
    adjust_sp(core, bytes);
    let cpl = core.cpu.cpl();
    let old = core.cpu.flags.get();
    let can = flags::pop_writable(old, cpl, bytes);
    let new = (old & !can) | (v & can);
    // A change of IF or TF ends the block: the run loop takes pending
    // interrupts and single-steps at instruction boundaries it sees.
    let changed = (old ^ new) & (flags::IF | flags::TF) != 0;
    core.cpu.flags.set(new & !flags::RF);
    if changed {
        return Err(Stop::EndBlock);
    }
    Ok(())
}

pub fn pusha(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes: u64 = if ins.code() == iced_x86::Code::Pushaw {
        2
    } else {
        4
    };
    let saved = core.cpu.gpr;
    for i in 0..8 {
        let v = if i == RSP { saved[RSP] } else { saved[i] };
        if let Err(e) = push(core, bytes, v & mask(bytes as u32 * 8)) {
            core.cpu.gpr = saved;
            return Err(e);
        }
    }
    Ok(())
}

pub fn popa(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes: u64 = if ins.code() == iced_x86::Code::Popaw {
        2
    } else {
        4
    };
    let mut vals = [0u64; 8];
    for (i, v) in vals.iter_mut().enumerate() {
        *v = peek(core, bytes, (7 - i as u64) * bytes)?;
    }
    for (i, v) in vals.iter().enumerate() {
        if i != RSP {
            core.cpu.set_gpr(i, bytes as u32 * 8, *v);
        }
    }
    adjust_sp(core, 8 * bytes);
    Ok(())
}
