//! vessel's log: a [`log::Log`] that writes lines in Firecracker's shape,
//! `TIMESTAMP [INSTANCE:THREAD(:LEVEL)(:FILE:LINE)] MESSAGE`, to stderr
//! until configured and then to a file or named pipe, reconfigurable at
//! run time (`--log-path`, `--level`, `--show-level`, `--show-log-origin`,
//! `PUT /logger`).
//!
//! Owns the line format, the level and module filters, and opening the
//! destination. The only global state is what the `log` crate keeps (the
//! installed logger and its maximum level); everything else lives behind
//! the [`LoggerHandle`] that [`install`] returns. The destination is opened
//! read-write and non-blocking, as Firecracker does, so a named pipe with
//! no reader neither blocks the open nor any later write: a line that
//! cannot be written is dropped and counted ([`LoggerHandle::missed`],
//! and `missed_log_count` in the metrics' `logger` group).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

use crate::metrics::{Counter, MetricsSource};

/// The instance id in lines before `--id` names one (Firecracker's too).
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// The level before any configuration.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Warn;

/// Why the log could not be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// The destination could not be opened.
    #[error(
        "cannot open log destination {path}: create the file or named pipe, or fix its permissions"
    )]
    Open {
        /// The destination asked for.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The destination is a directory or a block device.
    #[error("log destination {0} is not a file, named pipe or character device: give one that is")]
    NotALogTarget(PathBuf),
    /// A level name that is none of Firecracker's.
    #[error("unknown log level {0:?}: use Error, Warning, Info, Debug, Trace or Off")]
    UnknownLevel(String),
    /// A logger is installed already (the `log` crate takes one per process).
    #[error("a logger is installed already: configure it through its handle")]
    AlreadyInstalled,
}

/// Parses a level as Firecracker's API and `--level` take it:
/// case-insensitive `Error`, `Warning` (or `Warn`), `Info`, `Debug`,
/// `Trace`, `Off`.
pub fn parse_level(name: &str) -> Result<LevelFilter, LoggerError> {
    match name.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warning" | "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        "off" => Ok(LevelFilter::Off),
        _ => Err(LoggerError::UnknownLevel(name.to_string())),
    }
}

/// A change to the log's configuration; `None` keeps the current value
/// (the fields of `PUT /logger`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggerUpdate {
    /// A file or named pipe to write to from now on.
    pub log_path: Option<PathBuf>,
    /// The most verbose level written.
    pub level: Option<LevelFilter>,
    /// Whether lines carry their level.
    pub show_level: Option<bool>,
    /// Whether lines carry the source file and line they come from.
    pub show_log_origin: Option<bool>,
    /// Only records whose module path starts with this are written.
    pub module: Option<String>,
}

/// Where lines go.
#[derive(Debug)]
enum Target {
    Stderr,
    File(File),
}

/// The log's current configuration.
#[derive(Debug)]
struct Config {
    target: Target,
    level: LevelFilter,
    show_level: bool,
    show_log_origin: bool,
    module: Option<String>,
    instance_id: String,
}

impl Config {
    fn new() -> Self {
        Config {
            target: Target::Stderr,
            level: DEFAULT_LEVEL,
            show_level: false,
            show_log_origin: false,
            module: None,
            instance_id: DEFAULT_INSTANCE_ID.to_string(),
        }
    }

    /// Whether a record at `level` from `module` is written.
    fn wants(&self, level: log::Level, module: Option<&str>) -> bool {
        level <= self.level
            && match (&self.module, module) {
                (None, _) => true,
                (Some(filter), Some(module)) => module.starts_with(filter.as_str()),
                (Some(_), None) => false,
            }
    }
}

