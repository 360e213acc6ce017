//! The AVX2 gathers' VSIB operands. A gather is drawn as a short
//! sequence: a JMP over a data block in the code page (the index
//! elements and a mask), VMOVDQU loads of the index register (and in
//! most cases the mask register) from that block, RIP-relative, then the
//! gather. The index elements are chosen so each element's address
//! (base + index * scale + displacement) lands in the data pages, or, in
//! some snippets, one element past them in an unmapped page (or
//! straddling into it) so the gather faults part-way and the partial
//! state (the elements loaded, the mask elements cleared) is compared.
//! Addressing is either absolute (no base: the addresses are known) or
//! off a base register of the data pages with small index values. In one
//! gather in twelve two of the destination, index and mask registers are
//! the same (#UD).

use iced_x86::{Code, Instruction, MemoryOperand, Mnemonic, OpCodeOperandKind as K, Register as R};

use super::gen::{encode, Rng};
use super::machine::{DATA, DATA_LEN, STACK};
use super::operands::{pick, XMMS, YMMS};
use super::prefix;

/// Is `code` a gather (a form with a VSIB operand)?
pub fn is_gather(code: Code) -> bool {
    let oc = code.op_code();
    (0..oc.op_count()).any(|i| {
        matches!(
            oc.op_kind(i),
            K::mem_vsib32x | K::mem_vsib32y | K::mem_vsib64x | K::mem_vsib64y
        )
    })
}

/// Element size of the gather's loads.
fn element_size(code: Code) -> i64 {
    use Mnemonic as M;
    match code.mnemonic() {
        M::Vgatherdpd | M::Vgatherqpd | M::Vpgatherdq | M::Vpgatherqq => 8,
        _ => 4,
    }
}

/// How the element addresses are formed.
enum Addressing {
    /// No base: element address = index * scale + displacement, exactly.
    Absolute(i64),
    /// A base register of the data pages (its value drawn later, within
    /// [DATA+0x200, DATA+DATA_LEN-0x200)) plus a small displacement.
    Based(R, i64),
}

/// One index element: its address in the data pages (or, with `fault`,
/// in the unmapped pages around them), as an index for `scale`.
fn index_value(rng: &mut Rng, a: &Addressing, scale: i64, esize: i64, fault: bool) -> i64 {
    match *a {
        Addressing::Absolute(disp) => {
            let lo = DATA as i64;
            let hi = DATA as i64 + DATA_LEN as i64 - esize;
            let target = if !fault {
                lo + rng.below((hi - lo + 1) as u64) as i64
            } else {
                match rng.below(4) {
                    // Straddling the end of the data pages.
                    0 => hi + 1 + rng.below(esize as u64 - 1) as i64,
                    // Straddling the start of the stack page from below.
                    1 => STACK as i64 - 1 - rng.below(esize as u64 - 1) as i64,
                    // In the unmapped page after the data.
                    2 => hi + esize + rng.below(0x800) as i64,
                    _ => STACK as i64 - 0x800 + rng.below(0x700) as i64,
                }
            };
            // Round a normal element into the data pages, a faulting one
            // away from them.
            let d = target - disp;
            if fault && target < lo {
                d.div_euclid(scale)
            } else if fault {
                (d + scale - 1).div_euclid(scale)
            } else {
                (d + scale - 1)
                    .div_euclid(scale)
                    .min((hi - disp).div_euclid(scale))
            }
        }
        Addressing::Based(..) => {
            let off = if fault {
                0x2400 + rng.below(0x400) as i64
            } else {
                rng.below(0x200) as i64 - 0x100
            };
            off / scale
        }
    }
}

