//! The workload guest's root disk (`vessel bench workload`): a Debian root
//! made by `mmdebstrap --variant=essential` with the benchmark's programs
//! (python3, xz-utils, gzip, coreutils, sqlite3, tcc with libc6-dev,
//! iperf3) installed by apt from the host's mirror, plus `/bench`: the
//! driver script, the Python and SQL programs and the inputs (a 32 MiB
//! corpus of the root's own files, 1,000,000 lines to sort, a generated C
//! file of a few thousand lines). Packed with `mkfs.ext4 -d` into one
//! image, cached under `<cache_dir>/guest-workload/<key>.ext4`, the key
//! naming the candidate versions of the packages and this recipe (the
//! scripts included), so an upgrade or a changed script means a new image.
//!
//! The default guest boots with its initramfs and mounts this disk read
//! only; the benchmark `chroot`s into it (see [`guest_script`]). Natively
//! the same image is loop-mounted and entered the same way, so every
//! machine runs the same binaries on the same inputs.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, find_tool, last_line, PackageVersion, Tools};
use crate::PrepareError;

mod data;

/// Bumped when what goes into the image changes outside the files below.
const RECIPE: u32 = 1;

/// The packages installed on top of the essential set.
pub const PACKAGES: &[&str] = &[
    "python3",
    "xz-utils",
    "gzip",
    "coreutils",
    "sqlite3",
    "tcc",
    "libc6-dev",
    "iperf3",
];

/// The driver: `run.sh "NAME ARG"...` (see the script's head).
pub const RUN_SH: &str = include_str!("workload/run.sh");
/// The files under `/bench` in the image: (name, contents).
const BENCH_FILES: &[(&str, &str)] = &[
    ("run.sh", RUN_SH),
    ("sqlite.sql", include_str!("workload/sqlite.sql")),
    ("py_int.py", include_str!("workload/py_int.py")),
    ("py_float.py", include_str!("workload/py_float.py")),
    ("py_str.py", include_str!("workload/py_str.py")),
    ("py_call.py", include_str!("workload/py_call.py")),
];

/// Size of `/bench/data/corpus`, the input of gzip, xz and sha256sum
/// (repeated for larger sizes).
pub const CORPUS_BYTES: usize = 32 << 20;
/// Lines in `/bench/data/lines`, the input of sort.
pub const SORT_LINES: usize = 1_000_000;
/// Lines of `/bench/data/prog.c`, the input of tcc.
pub fn c_source_lines() -> usize {
    data::c_source().lines().count()
}

/// The built image and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadImage {
    /// The ext4 image (boot it read-only).
    pub disk: PathBuf,
    /// The packages asked for, at the versions apt offered when it was
    /// built.
    pub packages: Vec<PackageVersion>,
}

/// The workload image in `<cache_dir()>/guest-workload/`, built first
/// when missing. See [`workload_image_in`].
pub fn workload_image(progress: &mut dyn FnMut(&str)) -> Result<WorkloadImage, PrepareError> {
    workload_image_in(&crate::cache_dir(), progress)
}

