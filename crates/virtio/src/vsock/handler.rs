//! Moving packets: each transmit chain is one packet from the guest (a
//! 44-byte header, then `len` payload bytes in the same chain) handed to
//! the host side; each receive chain gets one packet from the host side
//! (RSTs first, then the connections in turn), header and payload
//! written across its buffers.

use super::device::{Vsock, RX, TX};
use super::packet::{Header, HDR_LEN, MAX_PAYLOAD};
use crate::queue::{self, QueueError};
use std::sync::atomic::Ordering;
use virtio_queue::QueueT;

const HDR: u64 = HDR_LEN as u64;

impl Vsock {
    pub(super) fn process_tx(&mut self) -> Result<(), QueueError> {
        let Vsock {
            host,
            active,
            buf,
            metrics,
            ..
        } = self;
        let Some(a) = active.as_mut() else {
            return Ok(());
        };
        if !a.tx.ready() {
            return Ok(());
        }
        let mut used = false;
        while let Some(chain) = queue::pop_chain(&mut a.tx, &a.mem)? {
            let total = queue::segments_len(&chain.readable);
            if total < HDR {
                return Err(QueueError::MissingBuffer {
                    needed: "a 44-byte packet header",
                    got: "fewer readable bytes",
                });
            }
            let mut raw = [0u8; HDR_LEN];
            queue::read_segments(&a.mem, &chain.readable, 0, &mut raw)?;
            let h = Header::from_bytes(&raw);
            if h.len > MAX_PAYLOAD || u64::from(h.len) > total - HDR {
                // A length the chain does not hold: refuse the packet
                // (and the connection it names) with a RST.
                host.on_guest_packet(&Header { op: 0, ..h }, &[]);
            } else {
                let payload = &mut buf[..h.len as usize];
                queue::read_segments(&a.mem, &chain.readable, HDR, payload)?;
                metrics.tx_packets.fetch_add(1, Ordering::Relaxed);
                metrics
                    .tx_bytes
                    .fetch_add(u64::from(h.len), Ordering::Relaxed);
                host.on_guest_packet(&h, payload);
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
        let Vsock {
            host,
            active,
            buf,
            metrics,
            ..
        } = self;
        let Some(a) = active.as_mut() else {
            return Ok(());
        };
        if !a.rx.ready() {
            return Ok(());
        }
        let mut used = false;
        while host.has_work() {
            let chain = match a.rx_held.take() {
                Some(c) => c,
                None => match queue::pop_chain(&mut a.rx, &a.mem)? {
                    Some(c) => c,
                    None => break,
                },
            };
            let room = queue::segments_len(&chain.writable);
            if room < HDR {
                return Err(QueueError::MissingBuffer {
                    needed: "room for a 44-byte packet header",
                    got: "fewer writable bytes",
                });
            }
            // room - HDR <= MAX_CHAIN_BYTES, and MAX_PAYLOAD bounds it.
            let payload_room = (room - HDR).min(u64::from(MAX_PAYLOAD)) as usize;
            let Some(h) = host.next_packet(&mut buf[..payload_room]) else {
                a.rx_held = Some(chain);
                break;
            };
            let len = h.len as usize;
            queue::write_segments(&a.mem, &chain.writable, 0, &h.to_bytes())?;
            queue::write_segments(&a.mem, &chain.writable, HDR, &buf[..len])?;
            a.dma.segments(&chain.writable);
            queue::add_used(&mut a.rx, &a.mem, chain.head, HDR_LEN as u32 + h.len)?;
            metrics.rx_packets.fetch_add(1, Ordering::Relaxed);
            metrics
                .rx_bytes
                .fetch_add(u64::from(h.len), Ordering::Relaxed);
            used = true;
        }
        if used && queue::needs_notification(&mut a.rx, &a.mem) {
            a.interrupt.signal_used_queue(RX);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
