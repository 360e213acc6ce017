//! virtio-blk (type 2) backed by a raw image file: read, write, flush
//! (fdatasync on the host), GET_ID, discard and write-zeroes (hole
//! punching / zero ranges where the host file system allows), and a
//! read-only mode that fails every modifying request with an I/O error
//! status and never opens the file for writing.

mod device;
mod handler;
pub mod metrics;
pub mod persist;
pub mod request;

pub use device::{Block, BlockConfig, BlockError};
