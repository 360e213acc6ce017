//! The integer instructions of x86-64-v2/v3 and their companions: BMI1
//! (ANDN, BEXTR, BLSI, BLSMSK, BLSR, TZCNT), BMI2 (BZHI, MULX, PDEP,
//! PEXT, RORX, SARX, SHLX, SHRX), LZCNT and POPCNT, MOVBE, ADX (ADCX,
//! ADOX), CRC32 (SSE4.2), FSGSBASE (RD/WR FS/GS BASE) and RDRAND/RDSEED.
//!
//! Each raises #UD when the vCPU's CPUID model lacks its feature, as a
//! CPU without it does; TZCNT and LZCNT are REP-prefixed BSF and BSR
//! there, and run as those. The VEX forms' decoding rules (VEX.L, the
//! prefixes before VEX) are iced-x86's, which decodes them as the CPU
//! does and gives `INVALID` (#UD) otherwise.

use iced_x86::{Code, Instruction, Mnemonic};

use super::ops::{self, read, write};
use crate::core::{canonical, Core};
use crate::cpu::{FS, GS, RDX};
use crate::cpuid::Feature;
use crate::exception::{ExecResult, Fault};
use crate::flags::{mask, CF, OF};

/// CR4.FSGSBASE: RD/WR FS/GS BASE allowed.
const CR4_FSGSBASE: u64 = 1 << 16;

/// The feature an instruction handled here needs.
fn feature(m: Mnemonic) -> Option<Feature> {
    use Mnemonic as M;
    Some(match m {
        M::Andn | M::Bextr | M::Blsi | M::Blsmsk | M::Blsr | M::Tzcnt => Feature::Bmi1,
        M::Bzhi | M::Mulx | M::Pdep | M::Pext | M::Rorx | M::Sarx | M::Shlx | M::Shrx => {
            Feature::Bmi2
        }
        M::Lzcnt => Feature::Lzcnt,
        M::Popcnt => Feature::Popcnt,
        M::Movbe => Feature::Movbe,
        M::Adcx | M::Adox => Feature::Adx,
        M::Crc32 => Feature::Sse42,
        M::Rdfsbase | M::Rdgsbase | M::Wrfsbase | M::Wrgsbase => Feature::Fsgsbase,
        M::Rdrand => Feature::Rdrand,
        M::Rdseed => Feature::Rdseed,
        _ => return None,
    })
}

/// Whether `m` is one of this module's mnemonics.
pub fn handles(m: Mnemonic) -> bool {
    feature(m).is_some()
}

/// Executes one of this module's instructions.
pub fn exec(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    let Some(f) = feature(m) else {
        return Err(Fault::ud().into());
    };
    if !core.features.has(f) {
        return match m {
            // F3 0F BC/BD on a CPU without BMI1/LZCNT: REP BSF/BSR.
            M::Tzcnt => super::bits::scan(core, ins, M::Bsf),
            M::Lzcnt => super::bits::scan(core, ins, M::Bsr),
            _ => Err(Fault::ud().into()),
        };
    }
    match m {
        M::Tzcnt | M::Lzcnt | M::Popcnt => super::bits::scan(core, ins, m),
        M::Andn | M::Bextr | M::Bzhi => three_flags(core, ins, m),
        M::Blsi | M::Blsmsk | M::Blsr => bls(core, ins, m),
        M::Mulx => mulx(core, ins),
        M::Pdep | M::Pext | M::Rorx | M::Sarx | M::Shlx | M::Shrx => three_no_flags(core, ins, m),
        M::Movbe => movbe(core, ins),
        M::Adcx | M::Adox => adx(core, ins, m == M::Adox),
        M::Crc32 => crc32(core, ins),
        M::Rdfsbase | M::Rdgsbase | M::Wrfsbase | M::Wrgsbase => fsgsbase(core, ins, m),
        _ => rdrand(core, ins),
    }
}

/// Sets SF, ZF from `res` (and PF, which these instructions leave
/// undefined), CF as given, OF and AF clear.
fn set_flags(core: &mut Core, size: u32, res: u64, cf: bool) {
    core.cpu.flags.set_szp(size, res, cf, false);
}

