//! The guest's network from the command line: `--net user` (passt, no
//! root; the default for vessel's own guest when no `--net` is given and
//! passt is installed),
//! `--net none`, `--net tap=NAME` with an optional static address for the
//! guest (`ip=ADDR/PREFIX[,gw=GW][,dns=DNS]`), `-p HOST:GUEST[/udp]`
//! published ports, a random MAC per interface unless one is given, and
//! the `vessel.net=` kernel parameters that make the default guest's init
//! configure its interfaces.

use vmm::user_net::{self, PortForward, UserNetConfig};
use vmm::virtio_devices::NetConfig;

/// Why a network option is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum NetArgError {
    TwoUser,
    NoneWithOthers,
    Option { arg: String, opt: String },
    Address { arg: String, opt: String },
    Port(String),
    PublishWithoutUser,
    NoPasst,
}

impl std::fmt::Display for NetArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TwoUser => write!(f, "--net user is given twice: one user network per VM"),
            Self::NoneWithOthers => write!(f, "--net none cannot be combined with another --net"),
            Self::Option { arg, opt } => write!(
                f,
                "--net {arg:?}: unknown option {opt:?} (user takes mac=MAC and id=NAME)"
            ),
            Self::Address { arg, opt } => write!(
                f,
                "--net {arg:?}: bad address in {opt:?} (ip=ADDR/PREFIX, gw=ADDR, dns=ADDR, IPv4)"
            ),
            Self::Port(p) => write!(
                f,
                "-p {p:?}: expected HOST_PORT:GUEST_PORT[/tcp|/udp] with ports 1-65535"
            ),
            Self::PublishWithoutUser => write!(
                f,
                "-p needs user networking: drop --net tap/none or add --net user"
            ),
            Self::NoPasst => write!(
                f,
                "--net user needs passt: install it (apt-get install passt) or use --net tap=NAME"
            ),
        }
    }
}

impl std::error::Error for NetArgError {}

/// The network part of a VM: TAP interfaces, then the user network.
#[derive(Debug, Default)]
pub struct Nets {
    pub taps: Vec<NetConfig>,
    pub user: Option<UserNetConfig>,
    /// `vessel.net=` parameters for the guest's init.
    pub cmdline: Vec<String>,
}

/// What the choice of network depends on besides the options.
#[derive(Debug, Clone, Copy)]
pub struct NetEnv {
    /// passt is installed.
    pub passt: bool,
    /// No `--net` means user networking (vessel's own guest), not none.
    pub default_user: bool,
}

impl NetEnv {
    /// The default network is wanted but cannot be had.
    pub fn default_missing(&self, nets: &[String]) -> bool {
        nets.is_empty() && self.default_user && !self.passt
    }
}

