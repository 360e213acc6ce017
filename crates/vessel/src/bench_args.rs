//! `vessel bench ...`: the command-line side of the benchmarks in the
//! `bench` crate (arguments in, table out, exit status from the check).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Guest instructions per second on a checksum over 64 MiB: vessel's
    /// soft engine next to KVM (at CPL3) and QEMU TCG, same run.
    Cpu(CpuArgs),
    /// Time from process start to the default guest's userspace
    /// (VESSEL-GUEST-READY), to its command's first output line and to
    /// exit, and peak RSS: vessel (plain, with -v and with --net user, each
    /// variant next to the plain boot) and QEMU TCG (microvm and q35), same
    /// kernel, initramfs and command line.
    Boot(BootArgs),
    /// fio on one host file (1 MiB sequential read and write, 4 KiB random
    /// read) natively, in the default guest on vessel's virtio-blk and
    /// under QEMU q35 TCG's virtio-blk, each twice: through the host page
    /// cache and with O_DIRECT on the host (the guests always use direct
    /// I/O); guest-to-host TCP over virtio-net on a TAP next to QEMU's.
    /// Needs fio on the host; the network part needs root and
    /// /dev/net/tun.
    Io(IoArgs),
    /// vessel as a Firecracker VMM process (--api-sock) next to
    /// Firecracker's published figures: start to a socket that answers
    /// GET / (wall and CPU ms), InstanceStart to the default guest's
    /// VESSEL-GUEST-READY, pause and resume latency, and the VMM's memory
    /// overhead (Rss minus guest memory touched) with 128 MiB.
    Api(ApiArgs),
}

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Start-ups, and pause/resume cycles (1-1000); the table shows
    /// medians and min-max.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Boots of the default guest over the API (1-100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    boots: u32,
    /// vessel's engine (auto, soft or kvm).
    #[arg(long, default_value = "auto", value_parser = ["auto", "soft", "kvm"])]
    engine: String,
    /// Guest memory in MiB (Firecracker's overhead figure is for 128).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(16..=65536))]
    memory: u32,
    /// Deadline for each vessel process, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// A machine to measure.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MachineArg {
    /// `vessel run --engine soft`.
    Soft,
    /// `vessel run --engine kvm`.
    Kvm,
    /// `qemu-system-x86_64 -accel tcg`.
    Qemu,
}

#[derive(clap::Args)]
pub struct CpuArgs {
    /// Passes of the checksum over 64 MiB (1-1000).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    passes: u32,
    /// Machines to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [MachineArg::Soft, MachineArg::Kvm, MachineArg::Qemu])]
    machines: Vec<MachineArg>,
    /// Deadline for each machine's run, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// The benchmark guest (default: the built `bench_checksum`).
    #[arg(long)]
    guest: Option<PathBuf>,
}

/// A machine to boot the default guest on.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootMachineArg {
    /// `vessel run --net none` with the engine of `--engine`.
    Vessel,
    /// The same with `-v` of a small temporary host directory.
    VesselV,
    /// The same with `--net user` (passt) instead of `--net none`.
    VesselNet,
    /// `qemu-system-x86_64 -accel tcg -M microvm`.
    Microvm,
    /// `qemu-system-x86_64 -accel tcg -M q35`.
    Q35,
}

#[derive(clap::Args)]
pub struct BootArgs {
    /// Boots per machine (1-100); the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Machines to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BootMachineArg::Vessel, BootMachineArg::VesselV, BootMachineArg::VesselNet, BootMachineArg::Microvm, BootMachineArg::Q35])]
    machines: Vec<BootMachineArg>,
    /// vessel's engine (auto, soft or kvm).
    #[arg(long, default_value = "auto", value_parser = ["auto", "soft", "kvm"])]
    engine: String,
    /// Deadline for each boot, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
}

/// A machine for the I/O benchmark.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoMachineArg {
    /// fio on the host.
    Native,
    /// `vessel run` with the engine of `--engine`.
    Vessel,
    /// `qemu-system-x86_64 -accel tcg -M q35`.
    Q35,
}

#[derive(clap::Args)]
pub struct IoArgs {
    /// Size of the sequential runs (and of the file), MiB (1-65536).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    seq_mib: u32,
    /// Length of the 4 KiB random-read run, seconds (1-3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    rand_secs: u32,
    /// MiB the guest sends to the host over TCP; 0 skips the network.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=65536))]
    net_mib: u32,
    /// Machines to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [IoMachineArg::Native, IoMachineArg::Vessel, IoMachineArg::Q35])]
    machines: Vec<IoMachineArg>,
    /// vessel's engine (auto, soft or kvm).
    #[arg(long, default_value = "auto", value_parser = ["auto", "soft", "kvm"])]
    engine: String,
    /// The host file every machine uses (overwritten; default: a file in
    /// the system temporary directory, removed afterwards).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Deadline for each machine, in seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Guest memory in MiB (the initramfs carries fio and its libraries).
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// The host's fio (also copied into the guests).
    #[arg(long, default_value = "fio")]
    fio: PathBuf,
}

