//! The I/O benchmark: fio on one host file, measured natively on the host,
//! in the default guest on vessel's virtio-blk and in the same guest under
//! QEMU's virtio-blk (q35, TCG): 1 MiB sequential write and read in MiB/s
//! and 4 KiB random reads in IOPS. Every machine runs once per host cache
//! mode ([`HostCache`]), so each row compares like with like: through the
//! host page cache, or bypassing it (O_DIRECT). The guests always use
//! direct I/O on their disk, so their own page cache is out. In the same
//! guest boot, busybox `nc` sends zeros to a listener on the host side of
//! a TAP in a network namespace this benchmark makes, and the host side
//! times them from first byte to end of stream. Guests get fio from
//! [`guest::bench_initramfs`]. Owns the options, the guest script, the
//! parsing of fio's terse lines, the host-side listener and the report.

use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{self, RunError};
use crate::BenchError;

/// The host side of the TAP.
const HOST_ADDR: [u8; 4] = [10, 77, 0, 1];
/// The guest's eth0.
const GUEST_ADDR: &str = "10.77.0.2";
/// Where the host side listens.
const NET_PORT: u16 = 5001;
/// The TAP in the benchmark's namespace (one machine at a time uses it).
const TAP: &str = "vbio0";
/// Each guest result line starts with this.
const LINE_PREFIX: &str = "VESSEL-IO ";

/// How the host's page cache sits under a machine's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCache {
    /// Through the host page cache: fio buffered natively (no invalidation
    /// between jobs), vessel's plain `--disk`, QEMU `cache=writeback`.
    Cached,
    /// Bypassing it with O_DIRECT: fio `--direct=1` natively, vessel's
    /// `--disk PATH,direct=on`, QEMU `cache=none`.
    Direct,
}

impl HostCache {
    /// Both modes, in table order.
    pub const ALL: [HostCache; 2] = [HostCache::Cached, HostCache::Direct];
}

impl fmt::Display for HostCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostCache::Cached => "cached",
            HostCache::Direct => "direct",
        })
    }
}

/// Where fio runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMachine {
    /// fio on the host, on the file itself (no network row).
    Native,
    /// `vessel run --disk FILE --net tap=...`.
    Vessel,
    /// `qemu-system-x86_64 -M q35 -accel tcg`, virtio-blk-pci (cache
    /// mode per [`HostCache`]) and virtio-net-pci on a TAP.
    QemuQ35,
}

impl IoMachine {
    /// Every machine, in table order.
    pub const ALL: [IoMachine; 3] = [IoMachine::Native, IoMachine::Vessel, IoMachine::QemuQ35];
}

impl fmt::Display for IoMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoMachine::Native => "native",
            IoMachine::Vessel => "vessel",
            IoMachine::QemuQ35 => "qemu q35 tcg",
        })
    }
}

/// What to measure and how long to wait.
#[derive(Debug, Clone)]
pub struct IoBenchOptions {
    /// The `vessel` binary.
    pub vessel: PathBuf,
    /// `vessel run --engine` value.
    pub engine: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The host's fio (native row; the guests carry their own copy).
    pub fio: PathBuf,
    /// The uncompressed kernel with a PVH entry.
    pub kernel: PathBuf,
    /// An initramfs with fio in it ([`fio_initramfs`]), or why there is
    /// none (the guest rows are then unavailable).
    pub initrd: Result<PathBuf, String>,
    /// The guest's base command line (the script is appended).
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The host file every machine uses (created, `seq_mib` long).
    pub file: PathBuf,
    /// Size of the sequential runs and of the file, MiB.
    pub seq_mib: u32,
    /// Length of the random-read run, seconds.
    pub rand_secs: u32,
    /// MiB the guest sends over the network; 0 skips the network.
    pub net_mib: u32,
    /// Deadline for each machine's run.
    pub timeout: Duration,
    /// Which machines to run, in table order.
    pub machines: Vec<IoMachine>,
    /// Which host cache modes to run each machine in, in table order.
    pub caches: Vec<HostCache>,
    /// Whether this vessel can open its disk with O_DIRECT, or why not
    /// (its direct rows are then unavailable).
    pub vessel_direct: Result<(), String>,
}

