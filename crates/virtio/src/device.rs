//! What a virtio device is to its transport: the [`VirtioDevice`] trait
//! (identity, offered features, config space, activation with the queues
//! the driver set up, queue kicks, reset) and the [`Interrupt`] a device
//! raises used-buffer and config-change notifications through.

use crate::queue::{QueueError, Segment};
use hypervisor::DmaObserver;
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Where a device reports the guest RAM it wrote, for engines that must
/// know ([`hypervisor::Vm::dma_observer`]: the soft engine drops decoded
/// code the write replaced). Empty when nobody listens.
#[derive(Clone, Default)]
pub struct DmaNotify(Option<Arc<dyn DmaObserver>>);

impl DmaNotify {
    pub fn new(observer: Option<Arc<dyn DmaObserver>>) -> Self {
        DmaNotify(observer)
    }

    /// `len` bytes at `addr` were written.
    pub fn written(&self, addr: GuestAddress, len: u64) {
        if let Some(o) = &self.0 {
            o.written(addr.0, len);
        }
    }

    /// The device wrote into `segs` (all of them are reported: a few
    /// bytes too many cost a re-decode at most).
    pub fn segments(&self, segs: &[Segment]) {
        for s in segs {
            self.written(s.addr, u64::from(s.len));
        }
    }
}

/// Notifications a device sends to the driver.
pub trait Interrupt: Send + Sync {
    /// Buffers were put in the used ring of `queue`.
    fn signal_used_queue(&self, queue: u16);
    /// The configuration space changed (or the device needs a reset).
    fn signal_config_change(&self);
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {0} is not usable")]
    BadQueue(usize),
    #[error("device backend failed")]
    Backend(#[source] std::io::Error),
}

/// Everything a device receives when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    /// One per queue the device declared, in order; a queue the driver did
    /// not enable is not `ready()`.
    pub queues: Vec<Queue>,
    /// The features both sides agreed on.
    pub features: u64,
    pub interrupt: Arc<dyn Interrupt>,
    /// Where to report writes into guest RAM.
    pub dma: DmaNotify,
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID ([`crate::device_type`]).
    fn device_type(&self) -> u32;
    /// The largest size of each queue; the count is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers (including [`crate::features::VERSION_1`]).
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space at `offset`; bytes
    /// past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the configuration space; most devices ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Starts serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// The driver kicked `queue`: process what is available. An error
    /// means the driver broke the queue protocol; the transport then marks
    /// the device NEEDS_RESET and stops calling it until reset.
    fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError>;
    /// Back to the state before activation (the driver wrote status 0).
    fn reset(&mut self);
    /// Work that arrives from outside the guest (a TAP fd became readable,
    /// a timer fired): `token` is what the device registered. Same error
    /// contract as [`VirtioDevice::queue_notify`].
    fn handle_event(&mut self, token: u32) -> Result<(), QueueError> {
        let _ = token;
        Ok(())
    }
}

/// Copies `src` (a device's config structure) at `offset` into `data`,
/// zero past the end: the usual body of [`VirtioDevice::read_config`].
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| src.get(at))
            .copied()
            .unwrap_or(0);
    }
}