/// ANDN (dest = !src1 & src2), BEXTR (a bit field of src1 at start
/// src2[7:0], length src2[15:8]), BZHI (src1 with the bits from index
/// src2[7:0] up cleared).
fn three_flags(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let a = read(core, ins, 1, size)?;
    let b = read(core, ins, 2, size)?;
    let (res, cf) = match m {
        Mnemonic::Andn => (!a & b & mask(size), false),
        Mnemonic::Bextr => (bextr(a, b, size), false),
        _ => bzhi(a, b, size),
    };
    write(core, ins, 0, size, res)?;
    set_flags(core, size, res, cf);
    Ok(())
}

fn bextr(src: u64, control: u64, size: u32) -> u64 {
    let start = (control & 0xff) as u32;
    let len = ((control >> 8) & 0xff) as u32;
    if start >= size {
        return 0;
    }
    (src >> start) & mask(len.min(64))
}

/// BZHI's result and CF (set when the index is beyond the operand).
fn bzhi(src: u64, index: u64, size: u32) -> (u64, bool) {
    let n = (index & 0xff) as u32;
    if n >= size {
        (src & mask(size), true)
    } else {
        (src & mask(n), false)
    }
}

/// BLSI (lowest set bit), BLSMSK (mask up to it), BLSR (it cleared); CF
/// says whether the source was zero (BLSI: non-zero).
fn bls(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let v = read(core, ins, 1, size)?;
    let res = match m {
        Mnemonic::Blsi => v.wrapping_neg() & v,
        Mnemonic::Blsmsk => v.wrapping_sub(1) ^ v,
        _ => v.wrapping_sub(1) & v,
    } & mask(size);
    let cf = if m == Mnemonic::Blsi { v != 0 } else { v == 0 };
    write(core, ins, 0, size, res)?;
    set_flags(core, size, res, cf);
    Ok(())
}

/// MULX hi, lo, src: RDX/EDX × src unsigned, no flags. When both
/// destinations are one register it holds the high half.
fn mulx(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let src = read(core, ins, 2, size)?;
    let d = core.cpu.gpr[RDX] & mask(size);
    let p = u128::from(d) * u128::from(src);
    let (hi, lo) = if size == 64 {
        ((p >> 64) as u64, p as u64)
    } else {
        ((p >> 32) as u64, p as u64 & mask(32))
    };
    write(core, ins, 1, size, lo)?;
    write(core, ins, 0, size, hi)
}

/// PDEP, PEXT, RORX, SARX, SHLX, SHRX: no flags.
fn three_no_flags(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    let size = ops::op_size(ins, 0);
    let a = read(core, ins, 1, size)?;
    let count_mask = u64::from(size - 1);
    let res = match m {
        M::Rorx => {
            let n = u64::from(ins.immediate8()) & count_mask;
            rotate_right(a, n as u32, size)
        }
        _ => {
            let b = read(core, ins, 2, size)?;
            match m {
                M::Pdep => pdep(a, b),
                M::Pext => pext(a, b),
                M::Shlx => a << (b & count_mask),
                M::Shrx => a >> (b & count_mask),
                _ => (ops::sext(a, size) as i64 >> (b & count_mask)) as u64,
            }
        }
    } & mask(size);
    write(core, ins, 0, size, res)
}

fn rotate_right(v: u64, n: u32, size: u32) -> u64 {
    if size == 64 {
        v.rotate_right(n)
    } else {
        u64::from((v as u32).rotate_right(n))
    }
}

/// Deposits the low bits of `src` at the set bits of `mask`.
fn pdep(src: u64, mut mask: u64) -> u64 {
    let mut res = 0;
    let mut k = 0;
    while mask != 0 {
        let low = mask & mask.wrapping_neg();
        if (src >> k) & 1 != 0 {
            res |= low;
        }
        k += 1;
        mask &= mask - 1;
    }
    res
}

