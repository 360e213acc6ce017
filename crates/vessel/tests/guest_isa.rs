//! The x86-64 levels as a guest program sees them (issue 13, check 3).
//!
//! `tests/data/guest_isa.c` (integer and floating-point kernels through
//! intrinsics: SSE3-4.2, POPCNT, CRC32, MXCSR rounding/DAZ/FTZ, x87
//! precision and rounding control; in its v3 build also AVX2, FMA, F16C,
//! BMI1/2, LZCNT, MOVBE; `extras`: AES-NI, PCLMULQDQ, SHA) is built here
//! with the host's gcc, `-O2 -static`, once for `-march=x86-64-v3` and once
//! for `-march=x86-64-v2`, and shared with the default guest over
//! virtio-fs together with the host's own `ld.so`. Each kernel prints a
//! checksum of its result bits (and the exception flags it raised):
//! - under the default CPU model both builds print exactly what they print
//!   on the host, and so do the extras the guest's CPUID advertises, and
//!   `ld.so --help` lists `x86-64-v3 (supported, searched)`;
//! - under `--cpu-model v3` the v3 build matches the host and `ld.so`
//!   finds v3 but not v4 (nor does it under the default);
//! - under `--cpu-model v2` the v2 build matches the host and `ld.so`
//!   finds v2 but not v3;
//! - under `--cpu-model baseline` `ld.so` finds neither v2 nor v3.
//!
//! The v3 build's disassembly is checked for the instructions the kernels
//! are meant to run, so a compiler that chose other instructions cannot
//! make the test pass vacuously. Needs gcc and objdump on the host (both
//! installed by scripts/setup) and a CPU with x86-64-v3 (the host runs the
//! v3 build to get the expected output).

mod common;
use common::{run, temp_dir, vessel, TempDir};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/guest_isa.c");
const HOST_LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
/// Where the guest sees the share.
const GUEST_DIR: &str = "/isa";
/// Instructions the v3 build must contain (objdump's spelling).
const V3_INSTRUCTIONS: &[&str] = &[
    "vpermd",
    "vpmulld",
    "vpshufb",
    "vfmadd132pd",
    "vcvtps2ph",
    "vcvtph2ps",
    "pdep",
    "pext",
    "shrx",
    "rorx",
    "lzcnt",
    "tzcnt",
    "movbe",
    "popcnt",
    "crc32",
    "vpcmpestri",
    "fsqrt",
    "fprem",
];

/// The share: both builds and the host's `ld.so`.
fn build_share(test: &str) -> TempDir {
    let dir = temp_dir(test);
    for level in ["v3", "v2"] {
        let out = dir.0.join(format!("isa-{level}"));
        let status = Command::new("gcc")
            .args(["-O2", "-static", &format!("-march=x86-64-{level}"), "-o"])
            .arg(&out)
            .arg(SOURCE)
            .status()
            .expect("gcc on the host (scripts/setup installs it)");
        assert!(status.success(), "gcc -march=x86-64-{level} failed");
    }
    std::fs::copy(HOST_LD_SO, dir.0.join("ld.so")).expect("copy the host's ld.so");
    dir
}

/// What `bin ARGS` prints on the host, then `status 0` as `in_guest`
/// has the guest print it.
fn host(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("run on the host");
    assert!(out.status.success(), "{} failed on the host", bin.display());
    String::from_utf8_lossy(&out.stdout).into_owned() + "status 0\n"
}

/// A shell command that runs `name ARGS` from the share and prints its
/// exit status after its output (132 is SIGILL: an instruction the guest's
/// CPU refused).
fn in_guest(name: &str, args: &str) -> String {
    format!("{GUEST_DIR}/{name} {args}; echo \"status $?\"")
}

/// Runs `script` in the default guest with the share at GUEST_DIR, under
/// `model` (the default when None); returns stdout, split into the
/// sections the script starts with `echo "== NAME"`.
fn guest(share: &TempDir, model: Option<&str>, script: &str) -> Vec<(String, String)> {
    let mut cmd = vessel();
    cmd.arg("run");
    if let Some(m) = model {
        cmd.args(["--cpu-model", m]);
    }
    cmd.arg("-v")
        .arg(format!("{}:{GUEST_DIR}:ro", share.0.display()))
        .args(["--", "sh", "-c", script]);
    let r = run(cmd, BOOT_TIMEOUT);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(
        r.status,
        Some(0),
        "model {model:?}: stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in r.stdout.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            sections.push((name.to_string(), String::new()));
        } else if let Some((_, text)) = sections.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    sections
}

fn section<'a>(sections: &'a [(String, String)], name: &str) -> &'a str {
    sections
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("no section {name} in {sections:?}"))
}

/// The line `ld.so --help` prints for an ISA level's hwcaps directory.
fn level_line<'a>(help: &'a str, level: &str) -> &'a str {
    help.lines()
        .map(str::trim)
        .find(|l| l.split_whitespace().next() == Some(level))
        .unwrap_or("(not listed)")
}

/// The differences a test found, all reported at once at its end, so one
/// run shows every part that fails.
#[derive(Default)]
struct Differences(Vec<String>);

