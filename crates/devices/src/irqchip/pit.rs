//! The 8254 programmable interval timer (channels 0-2 at 0x40-0x43, the
//! channel 2 gate and output on port 0x61), counting on a monotonic host
//! clock at 1.193182 MHz. Channel 0's output drives IRQ 0.

use std::time::{Duration, Instant};

pub const FREQ_HZ: u64 = 1_193_182;

#[derive(Debug, Clone)]
struct Channel {
    mode: u8,
    access: u8,
    reload: u32,
    start: Instant,
    armed: bool,
    latched: Option<u16>,
    read_hi: bool,
    write_hi: bool,
    write_lo: u8,
    /// Ticks already reported as interrupts (periodic modes).
    fired: u64,
    gate: bool,
}

impl Channel {
    fn new(now: Instant) -> Self {
        Channel {
            mode: 0,
            access: 3,
            reload: 0x10000,
            start: now,
            armed: false,
            latched: None,
            read_hi: false,
            write_hi: false,
            write_lo: 0,
            fired: 0,
            gate: true,
        }
    }

    fn ticks(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.start).as_nanos();
        (ns * u128::from(FREQ_HZ) / 1_000_000_000) as u64
    }

    fn count(&self, now: Instant) -> u16 {
        if !self.armed {
            return 0;
        }
        let t = self.ticks(now);
        let r = u64::from(self.reload);
        match self.mode {
            2 | 3 => (r - t % r) as u16,
            _ => r.saturating_sub(t) as u16,
        }
    }

    fn output(&self, now: Instant) -> bool {
        if !self.armed {
            return false;
        }
        let t = self.ticks(now);
        let r = u64::from(self.reload);
        match self.mode {
            3 => (t % r) < r.div_ceil(2),
            2 => t % r != r - 1,
            _ => t >= r,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.armed {
            return None;
        }
        let r = u64::from(self.reload);
        let tick = match self.mode {
            2 | 3 => (self.fired + 1) * r,
            _ if self.fired == 0 => r,
            _ => return None,
        };
        Some(
            self.start
                + Duration::from_nanos(
                    (u128::from(tick) * 1_000_000_000 / u128::from(FREQ_HZ)) as u64,
                ),
        )
    }
}

/// The three channels.
#[derive(Debug, Clone)]
pub struct Pit {
    ch: [Channel; 3],
    port61: u8,
}

impl Pit {
    pub fn new(now: Instant) -> Self {
        Pit {
            ch: [Channel::new(now), Channel::new(now), Channel::new(now)],
            port61: 0,
        }
    }

    /// Number of channel-0 interrupts due by `now` (each is an edge on IRQ 0).
    pub fn poll(&mut self, now: Instant) -> u64 {
        let c = &mut self.ch[0];
        let mut n = 0;
        while let Some(d) = c.deadline() {
            if d > now {
                break;
            }
            c.fired += 1;
            n += 1;
            if n > 4 {
                // Lost ticks are dropped, not replayed in a burst.
                let r = u64::from(c.reload);
                if matches!(c.mode, 2 | 3) {
                    c.fired = c.ticks(now) / r;
                }
                break;
            }
        }
        n
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.ch[0].deadline()
    }

    pub fn pio_write(&mut self, port: u16, v: u8, now: Instant) -> bool {
        match port {
            0x40..=0x42 => {
                let c = &mut self.ch[(port - 0x40) as usize];
                let done = match c.access {
                    1 => {
                        c.reload = u32::from(v);
                        true
                    }
                    2 => {
                        c.reload = u32::from(v) << 8;
                        true
                    }
                    _ => {
                        if c.write_hi {
                            c.reload = u32::from(c.write_lo) | (u32::from(v) << 8);
                            c.write_hi = false;
                            true
                        } else {
                            c.write_lo = v;
                            c.write_hi = true;
                            false
                        }
                    }
                };
                if done {
                    if c.reload == 0 {
                        c.reload = 0x10000;
                    }
                    c.start = now;
                    c.fired = 0;
                    c.armed = true;
                }
            }
            0x43 => {
                let sel = (v >> 6) as usize;
                if sel == 3 {
                    // Read-back: latch counts of the selected channels.
                    for i in 0..3 {
                        if v & (2 << i) != 0 && v & 0x20 == 0 {
                            let cnt = self.ch[i].count(now);
                            self.ch[i].latched = Some(cnt);
                        }
                    }
                    return true;
                }
                let c = &mut self.ch[sel];
                let access = (v >> 4) & 3;
                if access == 0 {
                    c.latched = Some(c.count(now));
                } else {
                    c.access = access;
                    c.mode = (v >> 1) & 7;
                    if c.mode > 5 {
                        c.mode &= 3;
                    }
                    c.armed = false;
                    c.write_hi = false;
                    c.read_hi = false;
                }
            }
            0x61 => {
                self.port61 = v & 0x0f;
                let gate = v & 1 != 0;
                let c = &mut self.ch[2];
                if gate && !c.gate {
                    c.start = now;
                }
                c.gate = gate;
            }
            _ => return false,
        }
        true
    }

    pub fn pio_read(&mut self, port: u16, now: Instant) -> Option<u8> {
        Some(match port {
            0x40..=0x42 => {
                let c = &mut self.ch[(port - 0x40) as usize];
                let v = c.latched.unwrap_or_else(|| c.count(now));
                let (byte, last) = match c.access {
                    1 => (v as u8, true),
                    2 => ((v >> 8) as u8, true),
                    _ => {
                        if c.read_hi {
                            c.read_hi = false;
                            ((v >> 8) as u8, true)
                        } else {
                            c.read_hi = true;
                            (v as u8, false)
                        }
                    }
                };
                if last {
                    c.latched = None;
                }
                byte
            }
            0x43 => 0xff,
            0x61 => {
                let out = self.ch[2].gate && self.ch[2].output(now);
                // Bit 4 toggles with DRAM refresh (every ~15 us).
                let refresh =
                    (now.saturating_duration_since(self.ch[0].start).as_nanos() / 15_000) & 1 != 0;
                self.port61 | if out { 0x20 } else { 0 } | if refresh { 0x10 } else { 0 }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_mode_fires_at_its_rate() {
        let t0 = Instant::now();
        let mut p = Pit::new(t0);
        p.pio_write(0x43, 0x34, t0);
        p.pio_write(0x40, 0x9c, t0); // 11932 = 100 Hz
        p.pio_write(0x40, 0x2e, t0);
        assert_eq!(p.poll(t0), 0);
        assert_eq!(p.poll(t0 + Duration::from_millis(25)), 2);
        let d = p.next_deadline().unwrap();
        assert!(d > t0 + Duration::from_millis(25) && d <= t0 + Duration::from_millis(31));
    }

    #[test]
    fn latched_count_reads_low_then_high() {
        let t0 = Instant::now();
        let mut p = Pit::new(t0);
        p.pio_write(0x43, 0x30, t0);
        p.pio_write(0x40, 0x00, t0);
        p.pio_write(0x40, 0x10, t0);
        p.pio_write(0x43, 0x00, t0);
        let later = t0 + Duration::from_micros(100);
        let lo = p.pio_read(0x40, later).unwrap();
        let hi = p.pio_read(0x40, later).unwrap();
        let v = u16::from(lo) | (u16::from(hi) << 8);
        assert_eq!(v, 0x1000);
    }
}
