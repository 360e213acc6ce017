//! Too little guest memory is refused before booting, with the minimum
//! the default guest needs, and that minimum boots; `vessel completions`
//! prints shell completion scripts (issue 12, installation and help).

mod common;
use common::{run, vessel};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The N of "they need at least N MiB" in `stderr`.
fn minimum(stderr: &str) -> u64 {
    let rest = stderr
        .split("they need at least ")
        .nth(1)
        .unwrap_or_else(|| panic!("no minimum in:\n{stderr}"));
    rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap()
}

#[test]
fn too_little_memory_names_the_minimum_and_the_minimum_boots() {
    // Prepare the default guest first, so the timing below is vessel's.
    let mut cmd = vessel();
    cmd.args(["guest", "prepare"]);
    let r = run(cmd, BOOT_TIMEOUT);
    assert_eq!(r.status, Some(0), "guest prepare:\n{}", r.stderr);

    let mut cmd = vessel();
    cmd.args(["run", "--memory", "32", "--", "true"]);
    let start = Instant::now();
    let r = run(cmd, BOOT_TIMEOUT);
    let took = start.elapsed();
    assert_eq!(r.status, Some(1), "stderr:\n{}", r.stderr);
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    assert!(
        r.stderr
            .contains("guest memory of 32 MiB is too small for this kernel and initrd"),
        "{}",
        r.stderr
    );
    let need = minimum(&r.stderr);
    assert!(
        r.stderr.contains(&format!("use --memory {need} or more")),
        "{}",
        r.stderr
    );
    assert!((33..=256).contains(&need), "minimum {need} MiB");
    assert!(!r.stderr.contains("elf segment"), "{}", r.stderr);

    // One MiB short is refused too; the minimum itself runs the command.
    let mut cmd = vessel();
    cmd.args(["run", "--memory", &(need - 1).to_string(), "--", "true"]);
    let r = run(cmd, BOOT_TIMEOUT);
    assert_eq!(r.status, Some(1), "stderr:\n{}", r.stderr);
    assert_eq!(minimum(&r.stderr), need);
    let mut cmd = vessel();
    cmd.args(["run", "--memory", &need.to_string(), "--", "echo", "booted"]);
    let r = run(cmd, BOOT_TIMEOUT);
    assert_eq!(r.status, Some(0), "at {need} MiB:\n{}", r.stderr);
    assert!(r.stdout.contains("booted"), "{}", r.stdout);
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = vessel();
        cmd.args(["completions", shell]);
        let r = run(cmd, Duration::from_secs(30));
        assert_eq!(r.status, Some(0), "{shell}: {}", r.stderr);
        assert!(r.stdout.contains("vessel"), "{shell}:\n{}", r.stdout);
        assert!(r.stdout.contains("run"), "{shell}:\n{}", r.stdout);
        // fish names long options without their dashes.
        assert!(r.stdout.contains("memory"), "{shell}:\n{}", r.stdout);
    }
    let mut cmd = vessel();
    cmd.args(["completions", "tcsh"]);
    let r = run(cmd, Duration::from_secs(30));
    assert_eq!(r.status, Some(2), "an unknown shell is a usage error");
}
