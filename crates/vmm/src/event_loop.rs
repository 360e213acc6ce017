//! The device event loop: one thread waiting in epoll on the host file
//! descriptors devices depend on (TAP devices, timers) and on the
//! ioeventfds of queue notification registers (where the engine supports
//! them, see `virtio_devices`), handing each readiness to its device. On
//! engines without ioeventfds queue kicks do not come through here: they
//! are served on the vCPU thread. While the VM is paused the loop serves
//! nothing: what becomes ready is kept and served on resume. Dropping the
//! [`EventLoop`] stops and joins the thread.

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
    gate: Arc<Gate>,
    thread: Option<JoinHandle<()>>,
}

/// Pausing the loop: `paused` is held while an event is served, so a
/// pause returns only after the event in flight is done; `resumed` wakes
/// the loop to serve what arrived meanwhile.
struct Gate {
    paused: Mutex<bool>,
    resumed: EventFd,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The epoll data of the stop eventfd; sources use their index.
const STOP: u64 = u64::MAX;
/// The epoll data of the resume eventfd.
const RESUMED: u64 = u64::MAX - 1;

impl EventLoop {
    /// Watches each source's fd for input (edge-triggered: each is drained
    /// when served) and starts the thread.
    pub fn start(sources: Vec<Source>) -> Result<EventLoop, EventLoopError> {
        let epoll = Epoll::new().map_err(EventLoopError::Epoll)?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(EventLoopError::EventFd)?;
        let stop_copy = stop.try_clone().map_err(EventLoopError::EventFd)?;
        let gate = Arc::new(Gate {
            paused: Mutex::new(false),
            resumed: EventFd::new(EFD_NONBLOCK).map_err(EventLoopError::EventFd)?,
        });
        for (fd, data) in [
            (stop.as_raw_fd_compat(), STOP),
            (gate.resumed.as_raw_fd_compat(), RESUMED),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, data),
                )
                .map_err(|source| EventLoopError::Watch { fd, source })?;
        }
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
        let loop_gate = gate.clone();
        let thread = std::thread::Builder::new()
            .name("vmm-events".into())
            .spawn(move || run(epoll, stop_copy, &loop_gate, sources))
            .map_err(EventLoopError::Thread)?;
        Ok(EventLoop {
            stop,
            gate,
            thread: Some(thread),
        })
    }

    /// Stops serving events; returns once no event is being served.
    pub fn pause(&self) {
        *self.gate.lock() = true;
    }

    /// Serves again, first what became ready while paused.
    pub fn resume(&self) {
        *self.gate.lock() = false;
        if let Err(e) = self.gate.resumed.write(1) {
            log::error!("cannot wake the device event loop: {e}");
        }
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

fn run(epoll: Epoll, stop: EventFd, gate: &Gate, sources: Vec<Source>) {
    let mut events = vec![EpollEvent::default(); 32];
    // Sources that became ready while paused, served on resume.
    let mut deferred: Vec<usize> = Vec::new();
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
            let index = match ev.data() {
                STOP => {
                    let _ = stop.read();
                    return;
                }
                RESUMED => {
                    let _ = gate.resumed.read();
                    None
                }
                i => usize::try_from(i).ok().filter(|&i| i < sources.len()),
            };
            let paused = gate.lock();
            if let Some(i) = index {
                if !deferred.contains(&i) {
                    deferred.push(i);
                }
            }
            if *paused {
                continue;
            }
            for i in deferred.drain(..) {
                serve(&sources[i]);
            }
        }
    }
}

