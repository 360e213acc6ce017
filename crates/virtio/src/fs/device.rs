//! The shared-directory device: configuration (tag, host directory,
//! read-only), the config space (`tag[36]` and the number of request
//! queues), activation and reset. A reset forgets every inode and open
//! file the driver was given (as FUSE_DESTROY does): a rebooted guest
//! starts over with INIT and cannot use numbers from before.

use super::handler::Session;
use super::metrics::FsMetrics;
use crate::device::{
    read_config_bytes, ActivateError, Activation, DmaNotify, Interrupt, VirtioDevice,
};
use crate::queue::QueueError;
use crate::{device_type, features};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{Config, PassthroughFs};
use std::path::PathBuf;
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Entries of each queue.
pub const QUEUE_SIZE: u16 = 1024;
/// Queue index of the high-priority queue (FORGET, INTERRUPT).
pub const HIPRIO: u16 = 0;
/// Queue index of the one request queue.
pub const REQUEST: u16 = 1;
/// Longest tag the config space holds.
pub const TAG_MAX: usize = 36;

/// One shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The name the guest mounts (`mount -t virtiofs TAG DIR`).
    pub tag: String,
    /// The host directory shared.
    pub host_dir: PathBuf,
    /// Refuse every request that would change the tree.
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("tag {0:?} must be 1 to {TAG_MAX} bytes without NUL")]
    BadTag(String),
    #[error("{0} is not a directory: share an existing host directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not valid UTF-8: rename it or share a parent directory")]
    NotUtf8(PathBuf),
    #[error("cannot serve {path}")]
    Passthrough {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the reply buffer")]
    ReplyBuffer(#[source] std::io::Error),
}

pub(super) type FuseServer = Server<Arc<PassthroughFs>>;

/// Queues and memory once the driver activated the device.
pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub dma: DmaNotify,
    /// HIPRIO then REQUEST.
    pub queues: Vec<Queue>,
    pub interrupt: Arc<dyn Interrupt>,
}

pub struct Fs {
    pub(super) config: FsConfig,
    pub(super) session: Session,
    /// The file system the server serves, for reset.
    passthrough: Arc<PassthroughFs>,
    pub(super) active: Option<Active>,
    pub metrics: Arc<FsMetrics>,
}

impl Fs {
    /// Opens `config.host_dir` for serving.
    pub fn new(config: &FsConfig) -> Result<Self, FsError> {
        if config.tag.is_empty() || config.tag.len() > TAG_MAX || config.tag.contains('\0') {
            return Err(FsError::BadTag(config.tag.clone()));
        }
        if !config.host_dir.is_dir() {
            return Err(FsError::NotADirectory(config.host_dir.clone()));
        }
        let root_dir = config
            .host_dir
            .to_str()
            .ok_or_else(|| FsError::NotUtf8(config.host_dir.clone()))?
            .to_string();
        let passthrough = |source| FsError::Passthrough {
            path: config.host_dir.clone(),
            source,
        };
        let fs = PassthroughFs::new(Config {
            root_dir,
            do_import: true,
            ..Config::default()
        })
        .map_err(passthrough)?;
        fs.import().map_err(passthrough)?;
        let metrics = Arc::new(FsMetrics::default());
        let passthrough = Arc::new(fs);
        let server = Server::new(passthrough.clone());
        let session = Session::new(server, config.read_only, metrics.clone())
            .map_err(FsError::ReplyBuffer)?;
        Ok(Fs {
            config: config.clone(),
            session,
            passthrough,
            active: None,
            metrics,
        })
    }

    /// The config space: the tag, NUL-padded, then one request queue.
    fn config_space(&self) -> [u8; TAG_MAX + 4] {
        let mut space = [0u8; TAG_MAX + 4];
        let tag = self.config.tag.as_bytes();
        space[..tag.len()].copy_from_slice(tag);
        space[TAG_MAX..].copy_from_slice(&1u32.to_le_bytes());
        space
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if a.queues.len() != 2 {
            return Err(ActivateError::BadQueue(a.queues.len()));
        }
        self.active = Some(Active {
            mem: a.mem,
            dma: a.dma,
            queues: a.queues,
            interrupt: a.interrupt,
        });
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError> {
        match queue {
            HIPRIO | REQUEST => self.process_queue(queue),
            q => Err(QueueError::NoSuchQueue(q)),
        }
    }

    fn reset(&mut self) {
        self.active = None;
        self.passthrough.destroy();
    }
}