impl IoBenchOptions {
    /// 64 MiB sequential, 10 s random, 64 MiB over the network, 512 MiB
    /// guests, 1200 s per machine, every machine in both cache modes.
    pub fn new(
        vessel: PathBuf,
        image: &guest::GuestImage,
        initrd: Result<PathBuf, String>,
        file: PathBuf,
    ) -> Self {
        IoBenchOptions {
            vessel_direct: vessel_has_direct(&vessel),
            vessel,
            engine: "auto".to_string(),
            qemu: PathBuf::from("qemu-system-x86_64"),
            fio: PathBuf::from("fio"),
            kernel: image.vmlinux.clone(),
            initrd,
            cmdline: image.default_cmdline.clone(),
            memory_mib: 512,
            file,
            seq_mib: 64,
            rand_secs: 10,
            net_mib: 64,
            timeout: Duration::from_secs(1200),
            machines: IoMachine::ALL.to_vec(),
            caches: HostCache::ALL.to_vec(),
        }
    }
}

/// Why vessel's direct rows are not run.
pub const VESSEL_NO_DIRECT: &str =
    "the direct pair needs vessel's --disk PATH,direct=on, which this vessel has not got";

/// Whether `vessel run` takes `--disk PATH,direct=on` (its help names the
/// option), or why its direct rows cannot run.
pub fn vessel_has_direct(vessel: &Path) -> Result<(), String> {
    let mut cmd = Command::new(vessel);
    cmd.args(["run", "--help"]);
    match process::run(&mut cmd, Duration::from_secs(20)) {
        Ok(done) if done.output.contains("direct=on") => Ok(()),
        Ok(_) => Err(VESSEL_NO_DIRECT.to_string()),
        Err(e) => Err(describe(&e)),
    }
}

/// One machine's disk numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskNumbers {
    /// 1 MiB sequential reads, MiB/s.
    pub seq_read_mib_s: f64,
    /// 1 MiB sequential writes, MiB/s.
    pub seq_write_mib_s: f64,
    /// 4 KiB random reads per second (`None`: fio could not run, the
    /// sequential numbers are busybox dd's).
    pub rand_read_iops: Option<f64>,
    /// Why fio could not run, when the sequential numbers are dd's.
    pub fio_error: Option<String>,
}

/// How one measurement went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// The number(s).
    Measured(T),
    /// It cannot run here (a missing tool): why.
    Unavailable(String),
    /// It was available and failed: why.
    Failed(String),
}

impl<T> Outcome<T> {
    fn measured(&self) -> Option<&T> {
        match self {
            Outcome::Measured(t) => Some(t),
            _ => None,
        }
    }
}

/// One machine's row in one cache mode.
#[derive(Debug, Clone, PartialEq)]
pub struct IoRow {
    /// The machine.
    pub machine: IoMachine,
    /// The host cache mode under its disk.
    pub cache: HostCache,
    /// fio's numbers.
    pub disk: Outcome<DiskNumbers>,
    /// Guest-to-host TCP, MiB/s (native: unavailable).
    pub net: Outcome<f64>,
}

/// The benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct IoReport {
    /// Sequential size, MiB.
    pub seq_mib: u32,
    /// Random-read run, seconds.
    pub rand_secs: u32,
    /// Network transfer, MiB (0: not measured).
    pub net_mib: u32,
    /// vessel's engine.
    pub engine: String,
    /// The rows, in the order run.
    pub rows: Vec<IoRow>,
}

/// Makes the file, then runs every machine in `opts.machines`, one at a
/// time. Missing tools give "unavailable" cells; [`IoReport::check`]
/// turns failures into an error.
pub fn io(opts: &IoBenchOptions) -> Result<IoReport, BenchError> {
    let initrd = opts.initrd.as_ref().ok();
    for file in std::iter::once(&opts.kernel).chain(initrd) {
        if !file.is_file() {
            return Err(BenchError::GuestMissing(file.display().to_string()));
        }
    }
    make_file(&opts.file, opts.seq_mib).map_err(|source| BenchError::File {
        path: opts.file.display().to_string(),
        source,
    })?;
    let netns = if opts.net_mib > 0 {
        Netns::create(TAP)
    } else {
        Err("not asked for".to_string())
    };
    let mut rows = Vec::new();
    for &cache in &opts.caches {
        for &machine in &opts.machines {
            rows.push(row(opts, machine, cache, netns.as_ref()));
        }
    }
    Ok(IoReport {
        seq_mib: opts.seq_mib,
        rand_secs: opts.rand_secs,
        net_mib: opts.net_mib,
        engine: opts.engine.clone(),
        rows,
    })
}

