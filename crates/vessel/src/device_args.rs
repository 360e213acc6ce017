//! Command-line options for the paravirtual devices (`--rootfs`, `--disk`,
//! `--net`, `--rng`, `--balloon`, `--vsock`) and their translation into the VMM's
//! `DeviceConfig` (plus the kernel parameters `--rootfs` needs).

use std::path::PathBuf;
use std::time::Duration;
use vmm::virtio_devices::VsockConfig;
use vmm::virtio_devices::{
    BalloonConfig, BlockConfig, CacheType, DeviceConfig, IoEngine, NetConfig, RateLimiterConfig,
    TokenBucketConfig,
};

#[derive(clap::Args, Debug, Default)]
pub struct DeviceArgs {
    /// Boot with this ext4 image (see `vessel guest prepare --rootfs`) as
    /// the root file system: attached as /dev/vda, read-write, before any
    /// --disk, with `root=/dev/vda rw` added to the kernel command line.
    #[arg(long, value_name = "PATH")]
    pub rootfs: Option<PathBuf>,
    /// A disk backed by a raw image. Repeatable. if=virtio (default): a
    /// virtio disk, the first is /dev/vda; if=nvme: an emulated NVMe
    /// controller (/dev/nvme0n1, ...); if=ide: the master of an emulated
    /// PIIX3 IDE controller (one at most; Linux's ata_piix, /dev/sda): for
    /// guests without virtio drivers (they take readonly, id (the
    /// serial), cache, direct and lock).
    /// cache=writeback (default: guest flushes reach the disk)
    /// or unsafe (no flush); direct=on bypasses the host page cache;
    /// io=async serves reads, writes and flushes through io_uring;
    /// lock=off opens the image without the lock that keeps other VMs
    /// from writing it meanwhile (shared when readonly, else exclusive);
    /// bw=BYTES and iops=N limit it per second (K/M/G suffixes, 1024-based).
    #[arg(
        long = "disk",
        value_name = "PATH[,if=virtio|nvme|ide][,readonly][,id=NAME][,cache=unsafe|writeback][,direct=on|off][,lock=on|off][,io=sync|async][,bw=BYTES][,iops=N]"
    )]
    pub disks: Vec<String>,
    /// A virtio network interface. Repeatable. `user` (the default when
    /// passt is installed): user-mode networking through passt, no root;
    /// the guest is 10.0.2.15, 10.0.2.2 reaches the host's loopback.
    /// `tap=NAME`: a host TAP device; ip=ADDR/PREFIX[,gw=,dns=] configure
    /// the guest's side; rx-bw/tx-bw limit what the guest receives/sends,
    /// bytes per second. `none`: no network.
    #[arg(
        long = "net",
        value_name = "user[,mac=MAC][,id=NAME] | tap=NAME[,mac=MAC][,id=NAME][,ip=ADDR/PREFIX][,gw=ADDR][,dns=ADDR][,rx-bw=BYTES][,tx-bw=BYTES] | none"
    )]
    pub nets: Vec<String>,
    /// Publish a guest port on the host (user networking). Repeatable.
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "HOST_PORT:GUEST_PORT[/tcp|/udp]"
    )]
    pub publish: Vec<String>,
    /// No --net means user networking (set for vessel's own guest).
    #[arg(skip)]
    pub default_user_net: bool,
    /// A virtio entropy device fed from the host's getrandom.
    #[arg(long)]
    pub rng: bool,
    /// A virtio balloon: target=MiB[,deflate-after=SECONDS] (the guest gives
    /// back MiB of memory; optionally takes it back after SECONDS).
    #[arg(long, value_name = "target=MiB[,deflate-after=SECONDS]")]
    pub balloon: Option<String>,
    /// A virtio vsock device with guest context ID N: host programs connect
    /// to the Unix socket PATH and write `CONNECT <port>\n`; guest
    /// connections to host port P reach PATH_P (Firecracker's scheme).
    #[arg(long, value_name = "cid=N,uds=PATH")]
    pub vsock: Option<String>,
    /// Share a host directory with the guest over virtio-fs, mounted at
    /// GUEST_DIR by the default guest; `:ro` refuses every write. Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST_DIR:GUEST_DIR[:ro]",
          value_parser = crate::share_args::parse_volume)]
    pub volumes: Vec<crate::share_args::Volume>,
}

