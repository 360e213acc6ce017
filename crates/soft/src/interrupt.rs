//! Delivery of exceptions and interrupts through the IDT (long mode with
//! IST stacks and TSS stack switches, 32-bit protected mode, real-mode
//! IVT), double- and triple-fault escalation, and IRET.

use hypervisor::Segment;

use crate::core::Core;
use crate::cpu::{CS, RSP, SS};
use crate::exception::{ExecResult, Fault, Stop, DF, GP, NP};
use crate::flags::{self, mask};
use crate::mmu::Access;
use crate::seg;

/// What is being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fault or trap raised by the CPU.
    Exception,
    /// INT n / INT3 / INTO: the gate's DPL is checked.
    Software,
    /// An external interrupt (controller); sets EXT in error codes.
    External,
}

fn ext(src: Source) -> u32 {
    u32::from(src == Source::External)
}

fn sysfault(e: Stop) -> Fault {
    match e {
        Stop::Fault(f) => f,
        _ => Fault::gp(0),
    }
}

/// Delivers `vector`; RIP must already be the return address.
pub fn deliver(core: &mut Core, vector: u8, error: Option<u32>, src: Source) -> Result<(), Fault> {
    if !core.cpu.protected() {
        return deliver_real(core, vector).map_err(sysfault);
    }
    let long = core.cpu.long_active();
    let idt = core.cpu.idtr;
    let esz: u64 = if long { 16 } else { 8 };
    let gate_err = u32::from(vector) * 8 + 2 + ext(src);
    if u64::from(vector) * esz + esz - 1 > u64::from(idt.limit) {
        return Err(Fault::gp(gate_err));
    }
    let gl = idt.base.wrapping_add(u64::from(vector) * esz);
    let lo = core
        .read_lin_u(gl, 8, Access::Read, true)
        .map_err(sysfault)?;
    let hi = if long {
        core.read_lin_u(gl + 8, 8, Access::Read, true)
            .map_err(sysfault)?
    } else {
        0
    };
    let typ = ((lo >> 40) & 0xf) as u8;
    let dpl = ((lo >> 45) & 3) as u8;
    let present = lo & (1 << 47) != 0;
    let valid = if long {
        matches!(typ, 0xe | 0xf)
    } else {
        matches!(typ, 0x6 | 0x7 | 0xe | 0xf)
    };
    if !valid {
        return Err(Fault::gp(gate_err));
    }
    let cpl = core.cpu.cpl();
    if src == Source::Software && dpl < cpl {
        return Err(Fault::gp(gate_err));
    }
    if !present {
        return Err(Fault::with_code(NP, gate_err));
    }
    let sel = ((lo >> 16) & 0xffff) as u16;
    let offset = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | ((hi & 0xffff_ffff) << 32);
    let gate32 = typ & 8 != 0;
    let trap = typ & 1 != 0;
    let cs = seg::code_desc(core, sel).map_err(|f| Fault {
        error: f.error.map(|e| e | ext(src) as u16),
        ..f
    })?;
    let conforming = cs.type_ & 4 != 0;
    let new_cpl = if conforming { cpl } else { cs.dpl };
    if new_cpl > cpl || (long && !cs.l) {
        return Err(Fault::gp(u32::from(sel & !3) | ext(src)));
    }
    let old_flags = core.cpu.flags.get();
    let old_cs = core.cpu.seg[CS].selector;
    let old_ss = core.cpu.seg[SS];
    let old_rsp = core.cpu.gpr[RSP];
    let rip = core.cpu.rip;
    if long {
        let ist = (lo >> 32) & 7;
        let mut rsp = if ist != 0 {
            tss_read(core, 0x24 + (ist - 1) * 8, 8)?
        } else if new_cpl < cpl {
            tss_read(core, 4 + u64::from(new_cpl) * 8, 8)?
        } else {
            old_rsp
        };
        rsp &= !0xf;
        let mut frame = vec![
            rip,
            u64::from(old_cs),
            old_flags,
            old_rsp,
            u64::from(old_ss.selector),
        ];
        if let Some(e) = error {
            frame.insert(0, u64::from(e));
        }
        let n = frame.len() as u64;
        let top = rsp.wrapping_sub(n * 8);
        let mut bytes = Vec::with_capacity(frame.len() * 8);
        for v in &frame {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        if !crate::core::canonical(top) {
            return Err(Fault::with_code(crate::exception::SS, ext(src)));
        }
        core.write_lin(top, &bytes, true).map_err(sysfault)?;
        if new_cpl != cpl {
            core.cpu.seg[SS] = seg::null_seg(u16::from(new_cpl));
            core.cpu.seg[SS].dpl = new_cpl;
        }
        core.cpu.gpr[RSP] = top;
        seg::set_cs(core, cs, new_cpl);
        core.cpu.rip = offset;
    } else {
        let (ss_new, esp) = if new_cpl < cpl {
            let esp = tss_read(core, 4 + u64::from(new_cpl) * 8, 4)?;
            let ss_sel = tss_read(core, 8 + u64::from(new_cpl) * 8, 2)? as u16;
            let (d, _) = seg::read_desc(core, ss_sel)
                .map_err(|_| Fault::with_code(crate::exception::TS, u32::from(ss_sel & !3)))?;
            (Some(seg::decode(ss_sel, d)), esp)
        } else {
            (None, old_rsp)
        };
        let w: u64 = if gate32 { 4 } else { 2 };
        let mut frame = vec![rip, u64::from(old_cs), old_flags];
        if ss_new.is_some() {
            frame.push(old_rsp);
            frame.push(u64::from(old_ss.selector));
        }
        if let Some(e) = error {
            frame.insert(0, u64::from(e));
        }
        let ss_seg: Segment = ss_new.unwrap_or(old_ss);
        let smask = if ss_seg.db { 0xffff_ffff } else { 0xffff };
        let top = esp.wrapping_sub(frame.len() as u64 * w) & smask;
        let mut bytes = Vec::new();
        for v in &frame {
            bytes.extend_from_slice(&v.to_le_bytes()[..w as usize]);
        }
        let lin = ss_seg.base.wrapping_add(top) & 0xffff_ffff;
        core.write_lin(lin, &bytes, true).map_err(sysfault)?;
        if let Some(s) = ss_new {
            core.cpu.seg[SS] = s;
        }
        let ss_db = core.cpu.seg[SS].db;
        core.cpu.set_gpr(RSP, if ss_db { 32 } else { 16 }, top);
        seg::set_cs(core, cs, new_cpl);
        core.cpu.rip = offset & if gate32 { 0xffff_ffff } else { 0xffff };
    }
    let mut f = old_flags & !(flags::TF | flags::NT | flags::RF | flags::VM);
    if !trap {
        f &= !flags::IF;
    }
    core.cpu.flags.set(f);
    Ok(())
}

fn tss_read(core: &mut Core, off: u64, bytes: usize) -> Result<u64, Fault> {
    let tr = core.cpu.tr;
    if off + bytes as u64 - 1 > u64::from(tr.limit) {
        return Err(Fault::with_code(
            crate::exception::TS,
            u32::from(tr.selector & !3),
        ));
    }
    core.read_lin_u(tr.base.wrapping_add(off), bytes, Access::Read, true)
        .map_err(sysfault)
}

fn deliver_real(core: &mut Core, vector: u8) -> ExecResult {
    let idt = core.cpu.idtr;
    let off = u64::from(vector) * 4;
    if off + 3 > u64::from(idt.limit) {
        return Err(Fault::gp(0).into());
    }
    let ent = core.read_lin_u(idt.base + off, 4, Access::Read, true)?;
    let f = core.cpu.flags.get();
    let cs = core.cpu.seg[CS].selector;
    let ip = core.cpu.rip;
    let sp = core.cpu.gpr[RSP];
    crate::exec::flow::push(core, 2, f & 0xffff)?;
    crate::exec::flow::push(core, 2, u64::from(cs)).inspect_err(|_| core.cpu.gpr[RSP] = sp)?;
    crate::exec::flow::push(core, 2, ip & 0xffff).inspect_err(|_| core.cpu.gpr[RSP] = sp)?;
    core.cpu.load_real_seg(CS, (ent >> 16) as u16);
    core.cpu.rip = ent & 0xffff;
    core.cpu.flags.set(f & !(flags::IF | flags::TF | flags::AC));
    Ok(())
}

/// Delivers an exception raised by an instruction, escalating to a double
/// fault and to shutdown (triple fault) as the architecture says.
pub fn raise(core: &mut Core, first: Fault) -> ExecResult {
    let mut cur = first;
    let mut prev: Option<u8> = None;
    for _ in 0..4 {
        // Faults push RFLAGS with RF set (traps and interrupts do not).
        let f = core.cpu.flags.get();
        if !matches!(
            cur.vector,
            crate::exception::DB | crate::exception::BP | crate::exception::OFV
        ) {
            core.cpu.flags.set(f | flags::RF);
        }
        match deliver(core, cur.vector, error_for(core, cur), Source::Exception) {
            Ok(()) => return Ok(()),
            Err(next) => {
                let p = cur.vector;
                if p == DF {
                    return Err(Stop::Shutdown);
                }
                let escalate = (crate::exception::Fault::contributory(p)
                    && Fault::contributory(next.vector))
                    || (p == crate::exception::PF
                        && (next.vector == crate::exception::PF
                            || Fault::contributory(next.vector)));
                prev = Some(p);
                cur = if escalate {
                    Fault::with_code(DF, 0)
                } else {
                    next
                };
            }
        }
    }
    let _ = prev;
    Err(Stop::Shutdown)
}

fn error_for(core: &Core, f: Fault) -> Option<u32> {
    if core.cpu.protected() && Fault::has_error_code(f.vector) {
        Some(u32::from(f.error.unwrap_or(0)))
    } else {
        None
    }
}

/// IRET / IRETD / IRETQ. `bytes` is the operand size in bytes.
pub fn iret(core: &mut Core, bytes: u64) -> ExecResult {
    use crate::exec::flow::{adjust_sp, peek};
    if !core.cpu.protected() {
        let ip = peek(core, bytes, 0)?;
        let cs = peek(core, bytes, bytes)?;
        let f = peek(core, bytes, 2 * bytes)?;
        adjust_sp(core, 3 * bytes);
        core.cpu.load_real_seg(CS, cs as u16);
        core.cpu.rip = ip & mask(bytes as u32 * 8);
        let old = core.cpu.flags.get();
        let m = if bytes == 2 { 0xffff } else { 0x257fd5 };
        core.cpu.flags.set((old & !m) | (f & m));
        return Err(Stop::EndBlock);
    }
    let cpl = core.cpu.cpl();
    let old_cs = core.cpu.seg[CS].selector;
    let ip = peek(core, bytes, 0)?;
    let cs_sel = peek(core, bytes, bytes)? as u16;
    let f = peek(core, bytes, 2 * bytes)?;
    if core.cpu.flags.has(flags::NT) && !core.cpu.long_active() {
        return Err(Stop::Unsupported); // task switches are not modelled
    }
    let rpl = (cs_sel & 3) as u8;
    if rpl < cpl {
        return Err(Fault::gp(u32::from(cs_sel & !3)).into());
    }
    let cs = seg::code_desc(core, cs_sel)?;
    let long = core.cpu.long_active();
    let outer = rpl > cpl || (long && cs.l) || (long && bytes == 8);
    let (rsp, ss_sel) = if outer {
        (
            peek(core, bytes, 3 * bytes)?,
            peek(core, bytes, 4 * bytes)? as u16,
        )
    } else {
        (0, 0)
    };
    // Flags the return may change.
    let old = core.cpu.flags.get();
    let mut can = flags::pop_writable(old, cpl, bytes);
    if bytes != 2 {
        // IRET restores RF too (a 16-bit frame holds no RF).
        can |= flags::RF;
    }
    let newf = (old & !can) | (f & can);
    let target = if cs.l && long {
        ip
    } else {
        ip & mask(bytes as u32 * 8)
    };
    if cs.l && long && !crate::core::canonical(target) {
        return Err(Fault::gp(0).into());
    }
    if outer {
        // Loading SS is checked at the new privilege level. A failed load
        // changes no segment (only CR2, when reading the descriptor
        // faulted, which must stay for the #PF), so putting CS back
        // undoes it.
        let cs_saved = core.cpu.seg[CS];
        let mut tmp = cs;
        tmp.selector = (cs_sel & !3) | u16::from(rpl);
        core.cpu.seg[CS] = tmp;
        if let Err(e) = seg::load_data(core, SS, ss_sel) {
            core.cpu.seg[CS] = cs_saved;
            return Err(e.into());
        }
        core.cpu.set_gpr(RSP, if long { 64 } else { 32 }, rsp);
    } else {
        adjust_sp(core, 3 * bytes);
    }
    seg::set_cs(core, cs, rpl);
    core.cpu.rip = target;
    core.cpu.flags.set(newf);
    if rpl > cpl {
        // Data segments the new privilege may not use become null.
        for s in [
            crate::cpu::ES,
            crate::cpu::DS,
            crate::cpu::FS,
            crate::cpu::GS,
        ] {
            let d = core.cpu.seg[s];
            let conforming_code = d.s && d.type_ & 0xc == 0xc;
            if !d.unusable && !conforming_code && d.dpl < rpl && !long {
                core.cpu.seg[s] = seg::null_seg(0);
            }
        }
    }
    let _ = GP;
    // A 64-bit IRET that keeps CS and the privilege level changes nothing
    // a block or a translation was made under (Linux's sync_core() runs
    // one to the next instruction some 100,000 times at boot): the block
    // goes on from the new RIP, unless it allowed interrupts and one is
    // waiting.
    let enables = old & flags::IF == 0 && newf & flags::IF != 0;
    if long
        && bytes == 8
        && cs_sel == old_cs
        && rpl == cpl
        && newf & flags::TF == 0
        && !(enables && core.interrupt_waiting())
    {
        return Ok(());
    }
    Err(Stop::EndBlock)
}
