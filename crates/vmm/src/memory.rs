//! Guest RAM: allocated from the x86-64 layout, and checked against what the
//! host has before anything is mapped.

use vm_memory::{GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Allocate { mib: u64, reason: String },
}

/// Allocates guest RAM of `mib` MiB laid out around the 32-bit MMIO hole.
pub fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let regions: Vec<(GuestAddress, usize)> = arch::ram_regions(mib << 20);
    GuestMemoryMmap::from_ranges(&regions).map_err(|e| MemoryError::Allocate {
        mib,
        reason: e.to_string(),
    })
}

/// The host's total RAM in MiB, from /proc/meminfo (`u64::MAX` if unknown,
/// so that an unreadable file never blocks a boot).
pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total_kib(&s))
        .map_or(u64::MAX, |kib| kib / 1024)
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn parses_meminfo() {
        let s = "MemTotal:       24573440 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total_kib(s), Some(24573440));
        assert_eq!(parse_mem_total_kib("garbage"), None);
    }

    #[test]
    fn allocates_the_requested_size() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(mem.iter().map(|r| r.len()).sum::<u64>(), 64 << 20);
    }
}
