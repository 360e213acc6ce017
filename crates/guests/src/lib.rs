//! The test-guest kit: small bare-metal guests that prove vessel's machine
//! model, each a PVH ELF assembled by `build.rs` from `asm/NAME.S`, with the
//! serial output it must print in `expected/NAME.txt`.
//!
//! Every guest enters at the PVH 32-bit entry, switches to long mode, prints
//! [`OUTPUT_BEGIN`] and its lines on COM1, and exits through the debug-exit
//! port 0xf4 (vessel exits with the value written; QEMU's `isa-debug-exit`
//! exits with `value << 1 | 1`). The same expected output is checked on
//! vessel and on QEMU, so guests print only facts both machines share.

/// The first line every guest prints. Output before it (firmware under
/// QEMU) is ignored when comparing.
pub const OUTPUT_BEGIN: &str = "VESSEL-TEST-BEGIN";

/// One test guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guest {
    /// Short name, also the file stem of its source and expected output.
    pub name: &'static str,
    /// Absolute path of the built ELF (in the build's `OUT_DIR`).
    pub path: &'static str,
    /// Serial output expected from [`OUTPUT_BEGIN`] on (`\n` line ends).
    pub expected: &'static str,
    /// The value the guest writes to the debug-exit port on success. Only
    /// meaningful when `ending` is [`Ending::DebugExit`].
    pub exit_status: u8,
    /// vCPUs the guest needs to prove anything (2 for `smp`).
    pub min_cpus: usize,
    /// vCPUs the expected output was written for: run with exactly this
    /// many (`acpi` prints the MADT's CPU count, `smp` how many came up).
    pub cpus: usize,
    /// Guest memory in MiB the expected output was written for.
    pub memory_mib: u32,
    /// How the guest ends.
    pub ending: Ending,
}

/// How a test guest ends, and so what the machine running it must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Writes `exit_status` to the debug-exit port.
    DebugExit,
    /// Triple-faults: vessel exits non-zero naming the shutdown; QEMU with
    /// `-no-reboot` exits 0.
    TripleFault,
    /// Enters ACPI S5: vessel and QEMU exit 0.
    PowerOff,
    /// Pulses the reset line: vessel reboots the guest (or exits 0 with
    /// `--no-reboot`); QEMU with `-no-reboot` exits 0.
    Reset,
}

macro_rules! guest {
    ($name:literal) => {
        guest!($name, min_cpus: 1, ending: Ending::DebugExit)
    };
    ($name:literal, min_cpus: $cpus:expr, ending: $ending:expr) => {
        Guest {
            name: $name,
            path: concat!(env!("OUT_DIR"), "/", $name, ".elf"),
            expected: include_str!(concat!("../expected/", $name, ".txt")),
            exit_status: 0,
            min_cpus: $cpus,
            cpus: 2,
            memory_mib: 128,
            ending: $ending,
        }
    };
}

/// Exit status a guest writes when one of its checks fails.
pub const EXIT_CHECK_FAILED: u8 = 1;
/// Exit status a guest writes when a bounded wait ran out.
pub const EXIT_TIMEOUT: u8 = 2;
/// Exit status a guest writes on an exception it did not expect.
pub const EXIT_UNEXPECTED_EXCEPTION: u8 = 3;

static GUESTS: [Guest; 14] = [
    guest!("hello"),
    guest!("bootinfo"),
    guest!("paging"),
    guest!("exceptions"),
    guest!("pit_irq"),
    guest!("apic_timer"),
    guest!("rtc"),
    guest!("pci"),
    guest!("acpi"),
    guest!("smp", min_cpus: 2, ending: Ending::DebugExit),
    guest!("syscall"),
    guest!("triple_fault", min_cpus: 1, ending: Ending::TripleFault),
    guest!("poweroff", min_cpus: 1, ending: Ending::PowerOff),
    guest!("reboot", min_cpus: 1, ending: Ending::Reset),
];

/// Every guest, in a stable order.
pub fn all() -> &'static [Guest] {
    &GUESTS
}

/// The guest called `name`.
pub fn by_name(name: &str) -> Option<&'static Guest> {
    GUESTS.iter().find(|g| g.name == name)
}

/// Benchmark guests (built like the test guests but not part of [`all`]):
/// name and absolute path of the built ELF.
static BENCH_GUESTS: [(&str, &str); 1] = [(
    "bench_checksum",
    concat!(env!("OUT_DIR"), "/bench_checksum.elf"),
)];

