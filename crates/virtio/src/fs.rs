//! virtio-fs (type 26): a host directory shared with the guest. The guest
//! kernel speaks FUSE over two queues (hiprio for FORGET/INTERRUPT, one
//! request queue); the requests are served in-process by
//! `fuse-backend-rs`'s `Server` over its `PassthroughFs`, which reaches
//! the host only through `O_PATH` descriptors and `openat` relative to the
//! shared directory, so nothing the guest names is resolved against the
//! host's `/`. [`filter`] screens every request first: unknown opcodes
//! are refused, and on a read-only share every request that could change
//! the tree gets `EROFS` from the device itself.

mod device;
pub mod filter;
mod handler;
pub mod metrics;

pub use device::{Fs, FsConfig, FsError, HIPRIO, QUEUE_SIZE, REQUEST, TAG_MAX};
pub use handler::MAX_MESSAGE;

#[cfg(test)]
mod tests;
