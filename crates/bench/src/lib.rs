//! vessel's benchmarks, run as subprocesses so each machine is measured
//! the way a user runs it: `vessel run` on each engine and QEMU as the
//! reference. Owns the benchmark entry points ([`cpu`], [`boot()`]) and the
//! error type that says why a benchmark could not give an answer.
//!
//! Modules: `api` (vessel as a Firecracker VMM process: start-up, boot
//! over the API, pause/resume, memory overhead, next to Firecracker's
//! published figures; `api_vmm` drives one process, `api_report` prints,
//! `smaps` reads its memory),
//! `cpu` (guest instructions per second on a compute loop),
//! `boot` (time to the default guest's userspace, to its command's first
//! output and to exit, peak RSS; `boot_variants` compares vessel with `-v`
//! and `--net user` to its plain boot),
//! `io` (fio and TCP throughput: guest next to native and QEMU, each with
//! the host page cache and without it),
//! `workload` (real programs from Debian packages in the guest under
//! vessel and QEMU TCG and natively: times, ratios, geometric means),
//! `process` (subprocesses with a deadline), `watch` (subprocesses with
//! timestamped marker lines and `wait4` rusage), `tsc` (the host TSC rate).

pub mod api;
mod api_report;
mod api_vmm;
pub mod boot;
pub mod boot_variants;
pub mod cpu;
pub mod io;
mod process;
pub mod smaps;
mod tsc;
mod watch;
pub mod workload;

pub use crate::api::{
    api, ApiBenchError, ApiBenchOptions, ApiReport, BootRun as ApiBootRun, StartRun,
};
pub use api_report::{note, Published, Row as ApiRow, Spread};

pub use boot::{
    boot, BootBenchOptions, BootMachine, BootOutcome, BootReport, BootRow, BootRun, BootSummary,
    KernelBoot,
};
pub use boot_variants::VariantCost;

pub use io::{io, DiskNumbers, HostCache, IoBenchOptions, IoMachine, IoReport, IoRow, Outcome};

pub use cpu::{cpu, CpuBenchOptions, CpuReport, CpuRow, Machine, Measurement, RowOutcome};
pub use process::RunError;
pub use tsc::TscError;
pub use workload::{
    workload, WlMachine, WorkloadBenchOptions, WorkloadReport, WorkloadRow, WORKLOADS,
};

/// Why a benchmark gave no answer, or an answer that must not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The benchmark guest is not where the build put it.
    #[error("benchmark guest {0} not found")]
    GuestMissing(String),
    /// The host TSC rate could not be measured.
    #[error("cannot measure the host tsc rate")]
    Tsc(#[from] TscError),
    /// A machine that was available failed to run the guest.
    #[error("{machine} failed")]
    RunFailed {
        /// Which machine.
        machine: Machine,
        /// What went wrong.
        #[source]
        source: RunError,
    },
    /// A machine that was available failed to boot the default guest.
    #[error("{machine} failed")]
    BootFailed {
        /// Which machine.
        machine: BootMachine,
        /// What went wrong.
        #[source]
        source: RunError,
    },
    /// Two machines computed different checksums over the same memory.
    #[error("checksums differ: {0}")]
    ChecksumMismatch(String),
    /// The benchmark's host file could not be made.
    #[error("cannot write {path}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A machine that was available failed the I/O benchmark.
    #[error("{machine} failed: {why}")]
    IoFailed {
        /// Which machine.
        machine: String,
        /// What went wrong.
        why: String,
    },
    /// Not one machine produced a measurement.
    #[error("no machine was measured")]
    NothingMeasured,
}
