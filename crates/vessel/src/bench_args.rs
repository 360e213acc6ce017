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
    /// Real programs from Debian packages (CPython integer, float,
    /// string/dict and call loops; gzip -9, xz -6, sha256sum, sort,
    /// sqlite3, tcc; iperf3 both ways over virtio-net on a TAP; two at
    /// once on 2 vCPUs) in the default guest with a Debian root disk,
    /// under vessel and QEMU TCG and natively from the same disk,
    /// interleaved over rounds; times measured inside each machine,
    /// medians, ratios vessel/QEMU and vessel/native and their geometric
    /// means. Builds the disk with mmdebstrap on first use; needs root
    /// (network namespace, loop mount) for the iperf3 and native parts.
    Workload(WorkloadArgs),
}

/// A machine for the workload benchmark.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WlMachineArg {
    /// `vessel run` with the engine of `--engine`.
    Vessel,
    /// `qemu-system-x86_64 -M q35 -accel tcg`.
    Qemu,
    /// The host, in a chroot of the same disk.
    Native,
}

#[derive(clap::Args)]
pub struct WorkloadArgs {
    /// Rounds (1-100); each machine runs the set once per round, in turn.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Multiplies every workload's size (0.001-100; sort is capped at
    /// the 1,000,000 lines on the disk).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Small sizes for a smoke test: --scale 0.02 (unless --scale is given).
    #[arg(long)]
    quick: bool,
    /// Workloads to run, comma-separated (default: all): py-int, py-float,
    /// py-str, py-call, gzip, xz, sha256, sort, sqlite, tcc, iperf-g2h,
    /// iperf-h2g, smp.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Machines to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [WlMachineArg::Vessel, WlMachineArg::Qemu, WlMachineArg::Native])]
    machines: Vec<WlMachineArg>,
    /// vessel's engine (auto, soft or kvm).
    #[arg(long, default_value = "auto", value_parser = ["auto", "soft", "kvm"])]
    engine: String,
    /// Guest memory in MiB (sha256sum's input lives in the guest's tmpfs).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=65536))]
    memory: u32,
    /// Deadline for one machine's run of the set, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// What vessel's guest CPUID advertises (`vessel run --cpu-model`).
    #[arg(long, value_enum, default_value_t = crate::CpuModelArg::Max)]
    cpu_model: crate::CpuModelArg,
    /// QEMU's `-cpu` model (e.g. max, Haswell); default: QEMU's own
    /// (qemu64, SSE2 only).
    #[arg(long, value_parser = qemu_cpu_name)]
    qemu_cpu: Option<String>,
}

/// A QEMU CPU model name: letters, digits and `-_.,=+` (properties such
/// as `max,+avx2` included), nothing a shell or QEMU would split on.
fn qemu_cpu_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,=+".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a QEMU CPU model name"))
    }
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
    /// `vessel run` booting Debian's generic bzImage (XZ; prepared on
    /// first use into the cache's guest-generic/).
    VesselBzimage,
    /// `qemu-system-x86_64 -accel tcg -M q35` booting the same bzImage.
    Q35Bzimage,
}

#[derive(clap::Args)]
pub struct BootArgs {
    /// Boots per machine (1-100); the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Machines to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BootMachineArg::Vessel, BootMachineArg::VesselV, BootMachineArg::VesselNet, BootMachineArg::Microvm, BootMachineArg::Q35, BootMachineArg::VesselBzimage, BootMachineArg::Q35Bzimage])]
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
        BenchCommand::Workload(args) => workload(args),
    }
}

