//! virtio-net in the real Debian guest on a TAP device, one boot: the test
//! makes its own network namespace with a TAP inside (10.0.2.1/24), runs
//! vessel in that namespace, and the guest configures eth0 (10.0.2.15),
//! pings the host side, receives 64 MiB of random bytes from a sender on
//! the host side and sends them back to a listener there; the guest's
//! sha256 of what arrived and the host's of what came back both match the
//! original. The host side is busybox nc run in the namespace.
//! Needs root (network namespaces); skipped loudly without it.

mod common;
use common::netns::{is_root, Netns};
use common::run;
use common::{sha256_file as sha256, value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);
const BYTES: usize = 64 << 20;
const HOST_ADDR: &str = "10.0.2.1";
const GUEST_ADDR: &str = "10.0.2.15";
const TAP: &str = "vt0";
const FROM_GUEST_PORT: u16 = 5001;
const TO_GUEST_PORT: u16 = 5002;

/// A helper process that is killed if the test ends before it does.
struct Helper(Child);

impl Helper {
    /// Waits up to `timeout` for the helper to exit on its own.
    fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str) -> Temp {
    Temp(std::env::temp_dir().join(format!("vessel-net-{}-{name}", std::process::id())))
}

#[test]
fn ping_and_64_mib_each_way() {
    let have = |tool: &str| Command::new(tool).arg("--help").output().is_ok();
    if !is_root() || !have("busybox") || !have("ip") {
        eprintln!("NET TEST SKIPPED: needs root, ip and busybox (nc) on the host");
        return;
    }
    let to_guest = temp("to-guest");
    let from_guest = temp("from-guest");
    {
        let mut data = vec![0u8; BYTES];
        let mut f = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut f, &mut data).unwrap();
        std::fs::write(&to_guest.0, data).unwrap();
    }
    let to_guest_sha = sha256(&to_guest.0);

    let ns = Netns::create("net", TAP, &format!("{HOST_ADDR}/24"));
    let mut receiver = Helper(
        ns.command(&["busybox", "nc", "-l", "-p", &FROM_GUEST_PORT.to_string()])
            // busybox nc half-closes the connection when its stdin ends,
            // and the guest's nc quits on that: keep stdin open.
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&from_guest.0).unwrap())
            .spawn()
            .expect("spawn the host-side receiver"),
    );
    let mut sender = Helper(
        ns.command(&["busybox", "nc", "-l", "-p", &TO_GUEST_PORT.to_string()])
            .stdin(std::fs::File::open(&to_guest.0).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the host-side sender"),
    );

    // Host to guest first (the guest hashes what arrived), then the guest
    // sends those bytes back (the host hashes what returned): random data
    // both ways without the guest spending minutes of emulated CPU making
    // its own. The guest's nc reads a fifo that never ends, so it does
    // not half-close before the host has sent everything.
    let script = format!(
        "ip addr add {GUEST_ADDR}/24 dev eth0 && ip link set eth0 up; \
         ping -c 3 -W 5 {HOST_ADDR} >/dev/null; echo PING=$?; \
         mkfifo /tmp/hold; exec 3<>/tmp/hold; \
         t0=$(date +%s); nc {HOST_ADDR} {TO_GUEST_PORT} <&3 > /tmp/in; \
         t1=$(date +%s); sha256sum /tmp/in | sed 's/ .*//;s/^/IN=/'; \
         t2=$(date +%s); nc {HOST_ADDR} {FROM_GUEST_PORT} < /tmp/in; echo SENT=$?; \
         t3=$(date +%s); echo RECV_S=$((t1-t0)) SEND_S=$((t3-t2))"
    );
    let mut cmd = ns.command(&[env!("CARGO_BIN_EXE_vessel")]);
    cmd.args(["run", "--memory", "512", "--net", &format!("tap={TAP}")])
        .args(["--", "sh", "-c", &script]);
    let started = Instant::now();
    let r = run(cmd, BOOT_TIMEOUT);
    eprintln!("vessel ran {:?}; stdout:\n{}", started.elapsed(), r.stdout);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(
        r.status,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(value(&r.stdout, "PING="), "0", "ping the host side");
    assert_eq!(value(&r.stdout, "SENT="), "0", "guest nc sent");
    assert!(
        receiver.wait(Duration::from_secs(30)),
        "the host-side receiver did not finish"
    );
    assert!(
        sender.wait(Duration::from_secs(30)),
        "the host-side sender did not finish"
    );
    assert_eq!(
        std::fs::metadata(&from_guest.0).map(|m| m.len()).ok(),
        Some(BYTES as u64),
        "bytes from the guest"
    );
    assert_eq!(sha256(&from_guest.0), to_guest_sha, "64 MiB guest to host");
    assert_eq!(
        value(&r.stdout, "IN="),
        to_guest_sha,
        "64 MiB host to guest"
    );
}
