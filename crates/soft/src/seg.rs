//! Segment descriptors: reading them from the GDT/LDT, decoding them into
//! descriptor caches, and loading data, stack and code segment registers
//! with the protected-mode checks.

use hypervisor::Segment;

use crate::core::Core;
use crate::cpu::{CS, SS};
use crate::exception::{Fault, NP, SS as SSV};
use crate::mmu::Access;

/// Reads the 8-byte descriptor for `sel` (a null selector is the caller's
/// business). Returns it and its linear address.
pub fn read_desc(core: &mut Core, sel: u16) -> Result<(u64, u64), Fault> {
    let idx = u64::from(sel & !7);
    let (base, limit) = if sel & 4 != 0 {
        let l = &core.cpu.ldtr;
        if l.unusable || !l.present {
            return Err(Fault::gp(u32::from(sel & !3)));
        }
        (l.base, u64::from(l.limit))
    } else {
        (core.cpu.gdtr.base, u64::from(core.cpu.gdtr.limit))
    };
    if idx + 7 > limit {
        return Err(Fault::gp(u32::from(sel & !3)));
    }
    let lin = base.wrapping_add(idx);
    let v = core
        .read_lin_u(lin, 8, Access::Read, true)
        .map_err(|e| match e {
            crate::exception::Stop::Fault(f) => f,
            _ => Fault::gp(0),
        })?;
    Ok((v, lin))
}

/// Decodes a descriptor into a segment cache (the upper half of a 16-byte
/// system descriptor is added by the caller).
pub fn decode(sel: u16, d: u64) -> Segment {
    let limit = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let g = d & (1 << 55) != 0;
    Segment {
        base: ((d >> 16) & 0xff_ffff) | ((d >> 32) & 0xff00_0000),
        limit: if g { (limit << 12) | 0xfff } else { limit },
        selector: sel,
        type_: ((d >> 40) & 0xf) as u8,
        s: d & (1 << 44) != 0,
        dpl: ((d >> 45) & 3) as u8,
        present: d & (1 << 47) != 0,
        avl: d & (1 << 52) != 0,
        l: d & (1 << 53) != 0,
        db: d & (1 << 54) != 0,
        g,
        unusable: false,
    }
}

/// Sets the accessed bit of a descriptor in memory.
fn mark_accessed(core: &mut Core, d: u64, lin: u64) {
    if d & (1 << 40) == 0 {
        let _ = core.write_lin_u(lin + 5, 1, ((d >> 40) as u8 | 1).into(), true);
    }
}

/// A null selector loaded into a data segment register.
pub fn null_seg(sel: u16) -> Segment {
    Segment {
        selector: sel,
        unusable: true,
        ..Default::default()
    }
}

/// Loads a data or stack segment register in protected mode (MOV/POP).
pub fn load_data(core: &mut Core, s: usize, sel: u16) -> Result<(), Fault> {
    let cpl = core.cpu.cpl();
    if sel & !3 == 0 {
        if s == SS && !(core.cpu.mode64() && cpl != 3 && (sel & 3) as u8 == cpl) {
            return Err(Fault::gp(0));
        }
        core.cpu.seg[s] = null_seg(sel);
        if s == SS {
            core.cpu.seg[s].dpl = cpl;
            core.cpu.seg[s].db = true;
        }
        return Ok(());
    }
    let (d, lin) = read_desc(core, sel)?;
    let seg = decode(sel, d);
    let err = u32::from(sel & !3);
    let rpl = (sel & 3) as u8;
    if s == SS {
        let writable_data = seg.s && seg.type_ & 0xa == 0x2;
        if rpl != cpl || seg.dpl != cpl || !writable_data {
            return Err(Fault::gp(err));
        }
        if !seg.present {
            return Err(Fault::with_code(SSV, err));
        }
    } else {
        let readable = seg.s && (seg.type_ & 8 == 0 || seg.type_ & 2 != 0);
        let conforming = seg.type_ & 0xc == 0xc;
        if !readable || (!conforming && (rpl.max(cpl) > seg.dpl)) {
            return Err(Fault::gp(err));
        }
        if !seg.present {
            return Err(Fault::with_code(NP, err));
        }
    }
    mark_accessed(core, d, lin);
    core.cpu.seg[s] = seg;
    core.cpu.seg[s].type_ |= 1;
    Ok(())
}

/// Reads and checks a code segment for a far transfer to privilege `cpl`
/// (or the segment's DPL when `cpl` is None).
pub fn code_desc(core: &mut Core, sel: u16) -> Result<Segment, Fault> {
    if sel & !3 == 0 {
        return Err(Fault::gp(0));
    }
    let (d, lin) = read_desc(core, sel)?;
    let seg = decode(sel, d);
    if !seg.s || seg.type_ & 8 == 0 {
        return Err(Fault::gp(u32::from(sel & !3)));
    }
    if !seg.present {
        return Err(Fault::with_code(NP, u32::from(sel & !3)));
    }
    mark_accessed(core, d, lin);
    let mut seg = seg;
    seg.type_ |= 1;
    Ok(seg)
}

/// Installs a code segment, keeping the RPL equal to the new CPL.
pub fn set_cs(core: &mut Core, mut seg: Segment, cpl: u8) {
    seg.selector = (seg.selector & !3) | u16::from(cpl);
    core.cpu.seg[CS] = seg;
}

/// A flat 64-bit or 32-bit segment as SYSCALL/SYSRET load them.
pub fn flat(sel: u16, code: bool, dpl: u8, long: bool) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        type_: if code { 0xb } else { 0x3 },
        present: true,
        dpl,
        db: !(code && long),
        s: true,
        l: code && long,
        g: true,
        avl: false,
        unusable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flat_code_descriptor() {
        // 64-bit code, DPL0: 0x00af9b000000ffff.
        let s = decode(0x8, 0x00af_9b00_0000_ffff);
        assert!(s.l && s.present && s.s);
        assert_eq!(s.type_, 0xb);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.base, 0);
        // 32-bit data with a base: base 0x12345678.
        let s = decode(0x10, 0x12cf_9334_5678_ffff);
        assert_eq!(s.base, 0x1234_5678);
        assert!(s.db && !s.l);
    }
}
