//! Kicking a vCPU out of `KVM_RUN` from another thread, race-free.
//!
//! The protocol:
//! - Once per process a handler is installed for [`kick_signal`]
//!   (`SIGRTMIN + KICK_SIGNAL_OFFSET`, without `SA_RESTART`). The handler
//!   only does a volatile one-byte store: it sets `immediate_exit` in the
//!   `kvm_run` mapping of the vCPU that the interrupted thread is running,
//!   found through a thread-local pointer that is non-null only while
//!   [`crate::KvmVcpu`]'s `run` executes.
//! - [`KvmKicker::kick`] sets the vCPU's pending flag, then, under a mutex,
//!   signals the thread currently inside `run` (if any).
//! - `run` publishes its thread under the same mutex when it starts, and
//!   before every `KVM_RUN` clears `immediate_exit` and then checks the
//!   pending flag.
//!
//! Whatever the interleaving, a kick is seen: either `run` sees the pending
//! flag before entering `KVM_RUN`, or the signal arrives after that check
//! and either interrupts `KVM_RUN` (EINTR) or sets `immediate_exit` so that
//! `KVM_RUN` returns at once. The mutex makes sure a signal is only sent to
//! a thread that is inside `run` (never to one that has exited).

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{compiler_fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hypervisor::VcpuKicker;
use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::Error;

/// Which real-time signal kicks vCPUs: `SIGRTMIN + KICK_SIGNAL_OFFSET`.
pub const KICK_SIGNAL_OFFSET: c_int = 0;

/// The signal number used to kick vCPU threads.
pub fn kick_signal() -> c_int {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

thread_local! {
    /// `&kvm_run.immediate_exit` of the vCPU this thread is running, or
    /// null outside `run`. Const-initialised and without a destructor, so
    /// reading it from a signal handler involves no lazy initialisation.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
    /// Whether this thread has made sure the kick signal is unblocked.
    static UNBLOCKED: Cell<bool> = const { Cell::new(false) };
}

extern "C" fn handle_kick(_signum: c_int, _info: *mut siginfo_t, _ctx: *mut c_void) {
    // Async-signal-safe: one thread-local read and one volatile byte store.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: `p` is non-null only while `run` executes on this
            // thread (set by `RunGuard::enter`, cleared by its drop), and
            // during `run` the vCPU, and so its kvm_run mapping, is borrowed
            // and cannot be unmapped. It points at the one-byte
            // `immediate_exit` field, which KVM reads on entry.
            unsafe { p.write_volatile(1) };
        }
    });
}

/// Installs the kick handler once per process; later calls return the
/// first call's outcome.
pub(crate) fn install_handler() -> Result<(), Error> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| register_signal_handler(kick_signal(), handle_kick).map_err(|e| e.errno()))
        .map_err(Error::SignalHandler)
}

/// The state a vCPU shares with its kickers.
#[derive(Debug, Default)]
pub(crate) struct KickState {
    pending: AtomicBool,
    /// The thread inside `run`, if any.
    thread: Mutex<Option<libc::pthread_t>>,
}

impl KickState {
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }
}

/// Marks the current thread as running a vCPU for as long as it lives.
pub(crate) struct RunGuard<'a> {
    state: &'a KickState,
}

impl<'a> RunGuard<'a> {
    /// Publishes this thread and `immediate_exit` (which must stay valid
    /// until the guard drops) for kickers and the signal handler.
    pub(crate) fn enter(state: &'a KickState, immediate_exit: *mut u8) -> Self {
        UNBLOCKED.with(|done| {
            if !done.get() {
                // A thread that blocked the signal would never see a kick
                // while in KVM_RUN; unblock it once per thread. Failure is
                // only possible for an invalid signal number, which
                // install_handler has already validated.
                let _ = vmm_sys_util::signal::unblock_signal(kick_signal());
                done.set(true);
            }
        });
        IMMEDIATE_EXIT.with(|p| p.set(immediate_exit));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *lock(&state.thread) = Some(me);
        RunGuard { state }
    }

    /// Clears `immediate_exit` and reports whether a kick is pending; call
    /// right before each `KVM_RUN`.
    pub(crate) fn should_stop(&self, immediate_exit: *mut u8) -> bool {
        // SAFETY: `immediate_exit` is the pointer given to `enter`, valid
        // while the guard lives (see `enter`). The signal handler may write
        // it concurrently on this same thread; both writes are volatile.
        unsafe { immediate_exit.write_volatile(0) };
        // Keep the clear before the check: a kick signalled after the check
        // must find immediate_exit to set, not have it cleared afterwards.
        compiler_fence(Ordering::SeqCst);
        self.state.pending()
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.with(|p| p.set(ptr::null_mut()));
        *lock(&self.state.thread) = None;
    }
}

/// Locks `m`, ignoring poisoning: the data (a thread id) is always valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes a vCPU's `run` return [`hypervisor::VmExit::Interrupted`].
#[derive(Debug, Clone)]
pub struct KvmKicker {
    state: Arc<KickState>,
}

impl KvmKicker {
    pub(crate) fn new(state: Arc<KickState>) -> Self {
        KvmKicker { state }
    }
}

impl VcpuKicker for KvmKicker {
    fn kick(&self) {
        self.state.pending.store(true, Ordering::SeqCst);
        let thread = lock(&self.state.thread);
        if let Some(t) = *thread {
            // SAFETY: `t` is the id of a thread currently inside `run`: it
            // is removed (under this mutex) before `run` returns, so the
            // thread is alive while we hold the lock. The signal's handler
            // was installed before any vCPU existed.
            let rc = unsafe { libc::pthread_kill(t, kick_signal()) };
            if rc != 0 {
                log::warn!("kick: pthread_kill failed: errno {rc}");
            }
        }
    }

    fn clear(&self) {
        self.state.pending.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_sets_and_clear_resets_pending() {
        let state = Arc::new(KickState::default());
        let kicker = KvmKicker::new(state.clone());
        assert!(!state.pending());
        kicker.kick();
        assert!(state.pending());
        kicker.clear();
        assert!(!state.pending());
    }

    #[test]
    fn signal_sets_immediate_exit_only_inside_run() {
        install_handler().expect("handler installs");
        let state = Arc::new(KickState::default());
        let kicker = KvmKicker::new(state.clone());
        let mut flag: u8 = 0;
        let p: *mut u8 = &mut flag;
        {
            let guard = RunGuard::enter(&state, p);
            assert!(!guard.should_stop(p));
            // The kick signals this very thread; the handler runs before
            // pthread_kill returns for a signal sent to oneself (unblocked).
            kicker.kick();
            // SAFETY: `p` points at the local `flag`, alive here.
            assert_eq!(unsafe { p.read_volatile() }, 1);
            assert!(guard.should_stop(p));
            // SAFETY: as above.
            assert_eq!(unsafe { p.read_volatile() }, 0);
        }
        kicker.clear();
        // Outside run the handler must not touch anything.
        // SAFETY: sending a signal whose handler is installed to ourselves.
        unsafe { libc::pthread_kill(libc::pthread_self(), kick_signal()) };
        assert_eq!(flag, 0);
        assert!(lock(&state.thread).is_none());
    }
}
