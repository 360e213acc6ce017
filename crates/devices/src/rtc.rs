//! The MC146818 CMOS real-time clock and its 128 bytes of CMOS memory,
//! behind the index/data port pair (offset 0: index, NMI-disable bit 7
//! masked off; offset 1: data).
//!
//! The clock is the host's UTC plus an offset the guest moves when it sets
//! the time. Updates are never in progress (UIP reads 0), register D
//! reports valid RAM, and no alarm or periodic interrupt is raised. The
//! memory-size bytes are filled in as PC BIOSes do.

use crate::bus::BusDevice;
use std::time::{SystemTime, UNIX_EPOCH};

const INDEX: u64 = 0;
const DATA: u64 = 1;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const CENTURY: u8 = 0x32;

/// Register A: 32.768 kHz time base, 1024 Hz rate; bit 7 (UIP) stays 0.
const REG_A_DEFAULT: u8 = 0x26;
const REG_A_UIP: u8 = 0x80;
/// Register B: 24-hour mode, BCD.
const REG_B_SET: u8 = 0x80;
const REG_B_BINARY: u8 = 0x04;
const REG_B_24H: u8 = 0x02;
const REG_B_DEFAULT: u8 = REG_B_24H;
/// Register D: valid RAM and time.
const REG_D_VRT: u8 = 0x80;
/// Hours register in 12-hour mode: PM flag.
const HOUR_PM: u8 = 0x80;

// Memory-size bytes.
const BASE_MEM_LO: usize = 0x15;
const EXT_MEM_LO: usize = 0x17;
const EQUIPMENT: usize = 0x14;
const EXT_MEM2_LO: usize = 0x30;
const MEM_ABOVE_16M_LO: usize = 0x34;
const MEM_ABOVE_4G: usize = 0x5b;
const CHECKSUM_HI: usize = 0x2e;
const CHECKSUM_RANGE: std::ops::RangeInclusive<usize> = 0x10..=0x2d;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const SECS_PER_DAY: i64 = 86_400;

/// A broken-down UTC time in plain binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 1 = Sunday .. 7 = Saturday, as the RTC counts.
    weekday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Counts years from
/// March so the leap day is the last day of its year, then whole 400-year
/// eras (146097 days each) from the year 0.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let march_month = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * march_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719468 days lie between 0000-03-01 and 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction: month 1..=12, day 1..=31.
    (year, month as u32, day as u32)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl DateTime {
    fn from_epoch(secs: i64) -> Self {
        let days = secs.div_euclid(SECS_PER_DAY);
        // In 0..86400, so the casts below cannot truncate.
        let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            // 1970-01-01 was a Thursday (5 in the RTC's count).
            weekday: ((days + 4).rem_euclid(7) + 1) as u32,
        }
    }

    /// Seconds since the epoch, or None if a field is out of range.
    fn to_epoch(self) -> Option<i64> {
        let valid = (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        valid.then(|| {
            days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
                + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
        })
    }
}

fn host_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn to_bcd(v: u32) -> u8 {
    // Callers pass 0..=99.
    (((v / 10 % 10) << 4) | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0x0f)
}

/// The RTC and CMOS memory. Map it over 2 ports (0x70..0x72).
pub struct Rtc {
    index: u8,
    cmos: [u8; 128],
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// The time being edited while register B's SET bit is on.
    frozen: Option<DateTime>,
}

impl Rtc {
    /// An RTC for a guest with `mem_size` bytes of RAM, all of it counted
    /// as if below 4 GiB up to 4 GiB (see [`Rtc::with_ram`] for an exact
    /// split around the MMIO hole).
    pub fn new(mem_size: u64) -> Self {
        let below = mem_size.min(4 * GIB);
        Rtc::with_ram(below, mem_size - below)
    }

    /// An RTC whose CMOS reports `below_4g` bytes of RAM under 4 GiB and
    /// `above_4g` bytes above it.
    pub fn with_ram(below_4g: u64, above_4g: u64) -> Self {
        let mut rtc = Rtc {
            index: 0,
            cmos: [0; 128],
            offset: 0,
            frozen: None,
        };
        rtc.cmos[usize::from(REG_A)] = REG_A_DEFAULT;
        rtc.cmos[usize::from(REG_B)] = REG_B_DEFAULT;
        rtc.set_memory(below_4g, above_4g);
        rtc
    }

    fn put_u16(&mut self, at: usize, v: u64) {
        let v = v.min(0xffff);
        self.cmos[at] = (v & 0xff) as u8;
        self.cmos[at + 1] = (v >> 8) as u8;
    }

