//! Container images for `vessel run --image`: an OCI image layout directory
//! or a `docker save`/`podman save` archive becomes an ext4 disk image (the
//! container's root file system, cached by the image's config digest, which
//! names every layer by the digest of its contents) plus the image's run
//! configuration. No VMM knowledge: the CLI attaches the disk and puts
//! [`launch::command`]'s words on the kernel command line; the initramfs's
//! `/sbin/vessel-oci-exec` (see `init.rs`) mounts the disk and runs them.
//!
//! - `source.rs` reads blobs from a directory or an archive and finds the
//!   manifest, the config and the layers.
//! - `unpack.rs` applies layers in order (whiteouts, opaque directories),
//!   never writing outside the unpack directory.
//! - `disk.rs` packs the tree with `mkfs.ext4 -d` and caches it.
//! - `launch.rs` turns Entrypoint, Cmd, Env, WorkingDir and User, with the
//!   user's overrides, into the words the guest's helper runs.

pub mod disk;
pub mod launch;
pub mod source;
pub mod unpack;

use serde::Deserialize;
use std::path::PathBuf;

pub use disk::{prepare, PreparedImage};
pub use launch::{command, Overrides};

/// What the image's config says about running it (Docker's meaning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: Option<String>,
    #[serde(rename = "User")]
    pub user: Option<String>,
}

/// Errors from reading an image and building its disk.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("cannot apply layer {digest}")]
    Layer {
        digest: String,
        #[source]
        source: unpack::UnpackError,
    },
    #[error(
        "layer {digest} does not match the config's diff_id {want} (got sha256:{got}): \
         the image is corrupt"
    )]
    DiffIdMismatch {
        digest: String,
        want: String,
        got: String,
    },
    #[error("mkfs.ext4 not found: install the e2fsprogs package")]
    NoMkfs,
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    #[error("debugfs failed to set file owners: {0}")]
    Debugfs(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
