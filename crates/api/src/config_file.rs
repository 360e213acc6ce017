//! Firecracker's `--config-file`: one JSON object whose kebab-case keys
//! ("boot-source", "drives", "machine-config", ...) hold the same bodies as
//! the API. It becomes the list of [`Request`]s to apply, in Firecracker's
//! order (logger and metrics first), each checked as the API would.

use crate::model::{
    first_array, Balloon, BootSource, Drive, Entropy, Logger, MachineConfiguration, Metrics,
    ModelError, NetworkInterface, Serial, Vsock,
};
use crate::request::Request;
use serde::Deserialize;
use serde_json::Value;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("config file: {at}{message}{}", position(*line, *column))]
    Json {
        at: String,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("config file: {key}: {source}")]
    Invalid { key: String, source: ModelError },
    #[error("config file: \"{0}\" is not supported by vessel yet: remove it or set it to null")]
    Unsupported(&'static str),
    #[error("config file: {key} has two entries with {field} {id:?}: give each its own")]
    DuplicateId {
        key: &'static str,
        field: &'static str,
        id: String,
    },
}

/// The file's keys. The last four are Firecracker's and not served by
/// vessel: they pass only when null or empty, as `GET /vm/config` of a
/// Firecracker instance writes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    boot_source: BootSource,
    #[serde(default)]
    drives: Option<Vec<Drive>>,
    machine_config: Option<MachineConfiguration>,
    #[serde(default)]
    network_interfaces: Option<Vec<NetworkInterface>>,
    vsock: Option<Vsock>,
    balloon: Option<Balloon>,
    entropy: Option<Entropy>,
    logger: Option<Logger>,
    metrics: Option<Metrics>,
    serial: Option<Serial>,
    mmds_config: Option<Value>,
    cpu_config: Option<Value>,
    pmem: Option<Value>,
    memory_hotplug: Option<Value>,
}

impl ConfigFile {
    fn refuse_unsupported(&self) -> Result<(), ConfigFileError> {
        let present = |v: &Option<Value>| match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        for (key, v) in [
            ("mmds-config", &self.mmds_config),
            ("cpu-config", &self.cpu_config),
            ("pmem", &self.pmem),
            ("memory-hotplug", &self.memory_hotplug),
        ] {
            if present(v) {
                return Err(ConfigFileError::Unsupported(key));
            }
        }
        Ok(())
    }
}

/// Parses and checks a config file; the requests come in the order they
/// are to be applied.
pub fn parse_config_file(text: &str) -> Result<Vec<Request>, ConfigFileError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let file: ConfigFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(&path, e.into_inner())
    })?;
    de.end().map_err(|e| json_error(".", e))?;
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        refuse_misplaced_arrays(&v)?;
    }
    file.refuse_unsupported()?;
    let mut out = Vec::new();
    if let Some(l) = file.logger {
        l.validate().map_err(invalid("logger"))?;
        out.push(Request::PutLogger(l));
    }
    if let Some(m) = file.metrics {
        m.validate().map_err(invalid("metrics"))?;
        out.push(Request::PutMetrics(m));
    }
    if let Some(m) = file.machine_config {
        m.validate().map_err(invalid("machine-config"))?;
        out.push(Request::PutMachineConfig(m));
    }
    file.boot_source
        .validate()
        .map_err(invalid("boot-source"))?;
    out.push(Request::PutBootSource(file.boot_source));
    push_drives(file.drives.unwrap_or_default(), &mut out)?;
    push_nets(file.network_interfaces.unwrap_or_default(), &mut out)?;
    if let Some(v) = file.vsock {
        v.validate().map_err(invalid("vsock"))?;
        out.push(Request::PutVsock(v));
    }
    if let Some(b) = file.balloon {
        out.push(Request::PutBalloon(b));
    }
    if let Some(e) = file.entropy {
        e.validate().map_err(invalid("entropy"))?;
        out.push(Request::PutEntropy(e));
    }
    if let Some(s) = file.serial {
        s.validate().map_err(invalid("serial"))?;
        out.push(Request::PutSerial(s));
    }
    Ok(out)
}

/// Arrays belong only at "drives" and "network-interfaces" (the keys vessel
/// does not serve are refused by name later), and hold objects without arrays (serde would read an array as a struct's
/// fields in order).
fn refuse_misplaced_arrays(v: &Value) -> Result<(), ConfigFileError> {
    let misplaced = |at: String| ConfigFileError::Json {
        at: format!("{at}: "),
        message: "expected a JSON object, found an array".into(),
        line: 0,
        column: 0,
    };
    let Value::Object(map) = v else {
        return match v {
            Value::Array(_) => Err(misplaced(".".into())),
            _ => Ok(()),
        };
    };
    let unsupported = ["mmds-config", "cpu-config", "pmem", "memory-hotplug"];
    for (key, value) in map
        .iter()
        .filter(|(k, _)| !unsupported.contains(&k.as_str()))
    {
        match value {
            Value::Array(items) if ["drives", "network-interfaces"].contains(&key.as_str()) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(at) = first_array(item) {
                        let at = if at == "." {
                            String::new()
                        } else {
                            format!(".{at}")
                        };
                        return Err(misplaced(format!("{key}[{i}]{at}")));
                    }
                }
            }
            _ => {
                if let Some(at) = first_array(value) {
                    let at = if at == "." {
                        String::new()
                    } else {
                        format!(".{at}")
                    };
                    return Err(misplaced(format!("{key}{at}")));
                }
            }
        }
    }
    Ok(())
}

fn push_drives(drives: Vec<Drive>, out: &mut Vec<Request>) -> Result<(), ConfigFileError> {
    let mut seen = Vec::new();
    for (i, d) in drives.into_iter().enumerate() {
        d.validate().map_err(invalid_at("drives", i))?;
        if seen.contains(&d.drive_id) {
            return Err(ConfigFileError::DuplicateId {
                key: "drives",
                field: "drive_id",
                id: d.drive_id,
            });
        }
        seen.push(d.drive_id.clone());
        out.push(Request::PutDrive(d));
    }
    Ok(())
}

fn push_nets(nets: Vec<NetworkInterface>, out: &mut Vec<Request>) -> Result<(), ConfigFileError> {
    let mut seen = Vec::new();
    for (i, n) in nets.into_iter().enumerate() {
        n.validate().map_err(invalid_at("network-interfaces", i))?;
        if seen.contains(&n.iface_id) {
            return Err(ConfigFileError::DuplicateId {
                key: "network-interfaces",
                field: "iface_id",
                id: n.iface_id,
            });
        }
        seen.push(n.iface_id.clone());
        out.push(Request::PutNetworkInterface(n));
    }
    Ok(())
}

fn invalid(key: &'static str) -> impl Fn(ModelError) -> ConfigFileError {
    move |source| ConfigFileError::Invalid {
        key: key.to_string(),
        source,
    }
}

fn invalid_at(key: &'static str, i: usize) -> impl Fn(ModelError) -> ConfigFileError {
    move |source| ConfigFileError::Invalid {
        key: format!("{key}[{i}]"),
        source,
    }
}

fn json_error(path: &str, inner: serde_json::Error) -> ConfigFileError {
    let at = if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    ConfigFileError::Json {
        at,
        line: inner.line(),
        column: inner.column(),
        message: strip_position(&inner.to_string()),
    }
}

fn position(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" (line {line}, column {column})")
    }
}

/// serde_json ends its messages with " at line L column C"; the error
/// prints the position itself.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
#[path = "config_file_tests.rs"]
mod tests;
