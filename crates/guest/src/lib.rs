//! vessel's default Linux guest, built from Debian packages and cached:
//! the kernel of `linux-image-cloud-amd64` (bzImage as shipped, plus the
//! uncompressed ELF vmlinux extracted on the host), and an initramfs with
//! busybox-static, the virtio modules and an `/init` that runs a command
//! given on the kernel command line or an interactive shell.
//!
//! The VMM calls [`prepare`] (or [`find_prepared`] to use what is cached
//! without touching apt), boots [`GuestImage::kernel_bzimage`] or
//! [`GuestImage::vmlinux`] with [`GuestImage::initramfs`] and
//! [`GuestImage::default_cmdline`], plus [`command_cmdline`] to run a
//! command. See `cmdline.rs` for the contract with the init.
//! [`bench_initramfs`] adds host tools (fio) to a second, opt-in archive;
//! [`workload::workload_image`] makes the Debian root disk of
//! `vessel bench workload`.

pub mod agent;
pub mod apt;
pub mod cmdline;
pub mod cpio;
mod image;
pub mod init;
pub mod modules;
pub mod oci;
mod rootfs;
pub mod tools;
pub mod tree;
pub mod vmlinux;
pub mod workload;

use std::path::PathBuf;

pub use cmdline::{
    command_cmdline, decode_cmdline, parse_exit_status, script_cmdline, EXIT_STATUS_MARKER,
    KERNEL_CMDLINE_MAX, READY_MARKER,
};
pub use image::{find_prepared, find_prepared_in, find_prepared_like, prepare};
pub use rootfs::make_rootfs;
pub use tools::{bench_initramfs, bench_initramfs_in};

/// A prepared guest: everything needed to boot it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel as Debian ships it (bzImage, LZ4-compressed payload).
    pub kernel_bzimage: PathBuf,
    /// The same kernel uncompressed (ELF, has a PVH entry note).
    pub vmlinux: PathBuf,
    /// Uncompressed newc cpio.
    pub initramfs: PathBuf,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_release: String,
    /// Command line to boot with (console on ttyS0, reboot on panic).
    pub default_cmdline: String,
}

/// What to build and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareOptions {
    /// Cache root; the guest lives in `<cache_dir>/<dir_name>/<key>/`.
    pub cache_dir: PathBuf,
    /// The directory under `cache_dir` for this kind of guest: `guest`
    /// for the default one; another name keeps a second kernel flavour's
    /// builds (and its "current" marker) apart from it.
    pub dir_name: String,
    /// The meta package whose `linux-image-*` dependency is the kernel.
    pub kernel_meta_package: String,
    /// The package providing a static `/bin/busybox`.
    pub busybox_package: String,
    /// Rebuild even when the cache is current.
    pub force: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            cache_dir: cache_dir(),
            dir_name: "guest".to_string(),
            kernel_meta_package: "linux-image-cloud-amd64".to_string(),
            busybox_package: "busybox-static".to_string(),
            force: false,
        }
    }
}

impl PrepareOptions {
    /// The guest with Debian's generic kernel (`linux-image-amd64`: the
    /// distribution's usual bzImage, XZ-compressed, with the drivers the
    /// cloud flavour leaves out) instead of the cloud one, kept in
    /// `<cache>/guest-generic/`.
    pub fn generic_kernel() -> Self {
        PrepareOptions {
            dir_name: "guest-generic".to_string(),
            kernel_meta_package: "linux-image-amd64".to_string(),
            ..PrepareOptions::default()
        }
    }
}

/// Errors from preparing the guest or making its disk image.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Apt(#[from] apt::AptError),
    #[error("kernel package {package} has no {what}")]
    KernelPackageIncomplete { package: String, what: String },
    #[error("busybox package {0} has no bin/busybox")]
    NoBusybox(String),
    #[error("cannot extract vmlinux")]
    Vmlinux(#[from] vmlinux::ExtractError),
    #[error("cannot collect kernel modules")]
    Modules(#[from] modules::ModuleError),
    #[error("cannot build the guest file tree")]
    Tree(#[from] tree::TreeError),
    #[error("initramfs {path} is unreadable")]
    BadInitramfs {
        path: PathBuf,
        #[source]
        source: cpio::CpioError,
    },
    #[error("{tool} not found: install the {package} package")]
    ToolMissing { tool: String, package: String },
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    #[error("mmdebstrap failed: {0}")]
    Mmdebstrap(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where vessel caches what it builds: `$XDG_CACHE_HOME/vessel`, else
/// `$HOME/.cache/vessel`, else `/var/tmp/vessel-cache` when there is no home.
pub fn cache_dir() -> PathBuf {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute(std::env::var_os("XDG_CACHE_HOME")) {
        return xdg.join("vessel");
    }
    if let Some(home) = absolute(std::env::var_os("HOME")) {
        return home.join(".cache").join("vessel");
    }
    PathBuf::from("/var/tmp/vessel-cache")
}
