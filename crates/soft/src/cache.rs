//! Decoded blocks (runs past conditional branches up to an unconditional
//! transfer), each with its compiled forms ([`crate::fast`]), cached in
//! slots by linear RIP behind a jump cache and validated on every entry
//! against the physical page they were decoded from and that page's code
//! generation (short-cut by a global code-write epoch), so guest writes to
//! code (through any mapping, by any vCPU) and remappings both lead to a
//! fresh decode. Blocks also remember their last successor for chaining.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};

use crate::config::SoftConfig;
use crate::core::Core;
use crate::exception::{ExecResult, Fault, Stop};
use crate::fast::Fast;
use crate::mmu::{Access, PERM_SR, PERM_UR, PERM_X};
use crate::phys::PAGE;

/// The most instructions in one block.
const MAX_BLOCK: usize = 64;

/// A decoded run of instructions ending at an unconditional control
/// transfer, a page boundary or `MAX_BLOCK` (conditional branches inside
/// it leave it when taken).
#[derive(Debug)]
pub struct Block {
    pub instrs: Vec<Instruction>,
    /// The pre-resolved form of each instruction (`Kind::Generic` when
    /// the interpreter runs it).
    pub fast: Vec<Fast>,
    bitness: u32,
    /// The linear address of the first instruction.
    pub lin: u64,
    /// Physical page(s) the bytes came from, with the code generations
    /// they were last seen valid at.
    pages: [(u64, Cell<u32>); 2],
    npages: usize,
    /// The bytes it was decoded from: a write to its page elsewhere
    /// (Linux patching a neighbouring jump label, say) leaves it valid.
    bytes: Box<[u8]>,
    /// The code-write epoch at which the pages last checked valid.
    checked: Cell<u64>,
    /// The block that last followed this one: the RIP it was found at,
    /// its linear address, slot, the TLB epoch then and whether in user
    /// mode.
    succ: Cell<(u64, u64, u32, u64, bool)>,
    /// All its pages were global ones when it was decoded (a CR3 write
    /// cannot change what they map to; see `Tlb::global_epoch`).
    pub global: bool,
    /// Runs so far (until it is translated).
    pub(crate) hits: Cell<u32>,
    /// Its translation: the code buffer's generation, the entry point
    /// (0: none; [`crate::jit::FAILED`]: it could not be translated) and
    /// the chain entry.
    pub(crate) jit: Cell<(u64, usize, usize)>,
}

