use super::*;
use crate::api_report::{note, Published, Row, Spread};
use crate::smaps::Mapping;
use std::error::Error;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn memory(total_mib: u64, guest_mib: u64) -> MemorySplit {
    MemorySplit {
        total_rss_kib: total_mib * 1024,
        guest_rss_kib: guest_mib * 1024,
        overhead_pss_kib: (total_mib - guest_mib) * 512,
        largest: vec![Mapping {
            name: "/memfd:vessel-jit (deleted)".into(),
            inode: 7,
            size_kib: 65536,
            rss_kib: 2048,
            pss_kib: 1024,
        }],
    }
}

fn report() -> ApiReport {
    let boot = |ready: u64, mem: MemorySplit| BootRun {
        spawn_to_ready: ms(ready + 30),
        start_to_ready: ms(ready),
        start_answer: ms(300),
        memory: mem,
    };
    ApiReport {
        engine: "soft".into(),
        engine_note: "soft (no hardware virtualization)".into(),
        memory_mib: 128,
        cmdline: "console=ttyS0".into(),
        starts: vec![
            StartRun {
                wall: ms(10),
                cpu: ms(4),
            },
            StartRun {
                wall: ms(30),
                cpu: ms(8),
            },
            StartRun {
                wall: ms(20),
                cpu: ms(6),
            },
        ],
        boots: vec![boot(1000, memory(100, 80)), boot(1500, memory(110, 80))],
        pauses: vec![ms(1), ms(3)],
        resumes: vec![ms(2)],
        busy_pauses: vec![ms(7)],
        busy_resumes: vec![],
    }
}

#[test]
fn spreads_have_median_min_and_max() {
    let s = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
    assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
    let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).expect("values");
    assert_eq!(s.median, 2.5);
    assert_eq!(Spread::of(&[]), None);
    assert_eq!(Spread::of(&[1.0, f64::NAN]), None);
    let s = Spread::of_ms(&[ms(5), Duration::from_micros(1500)]).expect("values");
    assert!((s.median - 3.25).abs() < 1e-9, "{s:?}");
}

#[test]
fn rows_compare_medians_with_firecracker() {
    let rows = report().rows();
    let row = |what: &str| -> &Row {
        rows.iter()
            .find(|r| r.what.starts_with(what))
            .unwrap_or_else(|| panic!("no row {what}"))
    };
    let wall = row("start to GET / answered, wall");
    assert_eq!(wall.vessel.map(|s| s.median), Some(20.0));
    assert_eq!(wall.ratio(), Some(20.0 / 12.0));
    assert_eq!(row("start to GET / answered, CPU").ratio(), Some(6.0 / 8.0));
    let boot = row("InstanceStart to READY");
    assert_eq!(boot.firecracker, Published::AtMost(125.0));
    assert_eq!(boot.ratio(), Some(1250.0 / 125.0));
    let over = row("VMM overhead (Rss");
    assert_eq!(over.vessel.map(|s| s.median), Some(25.0));
    assert_eq!(over.ratio(), Some(5.0));
    assert_eq!(
        row("VMM overhead by Pss").vessel.map(|s| s.median),
        Some(12.5)
    );
    let paused = row("PATCH /vm Paused, idle");
    assert_eq!(paused.ratio(), None, "nothing published");
    assert_eq!(paused.vessel.map(|s| s.median), Some(2.0));
    assert_eq!(
        row("PATCH /vm Paused, busy").vessel.map(|s| s.median),
        Some(7.0)
    );
    assert_eq!(row("PATCH /vm Resumed, busy").vessel, None);
}

#[test]
fn the_table_shows_figures_ratios_and_notes() {
    let text = report().to_string();
    assert!(text.contains("3 start-ups, 2 boot(s)"), "{text}");
    let wall = text
        .lines()
        .find(|l| l.starts_with("start to GET / answered, wall"))
        .unwrap_or_default();
    for part in ["20.0", "10.0-30.0 (n=3)", "~12", "1.67x"] {
        assert!(wall.contains(part), "{part} missing from {wall:?}");
    }
    let pause = text
        .lines()
        .find(|l| l.starts_with("PATCH /vm Paused, idle"))
        .unwrap_or_default();
    assert!(pause.contains("none published"), "{pause}");
    assert!(pause.trim_end().ends_with('-'), "{pause}");
    assert!(text.contains("<= 5 "), "{text}");
    assert!(
        text.contains("engine: soft (no hardware virtualization)"),
        "{text}"
    );
    // Notes wrap: compare them as one line.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("/memfd:vessel-jit (deleted) (2.0 of 64.0 MiB resident)"),
        "{text}"
    );
    assert!(flat.contains("within 8 CPU ms"), "{text}");
}

#[test]
fn an_empty_sample_shows_as_not_available() {
    let mut r = report();
    r.pauses.clear();
    let row = r
        .rows()
        .into_iter()
        .find(|r| r.what.starts_with("PATCH /vm Paused, idle"))
        .expect("row");
    assert_eq!(row.vessel, None);
    assert!(row.to_string().contains("n/a"), "{row}");
}

