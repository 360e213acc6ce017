//! The vsock device: the guest's context ID in the configuration space,
//! three queues (receive, transmit, event), and the host side the
//! packets go to ([`Host`]).

use super::host::{Host, HostError};
use super::metrics::VsockMetrics;
use super::packet::MAX_PAYLOAD;
use crate::device::{
    read_config_bytes, ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice,
};
use crate::queue::{Chain, QueueError};
use crate::{device_type, features};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

pub const QUEUE_SIZE: u16 = 256;
pub const RX: u16 = 0;
pub const TX: u16 = 1;
pub const EVENT: u16 = 2;
/// Event token for "a host fd has news" (the device's epoll fd).
pub const TOKEN_HOST: u32 = 0;

/// How the user asked for the device (Firecracker's `vsock` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID: 3 or more.
    pub guest_cid: u32,
    /// Where host programs connect; guest connections to port P go to
    /// `<uds_path>_P`.
    pub uds_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest cid {0} is reserved: use a cid of 3 or more (and below 4294967295)")]
    ReservedCid(u32),
    #[error(transparent)]
    Host(#[from] HostError),
}

pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub dma: DmaNotify,
    pub rx: Queue,
    pub tx: Queue,
    pub interrupt: Arc<dyn Interrupt>,
    /// A receive chain taken off the ring that nothing was ready for.
    pub rx_held: Option<Chain>,
}

pub struct Vsock {
    config: [u8; 8],
    pub(super) host: Host,
    pub(super) active: Option<Active>,
    /// One packet's payload either way.
    pub(super) buf: Vec<u8>,
    pub metrics: Arc<VsockMetrics>,
}

impl Vsock {
    /// Listens at the configured `uds_path` at once, so host programs can
    /// connect before the guest's driver is up.
    pub fn new(cfg: &VsockConfig) -> Result<Vsock, VsockError> {
        // 0-2 are the hypervisor, local and host; u32::MAX is "any".
        if cfg.guest_cid < 3 || cfg.guest_cid == u32::MAX {
            return Err(VsockError::ReservedCid(cfg.guest_cid));
        }
        let cid = u64::from(cfg.guest_cid);
        let metrics = Arc::new(VsockMetrics::default());
        Ok(Vsock {
            config: cid.to_le_bytes(),
            host: Host::new(cid, &cfg.uds_path, metrics.clone())?,
            active: None,
            buf: vec![0; MAX_PAYLOAD as usize],
            metrics,
        })
    }

    /// File descriptors the event loop watches, with their tokens: one,
    /// the device's epoll fd, whatever the connections.
    pub fn event_fds(&self) -> Vec<(RawFd, u32)> {
        vec![(self.host.epoll_fd(), TOKEN_HOST)]
    }

    /// Open connections (for tests and metrics).
    pub fn connections(&self) -> usize {
        self.host.connections()
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let mut queues = a.queues.into_iter();
        let rx = queues.next().ok_or(ActivateError::BadQueue(0))?;
        let tx = queues.next().ok_or(ActivateError::BadQueue(1))?;
        // The event queue is only for a transport reset after a snapshot
        // restore, which vessel does not do yet: nothing is ever put there.
        queues.next().ok_or(ActivateError::BadQueue(2))?;
        self.active = Some(Active {
            mem: a.mem,
            dma: a.dma,
            rx,
            tx,
            interrupt: a.interrupt,
            rx_held: None,
        });
        // Host programs that came while the driver was not ready are
        // still in the device's epoll: their events reached nobody.
        self.host.serve_host_events();
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError> {
        match queue {
            RX => self.process_rx(),
            TX => {
                self.process_tx()?;
                self.process_rx()
            }
            EVENT => Ok(()),
            q => Err(QueueError::NoSuchQueue(q)),
        }
    }

    fn handle_event(&mut self, token: u32) -> Result<(), QueueError> {
        match token {
            TOKEN_HOST => {
                self.host.serve_host_events();
                self.process_rx()
            }
            _ => Ok(()),
        }
    }

    fn reset(&mut self) {
        self.active = None;
        self.host.reset();
    }
}
