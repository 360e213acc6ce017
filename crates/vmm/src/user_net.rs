//! User-mode networking without root (`--net user`): vessel starts
//! Debian's `passt` as the invoking user (root hands it to `nobody`, as
//! passt itself insists), connected to the VM's virtio-net device through
//! a socket pair (passt's `--fd`), and stops it when the VM ends.
//!
//! The addresses follow QEMU's user networking: the guest is 10.0.2.15/24,
//! 10.0.2.2 is the gateway and reaches the host's loopback (passt maps
//! its gateway address to the host), 10.0.2.3 forwards DNS to the host's
//! resolver. The guest's init sets them from [`guest_cmdline`] (no DHCP
//! round trip at boot). `-p HOST:GUEST[/tcp|/udp]` becomes passt's
//! `-t`/`-u` forwarding; IPv4 only.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The guest's address and prefix length.
pub const GUEST_ADDR: &str = "10.0.2.15";
pub const GUEST_PREFIX: u8 = 24;
/// The gateway: connections to it reach the host's loopback.
pub const GATEWAY: &str = "10.0.2.2";
/// DNS queries to this address go to the host's resolver.
pub const DNS: &str = "10.0.2.3";

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One published port: the host's `host` forwards to the guest's `guest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
    pub protocol: Protocol,
}

impl std::str::FromStr for PortForward {
    type Err = UserNetError;

    /// `HOST:GUEST`, `PORT` (the same on both sides), each with an
    /// optional `/tcp` (the default) or `/udp`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UserNetError::BadPort(s.to_string());
        let (ports, protocol) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n != 0).ok_or_else(bad);
        let (host, guest) = match ports.split_once(':') {
            Some((h, g)) => (port(h)?, port(g)?),
            None => (port(ports)?, port(ports)?),
        };
        Ok(PortForward {
            host,
            guest,
            protocol,
        })
    }
}

/// What `--net user` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNetConfig {
    /// Guest MAC address; the device's default when absent.
    pub mac: Option<[u8; 6]>,
    /// The name the VMM finds the interface by.
    pub id: Option<String>,
    pub forwards: Vec<PortForward>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserNetError {
    #[error("passt is not installed: install it (apt-get install passt) or choose --net tap=NAME")]
    NoPasst,
    #[error("bad port {0:?}: expected HOST_PORT:GUEST_PORT[/tcp|/udp] with ports 1-65535")]
    BadPort(String),
    #[error("cannot create the socket pair for passt")]
    Socket(#[source] std::io::Error),
    #[error("cannot start passt ({0})")]
    Spawn(PathBuf, #[source] std::io::Error),
}

/// The kernel parameter that makes the default guest's init configure
/// eth0 for user networking.
pub fn guest_cmdline() -> String {
    format!("vessel.net={GUEST_ADDR}/{GUEST_PREFIX},gw={GATEWAY},dns={DNS}")
}

/// Where passt is: the first `passt` on PATH, else /usr/bin/passt.
pub fn find_passt() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("passt"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// passt's arguments for `cfg`, talking over inherited descriptor `fd`.
pub fn passt_args(cfg: &UserNetConfig, fd: i32) -> Vec<String> {
    let mut args: Vec<String> = [
        "--foreground",
        "--quiet",
        "--one-off",
        "--ipv4-only",
        "--fd",
        &fd.to_string(),
        "--address",
        GUEST_ADDR,
        "--netmask",
        &GUEST_PREFIX.to_string(),
        "--gateway",
        GATEWAY,
        "--dns-forward",
        DNS,
        "--mtu",
        "1500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for f in &cfg.forwards {
        let flag = match f.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        };
        args.push(flag.to_string());
        args.push(format!("{}:{}", f.host, f.guest));
    }
    args
}

/// A running passt; dropping it stops passt.
pub struct UserNet {
    child: Arc<Mutex<Child>>,
    stopping: Arc<AtomicBool>,
}

impl UserNet {
    /// Starts passt for `cfg`; returns it with vessel's end of the socket.
    pub fn start(cfg: &UserNetConfig) -> Result<(UserNet, UnixStream), UserNetError> {
        let passt = find_passt().ok_or(UserNetError::NoPasst)?;
        let (ours, theirs) = UnixStream::pair().map_err(UserNetError::Socket)?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&passt);
        cmd.args(passt_args(cfg, fd))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls fcntl, which is async-signal-safe, on a descriptor
        // that stays open in the child (`theirs` lives until after spawn).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| UserNetError::Spawn(passt.clone(), e))?;
        drop(theirs);
        let stopping = Arc::new(AtomicBool::new(false));
        let stderr = child.stderr.take();
        let child = Arc::new(Mutex::new(child));
        if let Some(stderr) = stderr {
            let (child, stopping) = (child.clone(), stopping.clone());
            let _ = std::thread::Builder::new()
                .name("passt-watch".into())
                .spawn(move || watch(BufReader::new(stderr), &child, &stopping));
        }
        Ok((UserNet { child, stopping }, ours))
    }
}

/// Follows passt's stderr until it ends (passt exited) and says so,
/// unless vessel stopped it or it ended cleanly because the VM's end of
/// the socket closed (`--one-off`).
fn watch(stderr: impl BufRead, child: &Mutex<Child>, stopping: &AtomicBool) {
    let mut last = Vec::new();
    for line in stderr.lines().map_while(Result::ok) {
        // passt tries syslog first; where there is none it says so per line.
        if line.starts_with("Failed to send") && line.ends_with("to syslog") {
            continue;
        }
        log::debug!("passt: {line}");
        last.push(line);
        if last.len() > 5 {
            last.remove(0);
        }
    }
    // stderr ends when passt exits; poll so the lock is never held while
    // waiting (Drop takes it to stop passt).
    let status = loop {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match child.lock().unwrap_or_else(|p| p.into_inner()).try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // --one-off: passt ends with status 0 once the VM's end is closed.
    if status.as_ref().is_ok_and(|s| s.success()) {
        return;
    }
    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
    let msg = format!(
        "user network: passt exited ({status}), the guest's network is down ({})",
        last.join("; ")
    );
    if log::log_enabled!(log::Level::Error) {
        log::error!("{msg}");
    } else {
        eprintln!("vessel: {msg}");
    }
}

impl Drop for UserNet {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        // Once reaped (by the watch thread) the child is not signalled.
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        let p: PortForward = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PortForward {
                host: 8080,
                guest: 80,
                protocol: Protocol::Tcp
            }
        );
        let p: PortForward = "53/udp".parse().unwrap();
        assert_eq!((p.host, p.guest, p.protocol), (53, 53, Protocol::Udp));
        let p: PortForward = "1:2/tcp".parse().unwrap();
        assert_eq!((p.host, p.guest), (1, 2));
        for bad in [
            "", "0:80", "80:", "x:1", "65536:1", "1:2/sctp", "1:2:3", "-1",
        ] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad}");
        }
    }

    #[test]
    fn passt_gets_addresses_and_forwards() {
        let cfg = UserNetConfig {
            forwards: vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()],
            ..Default::default()
        };
        let args = passt_args(&cfg, 7).join(" ");
        assert!(args.contains("--fd 7"), "{args}");
        assert!(args.contains("--gateway 10.0.2.2"), "{args}");
        assert!(args.contains("--address 10.0.2.15 --netmask 24"), "{args}");
        assert!(args.contains("--dns-forward 10.0.2.3"), "{args}");
        assert!(args.ends_with("-t 8080:80 -u 5353:53"), "{args}");
        assert_eq!(
            guest_cmdline(),
            "vessel.net=10.0.2.15/24,gw=10.0.2.2,dns=10.0.2.3"
        );
    }

    #[test]
    fn passt_starts_and_stops_with_the_vm() {
        if find_passt().is_none() {
            eprintln!("SKIPPED: passt is not installed (apt-get install passt)");
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have passt (scripts/setup installs it)"
            );
            return;
        }
        let (net, sock) = UserNet::start(&UserNetConfig::default()).unwrap();
        let pid = net.child.lock().unwrap().id() as i32;
        // An ARP request for the gateway gets passt's answer.
        let mut backend = virtio::net::stream::StreamBackend::new(sock).unwrap();
        let arp = arp_request();
        virtio::net::NetBackend::send(&mut backend, &arp).unwrap();
        let mut buf = vec![0u8; 70_000];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let reply = loop {
            match virtio::net::NetBackend::recv(&mut backend, &mut buf) {
                Ok(n) => break buf[12..n].to_vec(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no ARP reply");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        // EtherType ARP, opcode 2 (reply), sender IP 10.0.2.2.
        assert_eq!(&reply[12..14], &[0x08, 0x06]);
        assert_eq!(&reply[20..22], &[0, 2]);
        assert_eq!(&reply[28..32], &[10, 0, 2, 2]);
        drop(net);
        // SAFETY: kill with signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "passt still runs after the VM ended");
    }

    #[test]
    fn a_dead_passt_takes_the_network_down() {
        if find_passt().is_none() {
            eprintln!("SKIPPED: passt is not installed (apt-get install passt)");
            return;
        }
        let (net, sock) = UserNet::start(&UserNetConfig::default()).unwrap();
        let pid = net.child.lock().unwrap().id() as i32;
        // SAFETY: signals the passt child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let mut backend = virtio::net::stream::StreamBackend::new(sock).unwrap();
        let mut buf = vec![0u8; 70_000];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match virtio::net::NetBackend::recv(&mut backend, &mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no hang-up seen");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => panic!("{other:?}"),
            }
        }
        let sent = virtio::net::NetBackend::send(&mut backend, &arp_request());
        assert_eq!(sent.unwrap_err().kind(), std::io::ErrorKind::NotConnected);
    }

    /// "Who has 10.0.2.2? Tell 10.0.2.15", with a zero virtio-net header.
    fn arp_request() -> Vec<u8> {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let mut f = vec![0u8; 12];
        f.extend([0xff; 6]);
        f.extend(mac);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend(mac);
        f.extend([10, 0, 2, 15]);
        f.extend([0; 6]);
        f.extend([10, 0, 2, 2]);
        f
    }
}
