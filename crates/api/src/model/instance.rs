//! Answers that describe the instance: `GET /`, `GET /version` and
//! `GET /vm/config`.

use super::{
    Balloon, BootSource, Drive, Entropy, Logger, MachineConfiguration, Metrics, NetworkInterface,
    Serial, Vsock,
};
use serde::{Deserialize, Serialize};

/// The run state `GET /` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// Answer of `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

/// Answer of `GET /version`. Tools read it as Firecracker's version, so
/// vessel reports its own there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

/// Answer of `GET /vm/config`: everything configured, with the same keys
/// as a `--config-file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FullVmConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<Balloon>,
    #[serde(default)]
    pub drives: Vec<Drive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_source: Option<BootSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_config: Option<MachineConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<Entropy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_info_uses_firecracker_state_names() {
        let i = InstanceInfo {
            app_name: "vessel".into(),
            id: "anonymous-instance".into(),
            state: InstanceState::NotStarted,
            vmm_version: "0.1.0".into(),
        };
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(v["state"], "Not started");
        assert_eq!(v["app_name"], "vessel");
    }

    #[test]
    fn full_config_uses_kebab_keys() {
        let c = FullVmConfiguration {
            machine_config: Some(MachineConfiguration::default()),
            ..Default::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["machine-config"]["mem_size_mib"], 128);
        assert!(v["drives"].as_array().unwrap().is_empty());
        assert!(v["network-interfaces"].is_array());
    }
}
