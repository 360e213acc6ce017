//! Counters of one vsock device.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct VsockMetrics {
    /// Packets and payload bytes put in the guest's receive queue.
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Packets and payload bytes taken from the guest's transmit queue.
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Guest packets dropped or answered with RST for a bad header.
    pub tx_bad_packets: AtomicU64,
    /// Connections made, by either side.
    pub conns_added: AtomicU64,
    /// Connections ended with a RST to the guest (errors, refusals).
    pub conns_reset: AtomicU64,
    /// Guest connections nothing on the host accepted.
    pub conns_refused: AtomicU64,
    /// Host programs dropped: bad `CONNECT` line or too many connections.
    pub host_rejected: AtomicU64,
    /// RSTs not sent because too many were already waiting.
    pub rst_dropped: AtomicU64,
}
