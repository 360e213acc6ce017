//! Real preparation of the default guest into a temporary cache (needs apt
//! access), checked by reading the results and by booting them under QEMU
//! TCG. Skips loudly where the host lacks apt-get or qemu-system-x86_64.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guest::tree::Node;
use guest::{apt, command_cmdline, cpio, parse_exit_status, GuestImage, PrepareOptions};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

struct Boot {
    console: String,
    exited: bool,
    success: bool,
}

/// Boots under QEMU TCG with the given extra kernel args and QEMU args.
fn boot(image: &GuestImage, kernel: &Path, append: &str, extra: &[&str]) -> Boot {
    boot_with_input(image, kernel, append, extra, None)
}

/// Like [`boot`], typing `input` on the console once the guest is ready.
fn boot_with_input(
    image: &GuestImage,
    kernel: &Path,
    append: &str,
    extra: &[&str],
    input: Option<&str>,
) -> Boot {
    let cmdline = format!("{} {append}", image.default_cmdline);
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(&image.initramfs)
        .args(["-append", &cmdline])
        .args(extra)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stdin = child.stdin.take();
    let input = input.map(str::to_string);
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(18).any(|w| w == b"VESSEL-GUEST-READY") {
                if let (Some(pipe), Some(text)) = (stdin.as_mut(), input.as_ref()) {
                    // Let the shell start before typing.
                    std::thread::sleep(Duration::from_secs(2));
                    let _ = pipe.write_all(text.as_bytes());
                    let _ = pipe.flush();
                    stdin = None;
                }
            }
        }
        buf
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = String::from_utf8_lossy(&reader.join().expect("reader thread")).into_owned();
    // Any error from the init script shows as "/init: line N: ...".
    assert!(
        !console.contains("init: line"),
        "init script error: {console}"
    );
    Boot {
        console,
        exited: status.is_some(),
        success: status.is_some_and(|s| s.success()),
    }
}

fn run_in_guest(image: &GuestImage, kernel: &Path, argv: &[&str], extra: &[&str]) -> Boot {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    boot(image, kernel, &command_cmdline(&argv), extra)
}

/// The command's output: between the ready line and the status marker.
fn command_output(console: &str) -> &str {
    let start = console
        .find("VESSEL-GUEST-READY\n")
        .map(|i| i + "VESSEL-GUEST-READY\n".len())
        .unwrap_or(0);
    let end = console
        .rfind("VESSEL-EXIT-STATUS=")
        .unwrap_or(console.len());
    console.get(start..end).unwrap_or("")
}

#[test]
fn prepare_then_cache_hit_then_boot() {
    if apt::find_tool("apt-get").is_none() {
        eprintln!("\n***** SKIPPED: apt-get not found, cannot prepare the Debian guest *****\n");
        return;
    }
    let cache = tempfile::tempdir().expect("temp dir");
    let opts = PrepareOptions {
        cache_dir: cache.path().to_path_buf(),
        ..PrepareOptions::default()
    };
    let mut lines = Vec::new();
    let image = guest::prepare(&opts, &mut |l| {
        eprintln!("{l}");
        lines.push(l.to_string());
    })
    .expect("prepare");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("guest: downloading linux-image-")));

    // vmlinux: ELF64, little endian, x86-64.
    let elf = fs::read(&image.vmlinux).expect("vmlinux");
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01");
    assert_eq!(
        u16::from_le_bytes([elf[0x12], elf[0x13]]),
        0x3e,
        "e_machine"
    );
    assert!(fs::read(&image.kernel_bzimage).expect("bzImage")[0x202..0x206] == *b"HdrS");

    // initramfs: init, busybox, the virtio modules and their dependencies.
    let tree = cpio::parse_newc(&fs::read(&image.initramfs).expect("initramfs")).expect("cpio");
    assert!(matches!(
        tree.get("init").map(|e| &e.node),
        Some(Node::File(_))
    ));
    assert!(matches!(
        tree.get("bin/busybox").map(|e| &e.node),
        Some(Node::File(_))
    ));
    assert!(matches!(
        tree.get("bin/sh").map(|e| &e.node),
        Some(Node::Symlink(_))
    ));
    let moddir = format!("lib/modules/{}", image.kernel_release);
    let names: Vec<String> = tree
        .iter()
        .filter(|(p, _)| p.starts_with(&moddir) && p.ends_with(".ko"))
        .map(|(p, _)| guest::modules::module_name(p))
        .collect();
    for m in [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_blk",
        "virtio_net",
        "net_failover",
        "failover",
        "virtio_rng",
        "virtio_console",
        "vmw_vsock_virtio_transport",
        "vsock",
    ] {
        assert!(names.iter().any(|n| n == m), "{m} missing from {names:?}");
    }
    assert!(tree.get(&format!("{moddir}/modules.dep")).is_some());

    // Second prepare: a cache hit, no download.
    let started = Instant::now();
    let mut lines2 = Vec::new();
    let again = guest::prepare(&opts, &mut |l| lines2.push(l.to_string())).expect("prepare again");
    assert_eq!(again, image);
    assert!(
        !lines2.iter().any(|l| l.contains("downloading")),
        "{lines2:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(guest::find_prepared_in(cache.path()), Some(image.clone()));

    boot_checks(&image, cache.path());
}

