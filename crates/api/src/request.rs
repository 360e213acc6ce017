//! The router: an HTTP method, path and body become one [`Request`], or a
//! [`RequestError`] that says what was wrong and how to fix it. Paths and
//! bodies follow Firecracker's API; paths Firecracker has and vessel does
//! not serve yet are refused by name.

use crate::model::{
    check_id, first_array, ActionKind, Balloon, BalloonStatsUpdate, BalloonUpdate, BootSource,
    Drive, Entropy, InstanceActionInfo, Logger, MachineConfiguration, MachineConfigurationPatch,
    Metrics, ModelError, NetworkInterface, PartialDrive, PartialNetworkInterface, Serial, Vm,
    VmState, Vsock,
};
use serde::de::DeserializeOwned;

/// One API operation with its checked body.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `GET /`
    GetInstanceInfo,
    /// `GET /version`
    GetVersion,
    /// `GET /vm/config`
    GetVmConfig,
    /// `GET /machine-config`
    GetMachineConfig,
    /// `PUT /machine-config`
    PutMachineConfig(MachineConfiguration),
    /// `PATCH /machine-config`
    PatchMachineConfig(MachineConfigurationPatch),
    /// `PUT /boot-source`
    PutBootSource(BootSource),
    /// `PUT /drives/{drive_id}`
    PutDrive(Drive),
    /// `PATCH /drives/{drive_id}`
    PatchDrive(PartialDrive),
    /// `PUT /network-interfaces/{iface_id}`
    PutNetworkInterface(NetworkInterface),
    /// `PATCH /network-interfaces/{iface_id}`
    PatchNetworkInterface(PartialNetworkInterface),
    /// `PUT /actions`
    Action(ActionKind),
    /// `PATCH /vm`
    PatchVm(VmState),
    /// `GET /balloon`
    GetBalloon,
    /// `PUT /balloon`
    PutBalloon(Balloon),
    /// `PATCH /balloon`
    PatchBalloon(BalloonUpdate),
    /// `GET /balloon/statistics`
    GetBalloonStats,
    /// `PATCH /balloon/statistics`
    PatchBalloonStats(BalloonStatsUpdate),
    /// `PUT /entropy`
    PutEntropy(Entropy),
    /// `PUT /vsock`
    PutVsock(Vsock),
    /// `PUT /logger`
    PutLogger(Logger),
    /// `PUT /metrics`
    PutMetrics(Metrics),
    /// `PUT /serial`
    PutSerial(Serial),
}

/// Why a request was refused before it reached the VMM.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request target {0:?} is not a path: use a path such as /machine-config")]
    BadTarget(String),
    #[error("invalid request method and/or path: {method} {path}: vessel serves Firecracker's paths (/, /version, /vm, /vm/config, /machine-config, /boot-source, /drives/ID, /network-interfaces/ID, /actions, /balloon, /balloon/statistics, /entropy, /vsock, /logger, /metrics, /serial)")]
    UnknownPath { method: String, path: String },
    #[error("{method} is not allowed on {path}: use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("{method} {path} ({feature}) is not supported by vessel yet")]
    Unsupported {
        method: String,
        path: String,
        feature: &'static str,
    },
    #[error("the path has no {field}: use {path}/<{field}>")]
    MissingId { field: &'static str, path: String },
    #[error("the path's id is invalid: {0}")]
    BadPathId(ModelError),
    #[error("{field} in the path ({path_id:?}) and in the body ({body_id:?}) differ: make them the same")]
    IdMismatch {
        field: &'static str,
        path_id: String,
        body_id: String,
    },
    #[error("GET {0} takes no body: send it without one")]
    BodyOnGet(String),
    #[error("{method} {path} needs a JSON body: see Firecracker's API for its fields")]
    EmptyBody { method: String, path: String },
    #[error("the body of {method} {path} is not valid: {detail}")]
    BadJson {
        method: String,
        path: String,
        detail: String,
    },
    #[error(transparent)]
    Invalid(#[from] ModelError),
}

/// Where a request goes, with the id from the path for per-id resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Root,
    Version,
    VmConfig,
    Vm,
    MachineConfig,
    BootSource,
    Drive(&'a str),
    NetworkInterface(&'a str),
    Actions,
    Balloon,
    BalloonStatistics,
    Entropy,
    Vsock,
    Logger,
    Metrics,
    Serial,
}

impl Route<'_> {
    fn allowed(self) -> &'static str {
        match self {
            Route::Root | Route::Version | Route::VmConfig => "GET",
            Route::Vm => "PATCH",
            Route::MachineConfig | Route::Balloon => "GET, PUT, PATCH",
            Route::BalloonStatistics => "GET, PATCH",
            Route::Drive(_) | Route::NetworkInterface(_) => "PUT, PATCH",
            _ => "PUT",
        }
    }
}