/// Path of the built benchmark guest called `name` (`bench_checksum`: a
/// checksum loop over 64 MiB at CPL3 that prints its checksum, instruction
/// count and TSC ticks; needs at least 80 MiB of RAM).
pub fn bench_guest(name: &str) -> Option<&'static str> {
    BENCH_GUESTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, path)| *path)
}

/// `text` with `\r\n` and lone `\r` turned into `\n`.
fn normalize(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Checks `captured` serial output against `guest.expected`: line ends are
/// normalized and everything before [`OUTPUT_BEGIN`] is dropped. On a
/// mismatch the error names the first differing line and shows both texts.
pub fn serial_output_matches(guest: &Guest, captured: &str) -> Result<(), String> {
    let captured = normalize(captured);
    let expected = normalize(guest.expected);
    let Some(start) = captured.find(OUTPUT_BEGIN) else {
        return Err(format!(
            "guest {}: no {OUTPUT_BEGIN} marker in the output:\n{captured}",
            guest.name
        ));
    };
    let got = &captured[start..];
    if got == expected {
        return Ok(());
    }
    let mut got_lines = got.split('\n');
    let mut want_lines = expected.split('\n');
    let mut line = 1;
    loop {
        match (want_lines.next(), got_lines.next()) {
            (Some(w), Some(g)) if w == g => line += 1,
            (w, g) => {
                return Err(format!(
                    "guest {}: output differs at line {line}\n  expected: {}\n  got:      {}\n\
                     --- expected ---\n{expected}--- got ---\n{got}",
                    guest.name,
                    w.map_or("<end of output>".to_string(), |w| format!("{w:?}")),
                    g.map_or("<end of output>".to_string(), |g| format!("{g:?}")),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> &'static Guest {
        by_name("hello").expect("hello is in the table")
    }

    #[test]
    fn names_are_unique_and_found() {
        for (i, g) in all().iter().enumerate() {
            assert_eq!(by_name(g.name), Some(g));
            assert!(all()[..i].iter().all(|o| o.name != g.name));
        }
        assert_eq!(by_name("no-such-guest"), None);
    }

    #[test]
    fn every_guest_is_built_and_expects_the_marker_first() {
        for g in all() {
            let meta = std::fs::metadata(g.path).expect("build.rs built the guest");
            assert!(meta.len() > 64, "{} is too small", g.path);
            assert!(
                g.min_cpus <= g.cpus,
                "{} needs more cpus than it runs with",
                g.name
            );
            assert!(
                g.expected.starts_with(OUTPUT_BEGIN),
                "{} expected output must start with the marker",
                g.name
            );
        }
    }

    #[test]
    fn built_guests_carry_the_pvh_note() {
        for g in all() {
            let elf = std::fs::read(g.path).expect("guest is built");
            let needle: [u8; 16] = [4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, b'X', b'e', b'n', 0];
            assert!(
                elf.windows(needle.len()).any(|w| w == needle),
                "{} has no Xen PVH entry note",
                g.name
            );
        }
    }

    #[test]
    fn bench_guests_are_built_and_not_test_guests() {
        let path = bench_guest("bench_checksum").expect("bench_checksum is listed");
        let elf = std::fs::read(path).expect("build.rs built the bench guest");
        assert!(elf.starts_with(b"\x7fELF"), "{path} is not an ELF");
        assert_eq!(by_name("bench_checksum"), None);
        assert_eq!(bench_guest("hello"), None);
    }

    #[test]
    fn matching_ignores_firmware_noise_and_crlf() {
        let captured = format!(
            "SeaBIOS\r\nBooting..{}",
            hello().expected.replace('\n', "\r\n")
        );
        assert_eq!(serial_output_matches(hello(), &captured), Ok(()));
    }

    #[test]
    fn missing_marker_is_reported() {
        let err = serial_output_matches(hello(), "nothing here").unwrap_err();
        assert!(err.contains("no VESSEL-TEST-BEGIN marker"), "{err}");
    }

    #[test]
    fn mismatch_names_the_first_differing_line() {
        let captured = format!("{OUTPUT_BEGIN}\nsomething else\n");
        let err = serial_output_matches(hello(), &captured).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("something else"), "{err}");
    }

    #[test]
    fn truncated_output_is_a_mismatch() {
        let captured = format!("{OUTPUT_BEGIN}\n");
        let err = serial_output_matches(hello(), &captured).unwrap_err();
        assert!(err.contains("differs"), "{err}");
    }
}
