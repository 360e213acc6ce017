//! How a soft VM runs: which tiers are on and which diagnostics it keeps.
//! Given to [`crate::SoftHypervisor`]; the VMM fills it from the
//! `VESSEL_SOFT_*` environment ([`SoftConfig::from_env`]), tests set it
//! directly.

/// Runs of a block before it is translated, unless `VESSEL_SOFT_JIT_HOT`
/// says otherwise. Most of a Linux boot is code that runs a few times, and
/// a translation costs about as much as 20-50 interpreted runs (5-10 µs:
/// emission, links, the code buffer's fresh pages). In the Debian boot
/// (0.46e9 instructions; minimum user time of 4 boots each, same session)
/// thresholds of 64 and 256 were best (2.72 s and 2.68 s), 16 and 4
/// slower (2.90 s, 2.97 s), 1024 slowest (3.02 s).
pub const DEFAULT_HOT: u32 = 64;

/// The engine's tiers and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftConfig {
    /// Translate hot blocks to host code (`VESSEL_SOFT_JIT`, default on).
    pub translate: bool,
    /// Runs after which a block is hot (`VESSEL_SOFT_JIT_HOT`; 0 translates
    /// every block on its first run).
    pub hot_after: u32,
    /// A block the translator refuses is an error, not a quiet fallback to
    /// the interpreter (`VESSEL_SOFT_JIT_STRICT`; for tests).
    pub strict: bool,
    /// The interpreter's pre-resolved fast handlers (`VESSEL_SOFT_FAST`,
    /// default on); off leaves every instruction to the plain
    /// interpreter, so tests can compare the tiers.
    pub fast_handlers: bool,
    /// Count runs, exits and trampolines, and print them when a vCPU ends
    /// (`VESSEL_SOFT_JIT_STATS`).
    pub stats: bool,
    /// Write `/tmp/perf-PID.map` and the code buffer, for `perf`
    /// (`VESSEL_SOFT_PERF_MAP`).
    pub perf_map: bool,
    /// Sample guest RIPs and print the hottest (`VESSEL_SOFT_SAMPLE`).
    pub sample_rips: bool,
}

impl Default for SoftConfig {
    fn default() -> Self {
        SoftConfig {
            translate: true,
            hot_after: DEFAULT_HOT,
            strict: false,
            fast_handlers: true,
            stats: false,
            perf_map: false,
            sample_rips: false,
        }
    }
}

impl SoftConfig {
    /// The defaults, changed by whichever `VESSEL_SOFT_*` variables are
    /// set (see the fields). A value that does not parse keeps the default.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let d = SoftConfig::default();
        let on = |k: &str, default: bool| var(k).map_or(default, |v| v != "0");
        let set = |k: &str| var(k).is_some();
        SoftConfig {
            translate: on("VESSEL_SOFT_JIT", d.translate),
            hot_after: var("VESSEL_SOFT_JIT_HOT")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.hot_after),
            strict: set("VESSEL_SOFT_JIT_STRICT"),
            fast_handlers: on("VESSEL_SOFT_FAST", d.fast_handlers),
            stats: set("VESSEL_SOFT_JIT_STATS"),
            perf_map: set("VESSEL_SOFT_PERF_MAP"),
            sample_rips: set("VESSEL_SOFT_SAMPLE"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> SoftConfig {
        SoftConfig::from_vars(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn environment_changes_only_what_it_names() {
        assert_eq!(with(&[]), SoftConfig::default());
        let c = with(&[
            ("VESSEL_SOFT_JIT", "0"),
            ("VESSEL_SOFT_JIT_HOT", "3"),
            ("VESSEL_SOFT_FAST", "0"),
            ("VESSEL_SOFT_JIT_STATS", ""),
        ]);
        assert!(!c.translate && !c.fast_handlers && c.stats && !c.strict);
        assert_eq!(c.hot_after, 3);
        assert_eq!(
            with(&[("VESSEL_SOFT_JIT_HOT", "lots")]).hot_after,
            DEFAULT_HOT
        );
        assert!(with(&[("VESSEL_SOFT_JIT", "1")]).translate);
    }
}
