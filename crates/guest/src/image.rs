//! Preparing the guest and finding it in the cache. One build lives in
//! `<cache>/guest/<key>/` where the key names the exact package versions
//! and the recipe version, so a new kernel, busybox or init means a new
//! build. A build is made in a private `.build-*` directory and renamed into
//! place only when complete, with its manifest written last, so an
//! interrupted prepare never leaves something that looks valid. The file
//! `<cache>/guest/current` names the key last prepared.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::apt::{self, PackageVersion, Tools};
use crate::init::{self, DEFAULT_CMDLINE, RECIPE_VERSION};
use crate::modules::{self, GUEST_MODULES};
use crate::{cpio, vmlinux, GuestImage, PrepareError, PrepareOptions};

const BZIMAGE: &str = "bzImage";
const VMLINUX: &str = "vmlinux";
const INITRAMFS: &str = "initramfs.cpio";
const MANIFEST: &str = "manifest";
const CURRENT: &str = "current";
/// Leftover `.build-*` directories older than this are from an interrupted
/// prepare and are removed.
const STALE_BUILD: Duration = Duration::from_secs(3600);
/// Builds of other keys (older package versions or recipes) are removed
/// once their manifest is older than this: a vessel of another version may
/// still be booting from a younger one.
const STALE_ENTRY: Duration = Duration::from_secs(24 * 3600);

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError {
    let path = path.to_path_buf();
    move |source| PrepareError::Io { what, path, source }
}

/// Builds the default guest unless the cache already holds a build of the
/// current package versions; returns where its files are. Needs apt's
/// package lists (no network) and, on a cache miss, `apt-get download`.
pub fn prepare(
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<GuestImage, PrepareError> {
    let tools = Tools::find()?;
    progress(&format!("guest: resolving {}", opts.kernel_meta_package));
    let kernel_name = apt::kernel_dependency(&tools, &opts.kernel_meta_package)?;
    let kernel = apt::candidate(&tools, &kernel_name)?;
    let busybox = apt::candidate(&tools, &opts.busybox_package)?;
    let key = cache_key(&kernel, &busybox);
    let guest_root = opts.cache_dir.join(&opts.dir_name);
    let entry = guest_root.join(&key);
    if !opts.force {
        if let Some(image) = load_entry(&entry) {
            set_current(&guest_root, &key)?;
            progress(&format!("guest: up to date in {}", entry.display()));
            return Ok(image);
        }
    }
    fs::create_dir_all(&guest_root).map_err(io_err("cannot create", &guest_root))?;
    remove_stale(&guest_root, &key);
    let staging = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&guest_root)
        .map_err(io_err("cannot create a directory in", &guest_root))?;
    let out = staging.path().join("out");
    fs::create_dir(&out).map_err(io_err("cannot create", &out))?;
    build(&tools, staging.path(), &out, &kernel, &busybox, progress)?;
    install(&out, &entry, staging.path())?;
    set_current(&guest_root, &key)?;
    progress(&format!("guest: ready in {}", entry.display()));
    load_entry(&entry).ok_or_else(|| PrepareError::Io {
        what: "build vanished from",
        path: entry,
        source: std::io::ErrorKind::NotFound.into(),
    })
}

/// The guest last prepared under the default cache directory, if it is
/// still complete. Never runs apt or touches the network.
pub fn find_prepared() -> Option<GuestImage> {
    find_prepared_in(&crate::cache_dir())
}

/// Like [`find_prepared`] under a given cache directory.
pub fn find_prepared_in(cache_dir: &Path) -> Option<GuestImage> {
    find_prepared_at(&cache_dir.join("guest"))
}

/// The guest `opts` would prepare, if it was prepared before and is still
/// complete (not checked against apt's current versions). Never runs apt.
pub fn find_prepared_like(opts: &PrepareOptions) -> Option<GuestImage> {
    find_prepared_at(&opts.cache_dir.join(&opts.dir_name))
}

