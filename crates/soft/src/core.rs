//! One vCPU's execution context: its architectural state, TLB and block
//! cache, and the paths from an instruction's memory or port access to
//! guest RAM, the engine's own interrupt controllers and the device bus.

use std::sync::Arc;

use crate::cpu::{Cpu, CS, SS};
use crate::exception::{ExecResult, Fault, Stop};
use crate::mmu::{self, Access, Page, Tlb, Who};
use crate::phys::{Ram, PAGE};
use crate::vm::Shared;
use hypervisor::{CpuidEntry, DeviceIo};

const IOAPIC_BASE: u64 = 0xfec0_0000;

/// A vCPU's execution context.
pub struct Core {
    pub cpu: Cpu,
    pub tlb: Tlb,
    pub shared: Arc<Shared>,
    pub io: Arc<dyn DeviceIo>,
    pub index: usize,
    pub cpuid: Vec<CpuidEntry>,
    /// The instruction-set features `cpuid` advertises: the instructions
    /// of the others raise #UD.
    pub features: crate::cpuid::Features,
    /// Set when a write hit a page holding cached code.
    pub code_written: bool,
    /// Set when a write went to a device outside the engine: the device may
    /// have asked the VMM to stop, so the run loop looks for a kick before
    /// the next instruction (a guest must not run on past its power-off).
    pub device_written: bool,
    /// Instructions retired (for statistics and the benchmark).
    pub retired: u64,
    /// Host-instruction stubs for SIMD/float forms ([`crate::hostop`]).
    pub hostop: crate::hostop::Stubs,
}

impl Core {
    pub fn new(shared: Arc<Shared>, io: Arc<dyn DeviceIo>, index: usize) -> Self {
        Core {
            cpu: Cpu::reset(),
            tlb: Tlb::default(),
            shared,
            io,
            index,
            cpuid: Vec::new(),
            features: crate::cpuid::Features::UNRESTRICTED,
            code_written: false,
            device_written: false,
            retired: 0,
            hostop: Default::default(),
        }
    }

    #[inline]
    pub fn ram(&self) -> &Ram {
        &self.shared.ram
    }

    /// Whether the irqchip holds an interrupt for this vCPU: only then
    /// must an instruction that allows interrupts end the block for the
    /// run loop to deliver it (one that arrives later sets the vCPU's
    /// attention flag, which ends translated runs at their next link and
    /// is checked before every block).
    pub fn interrupt_waiting(&self) -> bool {
        self.shared
            .irq
            .get()
            .is_some_and(|irq| irq.has_interrupt(self.index))
    }

    #[inline]
    fn who(&self, sys: bool) -> Who {
        Who {
            user: !sys && self.cpu.cpl() == 3,
        }
    }

    /// Translates a linear address for an access.
    #[inline]
    pub fn translate(&mut self, lin: u64, acc: Access, sys: bool) -> Result<Page, Fault> {
        let who = self.who(sys);
        mmu::translate(
            &mut self.cpu,
            &mut self.tlb,
            &self.shared.ram,
            lin,
            acc,
            who,
        )
    }

    /// Masks a linear address to the current width (32 bits outside long mode).
    #[inline]
    fn lin_mask(&self, lin: u64) -> u64 {
        if self.cpu.long_active() {
            lin
        } else {
            lin & 0xffff_ffff
        }
    }

    /// Reads `buf.len()` (at most 16) bytes at linear address `lin`.
    pub fn read_lin(&mut self, lin: u64, buf: &mut [u8], acc: Access, sys: bool) -> ExecResult {
        let lin = self.lin_mask(lin);
        let off = (lin & (PAGE - 1)) as usize;
        let first = buf.len().min(PAGE as usize - off);
        let p1 = self.translate(lin, acc, sys)?;
        if first < buf.len() {
            let lin2 = self.lin_mask(lin.wrapping_add(first as u64));
            let p2 = self.translate(lin2, acc, sys)?;
            let (a, b) = buf.split_at_mut(first);
            self.read_phys_page(p1, off, a);
            self.read_phys_page(p2, 0, b);
        } else {
            self.read_phys_page(p1, off, buf);
        }
        Ok(())
    }

    /// Checks that a one-byte write at `off` in segment `seg` would
    /// succeed (segment rules and paging), without writing: ENTER probes
    /// its final stack top this way.
    pub fn probe_write(&mut self, seg: usize, off: u64) -> ExecResult {
        let lin = self.seg_lin(seg, off, 1, true)?;
        let lin = self.lin_mask(lin);
        self.translate(lin, Access::Write, false)?;
        Ok(())
    }

