use super::*;
use crate::boot_variants::VariantCost;
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
const VESSEL_OK: &str = "sleep 0.2\necho 'VESSEL-GUEST-READY\r'\necho VESSEL-BENCH-FIRST-OUTPUT\n\
echo 'VESSEL-EXIT-STATUS=0\r'\necho 'vessel: stats: instructions=1000000' >&2\nexit 0";

/// A QEMU that exits on q35 and halts (never exits) on microvm.
const QEMU_OK: &str =
    "echo 'SeaBIOS noise'\necho VESSEL-GUEST-READY\necho VESSEL-BENCH-FIRST-OUTPUT\n\
echo VESSEL-EXIT-STATUS=0\ncase \"$2\" in microvm*) exec sleep 30;; esac\nexit 0";

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
        machines: BootMachine::ALL
            .into_iter()
            .filter(|m| !m.boots_bzimage())
            .collect(),
        share_dir: dir.join("share"),
        passt_installed: true,
        bzimage: None,
    }
}

fn run(kib: u64, ready_ms: u64, exit_ms: u64, instructions: Option<u64>) -> BootRun {
    BootRun {
        ready: Duration::from_millis(ready_ms),
        first: Duration::from_millis(ready_ms + 10),
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
    assert_eq!(s.first, Duration::from_millis(210));
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
    assert!(v.first >= v.ready, "{v:?}");
    assert!(v.exit >= v.first, "{v:?}");
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
    assert!(table.contains("vessel --net user "), "{table}");
    assert!(
        table.contains("goal each variant adds < 20% to the command's first output:"),
        "{table}"
    );
    assert!(
        !dir.join("share").exists(),
        "the shared directory is removed"
    );
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
    assert!(matches!(r.rows[3].outcome, BootOutcome::Unavailable(_)));
    assert!(matches!(r.rows[4].outcome, BootOutcome::Unavailable(_)));
    assert_eq!(r.ratios(BootMachine::QemuQ35), None);
    assert!(r.to_string().contains("unavailable"));
    r.check().expect("vessel was measured");
}

#[test]
fn a_failing_guest_command_or_missing_ready_fails_the_row() {
    let dir = test_dir("fail");
    let mut opts = options(
        &dir,
        "echo VESSEL-GUEST-READY\necho VESSEL-BENCH-FIRST-OUTPUT\necho VESSEL-EXIT-STATUS=1\nexit 0",
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

fn args_of(cmd: &Command) -> Vec<String> {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn vessel_variants_differ_only_in_their_device_flags() {
    let dir = test_dir("cmds");
    let opts = options(&dir, VESSEL_OK, QEMU_OK);
    let plain = command(&opts, BootMachine::Vessel);
    let share = command(&opts, BootMachine::VesselShare);
    let net = command(&opts, BootMachine::VesselUserNet);
    let volume = format!("{}:/mnt/bench", dir.join("share").display());
    let (p, s, n) = (args_of(&plain), args_of(&share), args_of(&net));
    assert_eq!(p[p.len() - 2..], ["--net", "none"], "{p:?}");
    assert_eq!(
        s[s.len() - 4..],
        ["--net", "none", "-v", volume.as_str()],
        "{s:?}"
    );
    assert_eq!(n[n.len() - 2..], ["--net", "user"], "{n:?}");
    // Everything before the device flags is the same boot.
    assert_eq!(s[..s.len() - 4], p[..p.len() - 2]);
    assert_eq!(n[..n.len() - 2], p[..p.len() - 2]);
    assert!(p.iter().any(|a| a == CMDLINE), "{p:?}");
    for cmd in [&plain, &share, &net] {
        assert_eq!(cmd.get_program(), opts.vessel.as_os_str());
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "VESSEL_STATS" && v == Some("1".as_ref())));
    }
    let q35 = args_of(&command(&opts, BootMachine::QemuQ35));
    assert!(!q35.iter().any(|a| a == "--net" || a == "-v"), "{q35:?}");
}

fn measured(machine: BootMachine, first_ms: &[u64]) -> BootRow {
    let runs = first_ms
        .iter()
        .map(|&ms| BootRun {
            ready: Duration::from_millis(ms - 5),
            first: Duration::from_millis(ms),
            exit: Duration::from_millis(ms + 50),
            max_rss_kib: 1024,
            instructions: Some(ms * 500_000),
        })
        .collect();
    BootRow {
        machine,
        outcome: BootOutcome::Measured(runs),
    }
}

#[test]
fn variants_are_compared_with_the_plain_boot_at_first_output() {
    let report = BootReport {
        runs: 3,
        cmdline: CMDLINE.to_string(),
        rows: vec![
            measured(BootMachine::Vessel, &[1000, 900, 5000]),
            measured(BootMachine::VesselShare, &[1100, 1090, 1110]),
            measured(BootMachine::VesselUserNet, &[1250, 1250, 1250]),
        ],
    };
    let share = report
        .variant_cost(BootMachine::VesselShare)
        .expect("both measured");
    assert_eq!(share.first, Duration::from_millis(1100));
    assert!((share.ratio - 1.1).abs() < 1e-9, "{share:?}");
    assert!(share.meets_goal());
    let net = report
        .variant_cost(BootMachine::VesselUserNet)
        .expect("both measured");
    assert!((net.added() - 0.25).abs() < 1e-9, "{net:?}");
    assert!(!net.meets_goal());
    assert_eq!(report.variant_costs(), vec![share, net]);
    let table = report.to_string();
    assert!(
        table.contains(
            "goal each variant adds < 20% to the command's first output: \
             met for vessel -v (+10.0%), not met for vessel --net user (+25.0%)"
        ),
        "{table}"
    );
    let line = |name: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.starts_with(name)).unwrap_or("");
        line.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(
        line("  vessel  "),
        ["vessel", "1.000", "500", "M"],
        "{table}"
    );
    assert_eq!(
        line("  vessel -v"),
        ["vessel", "-v", "1.100", "1.10x", "+10.0%", "550", "M"],
        "{table}"
    );
}

#[test]
fn the_goal_is_twenty_percent_exactly_excluded() {
    let cost = |ratio| VariantCost {
        machine: BootMachine::VesselShare,
        first: Duration::from_secs(1),
        ratio,
    };
    assert!(cost(0.9).meets_goal());
    assert!(cost(1.199).meets_goal());
    assert!(!cost(1.2).meets_goal());
    assert!(!cost(2.0).meets_goal());
}

#[test]
fn no_plain_boot_means_no_comparison() {
    let report = BootReport {
        runs: 1,
        cmdline: CMDLINE.to_string(),
        rows: vec![measured(BootMachine::VesselShare, &[1000])],
    };
    assert_eq!(report.variant_cost(BootMachine::VesselShare), None);
    assert!(!report.to_string().contains("goal each variant"));
}

/// A vessel whose boot takes longer with a share (which it checks is
/// there with its file) or a user network.
const VESSEL_VARIANTS: &str =
    "vol=\nprev=\nfor a in \"$@\"; do [ \"$prev\" = -v ] && vol=$a; prev=$a; done\n\
if [ -n \"$vol\" ]; then [ -f \"${vol%:*}/hello.txt\" ] || exit 9; sleep 0.3; \n\
elif printf '%s\\n' \"$@\" | grep -qx user; then sleep 0.25; else sleep 0.2; fi\n\
echo VESSEL-GUEST-READY\necho VESSEL-BENCH-FIRST-OUTPUT\necho VESSEL-EXIT-STATUS=0\n\
echo 'vessel: stats: instructions=5' >&2\nexit 0";

#[test]
fn variants_boot_round_by_round_with_their_share_made_and_removed() {
    let dir = test_dir("variants");
    let mut opts = options(&dir, VESSEL_VARIANTS, QEMU_OK);
    opts.machines = vec![
        BootMachine::Vessel,
        BootMachine::VesselShare,
        BootMachine::VesselUserNet,
    ];
    let r = boot(&opts).expect("files exist");
    let share = r.variant_cost(BootMachine::VesselShare).expect("measured");
    let net = r
        .variant_cost(BootMachine::VesselUserNet)
        .expect("measured");
    r.check().map_err(|e| e.to_string()).expect("all measured");
    assert!(
        share.ratio > 1.2,
        "the fake sleeps 0.3 s against 0.2: {share:?}"
    );
    assert!(net.ratio > 1.0, "{net:?}");
    assert!(net.first < share.first, "{net:?} {share:?}");
    assert!(
        !dir.join("share").exists(),
        "the shared directory is removed"
    );
    // An existing directory is not taken over (nor removed).
    std::fs::create_dir(dir.join("share")).expect("mkdir");
    assert!(matches!(boot(&opts), Err(BenchError::File { .. })));
    assert!(dir.join("share").exists());
}

#[test]
fn without_passt_the_user_network_row_is_unavailable() {
    let dir = test_dir("nopasst");
    let mut opts = options(&dir, VESSEL_OK, QEMU_OK);
    opts.runs = 1;
    opts.passt_installed = false;
    opts.machines = vec![BootMachine::Vessel, BootMachine::VesselUserNet];
    let r = boot(&opts).expect("files exist");
    match &r.rows[1].outcome {
        BootOutcome::Unavailable(why) => assert!(why.contains("apt-get install passt"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!std::fs::read_to_string(dir.join("vessel.args"))
        .expect("plain vessel ran")
        .contains("user"));
    r.check().expect("plain vessel was measured");
}

#[test]
fn an_init_setup_failure_or_a_missing_first_output_fails_the_row() {
    let dir = test_dir("setup");
    let mut opts = options(
        &dir,
        "echo VESSEL-GUEST-READY\necho 'vessel init: cannot mount shared directory vessel0 on /mnt/bench'\n\
         echo VESSEL-BENCH-FIRST-OUTPUT\necho VESSEL-EXIT-STATUS=0\nexit 0",
        "echo VESSEL-GUEST-READY\necho VESSEL-EXIT-STATUS=0\nexit 0",
    );
    opts.runs = 1;
    opts.machines = vec![BootMachine::VesselShare, BootMachine::QemuQ35];
    let r = boot(&opts).expect("files exist");
    match &r.rows[0].outcome {
        BootOutcome::Failed(RunError::GuestSetup(line)) => {
            assert!(line.contains("cannot mount shared directory"), "{line}")
        }
        other => panic!("{other:?}"),
    }
    match &r.rows[1].outcome {
        BootOutcome::Failed(RunError::MissingLine { key, .. }) => assert_eq!(*key, FIRST_OUTPUT),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bzimage_rows_boot_their_own_kernel_and_compare_with_each_other() {
    let dir = test_dir("bzimage");
    let mut opts = options(&dir, VESSEL_OK, QEMU_OK);
    opts.runs = 1;
    opts.machines = vec![
        BootMachine::Vessel,
        BootMachine::VesselBzImage,
        BootMachine::QemuQ35BzImage,
    ];
    // Without a bzImage given, its rows cannot run; the plain boot still does.
    let r = boot(&opts).expect("files exist");
    for row in &r.rows[1..] {
        match &row.outcome {
            BootOutcome::Unavailable(why) => assert!(why.contains("bzImage"), "{why}"),
            other => panic!("{}: {other:?}", row.machine),
        }
    }
    r.check().expect("the plain boot was measured");

    opts.bzimage = Some(KernelBoot {
        kernel: dir.join("bzImage"),
        initrd: dir.join("initrd-generic"),
        cmdline: "console=ttyS0 generic".to_string(),
    });
    for machine in [BootMachine::VesselBzImage, BootMachine::QemuQ35BzImage] {
        let a = args_of(&command(&opts, machine));
        assert!(
            a.contains(&dir.join("bzImage").display().to_string()),
            "{a:?}"
        );
        assert!(
            a.contains(&dir.join("initrd-generic").display().to_string()),
            "{a:?}"
        );
        assert!(a.iter().any(|x| x == "console=ttyS0 generic"), "{a:?}");
        assert!(
            !a.contains(&dir.join("vmlinux").display().to_string()),
            "{a:?}"
        );
    }
    let report = BootReport {
        runs: 1,
        cmdline: CMDLINE.to_string(),
        rows: vec![
            measured(BootMachine::Vessel, &[1000]),
            measured(BootMachine::QemuQ35, &[2000]),
            measured(BootMachine::VesselBzImage, &[3000]),
            measured(BootMachine::QemuQ35BzImage, &[2000]),
        ],
    };
    let (ready, _) = report.ratios(BootMachine::QemuQ35).expect("measured");
    assert!((ready - 0.5).abs() < 0.01, "{ready}");
    let (ready, _) = report
        .ratios(BootMachine::QemuQ35BzImage)
        .expect("measured");
    assert!((ready - 1.5).abs() < 0.01, "{ready}");
    let table = report.to_string();
    assert!(
        table.contains("not met vs qemu q35 bzImage (1.50x)"),
        "{table}"
    );
    assert!(table.contains("met vs qemu q35 (0.50x)"), "{table}");
}
