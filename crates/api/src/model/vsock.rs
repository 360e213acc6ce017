//! `/vsock` body: the guest's context id and the host Unix socket that
//! stands for it.

use super::{check_path, ModelError};
use serde::{Deserialize, Serialize};

/// Longest `uds_path` accepted: sun_path holds 107 bytes and a NUL, and the
/// guest-initiated connections use `<uds_path>_<port>`, up to 11 bytes more.
pub const MAX_UDS_PATH_LEN: usize = 107 - 11;

/// Body of `PUT /vsock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Deprecated by Firecracker; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    pub guest_cid: u32,
    pub uds_path: String,
}

impl Vsock {
    /// CIDs 0-2 and 0xffffffff are reserved; the path must fit a sockaddr_un.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.guest_cid < 3 || self.guest_cid == u32::MAX {
            return Err(ModelError::GuestCidReserved(self.guest_cid));
        }
        check_path("uds_path", &self.uds_path)?;
        if self.uds_path.len() > MAX_UDS_PATH_LEN {
            return Err(ModelError::SocketPathTooLong {
                field: "uds_path",
                len: self.uds_path.len(),
                max: MAX_UDS_PATH_LEN,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_and_path_rules() {
        let mut v: Vsock =
            serde_json::from_str(r#"{"guest_cid": 3, "uds_path": "./v.sock"}"#).unwrap();
        assert_eq!(v.validate(), Ok(()));
        v.guest_cid = 2;
        assert_eq!(v.validate(), Err(ModelError::GuestCidReserved(2)));
        v.guest_cid = u32::MAX;
        assert!(v.validate().is_err());
        v.guest_cid = 52;
        v.uds_path = "/".repeat(MAX_UDS_PATH_LEN + 1);
        assert!(matches!(
            v.validate(),
            Err(ModelError::SocketPathTooLong { .. })
        ));
        assert!(serde_json::from_str::<Vsock>(r#"{"guest_cid": -3, "uds_path": "x"}"#).is_err());
    }
}
