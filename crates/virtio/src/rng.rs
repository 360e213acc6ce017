//! virtio-rng (entropy device, type 4): one request queue whose
//! device-writable buffers are filled from the host's `getrandom`.

mod device;
mod handler;
pub mod metrics;
pub mod persist;

pub use device::Rng;
