//! A network namespace a test makes for itself, with a TAP device inside
//! that vessel, run in the namespace, attaches to; deleted on drop.

use std::process::Command;

pub struct Netns(pub String);

impl Netns {
    /// A namespace named after the test and this process, holding `tap`
    /// (with a virtio-net header) at `host_addr` (CIDR), up.
    pub fn create(test: &str, tap: &str, host_addr: &str) -> Netns {
        let ns = Netns(format!("vessel-{test}-{}", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        ns.exec_ok(&["ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"]);
        ns.exec_ok(&["ip", "addr", "add", host_addr, "dev", tap]);
        ns.exec_ok(&["ip", "link", "set", tap, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NS args...` as a command to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    pub fn exec_ok(&self, args: &[&str]) {
        let st = self.command(args).status().expect("run ip netns exec");
        assert!(st.success(), "{args:?} in {} failed: {st}", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed: {st}");
}

/// True when this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}