/// The workload image under `cache_dir`, built with mmdebstrap (through
/// the host's apt mirror) on a cache miss.
pub fn workload_image_in(
    cache_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<WorkloadImage, PrepareError> {
    let tools = Tools::find()?;
    let packages = PACKAGES
        .iter()
        .map(|p| apt::candidate(&tools, p))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = cache_dir.join("guest-workload");
    let disk = dir.join(format!("{}.ext4", cache_key(&packages)));
    if disk.is_file() {
        return Ok(WorkloadImage { disk, packages });
    }
    let mmdebstrap = find_tool("mmdebstrap").ok_or_else(|| PrepareError::ToolMissing {
        tool: "mmdebstrap".into(),
        package: "mmdebstrap".into(),
    })?;
    let mkfs = find_tool("mkfs.ext4").ok_or_else(|| PrepareError::ToolMissing {
        tool: "mkfs.ext4".into(),
        package: "e2fsprogs".into(),
    })?;
    fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&dir)
        .map_err(io_err("cannot create a directory in", &dir))?;
    let root = scratch.path().join("root");
    progress(&format!(
        "guest: building the workload root with mmdebstrap ({}), about a minute",
        PACKAGES.join(", ")
    ));
    debootstrap(&mmdebstrap, &root)?;
    progress("guest: adding /bench (scripts and inputs)");
    add_bench(&root)?;
    let size_mib = tree_bytes(&root) / (1 << 20) * 5 / 4 + 64;
    progress(&format!(
        "guest: packing the workload root ({size_mib} MiB ext4)"
    ));
    let tmp = scratch.path().join("image.ext4");
    mkfs_ext4(&mkfs, &root, &tmp, size_mib)?;
    fs::rename(&tmp, &disk).map_err(io_err("cannot write", &disk))?;
    progress(&format!("guest: workload disk ready in {}", disk.display()));
    Ok(WorkloadImage { disk, packages })
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError {
    let path = path.to_path_buf();
    move |source| PrepareError::Io { what, path, source }
}

/// The key: this recipe, the files under /bench and the package versions.
fn cache_key(packages: &[PackageVersion]) -> String {
    let mut h = DefaultHasher::new();
    RECIPE.hash(&mut h);
    BENCH_FILES.hash(&mut h);
    data::c_source().hash(&mut h);
    for p in packages {
        p.name.hash(&mut h);
        p.version.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// The host's Debian suite (`VERSION_CODENAME` of /etc/os-release).
fn host_suite() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "bookworm".to_string())
}

fn debootstrap(mmdebstrap: &Path, root: &Path) -> Result<(), PrepareError> {
    let include = format!("--include={}", PACKAGES.join(","));
    let out = Command::new(mmdebstrap)
        .args(["--quiet", "--variant=essential", &include])
        // Documentation and translations are not run by anything.
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
        ])
        .arg(host_suite())
        .arg(root)
        .env("LC_ALL", "C")
        .output()
        .map_err(io_err("cannot run", Path::new("mmdebstrap")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PrepareError::Mmdebstrap(last_line(&out.stderr)))
    }
}

/// Writes /bench and /bench/data into `root`.
fn add_bench(root: &Path) -> Result<(), PrepareError> {
    let bench = root.join("bench");
    let data_dir = bench.join("data");
    fs::create_dir_all(&data_dir).map_err(io_err("cannot create", &data_dir))?;
    for (name, text) in BENCH_FILES {
        let path = bench.join(name);
        fs::write(&path, text).map_err(io_err("cannot write", &path))?;
    }
    let path = data_dir.join("prog.c");
    fs::write(&path, data::c_source()).map_err(io_err("cannot write", &path))?;
    let path = data_dir.join("lines");
    fs::write(&path, data::sort_lines(SORT_LINES)).map_err(io_err("cannot write", &path))?;
    let path = data_dir.join("corpus");
    let corpus = data::corpus(root, CORPUS_BYTES).map_err(io_err("cannot read", root))?;
    let mut f = fs::File::create(&path).map_err(io_err("cannot create", &path))?;
    f.write_all(&corpus)
        .and_then(|()| f.sync_all())
        .map_err(io_err("cannot write", &path))
}

/// Bytes of the regular files under `dir` (symlinks not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn mkfs_ext4(mkfs: &Path, tree: &Path, image: &Path, size_mib: u64) -> Result<(), PrepareError> {
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-L", "vessel-workload", "-d"])
        .arg(tree)
        .arg(image)
        .arg(format!("{size_mib}M"))
        .env("LC_ALL", "C")
        .output()
        .map_err(io_err("cannot run", Path::new("mkfs.ext4")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PrepareError::Mkfs(last_line(&out.stderr)))
    }
}

