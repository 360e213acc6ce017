//! The unsafe half of hostop: the stubs' executable memory and the call
//! into a stub, in one place.
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
//!   MXCSR (with every exception masked while the instruction runs, so
//!   it cannot trap), leaves MMX state with EMMS and clears the upper
//!   YMM halves, so the ABI's state is as before the call.
//! - Code lives in a [`CodeBuf`] (written through a separate read-write
//!   mapping, never writable and executable at once). An [`Entry`] can
//!   only be made here, records the buffer generation it was written in,
//!   and [`Stubs::run`] refuses an entry of another generation or outside
//!   this buffer, so it never calls into reused or foreign space.

use std::collections::HashMap;

use iced_x86::Instruction;

use super::form::{self, Plan};
use super::stub::{self, Ctx};
use crate::jit::CodeBuf;

/// Room for stubs (a few hundred bytes each at most).
const BUF_SIZE: usize = 1 << 20;
/// Cached forms before the cache starts over.
const MAX_FORMS: usize = 8192;

/// A stub ready to run, with what the engine must copy back.
#[derive(Clone, Copy)]
pub struct Entry {
    addr: usize,
    gen: u64,
    pub plan: Plan,
}

/// One vCPU's stubs, keyed by the renamed instruction; made on first use.
#[derive(Default)]
pub struct Stubs {
    buf: Option<CodeBuf>,
    map: HashMap<Instruction, Option<Entry>>,
    failed: bool,
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
        let wide = std::arch::is_x86_feature_detected!("avx");
        let code = stub::assemble(&insn, plan.regs, wide)?;
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
        if code.len() > buf.room() || self.map.len() >= MAX_FORMS {
            buf.reset();
            self.map.clear();
        }
        let addr = buf.put(&code)?;
        Some(Entry {
            addr,
            gen: buf.gen,
            plan,
        })
    }

    /// Runs `e`'s stub on `ctx`. False (nothing run) if `e` is not a live
    /// stub of this buffer.
    pub fn run(&self, e: &Entry, ctx: &mut Ctx) -> bool {
        let Some(buf) = self.buf.as_ref() else {
            return false;
        };
        let (start, code) = buf.used_code();
        let live = (start as usize..start as usize + code.len()).contains(&e.addr);
        if e.gen != buf.gen || !live {
            return false;
        }
        type StubFn = unsafe extern "sysv64" fn(*mut Ctx);
        // SAFETY: `e.addr` is the start of a stub `make` put in this
        // buffer in its current generation (checked above), so the bytes
        // are an intact stub as described in the module comment: a
        // sysv64 function of one pointer argument that touches only
        // `*ctx` (exclusively borrowed here) and caller-saved state, and
        // restores the host's MXCSR, x87/MMX and YMM state.
        unsafe {
            let f = std::mem::transmute::<usize, StubFn>(e.addr);
            f(ctx);
        }
        true
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
        assert!(s.run(&e, &mut ctx));
        assert_eq!(ctx.ymm[1][0] as u64, (1.0 + f64::EPSILON).to_bits());
        // The upper lane and the YMM half are the instruction's to keep.
        assert_eq!(ctx.ymm[1][0] >> 64, 7);
        assert_eq!(ctx.ymm[1][1], 5);
        assert_eq!(ctx.mxcsr_out & 0x3f, 0x20);
        ctx.mxcsr = 0x1f80;
        ctx.ymm[1][0] = u128::from(1f64.to_bits());
        assert!(s.run(&e, &mut ctx));
        assert_eq!(ctx.ymm[1][0] as u64, 1f64.to_bits());
    }

    #[test]
    fn memory_and_gpr_operands_go_through_the_context() {
        // cvtsi2sd xmm0, qword [rbx]; then cvttsd2si r12, xmm7
        let (s, e) = stub_for(&[0xf2, 0x48, 0x0f, 0x2a, 0x03]);
        let mut ctx = Ctx::default();
        ctx.mem[..8].copy_from_slice(&(-3i64).to_le_bytes());
        assert!(s.run(&e, &mut ctx));
        assert_eq!(ctx.ymm[0][0] as u64, (-3f64).to_bits());
        let (s, e) = stub_for(&[0xf2, 0x4c, 0x0f, 0x2c, 0xe7]);
        let mut ctx = Ctx::default();
        ctx.ymm[7][0] = u128::from(1e30f64.to_bits());
        assert!(s.run(&e, &mut ctx));
        assert_eq!(ctx.gpr[3], 1 << 63);
        assert_eq!(ctx.mxcsr_out & 1, 1); // invalid
    }
}
