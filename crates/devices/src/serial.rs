//! The COM port: a 16550A UART (vm-superio's model) behind [`BusDevice`],
//! with its interrupt on an [`IrqLine`] and its output on any writer.
//!
//! vm-superio writes each transmitted byte straight to its writer and drops
//! it if the write fails. To keep guest output whole and in order even on a
//! non-blocking writer, the writer is wrapped in [`OrderedOutput`], which
//! queues what the writer refused and writes it first next time.

use crate::bus::BusDevice;
use crate::irq::IrqLine;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, ErrorKind, Write};
use std::sync::Arc;
use vm_superio::serial::{Error as UartError, NoEvents};
use vm_superio::Trigger;

pub use vm_superio::SerialState;

/// The UART's eight registers.
const REGISTER_COUNT: u64 = 8;

/// How much refused output is kept before new bytes are dropped (a guest
/// must not grow our memory without bound when the writer is stuck).
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;

/// vm-superio's interrupt notification: the 16550's ISA interrupt is edge
/// triggered, so each event is one pulse on the line.
pub struct IrqTrigger(Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.pulse();
        Ok(())
    }
}

/// A writer that never loses or reorders bytes it accepted: what the inner
/// writer refuses (would block) is queued and written before anything
/// newer. Only when the queue reaches [`MAX_PENDING_OUTPUT`] are new bytes
/// dropped, and counted.
pub struct OrderedOutput {
    out: Box<dyn Write + Send>,
    pending: VecDeque<u8>,
    dropped: u64,
}

impl OrderedOutput {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        OrderedOutput {
            out,
            pending: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Writes as much of the queue as the inner writer takes now.
    pub fn drain(&mut self) {
        while !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            match self.out.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending.drain(..n.min(self.pending.len()));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("serial output: {e}");
                    break;
                }
            }
        }
        if let Err(e) = self.out.flush() {
            if e.kind() != ErrorKind::WouldBlock {
                log::warn!("serial output flush: {e}");
            }
        }
    }

    /// Bytes accepted but not yet written.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Write for OrderedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = MAX_PENDING_OUTPUT.saturating_sub(self.pending.len());
        let take = room.min(buf.len());
        self.pending.extend(&buf[..take]);
        self.dropped += (buf.len() - take) as u64;
        self.drain();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain();
        Ok(())
    }
}

/// Why a UART could not be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SerialError {
    #[error("saved input is larger than the receive fifo")]
    InputTooLarge,
}

type Uart = vm_superio::Serial<IrqTrigger, NoEvents, OrderedOutput>;

/// A 16550A UART. Map it over its 8 ports (COM1: 0x3f8..0x400).
pub struct Serial {
    uart: Uart,
}

