//! The unsafe half of hostop: the stubs' executable memory, the call
//! into a stub, and the SIGFPE handler that catches an unmasked MXCSR
//! exception, in one place.
//!
//! Soundness. A stub is host code, so running one is sound only if the
//! bytes are ours and do nothing the Rust side does not expect:
//! - The bytes come only from [`super::stub::assemble`] around an
//!   instruction that iced-x86's encoder produced from a `Code` on the
//!   allow-list ([`super::allow`]) with operands that are vector
//!   registers, the stub's own general registers (RAX, RCX, RDX, R8-R10)
//!   and `[rdi]`; the guest chooses only among those forms. None of them
//!   branches, touches the stack, or reaches memory other than its one
//!   operand (the excluded mnemonics are exactly those that would).
//! - The stub reads and writes only `*ctx` (at offsets inside [`Ctx`],
//!   computed with `offset_of!`), the 64-byte buffer at its start for
//!   the memory operand (operands are at most 64 bytes: `plan` refuses
//!   larger ones), and caller-saved registers; it restores the host's
//!   MXCSR, leaves MMX state with EMMS and clears the upper YMM halves,
//!   so the ABI's state is as before the call.
//! - Code lives in a [`CodeBuf`] (written through a separate read-write
//!   mapping, never writable and executable at once). An [`Entry`] can
//!   only be made here, records the buffer generation it was written in,
//!   and [`Stubs::run`] refuses an entry of another generation or outside
//!   this buffer, so it never calls into reused or foreign space.
//!
//! Unmasked exceptions. When the guest unmasks an MXCSR exception the
//! stub runs under the guest's masks, so the host CPU itself decides
//! whether the instruction traps and which flags it sets (the SDM's pre-
//! and post-computation rules, underflow with UM unmasked, PE). A trap is
//! #XM, which Linux delivers as SIGFPE to this thread. The handler
//! ([`on_sigfpe`]) acts only when the faulting RIP is the guarded stub
//! instruction this thread is running ([`GUARD`], set just around the
//! call): it records the MXCSR of the signal frame (the flags the trap
//! set), masks every exception in that frame and resumes at the stub's
//! trap path, which restores the host MXCSR and returns without storing
//! anything. Any other SIGFPE goes to the disposition there was before
//! ours: its handler is called, or the default comes back and the
//! instruction faults again under it. For our own traps the handler only
//! reads and writes the signal frame and a const-initialised thread-local
//! `Cell` (no allocation, no locks); SIGFPE is unblocked for the guarded
//! call.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use iced_x86::Instruction;

use super::form::{self, Plan};
use super::stub::{self, Ctx};
use crate::jit::CodeBuf;

/// Room for stubs (a few hundred bytes each at most).
const BUF_SIZE: usize = 1 << 20;
/// Cached forms before the cache starts over.
const MAX_FORMS: usize = 8192;
/// MXCSR with every exception masked.
const ALL_MASKED: u32 = 0x1f80;

/// A stub ready to run, with what the engine must copy back.
#[derive(Clone, Copy)]
pub struct Entry {
    addr: usize,
    gen: u64,
    insn: (usize, usize),
    recover: usize,
    pub plan: Plan,
}

/// How a stub run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// The instruction completed; the context holds its results.
    Done,
    /// It raised an unmasked exception: `mxcsr_out` holds the MXCSR the
    /// CPU left, nothing else was stored.
    Trapped,
    /// Nothing ran (not a live stub, or no trap handler).
    Refused,
}

/// One vCPU's stubs, keyed by the renamed instruction; made on first use.
#[derive(Default)]
pub struct Stubs {
    buf: Option<CodeBuf>,
    map: HashMap<Instruction, Option<Entry>, BuildHasherDefault<FastHash>>,
    failed: bool,
}

/// A multiply-rotate hash for the stub map: SipHash over an
/// `Instruction`'s fields cost more than running the stub. A guest that
/// makes its forms collide slows only its own vCPU (the map is bounded).
#[derive(Default)]
struct FastHash(u64);