/// Runs `machine` in `cache` mode, or says why it cannot run.
fn row(
    opts: &IoBenchOptions,
    machine: IoMachine,
    cache: HostCache,
    netns: Result<&Netns, &String>,
) -> IoRow {
    let unavailable = |why: &String| IoRow {
        machine,
        cache,
        disk: Outcome::Unavailable(why.clone()),
        net: Outcome::Unavailable(why.clone()),
    };
    match (machine, &opts.initrd, &opts.vessel_direct) {
        (IoMachine::Native, _, _) => IoRow {
            machine,
            cache,
            disk: native(opts, cache),
            net: Outcome::Unavailable("host itself".to_string()),
        },
        (_, Err(why), _) => unavailable(why),
        (IoMachine::Vessel, _, Err(why)) if cache == HostCache::Direct => unavailable(why),
        (_, Ok(initrd), _) => guest_row(opts, initrd, (machine, cache), netns),
    }
}

/// The default guest's initramfs plus `fio` (looked up in `PATH` when it
/// has no slash) and its libraries, built once and cached; or why not.
pub fn fio_initramfs(image: &guest::GuestImage, fio: &Path) -> Result<PathBuf, String> {
    let found = if fio.components().count() > 1 {
        Some(fio.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(fio))
                .find(|p| p.is_file())
        })
    };
    let Some(fio) = found.filter(|p| p.is_file()) else {
        return Err(format!("{} not found: apt-get install fio", fio.display()));
    };
    let fio = std::fs::canonicalize(&fio).map_err(|e| format!("{}: {e}", fio.display()))?;
    guest::bench_initramfs(image, &[fio]).map_err(|e| {
        let mut s = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            s.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        s
    })
}

/// Writes `mib` MiB of a non-zero pattern, so the file is allocated and
/// every machine reads real blocks.
fn make_file(path: &Path, mib: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let block: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    for _ in 0..mib.max(1) {
        f.write_all(&block)?;
    }
    f.flush()?;
    f.get_ref().sync_all()
}

/// The three fio jobs: (name, arguments after the common ones).
fn jobs(seq_mib: u32, rand_secs: u32) -> [(&'static str, String); 3] {
    let size = seq_mib.max(1);
    [
        ("seqwrite", format!("--rw=write --bs=1M --size={size}M")),
        ("seqread", format!("--rw=read --bs=1M --size={size}M")),
        (
            "randread",
            format!(
                "--rw=randread --bs=4k --size={size}M --time_based --runtime={}",
                rand_secs.max(1)
            ),
        ),
    ]
}

/// fio's common arguments for `target`: direct I/O, or buffered without
/// dropping the file's cached pages before each job (as a guest's disk on
/// a cached host file keeps them).
fn fio_common(target: &str, cache: HostCache) -> String {
    let mode = match cache {
        HostCache::Cached => "--direct=0 --invalidate=0",
        HostCache::Direct => "--direct=1",
    };
    format!("--name=x --filename={target} {mode} --thread --output-format=terse")
}

/// The guest's shell script: fio on /dev/vda, then (when `net_mib` > 0)
/// eth0 up and `net_mib` MiB of zeros to the host side. Each result is a
/// `VESSEL-IO name value` line.
pub fn guest_script(seq_mib: u32, rand_secs: u32, net_mib: u32) -> String {
    let mut s = format!(
        "F='fio {}'; r() {{ n=$1; shift; echo \"{LINE_PREFIX}$n $($F \"$@\" 2>&1 | tail -1 | cut -d';' -f5,7,8,48,49)\"; }}; ",
        fio_common("/dev/vda", HostCache::Direct)
    );
    for (name, args) in jobs(seq_mib, rand_secs) {
        s.push_str(&format!("r {name} {args}; "));
    }
    // busybox dd, direct, timed on /proc/uptime: the sequential numbers
    // when fio cannot run in this guest.
    let n = seq_mib.max(1);
    s.push_str(&format!(
        "u() {{ cut -d' ' -f1 /proc/uptime; }}; \
         a=$(u); dd if=/dev/zero of=/dev/vda bs=1M count={n} oflag=direct 2>/dev/null; \
         echo \"{LINE_PREFIX}ddwrite {n} $a $(u)\"; \
         a=$(u); dd if=/dev/vda of=/dev/null bs=1M count={n} iflag=direct 2>/dev/null; \
         echo \"{LINE_PREFIX}ddread {n} $a $(u)\"; "
    ));
    if net_mib > 0 {
        let [a, b, c, d] = HOST_ADDR;
        s.push_str(&format!(
            "ip addr add {GUEST_ADDR}/24 dev eth0 && ip link set eth0 up && \
             dd if=/dev/zero bs=64k count={} 2>/dev/null | nc {a}.{b}.{c}.{d} {NET_PORT}; \
             echo \"{LINE_PREFIX}net $?\"",
            u64::from(net_mib) * 16
        ));
    }
    s
}

/// A terse line cut to fields 5,7,8,48,49 (error; read KiB/s; read IOPS;
/// write KiB/s; write IOPS): (read KiB/s, read IOPS, write KiB/s, write
/// IOPS), or why not.
pub fn parse_cut(fields: &str) -> Result<[f64; 4], String> {
    let v: Vec<&str> = fields.trim().split(';').collect();
    let [err, rbw, riops, wbw, wiops] = v.as_slice() else {
        return Err(format!("fio gave {:?}", fields.trim()));
    };
    if *err != "0" {
        return Err(format!("fio error {err}"));
    }
    let mut out = [0.0; 4];
    for (o, s) in out.iter_mut().zip([rbw, riops, wbw, wiops]) {
        *o = s
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("fio gave {:?}", fields.trim()))?;
    }
    Ok(out)
}

