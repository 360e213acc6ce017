//! virtio-vsock: the fuzzer's bytes are a script of guest and host
//! actions. The guest sends packets (header fields from the input, the
//! source CID and ports often forced to plausible values so connections
//! get made), offers receive buffers, or scribbles raw bytes over its
//! rings; host programs connect to the device's socket with a `CONNECT`
//! line from the input, write, or close, and one host program listens on
//! `<uds>_1234` for guest connections.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio::device::{Activation, Interrupt};
use virtio::test_driver::{Desc, TestQueue};
use virtio::vsock::packet::{Header, HDR_LEN, HOST_CID, TYPE_STREAM};
use virtio::vsock::{Vsock, VsockConfig, RX, TOKEN_HOST, TX};
use virtio::VirtioDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct NoIrq;
impl Interrupt for NoIrq {
    fn signal_used_queue(&self, _: u16) {}
    fn signal_config_change(&self) {}
}

static RUN: AtomicU64 = AtomicU64::new(0);

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (a, b) = data.split_at(n);
    *data = b;
    Some(a)
}

fuzz_target!(|input: &[u8]| {
    let dir = std::env::temp_dir().join(format!(
        "vessel-fuzz-vsock-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::create_dir_all(&dir);
    let uds = dir.join("v");
    let listener = UnixListener::bind(dir.join("v_1234")).ok();
    if let Some(l) = &listener {
        let _ = l.set_nonblocking(true);
    }
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mut rx = TestQueue::new(&mem, GuestAddress(0), 16);
    let mut tx = TestQueue::new(&mem, GuestAddress(0x1000), 16);
    let ev = TestQueue::new(&mem, GuestAddress(0x2000), 16);
    let Ok(mut dev) = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    }) else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    dev.activate(Activation {
        mem: mem.clone(),
        queues: vec![rx.queue(), tx.queue(), ev.queue()],
        features: 0,
        interrupt: Arc::new(NoIrq),
        dma: Default::default(),
    })
    .unwrap();
    let mut hosts: Vec<UnixStream> = Vec::new();
    let mut data = input;
    while let Some(&[action]) = take(&mut data, 1) {
        match action % 7 {
            0 => {
                let Some(raw) = take(&mut data, HDR_LEN) else {
                    break;
                };
                let mut b = [0u8; HDR_LEN];
                b.copy_from_slice(raw);
                let mut h = Header::from_bytes(&b);
                if action & 0x80 != 0 {
                    h.src_cid = 3;
                    h.dst_cid = HOST_CID;
                    h.kind = TYPE_STREAM;
                    h.op %= 8;
                }
                if action & 0x40 != 0 {
                    h.dst_port = 1234;
                }
                let len = (h.len as usize).min(data.len()).min(0x8000);
                let payload = take(&mut data, len).unwrap_or_default();
                let _ = mem.write_slice(&h.to_bytes(), GuestAddress(0x10000));
                let _ = mem.write_slice(payload, GuestAddress(0x20000));
                tx.add_chain(
                    &mem,
                    &[
                        Desc::r(0x10000, HDR_LEN as u32),
                        Desc::r(0x20000, (action as u32 >> 4) * 0x1000),
                    ],
                );
                let _ = dev.queue_notify(TX);
            }
            1 => {
                let Some(&[n, size]) = take(&mut data, 2) else {
                    break;
                };
                for i in 0..u64::from(n % 8) {
                    let at = 0x40000 + i * 0x2000;
                    rx.add_chain(
                        &mem,
                        &[Desc::w(at, 44), Desc::w(at + 0x100, u32::from(size) * 32)],
                    );
                }
                let _ = dev.queue_notify(RX);
            }
            2 => {
                let Some(&[port]) = take(&mut data, 1) else {
                    break;
                };
                if let Ok(mut s) = UnixStream::connect(&uds) {
                    let _ = s.set_nonblocking(true);
                    let _ = s.write_all(format!("CONNECT {port}\n").as_bytes());
                    hosts.push(s);
                }
                let _ = dev.handle_event(TOKEN_HOST);
            }
            3 => {
                let Some(&[which, len]) = take(&mut data, 2) else {
                    break;
                };
                let n = usize::from(len).min(data.len());
                let bytes = take(&mut data, n).unwrap_or_default();
                let count = hosts.len().max(1);
                if let Some(s) = hosts.get_mut(usize::from(which) % count) {
                    let _ = s.write(bytes);
                }
                let _ = dev.handle_event(TOKEN_HOST);
            }
            4 => {
                if !hosts.is_empty() {
                    hosts.remove(0);
                }
                let _ = dev.handle_event(TOKEN_HOST);
            }
            5 => {
                if let Some(l) = &listener {
                    if let Ok((s, _)) = l.accept() {
                        let _ = s.set_nonblocking(true);
                        hosts.push(s);
                    }
                }
                let _ = dev.handle_event(TOKEN_HOST);
            }
            _ => {
                // Raw bytes over the rings and descriptor tables.
                let Some(&[at, len]) = take(&mut data, 2) else {
                    break;
                };
                let n = usize::from(len).min(data.len());
                let bytes = take(&mut data, n).unwrap_or_default();
                let _ = mem.write_slice(bytes, GuestAddress(u64::from(at) * 48));
                let _ = dev.queue_notify(u16::from(action >> 4) % 4);
            }
        }
    }
    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
});
