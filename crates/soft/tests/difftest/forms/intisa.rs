//! The integer forms of x86-64-v2/v3 and their companions (engine area
//! `exec/intisa.rs`): BMI1, BMI2, LZCNT/TZCNT/POPCNT at every size,
//! MOVBE, ADX, CRC32, FSGSBASE, RDRAND/RDSEED, PREFETCHW.

use iced_x86::{Code, Encoder, IcedError, Instruction, MemoryOperand, Mnemonic, Register};

use super::super::machine::{FS_BASE, GS_BASE};

pub const FORMS: &[Code] = &[
    // BMI1.
    Code::VEX_Andn_r32_r32_rm32,
    Code::VEX_Andn_r64_r64_rm64,
    Code::VEX_Bextr_r32_rm32_r32,
    Code::VEX_Bextr_r64_rm64_r64,
    Code::VEX_Blsi_r32_rm32,
    Code::VEX_Blsi_r64_rm64,
    Code::VEX_Blsmsk_r32_rm32,
    Code::VEX_Blsmsk_r64_rm64,
    Code::VEX_Blsr_r32_rm32,
    Code::VEX_Blsr_r64_rm64,
    Code::Tzcnt_r16_rm16,
    Code::Tzcnt_r32_rm32,
    Code::Tzcnt_r64_rm64,
    // BMI2.
    Code::VEX_Bzhi_r32_rm32_r32,
    Code::VEX_Bzhi_r64_rm64_r64,
    Code::VEX_Mulx_r32_r32_rm32,
    Code::VEX_Mulx_r64_r64_rm64,
    Code::VEX_Pdep_r32_r32_rm32,
    Code::VEX_Pdep_r64_r64_rm64,
    Code::VEX_Pext_r32_r32_rm32,
    Code::VEX_Pext_r64_r64_rm64,
    Code::VEX_Rorx_r32_rm32_imm8,
    Code::VEX_Rorx_r64_rm64_imm8,
    Code::VEX_Sarx_r32_rm32_r32,
    Code::VEX_Sarx_r64_rm64_r64,
    Code::VEX_Shlx_r32_rm32_r32,
    Code::VEX_Shlx_r64_rm64_r64,
    Code::VEX_Shrx_r32_rm32_r32,
    Code::VEX_Shrx_r64_rm64_r64,
    // LZCNT and POPCNT at 16 bits (int.rs has 32 and 64).
    Code::Lzcnt_r16_rm16,
    Code::Popcnt_r16_rm16,
    // MOVBE.
    Code::Movbe_r16_m16,
    Code::Movbe_r32_m32,
    Code::Movbe_r64_m64,
    Code::Movbe_m16_r16,
    Code::Movbe_m32_r32,
    Code::Movbe_m64_r64,
    // ADX.
    Code::Adcx_r32_rm32,
    Code::Adcx_r64_rm64,
    Code::Adox_r32_rm32,
    Code::Adox_r64_rm64,
    // CRC32 (SSE4.2).
    Code::Crc32_r32_rm8,
    Code::Crc32_r64_rm8,
    Code::Crc32_r32_rm16,
    Code::Crc32_r32_rm32,
    Code::Crc32_r64_rm64,
    // FSGSBASE (the machine sets CR4.FSGSBASE); see `settle`.
    Code::Rdfsbase_r32,
    Code::Rdfsbase_r64,
    Code::Rdgsbase_r32,
    Code::Rdgsbase_r64,
    Code::Wrfsbase_r32,
    Code::Wrfsbase_r64,
    Code::Wrgsbase_r32,
    Code::Wrgsbase_r64,
    // RDRAND/RDSEED: see `settle`.
    Code::Rdrand_r16,
    Code::Rdrand_r32,
    Code::Rdrand_r64,
    Code::Rdseed_r16,
    Code::Rdseed_r32,
    Code::Rdseed_r64,
    Code::Prefetchw_m8,
    Code::Prefetch_m8,
];

/// What the generator appends after an instruction of this area so the
/// snippet compares only what is deterministic (empty for most):
/// - RDRAND/RDSEED: PUSHFQ keeps their flags on the stack with CF
///   cleared (CF=0 says the entropy source was drained: the CPU gives it
///   under load, seen in a 1,000,000-snippet run beside a fuzzer, so it
///   is not deterministic; the other flags are cleared either way), the
///   register loses its random bits but keeps what shows it was written
///   at its size (a 16-bit write keeps bits 16-63, a 32-bit one clears
///   32-63), and POPFQ puts the flags back.
/// - WRFSBASE/WRGSBASE: the base is read back into the register (so the
///   value written, zero-extended from 32 bits or not, is compared) and
///   the machine's base restored, so later FS/GS-relative SSE accesses
///   stay aligned: PVM's KVM reports #UD for a misaligned SSE access at
///   CPL3 where the CPU raises #GP, an artifact the comparison avoids.
pub fn settle(ins: &Instruction, rip: u64) -> Vec<u8> {
    let r = ins.op_register(0);
    let list = match ins.mnemonic() {
        Mnemonic::Rdrand | Mnemonic::Rdseed => settle_random(r),
        Mnemonic::Wrfsbase => restore_base(r.full_register(), false),
        Mnemonic::Wrgsbase => restore_base(r.full_register(), true),
        _ => return Vec::new(),
    };
    let mut e = Encoder::new(64);
    let mut out = Vec::new();
    for ins in list.into_iter().flatten() {
        if e.encode(&ins, rip + out.len() as u64).is_err() {
            return Vec::new();
        }
        out.extend(e.take_buffer());
    }
    out
}

fn settle_random(r: Register) -> Vec<Result<Instruction, IcedError>> {
    let full = r.full_register();
    let settle = match r.size() {
        2 => Instruction::with2(Code::And_rm64_imm32, full, -0x1_0000i32),
        4 => Instruction::with2(Code::Shr_rm64_imm8, full, 32u32),
        _ => Instruction::with2(Code::And_rm64_imm32, full, 0i32),
    };
    vec![
        Ok(Instruction::with(Code::Pushfq)),
        Instruction::with2(
            Code::And_rm64_imm8,
            MemoryOperand::with_base(Register::RSP),
            -2i32,
        ),
        settle,
        Ok(Instruction::with(Code::Popfq)),
    ]
}

/// RD?SBASE r64; PUSH r64; MOV r64, machine base; WR?SBASE r64; POP r64.
fn restore_base(r: Register, gs: bool) -> Vec<Result<Instruction, IcedError>> {
    let (rd, wr, base) = if gs {
        (Code::Rdgsbase_r64, Code::Wrgsbase_r64, GS_BASE)
    } else {
        (Code::Rdfsbase_r64, Code::Wrfsbase_r64, FS_BASE)
    };
    vec![
        Instruction::with1(rd, r),
        Instruction::with1(Code::Push_r64, r),
        Instruction::with2(Code::Mov_r64_imm64, r, base),
        Instruction::with1(wr, r),
        Instruction::with1(Code::Pop_r64, r),
    ]
}
