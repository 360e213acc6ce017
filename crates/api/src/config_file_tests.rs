//! Config file tests: Firecracker's documented examples, order, and errors
//! that name the key and field.

use super::*;
use crate::model::ActionKind;

/// Firecracker's getting-started config file, as its guide shows it (the
/// boot test in crates/vessel/tests/api_config_file.rs boots the same file).
const GETTING_STARTED: &str = include_str!("../testdata/firecracker-getting-started.json");

#[test]
fn firecracker_example_parses_unchanged() {
    let reqs = parse_config_file(GETTING_STARTED).unwrap();
    assert_eq!(reqs.len(), 3);
    assert!(matches!(&reqs[0], Request::PutMachineConfig(m) if m.vcpu_count == 2));
    assert!(matches!(&reqs[1], Request::PutBootSource(b) if b.kernel_image_path == "vmlinux.bin"));
    assert!(matches!(&reqs[2], Request::PutDrive(d) if d.drive_id == "rootfs"));
}

#[test]
fn logger_and_metrics_come_first() {
    let text = r#"{
      "vsock": {"guest_cid": 3, "uds_path": "/tmp/v"},
      "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
      "boot-source": {"kernel_image_path": "k"},
      "metrics": {"metrics_path": "/tmp/m"},
      "logger": {"log_path": "/tmp/l", "level": "Debug"},
      "entropy": {},
      "balloon": {"amount_mib": 1, "deflate_on_oom": true}
    }"#;
    let names: Vec<&str> = parse_config_file(text)
        .unwrap()
        .iter()
        .map(|r| match r {
            Request::PutLogger(_) => "logger",
            Request::PutMetrics(_) => "metrics",
            Request::PutBootSource(_) => "boot",
            Request::PutNetworkInterface(_) => "net",
            Request::PutVsock(_) => "vsock",
            Request::PutBalloon(_) => "balloon",
            Request::PutEntropy(_) => "entropy",
            _ => "other",
        })
        .collect();
    assert_eq!(
        names,
        ["logger", "metrics", "boot", "net", "vsock", "balloon", "entropy"]
    );
    let _ = ActionKind::InstanceStart;
}

#[test]
fn errors_name_the_key_and_field() {
    let e = parse_config_file(r#"{"boot-source": {"kernel_image_path": "k"}, "drives": [{"drive_id": "a", "is_root_device": "yes"}]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config file: drives[0].is_root_device: invalid type"),
        "{e}"
    );
    assert!(e.contains("line 1, column"), "{e}");
    let e = parse_config_file(r#"{"boot-source": {"kernel_image_path": "k"}, "machine-config": {"vcpu_count": 0, "mem_size_mib": 1}}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "config file: machine-config: vcpu_count 0 is out of range: use 1 to 32"
    );
    let e = parse_config_file(r#"{"boot-source": {"kernel_image_path": "k"}, "drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "x"}, {"drive_id": "b-", "is_root_device": false, "path_on_host": "x"}]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config file: drives[1]: drive_id \"b-\""),
        "{e}"
    );
}

#[test]
fn unknown_unsupported_missing_and_broken() {
    let e = parse_config_file(r#"{"boot-source": {"kernel_image_path": "k"}, "gpu": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `gpu`"), "{e}");
    let e = parse_config_file(
        r#"{"boot-source": {"kernel_image_path": "k"}, "mmds-config": {"network_interfaces": []}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("\"mmds-config\" is not supported by vessel yet"),
        "{e}"
    );
    let e = parse_config_file(r#"{"drives": []}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `boot-source`"), "{e}");
    let e = parse_config_file(r#"{"boot-source": {"kernel_image_path": "k"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("EOF"), "{e}");
    let e = parse_config_file(r#"{"boot-source": {"kernel_image_path": "k"}} {}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("trailing"), "{e}");
    let dup = r#"{"boot-source": {"kernel_image_path": "k"}, "network-interfaces": [
        {"iface_id": "a", "host_dev_name": "t0"}, {"iface_id": "a", "host_dev_name": "t1"}]}"#;
    assert!(matches!(
        parse_config_file(dup),
        Err(ConfigFileError::DuplicateId { .. })
    ));
}

#[test]
fn arrays_where_objects_belong_are_refused() {
    let e = parse_config_file(r#"{"boot-source": ["k"]}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "config file: boot-source: expected a JSON object, found an array"
    );
    let e = parse_config_file(
        r#"{"boot-source": {"kernel_image_path": "k"}, "drives": [["a", null, false, "Unsafe", null, "p"]]}"#,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "config file: drives[0]: expected a JSON object, found an array"
    );
    let e = parse_config_file(r#"{"boot-source": {"kernel_image_path": ["k"]}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config file: boot-source.kernel_image_path: invalid type: sequence"),
        "{e}"
    );
}