/// Gathers the bits of `src` at the set bits of `mask` into the low bits.
fn pext(src: u64, mut mask: u64) -> u64 {
    let mut res = 0;
    let mut k = 0;
    while mask != 0 {
        let low = mask & mask.wrapping_neg();
        if src & low != 0 {
            res |= 1 << k;
        }
        k += 1;
        mask &= mask - 1;
    }
    res
}

/// MOVBE: a load or store with the bytes reversed (the register form
/// does not exist: that encoding is CRC32 or #UD).
fn movbe(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let v = read(core, ins, 1, size)?;
    let swapped = v.swap_bytes() >> (64 - size);
    write(core, ins, 0, size, swapped)
}

/// ADCX (carry in and out through CF) and ADOX (through OF): unsigned
/// add with carry, no other flag touched.
fn adx(core: &mut Core, ins: &Instruction, overflow: bool) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let src = read(core, ins, 1, size)?;
    let dst = read(core, ins, 0, size)?;
    let flags = core.cpu.flags.get();
    let bit = if overflow { OF } else { CF };
    let cin = u128::from(flags & bit != 0);
    let sum = u128::from(dst) + u128::from(src) + cin;
    let res = sum as u64 & mask(size);
    let cout = (sum >> size) & 1 != 0;
    write(core, ins, 0, size, res)?;
    core.cpu
        .flags
        .set_arith((flags & !bit) | if cout { bit } else { 0 });
    Ok(())
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of the source's
/// bytes, low byte first, accumulated onto the destination's low 32 bits.
fn crc32(core: &mut Core, ins: &Instruction) -> ExecResult {
    let src_size = ops::op_size(ins, 1);
    let dst_size = ops::op_size(ins, 0);
    let src = read(core, ins, 1, src_size)?;
    let mut crc = read(core, ins, 0, dst_size)? as u32;
    for i in 0..src_size / 8 {
        crc = crc32c_byte(crc, (src >> (8 * i)) as u8);
    }
    write(core, ins, 0, dst_size, u64::from(crc))
}

const CRC32C_POLY: u32 = 0x82f6_3b78;

/// One byte into a reflected CRC-32C, eight bit steps (a table would be
/// faster; CRC32 is rare in guests that do not have a table of their own).
fn crc32c_byte(mut crc: u32, byte: u8) -> u32 {
    crc ^= u32::from(byte);
    for _ in 0..8 {
        crc = if crc & 1 != 0 {
            (crc >> 1) ^ CRC32C_POLY
        } else {
            crc >> 1
        };
    }
    crc
}

/// RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE: 64-bit mode only (iced-x86
/// decodes them only there), #UD unless CR4.FSGSBASE, #GP(0) for a
/// non-canonical base.
fn fsgsbase(core: &mut Core, ins: &Instruction, m: Mnemonic) -> ExecResult {
    use Mnemonic as M;
    if core.cpu.cr4 & CR4_FSGSBASE == 0 || !core.cpu.mode64() {
        return Err(Fault::ud().into());
    }
    let seg = if matches!(m, M::Rdfsbase | M::Wrfsbase) {
        FS
    } else {
        GS
    };
    let size = ops::op_size(ins, 0);
    if matches!(m, M::Rdfsbase | M::Rdgsbase) {
        let base = core.cpu.seg[seg].base & mask(size);
        return write(core, ins, 0, size, base);
    }
    let v = read(core, ins, 0, size)?;
    if !canonical(v) {
        return Err(Fault::gp(0).into());
    }
    core.cpu.seg[seg].base = v;
    Ok(())
}

/// RDRAND/RDSEED: a random value (from the host kernel's generator,
/// which the host's own RDRAND/RDSEED feed), CF=1 for "valid", OF, SF,
/// ZF, AF and PF clear. The 16-bit forms keep the register's upper bits.
fn rdrand(core: &mut Core, ins: &Instruction) -> ExecResult {
    let size = ops::op_size(ins, 0);
    let Some(v) = host_random() else {
        // No randomness to give: "not ready", CF=0 and a zero result, as
        // the CPU answers when its generator is exhausted.
        write(core, ins, 0, size, 0)?;
        core.cpu.flags.set_arith(0);
        return Ok(());
    };
    write(core, ins, 0, size, v & mask(size))?;
    core.cpu.flags.set_arith(CF);
    Ok(())
}