fn find_prepared_at(guest_root: &Path) -> Option<GuestImage> {
    let key = fs::read_to_string(guest_root.join(CURRENT)).ok()?;
    let key = key.trim();
    if key.is_empty() || key.contains('/') || key.starts_with('.') {
        return None;
    }
    load_entry(&guest_root.join(key))
}

/// The cache key: exact package versions and the recipe version, made safe
/// as a file name.
pub fn cache_key(kernel: &PackageVersion, busybox: &PackageVersion) -> String {
    let raw = format!(
        "{}_{}+{}_{}+r{RECIPE_VERSION}",
        kernel.name, kernel.version, busybox.name, busybox.version
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".+-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn build(
    tools: &Tools,
    staging: &Path,
    out: &Path,
    kernel: &PackageVersion,
    busybox: &PackageVersion,
    progress: &mut dyn FnMut(&str),
) -> Result<(), PrepareError> {
    let kroot = fetch_unpacked(tools, staging, "kernel", kernel, progress)?;
    let broot = fetch_unpacked(tools, staging, "busybox", busybox, progress)?;
    let incomplete = |what: String| PrepareError::KernelPackageIncomplete {
        package: kernel.name.clone(),
        what,
    };

    let release = kernel
        .name
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel.name)
        .to_string();
    let vmlinuz = kroot.join("boot").join(format!("vmlinuz-{release}"));
    let bzimage = fs::read(&vmlinuz).map_err(|_| incomplete(format!("boot/vmlinuz-{release}")))?;
    progress(&format!(
        "guest: extracting vmlinux from {}",
        vmlinuz.display()
    ));
    let elf = vmlinux::extract_vmlinux(&bzimage)?;
    write_file(&out.join(BZIMAGE), &bzimage)?;
    write_file(&out.join(VMLINUX), &elf)?;
    drop((bzimage, elf));

    let moddir = [
        kroot.join("lib/modules").join(&release),
        kroot.join("usr/lib/modules").join(&release),
    ]
    .into_iter()
    .find(|d| d.is_dir())
    .ok_or_else(|| incomplete(format!("lib/modules/{release}")))?;
    progress("guest: collecting kernel modules");
    let (mods, missing) = modules::collect(&moddir, GUEST_MODULES)?;
    if !missing.is_empty() {
        progress(&format!(
            "guest: not modules in this kernel (built in?): {}",
            missing.join(" ")
        ));
    }
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    progress(&format!(
        "guest: {} modules: {}",
        mods.len(),
        names.join(" ")
    ));

    let busybox_bin = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| broot.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| PrepareError::NoBusybox(busybox.name.clone()))?;
    let applets = busybox_applets(&busybox_bin);
    let busybox_data = fs::read(&busybox_bin).map_err(io_err("cannot read", &busybox_bin))?;
    let tree = init::build_tree(busybox_data, &applets, &release, &mods)?;

    let cpio_path = out.join(INITRAMFS);
    progress(&format!("guest: writing initramfs ({} files)", tree.len()));
    let file = fs::File::create(&cpio_path).map_err(io_err("cannot create", &cpio_path))?;
    let mut w = BufWriter::new(file);
    cpio::write_newc(&tree, &mut w).map_err(io_err("cannot write", &cpio_path))?;
    let file = w
        .into_inner()
        .map_err(|e| io_err("cannot write", &cpio_path)(e.into_error()))?;
    file.sync_all()
        .map_err(io_err("cannot write", &cpio_path))?;

    let manifest = Manifest {
        kernel_package: kernel.name.clone(),
        kernel_version: kernel.version.clone(),
        busybox_version: busybox.version.clone(),
        kernel_release: release,
        default_cmdline: DEFAULT_CMDLINE.to_string(),
    };
    // Last: a directory with a manifest is a complete build.
    write_file(&out.join(MANIFEST), manifest.to_text().as_bytes())
}

