//! virtio-balloon (type 5): the guest gives pages back when the target
//! (`num_pages`) rises (inflate queue: the host drops them with
//! MADV_DONTNEED) and takes them back when it falls (deflate queue); the
//! statistics queue reports the guest's memory figures.

mod device;
mod handle;
mod handler;
pub mod metrics;
pub mod persist;

pub use device::{Balloon, BalloonConfig, BalloonStats};
pub use handle::BalloonHandle;
