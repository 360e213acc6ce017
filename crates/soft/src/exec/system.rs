//! Privileged and system instructions: control and debug registers, MSRs,
//! port I/O, HLT, CLI/STI, descriptor-table loads, segment loads and far
//! transfers, INT/IRET, CPUID, RDTSC(P), SYSCALL/SYSRET, SWAPGS, cache
//! and TLB maintenance.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::flow::{adjust_sp, peek, push};
use super::ops::{self, read, write};
use crate::core::Core;
use crate::cpu::*;
use crate::exception::{ExecResult, Fault, Stop};
use crate::flags::{self, mask};
use crate::interrupt::{self, Source};
use crate::seg;

fn require_cpl0(core: &Core) -> ExecResult {
    if core.cpu.cpl() != 0 {
        return Err(Fault::gp(0).into());
    }
    Ok(())
}

/// Checks that port I/O is allowed at the current privilege (the TSS
/// permission bitmap is not consulted: CPL > IOPL always faults).
pub fn io_allowed(core: &Core, _port: u16, _bytes: u64) -> ExecResult {
    if core.cpu.protected() {
        let iopl = ((core.cpu.flags.get() & flags::IOPL) >> 12) as u8;
        if core.cpu.cpl() > iopl {
            return Err(Fault::gp(0).into());
        }
    }
    Ok(())
}

/// MOV Sreg / POP Sreg semantics in any mode.
pub fn load_seg(core: &mut Core, s: usize, sel: u16) -> ExecResult {
    if s == CS {
        return Err(Fault::ud().into());
    }
    if !core.cpu.protected() {
        core.cpu.load_real_seg(s, sel);
        return Ok(());
    }
    seg::load_data(core, s, sel)?;
    Ok(())
}

pub fn mov_sreg(core: &mut Core, ins: &Instruction) -> ExecResult {
    if ins.op_kind(0) == OpKind::Register && ins.op_register(0).is_segment_register() {
        let v = read(core, ins, 1, 16)?;
        let s = ops::seg_index(ins.op_register(0));
        load_seg(core, s, v as u16)?;
        if s == SS {
            core.cpu.int_shadow = true;
            return Err(Stop::EndBlock);
        }
        return Ok(());
    }
    let v = u64::from(core.cpu.seg[ops::seg_index(ins.op_register(1))].selector);
    let size = if ins.op_kind(0) == OpKind::Memory {
        16
    } else {
        ops::op_size(ins, 0)
    };
    write(core, ins, 0, size, v)
}

fn tlb_mode_change(core: &mut Core) {
    core.tlb.flush();
    // EFER.LMA follows CR0.PG when long mode is enabled.
    if core.cpu.efer & EFER_LME != 0 && core.cpu.cr0 & CR0_PG != 0 {
        core.cpu.efer |= EFER_LMA;
    } else {
        core.cpu.efer &= !EFER_LMA;
    }
}

pub fn mov_cr(core: &mut Core, ins: &Instruction) -> ExecResult {
    require_cpl0(core)?;
    let to_cr = (ins.op_register(0) as u32) >= (Register::CR0 as u32)
        && (ins.op_register(0) as u32) <= (Register::CR15 as u32);
    let size = if core.cpu.mode64() { 64 } else { 32 };
    if to_cr {
        let n = ins.op_register(0) as u32 - Register::CR0 as u32;
        let v = ops::reg_get(&core.cpu, ins.op_register(1)) & mask(size);
        match n {
            0 => {
                if v & CR0_PG != 0 && v & CR0_PE == 0 {
                    return Err(Fault::gp(0).into());
                }
                if v & CR0_PG != 0 && core.cpu.efer & EFER_LME != 0 && core.cpu.cr4 & CR4_PAE == 0 {
                    return Err(Fault::gp(0).into());
                }
                core.cpu.cr0 = v | CR0_ET;
                tlb_mode_change(core);
            }
            2 => core.cpu.cr2 = v,
            3 => {
                core.cpu.cr3 = v;
                core.tlb.flush_nonglobal();
            }
            4 => {
                if core.cpu.long_active() && v & CR4_PAE == 0 {
                    return Err(Fault::gp(0).into());
                }
                if v & CR4_OSXSAVE != 0 && !core.features.has(crate::cpuid::Feature::Xsave) {
                    return Err(Fault::gp(0).into());
                }
                // CR4.FSGSBASE is reserved on a CPU without FSGSBASE.
                if v & (1 << 16) != 0 && !core.features.has(crate::cpuid::Feature::Fsgsbase) {
                    return Err(Fault::gp(0).into());
                }
                core.cpu.cr4 = v;
                core.tlb.flush();
            }
            8 => set_tpr(core, v),
            _ => return Err(Fault::ud().into()),
        }
        return Err(Stop::EndBlock);
    }
    let n = ins.op_register(1) as u32 - Register::CR0 as u32;
    let v = match n {
        0 => core.cpu.cr0,
        2 => core.cpu.cr2,
        3 => core.cpu.cr3,
        4 => core.cpu.cr4,
        8 => tpr(core),
        _ => return Err(Fault::ud().into()),
    };
    ops::reg_set(&mut core.cpu, ins.op_register(0), v & mask(size));
    Ok(())
}