    fn set_memory(&mut self, below_4g: u64, above_4g: u64) {
        // 640 KiB of conventional memory.
        self.put_u16(BASE_MEM_LO, 640);
        let ext_kib = below_4g.saturating_sub(MIB) / KIB;
        self.put_u16(EXT_MEM_LO, ext_kib);
        self.put_u16(EXT_MEM2_LO, ext_kib);
        self.put_u16(
            MEM_ABOVE_16M_LO,
            below_4g.saturating_sub(16 * MIB) / (64 * KIB),
        );
        let high = (above_4g / (64 * KIB)).min(0xff_ffff);
        self.cmos[MEM_ABOVE_4G] = (high & 0xff) as u8;
        self.cmos[MEM_ABOVE_4G + 1] = (high >> 8 & 0xff) as u8;
        self.cmos[MEM_ABOVE_4G + 2] = (high >> 16) as u8;
        // Math coprocessor present.
        self.cmos[EQUIPMENT] = 0x02;
        let sum: u16 = self.cmos[CHECKSUM_RANGE]
            .iter()
            .fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        self.cmos[CHECKSUM_HI] = (sum >> 8) as u8;
        self.cmos[CHECKSUM_HI + 1] = (sum & 0xff) as u8;
    }

    fn reg_b(&self) -> u8 {
        self.cmos[usize::from(REG_B)]
    }

    fn now(&self) -> DateTime {
        self.frozen
            .unwrap_or_else(|| DateTime::from_epoch(host_now().saturating_add(self.offset)))
    }

