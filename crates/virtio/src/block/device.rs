//! The block device: the image file, its size in sectors, the offered
//! features (read-only, flush, discard and write-zeroes) and the
//! configuration space the driver reads them from.

use super::metrics::BlockMetrics;
use super::request::{ID_BYTES, SECTOR_SIZE};
use crate::device::{
    read_config_bytes, ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice,
};
use crate::queue::QueueError;
use crate::{device_type, features};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

pub const QUEUE_SIZE: u16 = 256;
/// Most data buffers per request (the descriptor table minus header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most ranges in one discard or write-zeroes request.
pub const MAX_RANGES: u32 = 32;
/// Most sectors in one discard/write-zeroes range (2 GiB).
pub const MAX_RANGE_SECTORS: u32 = 1 << 22;

/// Block feature bits.
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// How the user asked for a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    pub path: PathBuf,
    pub readonly: bool,
    /// GET_ID answer (at most 20 bytes are used).
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk image {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the size of disk image {path}")]
    Size {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub dma: DmaNotify,
    pub queue: Queue,
    pub interrupt: Arc<dyn Interrupt>,
}

pub struct Block {
    pub(super) file: File,
    pub(super) sectors: u64,
    pub(super) readonly: bool,
    pub(super) id: [u8; ID_BYTES],
    config: Vec<u8>,
    pub(super) active: Option<Active>,
    pub metrics: Arc<BlockMetrics>,
}

fn open(path: &Path, readonly: bool) -> Result<File, BlockError> {
    OpenOptions::new()
        .read(true)
        .write(!readonly)
        .open(path)
        .map_err(|source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl Block {
    pub fn new(cfg: &BlockConfig) -> Result<Self, BlockError> {
        let file = open(&cfg.path, cfg.readonly)?;
        let len = file
            .metadata()
            .map_err(|source| BlockError::Size {
                path: cfg.path.clone(),
                source,
            })?
            .len();
        Ok(Self::from_file(
            file,
            len / SECTOR_SIZE,
            cfg.readonly,
            cfg.id.as_deref(),
        ))
    }

    /// A device over an open file of `sectors` sectors.
    pub fn from_file(file: File, sectors: u64, readonly: bool, id: Option<&str>) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        if let Some(id) = id {
            for (d, s) in id_bytes.iter_mut().zip(id.bytes()) {
                *d = s;
            }
        }
        Block {
            file,
            sectors,
            readonly,
            id: id_bytes,
            config: config_space(sectors),
            active: None,
            metrics: Arc::new(BlockMetrics::default()),
        }
    }
}

/// `struct virtio_blk_config` up to write_zeroes_may_unmap.
fn config_space(sectors: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&sectors.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[34..36].copy_from_slice(&1u16.to_le_bytes());
    c[36..40].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_RANGES.to_le_bytes());
    // Discards are aligned to 4 KiB, the host page and block size.
    c[44..48].copy_from_slice(&8u32.to_le_bytes());
    c[48..52].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_RANGES.to_le_bytes());
    c[56] = 1;
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let base = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | F_SEG_MAX
            | F_FLUSH;
        if self.readonly {
            base | F_RO
        } else {
            base | F_DISCARD | F_WRITE_ZEROES
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
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