/// A hasher for u64 keys (a multiplicative mix; keys are addresses).
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Jump-cache entries (direct-mapped by linear address; a Debian boot
/// translates about 10,000 blocks and runs many more).
const JC_SIZE: usize = 1 << 15;
/// Blocks kept before the cache starts over.
const MAX_BLOCKS: usize = 1 << 16;

impl Block {
    /// The code size it was decoded at (16, 32 or 64).
    pub fn bitness(&self) -> u32 {
        self.bitness
    }
}

/// The block cache of one vCPU: blocks in slots, a map from linear
/// address to slot, and a direct-mapped jump cache in front of the map.
pub struct BlockCache {
    /// Bumped whenever a block is dropped (the cache starting over, a
    /// slot decoded anew): links between translations made before then
    /// must not be followed (they may lead to code of a dropped block).
    pub link_epoch: u64,
    map: HashMap<u64, u32, BuildHasherDefault<AddrHasher>>,
    blocks: Vec<Block>,
    /// (linear address, slot); a slot past `blocks` is empty.
    jc: Vec<(u64, u32)>,
    /// Blocks decoded new and decoded again in a slot whose block no
    /// longer matched (statistics).
    pub decoded: u64,
    pub redecoded: u64,
    /// Time spent decoding, when `timed` (statistics).
    pub decode_time: std::time::Duration,
    timed: bool,
    /// Instructions get their pre-resolved fast forms (`VESSEL_SOFT_FAST=0`
    /// leaves every one to the interpreter, so the differential tests can
    /// compare the tiers).
    fast: bool,
}

impl BlockCache {
    /// An empty cache; `config` says whether blocks get fast handlers and
    /// whether decoding is timed.
    pub fn new(config: &SoftConfig) -> Self {
        BlockCache {
            link_epoch: 0,
            decoded: 0,
            redecoded: 0,
            decode_time: std::time::Duration::ZERO,
            timed: config.stats,
            fast: config.fast_handlers,
            map: HashMap::default(),
            blocks: Vec::new(),
            jc: vec![(0, u32::MAX); JC_SIZE],
        }
    }
}

#[inline(always)]
fn jc_index(lin: u64) -> usize {
    ((lin ^ (lin >> 12)) as usize) % JC_SIZE
}

impl BlockCache {
    pub fn clear(&mut self) {
        self.link_epoch += 1;
        self.map.clear();
        self.blocks.clear();
        self.jc.iter_mut().for_each(|e| e.1 = u32::MAX);
    }

    /// The block in `slot` (from [`BlockCache::lookup`]).
    #[inline(always)]
    pub fn get(&self, slot: usize) -> &Block {
        &self.blocks[slot]
    }

    /// The block in `slot`, if there is one.
    #[inline(always)]
    pub fn try_get(&self, slot: usize) -> Option<&Block> {
        self.blocks.get(slot)
    }

    /// The block that followed `prev` last time, when it starts at the
    /// current RIP and nothing it was found with has changed (TLB epoch,
    /// privilege, its code).
    #[inline(always)]
    pub fn chained(&self, prev: usize, core: &Core) -> Option<usize> {
        let p = self.blocks.get(prev)?;
        let (rip, lin, slot, epoch, user) = p.succ.get();
        if rip != core.cpu.rip || epoch != core.tlb.epoch || user != (core.cpu.cpl() == 3) {
            return None;
        }
        let b = self.blocks.get(slot as usize)?;
        (b.lin == lin && b.bitness == p.bitness && valid(core, b)).then_some(slot as usize)
    }

    /// Records that `next` followed `prev` at the current RIP.
    #[inline(always)]
    pub fn link(&self, prev: usize, next: usize, core: &Core) {
        if let (Some(p), Some(n)) = (self.blocks.get(prev), self.blocks.get(next)) {
            p.succ.set((
                core.cpu.rip,
                n.lin,
                next as u32,
                core.tlb.epoch,
                core.cpu.cpl() == 3,
            ));
        }
    }

    /// The slot of the block starting at the current RIP, decoded if
    /// needed.
    #[inline]
    pub fn lookup(&mut self, core: &mut Core) -> ExecResult<usize> {
        let rip = core.cpu.rip;
        let lin = core.seg_lin(crate::cpu::CS, rip, 1, false)?;
        let user = core.cpu.cpl() == 3;
        let need = PERM_X | if user { PERM_UR } else { PERM_SR };
        let pa = match core.tlb.fast(lin, need) {
            Some((_, pa)) => pa,
            None => core.translate(lin, Access::Exec, false)?.pa,
        };
        let bitness = core.cpu.bitness();
        let h = jc_index(lin);
        let (jl, js) = self.jc[h];
        if jl == lin {
            if let Some(b) = self.blocks.get(js as usize) {
                if b.lin == lin
                    && b.bitness == bitness
                    && b.pages[0].0 == pa
                    && valid(core, b)
                    && second_page_ok(core, b, need)
                {
                    return Ok(js as usize);
                }
            }
        }
        let slot = match self.map.get(&lin) {
            Some(&s) => {
                let b = &self.blocks[s as usize];
                if !(b.bitness == bitness
                    && b.pages[0].0 == pa
                    && valid(core, b)
                    && second_page_ok(core, b, need))
                {
                    // Only a translated block can be a link's target.
                    if b.jit.get().1 > crate::jit::FAILED {
                        self.link_epoch += 1;
                    }
                    // The new code at a hot address is likely hot too
                    // (Linux patching a spinlock or a static call): it
                    // keeps the runs counted so far, so a block that was
                    // translated is translated again on its next run.
                    let hits = b.hits.get();
                    let b = self.decode(core, rip, lin, pa, bitness)?;
                    b.hits.set(hits);
                    self.blocks[s as usize] = b;
                    self.redecoded += 1;
                }
                s
            }
            None => {
                if self.blocks.len() >= MAX_BLOCKS {
                    self.clear();
                }
                let b = self.decode(core, rip, lin, pa, bitness)?;
                self.decoded += 1;
                let s = self.blocks.len() as u32;
                self.blocks.push(b);
                self.map.insert(lin, s);
                s
            }
        };
        self.jc[h] = (lin, slot);
        Ok(slot as usize)
    }

    fn decode(
        &mut self,
        core: &mut Core,
        rip: u64,
        lin: u64,
        pa: u64,
        bitness: u32,
    ) -> ExecResult<Block> {
        let t = self.timed.then(std::time::Instant::now);
        let mut b = decode_global(core, rip, lin, pa, bitness)?;
        if !self.fast {
            b.fast = b
                .instrs
                .iter()
                .map(|i| crate::fast::generic(i, bitness))
                .collect();
        }
        if let Some(t) = t {
            self.decode_time += t.elapsed();
        }
        Ok(b)
    }
}

/// The linear address of the page after the one `b` starts in.
fn second_page(b: &Block) -> u64 {
    (b.lin | (PAGE - 1)).wrapping_add(1)
}

/// Whether a block that runs into a second page still finds there the
/// physical page it was decoded from (the caller checked the first).
fn second_page_ok(core: &mut Core, b: &Block, need: u8) -> bool {
    if b.npages < 2 {
        return true;
    }
    let lin2 = second_page(b);
    let pa2 = match core.tlb.fast(lin2, need) {
        Some((_, pa)) => pa,
        None => {
            // A probe, not an access: a fault here is not delivered, so
            // it must not leave CR2 behind.
            let cr2 = core.cpu.cr2;
            let r = core.translate(lin2, Access::Exec, false);
            core.cpu.cr2 = cr2;
            match r {
                Ok(p) => p.pa,
                Err(_) => return false,
            }
        }
    };
    pa2 == b.pages[1].0
}

/// Whether every page of `b` is a global one now (just after decoding:
/// its pages are in the TLB).
fn all_global(core: &Core, b: &Block) -> bool {
    core.tlb.is_global(b.lin) && (b.npages < 2 || core.tlb.is_global(second_page(b)))
}

/// Decodes the block at `lin` and notes whether all its pages are global
/// (then translations may link into it under the global chain key, and
/// the TLB keeps its pages in mind for INVLPG).
fn decode_global(core: &mut Core, rip: u64, lin: u64, pa: u64, bitness: u32) -> ExecResult<Block> {
    let mut b = decode_block(core, rip, lin, pa, bitness)?;
    b.global = all_global(core, &b);
    if b.global {
        core.tlb.note_global_code(b.lin);
        if b.npages > 1 {
            core.tlb.note_global_code(second_page(&b));
        }
    }
    Ok(b)
}

/// True while the pages `b` was decoded from hold the same code (the
/// caller knows the mapping is unchanged).
#[inline(always)]
pub fn still_valid(core: &Core, b: &Block) -> bool {
    valid(core, b)
}

fn valid(core: &Core, b: &Block) -> bool {
    let ram = core.ram();
    let epoch = ram.code_epoch();
    if b.checked.get() == epoch {
        return true;
    }
    let pages = &b.pages[..b.npages];
    if !pages
        .iter()
        .all(|(pa, gen)| ram.generation(*pa) == gen.get())
    {
        // A page was written since. When the block's own bytes are as
        // they were, it (and its translation) stays: mark the pages as
        // holding code again before comparing, so a write after the
        // comparison moves the generation on once more.
        let gens = [
            ram.mark_code(pages[0].0),
            pages.get(1).map_or(0, |p| ram.mark_code(p.0)),
        ];
        if !same_bytes(core, b) {
            return false;
        }
        for (p, g) in pages.iter().zip(gens) {
            p.1.set(g);
        }
    }
    b.checked.set(epoch);
    true
}

/// Whether guest RAM still holds the bytes `b` was decoded from.
fn same_bytes(core: &Core, b: &Block) -> bool {
    let off = (b.lin & (PAGE - 1)) as usize;
    let first = b.bytes.len().min(PAGE as usize - off);
    let parts = [
        (b.pages[0].0, off, &b.bytes[..first]),
        (b.pages[1].0, 0, &b.bytes[first..]),
    ];
    let mut now = [0u8; 64];
    for (pa, off, want) in parts {
        if want.is_empty() {
            continue;
        }
        let Some(host) = core.ram().page_host(pa) else {
            return false;
        };
        for (i, chunk) in want.chunks(now.len()).enumerate() {
            let got = &mut now[..chunk.len()];
            crate::phys::Ram::read(host, off + i * 64, got);
            if got != chunk {
                return false;
            }
        }
    }
    true
}

/// Zeroes `b` and gives it back as initialized bytes.
fn init_zero(b: &mut [std::mem::MaybeUninit<u8>]) -> &mut [u8] {
    for x in b.iter_mut() {
        x.write(0);
    }
    // SAFETY: every element was just written; MaybeUninit<u8> has u8's
    // layout.
    unsafe { &mut *(b as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
}

/// `b` as bytes; the caller only passes elements written before.
fn assume_init(b: &[std::mem::MaybeUninit<u8>]) -> &[u8] {
    // SAFETY: decode_block passes only `bytes[..avail]`, all of which
    // `init_zero` wrote; MaybeUninit<u8> has u8's layout.
    unsafe { &*(b as *const [std::mem::MaybeUninit<u8>] as *const [u8]) }
}

/// Bytes of a code page fetched at a time while decoding.
const FETCH_WINDOW: usize = 256;

/// The length an undecodable instruction is given when its bytes run past
/// the architecture's 15-byte limit (prefixes included), which the CPU
/// refuses with #GP(0) rather than #UD. No real instruction is this long,
/// so the mark cannot be confused with one.
const TOO_LONG: usize = 16;

/// Whether `ins` is an instruction longer than 15 bytes (see
/// [`TOO_LONG`]): #GP(0).
pub fn too_long(ins: &Instruction) -> bool {
    ins.code() == Code::INVALID && ins.len() == TOO_LONG
}

/// Whether `bytes`, which the decoder refused, are an instruction made
/// longer than 15 bytes by redundant prefixes: the CPU checks the length
/// before the opcode, so even an undefined opcode there is #GP(0), not
/// #UD. The decoder cannot tell that from an invalid encoding, so the
/// prefixes that change nothing are dropped (a REX not right before the
/// opcode, an earlier copy of a legacy prefix, a segment override a
/// later one replaces) and the rest decoded again: its length (what the
/// decoder took, for an undefined opcode) over 15 with the dropped ones
/// means too long.
fn over_15_bytes(bytes: &[u8], bitness: u32) -> bool {
    let legacy = |b: u8| {
        matches!(
            b,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
        )
    };
    let rex = |b: u8| bitness == 64 && (0x40..=0x4f).contains(&b);
    let seg = |b: u8| matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65);
    let n = bytes.iter().take_while(|&&b| legacy(b) || rex(b)).count();
    let prefixes = &bytes[..n];
    let mut kept = Vec::with_capacity(n + 15);
    for (i, &b) in prefixes.iter().enumerate() {
        let later = &prefixes[i + 1..];
        let redundant = (rex(b) && !later.is_empty())
            || later.contains(&b)
            || (seg(b) && later.iter().any(|&c| seg(c)));
        if !redundant {
            kept.push(b);
        }
    }
    let dropped = n - kept.len();
    if dropped == 0 {
        return false;
    }
    let kept_prefixes = kept.len();
    kept.extend_from_slice(&bytes[n..bytes.len().min(n + 15)]);
    let mut dec = Decoder::with_ip(bitness, &kept, 0, DecoderOptions::NONE);
    let ins = dec.decode();
    // A prefix before a VEX/EVEX/XOP escape is #UD whatever the length
    // (the CPU: eleven REX prefixes, C4, ... gives #UD, not #GP).
    let escape = matches!(bytes.get(n), Some(0xc4 | 0xc5 | 0x62 | 0x8f));
    let measured = ins.code() != Code::INVALID
        || (dec.last_error() == DecoderError::InvalidInstruction && !escape);
    let opsize16 = kept[..kept_prefixes].contains(&0x66);
    let len = match ins.code() {
        Code::INVALID => {
            legacy_opcode_len(&bytes[n..], opsize16).map_or(ins.len(), |l| kept_prefixes + l)
        }
        _ => ins.len(),
    };
    measured && len + dropped > 15
}

/// The length the CPU's instruction-length decoder gives an opcode that
/// is undefined in 64-bit mode but was an instruction in 32-bit mode (it
/// still measures it by its old format before raising #UD), or None for
/// other opcodes. iced measures some of them otherwise (it takes three
/// bytes for PUSH ES, `06`). Measured natively on this host with
/// fourteen or thirteen prefixes in front: `06`, `60`, `CE`, `D6` are one
/// byte; `D4 ib`, `D5 ib` two; `9A`/`EA` seven (ptr16:32); `82 /r ib`
/// like `80`.
fn legacy_opcode_len(op: &[u8], opsize16: bool) -> Option<usize> {
    match *op.first()? {
        0x06 | 0x07 | 0x0e | 0x16 | 0x17 | 0x1e | 0x1f | 0x27 | 0x2f | 0x37 | 0x3f | 0x60
        | 0x61 | 0xce | 0xd6 => Some(1),
        0xd4 | 0xd5 => Some(2),
        0x9a | 0xea => Some(if opsize16 { 5 } else { 7 }),
        0x82 => {
            let mut as80 = op.to_vec();
            as80[0] = 0x80;
            let ins = Decoder::with_ip(64, &as80, 0, DecoderOptions::NONE).decode();
            (ins.code() != Code::INVALID).then(|| ins.len())
        }
        _ => None,
    }
}

fn decode_block(core: &mut Core, rip: u64, lin: u64, pa: u64, bitness: u32) -> ExecResult<Block> {
    let off = (lin & (PAGE - 1)) as usize;
    let in_page = PAGE as usize - off;
    // The page's bytes are fetched a window at a time (most blocks are a
    // few dozen bytes); the next page only when an instruction runs into
    // it. Bytes past `avail` are never read, so the buffer is not cleared.
    let mut bytes = [std::mem::MaybeUninit::<u8>::uninit(); PAGE as usize + 15];
    let mut avail = 0;
    let mut second: Option<u64> = None;
    let gen0 = core.ram().mark_code(pa);
    let mut instrs = Vec::with_capacity(16);
    let mut pos = 0usize;
    'fetch: loop {
        if pos + 15 > avail && avail < in_page {
            let upto = (avail + FETCH_WINDOW).min(in_page);
            let window = init_zero(&mut bytes[avail..upto]);
            core.read_lin(lin.wrapping_add(avail as u64), window, Access::Exec, false)?;
            avail = upto;
        }
        // One decoder for what has been fetched; a new one once an
        // instruction may run past it.
        let fetched = assume_init(&bytes[..avail]);
        let mut dec = Decoder::with_ip(
            bitness,
            &fetched[pos..],
            rip.wrapping_add(pos as u64),
            DecoderOptions::NONE,
        );
        loop {
            let mut ins = Instruction::default();
            dec.decode_out(&mut ins);
            if ins.code() == Code::INVALID && pos + 15 > avail {
                if avail < in_page {
                    // Cut off by the window: fetch more and decode again.
                    continue 'fetch;
                }
                if second.is_none() {
                    // Possibly truncated at the page end: fetch the next page.
                    let lin2 = lin.wrapping_add(in_page as u64);
                    let cr2 = core.cpu.cr2;
                    match core.translate(lin2, Access::Exec, false) {
                        Ok(p2) => {
                            let tail = init_zero(&mut bytes[in_page..in_page + 15]);
                            core.read_lin(lin2, tail, Access::Exec, false)?;
                            avail = in_page + 15;
                            second = Some(p2.pa);
                            continue 'fetch;
                        }
                        Err(f) => {
                            if instrs.is_empty() {
                                return Err(Stop::Fault(f));
                            }
                            // The block ends before the unmapped page; no
                            // fault is delivered, so CR2 stays as it was.
                            core.cpu.cr2 = cr2;
                            break 'fetch;
                        }
                    }
                }
            }
            let invalid = ins.code() == Code::INVALID;
            if invalid && over_15_bytes(&fetched[pos..], bitness) {
                // The decoder keeps the next IP and derives the IP from
                // the length: set both so the IP stays.
                let ip = ins.ip();
                ins.set_len(TOO_LONG);
                ins.set_next_ip(ip.wrapping_add(TOO_LONG as u64));
            }
            let len = ins.len().max(1);
            let flow = ins.flow_control();
            instrs.push(ins);
            pos += len;
            // A block runs on past conditional branches (the block loop
            // leaves it where one is taken) and ends at any other transfer.
            let goes_on = matches!(flow, FlowControl::Next | FlowControl::ConditionalBranch);
            if invalid || !goes_on || instrs.len() >= MAX_BLOCK || pos >= in_page {
                break 'fetch;
            }
            if pos + 15 > avail && avail < in_page {
                continue 'fetch;
            }
        }
    }
    let mut pages = [(pa, Cell::new(gen0)), (0, Cell::new(0))];
    let mut npages = 1;
    if let Some(p2) = second {
        if pos > in_page {
            pages[1] = (p2, Cell::new(core.ram().mark_code(p2)));
            npages = 2;
        }
    }
    let bytes = assume_init(&bytes[..pos.min(avail)]).into();
    if instrs.is_empty() {
        return Err(Stop::Fault(Fault::ud()));
    }
    let fast = instrs
        .iter()
        .map(|i| crate::fast::compile(i, bitness))
        .collect();
    Ok(Block {
        checked: Cell::new(u64::MAX),
        succ: Cell::new((0, 0, u32::MAX, 0, false)),
        global: false,
        hits: Cell::new(0),
        jit: Cell::new((0, 0, 0)),
        fast,
        instrs,
        lin,
        bitness,
        pages,
        npages,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::over_15_bytes;

    #[test]
    fn length_of_prefixed_instructions() {
        // Fourteen ES overrides and PUSH ES (undefined in 64-bit mode):
        // 15 bytes, #UD, not too long.
        let mut b = vec![0x26; 14];
        b.extend_from_slice(&[0x06, 0x04, 0x35, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x03]);
        assert!(!over_15_bytes(&b, 64));
        // Ten REX.R, REX, FISTTP m16 with SIB and disp32: 18 bytes.
        let mut b = vec![0x44; 10];
        b.extend_from_slice(&[0x40, 0xdf, 0x8c, 0xf4, 0xcc, 0xcc, 0xcc, 0xcc]);
        assert!(over_15_bytes(&b, 64));
        // Measured natively: with fourteen prefixes D4 ib is 16 bytes
        // (#GP), with thirteen 8D C0 (LEA of a register) is 15 (#UD).
        let mut b = vec![0x26; 14];
        b.extend_from_slice(&[0xd4, 0x0a, 0x90]);
        assert!(over_15_bytes(&b, 64));
        let mut b = vec![0x26; 13];
        b.extend_from_slice(&[0x8d, 0xc0, 0x90]);
        assert!(!over_15_bytes(&b, 64));
        let mut b = vec![0x26; 13];
        b.extend_from_slice(&[0x9a, 0, 0, 0, 0, 0, 0]);
        assert!(over_15_bytes(&b, 64));
    }
}