fn set_tpr(core: &mut Core, v: u64) {
    if let Some(irq) = core.shared.irq.get() {
        irq.set_tpr(core.index, ((v & 0xf) << 4) as u8);
    }
}

fn tpr(core: &Core) -> u64 {
    core.shared
        .irq
        .get()
        .map(|i| u64::from(i.tpr(core.index) >> 4))
        .unwrap_or(0)
}

pub fn mov_dr(core: &mut Core, ins: &Instruction) -> ExecResult {
    require_cpl0(core)?;
    if ins.op_register(0).is_gpr() {
        // Breakpoints are not modelled: DR0-3 read 0 and DR7 its reset
        // value; DR6 holds what single-step traps recorded.
        let n = ins.op_register(1) as u32 - Register::DR0 as u32;
        let v = match n {
            6 => core.cpu.dr6,
            7 => 0x400,
            _ => 0,
        };
        ops::reg_set(&mut core.cpu, ins.op_register(0), v);
    } else if ins.op_register(0) == Register::DR6 {
        let v = ops::reg_get(&core.cpu, ins.op_register(1));
        if v >> 32 != 0 {
            return Err(Fault::gp(0).into());
        }
        // B0-B3, BD, BS and BT are the writable status bits.
        core.cpu.dr6 = crate::cpu::DR6_INIT | (v & 0xe00f);
    }
    Ok(())
}

/// Reads an MSR, or None when it is not modelled.
pub fn rdmsr_value(core: &Core, index: u32) -> Option<u64> {
    let c = &core.cpu;
    Some(match index {
        msr::TSC => crate::vcpu::host_tsc().wrapping_add(c.msr.tsc_offset),
        msr::APIC_BASE => c.apic_base | if core.index == 0 { 1 << 8 } else { 0 },
        msr::MTRRCAP => 0,
        msr::SYSENTER_CS => c.msr.sysenter_cs,
        msr::SYSENTER_ESP => c.msr.sysenter_esp,
        msr::SYSENTER_EIP => c.msr.sysenter_eip,
        msr::MISC_ENABLE => c.msr.misc_enable,
        msr::PAT => c.msr.pat,
        msr::MTRR_DEF_TYPE => c.msr.mtrr_def_type,
        msr::EFER => c.efer,
        msr::STAR => c.msr.star,
        msr::LSTAR => c.msr.lstar,
        msr::CSTAR => c.msr.cstar,
        msr::SFMASK => c.msr.sfmask,
        msr::FS_BASE => c.seg[FS].base,
        msr::GS_BASE => c.seg[GS].base,
        msr::KERNEL_GS_BASE => c.msr.kernel_gs_base,
        msr::TSC_AUX => c.msr.tsc_aux,
        msr::PATCH_LEVEL => 0,
        msr::TSC_ADJUST => c.msr.tsc_adjust,
        msr::HWCR => c.msr.hwcr,
        msr::NB_CFG => c.msr.nb_cfg,
        msr::TSC_DEADLINE => core
            .shared
            .irq
            .get()
            .map_or(0, |irq| irq.tsc_deadline(core.index)),
        _ => return None,
    })
}

