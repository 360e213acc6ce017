//! What the device answers before the FUSE server sees a request: FUSE
//! opcodes outside the set vessel serves are refused with `ENOSYS`, and on
//! a read-only share every request that could change the shared tree
//! (create, write, rename, unlink, chmod/chown/truncate through SETATTR,
//! xattrs, an OPEN for writing or truncating, ...) gets `EROFS`. The
//! device enforces read-only itself: a guest that remounts the share
//! read-write still cannot write.

/// Size of the FUSE request header (`struct fuse_in_header`).
pub const IN_HEADER_LEN: usize = 40;
/// Size of the FUSE reply header (`struct fuse_out_header`).
pub const OUT_HEADER_LEN: usize = 16;

/// FUSE opcodes (`enum fuse_opcode` in linux/fuse.h) the device handles.
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
}

/// Requests that only read the tree (or manage the session).
const READING: &[u32] = &[
    opcode::LOOKUP,
    opcode::FORGET,
    opcode::GETATTR,
    opcode::READLINK,
    opcode::OPEN,
    opcode::READ,
    opcode::STATFS,
    opcode::RELEASE,
    opcode::FSYNC,
    opcode::GETXATTR,
    opcode::LISTXATTR,
    opcode::FLUSH,
    opcode::INIT,
    opcode::OPENDIR,
    opcode::READDIR,
    opcode::RELEASEDIR,
    opcode::FSYNCDIR,
    opcode::GETLK,
    opcode::SETLK,
    opcode::SETLKW,
    opcode::ACCESS,
    opcode::INTERRUPT,
    opcode::DESTROY,
    opcode::BATCH_FORGET,
    opcode::READDIRPLUS,
    opcode::LSEEK,
];

/// Requests that change the tree: refused on a read-only share.
const WRITING: &[u32] = &[
    opcode::SETATTR,
    opcode::SYMLINK,
    opcode::MKNOD,
    opcode::MKDIR,
    opcode::UNLINK,
    opcode::RMDIR,
    opcode::RENAME,
    opcode::LINK,
    opcode::WRITE,
    opcode::SETXATTR,
    opcode::REMOVEXATTR,
    opcode::CREATE,
    opcode::FALLOCATE,
    opcode::RENAME2,
];

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the FUSE server.
    Serve,
    /// Answer with this errno (positive) without serving it.
    Refuse(i32),
}

/// The parts of a request header the filter and the reply need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads the header fields from the start of a request; `None` when the
/// request is shorter than a header.
pub fn header(request: &[u8]) -> Option<Header> {
    if request.len() < IN_HEADER_LEN {
        return None;
    }
    Some(Header {
        len: u32_at(request, 0)?,
        opcode: u32_at(request, 4)?,
        unique: u64_at(request, 8)?,
    })
}

/// Decides on `request` (the whole message the driver sent) for a share
/// that is read-only or not.
pub fn check(request: &[u8], read_only: bool) -> Verdict {
    let Some(h) = header(request) else {
        return Verdict::Refuse(libc::EINVAL);
    };
    if WRITING.contains(&h.opcode) {
        return if read_only {
            Verdict::Refuse(libc::EROFS)
        } else {
            Verdict::Serve
        };
    }
    if !READING.contains(&h.opcode) {
        return Verdict::Refuse(libc::ENOSYS);
    }
    if read_only && !reads_only(&h, request) {
        return Verdict::Refuse(libc::EROFS);
    }
    Verdict::Serve
}

/// Whether an OPEN or ACCESS request asks for no more than reading (other
/// reading opcodes always do). A body too short to tell is not reading.
fn reads_only(h: &Header, request: &[u8]) -> bool {
    match h.opcode {
        opcode::OPEN => u32_at(request, IN_HEADER_LEN).is_some_and(|flags| {
            let flags = flags as i32;
            flags & libc::O_ACCMODE == libc::O_RDONLY
                && flags & (libc::O_TRUNC | libc::O_CREAT | libc::O_APPEND) == 0
        }),
        opcode::ACCESS => {
            u32_at(request, IN_HEADER_LEN).is_some_and(|mask| mask as i32 & libc::W_OK == 0)
        }
        _ => true,
    }
}

