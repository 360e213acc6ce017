//! Snapshot state of a block device: which image and how it was opened.
//! Queue state belongs to the transport. The Sync engine serves requests
//! synchronously, so none is in flight when a snapshot is taken; with the
//! Async engine requests in flight must finish first (the ring is drained
//! on reset and drop).

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockState {
    pub path: PathBuf,
    pub readonly: bool,
    pub sectors: u64,
}
