//! The binary translator (stage 1): turns a hot cached [`Block`] into host
//! x86-64 code and runs it.
//!
//! The translation of a block is one function, `extern "sysv64"
//! fn(*mut JitCtx) -> u64`, emitted with dynasm-rs into a
//! [`CodeBuf`]. Register forms on 32/64-bit operands (MOV, LEA, the ALU
//! group but ADC/SBB, INC/DEC, IMUL, shifts by an immediate, CMOVcc,
//! MOVZX/MOVSX, SETcc), direct JMP and Jcc, NOP, and MOV/ALU reads of
//! memory through an inline TLB lookup are emitted natively: guest
//! registers are loaded from and stored to the `Cpu` register file, and
//! flag-setting instructions record in the lazy-flags struct exactly what
//! the interpreter's handlers would, so the interpreter and the translated
//! code share one flags representation. Every other instruction (and a
//! TLB miss) becomes a call to [`tramp`], which runs the instruction's
//! interpreter handler.
//!
//! The translated code returns `(link << 36) | (status << 32) | (slot <<
//! 8) | index`, where `slot` is the cache slot of the block it stopped in
//! (runs follow links from block to block) and `link` (plus one) the link
//! cell of the static exit it left by: status 0 when it ran off the
//! block's end (index = the block's length), 1 when instruction `index`
//! completed but the block must stop after it (a device or code write,
//! a trampolined branch), 2 when instruction `index` stopped with the
//! `Stop` left in the context (no state changed by it), 3 when it left by
//! a static or indirect exit with RIP set after `index` instructions. The
//! run loop ([`run`]) turns that into what the interpreter's block loop
//! would have done, so both paths retire the same instructions and leave
//! the same state. Links, the jump table and their keys are described at
//! `Link`, `JumpTable` and `SoftVcpu`'s chain keys.
//!
//! A translation lives beside its block (`Block::jit`) and dies with it:
//! the block cache's validation stays the only judge of whether cached
//! code is current. When the code buffer is full it starts over and every
//! translation made before is dropped (by generation).

// dynasm!'s expansion converts a dynamic register number with `.into()`
// even when it already has the register type.
#![allow(clippy::useless_conversion)]

mod buf;
mod mem;

use std::cell::Cell;

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmError, DynasmLabelApi, VecAssembler};
use iced_x86::Instruction;

pub use buf::{BufError, CodeBuf};

use crate::cache::Block;
use crate::core::Core;
use crate::exception::Stop;
use crate::fast::{Alu, Fast, Kind, Loc};
use crate::flags::{FlagOp, Flags};
use crate::vm::Signal;

/// The assembler translations are emitted with: dynasm-rs encodes each
/// instruction form at compile time, so emitting a block costs about a
/// microsecond (iced-x86's `CodeAssembler` took about 100 µs, which kept
/// all but the hottest blocks with the interpreter).
type Asm = VecAssembler<X64Relocation>;
type Label = DynamicLabel;

/// Host register numbers for the helpers that take one.
const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;
const RSI: u8 = 6;

/// Host register `r` = `v`, in the shortest encoding.
fn mov_imm(a: &mut Asm, r: u8, v: u64) {
    if let Ok(v) = u32::try_from(v) {
        dynasm!(a ; mov Rd(r), v as i32);
    } else if let Ok(v) = i32::try_from(v as i64) {
        dynasm!(a ; mov Rq(r), v);
    } else {
        dynasm!(a ; mov Rq(r), QWORD v as i64);
    }
}

/// `Block::jit` entry of a block that cannot be translated.
pub const FAILED: usize = 1;

/// The code buffer's size.
const BUF_SIZE: usize = 64 << 20;

/// What translated code gets: the vCPU core and room for a stop.
#[repr(C)]
pub struct JitCtx {
    core: *mut Core,
    /// The core's TLB entries ([`crate::mmu::Tlb::entries`]).
    tlb: *const u8,
    /// The RAM's per-page code markers and their count
    /// ([`crate::phys::Ram::code_map`]).
    code_map: *const u8,
    code_pages: usize,
    stop: Option<Stop>,
    /// The chain keys the run loop computed for this run: a link is
    /// followed only when it was made under one of them.
    key: u64,
    key_global: u64,
    /// Links still allowed in this run.
    budget: u32,
    /// The run loop may have seen an interrupt it could not deliver yet
    /// (`SoftVcpu::maybe_irq`): STI then goes through its handler.
    irq_maybe: bool,
    /// The vCPU's two signal flags (`Signal::attention`, then
    /// `Signal::kicked` in the next byte): a link is not followed while
    /// either is set.
    signal: *const u16,
    /// The jump table ([`JumpTable`]).
    jumps: *const JumpEntry,
    /// Trampoline calls by instruction code (statistics; null when not kept).
    tramps: *const Cell<u64>,
}

/// One entry of the jump table: a guest RIP, the chain key it was
/// entered under and that block's chain entry.
#[repr(C)]
struct JumpEntry {
    rip: Cell<u64>,
    key: Cell<u64>,
    target: Cell<u64>,
    _pad: u64,
}

/// Jump-table entries (a power of two; 32 bytes each).
const JUMPS: usize = 16384;

/// Where indirect transfers (RET, JMP/CALL through a register) look for
/// their target's translation without going back to the run loop: a
/// direct-mapped table from guest RIP to chain entry, filled in by the run
/// loop with every block it enters, valid under the key it was entered
/// with.
struct JumpTable {
    e: Box<[JumpEntry]>,
}

impl JumpTable {
    fn new() -> JumpTable {
        JumpTable {
            e: (0..JUMPS)
                .map(|_| JumpEntry {
                    rip: Cell::new(0),
                    key: Cell::new(u64::MAX),
                    target: Cell::new(0),
                    _pad: 0,
                })
                .collect(),
        }
    }

    fn index(rip: u64) -> usize {
        ((rip ^ (rip >> 12)) as usize) & (JUMPS - 1)
    }

    fn set(&self, rip: u64, key: u64, target: usize) {
        let e = &self.e[Self::index(rip)];
        e.rip.set(rip);
        e.key.set(key);
        e.target.set(target as u64);
    }

    fn clear(&self) {
        self.e.iter().for_each(|e| e.key.set(u64::MAX));
    }
}

/// Where a static exit of a translated block goes next, filled in by the
/// run loop ([`Jit::link`]) once it has found the successor translated:
/// the successor's chain entry and the chain key it was found under
/// (`u64::MAX`: none yet).
#[repr(C)]
struct Link {
    key: Cell<u64>,
    target: Cell<u64>,
}

/// The links of a code buffer's translations, handed out by a bump
/// allocator that starts over with the buffer. The cells are reserved
/// up front and never move (translated code holds their addresses), but
/// only those handed out are touched.
struct LinkPool {
    cells: std::cell::RefCell<Vec<Link>>,
    /// Where the cells are (checked in debug builds).
    base: usize,
}

/// Links per code buffer (16 bytes each; untouched ones cost no memory).
const LINKS: usize = 1 << 20;

impl LinkPool {
    fn new() -> LinkPool {
        let cells = Vec::with_capacity(LINKS);
        let base = cells.as_ptr() as usize;
        LinkPool {
            cells: std::cell::RefCell::new(cells),
            base,
        }
    }

    /// A fresh link: its index and address.
    fn alloc(&self) -> Option<(u32, u64)> {
        let mut cells = self.cells.borrow_mut();
        let i = cells.len();
        if i == LINKS {
            return None;
        }
        // Within the reserved capacity: the vector does not move.
        cells.push(Link {
            key: Cell::new(u64::MAX),
            target: Cell::new(0),
        });
        debug_assert_eq!(cells.as_ptr() as usize, self.base);
        Some((i as u32, &cells[i] as *const Link as u64))
    }

    /// Fills in link `i` (when it is still handed out).
    fn set(&self, i: usize, target: u64, key: u64) {
        if let Some(c) = self.cells.borrow().get(i) {
            c.target.set(target);
            c.key.set(key);
        }
    }

    fn reset(&self) {
        self.cells.borrow_mut().clear();
    }
}

/// Why a block was not translated.
enum Refused {
    /// The code buffer is full (the links' pool being full only costs
    /// links).
    Full,
    /// The assembler refused the code (a translator bug: the block stays
    /// with the interpreter).
    Assembler,
}

/// The chain keys of a run (see `SoftVcpu::chain_keys`): links into
/// blocks on global pages are made under `global`, others under `all`.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub all: u64,
    pub global: u64,
}

/// A translation's two ways in: `entry` from the run loop, `chain` from
/// another translation's link (past the register set-up).
#[derive(Debug, Clone, Copy)]
pub struct Translation {
    pub entry: usize,
    chain: usize,
}

