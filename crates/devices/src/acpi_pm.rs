//! The ACPI fixed hardware the FADT points at, as four bus devices the VMM
//! maps separately:
//!
//! - [`AcpiPmEvent`], the PM1a event block (4 bytes: status word, then
//!   enable word; status bits are write-1-to-clear). It drives the SCI
//!   line, when given one, while an enabled status bit is set; the VMM
//!   presses the power button through it.
//! - [`AcpiPmControl`], the PM1a control block (2 bytes). SCI_EN always
//!   reads as set (the machine is always in ACPI mode, so the FADT's
//!   SMI_CMD is 0). SLP_EN with SLP_TYP = [`SLP_TYP_S5`] powers off.
//! - [`AcpiPmTimer`], the 24-bit PM timer at 3.579545 MHz (4 bytes).
//! - [`AcpiReset`], the reset register (1 byte): [`RESET_VALUE`] resets.

use crate::bus::BusDevice;
use crate::events::{VmEvent, VmEventSink};
use crate::irq::IrqLine;
use std::sync::Arc;
use std::time::Instant;

/// PM1 status/enable bits.
pub const PM1_TMR: u16 = 1 << 0;
pub const PM1_PWRBTN: u16 = 1 << 8;
pub const PM1_WAK_STS: u16 = 1 << 15;

/// PM1 control bits.
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
const PM1_CNT_SLP_TYP_MASK: u16 = 0x7;

/// The SLP_TYP value of S5 (soft off); the DSDT's `_S5` package must name
/// the same value.
pub const SLP_TYP_S5: u16 = 5;

/// What the guest writes to the reset register to reset (the FADT's
/// RESET_VALUE).
pub const RESET_VALUE: u8 = 6;

/// The PM timer's frequency in Hz.
pub const PM_TIMER_HZ: u128 = 3_579_545;
const PM_TIMER_MASK: u32 = 0x00ff_ffff;

/// Reads bytes of a little-endian register image; bytes past it read 0xff.
fn read_bytes(image: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in (offset..).zip(data.iter_mut()) {
        *b = usize::try_from(i)
            .ok()
            .and_then(|i| image.get(i))
            .copied()
            .unwrap_or(0xff);
    }
}

/// PM1a status and enable registers.
#[derive(Default)]
pub struct AcpiPmEvent {
    status: u16,
    enable: u16,
    sci: Option<Arc<dyn IrqLine>>,
    sci_level: bool,
}

impl AcpiPmEvent {
    /// An event block with nothing pending and no SCI wired.
    pub fn new() -> Self {
        AcpiPmEvent::default()
    }

    /// Drives `sci` (level triggered) from the enabled status bits.
    pub fn with_sci(mut self, sci: Arc<dyn IrqLine>) -> Self {
        self.sci = Some(sci);
        self
    }

    /// The VMM presses the power button: sets PWRBTN_STS, which raises the
    /// SCI if the guest enabled it (an ACPI guest then shuts down).
    pub fn power_button(&mut self) {
        self.status |= PM1_PWRBTN;
        self.update_sci();
    }

    fn update_sci(&mut self) {
        let level = self.status & self.enable != 0;
        if level != self.sci_level {
            self.sci_level = level;
            if let Some(sci) = &self.sci {
                sci.set_level(level);
            }
        }
    }

    fn image(&self) -> [u8; 4] {
        let [s0, s1] = self.status.to_le_bytes();
        let [e0, e1] = self.enable.to_le_bytes();
        [s0, s1, e0, e1]
    }
}

impl BusDevice for AcpiPmEvent {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(&self.image(), offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut clear = [0u8; 2];
        let mut enable = self.enable.to_le_bytes();
        for (i, &b) in (offset..).zip(data) {
            match i {
                0 | 1 => clear[i as usize] = b,
                2 | 3 => enable[i as usize - 2] = b,
                _ => {}
            }
        }
        self.status &= !u16::from_le_bytes(clear);
        self.enable = u16::from_le_bytes(enable);
        self.update_sci();
    }
}

/// PM1a control register.
pub struct AcpiPmControl {
    events: Arc<dyn VmEventSink>,
    value: u16,
}

impl AcpiPmControl {
    pub fn new(events: Arc<dyn VmEventSink>) -> Self {
        AcpiPmControl { events, value: 0 }
    }
}

impl BusDevice for AcpiPmControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = (self.value | PM1_CNT_SCI_EN) & !PM1_CNT_SLP_EN;
        read_bytes(&value.to_le_bytes(), offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = self.value.to_le_bytes();
        for (i, &b) in (offset..).zip(data) {
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| bytes.get_mut(i)) {
                *slot = b;
            }
        }
        let value = u16::from_le_bytes(bytes);
        // SLP_EN is write-only: it acts and is never stored.
        self.value = value & !PM1_CNT_SLP_EN;
        if value & PM1_CNT_SLP_EN != 0 {
            let typ = (value >> PM1_CNT_SLP_TYP_SHIFT) & PM1_CNT_SLP_TYP_MASK;
            if typ == SLP_TYP_S5 {
                log::info!("acpi: guest entered S5");
                self.events.request(VmEvent::PowerOff);
            } else {
                log::debug!("acpi: sleep type {typ} not supported, ignored");
            }
        }
    }
}

