//! Reads a process's memory from `/proc/PID/smaps`: each mapping's size,
//! resident and proportional set, and the split between guest RAM (the one
//! anonymous mapping exactly as large as the guest's memory, as
//! Firecracker's memory monitor finds it) and everything else, the VMM's
//! own overhead.

use std::fmt;

/// Why a process's memory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SmapsError {
    /// The smaps file could not be read (the process is gone, or it is
    /// another user's).
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No single anonymous mapping has the guest memory's size.
    #[error("{found} anonymous mappings of {mib} MiB (guest ram) instead of 1: cannot tell guest memory from the vmm's")]
    GuestMapping {
        /// The guest memory size looked for.
        mib: u64,
        /// How many matched.
        found: usize,
    },
}

/// One mapping's numbers, in KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The header line's path column: a file, `[heap]`, `[stack]`, a
    /// `/memfd:` name, or empty for anonymous memory.
    pub name: String,
    /// The mapping's inode (0 for anonymous memory).
    pub inode: u64,
    /// Virtual size.
    pub size_kib: u64,
    /// Resident pages.
    pub rss_kib: u64,
    /// Resident pages, each divided by how many times it is mapped.
    pub pss_kib: u64,
}

impl Mapping {
    /// Private anonymous memory with no name (guest RAM is such a mapping).
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && self.name.is_empty()
    }

    /// A short label for a table.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            "[anonymous]"
        } else {
            &self.name
        }
    }
}

/// The parsed mappings of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smaps {
    /// In address order.
    pub mappings: Vec<Mapping>,
}

/// A process's memory split into guest RAM and the VMM's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySplit {
    /// Rss of every mapping, KiB.
    pub total_rss_kib: u64,
    /// Rss of the guest RAM mapping (guest memory touched), KiB.
    pub guest_rss_kib: u64,
    /// Pss of every mapping but guest RAM, KiB (pages mapped twice in the
    /// process, like a JIT's write and execute views, count once).
    pub overhead_pss_kib: u64,
    /// The largest mappings other than guest RAM, by Rss, largest first.
    pub largest: Vec<Mapping>,
}

impl MemorySplit {
    /// Rss minus guest memory touched, KiB: Firecracker's overhead measure.
    pub fn overhead_rss_kib(&self) -> u64 {
        self.total_rss_kib.saturating_sub(self.guest_rss_kib)
    }
}

impl Smaps {
    /// Reads `/proc/<pid>/smaps`.
    pub fn read(pid: u32) -> Result<Smaps, SmapsError> {
        let path = format!("/proc/{pid}/smaps");
        let text = std::fs::read_to_string(&path).map_err(|source| SmapsError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Smaps::parse(&text))
    }

    /// Parses smaps text. Lines that fit neither a mapping header nor a
    /// `Key: N kB` field are skipped.
    pub fn parse(text: &str) -> Smaps {
        let mut mappings: Vec<Mapping> = Vec::new();
        for line in text.lines() {
            if let Some(m) = parse_header(line) {
                mappings.push(m);
                continue;
            }
            let (Some(last), Some((key, kib))) = (mappings.last_mut(), parse_field(line)) else {
                continue;
            };
            match key {
                "Size" => last.size_kib = kib,
                "Rss" => last.rss_kib = kib,
                "Pss" => last.pss_kib = kib,
                _ => {}
            }
        }
        Smaps { mappings }
    }

    /// Splits the memory into guest RAM (the one anonymous mapping of
    /// `guest_mib`) and the rest; `keep` largest other mappings are kept.
    pub fn split(&self, guest_mib: u64, keep: usize) -> Result<MemorySplit, SmapsError> {
        let guest_kib = guest_mib.saturating_mul(1024);
        let is_guest = |m: &Mapping| m.is_anonymous() && m.size_kib == guest_kib;
        let found = self.mappings.iter().filter(|m| is_guest(m)).count();
        let guest = match self.mappings.iter().find(|m| is_guest(m)) {
            Some(g) if found == 1 => g,
            _ => {
                return Err(SmapsError::GuestMapping {
                    mib: guest_mib,
                    found,
                })
            }
        };
        let mut others: Vec<Mapping> = self
            .mappings
            .iter()
            .filter(|m| !is_guest(m))
            .cloned()
            .collect();
        let overhead_pss_kib = others.iter().map(|m| m.pss_kib).sum();
        others.sort_by_key(|m| std::cmp::Reverse(m.rss_kib));
        others.truncate(keep);
        Ok(MemorySplit {
            total_rss_kib: self.mappings.iter().map(|m| m.rss_kib).sum(),
            guest_rss_kib: guest.rss_kib,
            overhead_pss_kib,
            largest: others,
        })
    }
}

