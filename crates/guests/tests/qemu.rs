//! Boots every test guest under QEMU (TCG) and checks its serial output and
//! exit status, so the guests themselves are known good before vessel runs
//! them. Without `qemu-system-x86_64` the tests are skipped loudly, and
//! fail when `CI=true`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guests::{Ending, Guest};

const QEMU: &str = "qemu-system-x86_64";
const TIMEOUT: Duration = Duration::from_secs(30);

/// `true` when QEMU can run; otherwise prints the skip line (and panics in CI).
fn qemu_available() -> bool {
    let found = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("QEMU TESTS SKIPPED: {QEMU} not installed (apt-get install qemu-system-x86)");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{QEMU} is required in CI"
        );
    }
    found
}

struct Run {
    serial: String,
    status: Option<i32>,
}

/// Runs `guest` on machine `machine`, killing QEMU after [`TIMEOUT`].
fn run_qemu(guest: &Guest, machine: &str) -> Run {
    let mut child = Command::new(QEMU)
        .args(["-M", machine, "-accel", "tcg", "-cpu", "max"])
        .args(["-m", &guest.memory_mib.to_string()])
        .args(["-smp", &guest.cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-kernel", guest.path, "-append", "vessel-test"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {QEMU}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error just ends the capture; the comparison reports it.
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                let serial = reader.join().unwrap_or_default();
                panic!(
                    "guest {} on {machine}: timed out after {TIMEOUT:?}; serial so far:\n{}",
                    guest.name,
                    String::from_utf8_lossy(&serial)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {QEMU}: {e}"),
        }
    };
    let serial = reader.join().unwrap_or_default();
    if let Some(mut stderr) = child.stderr.take() {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        if !text.trim().is_empty() {
            eprintln!("{QEMU} stderr for {}: {text}", guest.name);
        }
    }
    Run {
        serial: String::from_utf8_lossy(&serial).into_owned(),
        status: status.code(),
    }
}

fn check(name: &str, machine: &str) {
    if !qemu_available() {
        return;
    }
    let guest = guests::by_name(name).expect("guest is in the table");
    let run = run_qemu(guest, machine);
    if let Err(diff) = guests::serial_output_matches(guest, &run.serial) {
        panic!("on {machine}: {diff}");
    }
    let want = match guest.ending {
        Ending::DebugExit => (i32::from(guest.exit_status) << 1) | 1,
        // -no-reboot turns a shutdown or reset into a normal QEMU exit, and
        // an ACPI power-off ends QEMU with status 0.
        Ending::TripleFault | Ending::Reset | Ending::PowerOff => 0,
    };
    assert_eq!(
        run.status,
        Some(want),
        "guest {name} on {machine}: exit status"
    );
}

macro_rules! qemu_tests {
    ($($test:ident: $name:literal on $machine:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check($name, $machine);
            }
        )*
    };
}

qemu_tests! {
    hello_pc: "hello" on "pc";
    bootinfo_pc: "bootinfo" on "pc";
    paging_pc: "paging" on "pc";
    exceptions_pc: "exceptions" on "pc";
    pit_irq_pc: "pit_irq" on "pc";
    apic_timer_pc: "apic_timer" on "pc";
    rtc_pc: "rtc" on "pc";
    pci_pc: "pci" on "pc";
    acpi_pc: "acpi" on "pc";
    smp_pc: "smp" on "pc";
    syscall_pc: "syscall" on "pc";
    triple_fault_pc: "triple_fault" on "pc";
    poweroff_pc: "poweroff" on "pc";
    reboot_pc: "reboot" on "pc";
    poweroff_q35: "poweroff" on "q35";
    bootinfo_q35: "bootinfo" on "q35";
    pit_irq_q35: "pit_irq" on "q35";
    pci_q35: "pci" on "q35";
    acpi_q35: "acpi" on "q35";
    smp_q35: "smp" on "q35";
}

#[test]
fn every_guest_has_a_pc_test() {
    let source = include_str!("qemu.rs");
    for guest in guests::all() {
        let line = format!("\"{}\" on \"pc\"", guest.name);
        assert!(
            source.contains(&line),
            "no QEMU pc test for guest {}",
            guest.name
        );
    }
}