/// The script the default guest's init runs (`vessel.cmd`): wait for the
/// disk, mount it read-only, give it /proc, /sys, /dev and a tmpfs /tmp,
/// bring eth0 up at `guest_addr` (when given) and run the driver in it with
/// `workloads` ("NAME ARG" each).
pub fn guest_script(workloads: &[String], guest_addr: Option<&str>) -> String {
    let mut s = String::from(
        "i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
         m=/mnt/wl; mkdir -p $m; mount -t ext4 -o ro /dev/vda $m || exit 120; \
         mount -t proc proc $m/proc; mount -t sysfs sysfs $m/sys; mount --rbind /dev $m/dev; \
         mount -t tmpfs -o size=75% tmpfs $m/tmp; ",
    );
    if let Some(addr) = guest_addr {
        s.push_str(&format!(
            "ip link set eth0 up && ip addr add {addr} dev eth0 || echo 'VESSEL-WL-NET no eth0'; "
        ));
    }
    s.push_str("chroot $m /bin/sh /bench/run.sh ");
    s.push_str(&crate::cmdline::shell_join(workloads));
    s
}

/// The script that runs the driver natively: inside a private mount
/// namespace (the caller's `unshare -m`), loop-mount `disk` read-only at
/// `mountpoint` and enter it as the guest does.
pub fn native_script(disk: &Path, mountpoint: &Path, workloads: &[String]) -> String {
    let q = |p: &Path| crate::cmdline::shell_quote(&p.to_string_lossy());
    format!(
        "set -e; m={}; mount -o ro,loop {} $m; mount -t proc proc $m/proc; \
         mount -t sysfs sysfs $m/sys; mount --rbind /dev $m/dev; mount -t tmpfs tmpfs $m/tmp; \
         set +e; chroot $m /bin/sh /bench/run.sh {}",
        q(mountpoint),
        q(disk),
        crate::cmdline::shell_join(workloads)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_names_every_workload_it_knows() {
        for name in [
            "py-int",
            "py-float",
            "py-str",
            "py-call",
            "gzip",
            "xz",
            "sha256",
            "sort",
            "sqlite",
            "tcc",
            "iperf-g2h",
            "iperf-h2g",
        ] {
            assert!(RUN_SH.contains(&format!("        {name})")), "{name}");
        }
        assert!(RUN_SH.contains("smp"));
    }

    #[test]
    fn the_guest_script_fits_the_kernel_command_line() {
        let w: Vec<String> = (0..14).map(|i| format!("py-int {i}000000")).collect();
        let s = guest_script(&w, Some("10.77.0.2/24"));
        assert!(crate::script_cmdline(&s).len() < 1500, "{}", s.len());
        assert!(s.contains("'py-int 0000000'"));
        assert!(s.contains("ip addr add 10.77.0.2/24 dev eth0"));
        assert!(!guest_script(&w, None).contains("eth0"));
    }

    #[test]
    fn the_native_script_quotes_its_paths() {
        let s = native_script(
            Path::new("/c/a b.ext4"),
            Path::new("/tmp/m"),
            &["sort 10".into()],
        );
        assert!(s.contains("mount -o ro,loop '/c/a b.ext4' $m"), "{s}");
        assert!(s.ends_with("run.sh 'sort 10'"), "{s}");
    }

    #[test]
    fn the_key_changes_with_a_version() {
        let p = |v: &str| {
            vec![PackageVersion {
                name: "python3".into(),
                version: v.into(),
            }]
        };
        assert_eq!(cache_key(&p("1")), cache_key(&p("1")));
        assert_ne!(cache_key(&p("1")), cache_key(&p("2")));
    }
}

#[cfg(test)]
mod build_tests {
    /// Builds (or finds) the real image in the default cache: minutes, and
    /// apt's mirror, so only on request (`-- --ignored`).
    #[test]
    #[ignore = "runs mmdebstrap through the network mirror"]
    fn builds_the_workload_image() {
        let image = super::workload_image(&mut |l| eprintln!("{l}")).expect("image");
        assert!(image.disk.is_file());
        assert_eq!(image.packages.len(), super::PACKAGES.len());
    }
}