/// A static exit of the last run that may be linked to the block found
/// next: its link and the buffer generation it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct PendingLink {
    link: u32,
    gen: u64,
}

/// A translated block's entry point.
type Entry = unsafe extern "sysv64" fn(*mut JitCtx) -> u64;

/// Runs of a block before it is translated, unless `VESSEL_SOFT_JIT_HOT`
/// says otherwise. Most of a Linux boot is code that runs a few times, and
/// a translation costs about as much as 20-50 interpreted runs (5-10 µs:
/// emission, links, the code buffer's fresh pages). In the Debian boot
/// (0.46e9 instructions; minimum user time of 4 boots each, same session)
/// thresholds of 64 and 256 were best (2.72 s and 2.68 s), 16 and 4
/// slower (2.90 s, 2.97 s), 1024 slowest (3.02 s).
const DEFAULT_HOT: u32 = 64;

/// The translator of one vCPU.
pub struct Jit {
    buf: CodeBuf,
    links: LinkPool,
    jumps: JumpTable,
    /// Runs of a block before it is translated.
    hot: u32,
    /// Blocks translated (statistics).
    pub translated: u64,
    /// Time spent translating them (statistics).
    translate_time: std::time::Duration,
    /// Entries refused because the block is not hot yet or cannot be
    /// translated (not 64-bit code) (statistics).
    cold: u64,
    untranslatable: u64,
    /// Panic when the emitter fails (`VESSEL_SOFT_JIT_STRICT=1`, for the
    /// translator's tests) instead of leaving the block to the
    /// interpreter.
    strict: bool,
    /// Trampoline calls by iced-x86 instruction code, kept with
    /// `VESSEL_SOFT_JIT_STATS` (statistics).
    tramps: Option<Box<[Cell<u64>]>>,
    /// `/tmp/perf-PID.map`, written with `VESSEL_SOFT_PERF_MAP=1` so
    /// translated code can be named by the guest address of its block
    /// (profiling; the code itself goes to `/tmp/vessel-jit-PID-BASE.bin`
    /// when the translator ends).
    perf_map: Option<std::io::BufWriter<std::fs::File>>,
}

impl Jit {
    /// The translator as the environment configures it:
    /// `VESSEL_SOFT_JIT=0` turns it off, `VESSEL_SOFT_JIT_HOT=n` sets how
    /// many runs make a block hot. None when it is off or its code buffer
    /// cannot be mapped.
    pub fn from_env() -> Option<Jit> {
        let on = std::env::var("VESSEL_SOFT_JIT")
            .map(|v| v != "0")
            .unwrap_or(DEFAULT_ON);
        if !on {
            return None;
        }
        let hot = std::env::var("VESSEL_SOFT_JIT_HOT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_HOT);
        match CodeBuf::new(BUF_SIZE) {
            Ok(buf) => Some(Jit {
                buf,
                links: LinkPool::new(),
                jumps: JumpTable::new(),
                hot,
                translated: 0,
                translate_time: std::time::Duration::ZERO,
                cold: 0,
                untranslatable: 0,
                strict: std::env::var_os("VESSEL_SOFT_JIT_STRICT").is_some(),
                perf_map: std::env::var_os("VESSEL_SOFT_PERF_MAP")
                    .and_then(|_| {
                        let path = format!("/tmp/perf-{}.map", std::process::id());
                        std::fs::File::create(&path)
                            .map_err(|e| log::warn!("soft jit: {path}: {e}"))
                            .ok()
                    })
                    .map(std::io::BufWriter::new),
                tramps: std::env::var_os("VESSEL_SOFT_JIT_STATS").map(|_| {
                    (0..2 * iced_x86::Code::values().len())
                        .map(|_| Cell::new(0))
                        .collect()
                }),
            }),
            Err(e) => {
                log::warn!("soft: translator off: {e}");
                None
            }
        }
    }

    /// The translation of `b` (in cache slot `slot`), made now if it has
    /// become hot. Only 64-bit code is translated.
    #[inline]
    pub fn entry(&mut self, core: &Core, b: &Block, slot: usize) -> Option<Translation> {
        let (gen, e, chain) = b.jit.get();
        if gen == self.buf.gen && e != 0 {
            if e == FAILED {
                self.untranslatable += 1;
                return None;
            }
            return Some(Translation { entry: e, chain });
        }
        let h = b.hits.get();
        if h < self.hot {
            b.hits.set(h + 1);
            self.cold += 1;
            return None;
        }
        let t = if b.bitness() != 64 {
            None
        } else {
            match self.translate(core, b, slot) {
                Ok(t) => Some(t),
                Err(Refused::Full) => {
                    self.buf.reset();
                    self.links.reset();
                    self.jumps.clear();
                    self.translate(core, b, slot).ok()
                }
                Err(Refused::Assembler) => None,
            }
        };
        match t {
            Some(t) => b.jit.set((self.buf.gen, t.entry, t.chain)),
            None => b.jit.set((self.buf.gen, FAILED, 0)),
        }
        t
    }

    /// Emits `b` into the buffer.
    fn translate(&mut self, core: &Core, b: &Block, slot: usize) -> Result<Translation, Refused> {
        let started = std::time::Instant::now();
        let emitted = emit(core, b, slot as u32, &self.links, self.buf.next_addr());
        self.translate_time += started.elapsed();
        let (code, chain_off) = emitted.map_err(|e| {
            // An emitter bug: the block stays with the interpreter, and
            // the translator's tests make it fail loudly.
            let codes: Vec<_> = b.instrs.iter().map(|i| i.code()).collect();
            if self.strict {
                panic!(
                    "soft jit: block at {:#x} ({codes:?}) not translated: {e}",
                    b.lin
                );
            }
            log::warn!(
                "soft jit: block at {:#x} ({codes:?}) not translated: {e}",
                b.lin
            );
            Refused::Assembler
        })?;
        let e = self.buf.put(&code).ok_or(Refused::Full)?;
        self.translated += 1;
        if let Some(m) = &mut self.perf_map {
            use std::io::Write;
            let _ = writeln!(m, "{e:x} {:x} guest_{:x}", code.len(), b.lin);
        }
        Ok(Translation {
            entry: e,
            chain: e + chain_off,
        })
    }

    /// Makes `p`'s exit go straight on to `to` while the chain key stays
    /// `key`.
    pub fn link(&self, p: PendingLink, to: Translation, key: u64) {
        if p.gen != self.buf.gen {
            return;
        }
        self.links.set(p.link as usize, to.chain as u64, key);
    }

    /// Notes that the block at `rip` runs as `to` under `key`, for
    /// indirect transfers to find.
    pub fn entered(&self, rip: u64, to: Translation, key: u64) {
        self.jumps.set(rip, key, to.chain);
    }

    /// The pending link of an exit the last run left by.
    pub fn pending(&self, link: Option<u32>) -> Option<PendingLink> {
        link.map(|link| PendingLink {
            link,
            gen: self.buf.gen,
        })
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        if self.perf_map.is_some() {
            // The code itself, for disassembling hot translations.
            let (base, code) = self.buf.used_code();
            let path = format!("/tmp/vessel-jit-{}-{base:x}.bin", std::process::id());
            if let Err(e) = std::fs::write(&path, code) {
                log::warn!("soft jit: {path}: {e}");
            }
        }
        if std::env::var_os("VESSEL_SOFT_JIT_STATS").is_some() {
            eprintln!(
                "soft jit: {} blocks translated in {:?}, code buffer generation {}; \
                 runs left to the interpreter: {} not yet hot, {} untranslatable",
                self.translated, self.translate_time, self.buf.gen, self.cold, self.untranslatable
            );
            if let Some(t) = &self.tramps {
                let codes = iced_x86::Code::values();
                let mut by: Vec<(u64, iced_x86::Code, &str)> = codes
                    .map(|m| (m, ""))
                    .chain(iced_x86::Code::values().map(|m| (m, "lock ")))
                    .zip(t.iter())
                    .map(|((m, lock), c)| (c.get(), m, lock))
                    .filter(|&(c, _, _)| c > 0)
                    .collect();
                by.sort_unstable_by(|a, b| b.cmp(a));
                let total: u64 = by.iter().map(|&(c, _, _)| c).sum();
                eprintln!("soft jit: {total} trampoline calls; most:");
                for (c, m, lock) in by.iter().take(30) {
                    eprintln!("  {lock}{m:?} {c}");
                }
            }
        }
    }
}

/// Whether the translator runs when the environment does not say.
const DEFAULT_ON: bool = true;

/// Byte offsets of what translated code touches inside `Core`.
struct Layout {
    /// The base of each segment's descriptor cache.
    seg_base: [usize; 6],
    /// Each segment register's selector.
    seg_sel: [usize; 6],
    tlb: crate::mmu::TlbLayout,
    gpr: usize,
    rip: usize,
    retired: usize,
    cr4: usize,
    tsc_offset: usize,
    tsc_aux: usize,
    fl_bits: usize,
    fl_op: usize,
    fl_size: usize,
    fl_dst: usize,
    fl_src: usize,
    fl_res: usize,
    fl_cin: usize,
}

impl Layout {
    fn of(core: &Core) -> Layout {
        let base = core as *const Core as usize;
        let gpr = core.cpu.gpr.as_ptr() as usize - base;
        let rip = &core.cpu.rip as *const u64 as usize - base;
        let flags = &core.cpu.flags as *const Flags as usize - base;
        let l = Flags::layout();
        let seg_base = std::array::from_fn(|i| &core.cpu.seg[i].base as *const u64 as usize - base);
        let seg_sel =
            std::array::from_fn(|i| &core.cpu.seg[i].selector as *const u16 as usize - base);
        Layout {
            seg_base,
            seg_sel,
            tlb: crate::mmu::Tlb::layout(),
            gpr,
            rip,
            retired: &core.retired as *const u64 as usize - base,
            cr4: &core.cpu.cr4 as *const u64 as usize - base,
            tsc_offset: &core.cpu.msr.tsc_offset as *const u64 as usize - base,
            tsc_aux: &core.cpu.msr.tsc_aux as *const _ as usize - base,
            fl_bits: flags + l.bits,
            fl_op: flags + l.op,
            fl_size: flags + l.size,
            fl_dst: flags + l.dst,
            fl_src: flags + l.src,
            fl_res: flags + l.res,
            fl_cin: flags + l.cin,
        }
    }

