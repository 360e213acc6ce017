use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const CMDLINE: &str = "console=ttyS0 panic=-1 quiet vessel.cmd=dHJ1ZQ==";

/// A directory of its own for each test, with a kernel and an initrd.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-bench-boot-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("vmlinux"), b"kernel").expect("kernel");
    std::fs::write(dir.join("initrd"), b"initrd").expect("initrd");
    dir
}

/// Writes an executable shell script that first records its arguments in
/// `<name>.args`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}.args'\n{body}\n",
        path.display()
    );
    std::fs::write(&path, text).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A vessel that boots in about 0.2 s and exits 0 after the status line.
const VESSEL_OK: &str = "sleep 0.2\necho 'VESSEL-GUEST-READY\r'\n\
echo 'VESSEL-EXIT-STATUS=0\r'\necho 'vessel: stats: instructions=1000000' >&2\nexit 0";

/// A QEMU that exits on q35 and halts (never exits) on microvm.
const QEMU_OK: &str = "echo 'SeaBIOS noise'\necho VESSEL-GUEST-READY\necho VESSEL-EXIT-STATUS=0\n\
case \"$2\" in microvm*) exec sleep 30;; esac\nexit 0";

fn options(dir: &Path, vessel: &str, qemu: &str) -> BootBenchOptions {
    BootBenchOptions {
        vessel: script(dir, "vessel", vessel),
        engine: "soft".to_string(),
        qemu: script(dir, "qemu", qemu),
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd"),
        cmdline: CMDLINE.to_string(),
        memory_mib: 256,
        runs: 2,
        timeout: Duration::from_secs(20),
        machines: BootMachine::ALL.to_vec(),
    }
}

fn run(kib: u64, ready_ms: u64, exit_ms: u64, instructions: Option<u64>) -> BootRun {
    BootRun {
        ready: Duration::from_millis(ready_ms),
        exit: Duration::from_millis(exit_ms),
        max_rss_kib: kib,
        instructions,
    }
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median::<f64>(&[]), None);
}

#[test]
fn summary_takes_medians_and_the_largest_rss() {
    let row = BootRow {
        machine: BootMachine::Vessel,
        outcome: BootOutcome::Measured(vec![
            run(2048, 100, 1000, Some(10)),
            run(1024, 300, 3000, Some(30)),
            run(4096, 200, 2000, Some(20)),
        ]),
    };
    let s = row.summary().expect("measured");
    assert_eq!(s.ready, Duration::from_millis(200));
    assert_eq!(s.exit, Duration::from_millis(2000));
    assert_eq!(s.peak_rss_mib, 4.0);
    assert_eq!(s.instructions, Some(20));
    assert_eq!(s.ips, Some(10.0));
}

#[test]
fn stats_line_is_parsed_and_checked() {
    assert_eq!(
        parse_stats("x\nvessel: stats: instructions=1234\n").expect("present"),
        1234
    );
    assert!(matches!(
        parse_stats("nothing"),
        Err(RunError::MissingLine { .. })
    ));
    assert!(matches!(
        parse_stats("vessel: stats: instructions=12x"),
        Err(RunError::BadNumber { .. })
    ));
}

#[test]
fn boots_every_machine_with_the_same_files_and_command_line() {
    let dir = test_dir("all");
    let opts = options(&dir, VESSEL_OK, QEMU_OK);
    let started = std::time::Instant::now();
    let r = boot(&opts).expect("files exist");
    // microvm's fake never exits: it was killed at the status line.
    assert!(started.elapsed() < Duration::from_secs(15), "{r}");
    for row in &r.rows {
        match &row.outcome {
            BootOutcome::Measured(runs) => assert_eq!(runs.len(), 2, "{}", row.machine),
            other => panic!("{}: {other:?}", row.machine),
        }
    }
    let v = r.summary(BootMachine::Vessel).expect("vessel measured");
    assert!(v.ready >= Duration::from_millis(150), "{v:?}");
    assert!(v.exit >= v.ready, "{v:?}");
    assert!(v.peak_rss_mib > 0.0, "{v:?}");
    assert_eq!(v.instructions, Some(1_000_000));
    assert!(v.ips.is_some_and(|ips| ips > 0.0), "{v:?}");
    let (ready_ratio, _) = r.ratios(BootMachine::QemuQ35).expect("both measured");
    assert!(
        ready_ratio > 1.0,
        "the fake vessel sleeps first: {ready_ratio}"
    );
    assert_eq!(r.summary(BootMachine::QemuQ35).and_then(|s| s.ips), None);

    let vessel_args = std::fs::read_to_string(dir.join("vessel.args")).expect("vessel ran");
    let qemu_args = std::fs::read_to_string(dir.join("qemu.args")).expect("qemu ran");
    for args in [&vessel_args, &qemu_args] {
        assert!(args.lines().any(|l| l == CMDLINE), "{args}");
        assert!(args.contains(&dir.join("vmlinux").display().to_string()));
        assert!(args.contains(&dir.join("initrd").display().to_string()));
    }
    assert!(vessel_args.lines().any(|l| l == "soft"), "{vessel_args}");
    assert!(qemu_args.lines().any(|l| l == "tcg"), "{qemu_args}");

    let table = r.to_string();
    assert!(table.contains("qemu microvm"), "{table}");
    assert!(
        table.contains("* killed at the VESSEL-EXIT-STATUS="),
        "{table}"
    );
    assert!(table.contains("1000000 per boot"), "{table}");
    assert!(
        table.contains("goal vessel to READY <= 1.0x QEMU TCG: not met vs qemu microvm"),
        "{table}"
    );
    r.check().expect("all measured");
}

