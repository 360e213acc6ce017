//! The `vessel` command line: parses arguments, hands them to the VMM, and
//! turns how the VM ended into this process's exit status.

mod bench_args;
mod device_args;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vmm::{EngineChoice, Outcome, VmConfig};

#[derive(Parser)]
#[command(
    name = "vessel",
    version,
    about = "A virtual machine monitor: KVM or its own x86-64 engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM with its serial console on this terminal (Ctrl-A then x stops it).
    Run(RunArgs),
    /// Show what this host offers: KVM, hardware virtualization, the engine `auto` picks.
    Info,
    /// Measure vessel next to KVM and QEMU.
    #[command(subcommand)]
    Bench(bench_args::BenchCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// KVM where it is hardware-assisted, the software engine elsewhere.
    Auto,
    /// Linux KVM (hardware-assisted full virtualization).
    Kvm,
    /// vessel's own x86-64 CPU engine (full virtualization in software).
    Soft,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kernel to boot: bzImage, ELF vmlinux, or an ELF with a PVH entry note.
    #[arg(long)]
    kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0")]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: usize,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u64,
    /// Which engine runs the vCPUs.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    engine: Engine,
    /// Exit with status 0 when the guest reboots instead of restarting it.
    #[arg(long)]
    no_reboot: bool,
    #[command(flatten)]
    devices: device_args::DeviceArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Info => info(),
        Command::Bench(cmd) => bench_args::bench(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vessel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        cpus: args.cpus,
        memory_mib: args.memory,
        engine: match args.engine {
            Engine::Auto => EngineChoice::Auto,
            Engine::Kvm => EngineChoice::Kvm,
            Engine::Soft => EngineChoice::Soft,
        },
        reboot: !args.no_reboot,
        devices: args.devices.into_config()?,
    };
    let console = vmm::console::Console::start();
    let outcome = vmm::run_vm(&config, &console);
    drop(console); // restores the terminal before anything more is printed
    Ok(match outcome? {
        Outcome::DebugExit(code) => ExitCode::from(code),
        Outcome::PowerOff | Outcome::Reset => ExitCode::SUCCESS,
        Outcome::UserStop => {
            eprintln!("vessel: stopped from the console");
            ExitCode::SUCCESS
        }
        Outcome::Failed(why) => {
            eprintln!("vessel: {why}");
            ExitCode::FAILURE
        }
    })
}

fn info() -> anyhow::Result<ExitCode> {
    let report = vmm::engine::report();
    println!("{}", report.kvm);
    println!(
        "engine auto: {} ({})",
        report.auto_choice, report.auto_reason
    );
    Ok(ExitCode::SUCCESS)
}