/// Why a device option is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceArgError {
    DiskPath(String),
    DiskOption { arg: String, opt: String },
    DiskId(String),
    DiskValue { arg: String, opt: String },
    DiskNotVirtio { arg: String, opt: String },
    NetTap(String),
    NetOption { arg: String, opt: String },
    NetMac(String),
    Balloon(String),
    Vsock(String),
    Net(crate::net_args::NetArgError),
}

impl From<crate::net_args::NetArgError> for DeviceArgError {
    fn from(e: crate::net_args::NetArgError) -> Self {
        Self::Net(e)
    }
}

impl std::fmt::Display for DeviceArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DiskPath(a) => write!(f, "--disk {a:?}: no image path"),
            Self::DiskOption { arg, opt } => write!(f, "--disk {arg:?}: unknown option {opt:?}"),
            Self::DiskId(a) => write!(f, "--disk {a:?}: id is longer than 20 bytes"),
            Self::DiskValue { arg, opt } => write!(
                f,
                "--disk {arg:?}: bad value in {opt:?} (if=virtio|nvme|ide, cache=unsafe|writeback, direct=on|off, lock=on|off, \
                 io=sync|async, bw=BYTES, iops=N; sizes may end in K, M or G)"
            ),
            Self::DiskNotVirtio { arg, opt } => write!(
                f,
                "--disk {arg:?}: {opt:?} applies to virtio disks only (if=virtio)"
            ),
            Self::NetTap(a) => write!(f, "--net {a:?}: tap=NAME (at most 15 bytes) is required"),
            Self::NetOption { arg, opt } => write!(
                f,
                "--net {arg:?}: unknown option or bad value {opt:?} (rx-bw=BYTES, tx-bw=BYTES)"
            ),
            Self::NetMac(a) => write!(
                f,
                "--net {a:?}: mac must be six hex bytes like 52:54:00:12:34:56"
            ),
            Self::Balloon(a) => write!(
                f,
                "--balloon {a:?}: expected target=MiB[,deflate-after=SECONDS]"
            ),
            Self::Vsock(a) => write!(
                f,
                "--vsock {a:?}: expected cid=N,uds=PATH with N of 3 or more"
            ),
            Self::Net(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DeviceArgError {}

/// Kernel parameters that make the guest mount /dev/vda as its root.
pub const ROOTFS_CMDLINE: &str = "root=/dev/vda rw";

impl DeviceArgs {
    fn net_env(&self) -> crate::net_args::NetEnv {
        crate::net_args::NetEnv {
            passt: vmm::user_net::find_passt().is_some(),
            default_user: self.default_user_net,
        }
    }

    /// Kernel parameters the devices need on the guest's command line
    /// (`root=` for `--rootfs`, `vessel.net=` for configured networks),
    /// or `None`.
    pub fn cmdline_extra(&self) -> Option<String> {
        let nets = crate::net_args::parse(&self.nets, &self.publish, self.net_env(), parse_net)
            .map(|n| n.cmdline)
            .unwrap_or_default();
        let root = self.rootfs.is_some().then_some(ROOTFS_CMDLINE.to_string());
        let all: Vec<String> = root.into_iter().chain(nets).collect();
        (!all.is_empty()).then(|| all.join(" "))
    }

    pub fn into_config(self) -> Result<DeviceConfig, DeviceArgError> {
        let env = self.net_env();
        if env.default_missing(&self.nets) {
            eprintln!("{}", crate::net_args::NO_PASST_NOTE);
        }
        let nets = crate::net_args::parse(&self.nets, &self.publish, env, parse_net)?;
        let root = self.rootfs.map(|path| BlockConfig {
            id: Some("rootfs".to_string()),
            ..BlockConfig::new(path)
        });
        let mut disks: Vec<BlockConfig> = root.into_iter().collect();
        let (mut nvme, mut ide) = (Vec::new(), Vec::new());
        for d in &self.disks {
            match parse_disk(d)? {
                (DiskInterface::Virtio, cfg) => disks.push(cfg),
                (DiskInterface::Nvme, cfg) => nvme.push(cfg),
                (DiskInterface::Ide, cfg) => ide.push(cfg),
            }
        }
        Ok(DeviceConfig {
            disks,
            nvme,
            ide,
            nets: nets.taps,
            user_net: nets.user,
            rng: self.rng,
            balloon: self.balloon.as_deref().map(parse_balloon).transpose()?,
            vsock: self.vsock.as_deref().map(parse_vsock).transpose()?,
            shares: crate::share_args::fs_configs(&self.volumes),
        })
    }
}

/// Which controller a `--disk` goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskInterface {
    Virtio,
    Nvme,
    Ide,
}

