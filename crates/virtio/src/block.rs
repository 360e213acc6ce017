//! virtio-blk (type 2) backed by a raw image file: read, write, flush
//! (fdatasync on the host in writeback mode, not offered in unsafe mode),
//! GET_ID, discard and write-zeroes (hole punching / zero ranges where
//! the host file system allows), a read-only mode that fails every
//! modifying request with an I/O error status and never opens the file
//! for writing, optional O_DIRECT, a rate limiter, two I/O engines
//! (blocking system calls, or io_uring so a slow image does not stall the
//! queue), and a [`BlockHandle`] to change a running drive's limits or
//! image.
//! [`Image`] lends the same backend to the emulated NVMe and IDE disks.

mod device;
mod disk;
mod handle;
mod handler;
mod image;
mod lock;
pub mod metrics;
pub mod persist;
pub mod request;
mod uring;

pub use device::{
    Block, BlockConfig, BlockError, CacheType, IoEngine, TOKEN_IO_DONE, TOKEN_RATE_LIMIT,
};
pub use disk::{BOUNCE_BYTES, DIRECT_ALIGN};
pub use handle::BlockHandle;
pub use image::{Image, ImageError};
pub use lock::LockError;
pub use rate_limiter;
pub use uring::UringError;
