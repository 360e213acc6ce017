//! `/machine-config` bodies: vCPU count, memory size and the CPU options
//! Firecracker has (SMT, CPU templates, dirty page tracking, huge pages).

use super::ModelError;
use serde::{Deserialize, Serialize};

/// Firecracker's limit on vCPUs.
pub const MAX_VCPUS: u8 = 32;
/// The largest guest vessel accepts through the API: 1 TiB.
pub const MAX_MEM_SIZE_MIB: u64 = 1 << 20;
/// What `GET /machine-config` reports before any PUT (Firecracker's default).
pub const DEFAULT_MEM_SIZE_MIB: u64 = 128;

/// Firecracker's static CPU templates. vessel accepts only `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    #[default]
    None,
}

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    #[default]
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Body of `PUT /machine-config` and answer of `GET /machine-config`.
/// Optional fields left out take their defaults, as in Firecracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfiguration {
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub huge_pages: HugePages,
}

impl Default for MachineConfiguration {
    fn default() -> Self {
        MachineConfiguration {
            vcpu_count: 1,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

impl MachineConfiguration {
    /// Firecracker's rules plus the options vessel does not have yet.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_vcpus(self.vcpu_count, self.smt)?;
        check_memory(self.mem_size_mib, self.huge_pages)?;
        check_supported(self.smt, self.cpu_template, self.track_dirty_pages)?;
        check_huge_pages(self.huge_pages)
    }

    /// This configuration with a patch applied (not yet validated).
    pub fn patched(&self, p: &MachineConfigurationPatch) -> MachineConfiguration {
        MachineConfiguration {
            vcpu_count: p.vcpu_count.unwrap_or(self.vcpu_count),
            mem_size_mib: p.mem_size_mib.unwrap_or(self.mem_size_mib),
            smt: p.smt.unwrap_or(self.smt),
            cpu_template: p.cpu_template.or(self.cpu_template),
            track_dirty_pages: p.track_dirty_pages.unwrap_or(self.track_dirty_pages),
            huge_pages: p.huge_pages.unwrap_or(self.huge_pages),
        }
    }
}

/// Body of `PATCH /machine-config`: any subset of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigurationPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigurationPatch {
    /// Checks the fields present; rules that tie two fields together
    /// (SMT and an odd count, huge pages and an odd size) are checked on
    /// the patched configuration by [`MachineConfiguration::patched`].
    pub fn validate(&self) -> Result<(), ModelError> {
        if *self == MachineConfigurationPatch::default() {
            return Err(ModelError::EmptyPatch {
                fields:
                    "vcpu_count, mem_size_mib, smt, cpu_template, track_dirty_pages, huge_pages",
            });
        }
        if let Some(n) = self.vcpu_count {
            check_vcpus(n, self.smt.unwrap_or(false))?;
        }
        if let Some(m) = self.mem_size_mib {
            check_memory(m, self.huge_pages.unwrap_or_default())?;
        }
        check_supported(
            self.smt.unwrap_or(false),
            self.cpu_template,
            self.track_dirty_pages.unwrap_or(false),
        )?;
        check_huge_pages(self.huge_pages.unwrap_or_default())
    }
}

fn check_vcpus(n: u8, smt: bool) -> Result<(), ModelError> {
    if n == 0 || n > MAX_VCPUS {
        return Err(ModelError::VcpuCountOutOfRange(n));
    }
    if smt && n > 1 && n % 2 == 1 {
        return Err(ModelError::VcpuCountOddWithSmt(n));
    }
    Ok(())
}

fn check_memory(mib: u64, huge: HugePages) -> Result<(), ModelError> {
    if mib == 0 {
        return Err(ModelError::MemorySizeZero);
    }
    if mib > MAX_MEM_SIZE_MIB {
        return Err(ModelError::MemorySizeTooLarge(mib));
    }
    if huge != HugePages::None && mib % 2 == 1 {
        return Err(ModelError::MemorySizeNotHugePageMultiple(mib));
    }
    Ok(())
}

fn check_supported(
    smt: bool,
    template: Option<CpuTemplate>,
    dirty: bool,
) -> Result<(), ModelError> {
    if smt {
        return Err(ModelError::Unsupported {
            feature: "smt".into(),
            fix: "set smt to false (every vCPU is its own core)",
        });
    }
    if let Some(t) = template.filter(|t| *t != CpuTemplate::None) {
        return Err(ModelError::Unsupported {
            feature: format!("cpu_template {t:?}"),
            fix: "leave cpu_template out or set it to \"None\"",
        });
    }
    if dirty {
        return Err(ModelError::Unsupported {
            feature: "track_dirty_pages (snapshots)".into(),
            fix: "set track_dirty_pages to false",
        });
    }
    Ok(())
}

fn check_huge_pages(h: HugePages) -> Result<(), ModelError> {
    if h == HugePages::Hugetlbfs2M {
        return Err(ModelError::Unsupported {
            feature: "huge_pages \"2M\" (hugetlbfs)".into(),
            fix: "use \"Transparent\" or \"None\"",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MachineConfiguration, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn firecracker_example_parses_with_defaults() {
        let m = parse(r#"{"vcpu_count": 2, "mem_size_mib": 1024}"#).unwrap();
        assert_eq!(m.vcpu_count, 2);
        assert_eq!(m.huge_pages, HugePages::None);
        assert!(!m.smt);
        assert_eq!(m.validate(), Ok(()));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["huge_pages"], "None");
        assert!(json.get("cpu_template").is_none());
    }

    #[test]
    fn vcpu_and_memory_limits() {
        let mut m = MachineConfiguration {
            vcpu_count: 0,
            ..Default::default()
        };
        assert_eq!(m.validate(), Err(ModelError::VcpuCountOutOfRange(0)));
        m.vcpu_count = 33;
        assert_eq!(m.validate(), Err(ModelError::VcpuCountOutOfRange(33)));
        m.vcpu_count = 32;
        m.mem_size_mib = 0;
        assert_eq!(m.validate(), Err(ModelError::MemorySizeZero));
        m.mem_size_mib = MAX_MEM_SIZE_MIB + 1;
        assert!(matches!(
            m.validate(),
            Err(ModelError::MemorySizeTooLarge(_))
        ));
        m.mem_size_mib = 257;
        m.huge_pages = HugePages::Transparent;
        assert_eq!(
            m.validate(),
            Err(ModelError::MemorySizeNotHugePageMultiple(257))
        );
    }

    #[test]
    fn wrong_types_and_unknown_fields_do_not_parse() {
        assert!(parse(r#"{"vcpu_count": "2", "mem_size_mib": 1024}"#).is_err());
        assert!(parse(r#"{"vcpu_count": -1, "mem_size_mib": 1024}"#).is_err());
        assert!(parse(r#"{"vcpu_count": 300, "mem_size_mib": 1024}"#).is_err());
        assert!(parse(r#"{"vcpu_count": 1}"#).is_err());
        assert!(parse(r#"{"vcpu_count": 1, "mem_size_mib": 8, "gdb": 1}"#).is_err());
        assert!(parse(r#"{"vcpu_count": 1, "mem_size_mib": 8, "huge_pages": "1G"}"#).is_err());
    }

    #[test]
    fn features_vessel_lacks_are_refused_by_name() {
        let m = parse(r#"{"vcpu_count": 2, "mem_size_mib": 64, "cpu_template": "T2"}"#).unwrap();
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("cpu_template T2 is not supported by vessel yet"),
            "{e}"
        );
        let m = parse(r#"{"vcpu_count": 2, "mem_size_mib": 64, "huge_pages": "2M"}"#).unwrap();
        assert!(matches!(m.validate(), Err(ModelError::Unsupported { .. })));
        let m = parse(r#"{"vcpu_count": 2, "mem_size_mib": 64, "cpu_template": "None"}"#).unwrap();
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn patch_validates_present_fields_and_applies() {
        let p: MachineConfigurationPatch =
            serde_json::from_str(r#"{"mem_size_mib": 512}"#).unwrap();
        assert_eq!(p.validate(), Ok(()));
        let m = MachineConfiguration::default().patched(&p);
        assert_eq!((m.vcpu_count, m.mem_size_mib), (1, 512));
        let empty = MachineConfigurationPatch::default();
        assert!(matches!(
            empty.validate(),
            Err(ModelError::EmptyPatch { .. })
        ));
        let p: MachineConfigurationPatch = serde_json::from_str(r#"{"vcpu_count": 0}"#).unwrap();
        assert_eq!(p.validate(), Err(ModelError::VcpuCountOutOfRange(0)));
    }
}
