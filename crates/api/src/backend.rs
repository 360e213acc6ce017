//! The seam between the API and the VMM: the server turns each HTTP request
//! into a [`Request`] and hands it to a [`Backend`], which answers with a
//! [`Reply`] (204 or 200 with JSON) or a [`Fault`] (400 with
//! `{"fault_message": ...}`). Rules that depend on the VM's state, such as
//! what may change after `InstanceStart`, live in the backend.

use crate::model::ModelError;
use crate::request::{Request, RequestError};
use serde::Serialize;

/// The VMM side of the API. `handle` runs on the API thread, one request at
/// a time, in the order the server received them.
pub trait Backend: Send + Sync {
    /// Carries out one request.
    fn handle(&self, request: Request) -> Result<Reply, Fault>;
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 204 No Content.
    NoContent,
    /// 200 OK with this JSON body.
    Json(serde_json::Value),
}

impl Reply {
    /// A 200 answer with `value` serialized; a value that cannot be
    /// serialized becomes a fault instead of a panic.
    pub fn json<T: Serialize>(value: &T) -> Result<Reply, Fault> {
        serde_json::to_value(value)
            .map(Reply::Json)
            .map_err(|e| Fault(format!("the answer could not be serialized: {e}")))
    }
}

/// A refused request: 400 Bad Request with `{"fault_message": <the text>}`.
/// The text names the cause and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault(pub String);

impl Fault {
    /// A fault with this message.
    pub fn new(message: impl Into<String>) -> Fault {
        Fault(message.into())
    }

    /// The body of the 400 answer.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "fault_message": self.0 }).to_string()
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<RequestError> for Fault {
    fn from(e: RequestError) -> Fault {
        Fault(e.to_string())
    }
}

impl From<ModelError> for Fault {
    fn from(e: ModelError) -> Fault {
        Fault(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_escapes_the_message() {
        let f = Fault::new("bad \"quote\"\n");
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["fault_message"], "bad \"quote\"\n");
    }

    #[test]
    fn reply_json_serializes() {
        let r = Reply::json(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(r, Reply::Json(serde_json::json!({"a": 1})));
    }
}
