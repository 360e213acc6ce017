//! virtio-vsock in the real Debian guest, one boot, with Firecracker's
//! host side. Host to guest: the test connects to the device's Unix
//! socket, writes `CONNECT 5000`, waits for `OK <port>` (retrying until
//! the guest's listener is up) and sends 64 MiB of pseudo-random bytes;
//! the guest's socat listener stores them and the guest prints their
//! sha256. Guest to host: the guest's socat sends the same bytes back to
//! host port 5001, which the test serves on `<uds>_5001`; the host hashes
//! what arrived. socat comes from the host (Debian's, with its libraries)
//! in a second initramfs, as `vessel bench io` carries fio. Last, a
//! guest connection to a host port nobody listens on is refused.

mod common;
use common::run;
use common::{sha256_hex as sha256, value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(1200);
const BYTES: usize = 64 << 20;
const GUEST_PORT: u32 = 5000;
const HOST_PORT: u32 = 5001;
/// A host port nothing listens on: the guest's connection is refused.
const UNSERVED_PORT: u32 = 5002;

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes that do not compress (xorshift64).
fn data() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(BYTES);
    while v.len() < BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// Connects through the device's socket to the guest's port, retrying
/// until the guest listens; returns the stream and the `OK` line.
fn connect_to_guest(uds: &Path, deadline: Instant) -> Result<(UnixStream, String), String> {
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let mut s = match UnixStream::connect(uds) {
            Ok(s) => s,
            Err(e) => {
                last = format!("connect: {e}");
                continue;
            }
        };
        if let Err(e) = s.write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes()) {
            last = format!("write: {e}");
            continue;
        }
        let mut line = String::new();
        let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        match r.read_line(&mut line) {
            Ok(_) if line.starts_with("OK ") => return Ok((s, line)),
            // The guest's listener is not up yet: RST, the stream ends.
            Ok(_) => last = format!("answer {line:?}"),
            Err(e) => last = format!("read: {e}"),
        }
    }
    Err(last)
}

#[test]
fn sixty_four_mib_each_way_over_vsock() {
    let Some(socat) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("socat"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("VSOCK TEST SKIPPED: socat is not installed on the host (./scripts/setup)");
        return;
    };
    let image = vmm::default_guest::image(&mut |l| eprintln!("{l}")).expect("default guest");
    let initrd = bench::io::fio_initramfs(&image, &socat).expect("initramfs with socat");

    let dir = TempDir(std::env::temp_dir().join(format!("vessel-vsock-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let uds = dir.0.join("v.sock");
    let listener = UnixListener::bind(dir.0.join(format!("v.sock_{HOST_PORT}"))).unwrap();

    let sent = std::sync::Arc::new(data());
    let sent_sha = sha256(&sent);
    let deadline = Instant::now() + TIMEOUT;

    let sender = {
        let (uds, sent) = (uds.clone(), sent.clone());
        std::thread::spawn(move || -> Result<String, String> {
            let (mut s, ok) = connect_to_guest(&uds, deadline)?;
            s.write_all(&sent).map_err(|e| format!("send: {e}"))?;
            Ok(ok)
        })
    };
    let receiver = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = listener.accept()?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got)
    });

    let script = format!(
        "socat -u VSOCK-LISTEN:{GUEST_PORT} CREATE:/tmp/in; echo RECV=$?; \
         sha256sum /tmp/in | sed 's/ .*//;s/^/IN=/'; \
         socat -u OPEN:/tmp/in VSOCK-CONNECT:2:{HOST_PORT}; echo SENT=$?; \
         socat -u OPEN:/dev/null VSOCK-CONNECT:2:{UNSERVED_PORT} 2>/dev/null; echo REFUSED=$?"
    );
    let mut cmd = common::vessel();
    cmd.args(["run", "--memory", "512", "--initrd"])
        .arg(&initrd)
        .arg("--vsock")
        .arg(format!("cid=3,uds={}", uds.display()))
        .args(["--", "sh", "-c", &script]);
    let started = Instant::now();
    let r = run(cmd, TIMEOUT);
    eprintln!("vessel ran {:?}; stdout:\n{}", started.elapsed(), r.stdout);
    assert!(!r.timed_out, "timed out; stderr:\n{}", r.stderr);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);

    let ok = sender.join().expect("sender thread");
    let ok = ok.unwrap_or_else(|e| panic!("host to guest: {e}"));
    let port: u32 = ok
        .trim()
        .strip_prefix("OK ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad OK line {ok:?}"));
    assert!(port >= 1 << 30, "an ephemeral host port: {port}");
    assert_eq!(value(&r.stdout, "RECV="), "0", "guest socat received");
    assert_eq!(value(&r.stdout, "IN="), sent_sha, "64 MiB host to guest");
    assert_eq!(value(&r.stdout, "SENT="), "0", "guest socat sent");
    assert_ne!(
        value(&r.stdout, "REFUSED="),
        "0",
        "a guest connection to a host port nobody serves fails"
    );

    let got = receiver.join().expect("receiver thread").expect("receive");
    assert_eq!(got.len(), BYTES, "bytes from the guest");
    assert_eq!(sha256(&got), sent_sha, "64 MiB guest to host");
    assert!(!uds.exists(), "the device's socket is removed at exit");
}
