//! Why an advertised form is not drawn: one reason per form, computed
//! from its iced-x86 code, so `UNCOVERED.md` names the reason of every
//! form it lists and the README explains each reason once. A form with
//! no reason here and no place in the forms is a gap the
//! `covered_list_is_current` test reports.

use iced_x86::{Code, Mnemonic as M};

/// A reason an advertised form is left out of the generator.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Reason {
    /// Privileged: at CPL3 it raises #GP(0) before anything else, and the
    /// snippets run at CPL3 (the CPL0 tests run it).
    Cpl0,
    /// Its result is the engine's CPU model or clock, not the host's, by
    /// design.
    EngineModel,
    /// A far transfer, a segment or descriptor-table load or store, or a
    /// read of a selector: under this host's KVM (PVM) CPL3 code runs
    /// with the host's selectors and descriptor tables, not the guest's.
    HostSegments,
    /// INT3, INT n, INT1: this host's KVM delivers them without the
    /// gate's DPL check (or answers #UD), not as the CPU does.
    SoftwareInterrupt,
    /// Port I/O: the engine checks IOPL only, not the TSS I/O bitmap.
    PortIo,
    /// The FWAIT-prefixed x87 form (two instructions: FWAIT, then the
    /// FNxxx form, which is drawn).
    Fwait,
    /// LDMXCSR/VLDMXCSR of random data: this host's KVM turns the CPU's
    /// #GP into #UD; the prologue loads valid values with LDMXCSR.
    Mxcsr,
    /// The XSAVE family and XGETBV: the guest's CPL3 code runs with the
    /// host's XCR0; `tests/xsave.rs` compares them with the host CPU.
    HostXcr0,
}

impl Reason {
    /// The heading `UNCOVERED.md` gives the reason.
    pub fn title(self) -> &'static str {
        match self {
            Reason::Cpl0 => "CPL0 only (snippets run at CPL3)",
            Reason::EngineModel => "the engine's CPU model or clock (CPUID, time stamps)",
            Reason::HostSegments => {
                "far transfers, segment and descriptor loads and stores (PVM runs CPL3 on the host's)"
            }
            Reason::SoftwareInterrupt => "software interrupts (this host's KVM skips the DPL check)",
            Reason::PortIo => "port I/O (the engine checks IOPL, not the TSS I/O bitmap)",
            Reason::Fwait => "FWAIT-prefixed x87 forms (their FNxxx forms are drawn)",
            Reason::Mxcsr => "LDMXCSR of random data (this host's KVM answers #GP with #UD)",
            Reason::HostXcr0 => "XSAVE family and XGETBV (host XCR0 under PVM; tests/xsave.rs)",
        }
    }
}

/// The reason `code` is not drawn, if it has one.
pub fn reason(code: Code) -> Option<Reason> {
    if super::operands::is_xsave_family(code.mnemonic()) || code.mnemonic() == M::Xgetbv {
        return Some(Reason::HostXcr0);
    }
    if code.op_code().must_be_cpl0() {
        return Some(Reason::Cpl0);
    }
    Some(match code.mnemonic() {
        M::Cpuid | M::Rdtsc | M::Rdtscp => Reason::EngineModel,
        M::Retf
        | M::Iret
        | M::Iretd
        | M::Iretq
        | M::Syscall
        | M::Lar
        | M::Lsl
        | M::Verr
        | M::Verw
        | M::Lfs
        | M::Lgs
        | M::Lss
        | M::Sldt
        | M::Str
        | M::Smsw
        | M::Sgdt
        | M::Sidt => Reason::HostSegments,
        M::Int | M::Int3 | M::Int1 => Reason::SoftwareInterrupt,
        M::In | M::Out | M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => {
            Reason::PortIo
        }
        M::Fclex | M::Fdisi | M::Feni | M::Finit | M::Fsave | M::Fstcw | M::Fstenv | M::Fsetpm => {
            Reason::Fwait
        }
        M::Fstsw if !is_fn(code) => Reason::Fwait,
        M::Ldmxcsr | M::Vldmxcsr => Reason::Mxcsr,
        _ => return segment_form(code),
    })
}

/// FNSTSW's codes (drawn), as against FSTSW's (FWAIT first).
fn is_fn(code: Code) -> bool {
    format!("{code:?}").starts_with("Fnstsw")
}

/// The forms of otherwise drawn mnemonics that name a segment register
/// or a far pointer: MOV to and from a segment register, PUSH/POP FS/GS,
/// far JMP/CALL through memory.
fn segment_form(code: Code) -> Option<Reason> {
    let name = format!("{code:?}");
    let seg = name.contains("Sreg")
        || name.ends_with("_FS")
        || name.ends_with("_GS")
        || name.contains("_m1616")
        || name.contains("_m1632")
        || name.contains("_m1664");
    seg.then_some(Reason::HostSegments)
}
