//! Firecracker's REST API for vessel, as a library that knows nothing of
//! the VMM: the JSON bodies (`model`), the router from method and path to a
//! [`Request`] (`request`), the seam to the VMM ([`Backend`]), an HTTP/1.1
//! server on a Unix socket (`server`, over the byte-level `http` module),
//! request counters (`metrics`), Firecracker's `--config-file`
//! (`config_file`) and a small blocking client (`client`).

pub mod backend;
pub mod client;
pub mod config_file;
pub mod http;
pub mod metrics;
pub mod model;
pub mod request;
pub mod server;

pub use backend::{Backend, Fault, Reply};
pub use client::{Client, ClientError};
pub use config_file::{parse_config_file, ConfigFileError};
pub use metrics::ApiMetrics;
pub use request::{parse, Request, RequestError};
pub use server::{Server, ServerError, ServerHandle};

/// Firecracker's default limit on a request body, in bytes
/// (`--http-api-max-payload-size`).
pub const DEFAULT_MAX_PAYLOAD: usize = 51200;
