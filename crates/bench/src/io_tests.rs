use super::*;

#[test]
fn parses_a_cut_terse_line() {
    assert_eq!(
        parse_cut("0;409600;400;0;0\r"),
        Ok([409600.0, 400.0, 0.0, 0.0])
    );
    assert!(parse_cut("5;1;2;3;4").unwrap_err().contains("error 5"));
    assert!(parse_cut("fio: cannot open").is_err());
    assert!(parse_cut("0;x;1;2;3").is_err());
    assert!(parse_cut("0;-1;1;2;3").is_err());
}

#[test]
fn finds_result_lines_by_name() {
    let out = "noise\nVESSEL-IO seqread 0;1;2;3;4\r\nVESSEL-IO net 0\n";
    assert_eq!(result_line(out, "seqread").as_deref(), Some("0;1;2;3;4"));
    assert_eq!(result_line(out, "net").as_deref(), Some("0"));
    assert_eq!(result_line(out, "seq"), None);
}

#[test]
fn disk_numbers_take_each_jobs_own_direction() {
    let out = "VESSEL-IO seqwrite 0;0;0;204800;200\n\
               VESSEL-IO seqread 0;102400;100;0;0\n\
               VESSEL-IO randread 0;4000;1000;0;0\n";
    let d = disk_numbers(|n| result_line(out, n)).expect("numbers");
    assert_eq!(d.seq_write_mib_s, 200.0);
    assert_eq!(d.seq_read_mib_s, 100.0);
    assert_eq!(d.rand_read_iops, Some(1000.0));
    let err = disk_numbers(|n| result_line("VESSEL-IO seqwrite 0;0;0;1;1", n)).unwrap_err();
    assert!(err.contains("seqread"), "{err}");
}

#[test]
fn the_script_fits_the_command_line_and_sizes_reach_it() {
    let s = guest_script(32, 7, 8);
    assert!(s.contains("--size=32M"), "{s}");
    assert!(s.contains("--runtime=7"), "{s}");
    assert!(s.contains("count=128"), "{s}");
    assert!(guest::script_cmdline(&s).len() < guest::KERNEL_CMDLINE_MAX - 200);
    assert!(!guest_script(32, 7, 0).contains("nc "));
}

