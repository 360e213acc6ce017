use std::path::PathBuf;
use std::time::Duration;

use super::run::BootOutcome;
use super::*;

fn at(ms: u64, line: &str) -> (Duration, String) {
    (Duration::from_millis(ms), line.to_string())
}

#[test]
fn result_lines_give_times_statuses_and_the_host_view() {
    let lines = vec![
        at(0, "VESSEL-GUEST-READY"),
        at(100, "VESSEL-WL-BEGIN gzip"),
        at(2_150, "VESSEL-WL-END gzip"),
        at(2_200, "VESSEL-WL gzip 0 1000.5 1002.5 ee5ec66dd02eaea2"),
        at(2_300, "[  3.1] random: crng init done VESSEL-WL-BEGIN xz"),
        at(2_400, "VESSEL-WL xz 1 5.0 6.0 abcd"),
        at(2_500, "VESSEL-WL sort 0 nonsense 6.0 abcd"),
        at(2_600, "VESSEL-WL short 0 1.0"),
        at(2_700, "VESSEL-WL-DONE"),
    ];
    let p = parse_lines(&lines);
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(p[0].name, "gzip");
    assert_eq!(p[0].status, 0);
    assert!((p[0].secs.unwrap() - 2.0).abs() < 1e-9);
    assert!((p[0].host_secs.unwrap() - 2.05).abs() < 1e-9);
    assert_eq!(p[0].digest, "ee5ec66dd02eaea2");
    assert_eq!(p[1].status, 1);
    assert!((p[1].host_secs.unwrap() - 0.1).abs() < 1e-9);
    assert_eq!(p[2].secs, None);
    assert_eq!(p[2].host_secs, None);
}

#[test]
fn sizes_scale_with_a_floor_and_the_inputs_ceiling() {
    let gzip = find_workload("gzip").unwrap();
    assert_eq!(gzip.arg(1.0), 32);
    assert_eq!(gzip.arg(0.01), 1);
    assert_eq!(gzip.arg(f64::NAN), 1);
    let sort = find_workload("sort").unwrap();
    assert_eq!(sort.arg(3.0), guest::workload::SORT_LINES as u64);
    assert_eq!(sort.describe(0.5), "sort of 500,000 lines");
    let smp = find_workload("smp").unwrap();
    assert_eq!(smp.driver_arg(1.0), "smp py-int 2000000 sha256 256");
    assert!(find_workload("nope").is_none());
    assert_eq!(thousands(1234567), "1,234,567");
    assert_eq!(thousands(12), "12");
}

#[test]
fn smp_gets_its_own_two_cpu_boot_after_the_others() {
    let pick = |names: &[&str]| -> Vec<&'static Workload> {
        names.iter().map(|n| find_workload(n).unwrap()).collect()
    };
    let b = boots(&pick(&["smp", "gzip", "xz"]));
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].cpus, 1);
    assert_eq!(b[0].workloads, pick(&["gzip", "xz"]));
    assert_eq!(b[1].cpus, 2);
    assert_eq!(boots(&pick(&["gzip"])).len(), 1);
    assert_eq!(boots(&pick(&["smp"]))[0].cpus, 2);
}

fn options(names: &[&str]) -> WorkloadBenchOptions {
    let image = guest::GuestImage {
        kernel_bzimage: PathBuf::from("/k"),
        vmlinux: PathBuf::from("/vmlinux"),
        initramfs: PathBuf::from("/initrd"),
        kernel_release: "6.1".into(),
        default_cmdline: "console=ttyS0".into(),
    };
    let mut o = WorkloadBenchOptions::new(PathBuf::from("/vessel"), &image, "/d.ext4".into());
    o.workloads = names.iter().map(|n| find_workload(n).unwrap()).collect();
    o
}

fn ran(results: &[(&str, f64, &str)]) -> BootOutcome {
    BootOutcome::Ran {
        parsed: results
            .iter()
            .map(|(n, s, d)| Parsed {
                name: n.to_string(),
                status: 0,
                secs: Some(*s),
                host_secs: Some(*s),
                digest: d.to_string(),
            })
            .collect(),
        done: true,
        tail: String::new(),
    }
}

#[test]
fn the_table_has_medians_ratios_and_their_geometric_means() {
    let opts = options(&["gzip", "xz"]);
    let boot = &boots(&opts.workloads)[0];
    let mut r = WorkloadReport::new(&opts);
    for (v, q) in [(4.0, 2.0), (9.0, 1.0), (5.0, 2.0)] {
        r.add(
            WlMachine::Vessel,
            boot,
            ran(&[("gzip", v, "a"), ("xz", 1.0, "b")]),
        );
        r.add(
            WlMachine::Qemu,
            boot,
            ran(&[("gzip", q, "a"), ("xz", 4.0, "b")]),
        );
        r.add(
            WlMachine::Native,
            boot,
            ran(&[("gzip", 0.5, "a"), ("xz", 0.25, "b")]),
        );
    }
    assert_eq!(r.rows[0].median(WlMachine::Vessel), Some(5.0));
    assert_eq!(r.rows[0].ratio(WlMachine::Qemu), Some(2.5));
    assert_eq!(r.rows[1].ratio(WlMachine::Qemu), Some(0.25));
    let (g, n) = r.geomean(WlMachine::Qemu).unwrap();
    assert_eq!(n, 2);
    assert!((g - (2.5f64 * 0.25).sqrt()).abs() < 1e-12);
    r.check().expect("all measured and agreeing");
    let text = r.to_string();
    assert!(text.contains("gzip -9 of 32 MiB"), "{text}");
    assert!(text.contains("2.50"), "{text}");
    assert!(text.contains("geometric mean"), "{text}");
    assert!(text.contains("NOT met"), "{text}");
}

