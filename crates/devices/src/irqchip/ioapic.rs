//! The I/O APIC: 24 redirection entries reached through IOREGSEL/IOWIN,
//! edge and level inputs, remote IRR and EOI for level-triggered lines.

pub const PINS: usize = 24;

/// A message the IOAPIC sends to the local APICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub vector: u8,
    pub delivery: u8,
    pub logical: bool,
    pub dest: u8,
    pub level: bool,
}

#[derive(Debug, Clone)]
pub struct IoApic {
    id: u8,
    sel: u8,
    redir: [u64; PINS],
    lines: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        IoApic {
            id: 0,
            sel: 0,
            redir: [1 << 16; PINS],
            lines: 0,
        }
    }
}

const MASK: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;

impl IoApic {
    fn message(&self, pin: usize) -> Message {
        let e = self.redir[pin];
        Message {
            vector: e as u8,
            delivery: ((e >> 8) & 7) as u8,
            logical: e & (1 << 11) != 0,
            dest: (e >> 56) as u8,
            level: e & LEVEL != 0,
        }
    }

    /// Drives input `pin`; returns a message to deliver, if any.
    pub fn set_line(&mut self, pin: usize, level: bool) -> Option<Message> {
        if pin >= PINS {
            return None;
        }
        let bit = 1u32 << pin;
        let was = self.lines & bit != 0;
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        let e = self.redir[pin];
        if !level || e & MASK != 0 {
            return None;
        }
        if e & LEVEL != 0 {
            if e & REMOTE_IRR != 0 {
                return None;
            }
            self.redir[pin] |= REMOTE_IRR;
            Some(self.message(pin))
        } else if !was {
            Some(self.message(pin))
        } else {
            None
        }
    }

    /// A local APIC EOI for a level-triggered `vector`: clears remote IRR
    /// and redelivers lines still asserted.
    pub fn eoi(&mut self, vector: u8) -> Vec<Message> {
        let mut out = Vec::new();
        for pin in 0..PINS {
            let e = self.redir[pin];
            if e as u8 == vector && e & REMOTE_IRR != 0 {
                self.redir[pin] &= !REMOTE_IRR;
                if self.lines & (1 << pin) != 0 && e & MASK == 0 && e & LEVEL != 0 {
                    self.redir[pin] |= REMOTE_IRR;
                    out.push(self.message(pin));
                }
            }
        }
        out
    }

    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            0x00 => u32::from(self.sel),
            0x10 => match self.sel {
                0 => u32::from(self.id) << 24,
                1 => 0x0011 | ((PINS as u32 - 1) << 16),
                2 => u32::from(self.id) << 24,
                r @ 0x10..=0x3f => {
                    let pin = usize::from((r - 0x10) / 2);
                    let e = self.redir[pin];
                    if r & 1 == 0 {
                        e as u32
                    } else {
                        (e >> 32) as u32
                    }
                }
                _ => 0,
            },
            _ => 0,
        }
    }

    /// Returns a message when unmasking a level line that is asserted.
    pub fn write(&mut self, offset: u64, v: u32) -> Option<Message> {
        match offset {
            0x00 => self.sel = v as u8,
            0x10 => match self.sel {
                0 => self.id = ((v >> 24) & 0xf) as u8,
                r @ 0x10..=0x3f => {
                    let pin = usize::from((r - 0x10) / 2);
                    let e = &mut self.redir[pin];
                    if r & 1 == 0 {
                        // Remote IRR and delivery status are read-only.
                        let ro = *e & (REMOTE_IRR | (1 << 12));
                        *e = (*e & !0xffff_ffff) | (u64::from(v) & !(REMOTE_IRR | (1 << 12))) | ro;
                    } else {
                        *e = (*e & 0xffff_ffff) | (u64::from(v) << 32);
                    }
                    let e = *e;
                    if e & MASK == 0
                        && e & LEVEL != 0
                        && e & REMOTE_IRR == 0
                        && self.lines & (1 << pin) != 0
                    {
                        self.redir[pin] |= REMOTE_IRR;
                        return Some(self.message(pin));
                    }
                }
                _ => {}
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_line_waits_for_eoi() {
        let mut io = IoApic::default();
        io.write(0, 0x10 + 2 * 5);
        io.write(0x10, 0x8030); // vector 0x30, level, unmasked
        let m = io.set_line(5, true).unwrap();
        assert_eq!(m.vector, 0x30);
        assert!(io.set_line(5, true).is_none());
        assert_eq!(io.eoi(0x30).len(), 1);
        io.set_line(5, false);
        assert!(io.eoi(0x30).is_empty());
    }

    #[test]
    fn masked_pin_is_silent_and_version_reads() {
        let mut io = IoApic::default();
        assert!(io.set_line(1, true).is_none());
        io.write(0, 1);
        assert_eq!(io.read(0x10) >> 16, 23);
    }
}
