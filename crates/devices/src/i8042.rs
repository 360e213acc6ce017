//! Enough of an i8042 keyboard controller for Linux's probe and for the
//! keyboard-controller reset: one bus device over ports 0x60..0x65 (offset
//! 0 = data, offset 4 = command on write, status on read), a controller
//! command byte, the controller self tests, port enable/disable, and a
//! keyboard that acknowledges commands but never types.
//!
//! Command 0xFE (and any other pulse-output command that pulses the reset
//! line), or an output-port write with the reset bit low, raise
//! [`VmEvent::Reset`].

use crate::bus::BusDevice;
use crate::events::{VmEvent, VmEventSink};
use crate::irq::IrqLine;
use std::collections::VecDeque;
use std::sync::Arc;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

// Status register bits.
const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;
const STATUS_NOT_INHIBITED: u8 = 0x10;
const STATUS_AUX_DATA: u8 = 0x20;

// Command byte (CTR) bits.
const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

/// What a BIOS leaves behind: both interrupts on, POST passed, translation.
const CTR_DEFAULT: u8 = CTR_KBD_INT | CTR_AUX_INT | CTR_SYS | CTR_XLATE;

/// Output port bits: reset line (high = running) and A20 gate.
const OUTPUT_PORT_RESET: u8 = 0x01;
const OUTPUT_PORT_A20: u8 = 0x02;

/// Bytes the output buffer holds before further ones are dropped.
const OUTPUT_LIMIT: usize = 16;

// Keyboard replies.
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;

/// Who produced a byte in the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Controller,
    Keyboard,
    Aux,
}

/// A controller command that takes a data byte next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingWrite {
    CommandByte,
    InternalRam,
    OutputPort,
    KeyboardOutput,
    AuxOutput,
    AuxDevice,
}

/// The i8042 and its keyboard.
pub struct I8042 {
    events: Arc<dyn VmEventSink>,
    kbd_irq: Option<Arc<dyn IrqLine>>,
    aux_irq: Option<Arc<dyn IrqLine>>,
    ctr: u8,
    output_port: u8,
    pending: Option<PendingWrite>,
    last_was_command: bool,
    out: VecDeque<(u8, Source)>,
    last_read: u8,
    /// The keyboard command waiting for its parameter byte.
    kbd_param_for: Option<u8>,
}

impl I8042 {
    /// A controller that sends resets to `events` and raises no interrupts.
    pub fn new(events: Arc<dyn VmEventSink>) -> Self {
        I8042 {
            events,
            kbd_irq: None,
            aux_irq: None,
            ctr: CTR_DEFAULT,
            output_port: OUTPUT_PORT_RESET | OUTPUT_PORT_A20,
            pending: None,
            last_was_command: false,
            out: VecDeque::new(),
            last_read: 0,
            kbd_param_for: None,
        }
    }

    /// Pulses `kbd` (IRQ 1) when keyboard data arrives and `aux` (IRQ 12)
    /// when auxiliary-port data does, as the command byte enables.
    pub fn with_irqs(
        mut self,
        kbd: Option<Arc<dyn IrqLine>>,
        aux: Option<Arc<dyn IrqLine>>,
    ) -> Self {
        self.kbd_irq = kbd;
        self.aux_irq = aux;
        self
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_NOT_INHIBITED;
        if self.ctr & CTR_SYS != 0 {
            s |= STATUS_SYS;
        }
        if self.last_was_command {
            s |= STATUS_CMD;
        }
        if let Some(&(_, src)) = self.out.front() {
            s |= STATUS_OBF;
            if src == Source::Aux {
                s |= STATUS_AUX_DATA;
            }
        }
        s
    }

    /// Interrupts for the byte now at the front of the output buffer.
    fn signal_front(&self) {
        let line = match self.out.front() {
            Some((_, Source::Keyboard)) if self.ctr & CTR_KBD_INT != 0 => &self.kbd_irq,
            Some((_, Source::Aux)) if self.ctr & CTR_AUX_INT != 0 => &self.aux_irq,
            _ => return,
        };
        if let Some(irq) = line {
            irq.pulse();
        }
    }

    fn push(&mut self, byte: u8, src: Source) {
        if self.out.len() >= OUTPUT_LIMIT {
            log::debug!("i8042 output buffer full, {byte:#x} dropped");
            return;
        }
        self.out.push_back((byte, src));
        if self.out.len() == 1 {
            self.signal_front();
        }
    }