/// A drawn gather of form `code` at `rip`: the bytes of the whole
/// sequence and the gather's decoding (an invalid decoding for the #UD
/// case).
pub fn draw(rng: &mut Rng, code: Code, rip: u64) -> Option<(Vec<u8>, Instruction)> {
    let oc = code.op_code();
    let (index_ymm, isize) = match oc.op_kind(1) {
        K::mem_vsib32x => (false, 4),
        K::mem_vsib32y => (true, 4),
        K::mem_vsib64x => (false, 8),
        K::mem_vsib64y => (true, 8),
        _ => return None,
    };
    let dest_ymm = oc.op_kind(0) == K::ymm_reg;
    let esize = element_size(code);
    let count =
        ((if dest_ymm { 32 } else { 16 }) / esize).min((if index_ymm { 32 } else { 16 }) / isize);
    // Registers: distinct, except in the #UD case.
    let mut n = Vec::with_capacity(3);
    while n.len() < 3 {
        let r = rng.below(16) as usize;
        if !n.contains(&r) {
            n.push(r);
        }
    }
    if rng.below(12) == 0 {
        let (a, b) = [(0, 1), (0, 2), (1, 2)][rng.below(3) as usize];
        n[b] = n[a];
    }
    let vreg = |ymm: bool, i: usize| if ymm { YMMS[i] } else { XMMS[i] };
    let (dest, index, mask) = (
        vreg(dest_ymm, n[0]),
        vreg(index_ymm, n[1]),
        vreg(dest_ymm, n[2]),
    );
    let scale = 1i64 << rng.below(4);
    let addressing = if rng.below(2) == 0 {
        Addressing::Absolute(DATA as i64 + rng.below(DATA_LEN as u64) as i64)
    } else {
        Addressing::Based(
            pick(rng, &[R::RBX, R::RSI, R::RDI, R::RBP]),
            rng.below(256) as i64 - 128,
        )
    };
    // One element in four snippets' gathers leaves the mapped pages.
    let fault_at = (rng.below(4) == 0).then(|| rng.below(count as u64) as i64);
    let mut block = [0u8; 64];
    for j in 0..32 / isize {
        let v = if j < count {
            index_value(rng, &addressing, scale, esize, fault_at == Some(j))
        } else {
            rng.value() as i64
        };
        let at = (j * isize) as usize;
        block[at..at + isize as usize].copy_from_slice(&v.to_le_bytes()[..isize as usize]);
    }
    // The mask: each element's top bit set in three cases in four, or
    // all set, or the prologue's random value (no load).
    let load_mask = rng.below(4) != 0;
    let all = rng.below(4) == 0;
    for j in 0..32 / esize {
        let mut v = rng.value();
        if all || rng.below(4) != 0 {
            v |= 1 << 63;
        } else {
            v &= !(1 << 63);
        }
        let bytes = v.to_le_bytes();
        let at = (32 + j * esize) as usize;
        block[at..at + esize as usize].copy_from_slice(&bytes[8 - esize as usize..]);
    }
    // JMP over the block, the loads, the gather.
    let mut b = vec![0xeb, block.len() as u8];
    b.extend_from_slice(&block);
    let data_at = rip + 2;
    let load = |b: &mut Vec<u8>, r: usize, at: u64| -> Option<()> {
        let m = MemoryOperand::with_base_displ(R::RIP, at as i64);
        let ins = Instruction::with2(Code::VEX_Vmovdqu_ymm_ymmm256, YMMS[r], m).ok()?;
        let (bytes, _) = encode(&ins, rip + b.len() as u64)?;
        b.extend(bytes);
        Some(())
    };
    load(&mut b, n[1], data_at)?;
    if load_mask {
        load(&mut b, n[2], data_at + 32)?;
    }
    let (base, disp) = match addressing {
        Addressing::Absolute(d) => (R::None, d),
        Addressing::Based(r, d) => (r, d),
    };
    let mem = MemoryOperand::new(
        base,
        index,
        scale as u32,
        disp,
        if base == R::None { 4 } else { 1 },
        false,
        R::None,
    );
    let gather = Instruction::with3(code, dest, mem, mask).ok()?;
    let at = rip + b.len() as u64;
    let mut e = iced_x86::Encoder::new(64);
    e.encode(&gather, at).ok()?;
    let (g, ins) = prefix::decoded(e.take_buffer(), at)?;
    b.extend(g);
    Some((b, ins))
}
