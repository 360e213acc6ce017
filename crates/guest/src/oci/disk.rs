//! The container's root disk: layers unpacked into a scratch directory next
//! to the cache, packed with `mkfs.ext4 -d` (no mount, no root needed),
//! owners set as the layers say (`lchown` as root, else `debugfs` edits the
//! image), renamed into `<cache>/images/<config sha256>.ext4`. The config's
//! digest names every layer's contents (its diff_ids, which are checked
//! while unpacking), so a cached disk is the image's and is reused.
//!
//! The guest mounts the disk read-only under a tmpfs overlay: runs never
//! change it, and two runs may share it. Mount points the guest's helper
//! needs (`proc`, `sys`, `dev`, `.vessel/busybox`) are added when the image
//! lacks them.

use super::source::{hex, Source};
use super::unpack::Unpacker;
use super::{OciError, RunConfig};
use crate::apt::find_tool;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bump when the disk's layout changes (part of the cache key).
const DISK_FORMAT: u32 = 1;

/// A prepared image: the disk to attach and how to run it.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    pub disk: PathBuf,
    pub run: RunConfig,
}

/// Reads the image at `path` and returns its cached disk, building it
/// first when missing. Progress lines go to `progress`.
pub fn prepare(
    path: &Path,
    cache_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PreparedImage, OciError> {
    let source = Source::open(path)?;
    let image = source.image()?;
    let key = hex(&Sha256::digest(&image.config_bytes));
    let dir = cache_dir.join("images");
    let disk = dir.join(format!("v{DISK_FORMAT}-{key}.ext4"));
    if disk.is_file() {
        return Ok(PreparedImage {
            disk,
            run: image.run,
        });
    }
    let mkfs = find_tool("mkfs.ext4").ok_or(OciError::NoMkfs)?;
    fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&dir)
        .map_err(io_err("cannot create a directory in", &dir))?;
    let root = scratch.path().join("root");
    fs::create_dir(&root).map_err(io_err("cannot create", &root))?;
    progress(&format!(
        "vessel: unpacking {} ({} layers)",
        path.display(),
        image.layers.len()
    ));
    let mut unpacker = Unpacker::new(&root);
    for layer in &image.layers {
        apply_layer(&source, layer, &mut unpacker)?;
    }
    add_mount_points(&root)?;
    let as_root = is_root();
    if as_root {
        chown_all(&root, &unpacker);
    }
    unpacker.finish().map_err(|source| OciError::Layer {
        digest: "(directory modes)".into(),
        source,
    })?;
    let tmp_disk = scratch.path().join("disk.ext4");
    mkfs_ext4(&mkfs, &root, &tmp_disk)?;
    if !as_root {
        set_owners(&root, &tmp_disk, &unpacker)?;
    }
    fs::rename(&tmp_disk, &disk).map_err(io_err("cannot write", &disk))?;
    Ok(PreparedImage {
        disk,
        run: image.run,
    })
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OciError + 'a {
    move |source| OciError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Decompresses (gzip, zstd or none, by the data's magic number), checks
/// the uncompressed digest against the config's diff_id, and applies.
fn apply_layer(
    source: &Source,
    layer: &super::source::Layer,
    unpacker: &mut Unpacker,
) -> Result<(), OciError> {
    let layer_err = |source| OciError::Layer {
        digest: layer.digest.clone(),
        source,
    };
    let read_err = |e| layer_err(super::unpack::UnpackError::Read(e));
    let mut raw = BufReader::new(source.open_blob(&layer.blob)?);
    let magic = raw.fill_buf().map_err(read_err)?.to_vec();
    let plain: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(raw)
                .map_err(|e| read_err(io::Error::new(io::ErrorKind::InvalidData, e)))?,
        )
    } else {
        Box::new(raw)
    };
    let mut hashing = Hashing {
        inner: plain,
        hash: Sha256::new(),
        bytes: 0,
    };
    unpacker.apply(&mut hashing).map_err(layer_err)?;
    let got = hex(&hashing.hash.finalize());
    if let Some(want) = &layer.diff_id {
        if want.strip_prefix("sha256:") != Some(got.as_str()) {
            return Err(OciError::DiffIdMismatch {
                digest: layer.digest.clone(),
                want: want.clone(),
                got,
            });
        }
    }
    Ok(())
}

/// Hashes what passes through, and bounds it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        // File data is bounded by the unpacker; this bounds headers and
        // padding (a decompression bomb of zeros).
        if self.bytes > 2 * super::unpack::MAX_BYTES {
            return Err(io::Error::other("layer too large"));
        }
        Ok(n)
    }
}

