//! Getting Debian packages without installing them: `apt-cache show` to
//! learn the candidate versions (no network: it reads apt's local lists),
//! `apt-get download` to fetch a `.deb` into a directory of ours, and
//! `dpkg-deb -x` to unpack it there. Nothing touches the host's package
//! state, so none of this needs root.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors from apt and dpkg-deb, each naming what is missing.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("apt-get not found: vessel guest prepare needs a Debian or Ubuntu host")]
    AptMissing,
    #[error("{tool} not found: install the {package} package")]
    ToolMissing { tool: String, package: String },
    #[error("package {0} is unknown to apt (run apt-get update?)")]
    UnknownPackage(String),
    #[error("{meta} depends on no linux-image package (run apt-get update?)")]
    NoKernelDependency { meta: String },
    #[error("apt-get download {package} failed: {stderr} (run apt-get update?)")]
    DownloadFailed { package: String, stderr: String },
    #[error("apt-get download {0} left no .deb file")]
    NoDebFile(String),
    #[error("dpkg-deb -x {deb} failed: {stderr}")]
    UnpackFailed { deb: PathBuf, stderr: String },
    #[error("cannot run {tool}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list {0}")]
    ReadDir(PathBuf, #[source] std::io::Error),
}

/// Finds an executable named `name` on `$PATH` (and in the sbin
/// directories, which a non-root PATH may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The tools a prepare runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub apt_get: PathBuf,
    pub apt_cache: PathBuf,
    pub dpkg_deb: PathBuf,
}

impl Tools {
    /// Looks all of them up, naming the first one missing.
    pub fn find() -> Result<Self, AptError> {
        let apt_get = find_tool("apt-get").ok_or(AptError::AptMissing)?;
        let need = |tool: &str, package: &str| {
            find_tool(tool).ok_or_else(|| AptError::ToolMissing {
                tool: tool.to_string(),
                package: package.to_string(),
            })
        };
        Ok(Self {
            apt_get,
            apt_cache: need("apt-cache", "apt")?,
            dpkg_deb: need("dpkg-deb", "dpkg")?,
        })
    }
}

/// A package and the exact version we fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

fn run(tool: &Path, args: &[&str], cwd: Option<&Path>) -> Result<std::process::Output, AptError> {
    let mut cmd = Command::new(tool);
    cmd.args(args).env("LC_ALL", "C");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.output().map_err(|source| AptError::Spawn {
        tool: tool.display().to_string(),
        source,
    })
}

/// `apt-cache show --no-all-versions PKG`: the candidate's control fields.
fn show(tools: &Tools, package: &str) -> Result<String, AptError> {
    let out = run(
        &tools.apt_cache,
        &["show", "--no-all-versions", package],
        None,
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !text.lines().any(|l| l.starts_with("Version:")) {
        return Err(AptError::UnknownPackage(package.to_string()));
    }
    Ok(text)
}

/// The value of control field `name` in the first stanza of `text`.
pub fn control_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The candidate version of `package`.
pub fn candidate(tools: &Tools, package: &str) -> Result<PackageVersion, AptError> {
    let text = show(tools, package)?;
    let version = control_field(&text, "Version")
        .ok_or_else(|| AptError::UnknownPackage(package.to_string()))?;
    Ok(PackageVersion {
        name: package.to_string(),
        version: version.to_string(),
    })
}

/// The `linux-image-*` package that the meta package (e.g.
/// `linux-image-cloud-amd64`) depends on.
pub fn kernel_dependency(tools: &Tools, meta: &str) -> Result<String, AptError> {
    let text = show(tools, meta)?;
    let depends = control_field(&text, "Depends").unwrap_or("");
    image_package_in_depends(depends).ok_or_else(|| AptError::NoKernelDependency {
        meta: meta.to_string(),
    })
}

/// The first `linux-image-*` name in a Depends field.
pub fn image_package_in_depends(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .filter_map(|alt| alt.split_whitespace().next())
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_string)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Downloads `pkg` at its exact version into `dir` (which should be empty)
/// and returns the path of the `.deb`.
pub fn download(tools: &Tools, pkg: &PackageVersion, dir: &Path) -> Result<PathBuf, AptError> {
    let spec = format!("{}={}", pkg.name, pkg.version);
    let mut args = vec!["download", "-q"];
    // As root apt hands the download to its `_apt` user, which cannot write
    // into our private directory; it would fall back with a warning.
    if is_root() {
        args.extend(["-o", "APT::Sandbox::User=root"]);
    }
    args.push(&spec);
    let out = run(&tools.apt_get, &args, Some(dir))?;
    if !out.status.success() {
        return Err(AptError::DownloadFailed {
            package: spec,
            stderr: last_line(&out.stderr),
        });
    }
    let read_err = |e| AptError::ReadDir(dir.to_path_buf(), e);
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            return Ok(path);
        }
    }
    Err(AptError::NoDebFile(spec))
}

/// Unpacks `deb` into `dest` (no maintainer scripts run, nothing installed).
pub fn unpack(tools: &Tools, deb: &Path, dest: &Path) -> Result<(), AptError> {
    let deb_str = deb.to_string_lossy();
    let dest_str = dest.to_string_lossy();
    let out = run(&tools.dpkg_deb, &["-x", &deb_str, &dest_str], None)?;
    if !out.status.success() {
        return Err(AptError::UnpackFailed {
            deb: deb.to_path_buf(),
            stderr: last_line(&out.stderr),
        });
    }
    Ok(())
}

/// The last non-blank line of a tool's error output (what it says went
/// wrong), for an error message.
pub(crate) fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error output")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description-en: Linux for x86-64 cloud

Package: other
Version: 9
";

    #[test]
    fn reads_fields_of_the_first_stanza_only() {
        assert_eq!(control_field(SHOW, "Version"), Some("6.1.192-2"));
        assert_eq!(
            control_field(SHOW, "Package"),
            Some("linux-image-cloud-amd64")
        );
        assert_eq!(control_field(SHOW, "Missing"), None);
        assert_eq!(
            image_package_in_depends(control_field(SHOW, "Depends").unwrap()).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn depends_without_an_image_is_none() {
        assert_eq!(image_package_in_depends("libc6 (>= 2), foo | bar"), None);
        assert_eq!(
            image_package_in_depends("initramfs-tools | linux-image-6.12.1-cloud-amd64").as_deref(),
            Some("linux-image-6.12.1-cloud-amd64")
        );
    }

    #[test]
    fn missing_tool_is_none_and_sh_is_found() {
        assert!(find_tool("vessel-no-such-tool-xyz").is_none());
        assert!(find_tool("sh").is_some());
    }

    #[test]
    fn missing_apt_message_says_what_to_do() {
        assert_eq!(
            AptError::AptMissing.to_string(),
            "apt-get not found: vessel guest prepare needs a Debian or Ubuntu host"
        );
    }
}