/// The shared state of a logger and its handles.
#[derive(Debug)]
struct Shared {
    config: Mutex<Config>,
    missed: Counter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Config> {
        // A panic while holding the lock leaves a configuration that is
        // still whole (every update is a set of plain stores).
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `log::Log` implementation. Records are filtered by level and
/// module, formatted, and written with one `write` call per line.
#[derive(Debug)]
pub struct Logger {
    shared: Arc<Shared>,
}

/// Reconfigures a [`Logger`] at run time; cheap to clone.
#[derive(Debug, Clone)]
pub struct LoggerHandle {
    shared: Arc<Shared>,
    /// Whether this logger is the process's: its level is then also the
    /// `log` crate's maximum, so filtered-out records cost nothing.
    installed: bool,
}

impl Logger {
    /// A logger to stderr at level Warning, and its handle.
    pub fn new() -> (Logger, LoggerHandle) {
        let shared = Arc::new(Shared {
            config: Mutex::new(Config::new()),
            missed: Counter::new(),
        });
        let handle = LoggerHandle {
            shared: Arc::clone(&shared),
            installed: false,
        };
        (Logger { shared }, handle)
    }
}

/// Installs a new [`Logger`] as the process's logger (stderr, level
/// Warning) and returns its handle.
pub fn install() -> Result<LoggerHandle, LoggerError> {
    let (logger, mut handle) = Logger::new();
    log::set_logger(Box::leak(Box::new(logger))).map_err(|_| LoggerError::AlreadyInstalled)?;
    log::set_max_level(DEFAULT_LEVEL);
    handle.installed = true;
    Ok(handle)
}

impl LoggerHandle {
    /// Applies `update`. The new destination is opened first, so a bad
    /// path changes nothing.
    pub fn update(&self, update: LoggerUpdate) -> Result<(), LoggerError> {
        let file = update.log_path.as_deref().map(open_target).transpose()?;
        let mut config = self.shared.lock();
        if let Some(file) = file {
            config.target = Target::File(file);
        }
        if let Some(level) = update.level {
            config.level = level;
            if self.installed {
                log::set_max_level(level);
            }
        }
        if let Some(show) = update.show_level {
            config.show_level = show;
        }
        if let Some(show) = update.show_log_origin {
            config.show_log_origin = show;
        }
        if let Some(module) = update.module {
            config.module = Some(module);
        }
        Ok(())
    }

    /// Names this VMM in every line (`--id`).
    pub fn set_instance_id(&self, id: &str) {
        self.shared.lock().instance_id = id.to_string();
    }

    /// Lines dropped since the start because they could not be written.
    pub fn missed(&self) -> u64 {
        self.shared.missed.total()
    }
}

/// The log's part of the metrics' `logger` group: lines dropped since
/// the last flush.
impl MetricsSource for LoggerHandle {
    fn group(&self) -> (&'static str, serde_json::Value) {
        (
            "logger",
            serde_json::json!({ "missed_log_count": self.shared.missed.take_delta() }),
        )
    }
}

/// Opens a log destination for writing at its end without blocking:
/// read-write, so a named pipe opens (and stays writable) with no reader;
/// non-blocking, so a full pipe drops lines instead of stalling a thread.
/// A missing path is created as a file.
pub(crate) fn open_target(path: &Path) -> Result<File, LoggerError> {
    let open = |read: bool| {
        OpenOptions::new()
            .read(read)
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
    };
    let file = match open(true) {
        // A write-only file: fine, unless it is a pipe with no reader,
        // which the second open reports.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => open(false),
        other => other,
    }
    .map_err(|source| LoggerError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let kind = file
        .metadata()
        .map_err(|source| LoggerError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .file_type();
    if kind.is_dir() || kind.is_block_device() {
        return Err(LoggerError::NotALogTarget(path.to_path_buf()));
    }
    Ok(file)
}

/// One log line, newline included.
fn format_line(config: &Config, record: &Record, thread: &str, now: SystemTime) -> String {
    use fmt::Write as _;
    let mut line = format!("{} [{}:{thread}", Timestamp(now), config.instance_id);
    if config.show_level {
        let _ = write!(line, ":{}", record.level());
    }
    if config.show_log_origin {
        let file = record.file().unwrap_or("?");
        let _ = match record.line() {
            Some(n) => write!(line, ":{file}:{n}"),
            None => write!(line, ":{file}:?"),
        };
    }
    let _ = writeln!(line, "] {}", record.args());
    line
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.shared
            .lock()
            .wants(metadata.level(), Some(metadata.target()))
    }

    fn log(&self, record: &Record) {
        let config = self.shared.lock();
        if !config.wants(record.level(), record.module_path()) {
            return;
        }
        let thread = std::thread::current();
        let line = format_line(
            &config,
            record,
            thread.name().unwrap_or("-"),
            SystemTime::now(),
        );
        let written = match &config.target {
            Target::Stderr => std::io::stderr().write_all(line.as_bytes()),
            Target::File(f) => write_line(f, line.as_bytes()),
        };
        if written.is_err() {
            self.shared.missed.inc();
        }
    }

    fn flush(&self) {
        if let Target::Stderr = self.shared.lock().target {
            let _ = std::io::stderr().flush();
        }
    }
}

/// Writes a whole line in one call; a short write (a nearly full pipe)
/// counts as a failure rather than leaving half a line to finish later.
fn write_line(mut file: &File, line: &[u8]) -> std::io::Result<()> {
    let n = file.write(line)?;
    if n == line.len() {
        Ok(())
    } else {
        Err(std::io::ErrorKind::WriteZero.into())
    }
}

/// A UTC time as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNN`, the shape of
/// Firecracker's log timestamps.
struct Timestamp(SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (y, m, d) = civil_date(secs / 86_400);
        let day = secs % 86_400;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}",
            day / 3600,
            day / 60 % 60,
            day % 60,
            since.subsec_nanos()
        )
    }
}