impl Differences {
    fn same(&mut self, what: &str, guest: &str, host: &str) {
        if guest != host {
            self.0.push(format!(
                "{what}: guest printed\n{guest}host printed\n{host}"
            ));
        }
    }

    /// `ld.so --help` in the guest says `level` is (or is not) supported.
    fn level(&mut self, help: &str, level: &str, supported: bool) {
        let line = level_line(help, level);
        let says = line.contains("(supported, searched)");
        let none = !line.contains("supported");
        if (supported && !says) || (!supported && !none) {
            let want = if supported {
                "supported"
            } else {
                "unsupported"
            };
            self.0
                .push(format!("ld.so --help: {line:?}, want {level} {want}"));
        }
    }

    /// Each line of the guest's `extras` output is the host's line, or
    /// says the guest's CPUID does not advertise that extension.
    fn extras(&mut self, guest: &str, host: &str) {
        if guest.lines().count() != host.lines().count() {
            return self.same("extras", guest, host);
        }
        for (g, h) in guest.lines().zip(host.lines()) {
            let name = h.split(':').next().unwrap_or_default();
            if g.ends_with(": not advertised") && !h.starts_with("status") {
                eprintln!("guest_isa: {name} not advertised to the guest: not compared");
            } else if g != h {
                self.0.push(format!("extras: guest {g:?}, host {h:?}"));
            }
        }
    }

    fn assert_none(self, model: &str) {
        assert!(self.0.is_empty(), "model {model}:\n{}", self.0.join("\n"));
    }
}

#[test]
fn the_v3_build_contains_the_instructions_it_is_meant_to_test() {
    let share = build_share("isa-objdump");
    let out = Command::new("objdump")
        .arg("-d")
        .arg(share.0.join("isa-v3"))
        .output()
        .expect("objdump on the host");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let words: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.split('\t').nth(2))
        .filter_map(|ins| ins.split_whitespace().next())
        .collect();
    for ins in V3_INSTRUCTIONS {
        assert!(words.contains(ins), "the v3 build has no {ins}");
    }
}

#[test]
fn default_model_runs_both_builds_as_the_host_does() {
    let share = build_share("isa-max");
    let v3 = host(&share.0.join("isa-v3"), &[]);
    let v2 = host(&share.0.join("isa-v2"), &[]);
    let extras = host(&share.0.join("isa-v2"), &["extras"]);
    let script = format!(
        "echo '== v3'; {}; echo '== v2'; {}; echo '== extras'; {}; \
         echo '== ld.so'; {GUEST_DIR}/ld.so --help; echo '== end'",
        in_guest("isa-v3", ""),
        in_guest("isa-v2", ""),
        in_guest("isa-v2", "extras"),
    );
    let got = guest(&share, None, &script);
    let mut d = Differences::default();
    d.same("the v3 build", section(&got, "v3"), &v3);
    d.same("the v2 build", section(&got, "v2"), &v2);
    d.extras(section(&got, "extras"), &extras);
    d.level(section(&got, "ld.so"), "x86-64-v3", true);
    d.level(section(&got, "ld.so"), "x86-64-v2", true);
    d.level(section(&got, "ld.so"), "x86-64-v4", false);
    d.assert_none("max (the default)");
}

#[test]
fn v3_model_runs_the_v3_build_and_offers_no_v4() {
    let share = build_share("isa-v3");
    let v3 = host(&share.0.join("isa-v3"), &[]);
    let script = format!(
        "echo '== v3'; {}; echo '== ld.so'; {GUEST_DIR}/ld.so --help; echo '== end'",
        in_guest("isa-v3", "")
    );
    let got = guest(&share, Some("v3"), &script);
    let mut d = Differences::default();
    d.same("the v3 build", section(&got, "v3"), &v3);
    d.level(section(&got, "ld.so"), "x86-64-v3", true);
    d.level(section(&got, "ld.so"), "x86-64-v4", false);
    d.assert_none("v3");
}

#[test]
fn v2_model_runs_the_v2_build_and_offers_no_v3() {
    let share = build_share("isa-v2");
    let v2 = host(&share.0.join("isa-v2"), &[]);
    let script = format!(
        "echo '== v2'; {}; echo '== ld.so'; {GUEST_DIR}/ld.so --help; echo '== end'",
        in_guest("isa-v2", "")
    );
    let got = guest(&share, Some("v2"), &script);
    let mut d = Differences::default();
    d.same("the v2 build", section(&got, "v2"), &v2);
    d.level(section(&got, "ld.so"), "x86-64-v2", true);
    d.level(section(&got, "ld.so"), "x86-64-v3", false);
    d.assert_none("v2");
}

#[test]
fn baseline_model_offers_neither_v2_nor_v3() {
    let share = build_share("isa-baseline");
    let script = format!("echo '== ld.so'; {GUEST_DIR}/ld.so --help; echo '== end'");
    let got = guest(&share, Some("baseline"), &script);
    let mut d = Differences::default();
    d.level(section(&got, "ld.so"), "x86-64-v2", false);
    d.level(section(&got, "ld.so"), "x86-64-v3", false);
    d.assert_none("baseline");
}