/// Reads `--net` and `-p`; `parse_tap` reads a TAP's own options.
pub fn parse(
    nets: &[String],
    publish: &[String],
    env: NetEnv,
    parse_tap: impl Fn(&str) -> Result<NetConfig, crate::device_args::DeviceArgError>,
) -> Result<Nets, crate::device_args::DeviceArgError> {
    let forwards = publish
        .iter()
        .map(|p| {
            p.parse::<PortForward>()
                .map_err(|_| NetArgError::Port(p.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Nets::default();
    let none = nets.iter().any(|n| n == "none");
    if none && nets.len() > 1 {
        return Err(NetArgError::NoneWithOthers.into());
    }
    for arg in nets.iter().filter(|n| *n != "none") {
        let eth = out.taps.len();
        if arg == "user" || arg.starts_with("user,") {
            if out.user.is_some() {
                return Err(NetArgError::TwoUser.into());
            }
            out.user = Some(parse_user(arg)?);
            continue;
        }
        let (tap_opts, addr) = split_address(arg)?;
        let mut tap = parse_tap(&tap_opts)?;
        tap.mac.get_or_insert_with(random_mac);
        if let Some(addr) = addr {
            out.cmdline.push(format!("vessel.net={addr},dev=eth{eth}"));
        }
        out.taps.push(tap);
    }
    if nets.is_empty() && env.default_user && env.passt {
        out.user = Some(UserNetConfig::default());
    }
    match out.user.as_mut() {
        Some(user) => {
            if !env.passt {
                return Err(NetArgError::NoPasst.into());
            }
            user.mac.get_or_insert_with(random_mac);
            user.forwards = forwards;
            out.cmdline.push(format!(
                "{},dev=eth{}",
                user_net::guest_cmdline(),
                out.taps.len()
            ));
        }
        None if !forwards.is_empty() => return Err(NetArgError::PublishWithoutUser.into()),
        None => {}
    }
    Ok(out)
}

/// The line `vessel run` prints when it boots without the default network.
pub const NO_PASST_NOTE: &str =
    "vessel: user networking is off because passt is not installed (apt-get install passt)";

fn parse_user(arg: &str) -> Result<UserNetConfig, NetArgError> {
    let mut cfg = UserNetConfig::default();
    for opt in arg.split(',').skip(1) {
        match opt.split_once('=') {
            Some(("mac", m)) => {
                cfg.mac =
                    Some(
                        crate::device_args::parse_mac(m).ok_or_else(|| NetArgError::Option {
                            arg: arg.to_string(),
                            opt: opt.to_string(),
                        })?,
                    )
            }
            Some(("id", id)) if !id.is_empty() => cfg.id = Some(id.to_string()),
            _ => {
                return Err(NetArgError::Option {
                    arg: arg.to_string(),
                    opt: opt.to_string(),
                })
            }
        }
    }
    Ok(cfg)
}

/// Splits `ip=`, `gw=` and `dns=` off a TAP's options: the rest, and the
/// guest's address setting (`ADDR/PREFIX[,gw=GW][,dns=DNS]`) if `ip=` is
/// there.
fn split_address(arg: &str) -> Result<(String, Option<String>), NetArgError> {
    let bad = |opt: &str| NetArgError::Address {
        arg: arg.to_string(),
        opt: opt.to_string(),
    };
    let (mut rest, mut ip, mut extra) = (Vec::new(), None, Vec::new());
    for opt in arg.split(',') {
        match opt.split_once('=') {
            Some(("ip", v)) => {
                let (a, p) = v.split_once('/').ok_or_else(|| bad(opt))?;
                a.parse::<std::net::Ipv4Addr>().map_err(|_| bad(opt))?;
                p.parse::<u8>()
                    .ok()
                    .filter(|p| (1..=32).contains(p))
                    .ok_or_else(|| bad(opt))?;
                ip = Some(v.to_string());
            }
            Some((k @ ("gw" | "dns"), v)) => {
                v.parse::<std::net::Ipv4Addr>().map_err(|_| bad(opt))?;
                extra.push(format!("{k}={v}"));
            }
            _ => rest.push(opt),
        }
    }
    match ip {
        Some(ip) => {
            let mut s = ip;
            for e in extra {
                s.push(',');
                s.push_str(&e);
            }
            Ok((rest.join(","), Some(s)))
        }
        None if !extra.is_empty() => Err(bad("gw/dns without ip")),
        None => Ok((rest.join(","), None)),
    }
}

/// A locally administered unicast MAC, 52:54:00 and three random bytes.
pub fn random_mac() -> [u8; 6] {
    use std::io::Read;
    let mut b = [0u8; 3];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // No /dev/urandom: the pid and the clock still differ per VM.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let x = t ^ std::process::id().rotate_left(12);
        b.copy_from_slice(&x.to_le_bytes()[..3]);
    }
    [0x52, 0x54, 0x00, b[0], b[1], b[2]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_args::DeviceArgError;

    const ENV: NetEnv = NetEnv {
        passt: true,
        default_user: true,
    };

    fn tap(arg: &str) -> Result<NetConfig, DeviceArgError> {
        let name = arg
            .split(',')
            .find_map(|o| o.strip_prefix("tap="))
            .ok_or_else(|| DeviceArgError::NetTap(arg.to_string()))?;
        Ok(NetConfig::new(name))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_is_user_when_passt_is_there() {
        let n = parse(&[], &[], ENV, tap).unwrap();
        let user = n.user.unwrap();
        assert_eq!(user.mac.unwrap()[..3], [0x52, 0x54, 0]);
        assert_eq!(
            n.cmdline,
            ["vessel.net=10.0.2.15/24,gw=10.0.2.2,dns=10.0.2.3,dev=eth0"]
        );
        let no_passt = NetEnv {
            passt: false,
            ..ENV
        };
        assert!(no_passt.default_missing(&[]));
        let n = parse(&[], &[], no_passt, tap).unwrap();
        assert!(n.user.is_none() && n.taps.is_empty() && n.cmdline.is_empty());
        let own_kernel = NetEnv {
            default_user: false,
            ..ENV
        };
        assert!(!own_kernel.default_missing(&[]));
        let n = parse(&[], &[], own_kernel, tap).unwrap();
        assert!(n.user.is_none() && n.cmdline.is_empty());
        assert!(parse(&strings(&["user"]), &[], own_kernel, tap).is_ok_and(|n| n.user.is_some()));
        let n = parse(&strings(&["none"]), &[], ENV, tap).unwrap();
        assert!(n.user.is_none() && n.cmdline.is_empty());
    }

    #[test]
    fn user_with_ports_and_options() {
        let no_passt = NetEnv {
            passt: false,
            ..ENV
        };
        let n = parse(
            &strings(&["user,mac=52:54:00:00:00:07,id=net0"]),
            &strings(&["8080:80", "53/udp"]),
            ENV,
            tap,
        )
        .unwrap();
        let u = n.user.unwrap();
        assert_eq!(u.mac, Some([0x52, 0x54, 0, 0, 0, 7]));
        assert_eq!(u.id.as_deref(), Some("net0"));
        assert_eq!(u.forwards.len(), 2);
        assert_eq!(
            parse(&strings(&["user"]), &[], no_passt, tap).unwrap_err(),
            NetArgError::NoPasst.into()
        );
        assert!(parse(&strings(&["user", "user"]), &[], ENV, tap).is_err());
        assert!(parse(&strings(&["user,bogus"]), &[], ENV, tap).is_err());
        assert!(parse(&strings(&["none", "user"]), &[], ENV, tap).is_err());
        assert!(parse(&[], &strings(&["80:80:80"]), ENV, tap).is_err());
        assert_eq!(
            parse(&strings(&["tap=t0"]), &strings(&["80"]), ENV, tap).unwrap_err(),
            NetArgError::PublishWithoutUser.into()
        );
    }

    #[test]
    fn tap_with_a_static_address_and_user_after_it() {
        let n = parse(
            &strings(&["tap=t0,ip=10.1.0.2/24,gw=10.1.0.1,dns=10.1.0.1", "user"]),
            &[],
            ENV,
            tap,
        )
        .unwrap();
        assert_eq!(n.taps[0].tap, "t0");
        assert!(n.taps[0].mac.is_some(), "a tap gets its own mac");
        assert_eq!(
            n.cmdline,
            [
                "vessel.net=10.1.0.2/24,gw=10.1.0.1,dns=10.1.0.1,dev=eth0",
                "vessel.net=10.0.2.15/24,gw=10.0.2.2,dns=10.0.2.3,dev=eth1"
            ]
        );
        let n = parse(&strings(&["tap=t0"]), &[], ENV, tap).unwrap();
        assert!(n.user.is_none() && n.cmdline.is_empty());
        for bad in [
            "tap=t0,ip=10.1.0.2",
            "tap=t0,ip=x/24",
            "tap=t0,ip=10.0.0.1/33",
            "tap=t0,gw=1.2.3.4",
        ] {
            assert!(parse(&strings(&[bad]), &[], ENV, tap).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_differ_per_vm() {
        let a = random_mac();
        let b = random_mac();
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_ne!(a, b);
    }
}