/// Turns the three jobs' cut lines into numbers.
fn disk_numbers(find: impl Fn(&str) -> Option<String>) -> Result<DiskNumbers, String> {
    let get = |name: &str| -> Result<[f64; 4], String> {
        let line = find(name).ok_or_else(|| format!("no {name} result"))?;
        parse_cut(&line).map_err(|e| format!("{name}: {e}"))
    };
    let w = get("seqwrite")?;
    let r = get("seqread")?;
    let rr = get("randread")?;
    Ok(DiskNumbers {
        seq_read_mib_s: r[0] / 1024.0,
        seq_write_mib_s: w[2] / 1024.0,
        rand_read_iops: Some(rr[1]),
        fio_error: None,
    })
}

/// `ddread`/`ddwrite` lines (`MiB start end`, seconds of the guest's
/// /proc/uptime) as MiB/s.
fn dd_rate(line: &str) -> Option<f64> {
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse::<f64>().ok().filter(|x| x.is_finite()))
        .collect::<Option<_>>()?;
    let [mib, t0, t1] = v.as_slice() else {
        return None;
    };
    (t1 > t0 && *mib > 0.0).then(|| mib / (t1 - t0))
}

/// fio's numbers from the guest's output, else busybox dd's sequential
/// ones with fio's error kept.
fn guest_disk(output: &str) -> Result<DiskNumbers, String> {
    let fio = disk_numbers(|n| result_line(output, n));
    let Err(fio_error) = fio else { return fio };
    let rate = |n: &str| result_line(output, n).as_deref().and_then(dd_rate);
    match (rate("ddread"), rate("ddwrite")) {
        (Some(r), Some(w)) => Ok(DiskNumbers {
            seq_read_mib_s: r,
            seq_write_mib_s: w,
            rand_read_iops: None,
            fio_error: Some(fio_error),
        }),
        _ => Err(fio_error),
    }
}

/// The value of the `VESSEL-IO name` line in `output`.
pub fn result_line(output: &str, name: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(LINE_PREFIX)?;
        let (n, v) = rest.split_once(' ').unwrap_or((rest, ""));
        (n == name).then(|| v.trim().to_string())
    })
}

fn describe(e: &RunError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

fn not_found(e: &RunError) -> Option<String> {
    match e {
        RunError::Spawn { program, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("{program} not found"))
        }
        _ => None,
    }
}

