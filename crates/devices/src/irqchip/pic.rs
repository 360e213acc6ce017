//! The 8259A programmable interrupt controller pair (master at 0x20,
//! slave at 0xa0 cascaded on IRQ 2) with the ELCR edge/level registers.

/// One 8259A.
#[derive(Debug, Clone, Default)]
pub struct Chip {
    pub irr: u8,
    pub isr: u8,
    pub imr: u8,
    /// Input levels as last driven.
    pub lines: u8,
    pub elcr: u8,
    pub vector_base: u8,
    init_step: u8,
    icw4: bool,
    pub auto_eoi: bool,
    read_isr: bool,
    special_mask: bool,
}

impl Chip {
    fn set_line(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if self.elcr & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.lines & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The highest-priority requested, unmasked line not blocked by an
    /// in-service one of higher or equal priority.
    fn best(&self) -> Option<u8> {
        let pending = self.irr & !self.imr;
        if pending == 0 {
            return None;
        }
        for i in 0..8 {
            if self.isr & (1 << i) != 0 && !self.special_mask {
                return None;
            }
            if pending & (1 << i) != 0 {
                return Some(i);
            }
        }
        None
    }

    fn ack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if !self.auto_eoi {
            self.isr |= bit;
        }
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    fn write(&mut self, a0: bool, v: u8) {
        if !a0 {
            if v & 0x10 != 0 {
                // ICW1.
                self.init_step = 1;
                self.icw4 = v & 1 != 0;
                self.imr = 0;
                self.isr = 0;
                self.irr = 0;
                self.auto_eoi = false;
                self.read_isr = false;
                self.special_mask = false;
            } else if v & 0x08 != 0 {
                // OCW3.
                if v & 2 != 0 {
                    self.read_isr = v & 1 != 0;
                }
                if v & 0x40 != 0 {
                    self.special_mask = v & 0x20 != 0;
                }
            } else {
                // OCW2: EOI commands.
                match v >> 5 {
                    1 | 5 if self.isr != 0 => {
                        let i = self.isr.trailing_zeros();
                        self.isr &= !(1 << i);
                    }
                    3 | 7 => self.isr &= !(1 << (v & 7)),
                    _ => {}
                }
            }
            return;
        }
        match self.init_step {
            1 => {
                self.vector_base = v & 0xf8;
                self.init_step = 2;
            }
            2 => {
                self.init_step = if self.icw4 { 3 } else { 0 };
            }
            3 => {
                self.auto_eoi = v & 2 != 0;
                self.init_step = 0;
            }
            _ => self.imr = v,
        }
    }

    fn read(&self, a0: bool) -> u8 {
        if a0 {
            self.imr
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// The master/slave pair.
#[derive(Debug, Clone)]
pub struct Pic {
    pub chips: [Chip; 2],
}

impl Default for Pic {
    fn default() -> Self {
        let mut p = Pic {
            chips: [Chip::default(), Chip::default()],
        };
        p.chips[0].vector_base = 0x08;
        p.chips[1].vector_base = 0x70;
        p
    }
}

impl Pic {
    pub fn set_irq(&mut self, irq: u32, level: bool) {
        if irq < 8 {
            self.chips[0].set_line(irq as u8, level);
        } else if irq < 16 {
            self.chips[1].set_line((irq - 8) as u8, level);
        }
        self.update_cascade();
    }

    fn update_cascade(&mut self) {
        let s = self.chips[1].best().is_some();
        self.chips[0].set_line(2, s);
    }

    /// True when the master's INTR output is asserted.
    pub fn intr(&self) -> bool {
        self.chips[0].best().is_some()
    }

    /// The INTA cycle: the vector of the interrupt being acknowledged.
    pub fn ack(&mut self) -> Option<u8> {
        let m = self.chips[0].best()?;
        self.chips[0].ack(m);
        let v = if m == 2 {
            match self.chips[1].best() {
                Some(s) => {
                    self.chips[1].ack(s);
                    self.chips[1].vector_base + s
                }
                None => self.chips[1].vector_base + 7, // spurious
            }
        } else {
            self.chips[0].vector_base + m
        };
        self.update_cascade();
        Some(v)
    }

    /// Port access; false when the port is not the PIC's.
    pub fn pio_write(&mut self, port: u16, v: u8) -> bool {
        match port {
            0x20 | 0x21 => self.chips[0].write(port & 1 != 0, v),
            0xa0 | 0xa1 => self.chips[1].write(port & 1 != 0, v),
            0x4d0 => self.chips[0].elcr = v & 0xf8,
            0x4d1 => self.chips[1].elcr = v & 0xde,
            _ => return false,
        }
        self.update_cascade();
        true
    }

    pub fn pio_read(&self, port: u16) -> Option<u8> {
        Some(match port {
            0x20 | 0x21 => self.chips[0].read(port & 1 != 0),
            0xa0 | 0xa1 => self.chips[1].read(port & 1 != 0),
            0x4d0 => self.chips[0].elcr,
            0x4d1 => self.chips[1].elcr,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(p: &mut Pic) {
        for (port, base) in [(0x20u16, 0x20u8), (0xa0, 0x28)] {
            p.pio_write(port, 0x11);
            p.pio_write(port + 1, base);
            p.pio_write(port + 1, if port == 0x20 { 4 } else { 2 });
            p.pio_write(port + 1, 1);
            p.pio_write(port + 1, 0);
        }
    }

    #[test]
    fn edge_interrupt_is_acked_and_eoied() {
        let mut p = Pic::default();
        init(&mut p);
        p.set_irq(0, true);
        assert!(p.intr());
        assert_eq!(p.ack(), Some(0x20));
        assert!(!p.intr());
        p.set_irq(0, false);
        p.set_irq(0, true);
        // In service blocks it until EOI.
        assert!(!p.intr());
        p.pio_write(0x20, 0x20);
        assert!(p.intr());
    }

    #[test]
    fn slave_cascades_through_irq2() {
        let mut p = Pic::default();
        init(&mut p);
        p.set_irq(12, true);
        assert_eq!(p.ack(), Some(0x2c));
    }

    #[test]
    fn masked_lines_do_not_interrupt() {
        let mut p = Pic::default();
        init(&mut p);
        p.pio_write(0x21, 0x01);
        p.set_irq(0, true);
        assert!(!p.intr());
    }
}