/// Eight random bytes from getrandom(2), or `None` if it failed.
fn host_random() -> Option<u64> {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`, a
    // live, writable local array; GRND_NONBLOCK keeps it from blocking.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    (n == buf.len() as isize).then(|| u64::from_le_bytes(buf))
}

/// CMPXCHG16B: #UD without CX16, #GP(0) unless the operand's linear
/// address is 16-byte aligned.
pub fn cmpxchg16b(core: &mut Core, ins: &Instruction) -> ExecResult {
    if !core.features.has(Feature::Cx16) || ins.code() != Code::Cmpxchg16b_m128 {
        return Err(Fault::ud().into());
    }
    super::alu::cmpxchg_wide(core, ins, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_deposit_and_extract() {
        assert_eq!(pdep(0b1011, 0xf0f0), 0xb0);
        assert_eq!(pdep(0xff, 0x8000_0000_0000_0001), 0x8000_0000_0000_0001);
        assert_eq!(pext(0xabcd, 0xff00), 0xab);
        assert_eq!(pext(u64::MAX, 0), 0);
        assert_eq!(pext(pdep(0x1234, 0xf0f0_f0f0), 0xf0f0_f0f0), 0x1234);
    }

    #[test]
    fn field_extract_and_zero_high() {
        assert_eq!(bextr(0xabcd, 0x0804, 32), 0xbc);
        assert_eq!(bextr(u64::MAX, 0xff00, 64), u64::MAX);
        assert_eq!(bextr(u64::MAX, 0x0040, 64), 0);
        assert_eq!(bzhi(0xffff, 4, 32), (0xf, false));
        assert_eq!(bzhi(0xffff_ffff_ffff, 40, 32), (0xffff_ffff, true));
        assert_eq!(bzhi(7, 0x100, 64), (0, false));
    }

    /// The standard check value of CRC-32C: "123456789" gives 0xE3069283
    /// (initial value and final XOR all ones).
    #[test]
    fn crc32c_check_value() {
        let crc = b"123456789".iter().fold(!0, |c, &b| crc32c_byte(c, b));
        assert_eq!(!crc, 0xe306_9283);
    }
}

#[cfg(test)]
mod decode_tests {
    use iced_x86::{Decoder, DecoderOptions};

    fn invalid(bytes: &[u8]) -> bool {
        Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE)
            .decode()
            .is_invalid()
    }

    /// The SDM's #UD cases of the VEX-encoded GPR forms come out of the
    /// decoder as INVALID, which the dispatch turns into #UD (each byte
    /// string here was also run natively on the host: SIGILL exactly
    /// where `invalid` says).
    #[test]
    fn vex_gpr_forms_reject_what_the_cpu_rejects() {
        // andn eax, ebx, ecx: VEX.L=0 is valid, VEX.L=1 is not.
        assert!(!invalid(&[0xc4, 0xe2, 0x60, 0xf2, 0xc1]));
        assert!(invalid(&[0xc4, 0xe2, 0x64, 0xf2, 0xc1]));
        // 66, F3 or REX before VEX.
        assert!(invalid(&[0x66, 0xc4, 0xe2, 0x60, 0xf2, 0xc1]));
        assert!(invalid(&[0xf3, 0xc4, 0xe2, 0x60, 0xf2, 0xc1]));
        assert!(invalid(&[0x41, 0xc4, 0xe2, 0x60, 0xf2, 0xc1]));
        // rorx eax, ecx, 3: VEX.vvvv must be 1111b.
        assert!(!invalid(&[0xc4, 0xe3, 0x7b, 0xf0, 0xc1, 0x03]));
        assert!(invalid(&[0xc4, 0xe3, 0x73, 0xf0, 0xc1, 0x03]));
        // shlx eax, ecx, ebx with VEX.L=1.
        assert!(!invalid(&[0xc4, 0xe2, 0x61, 0xf7, 0xc1]));
        assert!(invalid(&[0xc4, 0xe2, 0x65, 0xf7, 0xc1]));
    }
}
