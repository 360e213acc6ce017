//! The guest's flags in the host's RFLAGS: what they hold at a point of a
//! translation ([`HostFlags`]), guest conditions from them or through a
//! call ([`cond_to_ecx`], [`call_cond`], [`jcc_host`]), the host's flags
//! turned into the guest's eager flags or CF ([`host_szp`],
//! [`emit_eager`], [`host_cf_to_bits`], [`pin_guest_cf`]), and the small
//! flag helpers translated code calls ([`cond`], [`pin_cf`],
//! [`eager_flags`]).

use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};

use super::layout::Layout;
use super::{call, mem, Asm, Label};
use crate::core::Core;
use crate::fast::Alu;
use crate::flags::FlagOp;

/// The guest condition `cc` (0-15, x86 order) of the lazy flags, for
/// translated conditional jumps whose flags are not live in the host's.
///
/// # Safety
/// Called only by translated code with the core it runs on (valid, and
/// not written by anything while this reads it).
unsafe extern "sysv64" fn cond(core: *const Core, cc: u32) -> u32 {
    // SAFETY: per the contract, `core` is the live core of `run`.
    let core = unsafe { &*core };
    u32::from(core.cpu.flags.cond(cc as u8))
}

/// What the host's RFLAGS hold at a point of a translation, for the
/// conditions (Jcc, SETcc, CMOVcc) and carries (ADC, SBB, INC/DEC) that
/// read the guest's.
#[derive(Clone, Copy)]
pub(super) struct HostFlags {
    /// They are the guest's arithmetic flags (all but CF after INC/DEC,
    /// `incdec`).
    live: bool,
    incdec: bool,
    /// The guest's flags were last set by native ALU operation `(op,
    /// size)`, whose operands the lazy record holds (both the native form
    /// and its interpreter slow path record them): redoing it on them
    /// gives the host the guest's flags again.
    redo: Option<(Alu, u8)>,
}

impl HostFlags {
    pub(super) const UNKNOWN: HostFlags = HostFlags {
        live: false,
        incdec: false,
        redo: None,
    };

    /// After INC/DEC: the guest's flags but CF.
    pub(super) const INCDEC: HostFlags = HostFlags {
        live: true,
        incdec: true,
        redo: None,
    };

    /// Makes the host's flags the guest's for condition `cc` when that is
    /// possible without calling out: true when they are.
    pub(super) fn make_live(&mut self, a: &mut Asm, l: &Layout, cc: u8) -> bool {
        if self.live && !(reads_cf(cc) && self.incdec) {
            return true;
        }
        let Some((op, size)) = self.redo else {
            return false;
        };
        mem::redo_alu(a, l, op, size);
        self.live = true;
        self.incdec = false;
        true
    }

    /// After an instruction that leaves the guest's flags alone but whose
    /// emitted code may change the host's.
    pub(super) fn clobbered(&mut self) {
        self.live = false;
    }

    /// After native ALU operation `op` at `size` bits.
    pub(super) fn alu(op: Alu, size: u8) -> HostFlags {
        HostFlags {
            live: true,
            incdec: false,
            redo: Some((op, size)),
        }
    }
}

/// ECX = 1 when guest condition `cc` holds, else 0: from the host's
/// flags when they can be made live, else through [`cond`].
pub(super) fn cond_to_ecx(a: &mut Asm, l: &Layout, cc: u8, fl: &mut HostFlags) {
    if fl.make_live(a, l, cc) {
        match cc & 15 {
            0 => dynasm!(a ; seto cl),
            1 => dynasm!(a ; setno cl),
            2 => dynasm!(a ; setb cl),
            3 => dynasm!(a ; setae cl),
            4 => dynasm!(a ; sete cl),
            5 => dynasm!(a ; setne cl),
            6 => dynasm!(a ; setbe cl),
            7 => dynasm!(a ; seta cl),
            8 => dynasm!(a ; sets cl),
            9 => dynasm!(a ; setns cl),
            10 => dynasm!(a ; setp cl),
            11 => dynasm!(a ; setnp cl),
            12 => dynasm!(a ; setl cl),
            13 => dynasm!(a ; setge cl),
            14 => dynasm!(a ; setle cl),
            _ => dynasm!(a ; setg cl),
        }
        dynasm!(a ; movzx ecx, cl);
    } else {
        call_cond(a, cc, fl);
        dynasm!(a ; mov ecx, eax);
    }
}