/// `apt-get download` + `dpkg-deb -x` into `<staging>/<label>-root`.
fn fetch_unpacked(
    tools: &Tools,
    staging: &Path,
    label: &str,
    pkg: &PackageVersion,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, PrepareError> {
    let debdir = staging.join(format!("{label}-deb"));
    let root = staging.join(format!("{label}-root"));
    fs::create_dir(&debdir).map_err(io_err("cannot create", &debdir))?;
    progress(&format!("guest: downloading {} {}", pkg.name, pkg.version));
    let deb = apt::download(tools, pkg, &debdir)?;
    progress(&format!("guest: unpacking {}", pkg.name));
    apt::unpack(tools, &deb, &root)?;
    Ok(root)
}

/// Applet paths (`bin/ls`, `usr/bin/[`, ...) from `busybox --list-full`,
/// or a fixed list of essentials if the binary cannot run on this host.
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let listed = Command::new(busybox)
        .arg("--list-full")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.iter().any(|a| a == "bin/sh"));
    listed.unwrap_or_else(|| {
        init::FALLBACK_APPLETS
            .iter()
            .map(|s| s.to_string())
            .collect()
    })
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), PrepareError> {
    let mut f = fs::File::create(path).map_err(io_err("cannot create", path))?;
    f.write_all(data).map_err(io_err("cannot write", path))?;
    f.sync_all().map_err(io_err("cannot write", path))
}

/// Moves a finished build into place, replacing an older one of the same
/// key (forced rebuild).
fn install(out: &Path, entry: &Path, staging: &Path) -> Result<(), PrepareError> {
    if entry.exists() {
        let old = staging.join("old");
        fs::rename(entry, &old).map_err(io_err("cannot move away", entry))?;
    }
    match fs::rename(out, entry) {
        Ok(()) => Ok(()),
        // A concurrent prepare installed the same key first: use theirs.
        Err(_) if load_entry(entry).is_some() => Ok(()),
        Err(e) => Err(io_err("cannot install", entry)(e)),
    }
}

fn set_current(guest_root: &Path, key: &str) -> Result<(), PrepareError> {
    let tmp = guest_root.join(format!(".{CURRENT}.{}", std::process::id()));
    let path = guest_root.join(CURRENT);
    fs::write(&tmp, format!("{key}\n")).map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("cannot write", &path))
}

