//! How a running VM ends: the first stop request wins, every vCPU is kicked
//! out of the guest, and the VMM thread learns why the VM stopped.
//!
//! Devices reach this through [`devices::VmEventSink`] (debug-exit port,
//! ACPI power-off, i8042 reset); vCPU threads through [`VmControl::stop`]
//! when their engine reports a shutdown or a failure; the console through
//! the same call when the user types the escape sequence.

use devices::{VmEvent, VmEventSink};
use hypervisor::VcpuKicker;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote this value to the debug-exit port.
    DebugExit(u8),
    /// The guest powered off (ACPI S5 or the engine's power-off event).
    PowerOff,
    /// The guest asked for a reset (reboot).
    Reset,
    /// The user stopped the VM from the console.
    UserStop,
    /// The guest or the engine failed; the text says how, for the user.
    Failed(String),
}

#[derive(Default)]
struct State {
    outcome: Option<Outcome>,
    kickers: Vec<Arc<dyn VcpuKicker>>,
    halted_vcpus: usize,
    vcpus: usize,
    /// The VM is paused: vCPU threads park instead of entering the guest.
    paused: bool,
    /// vCPU threads parked now (or halted for good, which is as still).
    parked_vcpus: usize,
}

/// Why a pause or resume was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    #[error("the VM has stopped")]
    Stopped,
    #[error("the vCPUs did not stop within {0:?}: a vCPU is stuck in the engine")]
    Timeout(std::time::Duration),
}

/// Shared by the VMM thread, the vCPU threads, the devices and the console.
#[derive(Default)]
pub struct VmControl {
    state: Mutex<State>,
    stopped: Condvar,
    /// Guest instructions retired by vCPUs that have ended (engines that
    /// count them only).
    retired: AtomicU64,
}

