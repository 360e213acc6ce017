//! Applies image layers to a directory, bottom layer first, as container
//! engines do: `.wh.NAME` deletes NAME from the layers below, a directory
//! holding `.wh..wh..opq` hides everything the layers below put in it.
//!
//! Layers are hostile: every member path is normalized (`..` is refused,
//! a leading `/` dropped) and its parent directories are resolved one
//! component at a time inside the root, following symbolic links the way
//! the container would see them (an absolute target starts again at the
//! root, `..` stops at the root), so nothing is ever written, linked or
//! deleted outside the root. The tree is ours alone while we unpack, so a
//! checked path stays valid until it is used. Device nodes and FIFOs are
//! skipped (the guest's /dev is devtmpfs). Sizes and member counts are
//! bounded. Directory modes are applied at the end, so a read-only
//! directory can still be filled and pruned by later layers.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Most bytes of file data an image may unpack to.
pub const MAX_BYTES: u64 = 64 << 30;
/// Most members over all layers.
pub const MAX_ENTRIES: u64 = 4_000_000;
/// Most symbolic links followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read the layer")]
    Read(#[source] io::Error),
    #[error("member {0:?} leaves the image root (..)")]
    Escapes(PathBuf),
    #[error("member {0:?}: a parent is not a directory")]
    NotADirectory(PathBuf),
    #[error("member {0:?}: too many levels of symbolic links")]
    LinkLoop(PathBuf),
    #[error("hard link {0:?} points to nothing in the image")]
    BadHardLink(PathBuf),
    #[error("the image unpacks to more than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("the image has more than {MAX_ENTRIES} files")]
    TooManyEntries,
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, UnpackError>;

/// Owner and mode of a path in the tree, as the layers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
}

/// Unpacks layers into `root`, remembering owners (applied by the caller:
/// `lchown` needs root, the disk builder can set them in the image) and
/// directory modes.
pub struct Unpacker {
    root: PathBuf,
    /// Relative path -> owner and mode, for everything a layer wrote.
    attrs: HashMap<PathBuf, Attr>,
    bytes: u64,
    entries: u64,
}