fn workload(args: WorkloadArgs) -> anyhow::Result<ExitCode> {
    let scale = if args.quick && args.scale == 1.0 {
        0.02
    } else {
        args.scale
    };
    if !(0.001..=100.0).contains(&scale) {
        anyhow::bail!("--scale {scale}: between 0.001 and 100");
    }
    let mut picked = Vec::new();
    for name in &args.workloads {
        match bench::workload::find_workload(name) {
            Some(w) => picked.push(w),
            None => anyhow::bail!(
                "unknown workload {name:?}; known: {}",
                bench::WORKLOADS
                    .iter()
                    .map(|w| w.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let vessel = std::env::current_exe()?;
    let image = vmm::default_guest::image(&mut |line| eprintln!("{line}"))?;
    let disk = guest::workload::workload_image(&mut |line| eprintln!("{line}"))?;
    let mut opts = bench::WorkloadBenchOptions::new(vessel, &image, disk.disk.clone());
    opts.packages = disk
        .packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect::<Vec<_>>()
        .join(", ");
    if args.engine == "auto" {
        let host = vmm::engine::report();
        opts.engine_note = format!("auto picks {} here", host.auto_choice);
    }
    opts.engine = args.engine;
    opts.rounds = args.rounds;
    opts.scale = scale;
    if !picked.is_empty() {
        // Table order, whatever the order asked in.
        opts.workloads = bench::WORKLOADS
            .iter()
            .filter(|w| picked.iter().any(|p| p.name == w.name))
            .collect();
    }
    opts.memory_mib = args.memory;
    opts.timeout = Duration::from_secs(args.timeout);
    opts.qemu = args.qemu;
    opts.cpu_model = cpu_model_name(args.cpu_model).to_string();
    opts.qemu_cpu = args.qemu_cpu;
    opts.machines = args
        .machines
        .iter()
        .map(|m| match m {
            WlMachineArg::Vessel => bench::WlMachine::Vessel,
            WlMachineArg::Qemu => bench::WlMachine::Qemu,
            WlMachineArg::Native => bench::WlMachine::Native,
        })
        .collect();
    let report = bench::workload(&opts)?;
    println!("{report}");
    report.check()?;
    Ok(ExitCode::SUCCESS)
}

/// The `--cpu-model` word for `vessel run`.
fn cpu_model_name(m: crate::CpuModelArg) -> &'static str {
    match m {
        crate::CpuModelArg::Baseline => "baseline",
        crate::CpuModelArg::V2 => "v2",
        crate::CpuModelArg::V3 => "v3",
        crate::CpuModelArg::Max => "max",
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

/// The guest with Debian's generic kernel, prepared first if it is not
/// in the cache (the package lists must know `linux-image-amd64`).
fn generic_guest() -> anyhow::Result<guest::GuestImage> {
    let opts = guest::PrepareOptions::generic_kernel();
    if let Some(image) = guest::find_prepared_like(&opts) {
        return Ok(image);
    }
    eprintln!("vessel bench boot: preparing the generic-kernel guest for the bzImage rows");
    guest::prepare(&opts, &mut |line| eprintln!("{line}")).map_err(|e| {
        anyhow::anyhow!(
            "cannot prepare Debian's generic kernel for the bzImage rows: {e} \
             (leave them out with --machines vessel,vessel-v,vessel-net,microvm,q35)"
        )
    })
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
            BootMachineArg::VesselBzimage => bench::BootMachine::VesselBzImage,
            BootMachineArg::Q35Bzimage => bench::BootMachine::QemuQ35BzImage,
        })
        .collect();
    if opts.machines.iter().any(|m| m.boots_bzimage()) {
        opts.bzimage = Some(bench::KernelBoot::bzimage_of(&generic_guest()?));
    }
    let report = bench::boot(&opts)?;
    println!("{report}");
    report.check()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, ValueEnum};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        wl: WorkloadArgs,
    }

    #[test]
    fn cpu_model_words_are_the_ones_vessel_run_parses() {
        for m in crate::CpuModelArg::value_variants() {
            let name = cpu_model_name(*m);
            let back = crate::CpuModelArg::from_str(name, false).unwrap();
            assert_eq!(cpu_model_name(back), name);
        }
    }

    #[test]
    fn workload_cpu_options_parse_and_default() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cpu_model_name(cli.wl.cpu_model), "max");
        assert_eq!(cli.wl.qemu_cpu, None);
        let cli =
            Cli::try_parse_from(["x", "--cpu-model", "baseline", "--qemu-cpu", "Haswell"]).unwrap();
        assert_eq!(cpu_model_name(cli.wl.cpu_model), "baseline");
        assert_eq!(cli.wl.qemu_cpu.as_deref(), Some("Haswell"));
        assert!(Cli::try_parse_from(["x", "--qemu-cpu", "max,+avx2"]).is_ok());
        assert!(Cli::try_parse_from(["x", "--qemu-cpu", "max -smp 4"]).is_err());
        assert!(Cli::try_parse_from(["x", "--qemu-cpu", ""]).is_err());
        assert!(Cli::try_parse_from(["x", "--cpu-model", "v9"]).is_err());
    }
}