impl VmControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking vCPU thread must not take the VMM down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a vCPU so a stop can kick it out of the guest.
    pub fn add_vcpu(&self, kicker: Arc<dyn VcpuKicker>) {
        let mut s = self.lock();
        s.vcpus += 1;
        if s.outcome.is_some() {
            kicker.kick();
        }
        s.kickers.push(kicker);
    }

    /// Requests a stop. The first request decides the outcome.
    pub fn stop(&self, outcome: Outcome) {
        let mut s = self.lock();
        if s.outcome.is_none() {
            s.outcome = Some(outcome);
        }
        for k in &s.kickers {
            k.kick();
        }
        self.stopped.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// Parks every vCPU outside the guest and returns once all of them are
    /// parked (or the VM stops). Pausing a paused VM does nothing.
    pub fn pause(&self, timeout: std::time::Duration) -> Result<(), PauseError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.lock();
        if s.outcome.is_some() {
            return Err(PauseError::Stopped);
        }
        s.paused = true;
        for k in &s.kickers {
            k.kick();
        }
        loop {
            if s.outcome.is_some() {
                return Err(PauseError::Stopped);
            }
            if s.parked_vcpus + s.halted_vcpus >= s.vcpus {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                // Leave the VM running rather than half paused.
                s.paused = false;
                self.stopped.notify_all();
                return Err(PauseError::Timeout(timeout));
            }
            s = self
                .stopped
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Lets parked vCPUs enter the guest again.
    pub fn resume(&self) -> Result<(), PauseError> {
        let mut s = self.lock();
        if s.outcome.is_some() {
            return Err(PauseError::Stopped);
        }
        s.paused = false;
        self.stopped.notify_all();
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Called by a vCPU thread between runs: blocks while the VM is paused
    /// (counting itself parked) and returns when it resumes or stops.
    pub fn park_while_paused(&self) {
        let mut s = self.lock();
        if !s.paused || s.outcome.is_some() {
            return;
        }
        s.parked_vcpus += 1;
        self.stopped.notify_all();
        while s.paused && s.outcome.is_none() {
            s = self.stopped.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.parked_vcpus -= 1;
    }

    /// Blocks until some thread has requested a stop and returns why.
    pub fn wait(&self) -> Outcome {
        let mut s = self.lock();
        loop {
            if let Some(o) = &s.outcome {
                return o.clone();
            }
            s = self.stopped.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Adds the instructions a finished vCPU retired to the VM's total.
    pub fn add_retired(&self, instructions: u64) {
        self.retired.fetch_add(instructions, Ordering::Relaxed);
    }

    /// Guest instructions retired by the vCPUs that have ended so far.
    pub fn retired(&self) -> u64 {
        self.retired.load(Ordering::Relaxed)
    }

    /// A vCPU halted with no way to be woken (HLT with interrupts off).
    /// When every vCPU is in that state the guest can never run again, so
    /// the VM stops instead of hanging.
    pub fn vcpu_halted_forever(&self) {
        let all = {
            let mut s = self.lock();
            s.halted_vcpus += 1;
            s.halted_vcpus >= s.vcpus
        };
        if all {
            self.stop(Outcome::Failed(
                "the guest halted every vCPU with interrupts disabled; nothing can wake it"
                    .to_string(),
            ));
        }
    }
}

impl VmEventSink for VmControl {
    fn request(&self, event: VmEvent) {
        self.stop(match event {
            VmEvent::Exit(code) => Outcome::DebugExit(code),
            VmEvent::PowerOff => Outcome::PowerOff,
            VmEvent::Reset => Outcome::Reset,
            VmEvent::Panic => Outcome::Failed("the guest kernel panicked".to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct CountingKicker(AtomicUsize);
    impl VcpuKicker for CountingKicker {
        fn kick(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn clear(&self) {}
    }

    #[test]
    fn first_stop_wins_and_kicks_every_vcpu() {
        let c = VmControl::new();
        let k = Arc::new(CountingKicker::default());
        c.add_vcpu(k.clone());
        c.request(VmEvent::Exit(3));
        c.stop(Outcome::PowerOff);
        assert_eq!(c.wait(), Outcome::DebugExit(3));
        assert_eq!(k.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn all_vcpus_halted_stops_the_vm() {
        let c = VmControl::new();
        c.add_vcpu(Arc::new(CountingKicker::default()));
        c.add_vcpu(Arc::new(CountingKicker::default()));
        c.vcpu_halted_forever();
        assert!(!c.is_stopping());
        c.vcpu_halted_forever();
        assert!(matches!(c.wait(), Outcome::Failed(_)));
    }

    #[test]
    fn pause_waits_for_every_vcpu_to_park_and_resume_releases_them() {
        let c = VmControl::new();
        let k = Arc::new(CountingKicker::default());
        c.add_vcpu(k.clone());
        let parker = {
            let c = c.clone();
            std::thread::spawn(move || {
                // A vCPU thread: runs until kicked, then parks.
                while k.0.load(Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
                c.park_while_paused();
            })
        };
        c.pause(std::time::Duration::from_secs(5)).unwrap();
        assert!(c.is_paused());
        assert!(!parker.is_finished(), "parked while paused");
        c.resume().unwrap();
        parker.join().unwrap();
        assert!(!c.is_paused());
    }

    #[test]
    fn pause_gives_up_when_a_vcpu_never_parks() {
        let c = VmControl::new();
        c.add_vcpu(Arc::new(CountingKicker::default()));
        let e = c.pause(std::time::Duration::from_millis(20));
        assert!(matches!(e, Err(PauseError::Timeout(_))));
        assert!(!c.is_paused(), "left running, not half paused");
    }

    #[test]
    fn a_stopped_vm_cannot_pause() {
        let c = VmControl::new();
        c.stop(Outcome::PowerOff);
        assert_eq!(
            c.pause(std::time::Duration::from_secs(1)),
            Err(PauseError::Stopped)
        );
        assert_eq!(c.resume(), Err(PauseError::Stopped));
    }

    #[test]
    fn retired_instructions_add_up() {
        let c = VmControl::new();
        assert_eq!(c.retired(), 0);
        c.add_retired(5);
        c.add_retired(7);
        assert_eq!(c.retired(), 12);
    }
}
