//! Assembles the test guests in `asm/` with the system's GNU `as` and links
//! them with `ld` and `asm/guest.ld` into PVH ELF files in `OUT_DIR`.
//! Shared code (`common.S`, `acpi.S`) is pulled in with `.include`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every guest; each is `asm/NAME.S` and becomes `OUT_DIR/NAME.elf`.
/// Must match the table in `src/lib.rs`.
const GUESTS: &[&str] = &[
    "hello",
    "bootinfo",
    "paging",
    "exceptions",
    "pit_irq",
    "apic_timer",
    "rtc",
    "pci",
    "acpi",
    "smp",
    "syscall",
    "triple_fault",
    "poweroff",
    "reboot",
];

/// Benchmark guests: built the same way, but not test guests (no expected
/// output); found with `guests::bench_guest`. Must match `src/lib.rs`.
const BENCH_GUESTS: &[&str] = &["bench_checksum"];

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => panic!("cannot run {shown}: {e} (are GNU binutils installed?)"),
    };
    if !output.status.success() {
        panic!(
            "{shown} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let asm = manifest.join("asm");
    println!("cargo:rerun-if-changed=asm");
    println!("cargo:rerun-if-changed=expected");
    let entries =
        std::fs::read_dir(&asm).unwrap_or_else(|e| panic!("cannot read {}: {e}", asm.display()));
    for entry in entries.flatten() {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    let script = asm.join("guest.ld");
    for name in GUESTS.iter().chain(BENCH_GUESTS) {
        build_guest(&asm, &script, &out, name);
    }
}

fn build_guest(asm: &Path, script: &Path, out: &Path, name: &str) {
    let source = asm.join(format!("{name}.S"));
    let object = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    run(Command::new("as")
        .arg("--64")
        .arg("--fatal-warnings")
        .arg("-I")
        .arg(asm)
        .arg("-o")
        .arg(&object)
        .arg(&source));
    run(Command::new("ld")
        .args([
            "-m",
            "elf_x86_64",
            "-nostdlib",
            "-static",
            "--build-id=none",
        ])
        .args([
            "-z",
            "max-page-size=4096",
            "--no-warn-rwx-segments",
            "--fatal-warnings",
        ])
        .arg("-T")
        .arg(script)
        .arg("-o")
        .arg(&elf)
        .arg(&object));
}
