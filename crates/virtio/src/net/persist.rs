//! Snapshot state of a network device: the TAP name and MAC. Frames in
//! flight are not saved (the network may drop them anyway).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetState {
    pub tap: String,
    pub mac: [u8; 6],
}