fn boot_checks(image: &GuestImage, scratch: &Path) {
    if apt::find_tool("qemu-system-x86_64").is_none() {
        eprintln!("\n***** SKIPPED: qemu-system-x86_64 not found, guest not booted *****\n");
        return;
    }
    // The extracted vmlinux boots (PVH entry): uname -r runs, status 0,
    // QEMU exits by itself (power-off).
    let b = run_in_guest(image, &image.vmlinux, &["uname", "-r"], &[]);
    assert!(b.console.contains("VESSEL-GUEST-READY"), "{}", b.console);
    assert!(b.console.contains(&image.kernel_release), "{}", b.console);
    assert_eq!(parse_exit_status(&b.console), Some(0), "{}", b.console);
    assert!(
        b.exited && b.success,
        "qemu did not power off: {}",
        b.console
    );

    // Arguments survive; output is byte-exact (no \r); status passes through.
    let b = run_in_guest(
        image,
        &image.kernel_bzimage,
        &[
            "sh",
            "-c",
            "printf '%s|' \"$@\"; exit 7",
            "sh",
            "two words",
            "it's",
            "\"q\"",
            "ü ✓",
        ],
        &[],
    );
    assert_eq!(
        command_output(&b.console),
        "two words|it's|\"q\"|ü ✓|",
        "{}",
        b.console
    );
    assert_eq!(parse_exit_status(&b.console), Some(7), "{}", b.console);

    // A kernel panic ends the VM at once (panic=-1), without a status.
    let b = boot(
        image,
        &image.kernel_bzimage,
        &guest::script_cmdline("echo c > /proc/sysrq-trigger"),
        &[],
    );
    assert!(b.exited, "panic did not end the VM: {}", b.console);
    assert!(b.console.contains("Kernel panic"), "{}", b.console);
    assert_eq!(parse_exit_status(&b.console), None, "{}", b.console);

    // Interactive: a shell on the console; `poweroff` ends the VM cleanly.
    let b = boot_with_input(
        image,
        &image.kernel_bzimage,
        "",
        &[],
        Some("tty; echo hi-$((6*7)); poweroff\n"),
    );
    assert!(b.console.contains("hi-42"), "{}", b.console);
    assert!(
        b.console.contains("/dev/ttyS0"),
        "no controlling tty: {}",
        b.console
    );
    assert!(
        !b.console.contains("job control turned off"),
        "{}",
        b.console
    );
    assert!(b.exited && b.success, "{}", b.console);

    // Virtio devices get their drivers through modules.alias; the ext4
    // image of the same userspace becomes the root.
    let rootfs = scratch.join("root.ext4");
    guest::make_rootfs(image, &rootfs, 64).expect("make_rootfs");
    let drive = format!("file={},if=virtio,format=raw", rootfs.display());
    let b = boot(
        image,
        &image.kernel_bzimage,
        &format!(
            "root=/dev/vda rw {}",
            guest::script_cmdline(
                "grep ' / ' /proc/mounts; lsmod | cut -d' ' -f1 | sort | tr '\\n' ' '"
            )
        ),
        &["-drive", &drive, "-device", "virtio-rng-pci"],
    );
    let out = command_output(&b.console);
    assert!(out.contains("/dev/vda / ext4 rw"), "{}", b.console);
    for m in ["virtio_blk", "virtio_pci", "virtio_rng"] {
        assert!(out.contains(m), "{m} not loaded: {}", b.console);
    }
    assert!(
        !out.contains("virtio_net"),
        "loaded without a device: {out}"
    );
    assert_eq!(parse_exit_status(&b.console), Some(0), "{}", b.console);
}
