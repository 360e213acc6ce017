//! virtio-vsock (type 19) with Firecracker's host side: guest stream
//! sockets (AF_VSOCK) are carried to and from host programs over Unix
//! sockets. A host program connects to the device's socket `uds_path`
//! and writes `CONNECT <port>\n` to reach the guest's listener on that
//! port; a guest connection to the host (CID 2) port P reaches the
//! program listening at `<uds_path>_P`. Credit-based flow control keeps
//! the device's buffering bounded both ways; a malformed packet resets
//! its connection, a malformed chain the device.

mod connection;
mod device;
mod handler;
mod host;
pub mod metrics;
pub mod packet;
mod unix;

pub use device::{Vsock, VsockConfig, VsockError, EVENT, QUEUE_SIZE, RX, TOKEN_HOST, TX};
pub use host::{HostError, MAX_CONNECTIONS};