/// The ACPI PM timer: a free-running 24-bit counter at 3.579545 MHz.
pub struct AcpiPmTimer {
    start: Instant,
}

impl AcpiPmTimer {
    pub fn new() -> Self {
        AcpiPmTimer {
            start: Instant::now(),
        }
    }

    /// The counter now.
    pub fn count(&self) -> u32 {
        let ticks = self.start.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000;
        // Masked to 24 bits, so it fits.
        (ticks & u128::from(PM_TIMER_MASK)) as u32
    }
}

impl Default for AcpiPmTimer {
    fn default() -> Self {
        AcpiPmTimer::new()
    }
}

impl BusDevice for AcpiPmTimer {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(&self.count().to_le_bytes(), offset, data);
    }

    /// The timer is read-only.
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// The FADT reset register.
pub struct AcpiReset {
    events: Arc<dyn VmEventSink>,
}

impl AcpiReset {
    pub fn new(events: Arc<dyn VmEventSink>) -> Self {
        AcpiReset { events }
    }
}

impl BusDevice for AcpiReset {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&RESET_VALUE) {
            log::info!("acpi: guest wrote the reset register");
            self.events.request(VmEvent::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{RecordingIrq, RecordingSink};

    #[test]
    fn s5_powers_off() {
        let sink = Arc::new(RecordingSink::default());
        let mut cnt = AcpiPmControl::new(sink.clone());
        let mut d = [0u8; 2];
        cnt.read(0, &mut d);
        assert_eq!(u16::from_le_bytes(d) & PM1_CNT_SCI_EN, PM1_CNT_SCI_EN);
        // S5 type without SLP_EN does nothing yet.
        cnt.write(0, &(SLP_TYP_S5 << 10).to_le_bytes());
        assert!(sink.take().is_empty());
        cnt.write(0, &(SLP_TYP_S5 << 10 | PM1_CNT_SLP_EN).to_le_bytes());
        assert_eq!(sink.take(), vec![VmEvent::PowerOff]);
        cnt.read(0, &mut d);
        assert_eq!(u16::from_le_bytes(d) & PM1_CNT_SLP_EN, 0);
        // Another sleep type is not a power-off; nor is a byte write of
        // the high half with S5 when it lacks SLP_EN.
        cnt.write(0, &(3 << 10 | PM1_CNT_SLP_EN).to_le_bytes());
        cnt.write(1, &[(SLP_TYP_S5 << 2) as u8]);
        assert!(sink.take().is_empty());
        // Linux writes the whole word; a byte write of the high half works too.
        cnt.write(1, &[((SLP_TYP_S5 << 10 | PM1_CNT_SLP_EN) >> 8) as u8]);
        assert_eq!(sink.take(), vec![VmEvent::PowerOff]);
    }

    #[test]
    fn timer_is_monotonic_and_ticks() {
        let mut tmr = AcpiPmTimer::new();
        let read = |t: &mut AcpiPmTimer| {
            let mut d = [0u8; 4];
            t.read(0, &mut d);
            u32::from_le_bytes(d)
        };
        let a = read(&mut tmr);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = read(&mut tmr);
        // 2 ms is about 7159 ticks; far from wrapping 24 bits.
        assert!(b > a, "{a} then {b}");
        assert!(b - a >= 7000, "{a} then {b}");
        assert!(b <= PM_TIMER_MASK);
        let mut hi = [0u8; 1];
        tmr.read(3, &mut hi);
        assert_eq!(hi[0], 0, "24-bit counter");
    }

    #[test]
    fn reset_register() {
        let sink = Arc::new(RecordingSink::default());
        let mut reset = AcpiReset::new(sink.clone());
        reset.write(0, &[1]);
        assert!(sink.take().is_empty());
        reset.write(0, &[RESET_VALUE]);
        assert_eq!(sink.take(), vec![VmEvent::Reset]);
    }

    #[test]
    fn status_write_one_to_clear_and_sci() {
        let irq = Arc::new(RecordingIrq::default());
        let mut evt = AcpiPmEvent::new().with_sci(irq.clone());
        evt.power_button();
        assert!(!irq.level(), "not enabled yet");
        evt.write(2, &PM1_PWRBTN.to_le_bytes());
        assert!(irq.level());
        let mut d = [0u8; 4];
        evt.read(0, &mut d);
        assert_eq!(u16::from_le_bytes([d[0], d[1]]), PM1_PWRBTN);
        assert_eq!(u16::from_le_bytes([d[2], d[3]]), PM1_PWRBTN);
        // Writing 0 clears nothing; writing the bit clears it.
        evt.write(0, &[0, 0]);
        assert!(irq.level());
        evt.write(0, &PM1_PWRBTN.to_le_bytes());
        assert!(!irq.level());
        evt.read(0, &mut d);
        assert_eq!(u16::from_le_bytes([d[0], d[1]]), 0);
    }
}