/// A reply that carries only an error: `struct fuse_out_header` with
/// `-errno`.
pub fn error_reply(unique: u64, errno: i32) -> [u8; OUT_HEADER_LEN] {
    let mut out = [0u8; OUT_HEADER_LEN];
    out[0..4].copy_from_slice(&(OUT_HEADER_LEN as u32).to_le_bytes());
    out[4..8].copy_from_slice(&(-errno).to_le_bytes());
    out[8..16].copy_from_slice(&unique.to_le_bytes());
    out
}

/// Whether the driver expects no reply to this opcode.
pub fn has_no_reply(opcode: u32) -> bool {
    matches!(
        opcode,
        opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT | opcode::DESTROY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: u32, body: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; IN_HEADER_LEN];
        let len = (IN_HEADER_LEN + body.len()) as u32;
        r[0..4].copy_from_slice(&len.to_le_bytes());
        r[4..8].copy_from_slice(&op.to_le_bytes());
        r[8..16].copy_from_slice(&77u64.to_le_bytes());
        r.extend_from_slice(body);
        r
    }

    fn open(flags: i32) -> Vec<u8> {
        let mut body = (flags as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 4]);
        request(opcode::OPEN, &body)
    }

    #[test]
    fn read_only_refuses_every_write() {
        for &op in WRITING {
            assert_eq!(
                check(&request(op, &[0; 64]), true),
                Verdict::Refuse(libc::EROFS),
                "opcode {op}"
            );
            assert_eq!(check(&request(op, &[0; 64]), false), Verdict::Serve);
        }
        for flags in [
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_RDONLY | libc::O_TRUNC,
            libc::O_RDONLY | libc::O_APPEND,
            libc::O_RDONLY | libc::O_CREAT,
        ] {
            assert_eq!(check(&open(flags), true), Verdict::Refuse(libc::EROFS));
            assert_eq!(check(&open(flags), false), Verdict::Serve);
        }
        assert_eq!(check(&open(libc::O_RDONLY), true), Verdict::Serve);
        // OPEN without its body cannot show it only reads.
        assert_eq!(
            check(&request(opcode::OPEN, &[]), true),
            Verdict::Refuse(libc::EROFS)
        );
        let w_ok = (libc::W_OK as u32).to_le_bytes();
        assert_eq!(
            check(&request(opcode::ACCESS, &w_ok), true),
            Verdict::Refuse(libc::EROFS)
        );
        let r_ok = (libc::R_OK as u32).to_le_bytes();
        assert_eq!(check(&request(opcode::ACCESS, &r_ok), true), Verdict::Serve);
    }

    #[test]
    fn reading_requests_pass_and_unknown_ones_are_refused() {
        for &op in READING.iter().filter(|&&op| op != opcode::OPEN) {
            assert_eq!(check(&request(op, &[0; 8]), true), Verdict::Serve);
        }
        for op in [0, 7, 19, 39, 40, 41, 47, 48, 49, 50, 51, u32::MAX] {
            assert_eq!(
                check(&request(op, &[]), false),
                Verdict::Refuse(libc::ENOSYS),
                "opcode {op}"
            );
        }
        assert_eq!(check(&[0u8; 39], false), Verdict::Refuse(libc::EINVAL));
    }

    #[test]
    fn error_reply_is_a_fuse_out_header() {
        let r = error_reply(0x1122, libc::EROFS);
        assert_eq!(u32_at(&r, 0), Some(16));
        assert_eq!(u32_at(&r, 4).map(|e| e as i32), Some(-libc::EROFS));
        assert_eq!(u64_at(&r, 8), Some(0x1122));
        assert_eq!(
            header(&request(opcode::READ, &[])).map(|h| (h.opcode, h.unique)),
            Some((opcode::READ, 77))
        );
    }
}