    fn reg(&self, r: u8) -> i32 {
        (self.gpr + 8 * usize::from(r & 15)) as i32
    }
}

/// Runs instruction `f` of a translated block through its interpreter
/// handler: 0 to go on, 1 when the block must stop after it, 2 when it
/// stopped (the `Stop` is left in the context).
///
/// # Safety
/// Called only by translated code, with the context [`run`] passed in
/// (its `core` valid and not otherwise borrowed while the code runs) and
/// pointers to a `Fast` and an `Instruction` of the block being run.
unsafe extern "sysv64" fn tramp(ctx: *mut JitCtx, f: *const Fast, ins: *const Instruction) -> u64 {
    // SAFETY: per this function's contract, `ctx` is the live context of
    // `run`, whose core nothing else borrows while translated code runs,
    // and `f`/`ins` point into the block `run` holds a reference to.
    let (ctx, f, ins) = unsafe { (&mut *ctx, &*f, &*ins) };
    if !ctx.tramps.is_null() {
        let i = ins.code() as usize
            + usize::from(ins.has_lock_prefix()) * iced_x86::Code::values().len();
        // SAFETY: a non-null `tramps` points at the `Jit`'s counters, two
        // per instruction code (`i` is below that), alive for the run
        // (`run` set it from `&Jit`).
        let c = unsafe { &*ctx.tramps.add(i) };
        c.set(c.get() + 1);
    }
    // SAFETY: as above; this is the only reference to the core now.
    let core = unsafe { &mut *ctx.core };
    let epoch = core.tlb.epoch;
    let masked = !core.cpu.flags.has(crate::flags::IF);
    match (f.h)(core, f, ins) {
        // A changed TLB epoch changes the chain key, and an interrupt
        // waiting when they are just allowed must be taken: the run must
        // end.
        Ok(()) => u64::from(
            core.device_written
                || core.code_written
                || (f.sets_rip && core.cpu.rip != f.next)
                || core.tlb.epoch != epoch
                || (masked && core.cpu.flags.has(crate::flags::IF) && core.interrupt_waiting()),
        ),
        Err(s) => {
            ctx.stop = Some(s);
            2
        }
    }
}

/// 32- and 64-bit operands are emitted natively.
fn wide(f: &Fast) -> bool {
    f.size == 32 || f.size == 64
}

fn is_reg(l: Loc) -> bool {
    matches!(l, Loc::Reg(_))
}

fn reg_of(l: Loc) -> u8 {
    match l {
        Loc::Reg(r) => r,
        _ => 0,
    }
}

/// Whether `f` has a native translation.
fn native(f: &Fast) -> bool {
    match f.kind {
        Kind::Nop => true,
        Kind::Mov => is_reg(f.dst) && matches!(f.src, Loc::Reg(_) | Loc::Imm),
        Kind::Lea => wide(f) && is_reg(f.dst),
        Kind::Alu(_) => is_reg(f.dst) && matches!(f.src, Loc::Reg(_) | Loc::Imm),
        Kind::Jmp | Kind::Jcc(_) => f.src == Loc::Imm,
        Kind::Inc | Kind::Dec => wide(f) && is_reg(f.dst),
        Kind::Imul2 => wide(f) && is_reg(f.dst) && is_reg(f.src),
        Kind::Setcc(_) => is_reg(f.dst),
        Kind::Cmovcc(_) => wide(f) && is_reg(f.dst) && is_reg(f.src),
        Kind::Movzx | Kind::Movsx => wide(f) && is_reg(f.dst) && is_reg(f.src),
        Kind::Shl | Kind::Shr | Kind::Sar => {
            wide(f) && is_reg(f.dst) && matches!(f.src, Loc::Imm | Loc::Reg(1))
        }
        _ => false,
    }
}

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

/// The byte offset in `Core` of 8-bit register `r` in iced-x86's
/// byte-register numbering (0-3 AL-BL, 4-7 AH-BH, 8-19 SPL-R15L).
fn byte_reg(l: &Layout, r: u8) -> i32 {
    let r = usize::from(r);
    let (g, hi) = match r {
        0..=3 => (r, 0),
        4..=7 => (r - 4, 1),
        _ => ((r - 4) & 15, 0),
    };
    (l.gpr + 8 * g + hi) as i32
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
    const UNKNOWN: HostFlags = HostFlags {
        live: false,
        incdec: false,
        redo: None,
    };

    /// After INC/DEC: the guest's flags but CF.
    const INCDEC: HostFlags = HostFlags {
        live: true,
        incdec: true,
        redo: None,
    };

    /// Makes the host's flags the guest's for condition `cc` when that is
    /// possible without calling out: true when they are.
    fn make_live(&mut self, a: &mut Asm, l: &Layout, cc: u8) -> bool {
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
    fn clobbered(&mut self) {
        self.live = false;
    }

    /// After native ALU operation `op` at `size` bits.
    fn alu(op: Alu, size: u8) -> HostFlags {
        HostFlags {
            live: true,
            incdec: false,
            redo: Some((op, size)),
        }
    }
}

/// ECX = 1 when guest condition `cc` holds, else 0: from the host's
/// flags when they can be made live, else through [`cond`].
fn cond_to_ecx(a: &mut Asm, l: &Layout, cc: u8, fl: &mut HostFlags) {
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
fn call_cond(a: &mut Asm, cc: u8, fl: &mut HostFlags) {
    dynasm!(a
        ; mov rdi, rbx
        ; mov esi, i32::from(cc)
    );
    call(a, cond as *const () as u64);
    fl.clobbered();
}

/// Calls the host function at `f` (through RAX).
fn call(a: &mut Asm, f: u64) {
    mov_imm(a, RAX, f);
    dynasm!(a ; call rax);
}

/// Stores EDX (arithmetic flags in RFLAGS positions) as the guest's
/// flags, as `Flags::set_arith` does.
fn emit_eager(a: &mut Asm, l: &Layout) {
    dynasm!(a
        ; mov rcx, QWORD [rbx + l.fl_bits as i32]
        ; and rcx, !(crate::flags::ARITH as i32)
        ; or rcx, rdx
        ; mov QWORD [rbx + l.fl_bits as i32], rcx
        ; mov BYTE [rbx + l.fl_op as i32], FlagOp::None as i8
    );
}

/// EDX = SF, ZF, PF and CF of the host's flags (`keep_cf`) or SF, ZF, PF.
fn host_szp(a: &mut Asm, keep_cf: bool) {
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
unsafe extern "sysv64" fn eager_flags(core: *mut Core) {
    // SAFETY: per the contract, `core` is the live core of `run`.
    let core = unsafe { &mut *core };
    let f = core.cpu.flags.get();
    core.cpu.flags.set_arith(f);
}

/// The RFLAGS image PUSHF stores (`exec::flow::pushf`: RF and VM read
/// as clear).
///
/// # Safety
/// Called only by translated code with the core it runs on (valid, and
/// not otherwise borrowed while this runs).
unsafe extern "sysv64" fn pushf_image(core: *const Core) -> u64 {
    // SAFETY: per the contract, `core` is the live core of `run`.
    let core = unsafe { &*core };
    core.cpu.flags.get() & !(crate::flags::RF | crate::flags::VM)
}

/// The rotate of `ins` when it has a native form: ROL/ROR of a 32- or
/// 64-bit register by an immediate. Returns (left, register, size,
/// count).
fn native_rotate(f: &Fast, ins: &Instruction) -> Option<(bool, u8, u8, u32)> {
    use iced_x86::{Mnemonic, OpKind};
    if f.kind != Kind::Generic || ins.op_count() != 2 || ins.op_kind(1) != OpKind::Immediate8 {
        return None;
    }
    let left = match ins.mnemonic() {
        Mnemonic::Rol => true,
        Mnemonic::Ror => false,
        _ => return None,
    };
    if ins.has_lock_prefix() {
        return None;
    }
    let (r, size) = wide_gpr_operand0(ins)?;
    let n = u32::from(ins.immediate8()) & if size == 64 { 63 } else { 31 };
    Some((left, r, size, n))
}

/// The guest register number and size of `ins`'s first operand when it
/// is a 32- or 64-bit general register.
fn wide_gpr_operand0(ins: &Instruction) -> Option<(u8, u8)> {
    if ins.op_kind(0) != iced_x86::OpKind::Register {
        return None;
    }
    let r = ins.op_register(0);
    let size = match r.size() {
        8 => 64u8,
        4 => 32,
        _ => return None,
    };
    r.is_gpr().then(|| (r.full_register().number() as u8, size))
}

/// Emits a native ROL/ROR (see [`native_rotate`]): CF and OF as the
/// interpreter sets them (OF by the count-1 rule for every count), the
/// other flags kept; no flag change for a zero count, and none at all
/// when nothing reads them (`dead`, see [`flags_dead_after`]).
fn emit_rotate(a: &mut Asm, l: &Layout, (left, r, size, n): (bool, u8, u8, u32), dead: bool) {
    if n == 0 {
        mem::get_reg(a, l, RAX, r, size);
        mem::put_reg(a, l, r, size);
        return;
    }
    if !dead {
        // The host's flags may be live, but their AF after a logic
        // operation is not the interpreter's: materialise the guest's
        // through it.
        dynasm!(a ; mov rdi, rbx);
        call(a, eager_flags as *const () as u64);
    }
    mem::get_reg(a, l, RAX, r, size);
    let n8 = n as i8;
    match (left, size) {
        (true, 64) => dynasm!(a ; rol rax, n8),
        (true, _) => dynasm!(a ; rol eax, n8),
        (false, 64) => dynasm!(a ; ror rax, n8),
        (false, _) => dynasm!(a ; ror eax, n8),
    }
    mem::put_reg(a, l, r, size);
    if dead {
        // Nothing reads the CF and OF it sets.
        return;
    }
    let bits = size as i8;
    // ECX = CF, EDX = OF.
    if left {
        dynasm!(a
            ; mov ecx, eax
            ; and ecx, 1
            ; mov rdx, rax
            ; shr rdx, bits - 1
        );
    } else {
        dynasm!(a
            ; mov rcx, rax
            ; shr rcx, bits - 1
            ; and ecx, 1
            ; mov rdx, rax
            ; shr rdx, bits - 2
        );
    }
    let cf_of = (crate::flags::CF | crate::flags::OF) as i32;
    dynasm!(a
        ; xor edx, ecx
        ; and edx, 1
        ; shl edx, 11
        ; or edx, ecx
        ; and QWORD [rbx + l.fl_bits as i32], !cf_of
        ; or QWORD [rbx + l.fl_bits as i32], rdx
    );
}

/// An instruction the fast forms leave to the interpreter that the
/// translator still emits natively ([`emit_generic_native`]).
#[derive(Clone, Copy, Debug)]
enum GenericNative {
    /// RDTSC, or RDTSCP (`true`: ECX = TSC_AUX too).
    Rdtsc(bool),
    /// CLI and STI at CPL 0.
    Cli,
    Sti,
    /// PUSHFQ.
    Pushfq,
    /// (LOCK) CMPXCHG (`true`) or XADD of a 32/64-bit memory operand
    /// with a register (size, register number).
    AtomicRmw(bool, crate::fast::Mem, u8, u8),
    /// (LOCK) BT/BTS/BTR/BTC of a 32/64-bit register or memory operand.
    BitTest(mem::BitTest),
    /// REP MOVS (`true`) or REP STOS of 1 << `.1`-byte elements with
    /// 64-bit addresses and flat segments.
    RepString(bool, u8),
    Cdqe,
    /// NOT, NEG or BSWAP of a 32/64-bit register (number, size).
    Unary(iced_x86::Mnemonic, u8, u8),
    /// MOV from segment register `.1` (0-5) to 32/64-bit register `.0`.
    SelectorRead(u8, usize),
}

/// The REP MOVS/STOS form of `ins`, if it is one the translator emits:
/// REP (not REPNE), 64-bit addresses, MOVS reading through DS.
fn rep_string(ins: &Instruction) -> Option<GenericNative> {
    use iced_x86::Code;
    let (movs, scale) = match ins.code() {
        Code::Stosb_m8_AL => (false, 0),
        Code::Stosw_m16_AX => (false, 1),
        Code::Stosd_m32_EAX => (false, 2),
        Code::Stosq_m64_RAX => (false, 3),
        Code::Movsb_m8_m8 => (true, 0),
        Code::Movsw_m16_m16 => (true, 1),
        Code::Movsd_m32_m32 => (true, 2),
        Code::Movsq_m64_m64 => (true, 3),
        _ => return None,
    };
    let flat = !movs || ins.memory_segment() == iced_x86::Register::DS;
    (ins.has_rep_prefix()
        && !ins.has_repne_prefix()
        && !ins.has_lock_prefix()
        && crate::exec::ops::string_addr_size(ins) == 64
        && flat)
        .then_some(GenericNative::RepString(movs, scale))
}

/// The native form `ins` has among [`GenericNative`]'s, if any.
fn generic_native(f: &Fast, ins: &Instruction) -> Option<GenericNative> {
    use iced_x86::{Code, Mnemonic};
    if f.kind != Kind::Generic {
        return None;
    }
    let rmw = match ins.code() {
        Code::Cmpxchg_rm32_r32 => Some((true, 32)),
        Code::Cmpxchg_rm64_r64 => Some((true, 64)),
        Code::Xadd_rm32_r32 => Some((false, 32)),
        Code::Xadd_rm64_r64 => Some((false, 64)),
        _ => None,
    };
    if let (Some((cmpxchg, size)), iced_x86::OpKind::Memory) = (rmw, ins.op0_kind()) {
        let m = crate::fast::mem_recipe(ins)?;
        let r = ins.op1_register().full_register();
        let n = (r as u32).checked_sub(iced_x86::Register::RAX as u32)?;
        return (n < 16).then_some(GenericNative::AtomicRmw(cmpxchg, m, size, n as u8));
    }
    if let Some(b) = mem::bit_test(ins) {
        return Some(GenericNative::BitTest(b));
    }
    if let Some(r) = rep_string(ins) {
        return Some(r);
    }
    if ins.has_lock_prefix() {
        return None;
    }
    match ins.mnemonic() {
        Mnemonic::Rdtsc => Some(GenericNative::Rdtsc(false)),
        Mnemonic::Rdtscp => Some(GenericNative::Rdtsc(true)),
        Mnemonic::Cli => Some(GenericNative::Cli),
        Mnemonic::Pushfq if ins.code() == iced_x86::Code::Pushfq => Some(GenericNative::Pushfq),
        Mnemonic::Sti => Some(GenericNative::Sti),
        Mnemonic::Cdqe => Some(GenericNative::Cdqe),
        m @ (Mnemonic::Not | Mnemonic::Neg | Mnemonic::Bswap) => {
            let (n, size) = wide_gpr_operand0(ins)?;
            Some(GenericNative::Unary(m, n, size))
        }
        Mnemonic::Mov => {
            let sreg = ins.op_register(1);
            if ins.op_count() != 2 || !sreg.is_segment_register() {
                return None;
            }
            let (n, _) = wide_gpr_operand0(ins)?;
            let s = (sreg as usize - iced_x86::Register::ES as usize).min(5);
            Some(GenericNative::SelectorRead(n, s))
        }
        _ => None,
    }
}

/// Emits `g`, instruction `i` (`f`, `ins`): RDTSC (the host's TSC plus
/// the guest's offset, as `exec::system::rdtsc`, with the trampoline as
/// the slow path while CR4.TSD is set), CDQE, NOT, NEG, BSWAP and
/// selector reads. `fl` is updated to what the host's flags hold after
/// it.
fn emit_generic_native<'a>(
    a: &mut Asm,
    l: &Layout,
    x: Insn<'a>,
    g: GenericNative,
    fl: &mut HostFlags,
    top: Top<'a>,
) {
    use iced_x86::Mnemonic;
    let dead = x.dead;
    match g {
        GenericNative::Rdtsc(aux) => {
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            dynasm!(a
                ; test BYTE [rbx + l.cr4 as i32], 4
                ; jnz =>slow
                ; rdtsc
                ; shl rdx, 32
                ; or rax, rdx
                ; add rax, QWORD [rbx + l.tsc_offset as i32]
                ; mov ecx, eax
                ; mov QWORD [rbx + l.reg(0)], rcx
                ; shr rax, 32
                ; mov QWORD [rbx + l.reg(2)], rax
            );
            if aux {
                dynasm!(a
                    ; mov eax, DWORD [rbx + l.tsc_aux as i32]
                    ; mov QWORD [rbx + l.reg(1)], rax
                );
            }
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::Cli | GenericNative::Sti => {
            // At CPL 0 neither faults; elsewhere the handler decides. STI
            // that sets IF goes to the handler when an interrupt may be
            // waiting (one the run loop saw, or one raised since: the
            // attention flag), which then ends the run for it.
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            let bits = l.fl_bits as i32;
            let is_if = crate::flags::IF as i32;
            dynasm!(a
                ; test BYTE [rbx + l.seg_sel[crate::cpu::CS] as i32], 3
                ; jnz =>slow
            );
            if matches!(g, GenericNative::Cli) {
                dynasm!(a ; and QWORD [rbx + bits], !is_if);
            } else {
                dynasm!(a
                    ; test DWORD [rbx + bits], is_if
                    ; jnz =>done
                    ; cmp BYTE [r12 + std::mem::offset_of!(JitCtx, irq_maybe) as i32], 0
                    ; jne =>slow
                    ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, signal) as i32]
                    ; cmp WORD [rax], 0
                    ; jne =>slow
                    ; or QWORD [rbx + bits], is_if
                );
            }
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::BitTest(b) => {
            // Only CF changes: the other flags are made eager first
            // (unless nothing reads them), then CF is set in the word.
            if !dead {
                dynasm!(a ; mov rdi, rbx);
                call(a, eager_flags as *const () as u64);
            }
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            mem::emit_bit_test(a, l, &b, slow);
            if !dead {
                host_cf_to_bits(a, l);
            }
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            // The guest's CF changed: redoing an earlier operation no
            // longer gives its flags.
            *fl = HostFlags::UNKNOWN;
        }
        GenericNative::AtomicRmw(cmpxchg, m, size, r) => {
            // Atomic on the host (devices share the memory); the handler
            // takes what the inline path does not (misaligned, a TLB
            // miss, a page holding code).
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            let op = if cmpxchg {
                mem::emit_cmpxchg(a, l, &m, size, r, slow);
                Alu::Sub
            } else {
                mem::emit_xadd(a, l, &m, size, r, slow);
                Alu::Add
            };
            dynasm!(a ; =>done);
            let redo = (!dead).then_some((Kind::Alu(op), size));
            top.slow_path(slow, done, x, redo);
            *fl = if dead {
                HostFlags::UNKNOWN
            } else {
                HostFlags::alu(op, size)
            };
        }
        GenericNative::RepString(movs, scale) => {
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            mem::emit_rep_string(a, l, movs, scale, slow, done);
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::Pushfq => {
            // The image from the flags' record (no side effects), then
            // the push with the inline TLB lookup; the handler on a miss.
            let slow = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            dynasm!(a ; mov rdi, rbx);
            call(a, pushf_image as *const () as u64);
            dynasm!(a ; mov r8, rax);
            mem::push_r8(a, l, slow);
            dynasm!(a ; =>done);
            top.slow_path(slow, done, x, None);
            fl.clobbered();
        }
        GenericNative::Cdqe => {
            dynasm!(a
                ; movsxd rax, DWORD [rbx + l.reg(0)]
                ; mov QWORD [rbx + l.reg(0)], rax
            );
        }
        GenericNative::Unary(m, n, size) => {
            mem::get_reg(a, l, RAX, n, size);
            match (m, size) {
                (Mnemonic::Not, _) => dynasm!(a ; not rax),
                (Mnemonic::Bswap, 64) => dynasm!(a ; bswap rax),
                (Mnemonic::Bswap, _) => dynasm!(a ; bswap eax),
                (_, 64) if dead => dynasm!(a ; neg rax),
                (_, _) if dead => dynasm!(a ; neg eax),
                (_, s) => {
                    // As the interpreter: SUB of the operand from zero.
                    dynasm!(a
                        ; mov QWORD [rbx + l.fl_src as i32], rax
                        ; mov QWORD [rbx + l.fl_dst as i32], 0
                    );
                    if s == 64 {
                        dynasm!(a ; neg rax);
                    } else {
                        dynasm!(a ; neg eax);
                    }
                    dynasm!(a
                        ; mov QWORD [rbx + l.fl_res as i32], rax
                        ; mov BYTE [rbx + l.fl_op as i32], FlagOp::Sub as i8
                        ; mov DWORD [rbx + l.fl_size as i32], i32::from(s)
                    );
                    *fl = HostFlags::alu(Alu::Sub, s);
                }
            }
            // NOT and BSWAP change no flags, and storing keeps the host's.
            mem::put_reg(a, l, n, size);
        }
        GenericNative::SelectorRead(n, s) => {
            // The selector, zero-extended.
            dynasm!(a
                ; movzx eax, WORD [rbx + l.seg_sel[s] as i32]
                ; mov QWORD [rbx + l.reg(n)], rax
            );
        }
    }
}

/// Whether condition `cc` reads CF (B, AE, BE, A), which INC/DEC leave
/// in the host's flags as something else.
fn reads_cf(cc: u8) -> bool {
    matches!(cc >> 1, 1 | 3)
}

/// Jumps to `to` when host condition `cc` (x86 order) holds.
fn jcc_host(a: &mut Asm, cc: u8, to: Label) {
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

/// Emits a call of [`tramp`] for instruction `i`.
fn emit_tramp(a: &mut Asm, f: &Fast, ins: &Instruction, i: u32, exit: Label) {
    set_index(a, i);
    dynasm!(a ; mov rdi, r12);
    mov_imm(a, RSI, f as *const Fast as u64);
    mov_imm(a, RDX, ins as *const Instruction as u64);
    call(a, tramp as *const () as u64);
    dynasm!(a
        ; test eax, eax
        ; jnz =>exit
    );
}

/// Where a block may loop back to its own start inside translated code,
/// and where its exits lead.
#[derive(Clone, Copy)]
struct Top<'a> {
    /// The block's first guest address.
    lin: u64,
    /// The label of its first instruction, when looping in code is safe
    /// (no interpreter-run instruction that could change what the block
    /// was validated against).
    label: Option<Label>,
    /// The links that static exits get.
    links: &'a LinkPool,
    /// Slow paths to emit after the block's body.
    slow: &'a std::cell::RefCell<Vec<SlowPath<'a>>>,
    /// The block's way out to the run loop (restores the host's registers
    /// and returns the status in RAX).
    exit: Label,
}

/// The instruction being emitted: its fast form and decoded instruction,
/// its index in the block, and whether nothing reads the flags it leaves
/// ([`flags_dead_after`]).
#[derive(Clone, Copy)]
struct Insn<'a> {
    f: &'a Fast,
    ins: &'a Instruction,
    i: u32,
    dead: bool,
}

/// A slow path, emitted after the block's body so the hot path stays
/// short and falls through: instruction `i`'s trampoline, then (`redo`)
/// its ALU operation or INC/DEC at its size redone on the recorded
/// operands for the host's flags, then back.
struct SlowPath<'a> {
    at: Label,
    back: Label,
    f: &'a Fast,
    ins: &'a Instruction,
    i: u32,
    redo: Option<(Kind, u8)>,
}

impl<'a> Top<'a> {
    /// Queues the out-of-line slow path of instruction `x`: its handler
    /// through the trampoline at `at`, then back to `back`, redoing
    /// `redo` for the host's flags.
    fn slow_path(&self, at: Label, back: Label, x: Insn<'a>, redo: Option<(Kind, u8)>) {
        let Insn { f, ins, i, .. } = x;
        self.slow.borrow_mut().push(SlowPath {
            at,
            back,
            f,
            ins,
            i,
            redo,
        });
    }
}

impl SlowPath<'_> {
    fn emit(&self, a: &mut Asm, l: &Layout, exit: Label) {
        dynasm!(a ; =>self.at);
        emit_tramp(a, self.f, self.ins, self.i, exit);
        match self.redo {
            Some((Kind::Alu(op), size)) => mem::redo_alu(a, l, op, size),
            Some((kind, size)) => {
                dynasm!(a ; mov rax, QWORD [rbx + l.fl_dst as i32]);
                incdec_op(a, kind, size);
            }
            None => {}
        }
        dynasm!(a ; jmp =>self.back);
    }
}

/// The translated code's rounds of a block looping to itself before it
/// goes back to the run loop (which then looks at interrupts).
const LOOP_ROUNDS: u32 = 32;

/// A taken branch of instruction `i` to `f.imm`: back to the block's top
/// while the round budget (R14) lasts, counting the round's instructions
/// as retired; else RIP = target and out with status 1.
fn branch_to(a: &mut Asm, l: &Layout, f: &Fast, i: u32, top: Top) {
    if let (true, Some(t)) = (f.imm == top.lin, top.label) {
        let out = a.new_dynamic_label();
        dynasm!(a
            ; sub r14d, 1
            ; jz =>out
            ; add rbp, (i + 1) as i32
            ; jmp =>t
            ; =>out
        );
    }
    mov_imm(a, RAX, f.imm);
    dynasm!(a ; mov QWORD [rbx + l.rip as i32], rax);
    chain_exit(a, i + 1, top);
}

/// The status of an exit that left with RIP set and nothing else to do
/// but count its instructions (static and dynamic exits): the run loop
/// need not look at the block's instructions (cold in the cache after a
/// run of links).
const DONE: u32 = 3;

/// A static exit after `count` instructions with RIP set: on to the
/// linked translation when the link was made under this run's key, no
/// interrupt or kick waits and the budget lasts (the instructions then
/// count as retired here); else out with status [`DONE`], `count` and
/// the link's number for the run loop to fill in.
fn chain_exit(a: &mut Asm, count: u32, top: Top) {
    let exit = top.exit;
    let Some((link, addr)) = top.links.alloc() else {
        set_index(a, count);
        dynasm!(a
            ; mov eax, DONE as i32
            ; jmp =>exit
        );
        return;
    };
    let out = a.new_dynamic_label();
    mov_imm(a, RDX, addr);
    key_check(a, RDX, std::mem::offset_of!(Link, key), out);
    follow(a, count, out);
    dynasm!(a
        ; jmp QWORD [rdx + std::mem::offset_of!(Link, target) as i32]
        ; =>out
    );
    mov_imm(a, RCX, (u64::from(link) + 1) << 36);
    dynasm!(a ; or r13, rcx);
    set_index(a, count);
    dynasm!(a
        ; mov eax, DONE as i32
        ; jmp =>exit
    );
}

/// An exit of instruction `i` to the target in RDX (RIP already set): on
/// to the target's translation when the jump table has it under this
/// run's key, no interrupt or kick waits and the budget lasts; else out
/// with status [`DONE`].
fn dynamic_exit(a: &mut Asm, i: u32, exit: Label) {
    let out = a.new_dynamic_label();
    dynasm!(a
        ; mov rcx, rdx
        ; shr rcx, 12
        ; xor rcx, rdx
        ; and ecx, (JUMPS - 1) as i32
        ; shl ecx, 5
        ; add rcx, QWORD [r12 + std::mem::offset_of!(JitCtx, jumps) as i32]
        ; cmp QWORD [rcx + std::mem::offset_of!(JumpEntry, rip) as i32], rdx
        ; jne =>out
    );
    key_check(a, RCX, std::mem::offset_of!(JumpEntry, key), out);
    follow(a, i + 1, out);
    dynasm!(a
        ; jmp QWORD [rcx + std::mem::offset_of!(JumpEntry, target) as i32]
        ; =>out
    );
    set_index(a, i + 1);
    dynasm!(a
        ; mov eax, DONE as i32
        ; jmp =>exit
    );
}

/// Goes on when the key at `[base + off]` is one of this run's two
/// keys, else to `out`. Uses RAX.
fn key_check(a: &mut Asm, base: u8, off: usize, out: Label) {
    let ok = a.new_dynamic_label();
    let off = off as i32;
    dynasm!(a
        ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, key) as i32]
        ; cmp QWORD [Rq(base) + off], rax
        ; je =>ok
        ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, key_global) as i32]
        ; cmp QWORD [Rq(base) + off], rax
        ; jne =>out
        ; =>ok
    );
}

