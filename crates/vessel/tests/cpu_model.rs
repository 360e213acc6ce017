//! `vessel run --cpu-model baseline|v2|v3|max` (issue 13): the default
//! guest's /proc/cpuinfo shows each model's features and none beyond it;
//! a model the engine cannot give on this host is refused with the
//! features it lacks, never quietly downgraded.

mod common;
use common::{run, vessel};
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// /proc/cpuinfo names of what each model adds to the one before it.
const BASELINE: &[&str] = &["cx16", "popcnt", "lahf_lm", "abm"];
const V2: &[&str] = &["pni", "ssse3", "sse4_1", "sse4_2"];
const V3: &[&str] = &[
    "avx", "avx2", "bmi1", "bmi2", "fma", "f16c", "movbe", "xsave",
];
/// Beyond v3: in `max` where the engine offers them, never in v3.
const BEYOND_V3: &[&str] = &["adx", "rdseed", "sha_ni", "fsgsbase", "aes", "pclmulqdq"];

/// The guest's CPU flags under `model`, or vessel's stderr if it refused.
fn flags(model: &str) -> Result<Vec<String>, String> {
    let mut cmd = vessel();
    cmd.args([
        "run",
        "--cpu-model",
        model,
        "--",
        "grep",
        "-m1",
        "^flags",
        "/proc/cpuinfo",
    ]);
    let r = run(cmd, BOOT_TIMEOUT);
    if r.status != Some(0) {
        return Err(r.stderr);
    }
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let words = line.split(':').nth(1).unwrap_or("");
    Ok(words.split_whitespace().map(str::to_string).collect())
}

fn has(flags: &[String], name: &str) -> bool {
    flags.iter().any(|f| f == name)
}

/// Checks one model: it boots with exactly its features if `max` has
/// them all, and is refused naming what is missing otherwise.
fn check(model: &str, want: &[&str], absent: &[&str], max: &[String]) {
    let available = want.iter().all(|f| has(max, f));
    match flags(model) {
        Ok(got) => {
            assert!(
                available,
                "{model} booted though max lacks some of {want:?}"
            );
            for f in want {
                assert!(has(&got, f), "{model}: {f} missing from {got:?}");
            }
            for f in absent {
                assert!(!has(&got, f), "{model}: {f} present in {got:?}");
            }
        }
        Err(stderr) => {
            assert!(
                !available,
                "{model} refused though max has {want:?}:\n{stderr}"
            );
            assert!(
                stderr.contains(&format!("--cpu-model {model} needs ")),
                "{model}:\n{stderr}"
            );
        }
    }
}

#[test]
fn each_model_shows_its_features_and_none_beyond() {
    let max = flags("max").expect("the default model boots");
    for f in BASELINE {
        assert!(has(&max, f), "max lacks {f}: {max:?}");
    }
    let v2: Vec<&str> = [BASELINE, V2].concat();
    let v3: Vec<&str> = [BASELINE, V2, V3].concat();
    check("baseline", BASELINE, &[V2, V3, BEYOND_V3].concat(), &max);
    check("v2", &v2, &[V3, BEYOND_V3].concat(), &max);
    check("v3", &v3, BEYOND_V3, &max);
}

#[test]
fn help_explains_the_option() {
    let mut cmd = vessel();
    cmd.args(["run", "--help"]);
    let r = run(cmd, Duration::from_secs(30));
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("--cpu-model"), "{}", r.stdout);
    assert!(r.stdout.contains("x86-64-v3"), "{}", r.stdout);
}