    fn encode(&self, v: u32) -> u8 {
        if self.reg_b() & REG_B_BINARY != 0 {
            // Callers pass values below 100.
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.reg_b() & REG_B_BINARY != 0 {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.reg_b() & REG_B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour >= 12 { HOUR_PM } else { 0 };
        self.encode(h12) | pm
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.reg_b() & REG_B_24H != 0 {
            return self.decode(v);
        }
        let h = self.decode(v & !HOUR_PM) % 12;
        if v & HOUR_PM != 0 {
            h + 12
        } else {
            h
        }
    }

    fn read_register(&mut self, reg: u8) -> u8 {
        let t = self.now();
        match reg {
            SECONDS => self.encode(t.second),
            MINUTES => self.encode(t.minute),
            HOURS => self.encode_hour(t.hour),
            WEEKDAY => self.encode(t.weekday),
            DAY => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode(t.year.rem_euclid(100) as u32),
            CENTURY => self.encode(t.year.div_euclid(100).rem_euclid(100) as u32),
            REG_A => self.cmos[usize::from(REG_A)] & !REG_A_UIP,
            // No interrupt sources: nothing is ever flagged.
            REG_C => 0,
            REG_D => REG_D_VRT,
            _ => self.cmos[usize::from(reg & 0x7f)],
        }
    }

    /// Makes `t` the guest's current time, if it is a valid date.
    fn commit(&mut self, t: DateTime) {
        match t.to_epoch() {
            Some(secs) => self.offset = secs.saturating_sub(host_now()),
            None => log::debug!("rtc: guest set an invalid time {t:?}"),
        }
    }

    fn write_time(&mut self, reg: u8, v: u8) {
        let mut t = self.now();
        let value = self.decode(v);
        match reg {
            SECONDS => t.second = value,
            MINUTES => t.minute = value,
            HOURS => t.hour = self.decode_hour(v),
            WEEKDAY => t.weekday = value,
            DAY => t.day = value,
            MONTH => t.month = value,
            YEAR => t.year = t.year.div_euclid(100) * 100 + i64::from(value),
            CENTURY => t.year = i64::from(value) * 100 + t.year.rem_euclid(100),
            _ => return,
        }
        if self.reg_b() & REG_B_SET != 0 {
            self.frozen = Some(t);
        } else {
            self.commit(t);
        }
    }

    fn write_register(&mut self, reg: u8, v: u8) {
        match reg {
            SECONDS | MINUTES | HOURS | WEEKDAY | DAY | MONTH | YEAR | CENTURY => {
                self.write_time(reg, v)
            }
            REG_A => self.cmos[usize::from(REG_A)] = v & !REG_A_UIP,
            REG_B => {
                if v & REG_B_SET != 0 && self.frozen.is_none() {
                    self.frozen = Some(self.now());
                }
                self.cmos[usize::from(REG_B)] = v;
                if v & REG_B_SET == 0 {
                    if let Some(t) = self.frozen.take() {
                        self.commit(t);
                    }
                }
            }
            REG_C | REG_D => {}
            _ => self.cmos[usize::from(reg & 0x7f)] = v,
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (port, byte) in (offset..).zip(data.iter_mut()) {
            *byte = match port {
                DATA => self.read_register(self.index),
                // The index port is write-only.
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (port, &byte) in (offset..).zip(data.iter()) {
            match port {
                // Bit 7 is the NMI mask, not part of the index.
                INDEX => self.index = byte & 0x7f,
                DATA => self.write_register(self.index, byte),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(INDEX, &[reg | 0x80]);
        let mut d = [0];
        rtc.read(DATA, &mut d);
        d[0]
    }

    fn write(rtc: &mut Rtc, reg: u8, v: u8) {
        rtc.write(INDEX, &[reg]);
        rtc.write(DATA, &[v]);
    }

    fn host_year() -> i64 {
        DateTime::from_epoch(host_now()).year
    }

    #[test]
    fn calendar_conversions() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        let t = DateTime::from_epoch(951_782_400 + 3 * 3600 + 4 * 60 + 5);
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
        assert_eq!((t.hour, t.minute, t.second), (3, 4, 5));
        assert_eq!(t.weekday, 3, "a Tuesday");
    }

    #[test]
    fn bcd_year_is_current() {
        let mut rtc = Rtc::new(256 * MIB);
        let year = host_year();
        let yy = from_bcd(read(&mut rtc, YEAR));
        let cc = from_bcd(read(&mut rtc, CENTURY));
        assert_eq!(i64::from(cc * 100 + yy), year);
        assert!(year >= 2024);
        let month = from_bcd(read(&mut rtc, MONTH));
        assert!((1..=12).contains(&month));
    }

    #[test]
    fn binary_mode_and_12_hour() {
        let mut rtc = Rtc::new(256 * MIB);
        write(&mut rtc, REG_B, REG_B_BINARY | REG_B_24H);
        let yy = read(&mut rtc, YEAR);
        let cc = read(&mut rtc, CENTURY);
        assert_eq!(i64::from(cc) * 100 + i64::from(yy), host_year());
        let hour24 = read(&mut rtc, HOURS);
        assert!(hour24 < 24);
        write(&mut rtc, REG_B, REG_B_BINARY);
        let hour12 = read(&mut rtc, HOURS);
        let h = hour12 & 0x7f;
        assert!((1..=12).contains(&h));
        // Unless the hour turned between the reads, both agree.
        let back = u32::from(h % 12) + if hour12 & HOUR_PM != 0 { 12 } else { 0 };
        let now = read(&mut rtc, HOURS);
        assert!(back == u32::from(hour24) || now != hour12);
    }

    #[test]
    fn guest_sets_time() {
        let mut rtc = Rtc::new(256 * MIB);
        write(&mut rtc, REG_B, REG_B_SET | REG_B_24H);
        write(&mut rtc, CENTURY, 0x20);
        write(&mut rtc, YEAR, 0x35);
        write(&mut rtc, MONTH, 0x07);
        write(&mut rtc, DAY, 0x14);
        write(&mut rtc, HOURS, 0x12);
        write(&mut rtc, REG_B, REG_B_24H);
        assert_eq!(read(&mut rtc, YEAR), 0x35);
        assert_eq!(read(&mut rtc, MONTH), 0x07);
        assert_eq!(read(&mut rtc, DAY), 0x14);
        // An impossible date is ignored.
        write(&mut rtc, MONTH, 0x13);
        assert_eq!(read(&mut rtc, MONTH), 0x07);
    }

    #[test]
    fn status_registers() {
        let mut rtc = Rtc::new(256 * MIB);
        assert_eq!(read(&mut rtc, REG_A) & REG_A_UIP, 0);
        write(&mut rtc, REG_A, 0xff);
        assert_eq!(read(&mut rtc, REG_A) & REG_A_UIP, 0);
        assert_eq!(read(&mut rtc, REG_D), REG_D_VRT);
        assert_eq!(read(&mut rtc, REG_C), 0);
        assert_eq!(read(&mut rtc, REG_B), REG_B_DEFAULT);
    }

    #[test]
    fn cmos_memory_and_sizes() {
        let mut rtc = Rtc::new(64 * MIB);
        let word =
            |rtc: &mut Rtc, at: u8| u32::from(read(rtc, at)) | u32::from(read(rtc, at + 1)) << 8;
        assert_eq!(word(&mut rtc, 0x15), 640);
        assert_eq!(word(&mut rtc, 0x17), 63 * 1024);
        assert_eq!(word(&mut rtc, 0x30), 63 * 1024);
        assert_eq!(word(&mut rtc, 0x34), (64 - 16) * 16);
        let sum: u32 = (0x10..=0x2d).map(|r| u32::from(read(&mut rtc, r))).sum();
        assert_eq!(word(&mut rtc, 0x2e), (sum >> 8 & 0xff) | (sum & 0xff) << 8);
        write(&mut rtc, 0x7f, 0xa5);
        write(&mut rtc, 0x0e, 0x5a);
        assert_eq!(read(&mut rtc, 0x7f), 0xa5);
        assert_eq!(read(&mut rtc, 0x0e), 0x5a);
        let big = Rtc::with_ram(3 * GIB, 5 * GIB);
        assert_eq!(big.cmos[0x17], 0xff);
        assert_eq!(big.cmos[0x18], 0xff);
        let high = u32::from(big.cmos[0x5b])
            | u32::from(big.cmos[0x5c]) << 8
            | u32::from(big.cmos[0x5d]) << 16;
        assert_eq!(u64::from(high), 5 * GIB / (64 * KIB));
    }

    #[test]
    fn index_port_reads_ff() {
        let mut rtc = Rtc::new(0);
        let mut d = [0u8; 2];
        rtc.read(INDEX, &mut d);
        assert_eq!(d[0], 0xff);
    }
}
