//! The host's TSC rate, measured against the monotonic clock. Every
//! machine in the benchmarks reads a guest TSC that runs at the host's
//! rate (KVM without TSC scaling, the soft engine's RDTSC, QEMU TCG's
//! RDTSC without icount), so one rate converts all their ticks to seconds.

use std::time::{Duration, Instant};

/// Why the TSC rate is unknown.
#[derive(Debug, thiserror::Error)]
pub enum TscError {
    /// The TSC did not advance at a plausible rate while the clock did.
    #[error("implausible tsc rate {0:.0} Hz")]
    Implausible(f64),
}

/// Reads the host TSC.
fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter; every x86-64 CPU has it and user
    // mode may run it (Linux leaves CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Ticks per second of the host TSC, measured over `window`.
pub fn measure_hz(window: Duration) -> Result<f64, TscError> {
    let t0 = Instant::now();
    let c0 = rdtsc();
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_millis(5));
    }
    let c1 = rdtsc();
    let secs = t0.elapsed().as_secs_f64();
    hz_from(c1.wrapping_sub(c0), secs)
}

/// `ticks / secs`, checked to lie between 100 MHz and 20 GHz.
fn hz_from(ticks: u64, secs: f64) -> Result<f64, TscError> {
    let hz = if secs > 0.0 { ticks as f64 / secs } else { 0.0 };
    if (1e8..2e10).contains(&hz) {
        Ok(hz)
    } else {
        Err(TscError::Implausible(hz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rate_is_plausible() {
        let hz = measure_hz(Duration::from_millis(50)).expect("host tsc runs");
        assert!((1e8..2e10).contains(&hz), "{hz}");
    }

    #[test]
    fn zero_time_or_ticks_is_rejected() {
        assert!(hz_from(1_000_000, 0.0).is_err());
        assert!(hz_from(0, 1.0).is_err());
        assert_eq!(hz_from(2_000_000_000, 1.0).ok(), Some(2e9));
    }
}
