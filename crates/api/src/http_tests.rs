//! Session tests: framing, keep-alive, pipelining, limits and byte soup.

use super::*;
use crate::request::Request;

/// Answers GETs with the request's name and everything else with 204.
struct Echo;

impl Backend for Echo {
    fn handle(&self, r: Request) -> Result<Reply, Fault> {
        match r {
            Request::GetVersion => Ok(Reply::Json(
                serde_json::json!({"firecracker_version": "1.0.0"}),
            )),
            Request::GetInstanceInfo => Err(Fault::new("refused by the backend")),
            _ => Ok(Reply::NoContent),
        }
    }
}

fn run(session: &mut Session, bytes: &[u8]) -> String {
    session.receive(bytes);
    session.process(&Echo, &ApiMetrics::default());
    let out = String::from_utf8_lossy(session.output()).into_owned();
    session.consume_output(out.len());
    out
}

fn once(bytes: &[u8]) -> (String, bool) {
    let mut s = Session::new(1000);
    let out = run(&mut s, bytes);
    (out, s.closing())
}

const PUT_VM: &[u8] =
    b"PATCH /vm HTTP/1.1\r\nHost: localhost\r\nContent-Length: 19\r\n\r\n{\"state\": \"Paused\"}";

#[test]
fn get_answers_200_with_json() {
    let (out, closing) = once(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Content-Type: application/json\r\n"));
    assert!(out.contains("Content-Length: 31\r\n"), "{out}");
    assert!(
        out.ends_with("{\"firecracker_version\":\"1.0.0\"}"),
        "{out}"
    );
    assert!(!closing);
}

#[test]
fn put_answers_204_without_body() {
    let (out, _) = once(PUT_VM);
    assert_eq!(
        out,
        "HTTP/1.1 204 No Content\r\nServer: vessel API\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn faults_are_400_with_fault_message() {
    let (out, closing) = once(b"GET / HTTP/1.1\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(
        out.ends_with("{\"fault_message\":\"refused by the backend\"}"),
        "{out}"
    );
    assert!(!closing, "a refused request keeps the connection");
}

#[test]
fn pipelined_and_split_requests() {
    let mut s = Session::new(1000);
    let mut two = PUT_VM.to_vec();
    two.extend_from_slice(b"GET /version HTTP/1.1\r\n\r\n");
    let out = run(&mut s, &two);
    assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "{out}");
    let mut out = String::new();
    for b in PUT_VM {
        out += &run(&mut s, std::slice::from_ref(b));
    }
    assert_eq!(out.matches("HTTP/1.1 204").count(), 1, "{out}");
    assert!(!s.mid_request());
}

#[test]
fn expect_continue_gets_100_then_the_answer() {
    let mut s = Session::new(1000);
    let head = b"PATCH /vm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 19\r\n\r\n";
    assert_eq!(run(&mut s, head), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(run(&mut s, b"{\"state\": "), "");
    assert!(run(&mut s, b"\"Paused\"}").starts_with("HTTP/1.1 204"));
}

#[test]
fn payload_over_the_limit_is_refused_and_closes() {
    let (out, closing) = once(b"PUT /vm HTTP/1.1\r\nContent-Length: 1001\r\n\r\n{");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("larger than the limit of 1000 bytes"), "{out}");
    assert!(out.contains("Connection: close"));
    assert!(closing);
    let (out, _) = once(b"PUT /vm HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    assert!(out.contains("larger than the limit"), "{out}");
}

#[test]
fn framing_errors_close_the_connection() {
    for (req, want) in [
        (
            &b"PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            "Content-Length",
        ),
        (
            b"PUT /vm HTTP/1.1\r\nContent-Length: -4\r\n\r\n",
            "is not a number",
        ),
        (
            b"PUT /vm HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "two different",
        ),
        (
            b"PUT /vm HTTP/1.1\r\nExpect: magic\r\n\r\n",
            "only 100-continue",
        ),
        (b"\x00\x01garbage\r\n\r\n", "malformed HTTP request"),
    ] {
        let (out, closing) = once(req);
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains(want), "{want}: {out}");
        assert!(closing);
    }
}

#[test]
fn oversized_headers_are_refused_before_they_end() {
    let mut s = Session::new(1000);
    let mut req = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    req.resize(MAX_HEADER_BYTES + 10, b'a');
    let out = run(&mut s, &req);
    assert!(out.contains("over 8192 bytes"), "{out}");
    assert!(s.closing());
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: a\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(once(&many).0.contains("more than 32 headers"));
}

#[test]
fn connection_close_and_http10_close() {
    let (_, closing) = once(b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(closing);
    let (out, closing) = once(b"GET /version HTTP/1.0\r\n\r\n");
    assert!(out.contains("Connection: close"));
    assert!(closing);
    let (_, closing) = once(b"GET /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(!closing);
}

#[test]
fn a_panicking_backend_gets_500_and_the_session_goes_on() {
    struct Boom;
    impl Backend for Boom {
        fn handle(&self, _: Request) -> Result<Reply, Fault> {
            panic!("backend bug")
        }
    }
    let mut s = Session::new(100);
    let m = ApiMetrics::default();
    s.receive(b"GET /version HTTP/1.1\r\n\r\n");
    s.process(&Boom, &m);
    let out = String::from_utf8_lossy(s.output()).into_owned();
    assert!(out.starts_with("HTTP/1.1 500"), "{out}");
    assert!(!s.closing());
}

/// xorshift64*: a fixed-seed generator, so failures can be replayed.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn byte_soup_never_panics_and_every_answer_is_well_formed() {
    let pieces: [&[u8]; 12] = [
        b"GET ",
        b"PUT ",
        b"PATCH ",
        b"/drives/a",
        b"/vm",
        b" HTTP/1.1\r\n",
        b"Content-Length: 5\r\n",
        b"\r\n",
        b"{\"state\":\"Paused\"}",
        b"Expect: 100-continue\r\n",
        b"\xff\x00",
        b"Connection: close\r\n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        let mut s = Session::new(64);
        let n = rng(&mut state) % 24;
        for _ in 0..n {
            let r = rng(&mut state);
            if r % 5 == 0 {
                let len = (r >> 8) as usize % 16;
                let bytes: Vec<u8> = (0..len).map(|_| rng(&mut state) as u8).collect();
                s.receive(&bytes);
            } else {
                s.receive(pieces[(r >> 8) as usize % pieces.len()]);
            }
            s.process(&Echo, &ApiMetrics::default());
        }
        let out = String::from_utf8_lossy(s.output()).into_owned();
        for part in out.split("HTTP/1.1 ").skip(1) {
            let code = &part[..3];
            assert!(["100", "200", "204", "400"].contains(&code), "{out}");
        }
    }
}
