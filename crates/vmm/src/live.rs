//! The handles other threads (the API) use to act on the VM that runs now:
//! pause and resume its vCPUs, type Ctrl+Alt+Del on its keyboard, reach its
//! virtio devices. The builder fills the slot when a boot's devices exist
//! and empties it before that boot's devices are dropped, so a handle never
//! outlives the VM it belongs to (a guest reboot builds a new VM).

use crate::control::{PauseError, VmControl};
use crate::virtio_devices::VirtioDevices;
use devices::I8042;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a pause waits for every vCPU to leave the guest.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a running VM offers to other threads.
#[derive(Clone)]
pub struct LiveHandles {
    pub control: Arc<VmControl>,
    /// The machine's bus, for its access counts.
    pub io: Arc<devices::IoBus>,
    pub i8042: Arc<Mutex<I8042>>,
    pub virtio: Arc<VirtioDevices>,
}

/// Why an action on the running VM failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveError {
    #[error("the VM is not running")]
    NotRunning,
    #[error(transparent)]
    Pause(#[from] PauseError),
    #[error(
        "the guest's keyboard is disabled or busy, so Ctrl+Alt+Del could not be typed: \
         the guest needs the i8042 and atkbd drivers"
    )]
    KeyboardUnavailable,
}

/// The slot holding the running VM's handles, if any.
#[derive(Default)]
pub struct LiveVm {
    current: Mutex<Option<LiveHandles>>,
}

impl LiveVm {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn slot(&self) -> MutexGuard<'_, Option<LiveHandles>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the builder when a boot's devices exist.
    pub fn set(&self, handles: LiveHandles) {
        *self.slot() = Some(handles);
    }

    /// Called by the builder before the boot's devices are dropped.
    pub fn clear(&self) {
        *self.slot() = None;
    }

    /// The running VM's handles.
    pub fn get(&self) -> Result<LiveHandles, LiveError> {
        self.slot().clone().ok_or(LiveError::NotRunning)
    }

    /// Stops every vCPU outside the guest; returns when they all are.
    pub fn pause(&self) -> Result<(), LiveError> {
        let h = self.get()?;
        h.control.pause(PAUSE_TIMEOUT)?;
        h.virtio.pause();
        Ok(())
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) -> Result<(), LiveError> {
        let h = self.get()?;
        h.virtio.resume();
        Ok(h.control.resume()?)
    }

    pub fn is_paused(&self) -> bool {
        self.get().map(|h| h.control.is_paused()).unwrap_or(false)
    }

    /// Types Ctrl+Alt+Del on the guest's keyboard.
    pub fn send_ctrl_alt_del(&self) -> Result<(), LiveError> {
        let h = self.get()?;
        let typed = h
            .i8042
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .type_ctrl_alt_del();
        if typed {
            Ok(())
        } else {
            Err(LiveError::KeyboardUnavailable)
        }
    }
}
