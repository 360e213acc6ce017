//! The `vessel` command line: parses arguments, hands them to the VMM, and
//! turns how the VM ended into this process's exit status.

mod api_backend;
mod bench_args;
mod device_args;
mod image_args;
mod metrics_sources;
mod net_args;
mod process_args;
mod serve;
mod share_args;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vmm::{EngineChoice, Outcome, OutputMode, VmConfig};

#[derive(Parser)]
#[command(
    name = "vessel",
    about = "A virtual machine monitor: KVM or its own x86-64 engine",
    long_about = "A virtual machine monitor: KVM or its own x86-64 engine.\n\n\
        With a subcommand, vessel runs it. With --api-sock or --config-file it \
        is a VMM process that speaks Firecracker's API (also when started under \
        the name `firecracker`).",
    args_conflicts_with_subcommands = true,
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    process: process_args::ProcessArgs,
    /// Print the version (first line: `vessel vX.Y.Z`).
    #[arg(long, short = 'V')]
    version: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM with its serial console on this terminal (Ctrl-A then x stops it).
    Run(Box<RunArgs>),
    /// Show what this host offers: KVM, hardware virtualization, the engine `auto` picks.
    Info,
    /// Measure vessel next to KVM, QEMU and Firecracker's published figures.
    #[command(subcommand)]
    Bench(bench_args::BenchCommand),
    /// Manage the default guest (Debian cloud kernel + busybox initramfs).
    #[command(subcommand)]
    Guest(GuestCommand),
    /// Talk to a running vessel (or Firecracker) through its API socket.
    Ctl(serve::CtlArgs),
    /// Print a shell completion script: `vessel completions bash >
    /// ~/.local/share/bash-completion/completions/vessel`.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand)]