impl FastHash {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHash {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.add(v.into());
    }
    fn write_u16(&mut self, v: u16) {
        self.add(v.into());
    }
    fn write_u32(&mut self, v: u32) {
        self.add(v.into());
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Stubs {
    /// The stub of renamed instruction `key`, made if needed. None if the
    /// form cannot be planned or encoded, or the host refuses executable
    /// memory.
    pub fn entry(&mut self, key: &Instruction) -> Option<Entry> {
        if let Some(e) = self.map.get(key) {
            return *e;
        }
        let e = self.make(key);
        self.map.insert(*key, e);
        e
    }

    fn make(&mut self, key: &Instruction) -> Option<Entry> {
        let plan = form::plan(key)?;
        let insn = form::encode(key)?;
        // Legacy forms leave the upper YMM halves alone: moving XMM only
        // keeps VEX code (and its transition costs) out of their stubs.
        let wide = key.encoding() == iced_x86::EncodingKind::VEX;
        let stub = stub::assemble(&insn, plan.regs, wide)?;
        if self.buf.is_none() && !self.failed {
            match CodeBuf::new(BUF_SIZE) {
                Ok(b) => self.buf = Some(b),
                Err(e) => {
                    log::warn!("hostop: no executable memory: {e}");
                    self.failed = true;
                }
            }
        }
        let buf = self.buf.as_mut()?;
        if stub.code.len() > buf.room() || self.map.len() >= MAX_FORMS {
            buf.reset();
            self.map.clear();
        }
        let addr = buf.put(&stub.code)?;
        Some(Entry {
            addr,
            gen: buf.gen,
            insn: (addr + stub.insn.0, addr + stub.insn.1),
            recover: addr + stub.recover,
            plan,
        })
    }

    /// Runs `e`'s stub on `ctx` under `ctx.mxcsr`.
    pub fn run(&self, e: &Entry, ctx: &mut Ctx) -> Ran {
        let Some(buf) = self.buf.as_ref() else {
            return Ran::Refused;
        };
        let (start, code) = buf.used_code();
        let live = (start as usize..start as usize + code.len()).contains(&e.addr);
        if e.gen != buf.gen || !live {
            return Ran::Refused;
        }
        if ctx.mxcsr & ALL_MASKED == ALL_MASKED {
            call(e.addr, ctx);
            return Ran::Done;
        }
        if !trap_ready() {
            return Ran::Refused;
        }
        GUARD.set(Guard {
            insn: e.insn,
            recover: e.recover,
            mxcsr: None,
        });
        call(e.addr, ctx);
        let g = GUARD.replace(Guard::IDLE);
        match g.mxcsr {
            Some(m) => {
                ctx.mxcsr_out = m;
                Ran::Trapped
            }
            None => Ran::Done,
        }
    }
}

/// Calls the stub at `addr`, which [`Stubs::run`] found live.
fn call(addr: usize, ctx: &mut Ctx) {
    type StubFn = unsafe extern "sysv64" fn(*mut Ctx);
    // SAFETY: `addr` is the start of a stub `make` put in the buffer in
    // its current generation (checked by the caller), so the bytes are an
    // intact stub as described in the module comment: a sysv64 function
    // of one pointer argument that touches only `*ctx` (exclusively
    // borrowed here) and caller-saved state, and restores the host's
    // MXCSR, x87/MMX and YMM state on both of its ways out. With an
    // exception unmasked it may trap only at its instruction, which the
    // caller guarded, and the handler resumes it on its trap path.
    unsafe {
        let f = std::mem::transmute::<usize, StubFn>(addr);
        f(ctx);
    }
}

/// The stub instruction this thread is running under unmasked
/// exceptions, where to resume it, and the MXCSR its trap left.
#[derive(Clone, Copy)]
struct Guard {
    insn: (usize, usize),
    recover: usize,
    mxcsr: Option<u32>,
}

impl Guard {
    const IDLE: Guard = Guard {
        insn: (0, 0),
        recover: 0,
        mxcsr: None,
    };
}

thread_local! {
    static GUARD: Cell<Guard> = const { Cell::new(Guard::IDLE) };
}

/// The SIGFPE disposition before ours.
static PREVIOUS: OnceLock<Option<libc::sigaction>> = OnceLock::new();

/// Installs the handler once and unblocks SIGFPE in this thread.
fn trap_ready() -> bool {
    let prev = PREVIOUS.get_or_init(|| {
        // SAFETY: plain sigaction calls with valid pointers; the handler
        // is an `extern "C"` function of the SA_SIGINFO shape.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigfpe as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut new.sa_mask);
            (libc::sigaction(libc::SIGFPE, &new, &mut old) == 0).then_some(old)
        }
    });
    if prev.is_none() {
        return false;
    }
    // SAFETY: a valid signal set built here; only this thread's mask
    // changes, and only to let SIGFPE through.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGFPE);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) == 0
    }
}

/// SIGFPE: resumes a guarded stub at its trap path, or hands the signal
/// to the previous disposition.
extern "C" fn on_sigfpe(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    let uc = uctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext for an SA_SIGINFO
    // handler; only its RIP and the saved MXCSR are read and written.
    unsafe {
        let mc = &mut (*uc).uc_mcontext;
        let rip = mc.gregs[libc::REG_RIP as usize] as usize;
        let g = GUARD.get();
        let ours = (g.insn.0..g.insn.1).contains(&rip) && !mc.fpregs.is_null();
        if ours {
            let fp = &mut *mc.fpregs;
            GUARD.set(Guard {
                mxcsr: Some(fp.mxcsr),
                ..g
            });
            fp.mxcsr = ALL_MASKED;
            mc.gregs[libc::REG_RIP as usize] = g.recover as i64;
        } else if let Some(Some(prev)) = PREVIOUS.get() {
            chain(prev, sig, info, uctx);
        }
    }
}