/// Writes an MSR; false when it is not modelled or the value is invalid.
pub fn wrmsr_value(core: &mut Core, index: u32, v: u64) -> bool {
    let canon = crate::core::canonical(v);
    let c = &mut core.cpu;
    match index {
        msr::TSC => {
            // A TSC write moves TSC_ADJUST by the same amount.
            let old = crate::vcpu::host_tsc().wrapping_add(c.msr.tsc_offset);
            c.msr.tsc_offset = v.wrapping_sub(crate::vcpu::host_tsc());
            c.msr.tsc_adjust = c.msr.tsc_adjust.wrapping_add(v.wrapping_sub(old));
        }
        msr::TSC_ADJUST => {
            c.msr.tsc_offset = c
                .msr
                .tsc_offset
                .wrapping_add(v.wrapping_sub(c.msr.tsc_adjust));
            c.msr.tsc_adjust = v;
        }
        msr::APIC_BASE => {
            c.apic_base = v & !(1 << 8);
            core.tlb.flush();
        }
        msr::SYSENTER_CS => c.msr.sysenter_cs = v,
        msr::SYSENTER_ESP => c.msr.sysenter_esp = v,
        msr::SYSENTER_EIP => c.msr.sysenter_eip = v,
        msr::MISC_ENABLE => c.msr.misc_enable = v,
        msr::PAT => c.msr.pat = v,
        msr::MTRR_DEF_TYPE => c.msr.mtrr_def_type = v,
        msr::EFER => {
            if v & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE) != 0 {
                return false;
            }
            let lma = c.efer & EFER_LMA;
            c.efer = (v & !EFER_LMA) | lma;
            core.tlb.flush();
        }
        msr::STAR => c.msr.star = v,
        msr::LSTAR if canon => c.msr.lstar = v,
        msr::CSTAR if canon => c.msr.cstar = v,
        msr::SFMASK => c.msr.sfmask = v & 0xffff_ffff,
        msr::FS_BASE if canon => c.seg[FS].base = v,
        msr::GS_BASE if canon => c.seg[GS].base = v,
        msr::KERNEL_GS_BASE if canon => c.msr.kernel_gs_base = v,
        msr::TSC_AUX => c.msr.tsc_aux = v & 0xffff_ffff,
        msr::PATCH_LEVEL => {}
        msr::HWCR => c.msr.hwcr = v | (1 << 24),
        msr::NB_CFG => c.msr.nb_cfg = v,
        msr::TSC_DEADLINE => {
            if let Some(irq) = core.shared.irq.get() {
                let now = crate::vcpu::host_tsc().wrapping_add(c.msr.tsc_offset);
                // A deadline already passed fires at once.
                let ahead = v.saturating_sub(now);
                let due = (v != 0).then(|| core.shared.tsc.after(ahead));
                irq.set_tsc_deadline(core.index, v, due);
            }
        }
        _ => return false,
    }
    true
}

pub fn rdmsr(core: &mut Core) -> ExecResult {
    require_cpl0(core)?;
    let idx = core.cpu.gpr[RCX] as u32;
    let v = rdmsr_value(core, idx).ok_or(Fault::gp(0))?;
    core.cpu.set_gpr(RAX, 32, v);
    core.cpu.set_gpr(RDX, 32, v >> 32);
    Ok(())
}

pub fn wrmsr(core: &mut Core) -> ExecResult {
    require_cpl0(core)?;
    let idx = core.cpu.gpr[RCX] as u32;
    let v = (core.cpu.gpr[RAX] & 0xffff_ffff) | (core.cpu.gpr[RDX] << 32);
    if !wrmsr_value(core, idx, v) {
        return Err(Fault::gp(0).into());
    }
    Err(Stop::EndBlock)
}

pub fn in_out(core: &mut Core, ins: &Instruction, is_in: bool) -> ExecResult {
    let (port, size) = if is_in {
        let p = if ins.op_kind(1) == OpKind::Register {
            core.cpu.gpr[RDX] as u16
        } else {
            ins.immediate(1) as u16
        };
        (p, ops::op_size(ins, 0))
    } else {
        let p = if ins.op_kind(0) == OpKind::Register {
            core.cpu.gpr[RDX] as u16
        } else {
            ins.immediate(0) as u16
        };
        (p, ops::op_size(ins, 1))
    };
    let bytes = (size / 8) as usize;
    io_allowed(core, port, bytes as u64)?;
    let mut b = [0u8; 4];
    if is_in {
        core.pio_read(port, &mut b[..bytes]);
        core.cpu
            .set_gpr(RAX, size, u64::from(u32::from_le_bytes(b)));
    } else {
        b = (core.cpu.gpr[RAX] as u32).to_le_bytes();
        core.pio_write(port, &b[..bytes]);
    }
    Ok(())
}