/// The checks before a link or jump-table entry is followed (no
/// interrupt or kick waiting, budget left; else to `out`), then `count`
/// instructions retired (in RBP). Keeps RCX and RDX.
fn follow(a: &mut Asm, count: u32, out: Label) {
    dynasm!(a
        ; mov rax, QWORD [r12 + std::mem::offset_of!(JitCtx, signal) as i32]
        ; cmp WORD [rax], 0
        ; jne =>out
    );
    dynasm!(a
        ; sub DWORD [r12 + std::mem::offset_of!(JitCtx, budget) as i32], 1
        ; jb =>out
        ; add rbp, count as i32
    );
}

/// Puts instruction index `i` into R13's low byte (the rest holds the
/// block's cache slot and, at a static exit, its link).
fn set_index(a: &mut Asm, i: u32) {
    dynasm!(a ; mov r13b, i as i8);
}

/// The host's CF as the guest's CF in the flags' bits (the other bits
/// kept). Uses RDX.
fn host_cf_to_bits(a: &mut Asm, l: &Layout) {
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
fn pin_guest_cf(a: &mut Asm, l: &Layout, fl: &HostFlags) {
    if fl.live && !fl.incdec {
        host_cf_to_bits(a, l);
    } else {
        dynasm!(a ; mov rdi, rbx);
        call(a, pin_cf as *const () as u64);
    }
}

/// INC or DEC (`kind`) of RAX at `size` bits, recorded in the lazy flags
/// as the interpreter does (CF pinned before, [`pin_guest_cf`]); the
/// host's flags are then the guest's but for CF.
fn incdec(a: &mut Asm, l: &Layout, kind: Kind, size: u8, record: bool) {
    if !record {
        incdec_op(a, kind, size);
        return;
    }
    dynasm!(a
        ; mov QWORD [rbx + l.fl_dst as i32], rax
        ; mov QWORD [rbx + l.fl_src as i32], 1
    );
    incdec_op(a, kind, size);
    let fop = if kind == Kind::Inc {
        FlagOp::Inc
    } else {
        FlagOp::Dec
    };
    dynasm!(a
        ; mov QWORD [rbx + l.fl_res as i32], rax
        ; mov BYTE [rbx + l.fl_op as i32], fop as i8
        ; mov DWORD [rbx + l.fl_size as i32], i32::from(size)
    );
}

/// SHL/SHR/SAR of a 32/64-bit register by an immediate or by CL, as
/// `shift_ri` and the interpreter do it: no flag change for a zero count
/// (a 32-bit register still written, zero-extended); else CF the last
/// bit out, SF/ZF/PF of the result, OF as the interpreter computes it for
/// every count, AF clear.
fn emit_shift(a: &mut Asm, l: &Layout, f: &Fast, dead: bool) {
    let bits = f.size as i8;
    let count_mask = if bits == 64 { 63 } else { 31 };
    let r = reg_of(f.dst);
    mem::get_reg(a, l, RAX, r, f.size);
    let zero = a.new_dynamic_label();
    if f.src == Loc::Imm {
        let n = (f.imm as u32) & count_mask;
        if n == 0 {
            dynasm!(a ; mov QWORD [rbx + l.reg(r)], rax);
            return;
        }
        dynasm!(a ; mov ecx, n as i32);
    } else {
        dynasm!(a
            ; mov ecx, DWORD [rbx + l.reg(1)]
            ; and ecx, count_mask as i32
            ; jz =>zero
        );
    }
    dynasm!(a ; mov r9, rax);
    match (f.kind, bits) {
        (Kind::Shl, 64) => dynasm!(a ; shl rax, cl),
        (Kind::Shl, _) => dynasm!(a ; shl eax, cl),
        (Kind::Shr, 64) => dynasm!(a ; shr rax, cl),
        (Kind::Shr, _) => dynasm!(a ; shr eax, cl),
        (_, 64) => dynasm!(a ; sar rax, cl),
        _ => dynasm!(a ; sar eax, cl),
    }
    dynasm!(a ; mov QWORD [rbx + l.reg(r)], rax);
    // Unless nothing reads the flags it leaves.
    if !dead {
        emit_shift_flags(a, l, f.kind, bits);
    }
    if f.src != Loc::Imm {
        let done = a.new_dynamic_label();
        dynasm!(a
            ; jmp =>done
            ; =>zero
            ; mov QWORD [rbx + l.reg(r)], rax
            ; =>done
        );
    }
}

/// The flags of a SHL/SHR/SAR by a count that is not zero, from the
/// host's after the shift (RAX the result, R9 the operand).
fn emit_shift_flags(a: &mut Asm, l: &Layout, kind: Kind, bits: i8) {
    host_szp(a, true);
    match kind {
        // OF = MSB(result) ^ CF.
        Kind::Shl => dynasm!(a
            ; mov r8, rax
            ; shr r8, bits - 1
            ; xor r8d, edx
            ; and r8d, 1
            ; shl r8d, 11
            ; or edx, r8d
        ),
        // OF = MSB(operand).
        Kind::Shr => dynasm!(a
            ; shr r9, bits - 1
            ; and r9d, 1
            ; shl r9d, 11
            ; or edx, r9d
        ),
        _ => {}
    }
    emit_eager(a, l);
}

/// RAX = RAX plus or minus one (INC or DEC, `kind`) at `size` bits.
fn incdec_op(a: &mut Asm, kind: Kind, size: u8) {
    match (kind == Kind::Inc, size) {
        (true, 64) => dynasm!(a ; inc rax),
        (true, 32) => dynasm!(a ; inc eax),
        (true, 16) => dynasm!(a ; inc ax),
        (true, _) => dynasm!(a ; inc al),
        (false, 64) => dynasm!(a ; dec rax),
        (false, 32) => dynasm!(a ; dec eax),
        (false, 16) => dynasm!(a ; dec ax),
        (false, _) => dynasm!(a ; dec al),
    }
}

/// Emits the native form of `f` (one of [`native`]'s).
///
/// `fl`: what the host's flags hold before it; updated to after it.
fn emit_native(a: &mut Asm, l: &Layout, x: Insn, fl: &mut HostFlags, top: Top) {
    let Insn { f, i, dead, .. } = x;
    match f.kind {
        Kind::Nop => {}
        Kind::Mov => {
            match f.src {
                Loc::Imm => mov_imm(a, RAX, f.imm),
                s => mem::get_reg(a, l, RAX, reg_of(s), f.size),
            }
            mem::put_reg(a, l, reg_of(f.dst), f.size);
        }
        Kind::Lea => {
            mem::emit_ea(a, l, &f.mem);
            if f.size == 32 {
                dynasm!(a ; mov eax, eax);
            }
            dynasm!(a ; mov QWORD [rbx + l.reg(reg_of(f.dst))], rax);
        }
        // A comparison nothing reads.
        Kind::Alu(Alu::Cmp | Alu::Test) if dead => {}
        Kind::Alu(op) => {
            if matches!(op, Alu::Adc | Alu::Sbb) {
                mem::carry_to_r8(a, l, fl);
            }
            mem::get_reg(a, l, RAX, reg_of(f.dst), f.size);
            match f.src {
                Loc::Imm => mov_imm(a, RCX, f.imm),
                s => mem::get_reg(a, l, RCX, reg_of(s), f.size),
            }
            mem::emit_alu(a, l, op, f.size, !dead);
            if !matches!(op, Alu::Cmp | Alu::Test) {
                mem::put_reg(a, l, reg_of(f.dst), f.size);
            }
        }
        Kind::Jcc(cc) => {
            // Not taken: on with the next instruction.
            let skip = a.new_dynamic_label();
            if fl.make_live(a, l, cc) {
                jcc_host(a, cc ^ 1, skip);
            } else {
                call_cond(a, cc, fl);
                dynasm!(a
                    ; test eax, eax
                    ; jz =>skip
                );
            }
            branch_to(a, l, f, i, top);
            dynasm!(a ; =>skip);
        }
        Kind::Inc | Kind::Dec => {
            if !dead {
                pin_guest_cf(a, l, fl);
            }
            let r = reg_of(f.dst);
            mem::get_reg(a, l, RAX, r, f.size);
            incdec(a, l, f.kind, f.size, !dead);
            dynasm!(a ; mov QWORD [rbx + l.reg(r)], rax);
        }
        Kind::Jmp => branch_to(a, l, f, i, top),
        Kind::Setcc(cc) => {
            cond_to_ecx(a, l, cc, fl);
            dynasm!(a ; mov BYTE [rbx + byte_reg(l, reg_of(f.dst))], cl);
        }
        Kind::Cmovcc(cc) => {
            // As `cmov_rr`: the destination is written either way (a
            // 32-bit one zero-extended).
            cond_to_ecx(a, l, cc, fl);
            mem::get_reg(a, l, RAX, reg_of(f.dst), f.size);
            mem::get_reg(a, l, RDX, reg_of(f.src), f.size);
            dynasm!(a
                ; test ecx, ecx
                ; cmovne rax, rdx
                ; mov QWORD [rbx + l.reg(reg_of(f.dst))], rax
            );
        }
        Kind::Movzx | Kind::Movsx => {
            let src = reg_of(f.src);
            let sx = f.kind == Kind::Movsx;
            match (f.size2, sx) {
                (8, false) => dynasm!(a ; movzx eax, BYTE [rbx + byte_reg(l, src)]),
                (16, false) => dynasm!(a ; movzx eax, WORD [rbx + l.reg(src)]),
                (8, true) => dynasm!(a ; movsx rax, BYTE [rbx + byte_reg(l, src)]),
                (16, true) => dynasm!(a ; movsx rax, WORD [rbx + l.reg(src)]),
                (32, true) => dynasm!(a ; movsxd rax, DWORD [rbx + l.reg(src)]),
                _ => mem::get_reg(a, l, RAX, src, f.size2.max(32)),
            }
            if f.size == 32 {
                dynasm!(a ; mov eax, eax);
            }
            dynasm!(a ; mov QWORD [rbx + l.reg(reg_of(f.dst))], rax);
        }
        Kind::Imul2 => {
            // As `imul_rr`: CF = OF = signed overflow, SF/ZF/PF of the
            // result, AF clear.
            let r = reg_of(f.dst);
            mem::get_reg(a, l, RAX, r, f.size);
            mem::get_reg(a, l, RCX, reg_of(f.src), f.size);
            if f.size == 64 {
                dynasm!(a ; imul rax, rcx);
            } else {
                dynasm!(a ; imul eax, ecx);
            }
            dynasm!(a
                ; seto r8b
                ; mov QWORD [rbx + l.reg(r)], rax
            );
            if dead {
                return;
            }
            if f.size == 64 {
                dynasm!(a ; test rax, rax);
            } else {
                dynasm!(a ; test eax, eax);
            }
            host_szp(a, false);
            dynasm!(a
                ; movzx r8d, r8b
                ; imul r8d, r8d, (crate::flags::CF | crate::flags::OF) as i32
                ; or edx, r8d
            );
            emit_eager(a, l);
        }
        Kind::Shl | Kind::Shr | Kind::Sar => emit_shift(a, l, f, dead),
        _ => {}
    }
}

/// Emits instruction `i` of a block (`f`, `ins`): natively when it has a
/// native form, else as a trampoline call. `fl` is what the host's flags
/// hold before it, updated to after it; `dead`: nothing reads the flags
/// it leaves ([`flags_dead_after`]).
fn emit_one<'a>(a: &mut Asm, l: &Layout, x: Insn<'a>, fl: &mut HostFlags, top: Top<'a>) {
    let Insn { f, ins, i, dead } = x;
    if native(f) {
        emit_native(a, l, x, fl, top);
        match f.kind {
            Kind::Alu(op) => *fl = HostFlags::alu(op, f.size),
            Kind::Inc | Kind::Dec => *fl = HostFlags::INCDEC,
            // They write the guest's flags eagerly.
            Kind::Imul2 | Kind::Shl | Kind::Shr | Kind::Sar => *fl = HostFlags::UNKNOWN,
            // Guest flags untouched, host flags changed by the emitted
            // address arithmetic or TEST.
            Kind::Lea | Kind::Cmovcc(_) => fl.clobbered(),
            // Jcc and SETcc leave the flags as `make_live` left them;
            // MOV, MOVZX/MOVSX, NOP change neither.
            _ => {}
        }
        return;
    }
    if mem::native_mem(f) {
        mem::emit_mem_form(a, l, x, fl, top);
        match f.kind {
            Kind::Alu(op) => *fl = HostFlags::alu(op, f.size),
            Kind::Inc | Kind::Dec => *fl = HostFlags::INCDEC,
            // Loads, stores, PUSH/POP: the TLB lookup changes the host's
            // flags only.
            _ => fl.clobbered(),
        }
        return;
    }
    if let Some(rot) = native_rotate(f, ins) {
        emit_rotate(a, l, rot, dead);
        *fl = HostFlags::UNKNOWN;
        return;
    }
    if let Some(g) = generic_native(f, ins) {
        emit_generic_native(a, l, x, g, fl, top);
        return;
    }
    emit_tramp(a, f, ins, i, top.exit);
    *fl = HostFlags::UNKNOWN;
}

