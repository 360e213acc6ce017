//! `/actions` and `/vm` bodies: the synchronous actions and the run state
//! a client asks for.

use serde::{Deserialize, Serialize};

/// What `PUT /actions` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// Body of `PUT /actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    pub action_type: ActionKind,
}

/// The state `PATCH /vm` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// Body of `PATCH /vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub state: VmState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_and_state_names() {
        let a: InstanceActionInfo =
            serde_json::from_str(r#"{"action_type": "SendCtrlAltDel"}"#).unwrap();
        assert_eq!(a.action_type, ActionKind::SendCtrlAltDel);
        assert!(
            serde_json::from_str::<InstanceActionInfo>(r#"{"action_type": "Reboot"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<InstanceActionInfo>(r#"{"action_type": "instancestart"}"#)
                .is_err()
        );
        let v: Vm = serde_json::from_str(r#"{"state": "Paused"}"#).unwrap();
        assert_eq!(v.state, VmState::Paused);
        assert!(serde_json::from_str::<Vm>(r#"{"state": "Running"}"#).is_err());
    }
}