    /// Writes bytes at linear address `lin`; both pages are translated
    /// before anything is written, so a fault leaves memory unchanged.
    pub fn write_lin(&mut self, lin: u64, buf: &[u8], sys: bool) -> ExecResult {
        let lin = self.lin_mask(lin);
        let off = (lin & (PAGE - 1)) as usize;
        let first = buf.len().min(PAGE as usize - off);
        let p1 = self.translate(lin, Access::Write, sys)?;
        if first < buf.len() {
            let lin2 = self.lin_mask(lin.wrapping_add(first as u64));
            let p2 = self.translate(lin2, Access::Write, sys)?;
            self.write_phys_page(p1, off, &buf[..first]);
            self.write_phys_page(p2, 0, &buf[first..]);
        } else {
            self.write_phys_page(p1, off, buf);
        }
        Ok(())
    }

    #[inline]
    pub fn read_lin_u(
        &mut self,
        lin: u64,
        bytes: usize,
        acc: Access,
        sys: bool,
    ) -> ExecResult<u64> {
        let mut b = [0u8; 8];
        self.read_lin(lin, &mut b[..bytes.min(8)], acc, sys)?;
        Ok(u64::from_le_bytes(b))
    }

    #[inline]
    pub fn write_lin_u(&mut self, lin: u64, bytes: usize, v: u64, sys: bool) -> ExecResult {
        let b = v.to_le_bytes();
        self.write_lin(lin, &b[..bytes.min(8)], sys)
    }

    fn read_phys_page(&mut self, p: Page, off: usize, buf: &mut [u8]) {
        if let Some(host) = p.host {
            Ram::read(host, off, buf);
        } else {
            self.mmio_read(p.pa + off as u64, buf);
        }
    }

    fn write_phys_page(&mut self, p: Page, off: usize, buf: &[u8]) {
        if let Some(host) = p.host {
            if self.shared.ram.write(p.pa, host, off, buf) {
                self.code_written = true;
            }
        } else {
            self.mmio_write(p.pa + off as u64, buf);
        }
    }

    fn lapic_page(&self, pa: u64) -> bool {
        self.cpu.apic_base & (1 << 11) != 0 && pa & !(PAGE - 1) == self.cpu.apic_base & !(PAGE - 1)
    }

    pub fn mmio_read(&mut self, pa: u64, buf: &mut [u8]) {
        if let Some(irq) = self.shared.irq.get() {
            if self.lapic_page(pa) {
                irq.lapic_read(self.index, pa & (PAGE - 1), buf);
                return;
            }
            if pa & !(PAGE - 1) == IOAPIC_BASE {
                irq.ioapic_read(pa & (PAGE - 1), buf);
                return;
            }
        }
        self.io.mmio_read(pa, buf);
    }

    pub fn mmio_write(&mut self, pa: u64, buf: &[u8]) {
        if let Some(irq) = self.shared.irq.get() {
            if self.lapic_page(pa) {
                irq.lapic_write(self.index, pa & (PAGE - 1), buf);
                return;
            }
            if pa & !(PAGE - 1) == IOAPIC_BASE {
                irq.ioapic_write(pa & (PAGE - 1), buf);
                return;
            }
        }
        self.device_written = true;
        self.io.mmio_write(pa, buf);
    }

    pub fn pio_read(&mut self, port: u16, buf: &mut [u8]) {
        if let Some(irq) = self.shared.irq.get() {
            if irq.pio_read(port, buf) {
                return;
            }
        }
        self.io.pio_read(port, buf);
    }

    pub fn pio_write(&mut self, port: u16, buf: &[u8]) {
        if let Some(irq) = self.shared.irq.get() {
            if irq.pio_write(port, buf) {
                return;
            }
        }
        self.device_written = true;
        self.io.pio_write(port, buf);
    }

