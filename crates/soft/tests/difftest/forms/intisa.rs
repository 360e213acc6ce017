//! The integer forms of x86-64-v2/v3 and their companions (engine area
//! `exec/intisa.rs`): BMI1, BMI2, LZCNT/TZCNT/POPCNT at every size,
//! MOVBE, ADX, CRC32, FSGSBASE, RDRAND/RDSEED, PREFETCHW.

use iced_x86::{Code, Encoder, Instruction, Mnemonic};

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
    // FSGSBASE (the machine sets CR4.FSGSBASE).
    Code::Rdfsbase_r32,
    Code::Rdfsbase_r64,
    Code::Rdgsbase_r32,
    Code::Rdgsbase_r64,
    Code::Wrfsbase_r32,
    Code::Wrfsbase_r64,
    Code::Wrgsbase_r32,
    Code::Wrgsbase_r64,
    // RDRAND/RDSEED: see `settle_random`.
    Code::Rdrand_r16,
    Code::Rdrand_r32,
    Code::Rdrand_r64,
    Code::Rdseed_r16,
    Code::Rdseed_r32,
    Code::Rdseed_r64,
    Code::Prefetchw_m8,
];

/// What follows a RDRAND/RDSEED so the snippet compares what is not
/// random: PUSHFQ keeps its flags (CF=1, the rest clear) on the stack,
/// the register loses its random bits but keeps what shows it was written
/// at its size (a 16-bit write keeps bits 16-63, a 32-bit one clears
/// 32-63), and POPFQ puts the flags back. Empty for other instructions.
pub fn settle_random(ins: &Instruction, rip: u64) -> Vec<u8> {
    if !matches!(ins.mnemonic(), Mnemonic::Rdrand | Mnemonic::Rdseed) {
        return Vec::new();
    }
    let r = ins.op_register(0).full_register();
    let settle = match ins.op_register(0).size() {
        2 => Instruction::with2(Code::And_rm64_imm32, r, -0x1_0000i32),
        4 => Instruction::with2(Code::Shr_rm64_imm8, r, 32u32),
        _ => Instruction::with2(Code::And_rm64_imm32, r, 0i32),
    };
    let Ok(settle) = settle else {
        return Vec::new();
    };
    let mut e = Encoder::new(64);
    let mut out = vec![0x9c]; // PUSHFQ
    if e.encode(&settle, rip).is_err() {
        return Vec::new();
    }
    out.extend(e.take_buffer());
    out.push(0x9d); // POPFQ
    out
}
