//! The entropy device: no configuration space, no device features.

use super::metrics::RngMetrics;
use crate::device::{ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice};
use crate::queue::QueueError;
use crate::{device_type, features};
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

pub const QUEUE_SIZE: u16 = 256;

/// Queues and memory once the driver activated the device.
pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub dma: DmaNotify,
    pub queue: Queue,
    pub interrupt: Arc<dyn Interrupt>,
}

#[derive(Default)]
pub struct Rng {
    pub(super) active: Option<Active>,
    pub metrics: Arc<RngMetrics>,
}

impl Rng {
    pub fn new() -> Self {
        Rng::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let queue = a
            .queues
            .into_iter()
            .next()
            .ok_or(ActivateError::BadQueue(0))?;
        self.active = Some(Active {
            mem: a.mem,
            dma: a.dma,
            queue,
            interrupt: a.interrupt,
        });
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError> {
        match queue {
            0 => self.process_queue(),
            q => Err(QueueError::NoSuchQueue(q)),
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