    /// The keyboard types Ctrl+Alt+Del (press and release), in the scan
    /// codes the guest reads: set 1 when the controller translates (what
    /// Linux leaves on), set 2 otherwise. Returns false when the guest has
    /// the keyboard disabled or the output buffer has no room for all of
    /// it, so nothing was typed.
    pub fn type_ctrl_alt_del(&mut self) -> bool {
        const SET1: [u8; 8] = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];
        const SET2: [u8; 11] = [
            0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14,
        ];
        let codes: &[u8] = if self.ctr & CTR_XLATE != 0 {
            &SET1
        } else {
            &SET2
        };
        if self.ctr & CTR_KBD_DISABLE != 0 || self.out.len() + codes.len() > OUTPUT_LIMIT {
            return false;
        }
        for &c in codes {
            self.push(c, Source::Keyboard);
        }
        true
    }

    fn read_data(&mut self) -> u8 {
        if let Some((byte, _)) = self.out.pop_front() {
            self.last_read = byte;
            self.signal_front();
        }
        self.last_read
    }

    fn reset(&self) {
        log::info!("i8042: guest pulsed the reset line");
        self.events.request(VmEvent::Reset);
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_command = true;
        self.pending = None;
        match cmd {
            0x20 => self.push(self.ctr, Source::Controller),
            // Internal RAM reads: nothing lives there but the command byte.
            0x21..=0x3f => self.push(0, Source::Controller),
            0x60 => self.pending = Some(PendingWrite::CommandByte),
            0x61..=0x7f => self.pending = Some(PendingWrite::InternalRam),
            0xa7 => self.ctr |= CTR_AUX_DISABLE,
            0xa8 => self.ctr &= !CTR_AUX_DISABLE,
            // Aux interface test, controller self test, keyboard interface test.
            0xa9 | 0xab => self.push(0x00, Source::Controller),
            0xaa => {
                self.ctr |= CTR_SYS;
                self.push(0x55, Source::Controller);
            }
            0xad => self.ctr |= CTR_KBD_DISABLE,
            0xae => self.ctr &= !CTR_KBD_DISABLE,
            // Input port: keyboard not locked.
            0xc0 => self.push(0x80, Source::Controller),
            0xd0 => self.push(self.output_port, Source::Controller),
            0xd1 => self.pending = Some(PendingWrite::OutputPort),
            0xd2 => self.pending = Some(PendingWrite::KeyboardOutput),
            0xd3 => self.pending = Some(PendingWrite::AuxOutput),
            0xd4 => self.pending = Some(PendingWrite::AuxDevice),
            // Pulse output lines: a low bit 0 pulses the reset line.
            0xf0..=0xff if cmd & 1 == 0 => self.reset(),
            0xf0..=0xff => {}
            _ => log::debug!("i8042: unknown command {cmd:#x}"),
        }
    }

    fn data(&mut self, byte: u8) {
        self.last_was_command = false;
        match self.pending.take() {
            Some(PendingWrite::CommandByte) => self.ctr = byte,
            Some(PendingWrite::InternalRam) => {}
            Some(PendingWrite::OutputPort) => {
                self.output_port = byte;
                if byte & OUTPUT_PORT_RESET == 0 {
                    self.reset();
                }
            }
            Some(PendingWrite::KeyboardOutput) => self.push(byte, Source::Keyboard),
            Some(PendingWrite::AuxOutput) => self.push(byte, Source::Aux),
            // No mouse: bytes for it go nowhere.
            Some(PendingWrite::AuxDevice) => {}
            None => self.keyboard(byte),
        }
    }

    /// A byte for the keyboard: answer as a PS/2 keyboard that has no keys
    /// pressed would.
    fn keyboard(&mut self, byte: u8) {
        if self.kbd_param_for.take().is_some() {
            self.push(KBD_ACK, Source::Keyboard);
            return;
        }
        match byte {
            // Set LEDs, scan code set, typematic rate: a parameter follows.
            0xed | 0xf0 | 0xf3 => {
                self.kbd_param_for = Some(byte);
                self.push(KBD_ACK, Source::Keyboard);
            }
            0xee => self.push(0xee, Source::Keyboard),
            0xf2 => {
                self.push(KBD_ACK, Source::Keyboard);
                self.push(0xab, Source::Keyboard);
                self.push(0x83, Source::Keyboard);
            }
            0xff => {
                self.push(KBD_ACK, Source::Keyboard);
                self.push(KBD_SELF_TEST_OK, Source::Keyboard);
            }
            _ => self.push(KBD_ACK, Source::Keyboard),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (port, byte) in (offset..).zip(data.iter_mut()) {
            *byte = match port {
                DATA => self.read_data(),
                COMMAND => self.status(),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (port, &byte) in (offset..).zip(data.iter()) {
            match port {
                DATA => self.data(byte),
                COMMAND => self.command(byte),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{RecordingIrq, RecordingSink};

    #[test]
    fn ctrl_alt_del_is_typed_in_the_scan_code_set_the_guest_reads() {
        let (mut d, _) = dev();
        assert!(d.type_ctrl_alt_del());
        let mut got = Vec::new();
        while status(&mut d) & STATUS_OBF != 0 {
            got.push(read_data(&mut d));
        }
        assert_eq!(got, [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
        // Translation off: set 2 with F0 break prefixes.
        d.write(COMMAND, &[0x60]);
        d.write(DATA, &[CTR_KBD_INT]);
        assert!(d.type_ctrl_alt_del());
        let first = read_data(&mut d);
        assert_eq!(first, 0x14);
        // Keyboard disabled: nothing is typed.
        let (mut d, _) = dev();
        d.write(COMMAND, &[0xad]);
        assert!(!d.type_ctrl_alt_del());
        assert_eq!(status(&mut d) & STATUS_OBF, 0);
    }

    fn dev() -> (I8042, Arc<RecordingSink>) {
        let sink = Arc::new(RecordingSink::default());
        (I8042::new(sink.clone()), sink)
    }

    fn status(d: &mut I8042) -> u8 {
        let mut b = [0];
        d.read(COMMAND, &mut b);
        b[0]
    }

    fn read_data(d: &mut I8042) -> u8 {
        let mut b = [0];
        d.read(DATA, &mut b);
        b[0]
    }

    /// What Linux's `i8042_command` does: command, parameters, then poll
    /// OBF for each result byte.
    fn command(d: &mut I8042, cmd: u8, params: &[u8], results: usize) -> Option<Vec<u8>> {
        d.write(COMMAND, &[cmd]);
        for &p in params {
            d.write(DATA, &[p]);
        }
        let mut out = Vec::new();
        for _ in 0..results {
            if status(d) & STATUS_OBF == 0 {
                return None;
            }
            out.push(read_data(d));
        }
        Some(out)
    }

    #[test]
    fn reset_command_raises_reset() {
        let (mut d, sink) = dev();
        d.write(COMMAND, &[0xfe]);
        assert_eq!(sink.take(), vec![VmEvent::Reset]);
        d.write(COMMAND, &[0xff]);
        assert!(sink.take().is_empty());
        command(&mut d, 0xd1, &[0xde], 0);
        assert_eq!(sink.take(), vec![VmEvent::Reset]);
        command(&mut d, 0xd1, &[0xdf], 0);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn self_tests_and_empty_buffer() {
        let (mut d, _) = dev();
        assert_eq!(status(&mut d) & STATUS_OBF, 0);
        assert_eq!(command(&mut d, 0xaa, &[], 1), Some(vec![0x55]));
        assert_eq!(command(&mut d, 0xab, &[], 1), Some(vec![0x00]));
        assert_eq!(command(&mut d, 0xa9, &[], 1), Some(vec![0x00]));
        assert_eq!(status(&mut d) & STATUS_OBF, 0);
        assert_ne!(status(&mut d), 0xff, "controller present");
    }

    #[test]
    fn command_byte_round_trip_and_port_toggles() {
        let (mut d, _) = dev();
        let ctr = command(&mut d, 0x20, &[], 1).unwrap()[0];
        assert_eq!(ctr, CTR_DEFAULT);
        command(&mut d, 0x60, &[0x65], 0).unwrap();
        assert_eq!(command(&mut d, 0x20, &[], 1), Some(vec![0x65]));
        command(&mut d, 0xa7, &[], 0).unwrap();
        assert_ne!(
            command(&mut d, 0x20, &[], 1).unwrap()[0] & CTR_AUX_DISABLE,
            0
        );
        command(&mut d, 0xa8, &[], 0).unwrap();
        assert_eq!(
            command(&mut d, 0x20, &[], 1).unwrap()[0] & CTR_AUX_DISABLE,
            0
        );
        command(&mut d, 0xad, &[], 0).unwrap();
        assert_ne!(
            command(&mut d, 0x20, &[], 1).unwrap()[0] & CTR_KBD_DISABLE,
            0
        );
        command(&mut d, 0xae, &[], 0).unwrap();
        assert_eq!(
            command(&mut d, 0x20, &[], 1).unwrap()[0] & CTR_KBD_DISABLE,
            0
        );
    }

    #[test]
    fn aux_loop_echoes_as_aux_data() {
        let (mut d, _) = dev();
        d.write(COMMAND, &[0xd3]);
        d.write(DATA, &[0x5a]);
        assert_eq!(
            status(&mut d) & (STATUS_OBF | STATUS_AUX_DATA),
            STATUS_OBF | STATUS_AUX_DATA
        );
        assert_eq!(read_data(&mut d), 0x5a);
    }

    #[test]
    fn keyboard_acks_and_interrupts() {
        let sink = Arc::new(RecordingSink::default());
        let irq = Arc::new(RecordingIrq::default());
        let mut d = I8042::new(sink).with_irqs(Some(irq.clone()), None);
        d.write(DATA, &[0xff]);
        assert_eq!(irq.rising_edges(), 1);
        assert_eq!(read_data(&mut d), KBD_ACK);
        assert_eq!(irq.rising_edges(), 2, "next byte interrupts again");
        assert_eq!(read_data(&mut d), KBD_SELF_TEST_OK);
        d.write(DATA, &[0xed]);
        d.write(DATA, &[0x07]);
        assert_eq!(read_data(&mut d), KBD_ACK);
        assert_eq!(read_data(&mut d), KBD_ACK);
        assert_eq!(status(&mut d) & STATUS_OBF, 0);
    }

    #[test]
    fn output_buffer_is_bounded() {
        let (mut d, _) = dev();
        for _ in 0..100 {
            d.write(COMMAND, &[0x20]);
        }
        let mut n = 0;
        while status(&mut d) & STATUS_OBF != 0 {
            read_data(&mut d);
            n += 1;
        }
        assert_eq!(n, OUTPUT_LIMIT);
    }
}