pub fn cli_sti(core: &mut Core, sti: bool) -> ExecResult {
    if core.cpu.protected() {
        let iopl = ((core.cpu.flags.get() & flags::IOPL) >> 12) as u8;
        if core.cpu.cpl() > iopl {
            return Err(Fault::gp(0).into());
        }
    }
    let was = core.cpu.flags.has(flags::IF);
    core.cpu.flags.put(flags::IF, sti);
    // The interrupt shadow matters only to an interrupt already waiting;
    // without one, the block goes on (STI; HLT still cannot miss one: HLT
    // looks for waiting interrupts before it sleeps).
    if sti && !was && core.interrupt_waiting() {
        core.cpu.int_shadow = true;
        return Err(Stop::EndBlock);
    }
    Ok(())
}

fn table_op(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let (s, off) = ops::mem_loc(core, ins, 0);
    let wide = core.cpu.mode64();
    match m {
        Mnemonic::Lgdt | Mnemonic::Lidt => {
            require_cpl0(core)?;
            let limit = core.read_seg(s, off, 2)? as u16;
            let base = core.read_seg(s, off.wrapping_add(2), if wide { 8 } else { 4 })?;
            let base = if !wide && ops::op_size(ins, 0) == 16 && ins.code() != Code::Lgdt_m1632 {
                base & 0xff_ffff
            } else {
                base
            };
            let t = hypervisor::DescriptorTable { base, limit };
            if m == Mnemonic::Lgdt {
                core.cpu.gdtr = t;
            } else {
                core.cpu.idtr = t;
            }
        }
        _ => {
            let t = if m == Mnemonic::Sgdt {
                core.cpu.gdtr
            } else {
                core.cpu.idtr
            };
            let mut b = [0u8; 10];
            b[..2].copy_from_slice(&t.limit.to_le_bytes());
            b[2..].copy_from_slice(&t.base.to_le_bytes());
            let n = if wide { 10 } else { 6 };
            core.write_seg_buf(s, off, &b[..n])?;
        }
    }
    Ok(())
}

fn load_system_seg(core: &mut Core, sel: u16, ldt: bool) -> ExecResult {
    require_cpl0(core)?;
    if sel & !3 == 0 {
        if ldt {
            core.cpu.ldtr = seg::null_seg(sel);
            return Ok(());
        }
        return Err(Fault::gp(0).into());
    }
    if sel & 4 != 0 {
        return Err(Fault::gp(u32::from(sel & !3)).into());
    }
    let (d, lin) = seg::read_desc(core, sel)?;
    let mut s = seg::decode(sel, d);
    let ok = !s.s
        && if ldt {
            s.type_ == 2
        } else {
            matches!(s.type_, 1 | 9)
        };
    if !ok {
        return Err(Fault::gp(u32::from(sel & !3)).into());
    }
    if !s.present {
        return Err(Fault::with_code(crate::exception::NP, u32::from(sel & !3)).into());
    }
    if core.cpu.long_active() {
        let hi = core.read_lin_u(lin + 8, 8, crate::mmu::Access::Read, true)?;
        s.base |= (hi & 0xffff_ffff) << 32;
    }
    if ldt {
        core.cpu.ldtr = s;
    } else {
        // Mark the TSS busy.
        s.type_ |= 2;
        core.write_lin_u(lin + 5, 1, (d >> 40) | 2, true)?;
        core.cpu.tr = s;
    }
    Ok(())
}