/// The proleptic Gregorian (year, month, day) `days` after 1970-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01 so leap days end each 4/100/400-year cycle.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;
    use std::time::Duration;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vessel-logger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Logs `msg` at `level` from module `module`, file src/x.rs line 7.
    fn emit(logger: &Logger, level: Level, module: &str, msg: &str) {
        logger.log(
            &Record::builder()
                .args(format_args!("{msg}"))
                .level(level)
                .target(module)
                .module_path(Some(module))
                .file(Some("src/x.rs"))
                .line(Some(7))
                .build(),
        );
    }

    fn to_file(dir: &Path, name: &str) -> (Logger, LoggerHandle, PathBuf) {
        let (logger, handle) = Logger::new();
        let path = dir.join(name);
        handle
            .update(LoggerUpdate {
                log_path: Some(path.clone()),
                ..LoggerUpdate::default()
            })
            .expect("log file");
        (logger, handle, path)
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).expect("log readable")
    }

    #[test]
    fn levels_parse_as_firecracker_names_them() {
        assert_eq!(parse_level("Warning").ok(), Some(LevelFilter::Warn));
        assert_eq!(parse_level("warn").ok(), Some(LevelFilter::Warn));
        assert_eq!(parse_level("ERROR").ok(), Some(LevelFilter::Error));
        assert_eq!(parse_level("Off").ok(), Some(LevelFilter::Off));
        assert_eq!(parse_level("trace").ok(), Some(LevelFilter::Trace));
        let err = parse_level("loud").unwrap_err();
        assert!(err.to_string().contains("Warning"), "{err}");
    }

    #[test]
    fn lines_have_firecrackers_shape_with_and_without_level_and_origin() {
        let mut config = Config::new();
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let line = |config: &Config| {
            format_line(
                config,
                &Record::builder()
                    .args(format_args!("hello {}", 1))
                    .level(Level::Warn)
                    .file(Some("src/x.rs"))
                    .line(Some(7))
                    .build(),
                "fc_vcpu 0",
                at,
            )
        };
        assert_eq!(
            line(&config),
            "2023-11-14T22:13:20.000000005 [anonymous-instance:fc_vcpu 0] hello 1\n"
        );
        config.show_level = true;
        config.instance_id = "vm1".into();
        assert_eq!(
            line(&config),
            "2023-11-14T22:13:20.000000005 [vm1:fc_vcpu 0:WARN] hello 1\n"
        );
        config.show_log_origin = true;
        assert_eq!(
            line(&config),
            "2023-11-14T22:13:20.000000005 [vm1:fc_vcpu 0:WARN:src/x.rs:7] hello 1\n"
        );
        config.show_level = false;
        assert_eq!(
            line(&config),
            "2023-11-14T22:13:20.000000005 [vm1:fc_vcpu 0:src/x.rs:7] hello 1\n"
        );
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(20_789), (2026, 12, 2));
        assert_eq!(civil_date(47_540), (2100, 2, 28), "2100 is not a leap year");
        assert_eq!(civil_date(47_541), (2100, 3, 1));
    }

    #[test]
    fn the_level_filters_records() {
        let dir = temp_dir("level");
        let (logger, handle, path) = to_file(&dir, "log");
        emit(&logger, Level::Info, "vmm::a", "quiet info");
        emit(&logger, Level::Warn, "vmm::a", "loud warning");
        emit(&logger, Level::Error, "vmm::a", "loud error");
        let text = read(&path);
        assert!(!text.contains("quiet"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        handle
            .update(LoggerUpdate {
                level: Some(LevelFilter::Debug),
                ..LoggerUpdate::default()
            })
            .expect("level");
        emit(&logger, Level::Debug, "vmm::a", "now debug");
        emit(&logger, Level::Trace, "vmm::a", "still no trace");
        let text = read(&path);
        assert!(
            text.contains("now debug") && !text.contains("trace"),
            "{text}"
        );
        handle
            .update(LoggerUpdate {
                level: Some(LevelFilter::Off),
                ..LoggerUpdate::default()
            })
            .expect("off");
        emit(&logger, Level::Error, "vmm::a", "silenced");
        assert!(!read(&path).contains("silenced"));
        assert!(!logger.enabled(&Metadata::builder().level(Level::Error).build()));
    }

    #[test]
    fn reconfiguration_moves_the_log_and_appends() {
        let dir = temp_dir("move");
        std::fs::write(dir.join("b"), "kept\n").expect("old content");
        let (logger, handle, a) = to_file(&dir, "a");
        emit(&logger, Level::Warn, "vmm", "first");
        let b = dir.join("b");
        handle
            .update(LoggerUpdate {
                log_path: Some(b.clone()),
                show_level: Some(true),
                show_log_origin: Some(true),
                ..LoggerUpdate::default()
            })
            .expect("second file");
        handle.set_instance_id("vm-7");
        emit(&logger, Level::Error, "vmm", "second");
        let (ta, tb) = (read(&a), read(&b));
        assert!(
            ta.contains("[anonymous-instance:") && ta.contains("] first"),
            "{ta}"
        );
        assert!(!ta.contains("second"), "{ta}");
        assert!(tb.starts_with("kept\n"), "appended, not overwritten: {tb}");
        assert!(tb.contains(":ERROR:src/x.rs:7] second"), "{tb}");
        assert!(tb.contains("[vm-7:"), "{tb}");
        assert_eq!(handle.missed(), 0);
    }

    #[test]
    fn the_module_filter_keeps_only_that_module() {
        let dir = temp_dir("module");
        let (logger, handle, path) = to_file(&dir, "log");
        handle
            .update(LoggerUpdate {
                module: Some("vmm::vcpu".into()),
                ..LoggerUpdate::default()
            })
            .expect("module");
        emit(&logger, Level::Error, "vmm::vcpu::exits", "from vcpu");
        emit(&logger, Level::Error, "virtio::block", "from block");
        let text = read(&path);
        assert!(
            text.contains("from vcpu") && !text.contains("from block"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_destination_changes_nothing() {
        let dir = temp_dir("bad");
        let (logger, handle, path) = to_file(&dir, "log");
        for bad in [dir.clone(), dir.join("missing/dir/log")] {
            let err = handle
                .update(LoggerUpdate {
                    log_path: Some(bad),
                    level: Some(LevelFilter::Error),
                    ..LoggerUpdate::default()
                })
                .unwrap_err();
            assert!(matches!(err, LoggerError::Open { .. }), "{err}");
        }
        emit(&logger, Level::Warn, "vmm", "still here at warning");
        assert!(read(&path).contains("still here"));
    }

    #[test]
    fn a_pipe_without_reader_neither_blocks_nor_stalls() {
        let dir = temp_dir("fifo");
        let fifo = dir.join("log.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let (logger, handle) = Logger::new();
        handle
            .update(LoggerUpdate {
                log_path: Some(fifo.clone()),
                ..LoggerUpdate::default()
            })
            .expect("a fifo with no reader opens");
        // Far more than a pipe holds (64 KiB): the rest is dropped.
        let long = "x".repeat(1000);
        for _ in 0..200 {
            emit(&logger, Level::Error, "vmm", &long);
        }
        assert!(handle.missed() > 0);
        let (group, value) = handle.group();
        assert_eq!(group, "logger");
        assert_eq!(value["missed_log_count"].as_u64(), Some(handle.missed()));
        assert_eq!(handle.group().1["missed_log_count"], 0, "a delta");
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("reader");
        let mut buf = vec![0u8; 4096];
        let n = std::io::Read::read(&mut reader, &mut buf).expect("lines wait in the pipe");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.contains("[anonymous-instance:") && text.contains("xxx"),
            "{text}"
        );
    }
}
