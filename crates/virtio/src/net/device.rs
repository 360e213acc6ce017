//! The network device: MAC and link status in the configuration space,
//! the offered offload features, the backend frames go to (a TAP, or
//! anything implementing [`NetBackend`] in tests), and the receive and
//! transmit rate limiters a [`NetHandle`] changes while it runs.

use super::handle::NetHandle;
use super::metrics::NetMetrics;
use super::tap::{Tap, TapError, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};
use crate::device::{
    read_config_bytes, ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice,
};
use crate::queue::{Chain, QueueError};
use crate::{device_type, features};
use rate_limiter::{RateLimiter, RateLimiterConfig, RateLimiterError, SharedRateLimiter};
use std::os::fd::RawFd;
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

pub const QUEUE_SIZE: u16 = 256;
pub const RX: u16 = 0;
pub const TX: u16 = 1;
/// Event token for "the backend has frames".
pub const TOKEN_RX: u32 = 0;
/// Event tokens of the receive and transmit rate limiters' timers.
pub const TOKEN_RX_RATE_LIMIT: u32 = 1;
pub const TOKEN_TX_RATE_LIMIT: u32 = 2;

/// Net feature bits.
pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_GUEST_ECN: u64 = 1 << 9;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_HOST_ECN: u64 = 1 << 13;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_STATUS: u64 = 1 << 16;

/// How the user asked for a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Name of the host TAP interface (created if absent).
    pub tap: String,
    /// Guest MAC address; a fixed locally administered one when absent.
    pub mac: Option<[u8; 6]>,
    /// The name the VMM finds the interface by (Firecracker's `iface_id`).
    pub id: Option<String>,
    /// Limits on frames the guest receives (bytes and frames per second).
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Limits on frames the guest sends.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl NetConfig {
    /// An unlimited interface on TAP `tap` with the default MAC.
    pub fn new(tap: impl Into<String>) -> Self {
        NetConfig {
            tap: tap.into(),
            mac: None,
            id: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }
}

/// The default MAC: locally administered, unicast.
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("bad network rate limiter")]
    RateLimiter(#[from] RateLimiterError),
}

/// Where frames (each with its 12-byte virtio-net header) go and come from.
pub trait NetBackend: Send {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize>;
    fn set_offload(&mut self, tun_flags: u32) -> std::io::Result<()>;
    /// Whether frames may carry partial checksums and GSO segments (a
    /// TAP's do; a plain Ethernet stream's cannot).
    fn offloads(&self) -> bool {
        true
    }
    fn fd(&self) -> Option<RawFd>;
}

impl NetBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Tap::recv(self, buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        Tap::send(self, frame)
    }
    fn set_offload(&mut self, flags: u32) -> std::io::Result<()> {
        Tap::set_offload(self, flags).map_err(std::io::Error::other)
    }
    fn fd(&self) -> Option<RawFd> {
        Some(Tap::fd(self))
    }
}

pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub dma: DmaNotify,
    pub rx: Queue,
    pub tx: Queue,
    pub interrupt: Arc<dyn Interrupt>,
    pub mergeable: bool,
    /// Receive chains taken off the ring but not yet filled.
    pub rx_held: Vec<Chain>,
}

pub struct Net {
    pub(super) backend: Box<dyn NetBackend>,
    config: Vec<u8>,
    pub(super) active: Option<Active>,
    /// A frame read from the backend that did not fit the guest's buffers
    /// yet, and whether its receive tokens are taken already.
    pub(super) rx_pending: Option<(Vec<u8>, bool)>,
    pub(super) rx_limiter: SharedRateLimiter,
    pub(super) tx_limiter: SharedRateLimiter,
    pub metrics: Arc<NetMetrics>,
}

impl Net {
    pub fn new(cfg: &NetConfig, _mem: GuestMemoryMmap) -> Result<Self, NetError> {
        let limiter = |c: Option<RateLimiterConfig>| {
            RateLimiter::new(&c.unwrap_or_default()).map(SharedRateLimiter::new)
        };
        let rx = limiter(cfg.rx_rate_limiter)?;
        let tx = limiter(cfg.tx_rate_limiter)?;
        let tap = Tap::open(&cfg.tap)?;
        Ok(
            Self::with_backend(Box::new(tap), cfg.mac.unwrap_or(DEFAULT_MAC))
                .with_rate_limiters(rx, tx),
        )
    }

