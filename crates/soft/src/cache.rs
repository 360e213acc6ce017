//! Decoded basic blocks, cached by linear RIP and validated on every entry
//! against the physical page they were decoded from and that page's code
//! generation, so guest writes to code (through any mapping, by any vCPU)
//! and remappings both lead to a fresh decode.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction};

use crate::core::Core;
use crate::exception::{ExecResult, Fault, Stop};
use crate::fast::Fast;
use crate::mmu::Access;
use crate::phys::PAGE;

/// The most instructions in one block.
const MAX_BLOCK: usize = 64;

/// A decoded run of instructions ending at a control transfer, a page
/// boundary or `MAX_BLOCK`.
#[derive(Debug)]
pub struct Block {
    pub instrs: Vec<Instruction>,
    /// The pre-resolved form of each instruction (`Kind::Generic` when
    /// the interpreter runs it).
    pub fast: Vec<Fast>,
    bitness: u32,
    /// Physical page(s) the bytes came from, with their code generations.
    pages: [(u64, u32); 2],
    npages: usize,
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

/// The block cache of one vCPU.
#[derive(Default)]
pub struct BlockCache {
    map: HashMap<u64, Arc<Block>, BuildHasherDefault<AddrHasher>>,
}

impl BlockCache {
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// The block starting at the current RIP, decoded if needed.
    pub fn lookup(&mut self, core: &mut Core) -> ExecResult<Arc<Block>> {
        let rip = core.cpu.rip;
        let lin = core.seg_lin(crate::cpu::CS, rip, 1, false)?;
        let page = core.translate(lin, Access::Exec, false)?;
        let bitness = core.cpu.bitness();
        if let Some(b) = self.map.get(&lin) {
            if b.bitness == bitness && b.pages[0].0 == page.pa && valid(core, b) {
                return Ok(b.clone());
            }
        }
        let b = Arc::new(decode_block(core, rip, lin, page.pa, bitness)?);
        if self.map.len() > 1 << 16 {
            self.map.clear();
        }
        self.map.insert(lin, b.clone());
        Ok(b)
    }
}

fn valid(core: &Core, b: &Block) -> bool {
    b.pages[..b.npages]
        .iter()
        .all(|&(pa, gen)| core.ram().generation(pa) == gen)
}

fn decode_block(core: &mut Core, rip: u64, lin: u64, pa: u64, bitness: u32) -> ExecResult<Block> {
    let off = (lin & (PAGE - 1)) as usize;
    let in_page = PAGE as usize - off;
    let mut bytes = vec![0u8; in_page + 15];
    core.read_lin(lin, &mut bytes[..in_page], Access::Exec, false)?;
    // The next page is fetched only when an instruction runs into it.
    let mut avail = in_page;
    let mut second: Option<u64> = None;
    let gen0 = core.ram().mark_code(pa);
    let mut instrs = Vec::new();
    let mut pos = 0usize;
    loop {
        let mut dec = Decoder::with_ip(
            bitness,
            &bytes[pos..avail],
            rip.wrapping_add(pos as u64),
            DecoderOptions::NONE,
        );
        let mut ins = Instruction::default();
        dec.decode_out(&mut ins);
        if ins.code() == Code::INVALID && pos + 15 > avail && second.is_none() && avail == in_page {
            // Possibly truncated at the page end: fetch the next page.
            let lin2 = lin.wrapping_add(in_page as u64);
            match core.translate(lin2, Access::Exec, false) {
                Ok(p2) => {
                    let mut tail = [0u8; 15];
                    core.read_lin(lin2, &mut tail, Access::Exec, false)?;
                    bytes[in_page..in_page + 15].copy_from_slice(&tail);
                    avail = in_page + 15;
                    second = Some(p2.pa);
                    continue;
                }
                Err(f) => {
                    if instrs.is_empty() {
                        return Err(Stop::Fault(f));
                    }
                    break;
                }
            }
        }
        let len = ins.len().max(1);
        let flow = ins.flow_control();
        let invalid = ins.code() == Code::INVALID;
        instrs.push(ins);
        pos += len;
        if invalid || flow != FlowControl::Next || instrs.len() >= MAX_BLOCK || pos >= in_page {
            break;
        }
    }
    let mut pages = [(pa, gen0), (0, 0)];
    let mut npages = 1;
    if let Some(p2) = second {
        if pos > in_page {
            pages[1] = (p2, core.ram().mark_code(p2));
            npages = 2;
        }
    }
    if instrs.is_empty() {
        return Err(Stop::Fault(Fault::ud()));
    }
    let fast = instrs
        .iter()
        .map(|i| crate::fast::compile(i, bitness))
        .collect();
    Ok(Block {
        fast,
        instrs,
        bitness,
        pages,
        npages,
    })
}
