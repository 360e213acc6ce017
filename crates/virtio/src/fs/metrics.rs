//! Counters of a shared directory.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct FsMetrics {
    /// FUSE requests taken off either queue.
    pub requests: AtomicU64,
    /// Requests the filter answered itself (unknown opcode, write to a
    /// read-only share, oversized message).
    pub refused: AtomicU64,
    /// Requests the FUSE server could not decode or answer.
    pub server_errors: AtomicU64,
}