fn native(opts: &IoBenchOptions, cache: HostCache) -> Outcome<DiskNumbers> {
    let target = opts.file.display().to_string();
    let mut lines = Vec::new();
    for (name, args) in jobs(opts.seq_mib, opts.rand_secs) {
        let mut cmd = Command::new(&opts.fio);
        cmd.args(fio_common(&target, cache).split(' '))
            .args(args.split(' '));
        match process::run(&mut cmd, opts.timeout) {
            Ok(done) => {
                let last = done.output.lines().rfind(|l| l.contains(';'));
                let cut = last
                    .map(|l| {
                        let f: Vec<&str> = l.split(';').collect();
                        [4, 6, 7, 47, 48]
                            .iter()
                            .map(|&i| f.get(i).copied().unwrap_or(""))
                            .collect::<Vec<_>>()
                            .join(";")
                    })
                    .unwrap_or_else(|| process::tail(&done.output, 2));
                lines.push((name, cut));
            }
            Err(e) => {
                return match not_found(&e) {
                    Some(why) => Outcome::Unavailable(why),
                    None => Outcome::Failed(describe(&e)),
                }
            }
        }
    }
    match disk_numbers(|n| lines.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())) {
        Ok(d) => Outcome::Measured(d),
        Err(e) => Outcome::Failed(e),
    }
}

/// The command that boots the guest on `machine` with the disk in `cache`
/// mode and, when `tap` is given, the NIC.
pub fn guest_command(
    opts: &IoBenchOptions,
    initrd: &Path,
    (machine, cache): (IoMachine, HostCache),
    tap: Option<&str>,
) -> Command {
    let script = guest_script(
        opts.seq_mib,
        opts.rand_secs,
        if tap.is_some() { opts.net_mib } else { 0 },
    );
    let cmdline = format!("{} {}", opts.cmdline, guest::script_cmdline(&script));
    let file = opts.file.display().to_string();
    let mut cmd = Command::new(if machine == IoMachine::Vessel {
        &opts.vessel
    } else {
        &opts.qemu
    });
    if machine == IoMachine::Vessel {
        cmd.args([
            "run",
            "--engine",
            &opts.engine,
            "--cpus",
            "1",
            "--no-reboot",
        ])
        .arg("--memory")
        .arg(opts.memory_mib.to_string())
        .args(["--kernel".as_ref(), opts.kernel.as_os_str()])
        .args(["--initrd".as_ref(), initrd.as_os_str()])
        .arg("--disk")
        .arg(match cache {
            HostCache::Cached => file.clone(),
            HostCache::Direct => format!("{file},direct=on"),
        });
        if let Some(tap) = tap {
            cmd.args(["--net", &format!("tap={tap}")]);
        }
        cmd.args(["--cmdline", &cmdline]);
    } else {
        cmd.args(["-M", "q35", "-accel", "tcg", "-smp", "1"])
            .arg("-m")
            .arg(opts.memory_mib.to_string())
            .args(["-nographic", "-display", "none", "-monitor", "none"])
            .args(["-serial", "stdio", "-no-reboot", "-nodefaults"])
            .args(["-kernel".as_ref(), opts.kernel.as_os_str()])
            .args(["-initrd".as_ref(), initrd.as_os_str()])
            .args(["-append", &cmdline])
            .arg("-drive")
            .arg(format!(
                "file={file},format=raw,if=none,id=d0,cache={}",
                match cache {
                    HostCache::Cached => "writeback",
                    HostCache::Direct => "none",
                }
            ))
            .args(["-device", "virtio-blk-pci,drive=d0"]);
        if let Some(tap) = tap {
            cmd.arg("-netdev")
                .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
                .args(["-device", "virtio-net-pci,netdev=n0"]);
        }
    }
    cmd
}

fn guest_row(
    opts: &IoBenchOptions,
    initrd: &Path,
    (machine, cache): (IoMachine, HostCache),
    netns: Result<&Netns, &String>,
) -> IoRow {
    let listener = netns.map_err(Clone::clone).and_then(|ns| {
        ns.listen(opts.timeout)
            .map(|l| (ns, l))
            .map_err(|e| format!("cannot listen: {e}"))
    });
    let mut cmd = guest_command(
        opts,
        initrd,
        (machine, cache),
        listener.as_ref().ok().map(|(ns, _)| ns.tap.as_str()),
    );
    if let Ok((ns, _)) = &listener {
        cmd = ns.wrap(cmd);
    }
    let run = process::run(&mut cmd, opts.timeout);
    // The guest is gone: a listener still waiting will get nothing.
    let net_result = listener.map(|(_, l)| l.stop_and_join());
    let done = match run {
        Ok(done) => done,
        Err(e) => {
            let (disk, net) = match not_found(&e) {
                Some(w) => (Outcome::Unavailable(w.clone()), Outcome::Unavailable(w)),
                None => (Outcome::Failed(describe(&e)), Outcome::Failed(describe(&e))),
            };
            return IoRow {
                machine,
                cache,
                disk,
                net,
            };
        }
    };
    let tail = process::tail(&done.output, 4);
    let disk = match guest_disk(&done.output) {
        Ok(d) => Outcome::Measured(d),
        Err(e) => Outcome::Failed(format!("{e}: exit {}: {tail}", done.status)),
    };
    let net = match net_result {
        Err(why) => Outcome::Unavailable(why),
        Ok(Ok(mib_s)) => Outcome::Measured(mib_s),
        Ok(Err(e)) => Outcome::Failed(format!(
            "{e} (guest nc status {})",
            result_line(&done.output, "net").unwrap_or_else(|| "missing".into())
        )),
    };
    IoRow {
        machine,
        cache,
        disk,
        net,
    }
}

