//! vessel's metrics, written as Firecracker writes them: one JSON object
//! per line, `{"utc_timestamp_ms": N, "<group>": {...}, ...}`, to a file
//! or named pipe set at run time (`--metrics-path`, `PUT /metrics`), on
//! demand (the `FlushMetrics` action) and every 60 s from a timer thread.
//!
//! Owns the sink (destination, registered sources, timer) and the two
//! kinds of value sources report: [`Counter`]s, reported as the change
//! since the last flush (Firecracker's counters are deltas), and
//! [`Gauge`]s, reported as they stand. What each group holds is the
//! business of its [`MetricsSource`].

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::logger::{self, LoggerError};

/// How often the timer flushes, as Firecracker does.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Why metrics could not be set up or written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The destination could not be opened.
    #[error("cannot use metrics destination")]
    Open(#[source] LoggerError),
    /// A flush was asked for before a destination was set.
    #[error(
        "metrics have no destination: set metrics_path (PUT /metrics or --metrics-path) first"
    )]
    NoDestination,
    /// The line could not be written whole (e.g. a full named pipe).
    #[error("cannot write metrics: read the named pipe, or free space for the file")]
    Write(#[source] std::io::Error),
    /// The timer thread could not be started.
    #[error("cannot start the metrics timer thread")]
    Timer(#[source] std::io::Error),
}

/// One group of the metrics object, e.g. `("block", {"read_count": 3})`.
/// Sources that name the same group have their objects merged.
pub trait MetricsSource: Send + Sync {
    /// The group's name and its value now. Counters in it report the
    /// change since the previous call ([`Counter::take_delta`]).
    fn group(&self) -> (&'static str, Value);
}

/// A count reported as its change since the last flush.
#[derive(Debug, Default)]
pub struct Counter {
    total: AtomicU64,
    reported: AtomicU64,
}

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter {
            total: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Everything counted since the start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// What was counted since the last call; for a [`MetricsSource`].
    pub fn take_delta(&self) -> u64 {
        let now = self.total();
        let before = self.reported.swap(now, Ordering::Relaxed);
        now.wrapping_sub(before)
    }
}

/// A value reported as it stands (e.g. a start-up time).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }

    /// Sets it.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Reads it.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the sink and its timer share.
struct Shared {
    target: Mutex<Option<File>>,
    sources: Mutex<Vec<Arc<dyn MetricsSource>>>,
    /// Lines that could not be written: Firecracker's `logger` group
    /// calls this `missed_metrics_count`.
    missed: Counter,
    stop: Mutex<bool>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The metrics object as one line, newline included.
    fn line(&self, now: SystemTime) -> String {
        let mut groups = Map::new();
        let sources: Vec<_> = lock(&self.sources).clone();
        let own = (
            "logger",
            serde_json::json!({ "missed_metrics_count": self.missed.take_delta() }),
        );
        for (name, value) in sources.iter().map(|s| s.group()).chain([own]) {
            merge(&mut groups, name, value);
        }
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // The timestamp first, as Firecracker writes it.
        let mut line = format!("{{\"utc_timestamp_ms\":{ms}");
        for (name, value) in &groups {
            line.push(',');
            line.push_str(&Value::String(name.clone()).to_string());
            line.push(':');
            line.push_str(&value.to_string());
        }
        line.push_str("}\n");
        line
    }

    fn flush(&self) -> Result<(), MetricsError> {
        let target = lock(&self.target);
        let Some(file) = target.as_ref() else {
            return Err(MetricsError::NoDestination);
        };
        let line = self.line(SystemTime::now());
        let written = write_line(file, line.as_bytes());
        if written.is_err() {
            self.missed.inc();
        }
        written.map_err(MetricsError::Write)
    }
}

/// Adds a group; objects under the same name are merged key by key.
fn merge(groups: &mut Map<String, Value>, name: &str, value: Value) {
    match (groups.get_mut(name), value) {
        (Some(Value::Object(old)), Value::Object(new)) => old.extend(new),
        (_, value) => {
            groups.insert(name.to_string(), value);
        }
    }
}

/// Writes a whole line in one call; a short write counts as a failure.
fn write_line(mut file: &File, line: &[u8]) -> std::io::Result<()> {
    let n = file.write(line)?;
    if n == line.len() {
        Ok(())
    } else {
        Err(std::io::ErrorKind::WriteZero.into())
    }
}

/// Collects groups from registered sources and writes them as one JSON
/// line per flush. A timer thread flushes every interval while a
/// destination is set; it stops when the sink is dropped.
pub struct MetricsSink {
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSink")
            .field("sources", &lock(&self.shared.sources).len())
            .field("missed", &self.shared.missed.total())
            .finish()
    }
}

impl MetricsSink {
    /// A sink with no destination that flushes every [`FLUSH_INTERVAL`].
    pub fn new() -> Result<Self, MetricsError> {
        Self::with_interval(FLUSH_INTERVAL)
    }

    /// A sink with no destination that flushes every `interval`.
    pub fn with_interval(interval: Duration) -> Result<Self, MetricsError> {
        let shared = Arc::new(Shared {
            target: Mutex::new(None),
            sources: Mutex::new(Vec::new()),
            missed: Counter::new(),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let for_timer = Arc::clone(&shared);
        let timer = std::thread::Builder::new()
            .name("vessel-metrics".into())
            .spawn(move || run_timer(&for_timer, interval))
            .map_err(MetricsError::Timer)?;
        Ok(MetricsSink {
            shared,
            timer: Some(timer),
        })
    }

    /// Writes to `path` (a file, created when missing and appended to, or
    /// a named pipe, which needs no reader) from now on.
    pub fn set_path(&self, path: &Path) -> Result<(), MetricsError> {
        let file = logger::open_target(path).map_err(MetricsError::Open)?;
        *lock(&self.shared.target) = Some(file);
        Ok(())
    }

    /// Adds a source of one group to every later flush.
    pub fn register(&self, source: Arc<dyn MetricsSource>) {
        lock(&self.shared.sources).push(source);
    }

    /// Writes one metrics line now (the `FlushMetrics` action).
    pub fn flush(&self) -> Result<(), MetricsError> {
        self.shared.flush()
    }

    /// Lines that could not be written since the start.
    pub fn missed(&self) -> u64 {
        self.shared.missed.total()
    }
}

/// The timer thread: a flush every `interval` until told to stop.
fn run_timer(shared: &Shared, interval: Duration) {
    let mut stop = lock(&shared.stop);
    // The flag is checked before each wait, so a drop that came before
    // this thread first waited is not missed.
    while !*stop {
        let (guard, waited) = shared
            .wake
            .wait_timeout(stop, interval)
            .unwrap_or_else(|e| e.into_inner());
        stop = guard;
        if waited.timed_out() && !*stop {
            // Not configured yet, or a full pipe (counted): try again at
            // the next tick.
            let _ = shared.flush();
        }
    }
}

impl Drop for MetricsSink {
    fn drop(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Block {
        reads: Counter,
        size: Gauge,
    }

    impl MetricsSource for Block {
        fn group(&self) -> (&'static str, Value) {
            (
                "block",
                serde_json::json!({
                    "read_count": self.reads.take_delta(),
                    "capacity_bytes": self.size.get(),
                }),
            )
        }
    }

    struct Named(&'static str, &'static str);

    impl MetricsSource for Named {
        fn group(&self) -> (&'static str, Value) {
            (self.0, serde_json::json!({ self.1: 1 }))
        }
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vessel-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .expect("metrics file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn a_flush_writes_one_json_line_with_the_groups_and_deltas() {
        let path = temp_path("flush");
        let sink = MetricsSink::new().expect("sink");
        assert!(matches!(sink.flush(), Err(MetricsError::NoDestination)));
        let block = Arc::new(Block {
            reads: Counter::new(),
            size: Gauge::new(),
        });
        sink.register(block.clone());
        sink.register(Arc::new(Named("vcpu", "exit_io_in")));
        sink.register(Arc::new(Named("block", "flush_count")));
        sink.set_path(&path).expect("destination");
        block.reads.add(5);
        block.size.set(4096);
        let before = SystemTime::now();
        sink.flush().expect("flush");
        block.reads.inc();
        sink.flush().expect("flush");
        let got = lines(&path);
        assert_eq!(got.len(), 2);
        let first = &got[0];
        let ms = first["utc_timestamp_ms"].as_u64().expect("timestamp");
        let then = before
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        assert!(
            u128::from(ms) >= then && u128::from(ms) < then + 60_000,
            "{first}"
        );
        assert_eq!(first["block"]["read_count"], 5);
        assert_eq!(first["block"]["capacity_bytes"], 4096);
        assert_eq!(first["block"]["flush_count"], 1, "same group merged");
        assert_eq!(first["vcpu"]["exit_io_in"], 1);
        assert_eq!(first["logger"]["missed_metrics_count"], 0);
        // Counters are deltas, gauges stand.
        assert_eq!(got[1]["block"]["read_count"], 1);
        assert_eq!(got[1]["block"]["capacity_bytes"], 4096);
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(text.starts_with("{\"utc_timestamp_ms\":"), "{text}");
    }

    #[test]
    fn the_timer_flushes_periodically_and_stops_on_drop() {
        let path = temp_path("timer");
        let sink = MetricsSink::with_interval(Duration::from_millis(20)).expect("sink");
        sink.register(Arc::new(Named("vmm", "device_events")));
        sink.set_path(&path).expect("destination");
        let deadline = Instant::now() + Duration::from_secs(10);
        while lines(&path).len() < 3 {
            assert!(Instant::now() < deadline, "no periodic flushes");
            std::thread::sleep(Duration::from_millis(10));
        }
        let t = Instant::now();
        drop(sink);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the timer stops at once"
        );
        let n = lines(&path).len();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(lines(&path).len(), n, "nothing written after drop");
        assert!(lines(&path).iter().all(|l| l["vmm"]["device_events"] == 1));
    }

    #[test]
    fn a_full_pipe_is_counted_not_waited_on() {
        let fifo = temp_path("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let sink = MetricsSink::new().expect("sink");
        struct Big;
        impl MetricsSource for Big {
            fn group(&self) -> (&'static str, Value) {
                ("big", Value::String("x".repeat(8000)))
            }
        }
        sink.register(Arc::new(Big));
        sink.set_path(&fifo).expect("a fifo with no reader opens");
        let results: Vec<_> = (0..20).map(|_| sink.flush()).collect();
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(MetricsError::Write(_)))));
        assert!(sink.missed() > 0);
        assert!(sink.set_path(&std::env::temp_dir()).is_err(), "a directory");
    }

    #[test]
    fn a_sink_dropped_at_once_stops_at_once() {
        for _ in 0..20 {
            let t = Instant::now();
            drop(MetricsSink::new().expect("sink"));
            assert!(t.elapsed() < Duration::from_secs(5));
        }
    }

    #[test]
    fn counters_report_changes() {
        let c = Counter::new();
        c.add(3);
        assert_eq!((c.take_delta(), c.take_delta()), (3, 0));
        c.inc();
        assert_eq!((c.total(), c.take_delta()), (4, 1));
    }
}
