//! HTTP/1.1 for one connection, without sockets: bytes come in, requests
//! are framed with httparse (`Content-Length` bodies only, `Expect:
//! 100-continue`, keep-alive and pipelining), routed and handed to the
//! backend, and the answers queue up as bytes to send. The server drives
//! one [`Session`] per connection; tests and the fuzz target drive it
//! directly.

use crate::backend::{Backend, Fault, Reply};
use crate::metrics::ApiMetrics;
use crate::request;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Most bytes a request line and its headers may take.
pub const MAX_HEADER_BYTES: usize = 8192;
/// Most headers a request may have.
pub const MAX_HEADERS: usize = 32;

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// A JSON body (for 200 and 400), none for 204.
    pub body: Option<String>,
    /// Whether the connection closes after this answer.
    pub close: bool,
}

impl Response {
    /// 400 with `{"fault_message": ...}`.
    pub fn fault(message: impl Into<String>, close: bool) -> Response {
        Response {
            status: 400,
            body: Some(Fault::new(message).to_json()),
            close,
        }
    }

    /// The answer as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            _ => "Internal Server Error",
        };
        let connection = if self.close { "close" } else { "keep-alive" };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nServer: vessel API\r\nConnection: {connection}\r\n",
            self.status
        );
        if let Some(body) = &self.body {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let Some(body) = &self.body {
            out.extend_from_slice(body.as_bytes());
        }
        out
    }
}

/// What the headers of a request said about its framing.
#[derive(Debug, Default)]
struct Framing {
    content_length: usize,
    keep_alive: bool,
    expect_continue: bool,
}

/// A complete request taken out of the input.
struct Parsed {
    method: String,
    target: String,
    header_len: usize,
    framing: Framing,
}

enum Step {
    /// More bytes are needed.
    Incomplete,
    /// Headers are complete; the body may not be.
    Headers(Parsed),
    /// The request cannot be framed: answer and close.
    Fail(String),
}

/// One connection's state: unparsed input, queued output, and whether the
/// connection ends once the output is sent.
#[derive(Debug)]
pub struct Session {
    input: Vec<u8>,
    output: Vec<u8>,
    max_payload: usize,
    continue_sent: bool,
    closing: bool,
}

impl Session {
    /// A new connection whose bodies may be up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Session {
        Session {
            input: Vec::new(),
            output: Vec::new(),
            max_payload,
            continue_sent: false,
            closing: false,
        }
    }

    /// Adds bytes read from the client. Ignored once the session is closing.
    pub fn receive(&mut self, data: &[u8]) {
        if !self.closing {
            self.input.extend_from_slice(data);
        }
    }

    /// Answers every complete request in the input, in order.
    pub fn process(&mut self, backend: &dyn Backend, metrics: &ApiMetrics) {
        while !self.closing {
            match self.next_headers() {
                Step::Incomplete => return,
                Step::Fail(message) => {
                    metrics.record_bad_http();
                    self.answer(Response::fault(message, true));
                }
                Step::Headers(p) => {
                    if !self.serve(&p, backend, metrics) {
                        return;
                    }
                }
            }
        }
    }

    /// Bytes waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Drops the first `n` bytes of output, once sent.
    pub fn consume_output(&mut self, n: usize) {
        self.output.drain(..n.min(self.output.len()));
    }

    /// Whether the connection is to be closed once the output is sent.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Whether part of a request has arrived and not been answered.
    pub fn mid_request(&self) -> bool {
        !self.input.is_empty()
    }

    /// Answers the request whose headers are `p` if its body is here;
    /// returns false when more bytes are needed.
    fn serve(&mut self, p: &Parsed, backend: &dyn Backend, metrics: &ApiMetrics) -> bool {
        let f = &p.framing;
        if f.content_length > self.max_payload {
            metrics.record(&p.method, &p.target, false);
            let msg = format!(
                "request payload with size {} is larger than the limit of {} bytes allowed by the server: send a smaller body, or start vessel with a larger --http-api-max-payload-size",
                f.content_length, self.max_payload
            );
            self.answer(Response::fault(msg, true));
            return true;
        }
        let end = p.header_len + f.content_length;
        if self.input.len() < end {
            if f.expect_continue && !self.continue_sent {
                self.output
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                self.continue_sent = true;
            }
            return false;
        }
        let body = &self.input[p.header_len..end];
        let mut response = dispatch(&p.method, &p.target, body, backend, metrics);
        response.close = !f.keep_alive;
        self.input.drain(..end);
        self.continue_sent = false;
        self.answer(response);
        true
    }

    fn answer(&mut self, r: Response) {
        self.output.extend_from_slice(&r.to_bytes());
        if r.close {
            self.closing = true;
            self.input.clear();
        }
    }

    fn next_headers(&self) -> Step {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let header_len = match req.parse(&self.input) {
            Ok(httparse::Status::Partial) if self.input.len() > MAX_HEADER_BYTES => {
                return Step::Fail(headers_too_long());
            }
            Ok(httparse::Status::Partial) => return Step::Incomplete,
            Ok(httparse::Status::Complete(n)) if n > MAX_HEADER_BYTES => {
                return Step::Fail(headers_too_long());
            }
            Ok(httparse::Status::Complete(n)) => n,
            Err(httparse::Error::TooManyHeaders) => {
                return Step::Fail(format!(
                    "the request has more than {MAX_HEADERS} headers: send fewer"
                ))
            }
            Err(e) => return Step::Fail(format!("malformed HTTP request ({e}): send HTTP/1.1")),
        };
        let framing = match framing(req.version.unwrap_or(1), req.headers) {
            Ok(f) => f,
            Err(msg) => return Step::Fail(msg),
        };
        Step::Headers(Parsed {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            header_len,
            framing,
        })
    }
}