/// `start-end perms offset dev inode [path]`.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut cols = line.split_whitespace();
    let range = cols.next()?;
    let (start, end) = range.split_once('-')?;
    u64::from_str_radix(start, 16).ok()?;
    u64::from_str_radix(end, 16).ok()?;
    let perms = cols.next()?;
    if perms.len() != 4 {
        return None;
    }
    let _offset = cols.next()?;
    let _dev = cols.next()?;
    let inode = cols.next()?.parse().ok()?;
    let name = cols.collect::<Vec<_>>().join(" ");
    Some(Mapping {
        name,
        inode,
        size_kib: 0,
        rss_kib: 0,
        pss_kib: 0,
    })
}

/// `Key:   N kB`.
fn parse_field(line: &str) -> Option<(&str, u64)> {
    let (key, rest) = line.split_once(':')?;
    let value = rest.trim().strip_suffix("kB")?.trim();
    Some((key, value.parse().ok()?))
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:.1} of {:.1} MiB resident)",
            self.label(),
            self.rss_kib as f64 / 1024.0,
            self.size_kib as f64 / 1024.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55884d586000-55884d6bf000 r--p 00000000 fe:00 5310356                    /work/vessel
Size:               1252 kB
Rss:                 616 kB
Pss:                 616 kB
VmFlags: rd mr mw me dw sd
7fdc2c000000-7fdc30000000 r-xs 00000000 00:01 1319                       /memfd:vessel-jit (deleted)
Size:              65536 kB
Rss:               14036 kB
Pss:                7018 kB
7fdc34000000-7fdc38000000 rw-s 00000000 00:01 1319                       /memfd:vessel-jit (deleted)
Size:              65536 kB
Rss:               14036 kB
Pss:                7018 kB
7fdc38000000-7fdc40000000 rw-p 00000000 00:00 0 
Size:             131072 kB
KernelPageSize:        4 kB
Rss:               81920 kB
Pss:               81920 kB
AnonHugePages:     81920 kB
7fdc4d65b000-7fdc4d76c000 rw-p 00000000 00:00 0 
Size:               1092 kB
Rss:                1092 kB
Pss:                1092 kB
7ffd1b1b4000-7ffd1b1d5000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  24 kB
Pss:                  24 kB
";

    #[test]
    fn headers_and_fields_parse() {
        let s = Smaps::parse(SAMPLE);
        assert_eq!(s.mappings.len(), 6);
        let jit = &s.mappings[1];
        assert_eq!(jit.name, "/memfd:vessel-jit (deleted)");
        assert_eq!(
            (jit.size_kib, jit.rss_kib, jit.pss_kib),
            (65536, 14036, 7018)
        );
        assert!(!jit.is_anonymous());
        assert!(s.mappings[3].is_anonymous());
        assert_eq!(s.mappings[3].rss_kib, 81920, "AnonHugePages is not Rss");
        assert!(!s.mappings[5].is_anonymous(), "[stack] has a name");
        assert_eq!(s.mappings[5].label(), "[stack]");
        assert_eq!(s.mappings[4].label(), "[anonymous]");
    }

    #[test]
    fn guest_ram_is_split_from_the_overhead() {
        let split = Smaps::parse(SAMPLE)
            .split(128, 2)
            .expect("one guest mapping");
        assert_eq!(split.total_rss_kib, 616 + 14036 * 2 + 81920 + 1092 + 24);
        assert_eq!(split.guest_rss_kib, 81920);
        assert_eq!(split.overhead_rss_kib(), 616 + 14036 * 2 + 1092 + 24);
        assert_eq!(split.overhead_pss_kib, 616 + 7018 * 2 + 1092 + 24);
        let names: Vec<&str> = split.largest.iter().map(|m| m.label()).collect();
        assert_eq!(names, ["/memfd:vessel-jit (deleted)"; 2]);
    }

    #[test]
    fn a_missing_or_ambiguous_guest_mapping_is_an_error() {
        let err = Smaps::parse(SAMPLE).split(256, 3).unwrap_err();
        assert!(
            matches!(err, SmapsError::GuestMapping { mib: 256, found: 0 }),
            "{err}"
        );
        let twice = format!("{SAMPLE}{}", &SAMPLE[SAMPLE.find("7fdc38").unwrap_or(0)..]);
        let err = Smaps::parse(&twice).split(128, 3).unwrap_err();
        assert!(
            matches!(err, SmapsError::GuestMapping { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_skipped() {
        let s = Smaps::parse("not a header\nRss: 5 kB\nzz-yy rw-p 0 0 0\nRss: x kB\n");
        assert!(s.mappings.is_empty(), "{s:?}");
        let s = Smaps::parse("1000-2000 rw-p 00000000 00:00 0\nRss: 4 kB\nRss: nope\n");
        assert_eq!(s.mappings[0].rss_kib, 4);
    }

    #[test]
    fn this_process_can_be_read() {
        let s = Smaps::read(std::process::id()).expect("own smaps");
        assert!(s.mappings.iter().any(|m| m.rss_kib > 0), "{s:?}");
        assert!(Smaps::read(u32::MAX).is_err());
    }
}