#[test]
fn a_missing_qemu_is_unavailable_not_a_failure() {
    let dir = test_dir("noqemu");
    let mut opts = options(&dir, VESSEL_OK, QEMU_OK);
    opts.qemu = dir.join("no-such-qemu");
    opts.runs = 1;
    let r = boot(&opts).expect("files exist");
    assert!(matches!(r.rows[1].outcome, BootOutcome::Unavailable(_)));
    assert!(matches!(r.rows[2].outcome, BootOutcome::Unavailable(_)));
    assert_eq!(r.ratios(BootMachine::QemuQ35), None);
    assert!(r.to_string().contains("unavailable"));
    r.check().expect("vessel was measured");
}

#[test]
fn a_failing_guest_command_or_missing_ready_fails_the_row() {
    let dir = test_dir("fail");
    let mut opts = options(
        &dir,
        "echo VESSEL-GUEST-READY\necho VESSEL-EXIT-STATUS=1\nexit 0",
        "echo booting\nexit 0",
    );
    opts.runs = 1;
    opts.machines = vec![BootMachine::Vessel, BootMachine::QemuQ35];
    let r = boot(&opts).expect("files exist");
    assert!(
        matches!(
            r.rows[0].outcome,
            BootOutcome::Failed(RunError::GuestStatus(1))
        ),
        "{r}"
    );
    match &r.rows[1].outcome {
        BootOutcome::Failed(RunError::MissingLine { key, .. }) => assert_eq!(*key, READY),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.check(),
        Err(BenchError::BootFailed {
            machine: BootMachine::Vessel,
            ..
        })
    ));
}

#[test]
fn a_nonzero_exit_and_a_timeout_fail_the_row() {
    let dir = test_dir("exit");
    let mut opts = options(&dir, "echo VESSEL-GUEST-READY\nexit 3", "exec sleep 30");
    opts.runs = 1;
    opts.timeout = Duration::from_millis(300);
    opts.machines = vec![BootMachine::Vessel, BootMachine::QemuQ35];
    let r = boot(&opts).expect("files exist");
    assert!(
        matches!(
            r.rows[0].outcome,
            BootOutcome::Failed(RunError::ExitStatus { .. })
        ),
        "{r}"
    );
    assert!(
        matches!(r.rows[1].outcome, BootOutcome::Failed(RunError::Timeout(_))),
        "{r}"
    );
}

#[test]
fn a_missing_kernel_is_an_error() {
    let dir = test_dir("nokernel");
    let mut opts = options(&dir, VESSEL_OK, QEMU_OK);
    opts.kernel = dir.join("absent");
    assert!(matches!(boot(&opts), Err(BenchError::GuestMissing(_))));
}

/// The real default guest under QEMU TCG q35, once, when both exist.
#[test]
fn real_guest_boots_under_qemu_q35() {
    let Some(image) = guest::find_prepared() else {
        eprintln!("skipped: the default guest is not prepared");
        return;
    };
    let mut opts = BootBenchOptions::new(PathBuf::from("vessel"), &image);
    opts.runs = 1;
    opts.timeout = Duration::from_secs(120);
    opts.machines = vec![BootMachine::QemuQ35];
    let r = boot(&opts).expect("guest files exist");
    match &r.rows[0].outcome {
        BootOutcome::Measured(runs) => {
            assert!(runs[0].ready > Duration::ZERO);
            assert!(runs[0].exit >= runs[0].ready);
            assert!(runs[0].max_rss_kib > 100 * 1024, "{runs:?}");
        }
        BootOutcome::Unavailable(why) => eprintln!("skipped: {why}"),
        BootOutcome::Failed(e) => panic!("qemu boot failed: {e}"),
    }
}