fn headers_too_long() -> String {
    format!("the request line and headers are over {MAX_HEADER_BYTES} bytes: send shorter ones")
}

/// Reads Content-Length, Transfer-Encoding, Connection and Expect.
fn framing(version: u8, headers: &[httparse::Header]) -> Result<Framing, String> {
    let mut f = Framing {
        keep_alive: version == 1,
        ..Framing::default()
    };
    let mut length: Option<usize> = None;
    for h in headers {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(
                    "the request has two different Content-Length headers: send one".into(),
                );
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "Transfer-Encoding {value:?} is not supported: send the body with a Content-Length"
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    f.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    f.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(format!(
                    "Expect {value:?} is not supported: only 100-continue is"
                ));
            }
            f.expect_continue = true;
        }
    }
    f.content_length = length.unwrap_or(0);
    Ok(f)
}

/// A Content-Length value; one too large for usize becomes usize::MAX, which
/// the payload limit then refuses.
fn parse_length(value: &str) -> Result<usize, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "Content-Length {:?} is not a number: send the body's length in bytes",
            value.chars().take(32).collect::<String>()
        ));
    }
    Ok(value.parse::<usize>().unwrap_or(usize::MAX))
}

/// Routes one request, runs it on the backend and counts it.
pub fn dispatch(
    method: &str,
    target: &str,
    body: &[u8],
    backend: &dyn Backend,
    metrics: &ApiMetrics,
) -> Response {
    log::info!("API request: {method} {target}");
    let result = match request::parse(method, target, body) {
        Err(e) => Err(Fault::from(e)),
        Ok(req) => match catch_unwind(AssertUnwindSafe(|| backend.handle(req))) {
            Ok(r) => r,
            Err(_) => {
                log::error!("the API backend panicked on {method} {target}");
                metrics.record(method, target, false);
                return Response {
                    status: 500,
                    body: Some(
                        Fault::new("vessel failed internally on this request: please report it")
                            .to_json(),
                    ),
                    close: false,
                };
            }
        },
    };
    metrics.record(method, target, result.is_ok());
    match result {
        Ok(Reply::NoContent) => Response {
            status: 204,
            body: None,
            close: false,
        },
        Ok(Reply::Json(v)) => Response {
            status: 200,
            body: Some(v.to_string()),
            close: false,
        },
        Err(fault) => {
            log::warn!("API {method} {target}: {fault}");
            Response::fault(fault.0, false)
        }
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
