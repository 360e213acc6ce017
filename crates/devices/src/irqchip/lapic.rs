//! The local APIC of one vCPU: ID, TPR/PPR, IRR/ISR/TMR, EOI, spurious
//! vector, LVT entries, the timer (one-shot and periodic on a 1 GHz
//! clock, and TSC-deadline: the engine that owns the TSC turns a deadline
//! into an instant, [`LocalApic::set_tsc_deadline`]) and the ICR for
//! IPIs.

use std::time::{Duration, Instant};

/// Timer input clock before the divider.
pub const TIMER_HZ: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct LocalApic {
    pub id: u8,
    pub tpr: u8,
    irr: [u64; 4],
    isr: [u64; 4],
    tmr: [u64; 4],
    pub svr: u32,
    pub ldr: u32,
    pub dfr: u32,
    esr: u32,
    pub icr: u64,
    pub lvt: [u32; 6],
    timer_init: u32,
    timer_div: u32,
    timer_start: Instant,
    timer_fired: u64,
    /// IA32_TSC_DEADLINE (0: disarmed) and when it falls due.
    tsc_deadline: u64,
    tsc_due: Option<Instant>,
}

/// LVT indices.
pub const LVT_TIMER: usize = 0;
pub const LVT_LINT0: usize = 3;

const LVT_MASKED: u32 = 1 << 16;

impl LocalApic {
    pub fn new(id: u8, now: Instant) -> Self {
        let mut a = LocalApic {
            id,
            tpr: 0,
            irr: [0; 4],
            isr: [0; 4],
            tmr: [0; 4],
            svr: 0xff,
            ldr: 0,
            dfr: 0xffff_ffff,
            esr: 0,
            icr: 0,
            lvt: [LVT_MASKED; 6],
            timer_init: 0,
            timer_div: 1,
            timer_start: now,
            timer_fired: 0,
            tsc_deadline: 0,
            tsc_due: None,
        };
        if id == 0 {
            // The BSP's LINT0 passes the PIC through (ExtINT), as KVM does.
            a.lvt[LVT_LINT0] = 0x700;
        }
        a
    }

    pub fn enabled(&self) -> bool {
        self.svr & 0x100 != 0
    }

    fn highest(bits: &[u64; 4]) -> Option<u8> {
        for i in (0..4).rev() {
            if bits[i] != 0 {
                return Some((i * 64 + 63 - bits[i].leading_zeros() as usize) as u8);
            }
        }
        None
    }

