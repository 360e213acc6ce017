//! Moving frames: transmit chains are gathered into one frame (header
//! included) and written to the backend; received frames are scattered
//! into one receive chain, or with mergeable buffers into as many as it
//! takes, with `num_buffers` set in the first one's header. Each frame
//! takes its bytes and one operation from its direction's rate limiter
//! first; when refused, a transmit chain goes back on the ring and a
//! received frame waits, until the limiter's timer fires.

use super::device::{Active, Net, RX, TX};
use super::tap::VNET_HDR_LEN;
use crate::queue::{self, Chain, QueueError};
use std::sync::atomic::Ordering;
use virtio_queue::{QueueOwnedT, QueueT};

/// The largest frame either way: a 64 KiB GSO segment plus Ethernet and
/// VLAN headers plus the virtio-net header.
pub const MAX_FRAME: usize = 65562 + 32;

impl Net {
    pub(super) fn process_tx(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if !a.tx.ready() {
            return Ok(());
        }
        let mut frame = vec![0u8; MAX_FRAME];
        let mut used = false;
        while let Some(chain) = queue::pop_chain(&mut a.tx, &a.mem)? {
            let len = queue::segments_len(&chain.readable);
            let sendable = len > VNET_HDR_LEN as u64 && len <= MAX_FRAME as u64;
            if sendable && !self.tx_limiter.lock().consume_request(len) {
                self.metrics
                    .tx_rate_limiter_throttled
                    .fetch_add(1, Ordering::Relaxed);
                a.tx.go_to_previous_position();
                break;
            }
            if !sendable {
                self.metrics.tx_dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                let n = queue::read_segments(&a.mem, &chain.readable, 0, &mut frame)?;
                match self.backend.send(&frame[..n]) {
                    Ok(_) => {
                        self.metrics.tx_packets.fetch_add(1, Ordering::Relaxed);
                        self.metrics.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        log::debug!("virtio-net: tap write failed: {e}");
                        self.metrics.tx_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            queue::add_used(&mut a.tx, &a.mem, chain.head, 0)?;
            used = true;
        }
        if used && queue::needs_notification(&mut a.tx, &a.mem) {
            a.interrupt.signal_used_queue(TX);
        }
        Ok(())
    }

    pub(super) fn process_rx(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if !a.rx.ready() {
            return Ok(());
        }
        let mut used = false;
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let (frame, paid) = match self.rx_pending.take() {
                Some(f) => f,
                None => match self.backend.recv(&mut buf) {
                    Ok(n) if n > VNET_HDR_LEN => (buf[..n].to_vec(), false),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::debug!("virtio-net: tap read failed: {e}");
                        break;
                    }
                },
            };
            if !paid && !self.rx_limiter.lock().consume_request(frame.len() as u64) {
                self.metrics
                    .rx_rate_limiter_throttled
                    .fetch_add(1, Ordering::Relaxed);
                self.rx_pending = Some((frame, false));
                break;
            }
            match deliver(a, &frame)? {
                Delivery::Done => {
                    used = true;
                    self.metrics.rx_packets.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .rx_bytes
                        .fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
                Delivery::NoBuffers => {
                    self.rx_pending = Some((frame, true));
                    break;
                }
                Delivery::Dropped => {
                    self.metrics.rx_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if used && queue::needs_notification(&mut a.rx, &a.mem) {
            a.interrupt.signal_used_queue(RX);
        }
        Ok(())
    }
}

enum Delivery {
    Done,
    /// The guest has not posted enough buffers; try again on its next kick.
    NoBuffers,
    /// The frame can never fit (a single buffer too small without
    /// mergeable buffers); the buffer is kept for the next frame.
    Dropped,
}

/// Gathers receive chains until they hold `len` bytes; false (chains
/// kept in `rx_held`) when the ring runs out first.
fn gather(a: &mut Active, len: u64, one: bool) -> Result<bool, QueueError> {
    loop {
        let have: u64 = a
            .rx_held
            .iter()
            .map(|c| queue::segments_len(&c.writable))
            .sum();
        if have >= len || (one && !a.rx_held.is_empty()) {
            return Ok(true);
        }
        match queue::pop_chain(&mut a.rx, &a.mem)? {
            Some(c) if c.writable.is_empty() => {
                // A receive buffer the device cannot write: give it back.
                queue::add_used(&mut a.rx, &a.mem, c.head, 0)?;
            }
            Some(c) => a.rx_held.push(c),
            None => return Ok(false),
        }
    }
}

fn deliver(a: &mut Active, frame: &[u8]) -> Result<Delivery, QueueError> {
    let len = frame.len() as u64;
    if !gather(a, len, !a.mergeable)? {
        return Ok(Delivery::NoBuffers);
    }
    if !a.mergeable {
        let fits = a
            .rx_held
            .first()
            .is_some_and(|c| queue::segments_len(&c.writable) >= len);
        if !fits {
            return Ok(Delivery::Dropped);
        }
    }
    let mut chains: Vec<(Chain, u32)> = Vec::new();
    let mut off = 0usize;
    while off < frame.len() {
        if a.rx_held.is_empty() {
            // gather() made sure the held chains hold the frame.
            return Ok(Delivery::NoBuffers);
        }
        let c = a.rx_held.remove(0);
        let n = queue::write_segments(&a.mem, &c.writable, 0, &frame[off..])?;
        a.dma.segments(&c.writable);
        off += n;
        // n <= MAX_FRAME
        chains.push((c, n as u32));
    }
    // num_buffers lives at bytes 10..12 of the header, in the first buffer.
    let count = chains.len() as u16;
    if let Some((first, _)) = chains.first() {
        queue::write_segments(&a.mem, &first.writable, 10, &count.to_le_bytes())?;
    }
    for (c, n) in chains {
        queue::add_used(&mut a.rx, &a.mem, c.head, n)?;
    }
    Ok(Delivery::Done)
}

#[cfg(test)]
mod tests;