#[test]
fn receive_times_one_connection() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(&vec![7u8; 4 << 20]).expect("send");
    });
    let never = AtomicBool::new(false);
    let mib_s = receive(l, Duration::from_secs(20), &never).expect("received");
    sender.join().expect("sender");
    assert!(mib_s > 0.0 && mib_s.is_finite(), "{mib_s}");
    let idle = TcpListener::bind("127.0.0.1:0").expect("bind");
    assert!(receive(idle, Duration::from_millis(100), &never).is_err());
    let stopped = AtomicBool::new(true);
    let idle = TcpListener::bind("127.0.0.1:0").expect("bind");
    let t = Instant::now();
    assert!(receive(idle, Duration::from_secs(60), &stopped).is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn options(dir: &Path) -> IoBenchOptions {
    std::fs::write(dir.join("vmlinux"), b"k").expect("kernel");
    std::fs::write(dir.join("initrd"), b"i").expect("initrd");
    // A fio whose terse line puts the job's numbers in both directions,
    // and a vessel that prints guest result lines.
    let mut terse: Vec<&str> = vec!["0"; 60];
    terse[0] = "3";
    terse[6] = "2048";
    terse[7] = "512";
    terse[47] = "4096";
    terse[48] = "1024";
    let fio = script(
        dir,
        "fio",
        &format!("echo 'fio noise'; echo '{}'", terse.join(";")),
    );
    let vessel = script(
        dir,
        "vessel",
        "echo 'VESSEL-IO seqwrite 0;0;0;10240;10'; echo 'VESSEL-IO seqread 0;5120;5;0;0'; \
         echo 'VESSEL-IO randread 0;400;100;0;0'; echo VESSEL-EXIT-STATUS=0",
    );
    IoBenchOptions {
        vessel,
        engine: "soft".into(),
        qemu: dir.join("no-such-qemu"),
        fio,
        kernel: dir.join("vmlinux"),
        initrd: Ok(dir.join("initrd")),
        cmdline: "console=ttyS0".into(),
        memory_mib: 256,
        file: dir.join("disk.img"),
        seq_mib: 1,
        rand_secs: 1,
        net_mib: 0,
        timeout: Duration::from_secs(20),
        machines: IoMachine::ALL.to_vec(),
        caches: HostCache::ALL.to_vec(),
        vessel_direct: Ok(()),
    }
}

#[test]
fn fake_machines_make_a_table_and_a_missing_qemu_is_unavailable() {
    let dir = tempfile_dir("table");
    let report = io(&options(&dir)).expect("ran");
    assert_eq!(
        std::fs::metadata(dir.join("disk.img")).expect("file").len(),
        1 << 20
    );
    assert_eq!(report.rows.len(), 6, "{report:?}");
    let native = report
        .row(IoMachine::Native, HostCache::Direct)
        .expect("native row");
    let Outcome::Measured(d) = &native.disk else {
        panic!("{native:?}")
    };
    assert_eq!(d.seq_read_mib_s, 2.0);
    assert_eq!(d.seq_write_mib_s, 4.0);
    let vessel = report
        .row(IoMachine::Vessel, HostCache::Cached)
        .expect("vessel row");
    let Outcome::Measured(d) = &vessel.disk else {
        panic!("{vessel:?}")
    };
    assert_eq!(
        (d.seq_read_mib_s, d.seq_write_mib_s, d.rand_read_iops),
        (5.0, 10.0, Some(100.0))
    );
    let qemu = report
        .row(IoMachine::QemuQ35, HostCache::Direct)
        .expect("qemu row");
    assert!(
        matches!(&qemu.disk, Outcome::Unavailable(w) if w.contains("not found")),
        "{qemu:?}"
    );
    let table = report.to_string();
    assert!(table.contains("seq read MiB/s"), "{table}");
    assert!(table.contains("qemu q35 tcg (direct): "), "{table}");
    assert!(table.contains("goal (cached) rand read"), "{table}");
    assert!(table.contains("goal (direct) rand read"), "{table}");
    let labelled = |m: &str, c: &str| {
        table.lines().any(|l| {
            l.split_whitespace()
                .take(4)
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&format!("{m} {c}"))
        })
    };
    assert!(
        labelled("vessel", "cached") && labelled("vessel", "direct"),
        "{table}"
    );
    assert!(
        labelled("native", "cached") && labelled("native", "direct"),
        "{table}"
    );
    report.check().expect("nothing failed");
}

#[test]
fn a_guest_without_results_fails_the_check() {
    let dir = tempfile_dir("fail");
    let mut opts = options(&dir);
    opts.vessel = script(&dir, "vessel2", "echo 'Kernel panic'; exit 1");
    opts.machines = vec![IoMachine::Vessel];
    let report = io(&opts).expect("ran");
    assert!(matches!(&report.rows[0].disk, Outcome::Failed(w) if w.contains("no seqwrite")));
    assert!(matches!(report.check(), Err(BenchError::IoFailed { .. })));
}

#[test]
fn without_a_guest_initramfs_the_guest_rows_are_unavailable() {
    let dir = tempfile_dir("nofio");
    let mut opts = options(&dir);
    opts.initrd = Err("fio not found".into());
    let report = io(&opts).expect("ran");
    let vessel = report
        .row(IoMachine::Vessel, HostCache::Cached)
        .expect("row");
    assert!(matches!(&vessel.disk, Outcome::Unavailable(w) if w == "fio not found"));
    assert!(report
        .row(IoMachine::Native, HostCache::Cached)
        .is_some_and(|r| r.disk.measured().is_some()));
    report.check().expect("native measured, nothing failed");
}