/// Removes day-old builds of other keys and abandoned `.build-*`
/// directories. Failures are ignored: this only saves disk space.
fn remove_stale(guest_root: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(guest_root) else {
        return;
    };
    let older_than = |p: &Path, limit: Duration| {
        p.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > limit)
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let old_build = name.starts_with(".build-") && older_than(&path, STALE_BUILD);
        let old_key =
            !name.starts_with('.') && name != keep && older_than(&path.join(MANIFEST), STALE_ENTRY);
        if old_build || old_key {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

fn load_entry(entry: &Path) -> Option<GuestImage> {
    let manifest = Manifest::parse(&fs::read_to_string(entry.join(MANIFEST)).ok()?)?;
    let file = |name: &str| {
        let p = entry.join(name);
        p.metadata()
            .ok()
            .filter(|m| m.is_file() && m.len() > 0)
            .map(|_| p)
    };
    Some(GuestImage {
        kernel_bzimage: file(BZIMAGE)?,
        vmlinux: file(VMLINUX)?,
        initramfs: file(INITRAMFS)?,
        kernel_release: manifest.kernel_release,
        default_cmdline: manifest.default_cmdline,
    })
}

/// What a build records about itself, as `key=value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Manifest {
    kernel_package: String,
    kernel_version: String,
    busybox_version: String,
    kernel_release: String,
    default_cmdline: String,
}

impl Manifest {
    fn to_text(&self) -> String {
        format!(
            "recipe={RECIPE_VERSION}\nkernel_package={}\nkernel_version={}\n\
             busybox_version={}\nkernel_release={}\ndefault_cmdline={}\n",
            self.kernel_package,
            self.kernel_version,
            self.busybox_version,
            self.kernel_release,
            self.default_cmdline
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        if get("recipe")? != RECIPE_VERSION.to_string() {
            return None;
        }
        Some(Self {
            kernel_package: get("kernel_package")?,
            kernel_version: get("kernel_version")?,
            busybox_version: get("busybox_version")?,
            kernel_release: get("kernel_release")?,
            default_cmdline: get("default_cmdline")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, version: &str) -> PackageVersion {
        PackageVersion {
            name: name.into(),
            version: version.into(),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            kernel_package: "linux-image-6.1.0-56-cloud-amd64".into(),
            kernel_version: "6.1.192-2".into(),
            busybox_version: "1:1.35.0-4".into(),
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            default_cmdline: DEFAULT_CMDLINE.into(),
        }
    }

    #[test]
    fn cache_key_changes_with_versions_and_is_a_file_name() {
        let k = pv("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2");
        let a = cache_key(&k, &pv("busybox-static", "1:1.35.0-4+deb12u1+b1"));
        let b = cache_key(&k, &pv("busybox-static", "1:1.35.0-4+deb12u2"));
        assert_ne!(a, b);
        assert!(!a.contains(['/', ':', ' ']));
        assert!(a.ends_with(&format!("+r{RECIPE_VERSION}")));
    }

    #[test]
    fn manifest_round_trips_and_rejects_other_recipes() {
        let m = manifest();
        assert_eq!(Manifest::parse(&m.to_text()), Some(m.clone()));
        let old = m
            .to_text()
            .replace(&format!("recipe={RECIPE_VERSION}"), "recipe=0");
        assert_eq!(Manifest::parse(&old), None);
    }

    #[test]
    fn find_prepared_needs_a_complete_entry() {
        let cache = tempfile::tempdir().unwrap();
        assert_eq!(find_prepared_in(cache.path()), None);
        let root = cache.path().join("guest");
        let entry = root.join("k1");
        fs::create_dir_all(&entry).unwrap();
        set_current(&root, "k1").unwrap();
        for f in [BZIMAGE, VMLINUX, INITRAMFS] {
            fs::write(entry.join(f), b"x").unwrap();
        }
        assert_eq!(find_prepared_in(cache.path()), None, "no manifest yet");
        fs::write(entry.join(MANIFEST), manifest().to_text()).unwrap();
        let img = find_prepared_in(cache.path()).unwrap();
        assert_eq!(img.kernel_release, "6.1.0-56-cloud-amd64");
        assert_eq!(img.initramfs, entry.join(INITRAMFS));
        fs::write(entry.join(VMLINUX), b"").unwrap();
        assert_eq!(find_prepared_in(cache.path()), None, "empty vmlinux");
        fs::write(root.join(CURRENT), "../etc\n").unwrap();
        assert_eq!(find_prepared_in(cache.path()), None);
    }

    #[test]
    fn stale_entries_are_removed_but_the_kept_one_stays() {
        let root = tempfile::tempdir().unwrap();
        for k in ["keep", "old", "recent"] {
            fs::create_dir(root.path().join(k)).unwrap();
            fs::write(root.path().join(k).join(MANIFEST), "x").unwrap();
        }
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
        for k in ["keep", "old"] {
            fs::File::options()
                .write(true)
                .open(root.path().join(k).join(MANIFEST))
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
        fs::create_dir(root.path().join(".build-fresh")).unwrap();
        remove_stale(root.path(), "keep");
        assert!(root.path().join("keep").exists());
        assert!(!root.path().join("old").exists());
        assert!(
            root.path().join("recent").exists(),
            "another version may be using it"
        );
        assert!(root.path().join(".build-fresh").exists(), "a running build");
    }
}