fn parse_disk(arg: &str) -> Result<(DiskInterface, BlockConfig), DeviceArgError> {
    let mut parts = arg.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| DeviceArgError::DiskPath(arg.to_string()))?;
    let mut cfg = BlockConfig::new(path);
    let bad = |opt: &str| DeviceArgError::DiskValue {
        arg: arg.to_string(),
        opt: opt.to_string(),
    };
    let mut limits = RateLimiterConfig::default();
    let mut interface = DiskInterface::Virtio;
    // Options only virtio-blk serves.
    let mut virtio_only = None;
    for opt in parts {
        if ["io=", "bw=", "iops="].iter().any(|p| opt.starts_with(p)) {
            virtio_only = Some(opt);
        }
        match opt.split_once('=') {
            Some(("if", "virtio")) => interface = DiskInterface::Virtio,
            Some(("if", "nvme")) => interface = DiskInterface::Nvme,
            Some(("if", "ide")) => interface = DiskInterface::Ide,
            Some(("if", _)) => return Err(bad(opt)),
            None if opt == "readonly" || opt == "ro" => cfg.readonly = true,
            Some(("id", id)) if id.len() <= 20 => cfg.id = Some(id.to_string()),
            Some(("id", _)) => return Err(DeviceArgError::DiskId(arg.to_string())),
            Some(("cache", "unsafe")) => cfg.cache = CacheType::Unsafe,
            Some(("cache", "writeback")) => cfg.cache = CacheType::Writeback,
            Some(("direct", v)) => cfg.direct = parse_on_off(v).ok_or_else(|| bad(opt))?,
            Some(("lock", v)) => cfg.lock = parse_on_off(v).ok_or_else(|| bad(opt))?,
            Some(("io", "sync")) => cfg.io_engine = IoEngine::Sync,
            Some(("io", "async")) => cfg.io_engine = IoEngine::Async,
            Some(("io", _)) => return Err(bad(opt)),
            Some(("bw", v)) => limits.bandwidth = Some(per_second(v).ok_or_else(|| bad(opt))?),
            Some(("iops", v)) => limits.ops = Some(per_second(v).ok_or_else(|| bad(opt))?),
            Some(("cache", _)) => return Err(bad(opt)),
            _ => {
                return Err(DeviceArgError::DiskOption {
                    arg: arg.to_string(),
                    opt: opt.to_string(),
                })
            }
        }
    }
    cfg.rate_limiter = (!limits.is_unlimited()).then_some(limits);
    if let (DiskInterface::Nvme | DiskInterface::Ide, Some(opt)) = (interface, virtio_only) {
        return Err(DeviceArgError::DiskNotVirtio {
            arg: arg.to_string(),
            opt: opt.to_string(),
        });
    }
    Ok((interface, cfg))
}

