//! AES-NI, PCLMULQDQ and SHA forms (run by the host's instruction, `hostop`).

use iced_x86::Code;

pub const FORMS: &[Code] = &[
    Code::Aesimc_xmm_xmmm128,
    Code::Aesenc_xmm_xmmm128,
    Code::Aesenclast_xmm_xmmm128,
    Code::Aesdec_xmm_xmmm128,
    Code::Aesdeclast_xmm_xmmm128,
    Code::Aeskeygenassist_xmm_xmmm128_imm8,
    Code::Pclmulqdq_xmm_xmmm128_imm8,
    Code::Sha1nexte_xmm_xmmm128,
    Code::Sha1msg1_xmm_xmmm128,
    Code::Sha1msg2_xmm_xmmm128,
    Code::Sha256rnds2_xmm_xmmm128,
    Code::Sha256msg1_xmm_xmmm128,
    Code::Sha256msg2_xmm_xmmm128,
    Code::Sha1rnds4_xmm_xmmm128_imm8,
];
