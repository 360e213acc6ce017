//! `/balloon` and `/balloon/statistics` bodies and the statistics answer.

use serde::{Deserialize, Serialize};

/// Body of `PUT /balloon` and answer of `GET /balloon`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    pub amount_mib: u32,
    pub deflate_on_oom: bool,
    #[serde(default)]
    pub stats_polling_interval_s: u16,
    #[serde(default)]
    pub free_page_hinting: bool,
    #[serde(default)]
    pub free_page_reporting: bool,
}

/// Body of `PATCH /balloon`: a new target size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    pub amount_mib: u32,
}

/// Body of `PATCH /balloon/statistics`: a new polling interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatsUpdate {
    pub stats_polling_interval_s: u16,
}

/// Answer of `GET /balloon/statistics`: the target and actual sizes, and
/// whatever memory statistics the guest reported (absent ones left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStats {
    pub target_pages: u32,
    pub actual_pages: u32,
    pub target_mib: u32,
    pub actual_mib: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_refuse_bad_input() {
        let b: Balloon =
            serde_json::from_str(r#"{"amount_mib": 64, "deflate_on_oom": true}"#).unwrap();
        assert_eq!(b.stats_polling_interval_s, 0);
        assert!(serde_json::from_str::<Balloon>(r#"{"amount_mib": 64}"#).is_err());
        assert!(serde_json::from_str::<BalloonUpdate>(r#"{"amount_mib": -1}"#).is_err());
        assert!(serde_json::from_str::<BalloonStatsUpdate>(
            r#"{"stats_polling_interval_s": 70000}"#
        )
        .is_err());
    }

    #[test]
    fn stats_leave_out_what_the_guest_did_not_report() {
        let s = BalloonStats {
            target_pages: 256,
            target_mib: 1,
            free_memory: Some(4096),
            ..Default::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["free_memory"], 4096);
        assert!(v.get("swap_in").is_none());
    }
}