/// A far JMP or CALL to `sel:off` (same privilege only).
fn far_transfer(core: &mut Core, sel: u16, off: u64, call: bool, osz: u32) -> ExecResult {
    let ret_cs = core.cpu.seg[CS].selector;
    let ret_ip = core.cpu.rip;
    let bytes = u64::from(osz / 8);
    if !core.cpu.protected() {
        if call {
            let sp = core.cpu.gpr[RSP];
            push(core, bytes, u64::from(ret_cs))?;
            push(core, bytes, ret_ip).inspect_err(|_| core.cpu.gpr[RSP] = sp)?;
        }
        core.cpu.load_real_seg(CS, sel);
        core.cpu.rip = off & mask(osz);
        return Err(Stop::EndBlock);
    }
    let cs = seg::code_desc(core, sel)?;
    let cpl = core.cpu.cpl();
    let conforming = cs.type_ & 4 != 0;
    if (conforming && cs.dpl > cpl) || (!conforming && (cs.dpl != cpl || (sel & 3) as u8 > cpl)) {
        return Err(Fault::gp(u32::from(sel & !3)).into());
    }
    if call {
        let sp = core.cpu.gpr[RSP];
        push(core, bytes, u64::from(ret_cs))?;
        push(core, bytes, ret_ip).inspect_err(|_| core.cpu.gpr[RSP] = sp)?;
    }
    seg::set_cs(core, cs, cpl);
    core.cpu.rip = if cs.l && core.cpu.long_active() {
        off
    } else {
        off & mask(osz)
    };
    Err(Stop::EndBlock)
}

pub fn far_jmp_call(core: &mut Core, ins: &Instruction, call: bool) -> ExecResult {
    match ins.op_kind(0) {
        OpKind::FarBranch16 | OpKind::FarBranch32 => {
            let osz = if ins.op_kind(0) == OpKind::FarBranch16 {
                16
            } else {
                32
            };
            let off = if osz == 16 {
                u64::from(ins.far_branch16())
            } else {
                u64::from(ins.far_branch32())
            };
            far_transfer(core, ins.far_branch_selector(), off, call, osz)
        }
        _ => {
            let total = ins.memory_size().size() as u64;
            let osz = ((total - 2) * 8) as u32;
            let (s, off) = ops::mem_loc(core, ins, 0);
            let o = core.read_seg(s, off, (osz / 8) as usize)?;
            let sel = core.read_seg(s, off.wrapping_add(total - 2), 2)? as u16;
            far_transfer(core, sel, o, call, osz)
        }
    }
}

pub fn retf(core: &mut Core, ins: &Instruction) -> ExecResult {
    let bytes: u64 = match ins.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        Code::Retfq | Code::Retfq_imm16 => 8,
        _ => 4,
    };
    let extra = if ins.op_count() > 0 {
        u64::from(ins.immediate16())
    } else {
        0
    };
    let ip = peek(core, bytes, 0)?;
    let sel = peek(core, bytes, bytes)? as u16;
    if !core.cpu.protected() {
        adjust_sp(core, 2 * bytes + extra);
        core.cpu.load_real_seg(CS, sel);
        core.cpu.rip = ip & mask(bytes as u32 * 8);
        return Err(Stop::EndBlock);
    }
    let cpl = core.cpu.cpl();
    let rpl = (sel & 3) as u8;
    if rpl < cpl {
        return Err(Fault::gp(u32::from(sel & !3)).into());
    }
    let cs = seg::code_desc(core, sel)?;
    if rpl > cpl {
        let sp = peek(core, bytes, 2 * bytes + extra)?;
        let ss = peek(core, bytes, 3 * bytes + extra)? as u16;
        // As IRET: only CS changed before a failed SS load, which keeps
        // CR2 for a #PF on the descriptor read.
        let cs_saved = core.cpu.seg[CS];
        seg::set_cs(core, cs, rpl);
        if let Err(e) = seg::load_data(core, SS, ss) {
            core.cpu.seg[CS] = cs_saved;
            return Err(e.into());
        }
        let w = core.cpu.stack_size();
        core.cpu.set_gpr(RSP, w, sp.wrapping_add(extra));
    } else {
        adjust_sp(core, 2 * bytes + extra);
        seg::set_cs(core, cs, rpl);
    }
    core.cpu.rip = if core.cpu.mode64() {
        ip
    } else {
        ip & mask(bytes as u32 * 8)
    };
    Err(Stop::EndBlock)
}

pub fn int(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let vector = match m {
        Mnemonic::Int3 => 3,
        Mnemonic::Int1 => 1,
        Mnemonic::Into => {
            if core.cpu.mode64() {
                return Err(Fault::ud().into());
            }
            if !core.cpu.flags.of() {
                return Ok(());
            }
            4
        }
        _ => ins.immediate8(),
    };
    let src = if m == Mnemonic::Int1 {
        Source::Exception
    } else {
        Source::Software
    };
    interrupt::deliver(core, vector, None, src)?;
    Err(Stop::EndBlock)
}

