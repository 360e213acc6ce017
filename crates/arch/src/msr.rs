//! Model-specific registers every vCPU gets before it runs: the values a
//! firmware would leave behind, so the kernel starts from a known state.

/// MSR indices used here.
pub mod index {
    pub const IA32_TSC: u32 = 0x10;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_MISC_ENABLE: u32 = 0x1a0;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// IA32_MISC_ENABLE: fast-string REP MOVS/STOS enabled.
const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// IA32_MTRR_DEF_TYPE: MTRRs enabled (bit 11), default type write-back (6).
/// With no variable ranges all memory is WB; without this Linux sees MTRRs
/// off and maps RAM uncached-minus in places.
const MTRR_ENABLE_WB_DEFAULT: u64 = (1 << 11) | 6;
/// IA32_PAT power-on value: WB, WT, UC-, UC, repeated.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// (index, value) pairs to write on every vCPU before boot.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    use index::*;
    vec![
        (IA32_SYSENTER_CS, 0),
        (IA32_SYSENTER_ESP, 0),
        (IA32_SYSENTER_EIP, 0),
        (STAR, 0),
        (CSTAR, 0),
        (KERNEL_GS_BASE, 0),
        (SFMASK, 0),
        (LSTAR, 0),
        (IA32_TSC, 0),
        (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (IA32_MTRR_DEF_TYPE, MTRR_ENABLE_WB_DEFAULT),
        (IA32_PAT, PAT_DEFAULT),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: u32) -> Option<u64> {
        boot_msrs()
            .into_iter()
            .find(|&(k, _)| k == i)
            .map(|(_, v)| v)
    }

    #[test]
    fn mtrr_default_is_write_back_and_enabled() {
        assert_eq!(value(index::IA32_MTRR_DEF_TYPE), Some(0x806));
    }

    #[test]
    fn fast_strings_and_pat() {
        assert_eq!(value(index::IA32_MISC_ENABLE), Some(1));
        assert_eq!(value(index::IA32_PAT), Some(0x0007_0406_0007_0406));
    }

    #[test]
    fn syscall_msrs_start_zero_and_no_duplicates() {
        for i in [
            index::STAR,
            index::LSTAR,
            index::CSTAR,
            index::SFMASK,
            index::KERNEL_GS_BASE,
            index::IA32_TSC,
        ] {
            assert_eq!(value(i), Some(0));
        }
        let mut seen: Vec<u32> = boot_msrs().iter().map(|&(k, _)| k).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), boot_msrs().len());
    }
}
