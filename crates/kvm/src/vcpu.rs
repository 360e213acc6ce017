//! One KVM vCPU: register access, and the `KVM_RUN` loop that hands port
//! and MMIO exits to [`DeviceIo`] and returns everything else as a
//! [`VmExit`].

use std::sync::Arc;

use hypervisor::{
    CpuidEntry, DeviceIo, FpuState, Regs, SpecialRegs, Vcpu, VcpuKicker, VmExit, XsaveState,
};
use kvm_bindings::{
    kvm_msr_entry, kvm_run, CpuId, Msrs, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::convert;
use crate::kick::{KickState, KvmKicker, RunGuard};
use crate::{os_error, Error};

/// The longest x86 instruction.
const MAX_INSN_LEN: usize = 15;
const PAGE_SIZE: u64 = 4096;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;

/// Local APIC register offsets and LVT fields.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_DELIVERY_MODE_MASK: u32 = 0x700;
const APIC_MODE_NMI: u32 = 0x4 << 8;
const APIC_MODE_EXTINT: u32 = 0x7 << 8;
const APIC_LVT_MASKED: u32 = 1 << 16;

/// What the run loop does after one `KVM_RUN`.
enum Step {
    /// The exit was handled: enter the guest again.
    Continue,
    /// Return this exit to the VMM.
    Exit(VmExit),
    /// KVM_EXIT_INTERNAL_ERROR: needs the kvm_run data, read after the
    /// exit's borrow ends.
    InternalError,
}

/// A KVM vCPU.
pub struct KvmVcpu {
    index: usize,
    fd: VcpuFd,
    io: Arc<dyn DeviceIo>,
    memory: Option<GuestMemoryMmap>,
    kick: Arc<KickState>,
}

impl std::fmt::Debug for KvmVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmVcpu")
            .field("index", &self.index)
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl KvmVcpu {
    pub(crate) fn new(
        index: usize,
        fd: VcpuFd,
        io: Arc<dyn DeviceIo>,
        memory: Option<GuestMemoryMmap>,
    ) -> Self {
        KvmVcpu {
            index,
            fd,
            io,
            memory,
            kick: Arc::new(KickState::default()),
        }
    }

    /// The underlying `kvm-ioctls` vCPU handle.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Programs the local APIC's LINT pins as a BIOS does in virtual-wire
    /// mode: LINT0 delivers the PIC's interrupts (ExtINT), LINT1 NMIs. On
    /// the BSP both are unmasked so PIC interrupts reach it; APs keep their
    /// mask bits (the guest unmasks what it wants).
    pub(crate) fn wire_lapic_lints(&self) -> hypervisor::Result<()> {
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(|e| os_error("KVM_GET_LAPIC", e))?;
        let bsp = self.index == 0;
        for (offset, mode) in [
            (APIC_LVT_LINT0, APIC_MODE_EXTINT),
            (APIC_LVT_LINT1, APIC_MODE_NMI),
        ] {
            let old = lapic_reg(&lapic.regs, offset);
            let mut new = (old & !APIC_DELIVERY_MODE_MASK) | mode;
            if bsp {
                new &= !APIC_LVT_MASKED;
            }
            set_lapic_reg(&mut lapic.regs, offset, new);
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(|e| os_error("KVM_SET_LAPIC", e))
    }

    /// Dispatches a port read of `data.len() / size` items of `size` bytes
    /// each (string I/O has more than one), in order.
    fn port_in(io: &dyn DeviceIo, port: u16, size: usize, data: &mut [u8]) -> Step {
        if !port_size_ok(size, data.len()) {
            return bad_port_exit(port, size, data.len());
        }
        for item in data.chunks_exact_mut(size) {
            io.pio_read(port, item);
        }
        Step::Continue
    }

    /// Dispatches a port write, item by item as [`Self::port_in`].
    fn port_out(io: &dyn DeviceIo, port: u16, size: usize, data: &[u8]) -> Step {
        if !port_size_ok(size, data.len()) {
            return bad_port_exit(port, size, data.len());
        }
        for item in data.chunks_exact(size) {
            io.pio_write(port, item);
        }
        Step::Continue
    }

    /// Turns KVM_EXIT_INTERNAL_ERROR into a [`VmExit`].
    fn internal_error(&mut self) -> hypervisor::Result<VmExit> {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal`
        // is the union member KVM filled in; it is plain old data.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let data = &internal.data[..ndata];
        if internal.suberror != KVM_INTERNAL_ERROR_EMULATION {
            return Ok(VmExit::Unhandled(format!(
                "internal error: suberror {}, data {data:x?}",
                internal.suberror
            )));
        }
        let kernel_bytes = kernel_insn_bytes(data);
        let rip = self
            .fd
            .get_regs()
            .map_err(|e| os_error("KVM_GET_REGS", e))?
            .rip;
        let sregs = self
            .fd
            .get_sregs()
            .map_err(|e| os_error("KVM_GET_SREGS", e))?;
        // In 64-bit mode the CS base is architecturally zero.
        let cs_base = if sregs.cs.l != 0 && sregs.efer & EFER_LMA != 0 {
            0
        } else {
            sregs.cs.base
        };
        let bytes = self.read_insn(cs_base.wrapping_add(rip));
        let bytes = if bytes.is_empty() {
            kernel_bytes
        } else {
            bytes
        };
        Ok(VmExit::EmulationFailure { rip, bytes })
    }

    /// Reads up to 15 bytes at linear address `addr`, stopping at the first
    /// page that does not translate or is not RAM.
    fn read_insn(&mut self, addr: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(MAX_INSN_LEN);
        while bytes.len() < MAX_INSN_LEN {
            let at = addr.wrapping_add(bytes.len() as u64);
            let in_page = (PAGE_SIZE - at % PAGE_SIZE) as usize;
            let n = in_page.min(MAX_INSN_LEN - bytes.len());
            let mut chunk = [0u8; MAX_INSN_LEN];
            if self.read_virtual(at, &mut chunk[..n]).is_err() {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        bytes
    }
}

/// Whether a port exit's data is a whole number of 1, 2 or 4-byte items.
fn port_size_ok(size: usize, len: usize) -> bool {
    matches!(size, 1 | 2 | 4) && len.is_multiple_of(size)
}

fn bad_port_exit(port: u16, size: usize, len: usize) -> Step {
    Step::Exit(VmExit::Unhandled(format!(
        "io exit: port {port:#x}, size {size}, {len} data bytes"
    )))
}

/// The instruction bytes KVM put in an emulation-failure exit, when it
/// did: data[0] flags, data[1] length, bytes from data[2].
fn kernel_insn_bytes(data: &[u64]) -> Vec<u8> {
    let has_bytes = data
        .first()
        .is_some_and(|f| f & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0);
    let len = data.get(1).copied().unwrap_or(0).min(MAX_INSN_LEN as u64) as usize;
    if !has_bytes || data.len() < 2 {
        return Vec::new();
    }
    data[2..]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .take(len)
        .collect()
}

fn lapic_reg(regs: &[libc::c_char; 1024], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = regs[offset + i] as u8;
    }
    u32::from_le_bytes(b)
}

fn set_lapic_reg(regs: &mut [libc::c_char; 1024], offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *byte as libc::c_char;
    }
}

impl Vcpu for KvmVcpu {
    fn index(&self) -> usize {
        self.index
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> hypervisor::Result<()> {
        let kvm: Vec<_> = entries.iter().map(convert::cpuid_to_kvm).collect();
        let cpuid =
            CpuId::from_entries(&kvm).map_err(|_| Error::TooManyCpuidEntries(entries.len()))?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(|e| os_error("KVM_SET_CPUID2", e))
    }

    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> hypervisor::Result<()> {
        let entries: Vec<_> = msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let kvm = Msrs::from_entries(&entries).map_err(|_| Error::TooManyMsrs(msrs.len()))?;
        let accepted = self
            .fd
            .set_msrs(&kvm)
            .map_err(|e| os_error("KVM_SET_MSRS", e))?;
        if accepted < msrs.len() {
            return Err(Error::MsrRejected {
                accepted,
                requested: msrs.len(),
                refused: msrs[accepted].0,
            }
            .into());
        }
        Ok(())
    }

    fn get_msr(&mut self, index: u32) -> hypervisor::Result<u64> {
        let entry = kvm_msr_entry {
            index,
            ..Default::default()
        };
        // One entry is far below KVM_MAX_MSR_ENTRIES.
        let mut msrs = Msrs::from_entries(&[entry]).map_err(|_| Error::TooManyMsrs(1))?;
        let n = self
            .fd
            .get_msrs(&mut msrs)
            .map_err(|e| os_error("KVM_GET_MSRS", e))?;
        match msrs.as_slice().first() {
            Some(e) if n == 1 => Ok(e.data),
            _ => Err(Error::MsrUnreadable(index).into()),
        }
    }

    fn regs(&mut self) -> hypervisor::Result<Regs> {
        let r = self
            .fd
            .get_regs()
            .map_err(|e| os_error("KVM_GET_REGS", e))?;
        Ok(convert::regs_from_kvm(&r))
    }

    fn set_regs(&mut self, regs: &Regs) -> hypervisor::Result<()> {
        self.fd
            .set_regs(&convert::regs_to_kvm(regs))
            .map_err(|e| os_error("KVM_SET_REGS", e))
    }

    fn special_regs(&mut self) -> hypervisor::Result<SpecialRegs> {
        let s = self
            .fd
            .get_sregs()
            .map_err(|e| os_error("KVM_GET_SREGS", e))?;
        Ok(convert::sregs_from_kvm(&s))
    }

    fn set_special_regs(&mut self, sregs: &SpecialRegs) -> hypervisor::Result<()> {
        // Read-modify-write keeps KVM's pending-interrupt bitmap.
        let mut k = self
            .fd
            .get_sregs()
            .map_err(|e| os_error("KVM_GET_SREGS", e))?;
        convert::sregs_into_kvm(sregs, &mut k);
        self.fd
            .set_sregs(&k)
            .map_err(|e| os_error("KVM_SET_SREGS", e))
    }

    fn fpu(&mut self) -> hypervisor::Result<FpuState> {
        let f = self.fd.get_fpu().map_err(|e| os_error("KVM_GET_FPU", e))?;
        Ok(convert::fpu_from_kvm(&f))
    }

    fn set_fpu(&mut self, fpu: &FpuState) -> hypervisor::Result<()> {
        self.fd
            .set_fpu(&convert::fpu_to_kvm(fpu))
            .map_err(|e| os_error("KVM_SET_FPU", e))
    }

    fn xsave(&mut self) -> hypervisor::Result<XsaveState> {
        crate::xsave::get(&self.fd)
    }

    fn set_xsave(&mut self, state: &XsaveState) -> hypervisor::Result<()> {
        crate::xsave::set(&self.fd, state)
    }

    fn read_virtual(&mut self, gva: u64, buf: &mut [u8]) -> hypervisor::Result<()> {
        let memory = self.memory.as_ref().ok_or(Error::MemoryNotSet)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = gva.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - at % PAGE_SIZE) as usize;
            let n = in_page.min(buf.len() - done);
            let tr = self
                .fd
                .translate_gva(at)
                .map_err(|e| os_error("KVM_TRANSLATE", e))?;
            if tr.valid == 0 {
                return Err(Error::Untranslatable(at).into());
            }
            memory
                .read_slice(&mut buf[done..done + n], GuestAddress(tr.physical_address))
                .map_err(|_| Error::NotInMemory(tr.physical_address))?;
            done += n;
        }
        Ok(())
    }

    fn run(&mut self) -> hypervisor::Result<VmExit> {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        // SAFETY: `run_ptr` points at this vCPU's kvm_run mapping, valid as
        // long as `self.fd`; taking a field's address reads nothing.
        let immediate_exit = unsafe { std::ptr::addr_of_mut!((*run_ptr).immediate_exit) };
        let kick = Arc::clone(&self.kick);
        let guard = RunGuard::enter(&kick, immediate_exit);
        loop {
            if guard.should_stop(immediate_exit) {
                return Ok(VmExit::Interrupted);
            }
            let io = &*self.io;
            let step = match self.fd.run() {
                Ok(exit) => match exit {
                    VcpuExit::IoOut(port, data) => {
                        // SAFETY: the exit is KVM_EXIT_IO, so `io` is the
                        // active union member; `size` lives in kvm_run's
                        // header, not in the data area `data` borrows.
                        let size = unsafe {
                            std::ptr::addr_of!((*run_ptr).__bindgen_anon_1.io.size).read_volatile()
                        };
                        Self::port_out(io, port, size.into(), data)
                    }
                    VcpuExit::IoIn(port, data) => {
                        // SAFETY: as for IoOut.
                        let size = unsafe {
                            std::ptr::addr_of!((*run_ptr).__bindgen_anon_1.io.size).read_volatile()
                        };
                        Self::port_in(io, port, size.into(), data)
                    }
                    VcpuExit::MmioRead(addr, data) => {
                        io.mmio_read(addr, data);
                        Step::Continue
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        io.mmio_write(addr, data);
                        Step::Continue
                    }
                    VcpuExit::Hlt => Step::Exit(VmExit::Hlt),
                    VcpuExit::Shutdown => Step::Exit(VmExit::Shutdown),
                    VcpuExit::Intr => Step::Exit(VmExit::Interrupted),
                    VcpuExit::SystemEvent(kind, data) => Step::Exit(match kind {
                        KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                        KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
                        _ => {
                            VmExit::Unhandled(format!("system event: type {kind}, data {data:x?}"))
                        }
                    }),
                    VcpuExit::InternalError => Step::InternalError,
                    VcpuExit::FailEntry(reason, cpu) => Step::Exit(VmExit::Unhandled(format!(
                        "fail entry: hardware entry failure reason {reason:#x}, cpu {cpu}"
                    ))),
                    VcpuExit::Unsupported(reason) => {
                        Step::Exit(VmExit::Unhandled(format!("exit reason {reason}")))
                    }
                    other => Step::Exit(VmExit::Unhandled(format!("{other:?}"))),
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Step::Exit(VmExit::Interrupted)
                }
                Err(e) => return Err(os_error("KVM_RUN", e)),
            };
            match step {
                Step::Continue => {}
                Step::Exit(exit) => return Ok(exit),
                Step::InternalError => return self.internal_error(),
            }
        }
    }

    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        Arc::new(KvmKicker::new(Arc::clone(&self.kick)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapic_reg_round_trip() {
        let mut regs = [0 as libc::c_char; 1024];
        set_lapic_reg(&mut regs, APIC_LVT_LINT0, 0x0001_0700);
        assert_eq!(lapic_reg(&regs, APIC_LVT_LINT0), 0x0001_0700);
        assert_eq!(regs[APIC_LVT_LINT0 + 1] as u8, 0x07);
        assert_eq!(lapic_reg(&regs, APIC_LVT_LINT1), 0);
    }

    #[test]
    fn kernel_insn_bytes_needs_the_flag() {
        assert!(kernel_insn_bytes(&[0, 3, 0xcc]).is_empty());
        assert_eq!(kernel_insn_bytes(&[1, 3, 0x0302cc]), vec![0xcc, 0x02, 0x03]);
        // A hostile length is capped at the data there is.
        assert_eq!(kernel_insn_bytes(&[1, 1000, 0x11]).len(), 8);
        assert!(kernel_insn_bytes(&[1]).is_empty());
    }
}