    /// Uses `rx` and `tx` (replacing the unlimited ones of `with_backend`).
    pub fn with_rate_limiters(mut self, rx: SharedRateLimiter, tx: SharedRateLimiter) -> Self {
        self.rx_limiter = rx;
        self.tx_limiter = tx;
        self
    }

    /// What the VMM keeps to change this interface while it runs.
    pub fn handle(&self) -> NetHandle {
        NetHandle::new(
            self.rx_limiter.clone(),
            self.tx_limiter.clone(),
            self.metrics.clone(),
        )
    }

    pub fn with_backend(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        let mut config = vec![0u8; 12];
        config[..6].copy_from_slice(&mac);
        // Link up.
        config[6..8].copy_from_slice(&1u16.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&1500u16.to_le_bytes());
        Net {
            backend,
            config,
            active: None,
            rx_pending: None,
            rx_limiter: SharedRateLimiter::default(),
            tx_limiter: SharedRateLimiter::default(),
            metrics: Arc::new(NetMetrics::default()),
        }
    }

    /// File descriptors the event loop watches, with their tokens.
    pub fn event_fds(&self) -> Vec<(RawFd, u32)> {
        let rx = self.rx_limiter.fd().map(|fd| (fd, TOKEN_RX_RATE_LIMIT));
        let tx = self.tx_limiter.fd().map(|fd| (fd, TOKEN_TX_RATE_LIMIT));
        let tap = self.backend.fd().map(|fd| (fd, TOKEN_RX));
        tap.into_iter().chain(rx).chain(tx).collect()
    }
}

/// TAP receive offloads matching what the guest accepts.
fn tun_offloads(f: u64) -> u32 {
    let mut t = 0;
    if f & F_GUEST_CSUM != 0 {
        t |= TUN_F_CSUM;
        if f & F_GUEST_TSO4 != 0 {
            t |= TUN_F_TSO4;
        }
        if f & F_GUEST_TSO6 != 0 {
            t |= TUN_F_TSO6;
        }
        if f & F_GUEST_ECN != 0 && t & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
            t |= TUN_F_TSO_ECN;
        }
    }
    t
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let base = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | F_MAC
            | F_MRG_RXBUF
            | F_STATUS;
        if !self.backend.offloads() {
            return base;
        }
        base | F_CSUM
            | F_GUEST_CSUM
            | F_GUEST_TSO4
            | F_GUEST_TSO6
            | F_GUEST_ECN
            | F_HOST_TSO4
            | F_HOST_TSO6
            | F_HOST_ECN
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        self.backend
            .set_offload(tun_offloads(a.features))
            .map_err(ActivateError::Backend)?;
        let mut queues = a.queues.into_iter();
        let rx = queues.next().ok_or(ActivateError::BadQueue(0))?;
        let tx = queues.next().ok_or(ActivateError::BadQueue(1))?;
        // Waits left over from before a reset would never be woken: the
        // transport drops timer events while the device is inactive.
        self.rx_limiter.lock().event_handled();
        self.tx_limiter.lock().event_handled();
        self.active = Some(Active {
            mem: a.mem,
            dma: a.dma,
            rx,
            tx,
            interrupt: a.interrupt,
            mergeable: a.features & F_MRG_RXBUF != 0,
            rx_held: Vec::new(),
        });
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError> {
        match queue {
            RX => self.process_rx(),
            TX => self.process_tx(),
            q => Err(QueueError::NoSuchQueue(q)),
        }
    }

    fn handle_event(&mut self, token: u32) -> Result<(), QueueError> {
        match token {
            TOKEN_RX => self.process_rx(),
            TOKEN_RX_RATE_LIMIT => {
                self.rx_limiter.lock().event_handled();
                self.process_rx()
            }
            TOKEN_TX_RATE_LIMIT => {
                self.tx_limiter.lock().event_handled();
                self.process_tx()
            }
            _ => Ok(()),
        }
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx_pending = None;
    }
}