/// EAX = [`cond`] of guest condition `cc`. The call changes the host's
/// flags, so `fl` stops saying they are the guest's.
pub(super) fn call_cond(a: &mut Asm, cc: u8, fl: &mut HostFlags) {
    dynasm!(a
        ; mov rdi, rbx
        ; mov esi, i32::from(cc)
    );
    call(a, cond as *const () as u64);
    fl.clobbered();
}

/// Stores EDX (arithmetic flags in RFLAGS positions) as the guest's
/// flags, as `Flags::set_arith` does.
pub(super) fn emit_eager(a: &mut Asm, l: &Layout) {
    dynasm!(a
        ; mov rcx, QWORD [rbx + l.fl_bits as i32]
        ; and rcx, !(crate::flags::ARITH as i32)
        ; or rcx, rdx
        ; mov QWORD [rbx + l.fl_bits as i32], rcx
        ; mov BYTE [rbx + l.fl_op as i32], FlagOp::None as i8
    );
}

/// EDX = SF, ZF, PF and CF of the host's flags (`keep_cf`) or SF, ZF, PF.
pub(super) fn host_szp(a: &mut Asm, keep_cf: bool) {
    let m = crate::flags::SF | crate::flags::ZF | crate::flags::PF;
    let m = if keep_cf { m | crate::flags::CF } else { m };
    dynasm!(a
        ; lahf
        ; movzx edx, ah
        ; and edx, m as i32
    );
}

/// Pins the guest CF into the flags' bits, as INC/DEC do first.
///
/// # Safety
/// Called only by translated code with the core it runs on (valid, and
/// not otherwise borrowed while this runs).
unsafe extern "sysv64" fn pin_cf(core: *mut Core) {
    // SAFETY: per the contract, `core` is the live core of `run`.
    let core = unsafe { &mut *core };
    core.cpu.flags.pin_cf();
}

/// Makes the guest's arithmetic flags eager (bits, no lazy record), as
/// rotates need before they change CF and OF alone.
///
/// # Safety
/// Called only by translated code with the core it runs on (valid, and
/// not otherwise borrowed while this runs).
pub(super) unsafe extern "sysv64" fn eager_flags(core: *mut Core) {
    // SAFETY: per the contract, `core` is the live core of `run`.
    let core = unsafe { &mut *core };
    let f = core.cpu.flags.get();
    core.cpu.flags.set_arith(f);
}

/// Whether condition `cc` reads CF (B, AE, BE, A), which INC/DEC leave
/// in the host's flags as something else.
fn reads_cf(cc: u8) -> bool {
    matches!(cc >> 1, 1 | 3)
}

/// Jumps to `to` when host condition `cc` (x86 order) holds.
pub(super) fn jcc_host(a: &mut Asm, cc: u8, to: Label) {
    match cc & 15 {
        0 => dynasm!(a ; jo =>to),
        1 => dynasm!(a ; jno =>to),
        2 => dynasm!(a ; jb =>to),
        3 => dynasm!(a ; jae =>to),
        4 => dynasm!(a ; je =>to),
        5 => dynasm!(a ; jne =>to),
        6 => dynasm!(a ; jbe =>to),
        7 => dynasm!(a ; ja =>to),
        8 => dynasm!(a ; js =>to),
        9 => dynasm!(a ; jns =>to),
        10 => dynasm!(a ; jp =>to),
        11 => dynasm!(a ; jnp =>to),
        12 => dynasm!(a ; jl =>to),
        13 => dynasm!(a ; jge =>to),
        14 => dynasm!(a ; jle =>to),
        _ => dynasm!(a ; jg =>to),
    }
}

/// The host's CF as the guest's CF in the flags' bits (the other bits
/// kept). Uses RDX.
pub(super) fn host_cf_to_bits(a: &mut Asm, l: &Layout) {
    let cf = crate::flags::CF as i32;
    dynasm!(a
        ; setc dl
        ; movzx edx, dl
        ; and QWORD [rbx + l.fl_bits as i32], !cf
        ; or QWORD [rbx + l.fl_bits as i32], rdx
    );
}

/// Keeps the guest's CF in the flags' bits, as INC/DEC do first: from the
/// host's CF when it is the guest's, else through [`pin_cf`].
pub(super) fn pin_guest_cf(a: &mut Asm, l: &Layout, fl: &HostFlags) {
    if fl.live && !fl.incdec {
        host_cf_to_bits(a, l);
    } else {
        dynasm!(a ; mov rdi, rbx);
        call(a, pin_cf as *const () as u64);
    }
}
