//! `/network-interfaces/{iface_id}` bodies: a TAP-backed virtio-net device
//! and its post-boot rate limiter patch.

use super::rate_limiter::{check_limiter, RateLimiter};
use super::{check_id, ModelError};
use serde::{Deserialize, Serialize};

/// Body of `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl NetworkInterface {
    /// Id, TAP name, MAC, MTU and limiter checks.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_id("iface_id", &self.iface_id)?;
        check_tap_name(&self.host_dev_name)?;
        if let Some(mac) = &self.guest_mac {
            parse_mac(mac)?;
        }
        if let Some(mtu) = self.mtu.filter(|m| *m < 68) {
            return Err(ModelError::MtuOutOfRange(mtu));
        }
        check_limiter("rx_rate_limiter", self.rx_rate_limiter.as_ref())?;
        check_limiter("tx_rate_limiter", self.tx_rate_limiter.as_ref())
    }

    /// The guest MAC as bytes, when one is given.
    pub fn mac_bytes(&self) -> Result<Option<[u8; 6]>, ModelError> {
        self.guest_mac.as_deref().map(parse_mac).transpose()
    }
}

/// Body of `PATCH /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl PartialNetworkInterface {
    /// Id and limiter checks.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_id("iface_id", &self.iface_id)?;
        check_limiter("rx_rate_limiter", self.rx_rate_limiter.as_ref())?;
        check_limiter("tx_rate_limiter", self.tx_rate_limiter.as_ref())
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex digits, either case).
pub fn parse_mac(s: &str) -> Result<[u8; 6], ModelError> {
    let bad = || ModelError::MacInvalid(s.to_string());
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// A Linux interface name: 1 to 15 bytes (IFNAMSIZ less the NUL), none of
/// the characters the kernel refuses.
fn check_tap_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ModelError::TapNameInvalid(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getting_started_interface_parses() {
        let n: NetworkInterface = serde_json::from_str(
            r#"{"iface_id": "net1", "guest_mac": "06:00:AC:10:00:02", "host_dev_name": "tap0"}"#,
        )
        .unwrap();
        assert_eq!(n.validate(), Ok(()));
        assert_eq!(n.mac_bytes().unwrap(), Some([0x06, 0, 0xac, 0x10, 0, 2]));
    }

    #[test]
    fn macs() {
        for bad in [
            "",
            "06:00:ac:10:00",
            "06:00:ac:10:00:02:03",
            "g6:00:ac:10:00:02",
            "6:0:ac:10:00:02",
            "+6:00:ac:10:00:02",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mac("ff:FF:00:00:00:01").unwrap()[1], 0xff);
    }

    #[test]
    fn bad_interfaces_are_refused() {
        let mut n = NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: None,
            mtu: Some(67),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        assert_eq!(n.validate(), Err(ModelError::MtuOutOfRange(67)));
        n.mtu = Some(9000);
        n.host_dev_name = "a-very-long-tap-name".into();
        assert!(matches!(n.validate(), Err(ModelError::TapNameInvalid(_))));
        n.host_dev_name = "../tap".into();
        assert!(n.validate().is_err());
        n.host_dev_name = "tap0".into();
        n.iface_id = "eth 0".into();
        assert!(matches!(n.validate(), Err(ModelError::IdInvalid { .. })));
        assert!(serde_json::from_str::<NetworkInterface>(
            r#"{"iface_id":"a","host_dev_name":"t","mtu":70000}"#
        )
        .is_err());
    }
}