    /// The linear address of `seg:off` for an access of `len` bytes,
    /// with the canonical check of 64-bit mode and the limit check of
    /// other modes.
    #[inline]
    pub fn seg_lin(&self, seg: usize, off: u64, len: u64, write: bool) -> Result<u64, Fault> {
        let s = &self.cpu.seg[seg];
        if self.cpu.mode64() {
            let lin = if seg >= 4 {
                s.base.wrapping_add(off)
            } else {
                off
            };
            // Every byte of the access must be canonical: one that
            // crosses the boundary faults as a non-canonical one does.
            let last = lin.wrapping_add(len.max(1) - 1);
            if !canonical(lin) || !canonical(last) {
                return Err(stack_or_gp(seg));
            }
            return Ok(lin);
        }
        if self.cpu.protected() {
            if s.unusable || !s.present {
                return Err(stack_or_gp(seg));
            }
            if write && seg != SS && (!s.s || s.type_ & 0x8 != 0 || s.type_ & 2 == 0) && seg != CS {
                // Code segments and read-only data segments are not writable.
                return Err(stack_or_gp(seg));
            }
            let limit = u64::from(s.limit);
            let last = off.wrapping_add(len.max(1) - 1);
            let expand_down = s.s && s.type_ & 0xc == 0x4;
            if expand_down {
                let upper = if s.db { 0xffff_ffff } else { 0xffff };
                if off <= limit || last > upper {
                    return Err(stack_or_gp(seg));
                }
            } else if last > limit || last < off {
                return Err(stack_or_gp(seg));
            }
        }
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
    }

    pub fn read_seg(&mut self, seg: usize, off: u64, bytes: usize) -> ExecResult<u64> {
        let lin = self.seg_lin(seg, off, bytes as u64, false)?;
        self.read_lin_u(lin, bytes, Access::Read, false)
    }

    /// Reads the destination of a read-modify-write: checked for writing,
    /// so a fault reports a write access as the hardware does.
    pub fn read_seg_rmw(&mut self, seg: usize, off: u64, bytes: usize) -> ExecResult<u64> {
        let lin = self.seg_lin(seg, off, bytes as u64, true)?;
        self.read_lin_u(lin, bytes, Access::Write, false)
    }

    pub fn write_seg(&mut self, seg: usize, off: u64, bytes: usize, v: u64) -> ExecResult {
        let lin = self.seg_lin(seg, off, bytes as u64, true)?;
        self.write_lin_u(lin, bytes, v, false)
    }

    pub fn read_seg_buf(&mut self, seg: usize, off: u64, buf: &mut [u8]) -> ExecResult {
        let lin = self.seg_lin(seg, off, buf.len() as u64, false)?;
        self.read_lin(lin, buf, Access::Read, false)
    }

    pub fn write_seg_buf(&mut self, seg: usize, off: u64, buf: &[u8]) -> ExecResult {
        let lin = self.seg_lin(seg, off, buf.len() as u64, true)?;
        self.write_lin(lin, buf, false)
    }

    /// Atomic compare-exchange on memory for LOCK CMPXCHG and friends.
    /// Falls back to read/compare/write when the operand is not aligned
    /// RAM. Returns the old value.
    pub fn cmpxchg_seg(
        &mut self,
        seg: usize,
        off: u64,
        bytes: usize,
        expect: u64,
        new: u64,
    ) -> ExecResult<u64> {
        let lin = self.seg_lin(seg, off, bytes as u64, true)?;
        let lin = self.lin_mask(lin);
        if lin.is_multiple_of(bytes as u64) {
            let p = self.translate(lin, Access::Write, false)?;
            if let Some(host) = p.host {
                let off = (lin & (PAGE - 1)) as usize;
                let (old, code) = self.shared.ram.cmpxchg(p.pa, host, off, bytes, expect, new);
                self.code_written |= code;
                return Ok(old);
            }
        }
        let old = self.read_lin_u(lin, bytes, Access::Write, false)?;
        if old & crate::flags::mask(bytes as u32 * 8)
            == expect & crate::flags::mask(bytes as u32 * 8)
        {
            self.write_lin_u(lin, bytes, new, false)?;
        }
        Ok(old)
    }

    /// Fails the run for an instruction the engine cannot execute.
    pub fn unsupported<T>(&self) -> ExecResult<T> {
        Err(Stop::Unsupported)
    }
}

#[inline]
pub fn canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

fn stack_or_gp(seg: usize) -> Fault {
    if seg == SS {
        Fault::with_code(crate::exception::SS, 0)
    } else {
        Fault::gp(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        assert!(canonical(0x7fff_ffff_ffff));
        assert!(canonical(0xffff_8000_0000_0000));
        assert!(!canonical(0x8000_0000_0000));
    }
}
