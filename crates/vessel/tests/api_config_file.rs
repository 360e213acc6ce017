//! `vessel --no-api --config-file cfg.json` with a config file in exactly
//! the shape Firecracker's getting-started guide shows (every key, the
//! nulls and empty lists included, `pci=off`-free boot_args as the guide now
//! has them): the default guest boots from an ext4 root drive and runs a
//! command; and config files that are broken in the ways users break them
//! are refused with a message naming the problem, before anything boots.

mod common;
use common::api::default_guest;
use common::run;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Firecracker's documented config file (shared with the api crate's
/// parser tests), with this machine's kernel, initrd, command line and root
/// file system in place of the guide's.
fn firecracker_config(kernel: &Path, initrd: &Path, boot_args: &str, rootfs: &Path) -> String {
    let text = include_str!("../../api/testdata/firecracker-getting-started.json");
    let mut cfg: serde_json::Value = serde_json::from_str(text).expect("the shared example");
    cfg["boot-source"]["kernel_image_path"] = kernel.to_str().unwrap().into();
    cfg["boot-source"]["initrd_path"] = initrd.to_str().unwrap().into();
    cfg["boot-source"]["boot_args"] = boot_args.into();
    cfg["drives"][0]["path_on_host"] = rootfs.to_str().unwrap().into();
    serde_json::to_string_pretty(&cfg).expect("json")
}

fn vessel_with_config(path: &Path) -> Command {
    let mut cmd = common::vessel();
    cmd.args(["--no-api", "--config-file", path.to_str().unwrap()]);
    cmd
}

#[test]
fn firecrackers_documented_config_file_boots_unchanged() {
    let guest = default_guest();
    let dir = common::temp_dir("cfg-boot");
    let rootfs = dir.0.join("root.ext4");
    let st = common::vessel()
        .args(["guest", "prepare", "--rootfs", rootfs.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "cannot make the root file system");
    let script = "echo CONFIG-FILE-OK; grep ' / ' /proc/mounts; nproc";
    let boot_args = format!(
        "console=ttyS0 reboot=k panic=1 {}",
        guest::script_cmdline(script)
    );
    let cfg = dir.0.join("cfg.json");
    std::fs::write(
        &cfg,
        firecracker_config(&guest.vmlinux, &guest.initramfs, &boot_args, &rootfs),
    )
    .unwrap();

    let r = run(vessel_with_config(&cfg), Duration::from_secs(600));
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "{all}");
    assert!(r.stdout.contains("CONFIG-FILE-OK"), "{all}");
    assert!(
        r.stdout.contains("/dev/vda / ext4 rw"),
        "root on the drive: {all}"
    );
    assert!(
        r.stdout_lines.iter().any(|(l, _)| l.trim() == "2"),
        "two vCPUs: {all}"
    );
}

#[test]
fn serial_out_path_takes_the_console_off_stdout() {
    let guest = default_guest();
    let dir = common::temp_dir("cfg-serial");
    let serial = dir.0.join("serial.log");
    let cfg = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest.vmlinux,
            "initrd_path": guest.initramfs,
            "boot_args": format!("{} {}", guest.default_cmdline,
                guest::script_cmdline("echo SERIAL-FILE-OK")),
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "serial": {"serial_out_path": serial},
    });
    let path = dir.0.join("cfg.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let r = run(vessel_with_config(&path), Duration::from_secs(600));
    assert_eq!(r.status, Some(0), "{}\n{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(text.contains("SERIAL-FILE-OK"), "serial file: {text}");
    assert!(!r.stdout.contains("SERIAL-FILE-OK"), "stdout: {}", r.stdout);
}

/// Runs vessel on a config file and returns its stderr; it must fail fast.
fn refused(cfg_text: &str) -> String {
    let dir = common::temp_dir("cfg-bad");
    let cfg = dir.0.join("cfg.json");
    std::fs::write(&cfg, cfg_text).unwrap();
    let r = run(vessel_with_config(&cfg), Duration::from_secs(30));
    assert!(!r.timed_out, "hung on {cfg_text}");
    assert_eq!(r.status, Some(1), "accepted {cfg_text}: {}", r.stderr);
    assert!(
        !r.stderr.contains("panicked"),
        "panicked on {cfg_text}: {}",
        r.stderr
    );
    r.stderr
}

#[test]
fn broken_config_files_are_refused_with_the_reason() {
    let e = refused("{ not json");
    assert!(e.contains("line 1"), "{e}");
    let e = refused(r#"{"boot-source": {"kernel_image_path": "/k", "bogus": 1}}"#);
    assert!(e.contains("bogus"), "{e}");
    let boot = r#""boot-source": {"kernel_image_path": "/dev/null"}"#;
    let e = refused(&format!(
        r#"{{{boot}, "machine-config": {{"vcpu_count": -1, "mem_size_mib": 128}}}}"#
    ));
    assert!(e.contains("vcpu_count"), "{e}");
    let e = refused(&format!(
        r#"{{{boot}, "machine-config": {{"vcpu_count": 1, "mem_size_mib": 99999999999}}}}"#
    ));
    assert!(e.contains("mem_size_mib"), "{e}");
    let e = refused(&format!(
        r#"{{{boot}, "mmds-config": {{"network_interfaces": []}}}}"#
    ));
    assert!(e.contains("mmds"), "{e}");
    let e = refused(r#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#);
    assert!(e.contains("/nonexistent/vmlinux"), "{e}");
    let e = refused(r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#);
    assert!(e.contains("boot-source"), "{e}");
    let missing = common::vessel()
        .args(["--no-api", "--config-file", "/nonexistent/cfg.json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/cfg.json"));
    let no_config = common::vessel().arg("--no-api").output().unwrap();
    assert!(!no_config.status.success());
    assert!(String::from_utf8_lossy(&no_config.stderr).contains("--config-file"));
}