/// Runs the benchmark `cmd`, prints its table, and fails when a machine
/// failed or the machines disagree.
pub fn bench(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Cpu(args) => cpu(args),
        BenchCommand::Boot(args) => boot(args),
        BenchCommand::Io(args) => io(args),
        BenchCommand::Api(args) => api(args),
    }
}

fn api(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let vessel = std::env::current_exe()?;
    let image = vmm::default_guest::image(&mut |line| eprintln!("{line}"))?;
    let mut opts = bench::ApiBenchOptions::new(vessel, &image);
    let host = vmm::engine::report();
    let hardware = if host.kvm.hardware_assisted() {
        "this host has hardware virtualization"
    } else {
        "this host has no hardware virtualization (no VT-x/AMD-V), so its figures are not \
         comparable with Firecracker's on KVM"
    };
    opts.engine_note = match args.engine.as_str() {
        "auto" => format!(
            "auto picks {} here ({}); {hardware}",
            host.auto_choice, host.auto_reason
        ),
        other => format!("{other} (as asked); {hardware}"),
    };
    opts.engine = args.engine;
    opts.runs = args.runs;
    opts.boots = args.boots;
    opts.memory_mib = args.memory;
    opts.timeout = Duration::from_secs(args.timeout);
    let report = bench::api(&opts)?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn io(args: IoArgs) -> anyhow::Result<ExitCode> {
    let vessel = std::env::current_exe()?;
    let image = vmm::default_guest::image(&mut |line| eprintln!("{line}"))?;
    eprintln!("bench io: building the guest initramfs with fio");
    let initrd = bench::io::fio_initramfs(&image, &args.fio);
    let temp = args.file.is_none();
    let file = args.file.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("vessel-bench-io-{}.img", std::process::id()))
    });
    let mut opts = bench::IoBenchOptions::new(vessel, &image, initrd, file.clone());
    opts.engine = args.engine;
    opts.qemu = args.qemu;
    opts.fio = args.fio;
    opts.seq_mib = args.seq_mib;
    opts.rand_secs = args.rand_secs;
    opts.net_mib = args.net_mib;
    opts.memory_mib = args.memory;
    opts.timeout = Duration::from_secs(args.timeout);
    opts.machines = args
        .machines
        .iter()
        .map(|m| match m {
            IoMachineArg::Native => bench::IoMachine::Native,
            IoMachineArg::Vessel => bench::IoMachine::Vessel,
            IoMachineArg::Q35 => bench::IoMachine::QemuQ35,
        })
        .collect();
    let report = bench::io(&opts);
    if temp {
        let _ = std::fs::remove_file(&file);
    }
    let report = report?;
    println!("{report}");
    report.check()?;
    Ok(ExitCode::SUCCESS)
}

fn cpu(args: CpuArgs) -> anyhow::Result<ExitCode> {
    let vessel = std::env::current_exe()?;
    let mut opts = bench::CpuBenchOptions::new(vessel);
    opts.passes = args.passes;
    opts.timeout = Duration::from_secs(args.timeout);
    opts.qemu = args.qemu;
    if let Some(guest) = args.guest {
        opts.guest = guest;
    }
    opts.machines = args
        .machines
        .iter()
        .map(|m| match m {
            MachineArg::Soft => bench::Machine::Soft,
            MachineArg::Kvm => bench::Machine::Kvm,
            MachineArg::Qemu => bench::Machine::QemuTcg,
        })
        .collect();
    let report = bench::cpu(&opts)?;
    println!("{report}");
    report.check()?;
    Ok(ExitCode::SUCCESS)
}

fn boot(args: BootArgs) -> anyhow::Result<ExitCode> {
    let vessel = std::env::current_exe()?;
    let image = vmm::default_guest::image(&mut |line| eprintln!("{line}"))?;
    let mut opts = bench::BootBenchOptions::new(vessel, &image);
    opts.runs = args.runs;
    opts.engine = args.engine;
    opts.timeout = Duration::from_secs(args.timeout);
    opts.memory_mib = args.memory;
    opts.qemu = args.qemu;
    opts.passt_installed = vmm::user_net::find_passt().is_some();
    opts.machines = args
        .machines
        .iter()
        .map(|m| match m {
            BootMachineArg::Vessel => bench::BootMachine::Vessel,
            BootMachineArg::VesselV => bench::BootMachine::VesselShare,
            BootMachineArg::VesselNet => bench::BootMachine::VesselUserNet,
            BootMachineArg::Microvm => bench::BootMachine::QemuMicrovm,
            BootMachineArg::Q35 => bench::BootMachine::QemuQ35,
        })
        .collect();
    let report = bench::boot(&opts)?;
    println!("{report}");
    report.check()?;
    Ok(ExitCode::SUCCESS)
}
