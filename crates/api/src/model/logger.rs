//! `/logger` body: where log lines go, which levels, and their decoration.

use super::{check_optional_path, ModelError};
use serde::{Deserialize, Deserializer, Serialize};

/// A log level; Firecracker accepts the names in any case, and `Warn` for
/// `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    Off,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level named by `s`, in any case.
    pub fn from_name(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    /// The matching filter of the `log` crate.
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LogLevel::from_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown level {s:?}, expected one of Error, Warning, Info, Debug, Trace, Off"
            ))
        })
    }
}

/// Body of `PUT /logger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl Logger {
    /// Path check.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_optional_path("log_path", self.log_path.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_in_any_case() {
        let l: Logger = serde_json::from_str(
            r#"{"log_path": "/tmp/log", "level": "debug", "show_level": true}"#,
        )
        .unwrap();
        assert_eq!(l.level, Some(LogLevel::Debug));
        assert_eq!(l.validate(), Ok(()));
        let l: Logger = serde_json::from_str(r#"{"level": "WARN"}"#).unwrap();
        assert_eq!(l.level.unwrap().to_filter(), log::LevelFilter::Warn);
        let e = serde_json::from_str::<Logger>(r#"{"level": "loud"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown level \"loud\""), "{e}");
    }
}
