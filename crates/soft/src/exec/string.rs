//! String instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) with
//! REP/REPE/REPNE. Each iteration commits before the next, so a fault
//! mid-way leaves RCX/RSI/RDI describing the remaining work, as on the
//! hardware; long repeats yield every few thousand iterations (RIP stays
//! on the instruction) so interrupts are not held off.

use iced_x86::Instruction;

use super::ops::{self, seg_index};
use crate::core::Core;
use crate::cpu::{RAX, RCX, RDI, RDX, RSI};
use crate::exception::ExecResult;
use crate::flags::{mask, FlagOp, DF};

const BATCH: u32 = 4096;

/// The string operation, independent of element size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
    Ins,
    Outs,
}

fn elem_size(ins: &Instruction) -> u32 {
    (ins.memory_size().size() * 8) as u32
}

pub fn string(core: &mut Core, ins: &Instruction, m: StrOp) -> ExecResult {
    let size = match m {
        StrOp::Ins | StrOp::Outs => match ins.code() {
            iced_x86::Code::Insb_m8_DX | iced_x86::Code::Outsb_DX_m8 => 8,
            iced_x86::Code::Insw_m16_DX | iced_x86::Code::Outsw_DX_m16 => 16,
            _ => 32,
        },
        _ => elem_size(ins),
    };
    let bytes = u64::from(size / 8);
    let asz = ops::string_addr_size(ins);
    let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
    let step = if core.cpu.flags.has(DF) {
        bytes.wrapping_neg()
    } else {
        bytes
    };
    let src_seg = seg_index(ins.memory_segment());
    let flags_before = core.cpu.flags;
    let r = run(core, ins, m, size, asz, rep, step, src_seg);
    if rep && matches!(m, StrOp::Cmps | StrOp::Scas) {
        if let Err(crate::exception::Stop::Fault(_) | crate::exception::Stop::EndBlock) = r {
            // This CPU leaves RFLAGS as before the instruction when a
            // repeated compare faults part-way (its flags are written when
            // it ends); so a batch that stops to resume later leaves them
            // too, or a fault after the resumption would show the flags of
            // the batch's last compare.
            core.cpu.flags = flags_before;
        }
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn run(
    core: &mut Core,
    ins: &Instruction,
    m: StrOp,
    size: u32,
    asz: u32,
    rep: bool,
    step: u64,
    src_seg: usize,
) -> ExecResult {
    let bytes = u64::from(size / 8);
    let am = mask(asz);
    let bulk_ok = rep
        && matches!(m, StrOp::Movs | StrOp::Stos)
        && asz == 64
        && step == bytes
        && core.cpu.mode64()
        && src_seg != crate::cpu::FS
        && src_seg != crate::cpu::GS;
    let mut n = 0;
    loop {
        if rep {
            if core.cpu.gpr[RCX] & am == 0 {
                return Ok(());
            }
            if n >= BATCH {
                // Resume later at this same instruction.
                core.cpu.rip = ins.ip();
                return Err(crate::exception::Stop::EndBlock);
            }
        }
        if bulk_ok {
            if let Some(k) = bulk(core, m, bytes, src_seg, BATCH - n)? {
                n += k;
                continue;
            }
        }
        n += 1;
        let si = core.cpu.gpr[RSI] & am;
        let di = core.cpu.gpr[RDI] & am;
        let mut stop = false;
        match m {
            StrOp::Movs => {
                let v = core.read_seg(src_seg, si, bytes as usize)?;
                core.write_seg(crate::cpu::ES, di, bytes as usize, v)?;
                core.cpu.set_gpr(RSI, asz, si.wrapping_add(step));
                core.cpu.set_gpr(RDI, asz, di.wrapping_add(step));
            }
            StrOp::Stos => {
                let v = core.cpu.gpr[RAX];
                core.write_seg(crate::cpu::ES, di, bytes as usize, v)?;
                core.cpu.set_gpr(RDI, asz, di.wrapping_add(step));
            }
            StrOp::Lods => {
                let v = core.read_seg(src_seg, si, bytes as usize)?;
                core.cpu.set_gpr(RAX, size, v);
                core.cpu.set_gpr(RSI, asz, si.wrapping_add(step));
            }
            StrOp::Cmps => {
                let a = core.read_seg(src_seg, si, bytes as usize)?;
                let b = core.read_seg(crate::cpu::ES, di, bytes as usize)?;
                core.cpu
                    .flags
                    .set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b));
                core.cpu.set_gpr(RSI, asz, si.wrapping_add(step));
                core.cpu.set_gpr(RDI, asz, di.wrapping_add(step));
                stop = true;
            }
            StrOp::Scas => {
                let a = core.cpu.gpr[RAX] & mask(size);
                let b = core.read_seg(crate::cpu::ES, di, bytes as usize)?;
                core.cpu
                    .flags
                    .set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b));
                core.cpu.set_gpr(RDI, asz, di.wrapping_add(step));
                stop = true;
            }
            StrOp::Ins => {
                super::system::io_allowed(core, core.cpu.gpr[RDX] as u16, bytes)?;
                // Check the destination before the port read has side effects.
                let lin = core.seg_lin(crate::cpu::ES, di, bytes, true)?;
                core.translate(lin, crate::mmu::Access::Write, false)?;
                let mut b = [0u8; 4];
                core.pio_read(core.cpu.gpr[RDX] as u16, &mut b[..bytes as usize]);
                core.write_seg_buf(crate::cpu::ES, di, &b[..bytes as usize])?;
                core.cpu.set_gpr(RDI, asz, di.wrapping_add(step));
            }
            _ => {
                super::system::io_allowed(core, core.cpu.gpr[RDX] as u16, bytes)?;
                let mut b = [0u8; 4];
                core.read_seg_buf(src_seg, si, &mut b[..bytes as usize])?;
                core.pio_write(core.cpu.gpr[RDX] as u16, &b[..bytes as usize]);
                core.cpu.set_gpr(RSI, asz, si.wrapping_add(step));
            }
        }
        if !rep {
            return Ok(());
        }
        let c = (core.cpu.gpr[RCX] & am).wrapping_sub(1) & am;
        core.cpu.set_gpr(RCX, asz, c);
        if stop {
            let zf = core.cpu.flags.zf();
            if (ins.has_repe_prefix() && !zf) || (ins.has_repne_prefix() && zf) {
                return Ok(());
            }
        }
    }
}