/// How an instruction's translation uses the guest's arithmetic flags,
/// for [`flags_dead_after`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagUse {
    /// Writes all six and reads none, and cannot fault or leave the
    /// block.
    Kills,
    /// Neither reads nor writes them, and cannot fault or leave.
    Neutral,
    /// Anything else: reads them, writes only some, may fault (the
    /// guest's handler then sees RFLAGS) or may leave the block.
    Reads,
}

fn flag_use(f: &Fast, ins: &Instruction) -> FlagUse {
    use iced_x86::Mnemonic;
    if native(f) {
        return match f.kind {
            Kind::Alu(op) if !matches!(op, Alu::Adc | Alu::Sbb) => FlagUse::Kills,
            Kind::Imul2 => FlagUse::Kills,
            // A count of zero changes no flags.
            Kind::Shl | Kind::Shr | Kind::Sar
                if f.src == Loc::Imm
                    && (f.imm as u32) & if f.size == 64 { 63 } else { 31 } != 0 =>
            {
                FlagUse::Kills
            }
            Kind::Nop | Kind::Mov | Kind::Lea | Kind::Movzx | Kind::Movsx => FlagUse::Neutral,
            _ => FlagUse::Reads,
        };
    }
    match generic_native(f, ins) {
        Some(GenericNative::Unary(Mnemonic::Neg, ..)) => FlagUse::Kills,
        Some(GenericNative::Cdqe | GenericNative::Unary(..) | GenericNative::SelectorRead(..)) => {
            FlagUse::Neutral
        }
        // RDTSC may fault on its slow path; the rest are trampolines.
        _ => FlagUse::Reads,
    }
}

