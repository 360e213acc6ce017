//! `vessel bench boot` on the real default guest, vessel only (issue 12,
//! check 7): the plain boot, `-v` of a temporary directory and `--net
//! user` each boot once, and the table shows every row measured (READY,
//! then the command's first output, then exit) and the variants next to
//! the plain boot with the 20% goal's verdict. The verdict itself is not
//! asserted: one boot each on a shared host is too noisy for it.
//!
//! Needs passt for the `--net user` row (scripts/setup installs it):
//! skipped loudly without it, except in CI, where that fails.

mod common;
use common::{run, vessel};
use std::path::Path;
use std::time::Duration;

fn passt_installed() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("passt").is_file()));
    let found = on_path || Path::new("/usr/bin/passt").is_file();
    if !found {
        eprintln!("BENCH BOOT TEST SKIPPED: passt is not installed (apt-get install passt)");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have passt: scripts/setup installs it"
        );
    }
    found
}

/// The numbers of `name`'s row: READY, first output, exit, RSS.
fn row(table: &str, name: &str) -> Vec<f64> {
    let line = table
        .lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with("  ") && !rest.trim().is_empty())
        })
        .unwrap_or_else(|| panic!("no {name:?} row:\n{table}"));
    line[name.len()..]
        .split_whitespace()
        .take(4)
        .map(|v| {
            v.trim_end_matches('*')
                .parse()
                .unwrap_or_else(|_| panic!("{name:?} row is not measured: {line:?}\n{table}"))
        })
        .collect()
}

#[test]
fn bench_boot_compares_share_and_user_network_with_the_plain_boot() {
    if !passt_installed() {
        return;
    }
    let mut cmd = vessel();
    cmd.args([
        "bench",
        "boot",
        "--runs",
        "1",
        "--machines",
        "vessel,vessel-v,vessel-net",
        "--timeout",
        "300",
    ]);
    let r = run(cmd, Duration::from_secs(900));
    assert!(!r.timed_out, "bench boot timed out: {}", r.stderr);
    assert_eq!(r.status, Some(0), "{}\n{}", r.stdout, r.stderr);
    let table = &r.stdout;
    for name in ["vessel", "vessel -v", "vessel --net user"] {
        let v = row(table, name);
        assert!(v[0] > 0.0, "{name}: READY at 0:\n{table}");
        assert!(
            v[0] <= v[1] && v[1] <= v[2],
            "{name}: READY, first, exit out of order:\n{table}"
        );
        assert!(
            v[3] > 100.0,
            "{name}: peak RSS under the guest's size:\n{table}"
        );
    }
    for name in ["  vessel -v ", "  vessel --net user "] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(name) && l.contains('x') && l.contains('%')),
            "no ratio for {name:?}:\n{table}"
        );
    }
    assert!(
        table.contains("goal each variant adds < 20% to the command's first output: "),
        "{table}"
    );
}