/// Forward REP MOVS/STOS in 64-bit code with flat segments, a page at a
/// time: as many elements as fit in the current source and destination
/// pages (at most `limit`), done with one translation of each page and
/// committed together (RCX, RSI, RDI). None when this chunk needs the
/// element-by-element path (MMIO, an element crossing a page, a copy
/// whose destination overlaps its source ahead of it).
fn bulk(
    core: &mut Core,
    m: StrOp,
    bytes: u64,
    src_seg: usize,
    limit: u32,
) -> ExecResult<Option<u32>> {
    use crate::mmu::Access;
    use crate::phys::{Ram, PAGE};
    let di = core.cpu.gpr[RDI];
    let to_page = |a: u64| (PAGE - (a & (PAGE - 1))) / bytes;
    let mut count = core.cpu.gpr[RCX].min(u64::from(limit)).min(to_page(di));
    let si = core.cpu.gpr[RSI];
    if m == StrOp::Movs {
        count = count.min(to_page(si));
        // Overlap ahead of the source replicates bytes element by
        // element on the hardware: leave that to the slow path.
        let len = count * bytes;
        if di > si && di - si < len {
            return Ok(None);
        }
    }
    if count == 0 {
        return Ok(None);
    }
    let len = (count * bytes) as usize;
    // Both pages are translated before anything is written, so a fault
    // leaves memory and registers as they were.
    let src = if m == StrOp::Movs {
        let lin = core.seg_lin(src_seg, si, bytes, false)?;
        let p = core.translate(lin, Access::Read, false)?;
        let Some(host) = p.host else {
            return Ok(None);
        };
        Some((host, (lin & (PAGE - 1)) as usize))
    } else {
        None
    };
    let lin = core.seg_lin(crate::cpu::ES, di, bytes, true)?;
    let dst = core.translate(lin, Access::Write, false)?;
    let Some(dst_host) = dst.host else {
        return Ok(None);
    };
    let dst_off = (lin & (PAGE - 1)) as usize;
    // Through a small buffer a piece at a time (a page-sized one costs
    // more to clear than most of Linux's memsets): forward, which is
    // what element-by-element order gives when the destination is not
    // ahead of the source within the copy (ruled out above).
    const PIECE: usize = 256;
    let mut buf = [0u8; PIECE];
    if src.is_none() {
        let v = core.cpu.gpr[RAX].to_le_bytes();
        // Fixed-size pieces, so the fill compiles to stores, not a
        // memcpy call per element.
        fn fill<const N: usize>(buf: &mut [u8], v: &[u8; 8]) {
            for c in buf.chunks_exact_mut(N) {
                c.copy_from_slice(&v[..N]);
            }
        }
        match bytes {
            1 => buf.fill(v[0]),
            2 => fill::<2>(&mut buf, &v),
            4 => fill::<4>(&mut buf, &v),
            _ => fill::<8>(&mut buf, &v),
        }
    }
    let mut code = false;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(PIECE);
        let piece = &mut buf[..n];
        if let Some((host, off)) = src {
            Ram::read(host, off + done, piece);
        }
        code |= core
            .shared
            .ram
            .write(dst.pa, dst_host, dst_off + done, piece);
        done += n;
    }
    if code {
        core.code_written = true;
    }
    core.cpu.gpr[RCX] -= count;
    core.cpu.gpr[RDI] = di.wrapping_add(count * bytes);
    if m == StrOp::Movs {
        core.cpu.gpr[RSI] = si.wrapping_add(count * bytes);
    }
    Ok(Some(count as u32))
}