/// Options whose `vessel` is a shell script with `body`, in a directory of
/// the test's own.
fn options(name: &str, body: &str) -> ApiBenchOptions {
    let dir = std::env::temp_dir().join(format!("vessel-bench-api-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let vessel = dir.join("vessel");
    std::fs::write(&vessel, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&vessel, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join("vmlinux"), b"k").expect("kernel");
    std::fs::write(dir.join("initrd"), b"i").expect("initrd");
    ApiBenchOptions {
        vessel,
        engine: "soft".into(),
        engine_note: String::new(),
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd"),
        cmdline: "console=ttyS0".into(),
        memory_mib: 128,
        runs: 2,
        boots: 1,
        timeout: Duration::from_secs(20),
        socket_dir: dir.join("sock"),
    }
}

fn remove(opts: &ApiBenchOptions) {
    if let Some(dir) = opts.vessel.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_vessel_that_exits_is_reported_with_its_output() {
    let opts = options("exits", "echo 'cannot bind the socket' >&2; exit 3");
    let err = api(&opts).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ApiBenchError::Exited { .. }), "{text}");
    assert!(text.contains("cannot bind the socket"), "{text}");
    assert!(!opts.socket_dir.exists(), "the socket directory is removed");
    remove(&opts);
}

#[test]
fn a_vessel_that_never_listens_times_out() {
    let mut opts = options("silent", "exec sleep 30");
    opts.timeout = Duration::from_millis(300);
    let t = std::time::Instant::now();
    let err = api(&opts).unwrap_err();
    assert!(matches!(err, ApiBenchError::Timeout { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    remove(&opts);
}

#[test]
fn missing_guest_files_are_named() {
    let mut opts = options("noguest", "exit 0");
    opts.initrd = opts.kernel.with_file_name("nope");
    let err = api(&opts).unwrap_err();
    assert!(
        matches!(&err, ApiBenchError::GuestMissing(p) if p.ends_with("nope")),
        "{err}"
    );
    remove(&opts);
}

#[test]
fn notes_wrap_at_the_width() {
    let text = note("aaaa bbbb cccc dddd", 11);
    assert_eq!(text, "- aaaa bbbb\n  cccc dddd");
    assert!(text.lines().all(|l| l.len() <= 11), "{text}");
    // A word longer than the width gets a line of its own.
    assert_eq!(note("a verylongword b", 6), "- a\n  verylongword\n  b");
}

/// A stand-in for `vessel --api-sock`: Firecracker's API over the Unix
/// socket, guest RAM as one private anonymous mapping of mem_size_mib
/// (NORESERVE, so it never merges with the interpreter's own mappings),
/// 8 MiB of it touched and the READY line printed at InstanceStart.
const FAKE_VMM: &str = r#"
import http.server, json, mmap, socketserver, sys
sock = sys.argv[sys.argv.index("--api-sock") + 1]
vm = {"ram": None, "state": "Not started"}
class Api(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def answer(self, code, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def body(self):
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    def do_GET(self):
        self.answer(200, {"state": vm["state"]})
    def do_PUT(self):
        body = self.body()
        if self.path == "/machine-config":
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000
            vm["ram"] = mmap.mmap(-1, body["mem_size_mib"] << 20, flags=flags)
        if self.path == "/actions" and body["action_type"] == "InstanceStart":
            vm["ram"][0:8 << 20] = b"x" * (8 << 20)
            vm["state"] = "Running"
            print("VESSEL-GUEST-READY", flush=True)
        self.answer(204)
    def do_PATCH(self):
        vm["state"] = "Paused" if self.body()["state"] == "Paused" else "Running"
        self.answer(204)
socketserver.UnixStreamServer(sock, Api).serve_forever()
"#;

#[test]
fn a_fake_vmm_is_measured_end_to_end() {
    let mut opts = options("fake", "exec python3 \"$(dirname \"$0\")/fake.py\" \"$@\"");
    let Some(dir) = opts.vessel.parent().map(Path::to_path_buf) else {
        panic!("no test directory");
    };
    std::fs::write(dir.join("fake.py"), FAKE_VMM).expect("fake vmm");
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no python3 for the fake VMM");
        remove(&opts);
        return;
    }
    opts.runs = 3;
    opts.boots = 2;
    let report = api(&opts).unwrap_or_else(|e| panic!("{e}: {:?}", e.source()));
    remove(&opts);
    assert_eq!(report.starts.len(), 3);
    assert!(report
        .starts
        .iter()
        .all(|s| s.cpu > Duration::ZERO && s.wall > Duration::ZERO));
    assert_eq!(report.boots.len(), 2);
    for boot in &report.boots {
        assert!(boot.spawn_to_ready > boot.start_to_ready, "{boot:?}");
        assert_eq!(boot.memory.guest_rss_kib, 8 << 10, "{boot:?}");
        assert!(boot.memory.overhead_rss_kib() > 1024, "{boot:?}");
    }
    assert_eq!((report.pauses.len(), report.resumes.len()), (3, 3));
    assert_eq!(
        (report.busy_pauses.len(), report.busy_resumes.len()),
        (3, 3)
    );
}
