//! Snapshot state of a block device: which image and how it was opened.
//! Queue state belongs to the transport; requests are served synchronously,
//! so none are ever in flight when a snapshot is taken.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockState {
    pub path: PathBuf,
    pub readonly: bool,
    pub sectors: u64,
}