/// For each instruction of `b`, whether nothing reads the arithmetic
/// flags it leaves: the next instruction to touch them writes all six
/// before any reads them, with nothing between that could fault or
/// leave the block (at the block's end they are live). Such an
/// instruction's translation skips its flag work (the lazy record, eager
/// flags, a rotate's CF/OF), and a comparison becomes nothing.
fn flags_dead_after(b: &Block) -> Vec<bool> {
    let mut dead = vec![false; b.fast.len()];
    let mut live = true;
    for (i, (f, ins)) in b.fast.iter().zip(&b.instrs).enumerate().rev() {
        dead[i] = !live;
        match flag_use(f, ins) {
            FlagUse::Kills => live = false,
            FlagUse::Neutral => {}
            FlagUse::Reads => live = true,
        }
    }
    dead
}

/// Assembles the translation of `b` for address `at`: the code and the
/// offset of its chain entry.
fn emit(
    core: &Core,
    b: &Block,
    slot: u32,
    links: &LinkPool,
    at: u64,
) -> Result<(Vec<u8>, usize), DynasmError> {
    let l = Layout::of(core);
    let mut a = Asm::new(at as usize);
    let exit = a.new_dynamic_label();
    // Entry: RSP is 8 mod 16; six pushes and 8 bytes make calls aligned.
    // R15: the TLB right a read needs at this privilege (CPL changes
    // only in trampolined instructions, which end the run).
    // RBP: the instructions retired in this run by links and self loops,
    // added to the core's count on the way out.
    dynasm!(a
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; push r14
        ; push r15
        ; sub rsp, 8
        ; xor ebp, ebp
        ; mov r12, rdi
        ; mov rbx, QWORD [rdi + std::mem::offset_of!(JitCtx, core) as i32]
        ; movzx r15d, WORD [rbx + l.seg_sel[crate::cpu::CS] as i32]
        ; and r15d, 3
        ; cmp r15d, 3
        ; mov r15d, i32::from(crate::mmu::PERM_SR)
        ; mov eax, i32::from(crate::mmu::PERM_UR)
        ; cmove r15d, eax
    );
    // The chain entry: other translations' links jump here with RBX,
    // R12 and R15 as this run set them up.
    let chain = a.offset().0;
    let top_label = a.new_dynamic_label();
    dynasm!(a
        ; mov r13d, (slot << 8) as i32
        ; mov r14d, LOOP_ROUNDS as i32
        ; =>top_label
    );
    let loops = b.fast.iter().all(|f| f.kind != Kind::Generic);
    let slow = std::cell::RefCell::new(Vec::new());
    let top = Top {
        lin: b.lin,
        label: loops.then_some(top_label),
        links,
        slow: &slow,
        exit,
    };
    let n = b.fast.len() as u32;
    let mut fl = HostFlags::UNKNOWN;
    let dead = flags_dead_after(b);
    for (i, (f, ins)) in b.fast.iter().zip(&b.instrs).enumerate() {
        let d = dead[i];
        let x = Insn {
            f,
            ins,
            i: i as u32,
            dead: d,
        };
        emit_one(&mut a, &l, x, &mut fl, top);
        if d {
            // Nothing reads the flags before they are all written again.
            fl = HostFlags::UNKNOWN;
        }
    }
    let ends_in_jump = b.fast.last().is_some_and(|f| {
        matches!(f.kind, Kind::Jmp | Kind::Call | Kind::Ret) && (native(f) || mem::native_mem(f))
    });
    if ends_in_jump {
        // Only a jump to the next instruction gets here (status 0, with
        // RIP set): the block ran off its end.
        dynasm!(a ; xor eax, eax);
    } else {
        let next = b.fast.last().map_or(b.lin, |f| f.next);
        mov_imm(&mut a, RAX, next);
        dynasm!(a ; mov QWORD [rbx + l.rip as i32], rax);
        chain_exit(&mut a, n, top);
    }
    dynasm!(a
        ; =>exit
        ; add QWORD [rbx + l.retired as i32], rbp
        ; shl rax, 32
        ; or rax, r13
        ; add rsp, 8
        ; pop r15
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbp
        ; pop rbx
        ; ret
    );
    // Out of the hot path, after the return: nothing falls into them.
    for s in slow.borrow().iter() {
        s.emit(&mut a, &l, exit);
    }
    Ok((a.finalize()?, chain))
}