    pub fn ppr(&self) -> u8 {
        let isrv = Self::highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// Sets `vector` pending.
    pub fn accept(&mut self, vector: u8, level: bool) {
        let (i, b) = (usize::from(vector / 64), vector % 64);
        self.irr[i] |= 1 << b;
        if level {
            self.tmr[i] |= 1 << b;
        } else {
            self.tmr[i] &= !(1 << b);
        }
    }

    /// The vector that would be delivered now.
    pub fn pending(&self) -> Option<u8> {
        let v = Self::highest(&self.irr)?;
        if v >> 4 > self.ppr() >> 4 {
            Some(v)
        } else {
            None
        }
    }

    /// INTA: moves the vector from IRR to ISR.
    pub fn ack(&mut self) -> Option<u8> {
        let v = self.pending()?;
        let (i, b) = (usize::from(v / 64), v % 64);
        self.irr[i] &= !(1 << b);
        self.isr[i] |= 1 << b;
        Some(v)
    }

    /// EOI: returns the retired vector and whether it was level-triggered.
    fn eoi(&mut self) -> Option<(u8, bool)> {
        let v = Self::highest(&self.isr)?;
        let (i, b) = (usize::from(v / 64), v % 64);
        self.isr[i] &= !(1 << b);
        Some((v, self.tmr[i] & (1 << b) != 0))
    }

    fn timer_period(&self) -> Option<Duration> {
        if self.timer_init == 0 {
            return None;
        }
        let ticks = u64::from(self.timer_init) * u64::from(self.timer_div);
        Some(Duration::from_nanos(ticks * 1_000_000_000 / TIMER_HZ))
    }

    fn periodic(&self) -> bool {
        (self.lvt[LVT_TIMER] >> 17) & 3 == 1
    }

    /// The timer is in TSC-deadline mode (LVT timer mode 2).
    fn tsc_mode(&self) -> bool {
        (self.lvt[LVT_TIMER] >> 17) & 3 == 2
    }

    /// IA32_TSC_DEADLINE as the guest reads it: 0 outside TSC-deadline
    /// mode and once the deadline has fired.
    pub fn tsc_deadline(&self) -> u64 {
        if self.tsc_mode() {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// A guest write of IA32_TSC_DEADLINE, `due` being when the TSC
    /// reaches `v` (None for 0, which disarms). Ignored outside
    /// TSC-deadline mode, as the SDM says. True when the timer changed.
    pub fn set_tsc_deadline(&mut self, v: u64, due: Option<Instant>) -> bool {
        if !self.tsc_mode() {
            return false;
        }
        self.tsc_deadline = v;
        self.tsc_due = if v == 0 { None } else { due };
        true
    }

    pub fn timer_deadline(&self) -> Option<Instant> {
        if self.tsc_mode() {
            return self.tsc_due;
        }
        let p = self.timer_period()?;
        if !self.periodic() && self.timer_fired > 0 {
            return None;
        }
        Some(self.timer_start + p * (self.timer_fired as u32 + 1))
    }

    /// Fires the timer if due; true when an interrupt was made pending.
    pub fn poll_timer(&mut self, now: Instant) -> bool {
        let Some(d) = self.timer_deadline() else {
            return false;
        };
        if d > now {
            return false;
        }
        if self.tsc_mode() {
            // A TSC deadline fires once and reads back as 0.
            self.tsc_deadline = 0;
            self.tsc_due = None;
        }
        self.timer_fired += 1;
        if self.periodic() {
            if let Some(p) = self.timer_period() {
                let behind = now.saturating_duration_since(self.timer_start).as_nanos()
                    / p.as_nanos().max(1);
                self.timer_fired = self.timer_fired.max(behind as u64);
            }
        }
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 && self.enabled() {
            self.accept(lvt as u8, false);
            return true;
        }
        false
    }

    fn timer_current(&self, now: Instant) -> u32 {
        if self.tsc_mode() {
            return 0;
        }
        let Some(p) = self.timer_period() else {
            return 0;
        };
        let el = now.saturating_duration_since(self.timer_start);
        if !self.periodic() && el >= p {
            return 0;
        }
        let into = el.as_nanos() % p.as_nanos().max(1);
        let ticks =
            (into * u128::from(TIMER_HZ) / 1_000_000_000) as u64 / u64::from(self.timer_div);
        self.timer_init.saturating_sub(ticks as u32)
    }

    pub fn read(&self, off: u64, now: Instant) -> u32 {
        match off {
            0x20 => u32::from(self.id) << 24,
            0x30 => 0x0005_0014,
            0x80 => u32::from(self.tpr),
            0xa0 => u32::from(self.ppr()),
            0xd0 => self.ldr,
            0xe0 => self.dfr,
            0xf0 => self.svr,
            0x100..=0x170 => Self::word(&self.isr, off - 0x100),
            0x180..=0x1f0 => Self::word(&self.tmr, off - 0x180),
            0x200..=0x270 => Self::word(&self.irr, off - 0x200),
            0x280 => self.esr,
            0x300 => self.icr as u32,
            0x310 => (self.icr >> 32) as u32,
            0x320..=0x370 => self.lvt[((off - 0x320) / 0x10) as usize],
            0x380 => self.timer_init,
            0x390 => self.timer_current(now),
            0x3e0 => match self.timer_div {
                1 => 0xb,
                n => {
                    let l = n.trailing_zeros() - 1;
                    (l & 3) | ((l & 4) << 1)
                }
            },
            _ => 0,
        }
    }

    fn word(bits: &[u64; 4], off: u64) -> u32 {
        let i = (off / 0x10) as usize;
        (bits[i / 2] >> (32 * (i % 2))) as u32
    }

    /// A register write; returns what the chip must do next.
    pub fn write(&mut self, off: u64, v: u32, now: Instant) -> Effect {
        match off {
            0x20 => self.id = (v >> 24) as u8,
            0x80 => self.tpr = v as u8,
            0xb0 => {
                if let Some((vec, level)) = self.eoi() {
                    if level {
                        return Effect::Eoi(vec);
                    }
                }
            }
            0xd0 => self.ldr = v & 0xff00_0000,
            0xe0 => self.dfr = v | 0x0fff_ffff,
            0xf0 => {
                self.svr = v & 0x13ff;
                if !self.enabled() {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            0x280 => self.esr = 0,
            0x300 => {
                self.icr = (self.icr & !0xffff_ffff) | u64::from(v & !(1 << 12));
                return Effect::Ipi(self.icr);
            }
            0x310 => self.icr = (self.icr & 0xffff_ffff) | (u64::from(v) << 32),
            0x320..=0x370 => {
                let i = ((off - 0x320) / 0x10) as usize;
                let v = if self.enabled() { v } else { v | LVT_MASKED };
                if i == LVT_TIMER {
                    // Mode 3 is reserved (kept as periodic); a change
                    // of mode disarms the timer.
                    let v = if (v >> 17) & 3 == 3 {
                        v & !(1 << 18)
                    } else {
                        v
                    };
                    let changed = (v ^ self.lvt[i]) & (3 << 17) != 0;
                    self.lvt[i] = v;
                    if changed {
                        self.timer_init = 0;
                        self.tsc_deadline = 0;
                        self.tsc_due = None;
                        return Effect::TimerChanged;
                    }
                } else {
                    self.lvt[i] = v;
                }
            }
            // The initial count means nothing in TSC-deadline mode.
            0x380 if self.tsc_mode() => {}
            0x380 => {
                self.timer_init = v;
                self.timer_start = now;
                self.timer_fired = 0;
                return Effect::TimerChanged;
            }
            0x3e0 => {
                let l = (v & 3) | ((v >> 1) & 4);
                self.timer_div = if l == 7 { 1 } else { 2 << l };
            }
            _ => {}
        }
        Effect::None
    }
}

/// What a register write asks of the rest of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// A level-triggered vector was retired: tell the IOAPIC.
    Eoi(u8),
    /// Send the IPI described by the ICR value.
    Ipi(u64),
    TimerChanged,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_and_eoi() {
        let t = Instant::now();
        let mut a = LocalApic::new(0, t);
        a.write(0xf0, 0x1ff, t);
        a.accept(0x40, false);
        a.accept(0x30, false);
        assert_eq!(a.ack(), Some(0x40));
        // 0x30 is below the in-service class.
        assert_eq!(a.pending(), None);
        a.write(0xb0, 0, t);
        assert_eq!(a.ack(), Some(0x30));
        a.write(0x80, 0x50, t);
        a.write(0xb0, 0, t);
        a.accept(0x45, false);
        assert_eq!(a.pending(), None);
    }

    #[test]
    fn one_shot_timer_fires_once() {
        let t = Instant::now();
        let mut a = LocalApic::new(0, t);
        a.write(0xf0, 0x1ff, t);
        a.write(0x3e0, 0xb, t);
        a.write(0x320, 0xef, t);
        a.write(0x380, 1000, t);
        assert!(!a.poll_timer(t));
        assert!(a.poll_timer(t + Duration::from_micros(2)));
        assert!(!a.poll_timer(t + Duration::from_micros(4)));
        assert_eq!(a.pending(), Some(0xef));
    }

    #[test]
    fn tsc_deadline_fires_once_and_only_in_its_mode() {
        let t = Instant::now();
        let mut a = LocalApic::new(0, t);
        a.write(0xf0, 0x1ff, t);
        // One-shot mode: the MSR is ignored and reads 0.
        a.write(0x320, 0xec, t);
        assert!(!a.set_tsc_deadline(5, Some(t)));
        assert_eq!(a.tsc_deadline(), 0);
        // TSC-deadline mode.
        assert_eq!(a.write(0x320, 0xec | (2 << 17), t), Effect::TimerChanged);
        let due = t + Duration::from_micros(10);
        assert!(a.set_tsc_deadline(1234, Some(due)));
        assert_eq!(a.tsc_deadline(), 1234);
        assert_eq!(a.timer_deadline(), Some(due));
        // The initial count does nothing here.
        a.write(0x380, 1, t);
        assert!(!a.poll_timer(t + Duration::from_micros(5)));
        assert!(a.poll_timer(due));
        assert_eq!(a.pending(), Some(0xec));
        assert_eq!(a.tsc_deadline(), 0);
        assert_eq!(a.timer_deadline(), None);
        assert!(!a.poll_timer(due + Duration::from_secs(1)));
        // Writing 0 disarms; a change of mode disarms too.
        a.set_tsc_deadline(99, Some(due));
        a.set_tsc_deadline(0, Some(due));
        assert_eq!(a.timer_deadline(), None);
        a.set_tsc_deadline(99, Some(due));
        a.write(0x320, 0xec, t);
        assert_eq!(a.timer_deadline(), None);
        assert_eq!(a.tsc_deadline(), 0);
    }
}