/// A SIGFPE that is not ours: the previous handler gets it as if it had
/// been called by the kernel; with the default (or ignored) disposition
/// that disposition comes back and the faulting instruction, run again,
/// meets it.
///
/// # Safety
/// Called only from the signal handler with the kernel's arguments;
/// `prev` is the disposition `sigaction` reported before ours.
unsafe fn chain(
    prev: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    uctx: *mut libc::c_void,
) {
    type Info = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
    type Plain = extern "C" fn(libc::c_int);
    let h = prev.sa_sigaction;
    // SAFETY: SIG_DFL/SIG_IGN are restored, not called; any other value
    // is a handler function installed with these flags, called with the
    // arguments the kernel gave ours.
    unsafe {
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            libc::sigaction(libc::SIGFPE, prev, std::ptr::null_mut());
        } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
            std::mem::transmute::<usize, Info>(h)(sig, info, uctx);
        } else {
            std::mem::transmute::<usize, Plain>(h)(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn stub_for(bytes: &[u8]) -> (Stubs, Entry) {
        let ins = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode();
        let form = form::remap(&ins).expect("allowed form");
        let mut s = Stubs::default();
        let e = s.entry(&form.key).expect("stub");
        (s, e)
    }

    #[test]
    fn addsd_rounds_as_mxcsr_says_and_flags_inexact() {
        // addsd xmm1, xmm2
        let (s, e) = stub_for(&[0xf2, 0x0f, 0x58, 0xca]);
        let mut ctx = Ctx::default();
        ctx.ymm[1] = [u128::from(1f64.to_bits()) | (7 << 64), 5];
        ctx.ymm[2][0] = u128::from((f64::EPSILON / 4.0).to_bits());
        ctx.mxcsr = 0x1f80 | (2 << 13); // round up
        assert_eq!(s.run(&e, &mut ctx), Ran::Done);
        assert_eq!(ctx.ymm[1][0] as u64, (1.0 + f64::EPSILON).to_bits());
        // The upper lane and the YMM half are the instruction's to keep.
        assert_eq!(ctx.ymm[1][0] >> 64, 7);
        assert_eq!(ctx.ymm[1][1], 5);
        assert_eq!(ctx.mxcsr_out & 0x3f, 0x20);
        ctx.mxcsr = 0x1f80;
        ctx.ymm[1][0] = u128::from(1f64.to_bits());
        assert_eq!(s.run(&e, &mut ctx), Ran::Done);
        assert_eq!(ctx.ymm[1][0] as u64, 1f64.to_bits());
    }

    #[test]
    fn memory_and_gpr_operands_go_through_the_context() {
        // cvtsi2sd xmm0, qword [rbx]; then cvttsd2si r12, xmm7
        let (s, e) = stub_for(&[0xf2, 0x48, 0x0f, 0x2a, 0x03]);
        let mut ctx = Ctx::default();
        ctx.mem[..8].copy_from_slice(&(-3i64).to_le_bytes());
        assert_eq!(s.run(&e, &mut ctx), Ran::Done);
        assert_eq!(ctx.ymm[0][0] as u64, (-3f64).to_bits());
        let (s, e) = stub_for(&[0xf2, 0x4c, 0x0f, 0x2c, 0xe7]);
        let mut ctx = Ctx::default();
        ctx.ymm[7][0] = u128::from(1e30f64.to_bits());
        assert_eq!(s.run(&e, &mut ctx), Ran::Done);
        assert_eq!(ctx.gpr[3], 1 << 63);
        assert_eq!(ctx.mxcsr_out & 1, 1); // invalid
    }

    #[test]
    fn an_unmasked_exception_traps_and_leaves_the_destination() {
        // divsd xmm1, xmm2 with ZM unmasked: 1 / 0.
        let (s, e) = stub_for(&[0xf2, 0x0f, 0x5e, 0xca]);
        let mut ctx = Ctx::default();
        ctx.ymm[1][0] = u128::from(1f64.to_bits());
        ctx.mxcsr = 0x1f80 & !(4 << 7);
        assert_eq!(s.run(&e, &mut ctx), Ran::Trapped);
        assert_eq!(ctx.mxcsr_out & 0x3f, 4);
        assert_eq!(ctx.ymm[1][0] as u64, 1f64.to_bits());
        // The host's MXCSR is back: a masked run completes.
        ctx.mxcsr = 0x1f80;
        assert_eq!(s.run(&e, &mut ctx), Ran::Done);
        assert_eq!(ctx.ymm[1][0] as u64, f64::INFINITY.to_bits());
        // Exceptions that do not occur do not trap.
        ctx.mxcsr = 0;
        ctx.ymm[2][0] = u128::from(2f64.to_bits());
        ctx.ymm[1][0] = u128::from(1f64.to_bits());
        assert_eq!(s.run(&e, &mut ctx), Ran::Done);
        assert_eq!(ctx.ymm[1][0] as u64, 0.5f64.to_bits());
    }
}
