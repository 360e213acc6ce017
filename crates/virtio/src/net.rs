//! virtio-net (type 1) backed by a host TAP device opened with a 12-byte
//! virtio-net header, so the header the guest writes goes to the host
//! kernel as is and the host's header comes back the same way: checksum
//! and segmentation offloads pass straight through (the TAP's receive
//! offloads follow what the guest negotiated). Mergeable receive buffers
//! let a 64 KiB segment span several guest pages. Receive and transmit
//! each have a rate limiter, changed while running through a [`NetHandle`].
//! Instead of a TAP, a stream socket to passt (user-mode networking) can
//! carry the frames ([`stream`]), without offloads.

mod device;
mod handle;
mod handler;
pub mod metrics;
pub mod persist;
pub mod stream;
pub mod tap;

pub use device::{
    Net, NetBackend, NetConfig, NetError, DEFAULT_MAC, TOKEN_RX, TOKEN_RX_RATE_LIMIT,
    TOKEN_TX_RATE_LIMIT,
};
pub use handle::NetHandle;
