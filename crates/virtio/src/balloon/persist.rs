//! Snapshot state of the balloon: target and the driver's reported size.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BalloonState {
    pub num_pages: u32,
    pub actual: u32,
}
