use super::*;
use std::os::unix::fs::PermissionsExt;

const OUTPUT: &str = "\x1b[2J\x1b[0mSeaBIOS\r\nBooting from ROM..VESSEL-TEST-BEGIN\r\n\
bench: checksum 0x854abe087c4acf01\r\nbench: passes 8\r\n\
bench: instructions 335544359\r\nbench: tsc-ticks 435535594\r\n";

fn measurement(checksum: u64, instructions: u64, loop_secs: f64) -> Measurement {
    Measurement {
        checksum,
        instructions,
        tsc_ticks: 1,
        loop_secs,
        wall: Duration::from_secs(1),
    }
}

fn report(rows: Vec<(Machine, RowOutcome)>) -> CpuReport {
    CpuReport {
        passes: 8,
        tsc_hz: 2.1e9,
        rows: rows
            .into_iter()
            .map(|(machine, outcome)| CpuRow { machine, outcome })
            .collect(),
    }
}

/// A stand-in for `vessel` that prints `body` and exits with `code`.
fn fake_vessel(name: &str, body: &str, code: i32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("vessel");
    let script = format!("#!/bin/sh\nprintf '%s' '{body}'\nexit {code}\n");
    std::fs::write(&path, script).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn parses_the_guest_lines_through_firmware_noise() {
    let parsed = parse_output(OUTPUT).expect("all three lines");
    assert_eq!(
        parsed,
        GuestOutput {
            checksum: 0x854a_be08_7c4a_cf01,
            instructions: 335_544_359,
            tsc_ticks: 435_535_594,
        }
    );
}

#[test]
fn a_missing_or_garbled_line_is_named() {
    let cut = OUTPUT.replace("bench: tsc-ticks", "bench: tsc");
    match parse_output(&cut) {
        Err(RunError::MissingLine { key, .. }) => assert_eq!(key, "tsc-ticks"),
        other => panic!("unexpected {other:?}"),
    }
    let bad = OUTPUT.replace("instructions 335544359", "instructions 33x");
    match parse_output(&bad) {
        Err(RunError::BadNumber { key, line }) => {
            assert_eq!(key, "instructions");
            assert_eq!(line, "33x");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ratios_and_agreement() {
    let r = report(vec![
        (
            Machine::Soft,
            RowOutcome::Measured(measurement(7, 100, 10.0)),
        ),
        (Machine::Kvm, RowOutcome::Measured(measurement(7, 100, 0.1))),
        (
            Machine::QemuTcg,
            RowOutcome::Unavailable("qemu-system-x86_64 not found".into()),
        ),
    ]);
    let soft_kvm = r.ratio(Machine::Soft, Machine::Kvm).expect("both ran");
    assert!((soft_kvm - 0.01).abs() < 1e-9, "{soft_kvm}");
    assert_eq!(r.ratio(Machine::Soft, Machine::QemuTcg), None);
    assert!(r.checksums_agree());
    let text = r.to_string();
    assert!(
        text.contains("qemu tcg     unavailable (qemu-system-x86_64 not found)"),
        "{text}"
    );
    assert!(
        text.contains("speed vessel soft / vessel kvm: 0.0100 (vessel kvm 100.0x faster)"),
        "{text}"
    );
    assert!(text.contains("speed vessel soft / qemu tcg: n/a"), "{text}");
    assert!(text.contains("identical on 2 machines"), "{text}");
    assert!(r.check().is_ok());
}

#[test]
fn differing_checksums_fail_the_check() {
    let r = report(vec![
        (
            Machine::Soft,
            RowOutcome::Measured(measurement(7, 100, 1.0)),
        ),
        (Machine::Kvm, RowOutcome::Measured(measurement(8, 100, 1.0))),
    ]);
    assert!(!r.checksums_agree());
    assert!(r.to_string().contains("DIFFER"));
    assert!(matches!(r.check(), Err(BenchError::ChecksumMismatch(_))));
}

#[test]
fn a_failed_row_or_no_rows_fail_the_check() {
    let r = report(vec![(
        Machine::Kvm,
        RowOutcome::Failed(RunError::Timeout(Duration::from_secs(1))),
    )]);
    assert!(r.to_string().contains("vessel kvm   failed: timed out"));
    assert!(matches!(
        r.check(),
        Err(BenchError::RunFailed {
            machine: Machine::Kvm,
            ..
        })
    ));
    assert!(matches!(
        report(vec![]).check(),
        Err(BenchError::NothingMeasured)
    ));
}

#[test]
fn runs_a_machine_and_reports_unavailable_ones() {
    let vessel = fake_vessel("ok", OUTPUT, 0);
    let mut opts = CpuBenchOptions::new(vessel);
    opts.qemu = PathBuf::from("/nonexistent/qemu-system-x86_64");
    opts.machines = vec![Machine::Soft, Machine::QemuTcg];
    opts.timeout = Duration::from_secs(30);
    let r = cpu(&opts).expect("the guest is built and the tsc runs");
    let soft = r.measured(Machine::Soft).expect("the fake vessel reports");
    assert_eq!(soft.instructions, 335_544_359);
    assert!(soft.loop_secs > 0.0);
    match &r.rows[1].outcome {
        RowOutcome::Unavailable(why) => assert!(why.contains("not found"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_wrong_exit_status_is_a_failure() {
    let vessel = fake_vessel("exit3", OUTPUT, 3);
    let mut opts = CpuBenchOptions::new(vessel);
    opts.machines = vec![Machine::Soft];
    let r = cpu(&opts).expect("runs");
    assert!(matches!(
        r.rows[0].outcome,
        RowOutcome::Failed(RunError::ExitStatus { expected: 0, .. })
    ));
}

#[test]
fn a_missing_guest_is_an_error() {
    let mut opts = CpuBenchOptions::new(PathBuf::from("vessel"));
    opts.guest = PathBuf::from("/nonexistent/bench_checksum.elf");
    assert!(matches!(cpu(&opts), Err(BenchError::GuestMissing(_))));
}

/// The real guest under QEMU TCG, one pass, when QEMU is installed.
#[test]
fn real_guest_under_qemu_reports_the_exact_instruction_count() {
    let mut opts = CpuBenchOptions::new(PathBuf::from("vessel"));
    opts.passes = 1;
    opts.machines = vec![Machine::QemuTcg];
    opts.timeout = Duration::from_secs(120);
    let r = cpu(&opts).expect("guest built");
    match &r.rows[0].outcome {
        RowOutcome::Measured(m) => {
            // 7 + 1 pass of (4 + 8 Mi words x 5 instructions).
            assert_eq!(m.instructions, 7 + 4 + (8 << 20) * 5);
            assert!(m.tsc_ticks > 0);
        }
        RowOutcome::Unavailable(why) => eprintln!("skipped: {why}"),
        RowOutcome::Failed(e) => panic!("qemu run failed: {e}"),
    }
}
