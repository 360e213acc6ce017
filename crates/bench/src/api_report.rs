//! The API benchmark's table: vessel's medians and spreads next to the
//! figures Firecracker publishes in its SPECIFICATION.md, as ratios, with
//! notes on how each side was measured.

use std::fmt;
use std::time::Duration;

use crate::api::{ApiReport, BUSY_SCRIPT, READY, SETTLE};

/// Where Firecracker's figures come from.
pub const SOURCE: &str = "SPECIFICATION.md (firecracker-microvm/firecracker, main at 81b38b9, \
    Aug 2026), for M5D.metal and M6G.metal hosts with KVM";

/// A figure Firecracker publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Published {
    /// A promise: at most this much.
    AtMost(f64),
    /// A typical value.
    About(f64),
    /// Nothing is published for this.
    Nothing,
}

impl Published {
    /// The number a ratio divides by.
    pub fn value(self) -> Option<f64> {
        match self {
            Published::AtMost(v) | Published::About(v) => Some(v),
            Published::Nothing => None,
        }
    }
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Published::AtMost(v) => write!(f, "<= {v}"),
            Published::About(v) => write!(f, "~{v}"),
            Published::Nothing => f.write_str("none published"),
        }
    }
}

/// Median, smallest and largest of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`; `None` when empty or when one is NaN.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let hi = *v.get(n / 2)?;
        let median = if n % 2 == 1 {
            hi
        } else {
            (v.get(n / 2 - 1)? + hi) / 2.0
        };
        Some(Spread {
            median,
            min: *v.first()?,
            max: *v.last()?,
            n,
        })
    }

    /// The spread of durations, in milliseconds.
    pub fn of_ms(values: &[Duration]) -> Option<Spread> {
        let ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Spread::of(&ms)
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What is measured.
    pub what: &'static str,
    /// Unit of both figures.
    pub unit: &'static str,
    /// vessel's figures.
    pub vessel: Option<Spread>,
    /// Firecracker's.
    pub firecracker: Published,
}

impl Row {
    /// vessel's median over Firecracker's figure (below 1.0 vessel is
    /// smaller), when both exist.
    pub fn ratio(&self) -> Option<f64> {
        let fc = self.firecracker.value().filter(|v| *v > 0.0)?;
        Some(self.vessel?.median / fc)
    }
}

const MIB: f64 = 1024.0;

impl ApiReport {
    /// The table's rows, in order.
    pub fn rows(&self) -> Vec<Row> {
        let ms = |what, v: Vec<Duration>, fc| Row {
            what,
            unit: "ms",
            vessel: Spread::of_ms(&v),
            firecracker: fc,
        };
        let mib = |what, v: Vec<f64>, fc| Row {
            what,
            unit: "MiB",
            vessel: Spread::of(&v),
            firecracker: fc,
        };
        let boots = &self.boots;
        let mem = |f: fn(&crate::smaps::MemorySplit) -> u64| -> Vec<f64> {
            boots.iter().map(|b| f(&b.memory) as f64 / MIB).collect()
        };
        vec![
            ms(
                "start to GET / answered, wall",
                self.starts.iter().map(|s| s.wall).collect(),
                Published::About(12.0),
            ),
            ms(
                "start to GET / answered, CPU",
                self.starts.iter().map(|s| s.cpu).collect(),
                Published::AtMost(8.0),
            ),
            ms(
                "InstanceStart to READY line",
                boots.iter().map(|b| b.start_to_ready).collect(),
                Published::AtMost(125.0),
            ),
            ms(
                "start to READY line",
                boots.iter().map(|b| b.spawn_to_ready).collect(),
                Published::Nothing,
            ),
            ms(
                "InstanceStart answered",
                boots.iter().map(|b| b.start_answer).collect(),
                Published::Nothing,
            ),
            ms(
                "PATCH /vm Paused, idle guest",
                self.pauses.clone(),
                Published::Nothing,
            ),
            ms(
                "PATCH /vm Resumed, idle guest",
                self.resumes.clone(),
                Published::Nothing,
            ),
            ms(
                "PATCH /vm Paused, busy guest",
                self.busy_pauses.clone(),
                Published::Nothing,
            ),
            ms(
                "PATCH /vm Resumed, busy guest",
                self.busy_resumes.clone(),
                Published::Nothing,
            ),
            mib(
                "VMM overhead (Rss - guest Rss)",
                mem(|m| m.overhead_rss_kib()),
                Published::AtMost(5.0),
            ),
            mib(
                "VMM overhead by Pss",
                mem(|m| m.overhead_pss_kib),
                Published::Nothing,
            ),
            mib(
                "guest memory touched",
                mem(|m| m.guest_rss_kib),
                Published::Nothing,
            ),
        ]
    }
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (median, spread) = match self.vessel {
            Some(s) => (
                number(s.median),
                format!("{}-{} (n={})", number(s.min), number(s.max), s.n),
            ),
            None => ("n/a".to_string(), String::new()),
        };
        let ratio = self
            .ratio()
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
        write!(
            f,
            "{:<32} {:>4} {:>9} {:<20} {:<16} {:>9}",
            self.what,
            self.unit,
            median,
            spread,
            self.firecracker.to_string(),
            ratio
        )
    }
}

