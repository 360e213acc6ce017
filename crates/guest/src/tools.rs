//! Host tools for benchmark guests: a second initramfs, kept in the cache
//! beside (never instead of) the default one, holding the default guest's
//! files plus host binaries such as `/usr/bin/fio` with every shared
//! library `ldd` lists and the dynamic loader, each at its host path. The
//! default guest's cache key is untouched; the second archive is keyed by
//! the default initramfs and the tools' paths, sizes and modification
//! times, so a new guest or an upgraded tool means a new archive.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tree::Tree;
use crate::{cpio, GuestImage, PrepareError};

/// Bumped when the archive's layout changes.
const TOOLS_RECIPE: u32 = 1;

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError {
    let path = path.to_path_buf();
    move |source| PrepareError::Io { what, path, source }
}

/// An initramfs with `image`'s files plus `tools` and their libraries,
/// built once into `<cache_dir()>/guest-tools/`. See [`bench_initramfs_in`].
pub fn bench_initramfs(image: &GuestImage, tools: &[PathBuf]) -> Result<PathBuf, PrepareError> {
    bench_initramfs_in(&crate::cache_dir(), image, tools)
}

/// Like [`bench_initramfs`] with an explicit cache root. Each tool must be
/// an absolute path to an executable; `ldd` (from libc-bin) resolves its
/// libraries.
pub fn bench_initramfs_in(
    cache_dir: &Path,
    image: &GuestImage,
    tools: &[PathBuf],
) -> Result<PathBuf, PrepareError> {
    let mut files = Vec::new();
    for tool in tools {
        if !tool.is_absolute() || !tool.is_file() {
            return Err(PrepareError::ToolMissing {
                tool: tool.display().to_string(),
                package: package_hint(tool),
            });
        }
        files.push(tool.clone());
        files.extend(shared_libraries(tool)?);
    }
    files.sort();
    files.dedup();
    let key = cache_key(&image.initramfs, &files)?;
    let dir = cache_dir.join("guest-tools");
    let out = dir.join(format!("{key}.cpio"));
    if out.is_file() {
        return Ok(out);
    }
    let data = fs::read(&image.initramfs).map_err(io_err("cannot read", &image.initramfs))?;
    let mut tree = cpio::parse_newc(&data).map_err(|source| PrepareError::BadInitramfs {
        path: image.initramfs.clone(),
        source,
    })?;
    drop(data);
    add_files(&mut tree, &files)?;
    fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    // Written under a temporary name and renamed, so a reader never sees
    // half an archive.
    let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let file = fs::File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    let mut w = BufWriter::new(file);
    cpio::write_newc(&tree, &mut w)
        .and_then(|()| w.flush())
        .map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, &out).map_err(io_err("cannot rename", &tmp))?;
    Ok(out)
}

fn package_hint(tool: &Path) -> String {
    tool.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Adds each host file, symlinks followed, at its own absolute path.
fn add_files(tree: &mut Tree, files: &[PathBuf]) -> Result<(), PrepareError> {
    for file in files {
        let data = fs::read(file).map_err(io_err("cannot read", file))?;
        let meta = fs::metadata(file).map_err(io_err("cannot stat", file))?;
        let path = file.to_string_lossy();
        tree.add_file(&path, meta.mode() & 0o755 | 0o444, data)?;
    }
    Ok(())
}

/// The libraries and loader `ldd` lists for `tool` (the vDSO skipped).
fn shared_libraries(tool: &Path) -> Result<Vec<PathBuf>, PrepareError> {
    let out = Command::new("ldd")
        .arg(tool)
        .output()
        .map_err(|_| PrepareError::ToolMissing {
            tool: "ldd".to_string(),
            package: "libc-bin".to_string(),
        })?;
    // A static binary makes ldd exit 1 with "not a dynamic executable":
    // it needs nothing more.
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

/// Absolute paths in `ldd` output: `name => /path (addr)` and
/// `/loader (addr)`; unresolved (`not found`) and the vDSO are skipped.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn cache_key(initramfs: &Path, files: &[PathBuf]) -> Result<String, PrepareError> {
    let mut h = DefaultHasher::new();
    TOOLS_RECIPE.hash(&mut h);
    for path in std::iter::once(initramfs).chain(files.iter().map(PathBuf::as_path)) {
        let meta = fs::metadata(path).map_err(io_err("cannot stat", path))?;
        path.hash(&mut h);
        meta.len().hash(&mut h);
        meta.mtime().hash(&mut h);
        meta.mtime_nsec().hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    #[test]
    fn ldd_output_gives_resolved_paths_only() {
        let text = "\tlinux-vdso.so.1 (0x00007f)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                    \tlibgone.so.1 => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn builds_once_with_the_tool_and_its_libraries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut base = Tree::new();
        base.add_file("init", 0o755, b"#!/bin/sh\n".to_vec())
            .expect("init");
        let initramfs = dir.path().join("initramfs.cpio");
        let mut bytes = Vec::new();
        cpio::write_newc(&base, &mut bytes).expect("cpio");
        fs::write(&initramfs, bytes).expect("write");
        let image = GuestImage {
            kernel_bzimage: dir.path().join("bzImage"),
            vmlinux: dir.path().join("vmlinux"),
            initramfs,
            kernel_release: "test".into(),
            default_cmdline: "console=ttyS0".into(),
        };
        let sh = PathBuf::from("/bin/sh");
        let cache = dir.path().join("cache");
        let out = bench_initramfs_in(&cache, &image, std::slice::from_ref(&sh)).expect("build");
        let tree = cpio::parse_newc(&fs::read(&out).expect("read")).expect("parse");
        assert!(tree.get("init").is_some());
        let Some(Node::File(data)) = tree.get("bin/sh").map(|e| &e.node) else {
            panic!("no bin/sh in the archive");
        };
        assert_eq!(data, &fs::read(&sh).expect("host sh"));
        let libs = shared_libraries(&sh).expect("ldd");
        assert!(!libs.is_empty(), "/bin/sh is dynamic on Debian");
        for lib in libs {
            let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
            assert!(tree.get(&rel).is_some(), "{rel} missing");
        }
        let again = bench_initramfs_in(&cache, &image, &[sh]).expect("cached");
        assert_eq!(again, out);
        assert!(bench_initramfs_in(&cache, &image, &[PathBuf::from("rel/fio")]).is_err());
    }
}
