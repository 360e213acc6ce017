//! A third-party Firecracker client library, `firepilot` from crates.io,
//! used unmodified: it finds "firecracker" through FIRECRACKER_LOCATION
//! (here a symlink named `firecracker` to vessel), spawns it with
//! `--api-sock`, configures a drive and the boot source over the API,
//! starts the VM, pauses and resumes it, and stops it with Ctrl+Alt+Del.
//! The default guest proves it ran by writing a marker into the drive,
//! which firepilot copied into its workspace.

mod common;
use common::api::default_guest;
use firepilot::builder::drive::DriveBuilder;
use firepilot::builder::executor::FirecrackerExecutorBuilder;
use firepilot::builder::kernel::KernelBuilder;
use firepilot::builder::{Builder, Configuration};
use firepilot::machine::Machine;
use std::path::Path;
use std::time::{Duration, Instant};

const MARKER: &[u8] = b"FIREPILOT-GUEST-RAN";

fn drive_has_marker(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(MARKER.len()).any(|w| w == MARKER))
        .unwrap_or(false)
}

#[tokio::test(flavor = "current_thread")]
async fn firepilot_boots_pauses_resumes_and_stops_vessel() {
    let guest = default_guest();
    let dir = common::temp_dir("firepilot");
    let firecracker = dir.0.join("firecracker");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vessel"), &firecracker).unwrap();
    let disk = dir.0.join("data.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    // The only test in this binary: no other thread reads the environment
    // while it changes.
    std::env::set_var("FIRECRACKER_LOCATION", &firecracker);

    let script = format!(
        "printf {} | dd of=/dev/vda conv=notrunc 2>/dev/null; sync; while true; do sleep 1; done",
        String::from_utf8_lossy(MARKER)
    );
    let kernel = KernelBuilder::new()
        .with_kernel_image_path(guest.vmlinux.to_str().unwrap().to_string())
        .with_initrd_path(guest.initramfs.to_str().unwrap().to_string())
        .with_boot_args(format!(
            "{} {}",
            guest.default_cmdline,
            guest::script_cmdline(&script)
        ))
        .try_build()
        .unwrap();
    let drive = DriveBuilder::new()
        .with_drive_id("data".to_string())
        .with_path_on_host(disk)
        .try_build()
        .unwrap();
    let executor = FirecrackerExecutorBuilder::auto()
        .expect("FIRECRACKER_LOCATION names vessel")
        .with_chroot(dir.0.join("chroot").to_str().unwrap().to_string())
        .try_build()
        .unwrap();
    let config = Configuration::new("vm1".to_string())
        .with_kernel(kernel)
        .with_executor(executor)
        .with_drive(drive);
    let mut machine = Machine::new();
    machine
        .create(config)
        .await
        .expect("firepilot configures vessel");
    machine.start().await.expect("InstanceStart");

    // firepilot copied the drive to <chroot>/<vm id>/<drive id>.
    let copied = dir.0.join("chroot").join("vm1").join("data");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !drive_has_marker(&copied) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        drive_has_marker(&copied),
        "the guest never wrote its marker"
    );

    machine.pause().await.expect("PATCH /vm Paused");
    machine.resume().await.expect("PATCH /vm Resumed");
    machine.stop().await.expect("SendCtrlAltDel");
    machine.kill().await.expect("firepilot ends the process");
}
