//! The AVX2 gathers (VGATHERDPS/DPD/QPS/QPD, VPGATHERDD/DQ/QD/QQ): the
//! engine computes each element's address from the VSIB operand and loads
//! it itself, as the SDM's operation describes: the mask is first
//! extended from each element's top bit (every element of the vector
//! length, those above the elements used too), then the elements are
//! loaded in order, each clearing its mask element; a fault leaves the
//! elements before it loaded and their mask elements cleared, so the
//! instruction restarts where it stopped (both registers written at the
//! vector length, the destination only once an element was loaded, as
//! this host's CPU does). On
//! completion the mask is zero and the destination is cleared above the
//! elements used.

use iced_x86::{Instruction, Mnemonic, Register};

use crate::core::Core;
use crate::exception::ExecResult;
use crate::exec::avx::{get_ymm, note, set_ymm, vreg};
use crate::exec::ops;

/// Executes a gather (`ins.is_vsib()`).
pub fn exec(core: &mut Core, ins: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let esize = match ins.mnemonic() {
        M::Vgatherdps | M::Vgatherqps | M::Vpgatherdd | M::Vpgatherqd => 4,
        M::Vgatherdpd | M::Vgatherqpd | M::Vpgatherdq | M::Vpgatherqq => 8,
        _ => return core.unsupported(),
    };
    let isize = if ins.is_vsib64() { 8 } else { 4 };
    let (dest_n, dest_ymm) = vreg(ins.op0_register());
    let (mask_n, _) = vreg(ins.op2_register());
    let (index_n, index_ymm) = vreg(ins.memory_index());
    let count =
        (if dest_ymm { 32 } else { 16 } / esize).min(if index_ymm { 32 } else { 16 } / isize);
    // The vector length (VEX.L): 256 bits when either register is a YMM.
    let vl = if dest_ymm || index_ymm { 32 } else { 16 };
    let index = get_ymm(core, index_n);
    let mut dest = get_ymm(core, dest_n);
    let old_mask = get_ymm(core, mask_n);
    // Every mask element of the vector length is extended from its top
    // bit, those above the elements used too (a fault shows them so).
    let mut mask = [0u8; 32];
    for j in 0..vl / esize {
        if old_mask[j * esize + esize - 1] & 0x80 != 0 {
            mask[j * esize..(j + 1) * esize].fill(0xff);
        }
    }
    let seg = ops::seg_index(ins.memory_segment());
    let mut loaded = false;
    for j in 0..count {
        if mask[j * esize] != 0 {
            let off = offset(core, ins, &index, j);
            let mut e = [0u8; 8];
            if let Err(stop) = core.read_seg_buf(seg, off, &mut e[..esize]) {
                // As this host's CPU leaves them: the destination, once an
                // element was loaded, and the mask written at the vector
                // length (VEX.128 zeroes bits 128-255; VEX.256 keeps an
                // XMM destination's upper half); the destination untouched
                // before.
                if loaded {
                    set_ymm(core, dest_n, &dest, vl == 32);
                }
                set_ymm(core, mask_n, &mask, vl == 32);
                note(core, ins);
                return Err(stop);
            }
            dest[j * esize..(j + 1) * esize].copy_from_slice(&e[..esize]);
            loaded = true;
        }
        mask[j * esize..(j + 1) * esize].fill(0);
    }
    dest[count * esize..].fill(0);
    set_ymm(core, dest_n, &dest, dest_ymm);
    set_ymm(core, mask_n, &[0; 32], false);
    note(core, ins);
    Ok(())
}

/// The offset (before the segment base, within the address size) of
/// element `j`: base + sign-extended or 64-bit index element * scale +
/// displacement.
fn offset(core: &Core, ins: &Instruction, index: &[u8; 32], j: usize) -> u64 {
    ins.virtual_address(1, j, |r, elem, size| {
        if r.is_segment_register() {
            Some(0)
        } else if r.is_xmm() || r.is_ymm() {
            let at = (elem * size).min(32 - size);
            let mut b = [0u8; 8];
            b[..size.min(8)].copy_from_slice(&index[at..at + size.min(8)]);
            Some(u64::from_le_bytes(b))
        } else if r == Register::None {
            Some(0)
        } else {
            Some(ops::reg_get(&core.cpu, r))
        }
    })
    .unwrap_or(0)
}