/// A network namespace this benchmark made, with a TAP inside; deleted
/// (with the TAP) on drop. The host side is 10.77.0.1/24 (also used by the
/// workload benchmark).
pub(crate) struct Netns {
    pub(crate) name: String,
    pub(crate) tap: String,
}

impl Netns {
    pub(crate) fn create(tap: &str) -> Result<Netns, String> {
        if !Path::new("/dev/net/tun").exists() {
            return Err("no /dev/net/tun".to_string());
        }
        let name = format!("vessel-bench-io-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            tap: tap.to_string(),
        };
        let [a, b, c, d] = HOST_ADDR;
        let host = format!("{a}.{b}.{c}.{d}/24");
        for args in [
            vec!["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"],
            vec!["addr", "add", &host, "dev", tap],
            vec!["link", "set", tap, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend(args);
            ip(&all)?;
        }
        Ok(ns)
    }

    /// `cmd` run inside the namespace through `ip netns exec`.
    pub(crate) fn wrap(&self, cmd: Command) -> Command {
        let mut w = Command::new("ip");
        w.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        w
    }

    /// Binds the host-side listener inside the namespace (on a thread that
    /// enters it) and waits there for one connection.
    fn listen(&self, timeout: Duration) -> Result<Receiver, String> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let ns = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("bench-io-net".into())
            .spawn(move || {
                // SAFETY: setns on a valid open namespace fd changes only
                // this thread's network namespace; no memory is involved.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let _ = tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
                    return Err("setns failed".to_string());
                }
                let addr = SocketAddr::from((HOST_ADDR, NET_PORT));
                let bound = TcpListener::bind(addr);
                let ok = bound.as_ref().map(|_| ()).map_err(|e| e.to_string());
                let _ = tx.send(ok);
                receive(bound.map_err(|e| e.to_string())?, timeout, &stop_thread)
            })
            .map_err(|e| e.to_string())?;
        match rx.recv() {
            Ok(Ok(())) => Ok(Receiver { handle, stop }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("listener thread ended".to_string()),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let done = process::run(Command::new("ip").args(args), Duration::from_secs(20))
        .map_err(|e| format!("ip {}: {}", args.join(" "), describe(&e)))?;
    if done.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            process::tail(&done.output, 2)
        ))
    }
}

/// The host-side listener's thread.
struct Receiver {
    handle: JoinHandle<Result<f64, String>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn stop_and_join(self) -> Result<f64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .unwrap_or_else(|_| Err("listener panicked".to_string()))
    }
}

/// Accepts one connection before `timeout` (or `stop`) and reads it to
/// its end: MiB/s from the first byte to end of stream. After `stop`, a
/// read that stalls for a second ends it.
pub fn receive(listener: TcpListener, timeout: Duration, stop: &AtomicBool) -> Result<f64, String> {
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                    return Err("no connection from the guest".to_string());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    let mut first = None;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && !stop.load(Ordering::Relaxed) => {}
            Err(e) => return Err(format!("after {bytes} bytes: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {bytes} bytes"));
        }
    }
    let secs = first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    if bytes == 0 || secs <= 0.0 {
        return Err("no bytes from the guest".to_string());
    }
    Ok(bytes as f64 / (1024.0 * 1024.0) / secs)
}

#[path = "io_report.rs"]
mod report;

#[cfg(test)]
#[path = "io_tests.rs"]
mod tests;
