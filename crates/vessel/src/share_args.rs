//! `vessel run -v HOST_DIR:GUEST_DIR[:ro]`: shared directories. Each
//! becomes a virtio-fs device tagged `vessel<N>`, and the default guest's
//! init mounts it where the kernel parameter `vessel.fs=TAG:DIR[:ro],...`
//! says.

use std::path::PathBuf;
use vmm::virtio_devices::FsConfig;

/// One `-v` argument, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Absolute, existing host directory.
    pub host: PathBuf,
    /// Absolute guest path, without characters the command line or the
    /// init's list cannot carry.
    pub guest: String,
    pub read_only: bool,
}

/// Why a `-v` argument is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumeError {
    #[error("expected HOST_DIR:GUEST_DIR or HOST_DIR:GUEST_DIR:ro")]
    Form,
    #[error("host directory {0:?} does not exist or is not a directory")]
    HostDir(String),
    #[error(
        "guest directory {0:?} must be an absolute path other than /, without `..`, \
         spaces, commas or colons"
    )]
    GuestDir(String),
}

/// Parses `HOST_DIR:GUEST_DIR[:ro]` (a clap value parser).
pub fn parse_volume(arg: &str) -> Result<Volume, VolumeError> {
    let (rest, read_only) = match arg.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (arg, false),
    };
    let (host, guest) = rest.rsplit_once(':').ok_or(VolumeError::Form)?;
    if host.is_empty() || guest.is_empty() {
        return Err(VolumeError::Form);
    }
    let host_path = std::fs::canonicalize(host)
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| VolumeError::HostDir(host.to_string()))?;
    let guest_ok = guest.starts_with('/')
        && guest != "/"
        && !guest
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == ':')
        && !guest.split('/').any(|part| part == "..");
    if !guest_ok {
        return Err(VolumeError::GuestDir(guest.to_string()));
    }
    Ok(Volume {
        host: host_path,
        guest: guest.trim_end_matches('/').to_string(),
        read_only,
    })
}

fn tag(index: usize) -> String {
    format!("vessel{index}")
}

/// The devices for `volumes`, tagged in order.
pub fn fs_configs(volumes: &[Volume]) -> Vec<FsConfig> {
    volumes
        .iter()
        .enumerate()
        .map(|(i, v)| FsConfig {
            tag: tag(i),
            host_dir: v.host.clone(),
            read_only: v.read_only,
        })
        .collect()
}

/// The kernel parameter that tells the guest's init what to mount where.
pub fn cmdline(volumes: &[Volume]) -> Option<String> {
    if volumes.is_empty() {
        return None;
    }
    let list: Vec<String> = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ro = if v.read_only { ":ro" } else { "" };
            format!("{}:{}{ro}", tag(i), v.guest)
        })
        .collect();
    Some(format!("vessel.fs={}", list.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_and_become_devices_and_a_kernel_parameter() {
        let tmp = std::env::temp_dir();
        let host = tmp.to_str().unwrap();
        let a = parse_volume(&format!("{host}:/mnt/a")).unwrap();
        assert!(!a.read_only);
        assert_eq!(a.host, std::fs::canonicalize(&tmp).unwrap());
        let b = parse_volume(&format!("{host}:/data/:ro")).unwrap();
        assert!(b.read_only);
        assert_eq!(b.guest, "/data");
        let vols = [a, b];
        assert_eq!(
            cmdline(&vols).as_deref(),
            Some("vessel.fs=vessel0:/mnt/a,vessel1:/data:ro")
        );
        let devs = fs_configs(&vols);
        assert_eq!(devs[1].tag, "vessel1");
        assert!(devs[1].read_only && !devs[0].read_only);
        assert_eq!(cmdline(&[]), None);
    }

    #[test]
    fn bad_volumes_are_refused() {
        let host = std::env::temp_dir().to_str().unwrap().to_string();
        assert_eq!(parse_volume("/tmp"), Err(VolumeError::Form));
        assert_eq!(parse_volume(":/mnt"), Err(VolumeError::Form));
        assert!(matches!(
            parse_volume("/no/such/dir/here:/mnt"),
            Err(VolumeError::HostDir(_))
        ));
        for guest in ["mnt", "/", "/a b", "/a,b", "/x/../etc", "/a\nb"] {
            assert!(
                matches!(
                    parse_volume(&format!("{host}:{guest}")),
                    Err(VolumeError::GuestDir(_))
                ),
                "{guest:?}"
            );
        }
    }
}
