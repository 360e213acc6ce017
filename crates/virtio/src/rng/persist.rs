//! Snapshot state of the entropy device: nothing beyond the transport's
//! queue state, which the transport saves.

/// The device's own state (none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RngState;
