//! An ext4 root disk holding the same userspace as the initramfs: the
//! archive is read back, written to a scratch directory and packed with
//! `mkfs.ext4 -d` (e2fsprogs), so no mount and no root are needed. The
//! image is written next to its final path and renamed into place.
//!
//! Booting it: keep the initramfs (virtio_blk is a module it loads) and add
//! `root=/dev/vda rw` (or `root=LABEL=vessel-root`; `ro` is the default):
//! the initramfs's /init mounts it, moves /dev, /proc, /sys and /run over
//! and `switch_root`s to its `/sbin/init`, the same script. Device nodes
//! are not in the image: /dev is devtmpfs.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::apt::find_tool;
use crate::cpio;
use crate::tree::Node;
use crate::{GuestImage, PrepareError};

/// Smallest image we make: the tree is ~10 MiB, ext4 needs room for its
/// own metadata and the journal.
const MIN_SIZE_MIB: u64 = 32;

/// Writes an ext4 image of `size_mib` MiB at `path` with the guest's
/// userspace (labelled `vessel-root`).
pub fn make_rootfs(image: &GuestImage, path: &Path, size_mib: u64) -> Result<(), PrepareError> {
    let mkfs = find_tool("mkfs.ext4").ok_or_else(|| PrepareError::ToolMissing {
        tool: "mkfs.ext4".into(),
        package: "e2fsprogs".into(),
    })?;
    let size_mib = size_mib.max(MIN_SIZE_MIB);
    let archive = fs::read(&image.initramfs).map_err(|source| PrepareError::Io {
        what: "cannot read",
        path: image.initramfs.clone(),
        source,
    })?;
    let mut tree = cpio::parse_newc(&archive).map_err(|source| PrepareError::BadInitramfs {
        path: image.initramfs.clone(),
        source,
    })?;
    tree.remove(crate::init::INITRAMFS_MARKER);
    // The kernel starts /sbin/init from a disk root.
    tree.add("sbin/init", 0o777, Node::Symlink("/init".into()))?;

    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let scratch = tempfile::Builder::new()
        .prefix(".vessel-rootfs-")
        .tempdir_in(&parent)
        .map_err(|source| PrepareError::Io {
            what: "cannot create a directory in",
            path: parent.clone(),
            source,
        })?;
    let tree_dir = scratch.path().join("root");
    fs::create_dir(&tree_dir).map_err(|source| PrepareError::Io {
        what: "cannot create",
        path: tree_dir.clone(),
        source,
    })?;
    tree.write_to_dir(&tree_dir)?;

    let tmp_image = scratch.path().join("image.ext4");
    let out = Command::new(mkfs)
        .args([
            "-q",
            "-F",
            "-L",
            "vessel-root",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&tree_dir)
        .arg(&tmp_image)
        .arg(format!("{size_mib}M"))
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| PrepareError::Io {
            what: "cannot run",
            path: "mkfs.ext4".into(),
            source,
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(PrepareError::Mkfs(line.trim().to_string()));
    }
    fs::rename(&tmp_image, path).map_err(|source| PrepareError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Tree;

    #[test]
    fn makes_an_ext4_image_with_the_tree() {
        if find_tool("mkfs.ext4").is_none() {
            eprintln!("SKIPPED: mkfs.ext4 not installed (e2fsprogs)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::new();
        tree.add_file("init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap();
        tree.add("dev/console", 0o600, Node::CharDev { major: 5, minor: 1 })
            .unwrap();
        let mut cpio_data = Vec::new();
        cpio::write_newc(&tree, &mut cpio_data).unwrap();
        let initramfs = dir.path().join("initramfs.cpio");
        fs::write(&initramfs, cpio_data).unwrap();
        let image = GuestImage {
            kernel_bzimage: dir.path().join("k"),
            vmlinux: dir.path().join("v"),
            initramfs,
            kernel_release: "x".into(),
            default_cmdline: String::new(),
        };
        let out = dir.path().join("root.ext4");
        make_rootfs(&image, &out, 1).unwrap();
        let data = fs::read(&out).unwrap();
        assert_eq!(data.len() as u64, MIN_SIZE_MIB << 20);
        // ext4 superblock magic 0xef53 at byte 1024 + 0x38.
        assert_eq!(&data[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
        if let Some(debugfs) = find_tool("debugfs") {
            let ls = Command::new(debugfs)
                .args(["-R", "ls -l /sbin"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&ls.stdout).contains("init"));
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".vessel-rootfs-")
            })
            .collect();
        assert!(leftovers.is_empty());
    }
}
