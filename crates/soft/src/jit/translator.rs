//! One vCPU's translator ([`Jit`]): decides when a cached block is hot
//! enough to translate, owns the code buffer, the links and the jump
//! table translations use, hands out the keys and pending links the run
//! loop needs to chain blocks, and keeps the statistics and profiling
//! output (`VESSEL_SOFT_JIT*`, `VESSEL_SOFT_PERF_MAP`).

use std::cell::Cell;

use super::emit::emit;
use super::link::{JumpTable, LinkPool};
use super::CodeBuf;
use crate::cache::Block;
use crate::config::SoftConfig;
use crate::core::Core;

/// `Block::jit` entry of a block that cannot be translated.
pub const FAILED: usize = 1;

/// The code buffer's size.
const BUF_SIZE: usize = 64 << 20;

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
    pub(super) entry: usize,
    chain: usize,
}

/// A static exit of the last run that may be linked to the block found
/// next: its link and the buffer generation it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct PendingLink {
    link: u32,
    gen: u64,
}

/// The translator of one vCPU.
pub struct Jit {
    buf: CodeBuf,
    links: LinkPool,
    pub(super) jumps: JumpTable,
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
    pub(super) tramps: Option<Box<[Cell<u64>]>>,
    /// `/tmp/perf-PID.map`, written with `VESSEL_SOFT_PERF_MAP=1` so
    /// translated code can be named by the guest address of its block
    /// (profiling; the code itself goes to `/tmp/vessel-jit-PID-BASE.bin`
    /// when the translator ends).
    perf_map: Option<std::io::BufWriter<std::fs::File>>,
    /// Print translation statistics when dropped (`SoftConfig::stats`).
    stats: bool,
}

impl Jit {
    /// The translator as `config` sets it up. None when it is off or its
    /// code buffer cannot be mapped.
    pub fn new(config: &SoftConfig) -> Option<Jit> {
        if !config.translate {
            return None;
        }
        let hot = config.hot_after;
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
                strict: config.strict,
                perf_map: config
                    .perf_map
                    .then(|| {
                        let path = format!("/tmp/perf-{}.map", std::process::id());
                        std::fs::File::create(&path)
                            .map_err(|e| log::warn!("soft jit: {path}: {e}"))
                            .ok()
                    })
                    .flatten()
                    .map(std::io::BufWriter::new),
                stats: config.stats,
                tramps: config.stats.then(|| {
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
        if self.stats {
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