/// The path of a request target: the scheme and host of an absolute form,
/// the query and a trailing slash removed.
pub fn normalize_target(target: &str) -> Result<&str, RequestError> {
    let mut t = target;
    for scheme in ["http://", "https://"] {
        if let Some(rest) = t.strip_prefix(scheme) {
            t = rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    t = t.split(['?', '#']).next().unwrap_or("");
    if !t.starts_with('/') {
        return Err(RequestError::BadTarget(target.chars().take(100).collect()));
    }
    if t.len() > 1 {
        t = t.strip_suffix('/').unwrap_or(t);
    }
    Ok(t)
}

/// Routes a request and parses and checks its body.
pub fn parse(method: &str, target: &str, body: &[u8]) -> Result<Request, RequestError> {
    let path = normalize_target(target)?;
    let route = route(method, path)?;
    check_method(method, path, route)?;
    let call = Call { method, path, body };
    call.build(route)
}

fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, RequestError> {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let unsupported = |feature| RequestError::Unsupported {
        method: method.to_string(),
        path: path.to_string(),
        feature,
    };
    let r = match segments.as_slice() {
        [""] => Route::Root,
        ["version"] => Route::Version,
        ["vm", "config"] => Route::VmConfig,
        ["vm"] => Route::Vm,
        ["machine-config"] => Route::MachineConfig,
        ["boot-source"] => Route::BootSource,
        ["drives", id] => Route::Drive(id),
        ["network-interfaces", id] => Route::NetworkInterface(id),
        ["actions"] => Route::Actions,
        ["balloon"] => Route::Balloon,
        ["balloon", "statistics"] => Route::BalloonStatistics,
        ["balloon", "hinting", ..] => return Err(unsupported("free page hinting")),
        ["entropy"] => Route::Entropy,
        ["vsock"] => Route::Vsock,
        ["logger"] => Route::Logger,
        ["metrics"] => Route::Metrics,
        ["serial"] => Route::Serial,
        ["mmds", ..] => return Err(unsupported("the microVM metadata service")),
        ["snapshot", "create" | "load"] => return Err(unsupported("snapshots")),
        ["cpu-config"] => return Err(unsupported("custom CPU templates")),
        ["hotplug", "memory"] => return Err(unsupported("memory hotplug")),
        ["pmem", ..] => return Err(unsupported("virtio-pmem")),
        ["drives"] => return Err(missing_id("drive_id", path)),
        ["network-interfaces"] => return Err(missing_id("iface_id", path)),
        _ => {
            return Err(RequestError::UnknownPath {
                method: method.to_string(),
                path: path.to_string(),
            })
        }
    };
    Ok(r)
}

fn missing_id(field: &'static str, path: &str) -> RequestError {
    RequestError::MissingId {
        field,
        path: path.to_string(),
    }
}

fn check_method(method: &str, path: &str, route: Route) -> Result<(), RequestError> {
    let hot_unplug = matches!(route, Route::Drive(_) | Route::NetworkInterface(_));
    if method == "DELETE" && hot_unplug {
        return Err(RequestError::Unsupported {
            method: method.to_string(),
            path: path.to_string(),
            feature: "hot-unplug",
        });
    }
    if route.allowed().split(", ").any(|m| m == method) {
        return Ok(());
    }
    Err(RequestError::MethodNotAllowed {
        method: method.chars().take(16).collect(),
        path: path.to_string(),
        allowed: route.allowed(),
    })
}

/// One request being built: its method, normalized path and body.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
}

impl Call<'_> {
    fn build(&self, route: Route) -> Result<Request, RequestError> {
        if self.method == "GET" {
            return self.build_get(route);
        }
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(RequestError::EmptyBody {
                method: self.method.to_string(),
                path: self.path.to_string(),
            });
        }
        if self.method == "PUT" {
            self.build_put(route)
        } else {
            self.build_patch(route)
        }
    }

    fn build_get(&self, route: Route) -> Result<Request, RequestError> {
        if !self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(RequestError::BodyOnGet(self.path.to_string()));
        }
        Ok(match route {
            Route::Root => Request::GetInstanceInfo,
            Route::Version => Request::GetVersion,
            Route::VmConfig => Request::GetVmConfig,
            Route::MachineConfig => Request::GetMachineConfig,
            Route::Balloon => Request::GetBalloon,
            _ => Request::GetBalloonStats,
        })
    }

    fn build_put(&self, route: Route) -> Result<Request, RequestError> {
        Ok(match route {
            Route::MachineConfig => {
                let m: MachineConfiguration = self.json()?;
                m.validate()?;
                Request::PutMachineConfig(m)
            }
            Route::BootSource => {
                let b: BootSource = self.json()?;
                b.validate()?;
                Request::PutBootSource(b)
            }
            Route::Drive(id) => {
                let d: Drive = self.json_for_id("drive_id", id, |d: &Drive| &d.drive_id)?;
                d.validate()?;
                Request::PutDrive(d)
            }
            Route::NetworkInterface(id) => {
                let n = self.json_for_id("iface_id", id, |n: &NetworkInterface| &n.iface_id)?;
                n.validate()?;
                Request::PutNetworkInterface(n)
            }
            Route::Actions => Request::Action(self.json::<InstanceActionInfo>()?.action_type),
            Route::Balloon => Request::PutBalloon(self.json()?),
            Route::Entropy => {
                let e: Entropy = self.json()?;
                e.validate()?;
                Request::PutEntropy(e)
            }
            Route::Vsock => {
                let v: Vsock = self.json()?;
                v.validate()?;
                Request::PutVsock(v)
            }
            Route::Logger => {
                let l: Logger = self.json()?;
                l.validate()?;
                Request::PutLogger(l)
            }
            Route::Metrics => {
                let m: Metrics = self.json()?;
                m.validate()?;
                Request::PutMetrics(m)
            }
            _ => {
                let s: Serial = self.json()?;
                s.validate()?;
                Request::PutSerial(s)
            }
        })
    }

    fn build_patch(&self, route: Route) -> Result<Request, RequestError> {
        Ok(match route {
            Route::MachineConfig => {
                let p: MachineConfigurationPatch = self.json()?;
                p.validate()?;
                Request::PatchMachineConfig(p)
            }
            Route::Drive(id) => {
                let d = self.json_for_id("drive_id", id, |d: &PartialDrive| &d.drive_id)?;
                d.validate()?;
                Request::PatchDrive(d)
            }
            Route::NetworkInterface(id) => {
                let n =
                    self.json_for_id("iface_id", id, |n: &PartialNetworkInterface| &n.iface_id)?;
                n.validate()?;
                Request::PatchNetworkInterface(n)
            }
            Route::Vm => Request::PatchVm(self.json::<Vm>()?.state),
            Route::Balloon => Request::PatchBalloon(self.json()?),
            _ => Request::PatchBalloonStats(self.json()?),
        })
    }

    /// The body as `T`, with the path to a bad field in the error.
    fn json<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        let bad = |detail: String| RequestError::BadJson {
            method: self.method.to_string(),
            path: self.path.to_string(),
            detail,
        };
        let mut de = serde_json::Deserializer::from_slice(self.body);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            if at == "." {
                bad(inner.to_string())
            } else {
                bad(format!("{at}: {inner}"))
            }
        })?;
        de.end().map_err(|e| bad(e.to_string()))?;
        // serde reads an array as a struct's fields in order; no body of
        // the API holds an array, so one that parsed is refused here.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(self.body) {
            if let Some(at) = first_array(&v) {
                return Err(bad(match at.as_str() {
                    "." => "expected a JSON object, found an array".into(),
                    _ => format!("{at}: expected a JSON object, found an array"),
                }));
            }
        }
        Ok(value)
    }

    /// The body of a per-id resource, whose id must match the path's.
    fn json_for_id<T: DeserializeOwned>(
        &self,
        field: &'static str,
        path_id: &str,
        id_of: impl Fn(&T) -> &String,
    ) -> Result<T, RequestError> {
        check_id(field, path_id).map_err(RequestError::BadPathId)?;
        let value: T = self.json()?;
        let body_id = id_of(&value);
        if body_id != path_id {
            return Err(RequestError::IdMismatch {
                field,
                path_id: path_id.to_string(),
                body_id: body_id.chars().take(100).collect(),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
