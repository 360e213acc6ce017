//! The API server on a real Unix socket with a fake VMM behind it: the
//! lifecycle calls, bad input, stalled clients, many clients, keep-alive,
//! the payload limit and stopping.

use api::model::{InstanceInfo, InstanceState, MachineConfiguration};
use api::{Backend, Client, Fault, Reply, Request, Server, ServerHandle};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A VMM that keeps a machine config and a run state.
#[derive(Default)]
struct FakeVmm {
    machine: Mutex<Option<MachineConfiguration>>,
    started: Mutex<bool>,
}

impl Backend for FakeVmm {
    fn handle(&self, request: Request) -> Result<Reply, Fault> {
        let started = *self.started.lock().unwrap();
        match request {
            Request::GetInstanceInfo => Reply::json(&InstanceInfo {
                app_name: "vessel".into(),
                id: "test".into(),
                state: if started {
                    InstanceState::Running
                } else {
                    InstanceState::NotStarted
                },
                vmm_version: "0.1.0".into(),
            }),
            Request::PutMachineConfig(m) if !started => {
                *self.machine.lock().unwrap() = Some(m);
                Ok(Reply::NoContent)
            }
            Request::GetMachineConfig => {
                Reply::json(&self.machine.lock().unwrap().clone().unwrap_or_default())
            }
            Request::Action(api::model::ActionKind::InstanceStart) if !started => {
                *self.started.lock().unwrap() = true;
                Ok(Reply::NoContent)
            }
            Request::PatchVm(_) if !started => Err(Fault::new(
                "the VM is not running: send InstanceStart first",
            )),
            other if started => Err(Fault(format!("{other:?} is not allowed after start"))),
            _ => Ok(Reply::NoContent),
        }
    }
}

struct Running {
    path: PathBuf,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<api::ApiMetrics>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn socket_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("vessel-api-{}-{n}.sock", std::process::id()))
}

fn start(max_payload: usize, idle: Duration) -> Running {
    let path = socket_path();
    let server = Server::bind(&path, max_payload)
        .unwrap()
        .with_idle_timeout(idle);
    let handle = server.handle();
    let metrics = server.metrics();
    let thread = std::thread::spawn(move || {
        server.run(Arc::new(FakeVmm::default())).unwrap();
    });
    Running {
        path,
        handle,
        thread: Some(thread),
        metrics,
    }
}

fn client(r: &Running) -> Client {
    Client::new(&r.path).with_timeout(Duration::from_secs(10))
}

fn fault(status_body: (u16, String)) -> String {
    let (status, body) = status_body;
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["fault_message"].as_str().unwrap().to_string()
}

