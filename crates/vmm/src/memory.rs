//! Guest RAM: allocated from the x86-64 layout, and checked against what the
//! host has before anything is mapped.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Allocate { mib: u64, reason: String },
}

/// Allocates guest RAM of `mib` MiB laid out around the 32-bit MMIO hole.
pub fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let regions: Vec<(GuestAddress, usize)> = arch::ram_regions(mib << 20);
    let mem = GuestMemoryMmap::from_ranges(&regions).map_err(|e| MemoryError::Allocate {
        mib,
        reason: e.to_string(),
    })?;
    for r in mem.iter() {
        advise_huge_pages(r.as_ptr(), r.len() as usize);
    }
    Ok(mem)
}

/// Asks for transparent huge pages behind guest RAM (as QEMU and Cloud
/// Hypervisor do): a first touch then faults in 2 MiB instead of 4 KiB,
/// and host TLB misses on guest memory get rarer. Only advice: where the
/// host has THP off, nothing changes.
fn advise_huge_pages(host: *mut u8, len: usize) {
    // SAFETY: `host..host + len` is one mapping vm-memory just created and
    // owns; MADV_HUGEPAGE changes how the kernel backs it, never its
    // contents or its validity.
    let r = unsafe { libc::madvise(host.cast(), len, libc::MADV_HUGEPAGE) };
    if r != 0 {
        log::debug!(
            "guest memory: madvise(MADV_HUGEPAGE) failed: {}",
            std::io::Error::last_os_error()
        );
    }
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

    #[test]
    fn parses_meminfo() {
        let s = "MemTotal:       24573440 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total_kib(s), Some(24573440));
        assert_eq!(parse_mem_total_kib("garbage"), None);
    }

    /// Guest RAM carries the huge-page advice (VmFlags "hg" in smaps)
    /// where the host kernel has transparent huge pages at all.
    #[test]
    fn guest_ram_is_advised_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("no transparent huge pages on this host: nothing to check");
            return;
        }
        let mem = create_guest_memory(64).unwrap();
        let addr = mem.iter().next().unwrap().as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(f) = line.strip_prefix("VmFlags:") {
                    flags = Some(f.to_string());
                }
            }
        }
        let flags = flags.expect("guest RAM's mapping in smaps");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "VmFlags:{flags}"
        );
    }

    #[test]
    fn allocates_the_requested_size() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(mem.iter().map(|r| r.len()).sum::<u64>(), 64 << 20);
    }
}