/// How a translated block's run ended, in the interpreter's terms: the
/// instructions retired and what the block loop does next.
pub enum Outcome {
    /// Ran off the end (RIP not yet set).
    End,
    /// Instruction `i` completed and the block stops after it.
    After(usize),
    /// Instruction `i` stopped with this.
    Stopped(usize, Stop),
    /// `n` instructions completed and RIP is set: on with the next block.
    Done(usize),
}

/// How a run of translated code ended: in which block (its cache slot)
/// and how, the link of the static exit it left by (for the run loop to
/// fill in), and how many links it followed.
pub struct Exit {
    pub outcome: Outcome,
    pub slot: usize,
    pub link: Option<u32>,
    pub chained: u32,
}

/// Runs the translation `t` on `core`, following links made under chain
/// key `key` at most `budget` times while neither of `signal`'s flags is
/// set; `irq_maybe`: the run loop may hold an interrupt it could not
/// deliver yet.
pub fn run(
    core: &mut Core,
    jit: &Jit,
    t: Translation,
    keys: Keys,
    budget: u32,
    irq_maybe: bool,
    signal: &Signal,
) -> Exit {
    let jumps = &jit.jumps;
    let (code_map, code_pages) = core.ram().code_map();
    let mut ctx = JitCtx {
        tlb: core.tlb.entries(),
        code_map,
        code_pages,
        core: core as *mut Core,
        stop: None,
        key: keys.all,
        key_global: keys.global,
        budget,
        irq_maybe,
        signal: signal.attention.as_ptr().cast_const().cast(),
        jumps: jumps.e.as_ptr(),
        tramps: jit.tramps.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
    };
    // SAFETY: `t.entry` is code our emitter produced (the caller got it
    // from `Jit::entry` in the buffer's current generation, so the buffer
    // still holds it), following the sysv64 ABI and saving the registers
    // it uses. It touches only `core` (through the pointer in `ctx`, which
    // nothing else uses while it runs), the signal's flags (read), the
    // links (read) and, through `tramp`, the `Fast`/`Instruction` of the
    // blocks it runs. Those are alive: the entered block is the caller's,
    // and a link is followed only under the key it was made with, which
    // changes (`BlockCache::link_epoch`) whenever a block is dropped,
    // while nothing drops blocks during the run.
    let r = unsafe {
        let f: Entry = std::mem::transmute::<usize, Entry>(t.entry);
        f(&mut ctx)
    };
    let i = (r & 0xff) as usize;
    let outcome = match (r >> 32) & 0xf {
        0 => Outcome::End,
        1 => Outcome::After(i),
        3 => Outcome::Done(i),
        _ => Outcome::Stopped(i, ctx.stop.take().unwrap_or(Stop::Unsupported)),
    };
    Exit {
        outcome,
        slot: ((r >> 8) & 0xff_ffff) as usize,
        link: match r >> 36 {
            0 => None,
            l => Some((l - 1) as u32),
        },
        chained: if ctx.budget == u32::MAX {
            budget
        } else {
            budget - ctx.budget
        },
    }
}
