//! The initramfs archive: a writer and a reader for the "newc" cpio format
//! (ASCII headers, magic `070701`) that the Linux kernel unpacks. Written by
//! hand because the format is ~30 lines each way and we need device nodes,
//! symlinks and reproducible output (mtime 0, sequential inode numbers),
//! which a generic archiver would make us fight for.

use std::io::{self, Write};

use crate::tree::{Entry, Node, Tree, TreeError};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFMT: u32 = 0o170000;

/// Errors from reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("archive truncated at byte {0}")]
    Truncated(usize),
    #[error("bad cpio magic at byte {0}")]
    BadMagic(usize),
    #[error("bad hex field in header at byte {0}")]
    BadField(usize),
    #[error("unsupported file type {mode:o} for {path:?}")]
    UnsupportedType { path: String, mode: u32 },
    #[error("name is not utf-8 at byte {0}")]
    BadName(usize),
    #[error("archive has no trailer")]
    NoTrailer,
    #[error("bad entry")]
    Tree(#[from] TreeError),
}

/// Writes `tree` as an uncompressed newc archive.
pub fn write_newc(tree: &Tree, out: &mut impl Write) -> io::Result<()> {
    let mut ino: u32 = 1;
    for (path, entry) in tree.iter() {
        write_entry(out, ino, path, entry)?;
        ino = ino.wrapping_add(1);
    }
    write_header(out, 0, 0, 1, 0, (0, 0), TRAILER)
}

fn write_entry(out: &mut impl Write, ino: u32, path: &str, entry: &Entry) -> io::Result<()> {
    let perm = entry.mode & 0o7777;
    let (kind, data, rdev, nlink): (u32, &[u8], (u32, u32), u32) = match &entry.node {
        Node::Dir => (S_IFDIR, &[], (0, 0), 2),
        Node::File(d) => (S_IFREG, d, (0, 0), 1),
        Node::Symlink(t) => (S_IFLNK, t.as_bytes(), (0, 0), 1),
        Node::CharDev { major, minor } => (S_IFCHR, &[], (*major, *minor), 1),
    };
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB in cpio"))?;
    write_header(out, ino, kind | perm, nlink, size, rdev, path)?;
    out.write_all(data)?;
    out.write_all(&[0u8; 3][..pad4(data.len())])
}

fn write_header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0, // uid: root
        0, // gid: root
        nlink,
        0, // mtime: fixed, so archives are reproducible
        size,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        u32::try_from(namesize)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?,
        0, // check
    ];
    out.write_all(MAGIC)?;
    for f in fields {
        write!(out, "{f:08x}")?;
    }
    out.write_all(name.as_bytes())?;
    out.write_all(&[0u8; 4][..1 + pad4(HEADER_LEN + namesize)])
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Parses a newc archive back into a tree (used to check what we wrote and
/// to turn the initramfs into a disk image). Stops at the trailer.
pub fn parse_newc(data: &[u8]) -> Result<Tree, CpioError> {
    let mut tree = Tree::new();
    let mut pos = 0usize;
    loop {
        let header = slice(data, pos, HEADER_LEN)?;
        if &header[..6] != MAGIC {
            return Err(CpioError::BadMagic(pos));
        }
        let field = |i: usize| -> Result<u32, CpioError> {
            let start = 6 + i * 8;
            let text = std::str::from_utf8(&header[start..start + 8])
                .map_err(|_| CpioError::BadField(pos))?;
            u32::from_str_radix(text, 16).map_err(|_| CpioError::BadField(pos))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_start = pos + HEADER_LEN;
        let name_bytes = slice(data, name_start, namesize)?;
        let name = name_bytes
            .split_last()
            .filter(|(nul, _)| **nul == 0)
            .map(|(_, n)| n)
            .ok_or(CpioError::BadName(name_start))?;
        let name = std::str::from_utf8(name).map_err(|_| CpioError::BadName(name_start))?;
        let data_start = name_start + namesize + pad4(HEADER_LEN + namesize);
        let body = slice(data, data_start, size)?;
        pos = data_start + size + pad4(size);
        if name == TRAILER {
            return Ok(tree);
        }
        if name == "." {
            continue;
        }
        let perm = mode & 0o7777;
        let node = match mode & S_IFMT {
            S_IFDIR => {
                tree.add_dir(name)?;
                continue;
            }
            S_IFREG => Node::File(body.to_vec()),
            S_IFLNK => Node::Symlink(
                String::from_utf8(body.to_vec()).map_err(|_| CpioError::BadName(data_start))?,
            ),
            S_IFCHR => Node::CharDev {
                major: rdev.0,
                minor: rdev.1,
            },
            _ => {
                return Err(CpioError::UnsupportedType {
                    path: name.to_string(),
                    mode,
                })
            }
        };
        tree.add(name, perm, node)?;
        if pos >= data.len() {
            return Err(CpioError::NoTrailer);
        }
    }
}

fn slice(data: &[u8], start: usize, len: usize) -> Result<&[u8], CpioError> {
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .ok_or(CpioError::Truncated(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.add_file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap();
        t.add_file("bin/busybox", 0o755, vec![0x7f, b'E', b'L', b'F', 9])
            .unwrap();
        t.add_symlink("bin/sh", "busybox").unwrap();
        t.add("dev/console", 0o600, Node::CharDev { major: 5, minor: 1 })
            .unwrap();
        t.add_file("empty", 0o644, Vec::new()).unwrap();
        t.add_dir("proc").unwrap();
        t
    }

    #[test]
    fn round_trip_gives_back_the_same_tree() {
        let t = sample();
        let mut out = Vec::new();
        write_newc(&t, &mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        assert_eq!(parse_newc(&out).unwrap(), t);
    }

    #[test]
    fn header_layout_matches_newc() {
        let mut t = Tree::new();
        t.add_file("ab", 0o644, b"xyz".to_vec()).unwrap();
        let mut out = Vec::new();
        write_newc(&t, &mut out).unwrap();
        assert_eq!(&out[..6], b"070701");
        // mode field: regular file 0644
        assert_eq!(&out[14..22], b"000081a4");
        // filesize field
        assert_eq!(&out[54..62], b"00000003");
        // namesize 3 ("ab\0"): name ends at 113, padded to 116, then data.
        assert_eq!(&out[110..113], b"ab\0");
        assert_eq!(&out[116..119], b"xyz");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn cpio_tool_lists_our_archive_when_installed() {
        use std::process::{Command, Stdio};
        let mut out = Vec::new();
        write_newc(&sample(), &mut out).unwrap();
        let child = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("SKIPPED: cpio tool not installed");
            return;
        };
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let listed = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&listed.stdout);
        for name in ["init", "bin/busybox", "bin/sh", "dev/console", "proc"] {
            assert!(text.lines().any(|l| l == name), "{name} missing: {text}");
        }
    }

    #[test]
    fn truncated_and_garbage_input_are_errors_not_panics() {
        let mut out = Vec::new();
        write_newc(&sample(), &mut out).unwrap();
        for cut in [0, 5, 100, 111, 200, out.len() - 1] {
            assert!(parse_newc(&out[..cut]).is_err(), "cut {cut} parsed");
        }
        let mut bad = out.clone();
        bad[0] = b'x';
        assert!(matches!(parse_newc(&bad), Err(CpioError::BadMagic(0))));
        let mut huge = out.clone();
        huge[54..62].copy_from_slice(b"ffffffff");
        assert!(parse_newc(&huge).is_err());
    }
}
