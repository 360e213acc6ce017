//! The device event loop: one thread waiting in epoll on the host file
//! descriptors devices depend on (TAP devices, timers) and handing each
//! readiness to its device with the token the device chose. Guest queue
//! kicks do not come through here: they are served on the vCPU thread (see
//! `virtio_devices`). Dropping the [`EventLoop`] stops and joins the thread.

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

type Source = (RawFd, Arc<Mutex<VirtioPciDevice>>, u32);

/// A running event loop.
pub struct EventLoop {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// The epoll data of the stop eventfd; sources use their index.
const STOP: u64 = u64::MAX;

impl EventLoop {
    /// Watches each `(fd, device, token)` for input (edge-triggered: the
    /// device drains the fd when called) and starts the thread.
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
        for (i, (fd, _, _)) in sources.iter().enumerate() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    *fd,
                    EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, i as u64),
                )
                .map_err(|source| EventLoopError::Watch { fd: *fd, source })?;
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
            let Some((_, dev, token)) =
                usize::try_from(ev.data()).ok().and_then(|i| sources.get(i))
            else {
                continue;
            };
            dev.lock()
                .unwrap_or_else(|p| p.into_inner())
                .handle_event(*token);
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
