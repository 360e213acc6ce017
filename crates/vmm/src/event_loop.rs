//! The device event loop: one thread waiting in epoll on the host file
//! descriptors devices depend on (TAP devices, timers) and on the
//! ioeventfds of queue notification registers (where the engine supports
//! them, see `virtio_devices`), handing each readiness to its device. On
//! engines without ioeventfds queue kicks do not come through here: they
//! are served on the vCPU thread. Dropping the [`EventLoop`] stops and
//! joins the thread.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use virtio::VirtioPciDevice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    #[error("cannot create the epoll instance")]
    Epoll(#[source] std::io::Error),
    #[error("cannot create the stop eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot watch fd {fd}")]
    Watch { fd: RawFd, source: std::io::Error },
    #[error("cannot start the event loop thread")]
    Thread(#[source] std::io::Error),
}

/// What a readable fd means to its device.
pub enum Action {
    /// A host fd the device registered, with its token
    /// ([`VirtioPciDevice::handle_event`]). The device drains the fd.
    Device { fd: RawFd, token: u32 },
    /// The ioeventfd of a queue's notification register: the guest kicked
    /// the queue ([`VirtioPciDevice::kick_queue`]). The loop drains it.
    Queue { eventfd: EventFd, queue: u16 },
}

impl Action {
    fn fd(&self) -> RawFd {
        match self {
            Action::Device { fd, .. } => *fd,
            Action::Queue { eventfd, .. } => eventfd.as_raw_fd_compat(),
        }
    }
}

/// One watched fd and the device it belongs to.
pub struct Source {
    pub device: Arc<Mutex<VirtioPciDevice>>,
    pub action: Action,
}

/// A running event loop.
pub struct EventLoop {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// The epoll data of the stop eventfd; sources use their index.
const STOP: u64 = u64::MAX;

impl EventLoop {
    /// Watches each source's fd for input (edge-triggered: each is drained
    /// when served) and starts the thread.
    pub fn start(sources: Vec<Source>) -> Result<EventLoop, EventLoopError> {
        let epoll = Epoll::new().map_err(EventLoopError::Epoll)?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(EventLoopError::EventFd)?;
        let stop_copy = stop.try_clone().map_err(EventLoopError::EventFd)?;
        epoll
            .ctl(
                ControlOperation::Add,
                stop.as_raw_fd_compat(),
                EpollEvent::new(EventSet::IN, STOP),
            )
            .map_err(|source| EventLoopError::Watch {
                fd: stop.as_raw_fd_compat(),
                source,
            })?;
        for (i, src) in sources.iter().enumerate() {
            let fd = src.action.fd();
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, i as u64),
                )
                .map_err(|source| EventLoopError::Watch { fd, source })?;
        }
        let thread = std::thread::Builder::new()
            .name("vmm-events".into())
            .spawn(move || run(epoll, stop_copy, sources))
            .map_err(EventLoopError::Thread)?;
        Ok(EventLoop {
            stop,
            thread: Some(thread),
        })
    }
}

/// `EventFd::as_raw_fd` through the trait, named for readability.
trait RawFdCompat {
    fn as_raw_fd_compat(&self) -> RawFd;
}

impl RawFdCompat for EventFd {
    fn as_raw_fd_compat(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

fn run(epoll: Epoll, stop: EventFd, sources: Vec<Source>) {
    let mut events = vec![EpollEvent::default(); 32];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("device event loop: epoll_wait failed: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            if ev.data() == STOP {
                let _ = stop.read();
                return;
            }
            let Some(src) = usize::try_from(ev.data()).ok().and_then(|i| sources.get(i)) else {
                continue;
            };
            let mut dev = src.device.lock().unwrap_or_else(|p| p.into_inner());
            match &src.action {
                Action::Device { token, .. } => dev.handle_event(*token),
                Action::Queue { eventfd, queue } => {
                    // Resets the counter; kicks that arrive after this
                    // read make a new edge.
                    let _ = eventfd.read();
                    dev.kick_queue(*queue);
                }
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("cannot stop the device event loop: {e}");
            return;
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the device event loop panicked");
            }
        }
    }
}