/// Hands one readiness to its device.
fn serve(src: &Source) {
    let mut dev = src.device.lock().unwrap_or_else(|p| p.into_inner());
    match &src.action {
        Action::Device { token, .. } => dev.handle_event(*token),
        Action::Queue { eventfd, queue } => {
            // Resets the counter; kicks that arrive after this read make a
            // new edge.
            let _ = eventfd.read();
            dev.kick_queue(*queue);
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

#[cfg(test)]
mod tests {
    use super::*;
    use devices::pci::msix::MsiSink;
    use devices::BusDevice;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};
    use virtio::device::{ActivateError, Activation};
    use virtio::queue::QueueError;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    struct NoMsi;
    impl MsiSink for NoMsi {
        fn signal(&self, _: u64, _: u32) {}
    }

    /// Counts kicks of queue 0 and events with token 7.
    struct Counting {
        kicks: Arc<AtomicU32>,
        events: Arc<AtomicU32>,
    }
    impl virtio::VirtioDevice for Counting {
        fn device_type(&self) -> u32 {
            virtio::device_type::RNG
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            virtio::features::VERSION_1
        }
        fn read_config(&self, _: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn activate(&mut self, _: Activation) -> Result<(), ActivateError> {
            Ok(())
        }
        fn queue_notify(&mut self, queue: u16) -> Result<(), QueueError> {
            if queue == 0 {
                self.kicks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        fn handle_event(&mut self, token: u32) -> Result<(), QueueError> {
            if token == 7 {
                self.events.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        fn reset(&mut self) {}
    }

    /// A device brought up the way a driver does it (common window writes).
    fn running_device() -> (Arc<Mutex<VirtioPciDevice>>, Arc<AtomicU32>, Arc<AtomicU32>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let kicks = Arc::new(AtomicU32::new(0));
        let events = Arc::new(AtomicU32::new(0));
        let dev = Counting {
            kicks: kicks.clone(),
            events: events.clone(),
        };
        let mut f = VirtioPciDevice::new(Box::new(dev), mem, Arc::new(NoMsi), 0xc000_0000).unwrap();
        let w = |f: &mut VirtioPciDevice, off: u64, v: u64, len: usize| {
            f.write(off, &v.to_le_bytes()[..len])
        };
        w(&mut f, 0x14, 3, 1); // ACKNOWLEDGE | DRIVER
        w(&mut f, 0x08, 1, 4); // driver_feature_select = 1
        w(&mut f, 0x0c, 1, 4); // VERSION_1
        w(&mut f, 0x14, 0xb, 1); // FEATURES_OK
        w(&mut f, 0x20, 0x1000, 8); // descriptors
        w(&mut f, 0x28, 0x2000, 8); // available ring
        w(&mut f, 0x30, 0x3000, 8); // used ring
        w(&mut f, 0x1c, 1, 2); // queue_enable
        w(&mut f, 0x14, 0xf, 1); // DRIVER_OK
        assert_eq!(f.status(), 0xf, "device running");
        (Arc::new(Mutex::new(f)), kicks, events)
    }

    fn wait_for(counter: &AtomicU32, want: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if counter.load(Ordering::SeqCst) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn queue_eventfds_and_device_fds_reach_their_device() {
        let (dev, kicks, events) = running_device();
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let host = EventFd::new(EFD_NONBLOCK).unwrap();
        let sources = vec![
            Source {
                device: dev.clone(),
                action: Action::Queue {
                    eventfd: kick.try_clone().unwrap(),
                    queue: 0,
                },
            },
            Source {
                device: dev.clone(),
                action: Action::Device {
                    fd: host.as_raw_fd_compat(),
                    token: 7,
                },
            },
        ];
        let event_loop = EventLoop::start(sources).unwrap();
        kick.write(1).unwrap();
        assert!(wait_for(&kicks, 1), "the kick reached queue 0");
        kick.write(1).unwrap();
        assert!(wait_for(&kicks, 2), "the eventfd was drained: a new edge");
        host.write(1).unwrap();
        assert!(wait_for(&events, 1), "the host fd reached handle_event");
        event_loop.pause();
        host.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(events.load(Ordering::SeqCst), 1, "not served while paused");
        event_loop.resume();
        assert!(wait_for(&events, 2), "served on resume");
        drop(event_loop);
        kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(kicks.load(Ordering::SeqCst), 2, "stopped on drop");
    }
}