#[test]
fn a_missing_fio_gives_no_initramfs() {
    let dir = tempfile_dir("nofio2");
    let image = guest::GuestImage {
        kernel_bzimage: dir.join("b"),
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initrd"),
        kernel_release: "t".into(),
        default_cmdline: String::new(),
    };
    let err = fio_initramfs(&image, Path::new("/nonexistent/fio")).unwrap_err();
    assert!(err.contains("not found"), "{err}");
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-bench-io-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn without_fio_the_guest_falls_back_to_dd_for_sequential() {
    let out = "VESSEL-IO seqwrite libc.so.6: CPU ISA level is lower than required\n\
               VESSEL-IO ddwrite 64 10.00 14.00\nVESSEL-IO ddread 64 20.00 22.00\n";
    let d = guest_disk(out).expect("dd numbers");
    assert_eq!((d.seq_write_mib_s, d.seq_read_mib_s), (16.0, 32.0));
    assert_eq!(d.rand_read_iops, None);
    assert!(d.fio_error.as_deref().is_some_and(|e| e.contains("ISA")));
    assert!(guest_disk("VESSEL-IO ddread 64 5 5\nVESSEL-IO ddwrite 64 1 2").is_err());
    assert_eq!(dd_rate("8 1.5 x"), None);
}

#[test]
fn without_vessel_direct_only_its_direct_row_is_unavailable() {
    let dir = tempfile_dir("nodirect");
    let mut opts = options(&dir);
    opts.vessel_direct = Err(VESSEL_NO_DIRECT.into());
    opts.machines = vec![IoMachine::Vessel];
    let report = io(&opts).expect("ran");
    let cached = report.row(IoMachine::Vessel, HostCache::Cached);
    assert!(
        cached.is_some_and(|r| r.disk.measured().is_some()),
        "{report:?}"
    );
    let direct = report.row(IoMachine::Vessel, HostCache::Direct);
    assert!(
        direct
            .is_some_and(|r| matches!(&r.disk, Outcome::Unavailable(w) if w.contains("direct=on"))),
        "{report:?}"
    );
    let table = report.to_string();
    assert!(table.contains("the direct pair needs"), "{table}");
    report.check().expect("cached measured, nothing failed");
}

fn args_of(cmd: &Command) -> String {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn each_machine_gets_the_host_cache_mode_of_its_row() {
    let dir = tempfile_dir("modes");
    let opts = options(&dir);
    let initrd = dir.join("initrd");
    let file = opts.file.display().to_string();
    let cmd = |m, c| args_of(&guest_command(&opts, &initrd, (m, c), None));
    let vessel_cached = cmd(IoMachine::Vessel, HostCache::Cached);
    assert!(
        vessel_cached.contains(&format!("--disk {file} ")),
        "{vessel_cached}"
    );
    assert!(!vessel_cached.contains("direct=on"), "{vessel_cached}");
    let vessel_direct = cmd(IoMachine::Vessel, HostCache::Direct);
    assert!(
        vessel_direct.contains(&format!("--disk {file},direct=on")),
        "{vessel_direct}"
    );
    let qemu_cached = cmd(IoMachine::QemuQ35, HostCache::Cached);
    assert!(qemu_cached.contains("cache=writeback"), "{qemu_cached}");
    let qemu_direct = cmd(IoMachine::QemuQ35, HostCache::Direct);
    assert!(qemu_direct.contains("cache=none"), "{qemu_direct}");
    // Natively: buffered without dropping the cache, or O_DIRECT; the
    // guests always bypass their own page cache.
    assert!(fio_common("f", HostCache::Cached).contains("--direct=0 --invalidate=0"));
    assert!(fio_common("f", HostCache::Direct).contains("--direct=1"));
    assert!(guest_script(1, 1, 0).contains("--direct=1"));
}

#[test]
fn vessels_direct_option_is_found_in_its_help() {
    let dir = tempfile_dir("probe");
    let with = script(
        &dir,
        "vessel-direct",
        "echo '      --disk <PATH[,readonly][,direct=on|off]>'",
    );
    assert_eq!(vessel_has_direct(&with), Ok(()));
    let without = script(&dir, "vessel-old", "echo '      --disk <PATH[,readonly]>'");
    assert_eq!(
        vessel_has_direct(&without),
        Err(VESSEL_NO_DIRECT.to_string())
    );
    assert!(vessel_has_direct(&dir.join("no-such-vessel")).is_err());
}