impl Serial {
    /// A UART in its reset state that interrupts on `irq` and writes what
    /// the guest transmits to `out`.
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Serial {
            uart: vm_superio::Serial::new(IrqTrigger(irq), OrderedOutput::new(out)),
        }
    }

    /// A UART restored from a snapshot. Fails when the saved input is
    /// larger than the FIFO.
    pub fn from_state(
        state: &SerialState,
        irq: Arc<dyn IrqLine>,
        out: Box<dyn Write + Send>,
    ) -> Result<Self, SerialError> {
        vm_superio::Serial::from_state(state, IrqTrigger(irq), NoEvents, OrderedOutput::new(out))
            .map(|uart| Serial { uart })
            .map_err(|_| SerialError::InputTooLarge)
    }

    /// The registers and input FIFO, for a snapshot.
    pub fn state(&self) -> SerialState {
        self.uart.state()
    }

    /// Queues `bytes` for the guest to read; returns how many fit in the
    /// receive FIFO (the caller retries the rest later).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(UartError::FullFifo) => 0,
            Err(e) => {
                log::warn!("serial input: {e}");
                0
            }
        }
    }

    /// Free room in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Retries output the writer refused earlier (call when it becomes
    /// writable again).
    pub fn flush_output(&mut self) {
        self.uart.writer_mut().drain();
    }

    /// Output accepted from the guest but not yet written.
    pub fn pending_output(&self) -> usize {
        self.uart.writer().pending()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A wide access reaches consecutive registers, one byte each.
        for (reg, byte) in (offset..).zip(data.iter_mut()) {
            *byte = match u8::try_from(reg) {
                Ok(r) if reg < REGISTER_COUNT => self.uart.read(r),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (reg, &byte) in (offset..).zip(data.iter()) {
            let Ok(r) = u8::try_from(reg) else { break };
            if reg >= REGISTER_COUNT {
                break;
            }
            if let Err(e) = self.uart.write(r, byte) {
                // OrderedOutput never fails a write; only a flush error
                // could surface here, and the byte is already queued.
                log::debug!("serial write: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{RecordingIrq, SharedBuf};

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LSR: u64 = 5;

    fn serial() -> (Serial, Arc<RecordingIrq>, SharedBuf) {
        let irq = Arc::new(RecordingIrq::default());
        let out = SharedBuf::default();
        let s = Serial::new(irq.clone(), Box::new(out.clone()));
        (s, irq, out)
    }

    fn read(s: &mut Serial, reg: u64) -> u8 {
        let mut d = [0u8];
        s.read(reg, &mut d);
        d[0]
    }

    #[test]
    fn output_bytes_in_order() {
        let (mut s, _irq, out) = serial();
        for &b in b"hello, world\n" {
            s.write(THR, &[b]);
        }
        assert_eq!(out.contents(), b"hello, world\n");
    }

    #[test]
    fn thr_empty_interrupt_when_enabled() {
        let (mut s, irq, _out) = serial();
        s.write(THR, b"a");
        assert_eq!(irq.rising_edges(), 0, "no interrupt while IER is 0");
        // Enabling THRE with an empty holding register interrupts at once.
        s.write(IER, &[0x02]);
        assert_eq!(irq.rising_edges(), 1);
        assert!(!irq.level(), "edge: the line goes back low");
        assert_eq!(read(&mut s, IIR) & 0x0f, 0x02);
        s.write(THR, b"b");
        assert_eq!(irq.rising_edges(), 2);
        assert_eq!(read(&mut s, LSR) & 0x60, 0x60);
    }

    #[test]
    fn input_received_and_interrupts() {
        let (mut s, irq, _out) = serial();
        s.write(IER, &[0x01]);
        assert_eq!(s.enqueue_input(b"ok"), 2);
        assert_eq!(irq.rising_edges(), 1);
        assert_eq!(read(&mut s, LSR) & 1, 1);
        assert_eq!(read(&mut s, THR), b'o');
        assert_eq!(read(&mut s, THR), b'k');
        assert_eq!(read(&mut s, LSR) & 1, 0);
    }

    #[test]
    fn input_fifo_limit_reported() {
        let (mut s, _irq, _out) = serial();
        let big = [b'x'; 100];
        let n = s.enqueue_input(&big);
        assert!(n > 0 && n < big.len());
        assert_eq!(s.input_capacity(), 0);
        assert_eq!(s.enqueue_input(b"y"), 0);
    }

    /// Takes at most one byte per call and refuses every other call.
    struct Stingy {
        buf: SharedBuf,
        refuse: bool,
    }

    impl Write for Stingy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.refuse = !self.refuse;
            if self.refuse || buf.is_empty() {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.buf.write(&buf[..1])
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn refused_output_not_lost_or_reordered() {
        let buf = SharedBuf::default();
        let irq = Arc::new(RecordingIrq::default());
        let out = Stingy {
            buf: buf.clone(),
            refuse: false,
        };
        let mut s = Serial::new(irq, Box::new(out));
        for &b in b"abcdef" {
            s.write(THR, &[b]);
        }
        while s.pending_output() > 0 {
            s.flush_output();
        }
        assert_eq!(buf.contents(), b"abcdef");
    }

    #[test]
    fn state_round_trips() {
        let (mut s, irq, out) = serial();
        s.write(IER, &[0x01]);
        s.enqueue_input(b"z");
        let state = s.state();
        let mut t = Serial::from_state(&state, irq.clone(), Box::new(out.clone())).unwrap();
        assert_eq!(read(&mut t, THR), b'z');
        let mut huge = state;
        huge.in_buffer = vec![0; 1000];
        let r = Serial::from_state(&huge, irq, Box::new(out));
        assert_eq!(r.err(), Some(SerialError::InputTooLarge));
    }

    #[test]
    fn out_of_range_offsets_ignored() {
        let (mut s, _irq, out) = serial();
        let mut d = [0u8; 2];
        s.read(7, &mut d);
        assert_eq!(d[1], 0xff);
        s.write(9, b"q");
        assert!(out.contents().is_empty());
    }
}
