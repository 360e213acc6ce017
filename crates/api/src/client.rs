//! A small blocking HTTP/1.1 client for the API socket, for `vessel ctl`
//! and tests: one connection per request, with a timeout.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Largest answer read.
const MAX_RESPONSE: usize = 16 << 20;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no vessel API at {0}: is vessel running with --api-sock {0}?")]
    NotListening(String),
    #[error("the API at {path} did not answer within {secs} s: is the VMM stuck?")]
    Timeout { path: String, secs: u64 },
    #[error("talking to the API at {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the API answered with something that is not HTTP: {0}")]
    BadResponse(String),
}

/// A client of one API socket.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the socket at `path`, waiting up to 30 s for answers.
    pub fn new(path: impl Into<PathBuf>) -> Client {
        Client {
            path: path.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets how long a request may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends one request; returns the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ClientError> {
        let mut stream = self.connect()?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
        );
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        stream
            .write_all(req.as_bytes())
            .map_err(|e| self.io_error(e))?;
        self.read_response(&mut stream)
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        let stream = UnixStream::connect(&self.path).map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                ClientError::NotListening(self.path.display().to_string())
            }
            _ => self.io_error(e),
        })?;
        let t = Some(self.timeout.max(Duration::from_millis(1)));
        stream.set_read_timeout(t).map_err(|e| self.io_error(e))?;
        stream.set_write_timeout(t).map_err(|e| self.io_error(e))?;
        Ok(stream)
    }

    fn io_error(&self, e: std::io::Error) -> ClientError {
        let path = self.path.display().to_string();
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout {
                path,
                secs: self.timeout.as_secs(),
            },
            _ => ClientError::Io { path, source: e },
        }
    }

    fn read_response(&self, stream: &mut UnixStream) -> Result<(u16, String), ClientError> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((status, body_at, len)) = parse_head(&buf)? {
                // 1xx answers (100 Continue) come before the real one.
                if (100..200).contains(&status) {
                    buf.drain(..body_at);
                    continue;
                }
                let end = body_at.saturating_add(len.unwrap_or(0));
                if len.is_none() || buf.len() >= end {
                    let body = &buf[body_at..end.min(buf.len())];
                    return Ok((status, String::from_utf8_lossy(body).into_owned()));
                }
            }
            if buf.len() > MAX_RESPONSE {
                return Err(ClientError::BadResponse("the answer is over 16 MiB".into()));
            }
            match stream.read(&mut chunk) {
                Ok(0) => return self.at_eof(&buf),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn at_eof(&self, buf: &[u8]) -> Result<(u16, String), ClientError> {
        match parse_head(buf)? {
            Some((status, at, None)) => {
                Ok((status, String::from_utf8_lossy(&buf[at..]).into_owned()))
            }
            _ => Err(ClientError::BadResponse(format!(
                "the connection closed after {} bytes of the answer",
                buf.len()
            ))),
        }
    }
}

/// The status, where the body starts and its Content-Length, once the
/// head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(at)) => {
            let status = resp.code.unwrap_or(0);
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
            let len = if status == 204 || (100..200).contains(&status) {
                Some(len.unwrap_or(0))
            } else {
                len
            };
            Ok(Some((status, at, len)))
        }
        Err(e) => Err(ClientError::BadResponse(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_named() {
        let c = Client::new("/nonexistent/vessel.sock");
        let e = c.request("GET", "/", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no vessel API at /nonexistent/vessel.sock: is vessel running with --api-sock /nonexistent/vessel.sock?"
        );
    }

    #[test]
    fn heads_parse() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(h, Some((200, 38, Some(2))));
        let h = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(h, Some((204, 27, Some(0))));
        assert_eq!(parse_head(b"HTTP/1.1 20").unwrap(), None);
        assert!(parse_head(b"\x00\x01\r\n\r\n").is_err());
    }
}