pub fn cpuid(core: &mut Core) -> ExecResult {
    let leaf = core.cpu.gpr[RAX] as u32;
    let sub = core.cpu.gpr[RCX] as u32;
    let e = core
        .cpuid
        .iter()
        .find(|e| e.function == leaf && (!e.significant_index || e.index == sub))
        .copied()
        .unwrap_or_default();
    let mut ebx = e.ebx;
    let mut ecx = e.ecx;
    if leaf == 1 {
        ebx = (ebx & 0x00ff_ffff) | ((core.index as u32) << 24);
        // OSXSAVE mirrors CR4.OSXSAVE.
        ecx = (ecx & !(1 << 27)) | (u32::from(core.cpu.cr4 & CR4_OSXSAVE != 0) << 27);
    }
    if leaf == 0xd && sub <= 1 && e.function == 0xd {
        ebx = super::xsave::cpuid_size(core.cpu.fpu.xcr0);
    }
    let c = &mut core.cpu;
    c.set_gpr(RAX, 32, u64::from(e.eax));
    c.set_gpr(RBX, 32, u64::from(ebx));
    c.set_gpr(RCX, 32, u64::from(ecx));
    c.set_gpr(RDX, 32, u64::from(e.edx));
    Ok(())
}

pub fn rdtsc(core: &mut Core, aux: bool) -> ExecResult {
    if core.cpu.cr4 & 4 != 0 && core.cpu.cpl() != 0 {
        return Err(Fault::gp(0).into());
    }
    let t = crate::vcpu::host_tsc().wrapping_add(core.cpu.msr.tsc_offset);
    core.cpu.set_gpr(RAX, 32, t);
    core.cpu.set_gpr(RDX, 32, t >> 32);
    if aux {
        let a = core.cpu.msr.tsc_aux;
        core.cpu.set_gpr(RCX, 32, a);
    }
    Ok(())
}

pub fn syscall(core: &mut Core) -> ExecResult {
    if core.cpu.efer & EFER_SCE == 0 || !core.cpu.long_active() {
        return Err(Fault::ud().into());
    }
    let star = core.cpu.msr.star;
    let sel = ((star >> 32) & 0xfffc) as u16;
    let rflags = core.cpu.flags.get();
    let target = if core.cpu.mode64() {
        core.cpu.msr.lstar
    } else {
        core.cpu.msr.cstar
    };
    core.cpu.gpr[RCX] = core.cpu.rip;
    core.cpu.gpr[11] = rflags & !flags::RF;
    core.cpu
        .flags
        .set(rflags & !core.cpu.msr.sfmask & !flags::RF);
    core.cpu.seg[CS] = seg::flat(sel, true, 0, true);
    core.cpu.seg[SS] = seg::flat(sel + 8, false, 0, true);
    core.cpu.rip = target;
    Err(Stop::EndBlock)
}

pub fn sysret(core: &mut Core, ins: &Instruction) -> ExecResult {
    if core.cpu.efer & EFER_SCE == 0 || !core.cpu.long_active() {
        return Err(Fault::ud().into());
    }
    require_cpl0(core)?;
    let star = core.cpu.msr.star;
    let base = ((star >> 48) & 0xffff) as u16;
    let wide = ins.code() == Code::Sysretq;
    let rcx = core.cpu.gpr[RCX];
    if wide && !crate::core::canonical(rcx) {
        return Err(Fault::gp(0).into());
    }
    let r11 = core.cpu.gpr[11];
    core.cpu.flags.set((r11 & 0x3c_7fd7) | flags::FIXED);
    if wide {
        core.cpu.seg[CS] = seg::flat((base + 16) | 3, true, 3, true);
        core.cpu.rip = rcx;
    } else {
        core.cpu.seg[CS] = seg::flat(base | 3, true, 3, false);
        core.cpu.rip = rcx & 0xffff_ffff;
    }
    let mut ss = seg::flat((base + 8) | 3, false, 3, true);
    ss.db = true;
    core.cpu.seg[SS] = ss;
    Err(Stop::EndBlock)
}

