//! The API's HTTP framing and router: the fuzzer's bytes are what a client
//! sends on one connection, split into reads at points the first bytes
//! choose. Every request reaches a backend that accepts everything, so the
//! bodies go through the full parse and checks. Nothing may panic, and
//! every answer must be one the server is allowed to give.
#![no_main]

use api::http::Session;
use api::{ApiMetrics, Backend, Fault, Reply, Request};
use libfuzzer_sys::fuzz_target;

struct AcceptAll;

impl Backend for AcceptAll {
    fn handle(&self, request: Request) -> Result<Reply, Fault> {
        match request {
            Request::GetInstanceInfo | Request::GetVersion => {
                Ok(Reply::Json(serde_json::json!({})))
            }
            _ => Ok(Reply::NoContent),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let metrics = ApiMetrics::default();
    let mut session = Session::new(4096);
    let step = usize::from(split).max(1);
    for chunk in rest.chunks(step) {
        session.receive(chunk);
        session.process(&AcceptAll, &metrics);
        let out = String::from_utf8_lossy(session.output()).into_owned();
        for answer in out.split("HTTP/1.1 ").skip(1) {
            let code = answer.get(..3).unwrap_or("");
            assert!(["100", "200", "204", "400"].contains(&code), "{out}");
        }
        let n = session.output().len();
        session.consume_output(n);
    }
    // The router alone, on the raw bytes as a body.
    let _ = api::parse("PUT", "/drives/fuzz", rest);
    let _ = api::parse_config_file(&String::from_utf8_lossy(rest));
});
