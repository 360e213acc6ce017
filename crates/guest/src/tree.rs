//! The guest's userspace as an in-memory file tree: directories, regular
//! files, symlinks and character devices, keyed by path. The initramfs
//! (cpio) and the ext4 root image are both written from one `Tree`, so the
//! two always hold the same files.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// What a path in the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// One path in the tree with its permission bits (`0o755`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub node: Node,
}

/// Errors from adding to or writing out a tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("bad path in tree: {0:?}")]
    BadPath(String),
    #[error("{path:?} is not a directory in the tree")]
    ParentNotDir { path: String },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A file tree. Paths are relative ("bin/busybox"), `/`-separated, without
/// `.` or `..` components. Iteration order is sorted, so every directory
/// comes before what it contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries in path order (parents first).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    /// Removes a path (and, for a directory, everything below it).
    pub fn remove(&mut self, path: &str) {
        let path = path.trim_start_matches('/');
        let below = format!("{path}/");
        self.entries
            .retain(|p, _| p != path && !p.starts_with(&below));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a directory and any missing parents (mode 0o755).
    pub fn add_dir(&mut self, path: &str) -> Result<(), TreeError> {
        let path = normalize(path)?;
        self.add_parents(&path)?;
        match self.entries.get(&path) {
            Some(Entry {
                node: Node::Dir, ..
            }) => Ok(()),
            Some(_) => Err(TreeError::ParentNotDir { path }),
            None => {
                self.entries.insert(
                    path,
                    Entry {
                        mode: 0o755,
                        node: Node::Dir,
                    },
                );
                Ok(())
            }
        }
    }

    /// Adds (or replaces) a non-directory entry, creating missing parents.
    pub fn add(&mut self, path: &str, mode: u32, node: Node) -> Result<(), TreeError> {
        let path = normalize(path)?;
        self.add_parents(&path)?;
        self.entries.insert(
            path,
            Entry {
                mode: mode & 0o7777,
                node,
            },
        );
        Ok(())
    }

    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), TreeError> {
        self.add(path, mode, Node::File(data))
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        self.add(path, 0o777, Node::Symlink(target.to_string()))
    }

    fn add_parents(&mut self, path: &str) -> Result<(), TreeError> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add_dir(parent)?;
        }
        Ok(())
    }

    /// Writes the tree below `root` (which must exist). Character devices
    /// are skipped: a disk root gets its /dev from devtmpfs.
    pub fn write_to_dir(&self, root: &Path) -> Result<(), TreeError> {
        for (path, entry) in self.iter() {
            let dest = root.join(path);
            let err = |source| TreeError::Write {
                path: path.to_string(),
                source,
            };
            match &entry.node {
                Node::Dir => fs::create_dir_all(&dest).map_err(err)?,
                Node::File(data) => fs::write(&dest, data).map_err(err)?,
                Node::Symlink(target) => symlink(target, &dest).map_err(err)?,
                Node::CharDev { .. } => continue,
            }
            if !matches!(entry.node, Node::Symlink(_)) {
                fs::set_permissions(&dest, fs::Permissions::from_mode(entry.mode)).map_err(err)?;
            }
        }
        Ok(())
    }
}

/// Checks and normalizes a tree path: strips leading `/`, rejects empty,
/// `.`/`..` components, NUL and empty components.
pub fn normalize(path: &str) -> Result<String, TreeError> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    let bad = p.is_empty()
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(TreeError::BadPath(path.to_string()));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = Tree::new();
        t.add_file("/lib/modules/x/a.ko", 0o644, vec![1]).unwrap();
        t.add_dir("lib-extra").unwrap();
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "lib",
                "lib-extra",
                "lib/modules",
                "lib/modules/x",
                "lib/modules/x/a.ko"
            ]
        );
        assert_eq!(t.get("/lib").unwrap().node, Node::Dir);
        t.remove("lib/modules");
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["lib", "lib-extra"]);
    }

    #[test]
    fn bad_paths_are_rejected() {
        let mut t = Tree::new();
        for p in ["", "/", "a/../b", "./a", "a//b", "a\0b"] {
            assert!(t.add_dir(p).is_err(), "{p:?} accepted");
        }
    }

    #[test]
    fn file_as_parent_is_an_error() {
        let mut t = Tree::new();
        t.add_file("a", 0o644, vec![]).unwrap();
        assert!(matches!(
            t.add_file("a/b", 0o644, vec![]),
            Err(TreeError::ParentNotDir { .. })
        ));
    }

    #[test]
    fn writes_files_links_and_modes_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tree::new();
        t.add_file("bin/x", 0o755, b"hi".to_vec()).unwrap();
        t.add_symlink("bin/y", "x").unwrap();
        t.add("dev/console", 0o600, Node::CharDev { major: 5, minor: 1 })
            .unwrap();
        t.write_to_dir(dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("bin/y")).unwrap(), b"hi");
        let mode = fs::metadata(dir.path().join("bin/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!dir.path().join("dev/console").exists());
        assert!(dir.path().join("dev").is_dir());
    }
}