impl fmt::Display for ApiReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "api: vessel as a Firecracker VMM process (vessel --api-sock PATH --engine {}), \
             {} start-ups, {} boot(s) of the default guest (1 vCPU, {} MiB) and one of a busy \
             guest, {} pause/resume cycles on each of an idle and a busy guest",
            self.engine,
            self.starts.len(),
            self.boots.len(),
            self.memory_mib,
            self.pauses.len()
        )?;
        writeln!(
            f,
            "{:<32} {:>4} {:>9} {:<20} {:<16} {:>9}",
            "measure", "unit", "vessel", "vessel min-max", "Firecracker", "vessel/FC"
        )?;
        for row in self.rows() {
            writeln!(f, "{row}")?;
        }
        self.notes(f)
    }
}

/// Width the notes are wrapped to.
const NOTE_WIDTH: usize = 100;

/// `text` as a "- " item wrapped at `width`, later lines indented by two.
pub fn note(text: &str, width: usize) -> String {
    let mut out = String::from("-");
    let mut line_len = 1;
    for word in text.split_whitespace() {
        if line_len > 2 && line_len + 1 + word.len() > width {
            out.push_str("\n ");
            line_len = 1;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out
}

impl ApiReport {
    fn notes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "notes:")?;
        for text in self.note_texts() {
            writeln!(f, "{}", note(&text, NOTE_WIDTH))?;
        }
        Ok(())
    }

    fn note_texts(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "Firecracker: {SOURCE}: \"starts (up to API socket availability) within 8 CPU ms\", \
             wall \"typical durations around 12 ms\" (\"spanning 6 ms to 60 ms\"); \"<= 125 ms to go \
             from receiving the Firecracker InstanceStart API call to the start of the Linux guest \
             user-space /sbin/init\" (serial console disabled, minimal kernel and root file \
             system); VMM threads' memory overhead \"<= 5 MiB\" with 1 vCPU and 128 MiB. It \
             publishes no pause or resume latency."
        )];
        if !self.engine_note.is_empty() {
            notes.push(format!("engine: {}", self.engine_note));
        }
        notes.push(
            "start: from just before spawn to the first GET / answered 200 (Firecracker: to \
             the socket's bind); CPU is user+system time of all the process's threads, from \
             wait4 after killing it at that answer."
                .to_string(),
        );
        notes.push(format!(
            "boot: the default guest (Debian cloud kernel, busybox initramfs), boot_args {:?}, \
             serial console on; its /init prints {READY} after mounting /proc, /sys, /dev and \
             loading modules, later than the start of /sbin/init where Firecracker's figure \
             ends. InstanceStart is timed from sending the request.",
            self.cmdline
        ));
        notes.push(format!(
            "pause/resume: time for PATCH /vm to answer 204 over a fresh connection; \
                 vessel answers Paused once every vCPU is parked or halted. Idle: the first \
                 boot's guest at its shell (its vCPU mostly halted); busy: one more boot \
                 running `{BUSY_SCRIPT}` (the vCPU is stopped mid-run)."
        ));
        notes.push(format!(
            "memory: from /proc/PID/smaps {} s after READY; guest RAM is the one anonymous \
             mapping of {} MiB (as Firecracker's memory monitor finds it), the overhead is the \
             Rss of every other mapping; Pss counts pages mapped twice (the soft engine's JIT \
             code has a write and an execute view) once.",
            SETTLE.as_secs(),
            self.memory_mib
        ));
        if let Some(last) = self.boots.last() {
            let largest: Vec<String> = last.memory.largest.iter().map(|m| m.to_string()).collect();
            notes.push(format!(
                "largest mappings besides guest RAM (last boot): {}",
                largest.join("; ")
            ));
        }
        notes
    }
}