/// Where the guest's helper mounts /proc, /sys, /dev and its busybox.
fn add_mount_points(root: &Path) -> Result<(), OciError> {
    for d in ["proc", "sys", "dev", ".vessel"] {
        let p = root.join(d);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).map_err(io_err("cannot create", &p))?;
        }
    }
    let bb = root.join(".vessel/busybox");
    if fs::symlink_metadata(&bb).is_err() {
        fs::write(&bb, b"").map_err(io_err("cannot create", &bb))?;
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// As root: owners as the layers say (modes again after, since chown
/// clears set-user-ID bits).
fn chown_all(root: &Path, unpacker: &Unpacker) {
    for (rel, attr) in unpacker.attrs() {
        let full = root.join(rel);
        let (Ok(uid), Ok(gid)) = (u32::try_from(attr.uid), u32::try_from(attr.gid)) else {
            continue;
        };
        let _ = std::os::unix::fs::lchown(&full, Some(uid), Some(gid));
        if fs::symlink_metadata(&full).is_ok_and(|m| m.is_file()) {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&full, fs::Permissions::from_mode(attr.mode));
        }
    }
}

/// The image's size: its data with room for ext4's metadata, and some
/// free space (the file is sparse; the guest never writes to it).
fn disk_size_and_inodes(root: &Path) -> (u64, u64) {
    fn walk(dir: &Path, bytes: &mut u64, inodes: &mut u64) {
        let Ok(children) = fs::read_dir(dir) else {
            return;
        };
        for c in children.flatten() {
            *inodes += 1;
            let Ok(m) = c.metadata() else { continue };
            *bytes += m.len().div_ceil(4096) * 4096;
            if c.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&c.path(), bytes, inodes);
            }
        }
    }
    let (mut bytes, mut inodes) = (0, 0);
    walk(root, &mut bytes, &mut inodes);
    let size = bytes + bytes / 5 + inodes * 512 + (64 << 20);
    (size.div_ceil(1 << 20), inodes + inodes / 4 + 1024)
}

fn mkfs_ext4(mkfs: &Path, root: &Path, disk: &Path) -> Result<(), OciError> {
    let (size_mib, inodes) = disk_size_and_inodes(root);
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-L", "vessel-image", "-O", "^has_journal"])
        .args(["-E", "root_owner=0:0", "-N"])
        .arg(inodes.to_string())
        .arg("-d")
        .arg(root)
        .arg(disk)
        .arg(format!("{size_mib}M"))
        .env("LC_ALL", "C")
        .output()
        .map_err(io_err("cannot run", mkfs))?;
    if !out.status.success() {
        return Err(OciError::Mkfs(last_line(&out.stderr)));
    }
    Ok(())
}

fn last_line(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// Not root: mkfs copied our own uid; debugfs writes the layers' owners
/// (root's for what no layer named) into the image. Names debugfs cannot
/// quote keep our uid.
fn set_owners(root: &Path, disk: &Path, unpacker: &Unpacker) -> Result<(), OciError> {
    let debugfs = find_tool("debugfs").ok_or(OciError::NoMkfs)?;
    let mut script = String::new();
    let mut paths = Vec::new();
    list_tree(root, Path::new(""), &mut paths);
    for rel in paths {
        let (uid, gid) = unpacker.attr(&rel).map_or((0, 0), |a| (a.uid, a.gid));
        let Some(name) = rel.to_str().filter(|n| !n.contains(['"', '\n', '\\'])) else {
            continue;
        };
        script.push_str(&format!(
            "sif \"/{name}\" uid {uid}\nsif \"/{name}\" gid {gid}\n"
        ));
    }
    let mut child = Command::new(&debugfs)
        .args(["-w", "-f", "-"])
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("cannot run", &debugfs))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(io_err("cannot write to", &debugfs))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err("cannot run", &debugfs))?;
    if !out.status.success() {
        return Err(OciError::Debugfs(last_line(&out.stderr)));
    }
    Ok(())
}

/// Every path under `dir` (relative to the walk's start), parents first.
fn list_tree(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(children) = fs::read_dir(dir) else {
        return;
    };
    for c in children.flatten() {
        let r = rel.join(c.file_name());
        out.push(r.clone());
        if c.file_type().is_ok_and(|t| t.is_dir()) {
            list_tree(&c.path(), &r, out);
        }
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