fn parse_on_off(v: &str) -> Option<bool> {
    match v {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// `N[K|M|G]` (1024-based) per second: a bucket holding one second's
/// worth, refilled over one second.
fn per_second(v: &str) -> Option<TokenBucketConfig> {
    let (digits, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: u64 = digits.parse().ok()?;
    let n = n.checked_mul(1u64 << shift)?;
    (n > 0).then(|| TokenBucketConfig::per_second(n))
}

pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_net(arg: &str) -> Result<NetConfig, DeviceArgError> {
    let mut tap = None;
    let mut cfg = NetConfig::new("");
    let bad = |opt: &str| DeviceArgError::NetOption {
        arg: arg.to_string(),
        opt: opt.to_string(),
    };
    let bw = |v: &str, opt: &str| {
        let b = per_second(v).ok_or_else(|| bad(opt))?;
        Ok::<_, DeviceArgError>(Some(RateLimiterConfig {
            bandwidth: Some(b),
            ops: None,
        }))
    };
    for opt in arg.split(',') {
        match opt.split_once('=') {
            Some(("tap", name)) if !name.is_empty() && name.len() <= 15 => {
                tap = Some(name.to_string())
            }
            Some(("mac", m)) => {
                cfg.mac = Some(parse_mac(m).ok_or_else(|| DeviceArgError::NetMac(arg.to_string()))?)
            }
            Some(("id", id)) if !id.is_empty() => cfg.id = Some(id.to_string()),
            Some(("rx-bw", v)) => cfg.rx_rate_limiter = bw(v, opt)?,
            Some(("tx-bw", v)) => cfg.tx_rate_limiter = bw(v, opt)?,
            _ => {
                return Err(DeviceArgError::NetOption {
                    arg: arg.to_string(),
                    opt: opt.to_string(),
                })
            }
        }
    }
    cfg.tap = tap.ok_or_else(|| DeviceArgError::NetTap(arg.to_string()))?;
    Ok(cfg)
}

fn parse_balloon(arg: &str) -> Result<BalloonConfig, DeviceArgError> {
    let bad = || DeviceArgError::Balloon(arg.to_string());
    let mut cfg = BalloonConfig::default();
    let mut have_target = false;
    for opt in arg.split(',') {
        match opt.split_once('=') {
            Some(("target", v)) => {
                cfg.target_mib = v.parse().map_err(|_| bad())?;
                have_target = true;
            }
            Some(("deflate-after", v)) => {
                cfg.deflate_after = Some(Duration::from_secs(v.parse().map_err(|_| bad())?))
            }
            _ => return Err(bad()),
        }
    }
    have_target.then_some(cfg).ok_or_else(bad)
}

fn parse_vsock(arg: &str) -> Result<VsockConfig, DeviceArgError> {
    let bad = || DeviceArgError::Vsock(arg.to_string());
    let (mut cid, mut uds) = (None, None);
    for opt in arg.split(',') {
        match opt.split_once('=') {
            Some(("cid", v)) => cid = Some(v.parse::<u32>().map_err(|_| bad())?),
            Some(("uds", v)) if !v.is_empty() => uds = Some(PathBuf::from(v)),
            _ => return Err(bad()),
        }
    }
    match (cid, uds) {
        (Some(guest_cid), Some(uds_path)) if guest_cid >= 3 => Ok(VsockConfig {
            guest_cid,
            uds_path,
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The disk's options, whatever its interface.
    fn virtio_disk(arg: &str) -> Result<BlockConfig, DeviceArgError> {
        parse_disk(arg).map(|(_, cfg)| cfg)
    }

    #[test]
    fn disk_interfaces() {
        assert_eq!(parse_disk("/img").unwrap().0, DiskInterface::Virtio);
        assert_eq!(
            parse_disk("/img,if=virtio").unwrap().0,
            DiskInterface::Virtio
        );
        let (i, d) = parse_disk("/img,if=nvme,readonly,id=sn1").unwrap();
        assert_eq!(i, DiskInterface::Nvme);
        assert_eq!(parse_disk("/img,if=ide").unwrap().0, DiskInterface::Ide);
        assert!(d.readonly);
        assert_eq!(d.id.as_deref(), Some("sn1"));
        assert!(matches!(
            parse_disk("/img,if=scsi"),
            Err(DeviceArgError::DiskValue { .. })
        ));
        for opt in ["io=async", "bw=1M", "iops=10"] {
            assert!(matches!(
                parse_disk(&format!("/img,if=nvme,{opt}")),
                Err(DeviceArgError::DiskNotVirtio { .. })
            ));
        }
        let args = DeviceArgs {
            disks: vec!["/a.img,if=nvme".into(), "/b.img".into()],
            ..Default::default()
        };
        let cfg = args.into_config().unwrap();
        assert_eq!(cfg.nvme.len(), 1);
        assert_eq!(cfg.disks.len(), 1);
        assert_eq!(cfg.disks[0].path, PathBuf::from("/b.img"));
    }

    #[test]
    fn disks() {
        let d = virtio_disk("/img,readonly,id=root").unwrap();
        assert_eq!(d.path, PathBuf::from("/img"));
        assert!(d.readonly);
        assert_eq!(d.id.as_deref(), Some("root"));
        assert!(!virtio_disk("/img").unwrap().readonly);
        assert!(virtio_disk("").is_err());
        assert!(virtio_disk("/img,bogus").is_err());
        assert!(virtio_disk("/img,id=123456789012345678901").is_err());
    }

    #[test]
    fn disk_cache_direct_and_limits() {
        let d = virtio_disk("/img").unwrap();
        assert_eq!(d.cache, CacheType::Writeback);
        assert!(!d.direct);
        assert_eq!(d.rate_limiter, None);
        let d = virtio_disk("/img,cache=unsafe,direct=on,bw=4M,iops=100").unwrap();
        assert_eq!(d.cache, CacheType::Unsafe);
        assert!(d.direct);
        let l = d.rate_limiter.unwrap();
        assert_eq!(l.bandwidth, Some(TokenBucketConfig::per_second(4 << 20)));
        assert_eq!(l.ops, Some(TokenBucketConfig::per_second(100)));
        assert!(virtio_disk("/img,direct=off").is_ok_and(|d| !d.direct));
        assert!(virtio_disk("/img").is_ok_and(|d| d.lock));
        assert!(virtio_disk("/img,lock=off").is_ok_and(|d| !d.lock));
        assert_eq!(virtio_disk("/img").unwrap().io_engine, IoEngine::Sync);
        let d = virtio_disk("/img,io=async").unwrap();
        assert_eq!(d.io_engine, IoEngine::Async);
        assert_eq!(
            virtio_disk("/img,io=sync").unwrap().io_engine,
            IoEngine::Sync
        );
        for bad in [
            "io=uring",
            "lock=no",
            "cache=none",
            "direct=yes",
            "bw=",
            "bw=0",
            "bw=1X",
            "iops=-1",
            "bw=99999999999G",
        ] {
            assert!(
                matches!(
                    virtio_disk(&format!("/img,{bad}")),
                    Err(DeviceArgError::DiskValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn rootfs_is_the_first_disk_and_sets_root() {
        let args = DeviceArgs {
            rootfs: Some(PathBuf::from("/root.img")),
            disks: vec!["/data.img,readonly".into()],
            ..Default::default()
        };
        let extra = args.cmdline_extra().unwrap();
        assert!(extra.starts_with("root=/dev/vda rw"), "{extra}");
        let cfg = args.into_config().unwrap();
        assert_eq!(cfg.disks.len(), 2);
        assert_eq!(cfg.disks[0].path, PathBuf::from("/root.img"));
        assert!(!cfg.disks[0].readonly);
        assert_eq!(cfg.disks[1].path, PathBuf::from("/data.img"));
        assert!(cfg.disks[1].readonly);
        let none = DeviceArgs {
            nets: vec!["none".into()],
            ..Default::default()
        };
        assert_eq!(none.cmdline_extra(), None);
    }

    #[test]
    fn nets() {
        let n = parse_net("tap=vtap0,mac=52:54:00:aa:bb:0c").unwrap();
        assert_eq!(n.tap, "vtap0");
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0xaa, 0xbb, 0x0c]));
        assert!(parse_net("mac=52:54:00:aa:bb:0c").is_err());
        assert!(parse_net("tap=x,mac=52:54:00:aa:bb").is_err());
        assert!(parse_net("tap=a-name-way-too-long-for-linux").is_err());
        let n = parse_net("tap=t0,id=eth0,rx-bw=1M,tx-bw=512K").unwrap();
        assert_eq!(n.id.as_deref(), Some("eth0"));
        let bw = |l: Option<RateLimiterConfig>| l.and_then(|l| l.bandwidth).map(|b| b.size);
        assert_eq!(bw(n.rx_rate_limiter), Some(1 << 20));
        assert_eq!(bw(n.tx_rate_limiter), Some(512 << 10));
        assert!(parse_net("tap=t0,rx-bw=lots").is_err());
    }

    #[test]
    fn balloon() {
        let b = parse_balloon("target=64,deflate-after=20").unwrap();
        assert_eq!(b.target_mib, 64);
        assert_eq!(b.deflate_after, Some(Duration::from_secs(20)));
        assert!(parse_balloon("deflate-after=3").is_err());
        assert!(parse_balloon("target=x").is_err());
    }

    #[test]
    fn vsock() {
        let v = parse_vsock("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!(v.guest_cid, 3);
        assert_eq!(v.uds_path, PathBuf::from("/tmp/v.sock"));
        assert!(parse_vsock("cid=2,uds=/tmp/v.sock").is_err());
        assert!(parse_vsock("uds=/tmp/v.sock").is_err());
        assert!(parse_vsock("cid=3").is_err());
        assert!(parse_vsock("cid=3,uds=/v,x=1").is_err());
    }
}