enum GuestCommand {
    /// Build the default guest from Debian packages into the cache
    /// ($XDG_CACHE_HOME/vessel); does nothing when it is up to date.
    Prepare {
        /// Rebuild even when the cached guest is up to date.
        #[arg(long)]
        force: bool,
        /// Also write an ext4 root file system image of the guest here.
        #[arg(long, value_name = "PATH")]
        rootfs: Option<PathBuf>,
        /// Size of the root file system image in MiB.
        #[arg(long, default_value_t = 64, requires = "rootfs")]
        rootfs_size: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Engine {
    /// KVM where it is hardware-assisted, the software engine elsewhere.
    Auto,
    /// Linux KVM (hardware-assisted full virtualization).
    Kvm,
    /// vessel's own x86-64 CPU engine (full virtualization in software).
    Soft,
}

/// What the guest's CPUID advertises (`--cpu-model`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CpuModelArg {
    /// x86-64 with CX16, POPCNT, LAHF/SAHF and LZCNT.
    Baseline,
    /// x86-64-v2: + SSE3, SSSE3, SSE4.1, SSE4.2.
    V2,
    /// x86-64-v3: + AVX, AVX2, BMI1, BMI2, FMA, F16C, MOVBE, XSAVE.
    V3,
    /// Everything the engine runs exactly on this host (KVM: the host's set).
    Max,
}

impl From<CpuModelArg> for vmm::config::CpuModel {
    fn from(m: CpuModelArg) -> Self {
        match m {
            CpuModelArg::Baseline => Self::Baseline,
            CpuModelArg::V2 => Self::V2,
            CpuModelArg::V3 => Self::V3,
            CpuModelArg::Max => Self::Max,
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kernel to boot: bzImage, ELF vmlinux, or an ELF with a PVH entry
    /// note. Without it vessel boots its default guest (the Debian cloud
    /// kernel with a busybox initramfs), preparing it first if needed.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line (default: "console=ttyS0", or the default
    /// guest's own).
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: usize,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u64,
    /// Which engine runs the vCPUs.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    engine: Engine,
    /// The instruction set the guest sees (CPUID), so it can be kept to
    /// what another host also offers.
    #[arg(long, value_enum, default_value_t = CpuModelArg::Max)]
    cpu_model: CpuModelArg,
    /// Exit with status 0 when the guest reboots instead of restarting it.
    #[arg(long)]
    no_reboot: bool,
    #[command(flatten)]
    devices: device_args::DeviceArgs,
    #[command(flatten)]
    image: image_args::ImageArgs,
    /// A command to run in the guest instead of an interactive shell: its
    /// output is printed and its exit status becomes vessel's.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

impl From<Engine> for EngineChoice {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Auto => EngineChoice::Auto,
            Engine::Kvm => EngineChoice::Kvm,
            Engine::Soft => EngineChoice::Soft,
        }
    }
}

/// True when this process was started under the name `firecracker`.
fn called_as_firecracker() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "firecracker"))
        .unwrap_or(false)
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.version {
        println!("vessel v{}", env!("CARGO_PKG_VERSION"));
        println!();
        println!("A virtual machine monitor that speaks Firecracker's API.");
        return ExitCode::SUCCESS;
    }
    if cli.command.is_none() && !cli.process.wants_vmm() && called_as_firecracker() {
        cli.process.api_sock = Some(PathBuf::from(process_args::DEFAULT_API_SOCK));
    }
    let result = match cli.command {
        Some(Command::Run(args)) => run(*args),
        Some(Command::Info) => info(),
        Some(Command::Bench(cmd)) => bench_args::bench(cmd),
        Some(Command::Guest(cmd)) => guest(cmd),
        Some(Command::Ctl(args)) => serve::ctl(args),
        Some(Command::Completions { shell }) => completions(shell),
        None if cli.process.wants_vmm() => serve::serve(cli.process),
        None => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vessel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    // User networking is the default on vessel's own guest only.
    args.devices.default_user_net = args.kernel.is_none();
    // --image: the image's disk comes first and its command replaces CMD.
    let image = args.image.prepare(&args.command)?;
    if let Some(run) = &image {
        args.command = run.command.clone();
    }
    let mode = if args.command.is_empty() {
        OutputMode::Interactive
    } else {
        OutputMode::Command
    };
    // A command on vessel's own guest runs through its agent: stdin, stdout
    // and stderr on vsock streams (a --vsock of the user's takes the device).
    let agent = mode == OutputMode::Command
        && args.kernel.is_none()
        && args.initrd.is_none()
        && args.devices.vsock.is_none();
    let own_guest = args.kernel.is_none();
    let (kernel, initrd, cmdline) = match args.kernel {
        Some(kernel) => {
            let mut cmdline = args.cmdline.unwrap_or_else(|| "console=ttyS0".to_string());
            if !args.command.is_empty() {
                // The command reaches the guest's init the way the default
                // guest expects it: an initramfs of vessel's understands it.
                cmdline.push(' ');
                cmdline.push_str(&vmm::default_guest::command_cmdline(&args.command));
            }
            (kernel, args.initrd, cmdline)
        }
        None => {
            let image = vmm::default_guest::image(&mut |line| eprintln!("{line}"))?;
            let boot = vmm::default_guest::boot(&image, args.cmdline.as_deref(), &args.command)?;
            (
                boot.kernel,
                Some(args.initrd.unwrap_or(boot.initrd)),
                boot.cmdline,
            )
        }
    };
    let cmdline = match args.devices.cmdline_extra() {
        Some(extra) => format!("{cmdline} {extra}"),
        None => cmdline,
    };
    let cmdline = match share_args::cmdline(&args.devices.volumes) {
        Some(shares) => format!("{cmdline} {shares}"),
        None => cmdline,
    };
    // The interactive console of vessel's own guest: the terminal's size
    // and TERM (the serial line cannot follow later resizes).
    let cmdline = match vmm::stdio::interactive_cmdline() {
        Some(tty) if mode == OutputMode::Interactive && own_guest => {
            format!("{cmdline} {tty}")
        }
        _ => cmdline,
    };
    let config = VmConfig {
        kernel,
        initrd,
        cmdline,
        cpus: args.cpus,
        memory_mib: args.memory,
        engine: args.engine.into(),
        cpu_model: args.cpu_model.into(),
        // A command runs once: a guest reboot ends it.
        reboot: !args.no_reboot && mode == OutputMode::Interactive,
        devices: image_args::attach(image, args.devices.into_config()?),
    };
    let (console, stdio) = console_and_stdio(agent, mode)?;
    let mut config = config;
    if let Some(stdio) = &stdio {
        vmm::default_guest::append_cmdline(&mut config.cmdline, &stdio.cmdline())?;
        config.devices.vsock = Some(stdio.vsock());
    }
    let outcome = vmm::run_vm(&config, &console);
    let output = console.output().clone();
    drop(console); // restores the terminal before anything more is printed
    let agent_report = stdio.map(|s| {
        let report = (s.exit_status(), s.interrupted());
        s.finish(); // the output drained, the terminal restored
        report
    });
    if std::env::var_os("VESSEL_STATS").is_some_and(|v| v == "1") {
        eprintln!(
            "vessel: stats: instructions={}",
            output.instructions_retired()
        );
    }
    let outcome = outcome?;
    match agent_report {
        Some((_, true)) => return Ok(ExitCode::from(130)), // Ctrl-C during boot
        Some((Some(status), _)) => return Ok(ExitCode::from(u8::try_from(status).unwrap_or(255))),
        _ => {}
    }
    if mode == OutputMode::Command {
        return Ok(command_status(outcome, &output));
    }
    Ok(match outcome {
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

/// The serial console and, for a command run through the guest agent, its
/// stdio streams (the console then shows nothing and reads no input).
fn console_and_stdio(
    agent: bool,
    mode: OutputMode,
) -> anyhow::Result<(vmm::console::Console, Option<vmm::stdio::Stdio>)> {
    if !agent {
        return Ok((vmm::console::Console::start(mode), None));
    }
    let console = vmm::console::Console::start_without_input(OutputMode::Logged);
    let tty = vmm::stdio::terminals_attached();
    let stdio = vmm::stdio::Stdio::start(console.stopper(), tty)?;
    Ok((console, Some(stdio)))
}

/// vessel's exit status after `vessel run -- CMD`: the command's own, or a
/// failure that says why there is none.
fn command_status(outcome: Outcome, output: &vmm::guest_output::OutputWatch) -> ExitCode {
    if let Some(status) = output.exit_status() {
        // Shell statuses are 0-255; a larger value cannot come from sh.
        return ExitCode::from(u8::try_from(status).unwrap_or(255));
    }
    let why = match outcome {
        Outcome::Failed(why) => why,
        Outcome::UserStop => "stopped from the console before the command finished".to_string(),
        _ => "the guest stopped before the command reported its exit status".to_string(),
    };
    let log = output.boot_log();
    if !log.trim().is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        eprintln!("vessel: the guest's last console lines:");
        for line in tail.iter().rev() {
            eprintln!("  {}", line.trim_end_matches('\r'));
        }
    }
    eprintln!("vessel: {why}");
    ExitCode::FAILURE
}

fn guest(cmd: GuestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GuestCommand::Prepare {
            force,
            rootfs,
            rootfs_size,
        } => {
            let opts = vmm::default_guest::PrepareOptions {
                force,
                ..Default::default()
            };
            let image = vmm::default_guest::prepare(&opts, &mut |line| eprintln!("{line}"))?;
            println!("kernel:    {}", image.kernel_bzimage.display());
            println!("vmlinux:   {}", image.vmlinux.display());
            println!("initramfs: {}", image.initramfs.display());
            println!("release:   {}", image.kernel_release);
            if let Some(path) = rootfs {
                vmm::default_guest::make_rootfs(&image, &path, rootfs_size)?;
                println!("rootfs:    {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn completions(shell: CompletionShell) -> anyhow::Result<ExitCode> {
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Into a buffer first: clap_complete panics on a failed write (a
    // closed pipe, as with `| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "vessel", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write the completion script"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The `--cpu-model`s the software engine gives on this host, and what
/// `max` holds there.
fn print_cpu_models() {
    use vmm::config::{CpuModel, Features};
    let models = [
        CpuModel::Baseline,
        CpuModel::V2,
        CpuModel::V3,
        CpuModel::Max,
    ];
    let mut given = Vec::new();
    let mut refused = Vec::new();
    for m in models {
        match m.on_soft_engine() {
            Ok(()) => given.push(m.to_string()),
            Err(missing) => refused.push(format!("{m} needs {missing}")),
        }
    }
    let refused = if refused.is_empty() {
        String::new()
    } else {
        format!(" ({})", refused.join("; "))
    };
    println!("soft CPU models:    {}{refused}", given.join(", "));
    println!("soft max features:  {}", Features::engine_max());
}

fn info() -> anyhow::Result<ExitCode> {
    let report = vmm::engine::report();
    println!("{}", report.kvm);
    println!(
        "engine auto: {} ({})",
        report.auto_choice, report.auto_reason
    );
    print_cpu_models();
    Ok(ExitCode::SUCCESS)
}