impl Unpacker {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            attrs: HashMap::new(),
            bytes: 0,
            entries: 0,
        }
    }

    /// Owners and modes of what is still in the tree.
    pub fn attrs(&self) -> impl Iterator<Item = (&PathBuf, &Attr)> {
        self.attrs
            .iter()
            .filter(|(p, _)| fs::symlink_metadata(self.root.join(p)).is_ok())
    }

    /// The owner and mode a layer gave `rel`.
    pub fn attr(&self, rel: &Path) -> Option<Attr> {
        self.attrs.get(rel).copied()
    }

    /// Gives directories the modes their layers asked for (after the last
    /// layer: until then they stay writable for us).
    pub fn finish(&self) -> Result<()> {
        for (path, attr) in self.attrs() {
            let full = self.root.join(path);
            if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                set_mode(&full, attr.mode)?;
            }
        }
        Ok(())
    }

    /// Applies one uncompressed layer tar.
    pub fn apply(&mut self, layer: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(layer);
        let mut written = HashSet::new();
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(UnpackError::TooManyEntries);
            }
            let path = entry.path().map_err(UnpackError::Read)?.into_owned();
            let parts = clean(&path)?;
            let Some((name, dirs)) = parts.split_last() else {
                continue; // the root itself
            };
            if let Some(hidden) = name.to_str().and_then(|n| n.strip_prefix(".wh.")) {
                // Nothing to hide when the directory is not there.
                if let Some(parent) = self.resolve(dirs, false, &path)? {
                    self.whiteout(&parent, hidden, &written)?;
                }
                continue;
            }
            let parent = self.resolve(dirs, true, &path)?.unwrap_or_default();
            let rel = parent.join(name);
            if self.write(&mut entry, &rel, &path)? {
                let h = entry.header();
                self.attrs.insert(
                    rel.clone(),
                    Attr {
                        uid: h.uid().unwrap_or(0),
                        gid: h.gid().unwrap_or(0),
                        mode: h.mode().unwrap_or(0o644) & 0o7777,
                    },
                );
                mark_written(&mut written, &rel);
            }
        }
        // The rest of the stream (end-of-archive blocks) belongs to the
        // layer's digest too.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(UnpackError::Read)?;
        Ok(())
    }

    /// Writes one member at `rel`; false when it is skipped.
    fn write<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        rel: &Path,
        path: &Path,
    ) -> Result<bool> {
        let full = self.root.join(rel);
        let kind = entry.header().entry_type();
        let werr = |source| UnpackError::Write {
            path: path.to_path_buf(),
            source,
        };
        if kind.is_dir() {
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove(&full).map_err(werr)?;
                    make_dir(&full).map_err(werr)?;
                }
                Err(_) => make_dir(&full).map_err(werr)?,
            }
            return Ok(true);
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            remove(&full).map_err(werr)?;
            self.bytes = self.bytes.saturating_add(entry.size());
            if self.bytes > MAX_BYTES {
                return Err(UnpackError::TooLarge);
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&full)
                .map_err(werr)?;
            let size = entry.size();
            io::copy(&mut entry.by_ref().take(size), &mut file).map_err(werr)?;
            if let Ok(t) = entry.header().mtime() {
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
                let _ = file.set_modified(when);
            }
            drop(file);
            set_mode(&full, mode)?;
            return Ok(true);
        }
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| UnpackError::BadHardLink(path.to_path_buf()))?;
            remove(&full).map_err(werr)?;
            std::os::unix::fs::symlink(&target, &full).map_err(werr)?;
            return Ok(true);
        }
        if kind.is_hard_link() {
            let bad = || UnpackError::BadHardLink(path.to_path_buf());
            let target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(bad)?;
            let parts = clean(&target)?;
            let (name, dirs) = parts.split_last().ok_or_else(bad)?;
            let dir = self.resolve(dirs, false, path)?.ok_or_else(bad)?;
            let source = self.root.join(dir.join(name));
            if !fs::symlink_metadata(&source).is_ok_and(|m| !m.is_dir()) {
                return Err(bad());
            }
            if source != full {
                remove(&full).map_err(werr)?;
                fs::hard_link(&source, &full).map_err(werr)?;
            }
            return Ok(false); // shares the source's inode and owner
        }
        Ok(false) // devices, FIFOs, and anything else
    }

    /// Deletes `name` (or, for `.wh..opq`, everything the layers below put)
    /// in the directory `parent`.
    fn whiteout(&mut self, parent: &Path, name: &str, written: &HashSet<PathBuf>) -> Result<()> {
        let werr = |source| UnpackError::Write {
            path: parent.join(name),
            source,
        };
        if name == ".wh..opq" {
            return self.make_opaque(parent, written);
        }
        if name.starts_with(".wh.")
            || name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
        {
            return Ok(()); // other AUFS metadata
        }
        let full = self.root.join(parent).join(name);
        remove(&full).map_err(werr)
    }

    /// Removes what the layers below put under `dir`: everything this layer
    /// has not written.
    fn make_opaque(&mut self, dir: &Path, written: &HashSet<PathBuf>) -> Result<()> {
        let full = self.root.join(dir);
        let werr = |source| UnpackError::Write {
            path: dir.to_path_buf(),
            source,
        };
        let children = match fs::read_dir(&full) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(werr(e)),
        };
        for child in children {
            let child = child.map_err(werr)?;
            let rel = dir.join(child.file_name());
            if !written.contains(&rel) {
                remove(&child.path()).map_err(werr)?;
            } else if child.file_type().is_ok_and(|t| t.is_dir()) {
                self.make_opaque(&rel, written)?;
            }
        }
        Ok(())
    }

    /// The real directory (relative to the root, every component a
    /// directory) that `parts` names inside the root, following symbolic
    /// links within it. Missing directories are created when `create`,
    /// else the answer is `None`.
    fn resolve(&self, parts: &[OsString], create: bool, member: &Path) -> Result<Option<PathBuf>> {
        let mut real: Vec<OsString> = Vec::new();
        let mut todo: std::collections::VecDeque<OsString> = parts.iter().cloned().collect();
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            if part == ".." {
                real.pop();
                continue;
            }
            if part == "." || part.is_empty() {
                continue;
            }
            let here: PathBuf = real.iter().chain(std::iter::once(&part)).collect();
            let full = self.root.join(&here);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => real.push(part),
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(UnpackError::LinkLoop(member.to_path_buf()));
                    }
                    let target = fs::read_link(&full).map_err(|source| UnpackError::Write {
                        path: member.to_path_buf(),
                        source,
                    })?;
                    if target.is_absolute() {
                        real.clear();
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(p) => todo.push_front(p.to_os_string()),
                            Component::ParentDir => todo.push_front("..".into()),
                            _ => {}
                        }
                    }
                }
                Ok(_) => return Err(UnpackError::NotADirectory(member.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    make_dir(&full).map_err(|source| UnpackError::Write {
                        path: member.to_path_buf(),
                        source,
                    })?;
                    real.push(part);
                }
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(real.iter().collect()))
    }
}

/// The member's path as components: `.` and a leading `/` dropped, `..`
/// refused.
fn clean(path: &Path) -> Result<Vec<OsString>> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::Escapes(path.to_path_buf()))
            }
        }
    }
    Ok(parts)
}

/// Records `rel` and its ancestors as written by the current layer.
fn mark_written(written: &mut HashSet<PathBuf>, rel: &Path) {
    let mut p = Some(rel);
    while let Some(path) = p.filter(|p| !p.as_os_str().is_empty()) {
        if !written.insert(path.to_path_buf()) {
            break;
        }
        p = path.parent();
    }
}

/// A directory we can fill (its real mode comes at the end).
fn make_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

/// Removes whatever is at `path` (a directory with its contents; a symbolic
/// link itself, never its target); nothing there is fine.
fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Our own tree: make it writable all the way down first.
            make_writable(path);
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(children) = fs::read_dir(dir) {
        for c in children.flatten() {
            if c.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&c.path());
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        UnpackError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