#[test]
fn differing_outputs_and_failures_fail_the_check() {
    let opts = options(&["gzip"]);
    let boot = &boots(&opts.workloads)[0];
    let mut r = WorkloadReport::new(&opts);
    r.add(WlMachine::Vessel, boot, ran(&[("gzip", 1.0, "a")]));
    r.add(WlMachine::Qemu, boot, ran(&[("gzip", 1.0, "b")]));
    assert_eq!(r.rows[0].outputs_agree(), Some(false));
    assert!(r.check().is_err());
    assert!(r.to_string().contains("DIFFER"));

    let mut r = WorkloadReport::new(&opts);
    r.add(WlMachine::Vessel, boot, ran(&[]));
    r.add(
        WlMachine::Qemu,
        boot,
        BootOutcome::Unavailable("no qemu".into()),
    );
    assert!(matches!(
        r.rows[0].cells[&WlMachine::Vessel][0],
        Cell::Failed(_)
    ));
    assert_eq!(r.rows[0].median(WlMachine::Vessel), None);
    assert!(r.check().is_err());
    let text = r.to_string();
    assert!(text.contains("failed") && text.contains("n/a"), "{text}");
}

#[test]
fn a_guest_clock_far_from_the_hosts_is_noted() {
    let opts = options(&["gzip"]);
    let boot = &boots(&opts.workloads)[0];
    let mut r = WorkloadReport::new(&opts);
    let outcome = BootOutcome::Ran {
        parsed: vec![Parsed {
            name: "gzip".into(),
            status: 0,
            secs: Some(10.0),
            host_secs: Some(20.0),
            digest: "a".into(),
        }],
        done: true,
        tail: String::new(),
    };
    r.add(WlMachine::Vessel, boot, outcome);
    assert!(
        r.notes.iter().any(|n| n.contains("guest clock")),
        "{:?}",
        r.notes
    );
}

#[test]
fn network_rows_give_throughput_others_none() {
    let g2h = find_workload("iperf-g2h").unwrap();
    assert!((g2h.mib_per_sec(1.0, 0.5).unwrap() - 128.0).abs() < 1e-9);
    assert!((g2h.mib_per_sec(0.5, 1.0).unwrap() - 32.0).abs() < 1e-9);
    assert_eq!(g2h.mib_per_sec(1.0, 0.0), None);
    assert_eq!(find_workload("gzip").unwrap().mib_per_sec(1.0, 2.0), None);
}

#[test]
fn the_report_gives_iperf_throughput_and_the_cpu_models() {
    let mut opts = options(&["iperf-g2h", "gzip"]);
    opts.scale = 0.5;
    opts.cpu_model = "baseline".into();
    opts.qemu_cpu = Some("Haswell".into());
    let boot = &boots(&opts.workloads)[0];
    let mut r = WorkloadReport::new(&opts);
    r.add(
        WlMachine::Vessel,
        boot,
        ran(&[("iperf-g2h", 0.25, "-"), ("gzip", 1.0, "a")]),
    );
    r.add(
        WlMachine::Qemu,
        boot,
        ran(&[("iperf-g2h", 0.5, "-"), ("gzip", 1.0, "a")]),
    );
    let lines = r.throughput_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    // 32 MiB (64 at scale 0.5) in 0.25 s and 0.5 s; native did not run.
    assert!(
        lines[0].contains("vessel 128.0") && lines[0].contains("qemu 64.0"),
        "{lines:?}"
    );
    assert!(lines[0].contains("native -"), "{lines:?}");
    let text = r.to_string();
    assert!(text.contains("throughput iperf-g2h MiB/s"), "{text}");
    assert!(text.contains("--cpu-model baseline"), "{text}");
    assert!(text.contains("-cpu Haswell"), "{text}");
}

#[test]
fn the_cpu_models_reach_the_command_lines() {
    let mut opts = options(&["gzip"]);
    opts.cpu_model = "v2".into();
    let words = ["gzip 1".to_string()];
    let args = |c: &std::process::Command| -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    let v = args(&run::guest_command(
        &opts,
        WlMachine::Vessel,
        1,
        &words,
        false,
    ));
    assert!(v.windows(2).any(|w| w == ["--cpu-model", "v2"]), "{v:?}");
    let q = args(&run::guest_command(
        &opts,
        WlMachine::Qemu,
        1,
        &words,
        false,
    ));
    assert!(!q.iter().any(|a| a == "-cpu"), "{q:?}");
    opts.qemu_cpu = Some("max".into());
    let q = args(&run::guest_command(
        &opts,
        WlMachine::Qemu,
        1,
        &words,
        false,
    ));
    assert!(q.windows(2).any(|w| w == ["-cpu", "max"]), "{q:?}");
}