pub fn swapgs(core: &mut Core) -> ExecResult {
    if !core.cpu.mode64() {
        return Err(Fault::ud().into());
    }
    require_cpl0(core)?;
    let c = &mut core.cpu;
    std::mem::swap(&mut c.msr.kernel_gs_base, &mut c.seg[GS].base);
    Ok(())
}

/// The system group dispatcher.
pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    match m {
        Mnemonic::Hlt => {
            require_cpl0(core)?;
            Err(Stop::Halt)
        }
        Mnemonic::Cli => cli_sti(core, false),
        Mnemonic::Sti => cli_sti(core, true),
        Mnemonic::In => in_out(core, ins, true),
        Mnemonic::Out => in_out(core, ins, false),
        Mnemonic::Rdmsr => rdmsr(core),
        Mnemonic::Wrmsr => wrmsr(core),
        Mnemonic::Cpuid => cpuid(core),
        Mnemonic::Rdtsc => rdtsc(core, false),
        Mnemonic::Rdtscp => rdtsc(core, true),
        // The model has no performance counters (their MSRs are not
        // implemented either), so every counter ECX can name is
        // unimplemented: #GP(0), as for RDPMC at CPL3 with CR4.PCE clear.
        Mnemonic::Rdpmc => Err(Fault::gp(0).into()),
        Mnemonic::Lgdt | Mnemonic::Lidt | Mnemonic::Sgdt | Mnemonic::Sidt => table_op(core, ins, m),
        Mnemonic::Ltr | Mnemonic::Lldt => {
            // Privilege before the operand, as the CPU checks.
            require_cpl0(core)?;
            let sel = read(core, ins, 0, 16)? as u16;
            load_system_seg(core, sel, m == Mnemonic::Lldt)
        }
        Mnemonic::Str | Mnemonic::Sldt => {
            let v = if m == Mnemonic::Str {
                core.cpu.tr.selector
            } else {
                core.cpu.ldtr.selector
            };
            let size = if ins.op_kind(0) == OpKind::Memory {
                16
            } else {
                ops::op_size(ins, 0)
            };
            write(core, ins, 0, size, u64::from(v))
        }
        Mnemonic::Smsw => {
            let size = if ins.op_kind(0) == OpKind::Memory {
                16
            } else {
                ops::op_size(ins, 0)
            };
            let v = core.cpu.cr0;
            write(core, ins, 0, size, v & mask(size))
        }
        Mnemonic::Lmsw => {
            require_cpl0(core)?;
            let v = read(core, ins, 0, 16)?;
            // LMSW can set PE but not clear it.
            let pe = core.cpu.cr0 & CR0_PE;
            core.cpu.cr0 = (core.cpu.cr0 & !0xe) | (v & 0xf) | pe;
            tlb_mode_change(core);
            Err(Stop::EndBlock)
        }
        Mnemonic::Clts => {
            require_cpl0(core)?;
            core.cpu.cr0 &= !CR0_TS;
            Ok(())
        }
        Mnemonic::Invlpg => {
            require_cpl0(core)?;
            let (s, off) = ops::mem_loc(core, ins, 0);
            let base = if core.cpu.mode64() && s < FS {
                0
            } else {
                core.cpu.seg[s].base
            };
            core.tlb.flush_page(base.wrapping_add(off));
            Ok(())
        }
        Mnemonic::Invd | Mnemonic::Wbinvd => require_cpl0(core),
        Mnemonic::Mov => {
            let r0 = ins.op_register(0) as u32;
            let r1 = ins.op_register(1) as u32;
            let is_cr = |r: u32| (Register::CR0 as u32..=Register::CR15 as u32).contains(&r);
            if is_cr(r0) || is_cr(r1) {
                mov_cr(core, ins)
            } else {
                mov_dr(core, ins)
            }
        }
        Mnemonic::Syscall => syscall(core),
        Mnemonic::Sysret | Mnemonic::Sysretq => sysret(core, ins),
        Mnemonic::Swapgs => swapgs(core),
        Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Into | Mnemonic::Int1 => int(core, ins, m),
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => {
            let bytes = match m {
                Mnemonic::Iret => 2,
                Mnemonic::Iretd => 4,
                _ => 8,
            };
            interrupt::iret(core, bytes)
        }
        Mnemonic::Retf => retf(core, ins),
        _ => Err(Stop::Unsupported),
    }
}