/// Reads one answer off a raw stream: head plus Content-Length body.
fn read_answer(s: &mut UnixStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-answer: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

#[test]
fn lifecycle_over_the_socket() {
    let r = start(api::DEFAULT_MAX_PAYLOAD, Duration::from_secs(10));
    let c = client(&r);
    let (status, body) = c.request("GET", "/", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"state\":\"Not started\""), "{body}");
    let (status, body) = c
        .request(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": 2, "mem_size_mib": 256}"#),
        )
        .unwrap();
    assert_eq!((status, body.as_str()), (204, ""));
    let (status, body) = c.request("GET", "/machine-config", None).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["mem_size_mib"], 256);
    let msg = fault(
        c.request("PATCH", "/vm", Some(r#"{"state": "Paused"}"#))
            .unwrap(),
    );
    assert!(msg.contains("send InstanceStart first"), "{msg}");
    let (status, _) = c
        .request(
            "PUT",
            "/actions",
            Some(r#"{"action_type": "InstanceStart"}"#),
        )
        .unwrap();
    assert_eq!(status, 204);
    let (_, body) = c.request("GET", "/", None).unwrap();
    assert!(body.contains("\"state\":\"Running\""), "{body}");
    let msg = fault(
        c.request(
            "PUT",
            "/boot-source",
            Some(r#"{"kernel_image_path": "/k"}"#),
        )
        .unwrap(),
    );
    assert!(msg.contains("not allowed after start"), "{msg}");
    assert_eq!(r.metrics.to_json()["put_api_requests"]["actions_count"], 1);
    assert_eq!(
        r.metrics.to_json()["put_api_requests"]["boot_source_fails"],
        1
    );
}

#[test]
fn bad_input_gets_400_with_a_useful_fault_message() {
    let r = start(1024, Duration::from_secs(10));
    let c = client(&r);
    let cases: [(&str, &str, Option<&str>, &str); 10] = [
        (
            "PUT",
            "/machine-config",
            Some("{\"vcpu_count\": 2,"),
            "is not valid",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": 2, "mem_size_mib": 64, "x": 1}"#),
            "unknown field `x`",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": [], "mem_size_mib": 64}"#),
            "vcpu_count: invalid type",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": 2, "mem_size_mib": -64}"#),
            "mem_size_mib: invalid value",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": 200, "mem_size_mib": 64}"#),
            "out of range",
        ),
        ("POST", "/machine-config", Some("{}"), "use GET, PUT, PATCH"),
        (
            "GET",
            "/no/such/path",
            None,
            "invalid request method and/or path",
        ),
        (
            "PUT",
            "/drives/a",
            Some(r#"{"drive_id": "b", "is_root_device": false, "path_on_host": "/x"}"#),
            "differ",
        ),
        (
            "PUT",
            "/snapshot/create",
            Some("{}"),
            "not supported by vessel yet",
        ),
        ("PUT", "/mmds", Some("{}"), "not supported by vessel yet"),
    ];
    for (method, path, body, want) in cases {
        let msg = fault(c.request(method, path, body).unwrap());
        assert!(msg.contains(want), "{method} {path}: {msg}");
    }
    let big = format!(r#"{{"kernel_image_path": "{}"}}"#, "k".repeat(2000));
    let msg = fault(c.request("PUT", "/boot-source", Some(&big)).unwrap());
    assert!(msg.contains("larger than the limit of 1024 bytes"), "{msg}");
    assert_eq!(c.request("GET", "/", None).unwrap().0, 200, "still serving");
}

#[test]
fn a_stalled_client_blocks_nobody_and_is_dropped() {
    let r = start(1024, Duration::from_millis(500));
    let mut stalled = UnixStream::connect(&r.path).unwrap();
    stalled
        .write_all(b"PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let t = Instant::now();
    assert_eq!(client(&r).request("GET", "/", None).unwrap().0, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = stalled.read(&mut buf).unwrap();
    assert_eq!(n, 0, "the stalled connection is closed, unanswered");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn three_hundred_clients_at_once() {
    let r = start(1024, Duration::from_secs(10));
    let barrier = Arc::new(Barrier::new(300));
    let threads: Vec<_> = (0..300)
        .map(|i| {
            let path = r.path.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                barrier.wait();
                let body = format!(r#"{{"vcpu_count": {}, "mem_size_mib": 64}}"#, i % 32 + 1);
                let req = format!(
                    "PUT /machine-config HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\n\r\n",
                    body.len()
                );
                s.write_all(req.as_bytes()).unwrap();
                let a = read_answer(&mut s);
                let b = read_answer(&mut s);
                a.starts_with("HTTP/1.1 204") && b.starts_with("HTTP/1.1 200")
            })
        })
        .collect();
    let ok = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|x| *x)
        .count();
    assert_eq!(ok, 300);
    assert_eq!(
        r.metrics.to_json()["get_api_requests"]["instance_info_count"],
        300
    );
}

#[test]
fn keep_alive_serves_requests_in_sequence_and_pipelined() {
    let r = start(1024, Duration::from_secs(10));
    let mut s = UnixStream::connect(&r.path).unwrap();
    for _ in 0..5 {
        s.write_all(b"GET /machine-config HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let a = read_answer(&mut s);
        assert!(a.starts_with("HTTP/1.1 200 OK"), "{a}");
        assert!(a.contains("Connection: keep-alive"));
    }
    s.write_all(b"GET / HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nPATCH /vm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 18\r\n\r\n")
        .unwrap();
    assert!(read_answer(&mut s).starts_with("HTTP/1.1 200"));
    assert!(read_answer(&mut s).starts_with("HTTP/1.1 400"));
    assert!(read_answer(&mut s).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(br#"{"state":"Paused"}"#).unwrap();
    let a = read_answer(&mut s);
    assert!(a.contains("send InstanceStart first"), "{a}");
}

#[test]
fn oversized_body_is_answered_then_the_connection_closes() {
    let r = start(100, Duration::from_secs(10));
    let mut s = UnixStream::connect(&r.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = vec![b' '; 200_000];
    s.write_all(b"PUT /boot-source HTTP/1.1\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    // The server answers before the body; the client may still be sending.
    let _ = s.write_all(&body);
    let a = read_answer(&mut s);
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    assert!(a.contains("Connection: close"));
    assert!(
        a.contains("with size 200000 is larger than the limit of 100 bytes"),
        "{a}"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn random_bytes_from_many_clients_do_not_stop_the_server() {
    let r = start(256, Duration::from_millis(300));
    let mut state = 0x1234_5678_9abc_def1u64;
    for _ in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 600) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| (state.rotate_left(i as u32 % 64) >> 3) as u8)
            .collect();
        if let Ok(mut s) = UnixStream::connect(&r.path) {
            let _ = s.write_all(&bytes);
        }
    }
    assert_eq!(client(&r).request("GET", "/", None).unwrap().0, 200);
}

#[test]
fn connections_over_the_limit_are_told_why() {
    let path = socket_path();
    let server = Server::bind(&path, 1024).unwrap().with_max_connections(5);
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run(Arc::new(FakeVmm::default())).unwrap());
    let r = Running {
        path,
        handle,
        thread: Some(thread),
        metrics: Arc::new(api::ApiMetrics::default()),
    };
    let held: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&r.path).unwrap())
        .collect();
    // The server has accepted the five once one of them is answered.
    let mut first = &held[0];
    first.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut probe = held[0].try_clone().unwrap();
    assert!(read_answer(&mut probe).starts_with("HTTP/1.1 200"));
    let mut extra = UnixStream::connect(&r.path).unwrap();
    let a = read_answer(&mut extra);
    assert!(a.contains("already has 5 connections open"), "{a}");
    drop(held);
    // Once the server has seen the five close, a new client is served.
    let t = Instant::now();
    while client(&r).request("GET", "/", None).unwrap().0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(5), "slots never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stop_returns_and_removes_the_socket() {
    let mut r = start(1024, Duration::from_secs(10));
    let idle = UnixStream::connect(&r.path).unwrap();
    r.handle.stop();
    r.thread.take().unwrap().join().unwrap();
    assert!(!r.path.exists());
    let e = client(&r).request("GET", "/", None).unwrap_err();
    assert!(e.to_string().starts_with("no vessel API at"), "{e}");
    drop(idle);
}
