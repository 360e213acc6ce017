//! One ATA channel with a master drive: the taskfile registers (with the
//! LBA48 "previous value" of each), the status/error/device-control
//! logic, the commands Linux's libata and other in-box drivers use
//! (IDENTIFY, READ/WRITE SECTORS and MULTIPLE, READ/WRITE DMA, their EXT
//! forms, FLUSH CACHE, SET FEATURES, power management no-ops) and PIO
//! through a sector buffer. DMA commands wait for the bus master
//! ([`super::bmdma`]) to start and move their data. An unknown command or
//! a bad range aborts with ERR; no slave drive: with it selected every
//! register reads 0, which is how a driver sees it is absent.

use super::identify;
use virtio::block::{Image, ImageError};

/// Status bits.
pub const BSY: u8 = 0x80;
pub const DRDY: u8 = 0x40;
pub const DSC: u8 = 0x10;
pub const DRQ: u8 = 0x08;
pub const ERR: u8 = 0x01;
/// Error bits.
const ABRT: u8 = 0x04;
const IDNF: u8 = 0x10;
const UNC: u8 = 0x40;
/// Device control bits.
const NIEN: u8 = 0x02;
const SRST: u8 = 0x04;
const HOB: u8 = 0x80;
/// Device register: LBA addressing, and the drive-select bit.
const DEV_LBA: u8 = 0x40;
const DEV_SLAVE: u8 = 0x10;

/// Sectors per DRQ block of READ/WRITE MULTIPLE (IDENTIFY word 47).
pub const MAX_MULTIPLE: u16 = 16;
const SECTOR: usize = 512;

/// What a PIO data phase does when its buffer is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pio {
    None,
    /// Reading: the buffer holds what the host reads next.
    In,
    /// Writing: the buffer fills with what the host writes.
    Out,
}

/// A DMA command waiting for the bus master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRequest {
    pub lba: u64,
    pub sectors: u64,
    /// Device to memory.
    pub read: bool,
}

/// A register pair of the LBA48 FIFO: the value now and the one before.
#[derive(Debug, Clone, Copy, Default)]
struct Reg {
    cur: u8,
    prev: u8,
}

impl Reg {
    fn write(&mut self, v: u8) {
        self.prev = self.cur;
        self.cur = v;
    }
}

pub struct Channel {
    pub image: Image,
    serial: String,
    feature: Reg,
    count: Reg,
    lba_low: Reg,
    lba_mid: Reg,
    lba_high: Reg,
    device: u8,
    pub status: u8,
    error: u8,
    control: u8,
    /// INTRQ as the drive drives it (before nIEN).
    intrq: bool,
    buf: Vec<u8>,
    pos: usize,
    pio: Pio,
    /// Next sector of the running PIO command and how many remain.
    lba: u64,
    left: u64,
    /// Sectors per DRQ block of the running command.
    block: u64,
    multiple: u16,
    pub dma: Option<DmaRequest>,
    write_cache: bool,
}

impl Channel {
    pub fn new(image: Image, serial: &str) -> Self {
        let write_cache = image.flushes();
        let mut c = Channel {
            image,
            serial: serial.to_string(),
            feature: Reg::default(),
            count: Reg::default(),
            lba_low: Reg::default(),
            lba_mid: Reg::default(),
            lba_high: Reg::default(),
            device: 0,
            status: 0,
            error: 0,
            control: 0,
            intrq: false,
            buf: Vec::new(),
            pos: 0,
            pio: Pio::None,
            lba: 0,
            left: 0,
            block: 1,
            multiple: MAX_MULTIPLE,
            dma: None,
            write_cache,
        };
        c.reset();
        c
    }

    /// Power-on or software reset: the ATA signature, ready.
    fn reset(&mut self) {
        self.count = Reg { cur: 1, prev: 0 };
        self.lba_low = Reg { cur: 1, prev: 0 };
        self.lba_mid = Reg::default();
        self.lba_high = Reg::default();
        self.feature = Reg::default();
        self.device = 0;
        self.error = 1; // diagnostics passed
        self.status = DRDY | DSC;
        self.pio = Pio::None;
        self.dma = None;
        self.buf.clear();
        self.intrq = false;
    }

    fn slave(&self) -> bool {
        self.device & DEV_SLAVE != 0
    }

    /// Whether the interrupt line is asserted.
    pub fn irq(&self) -> bool {
        self.intrq && self.control & NIEN == 0
    }

    pub fn raise(&mut self) {
        self.intrq = true;
    }

    /// A read of command-block register `reg` (1..=7; 0 is data).
    pub fn read_reg(&mut self, reg: u8) -> u8 {
        if self.slave() {
            return 0;
        }
        let hob = self.control & HOB != 0;
        let pick = |r: Reg| if hob { r.prev } else { r.cur };
        match reg {
            1 => self.error,
            2 => pick(self.count),
            3 => pick(self.lba_low),
            4 => pick(self.lba_mid),
            5 => pick(self.lba_high),
            6 => self.device | 0xa0,
            7 => {
                // Reading the status acknowledges the interrupt.
                self.intrq = false;
                self.status
            }
            _ => 0xff,
        }
    }

    pub fn alt_status(&self) -> u8 {
        if self.slave() {
            0
        } else {
            self.status
        }
    }

    pub fn write_reg(&mut self, reg: u8, v: u8) {
        // Writing any taskfile register clears HOB.
        self.control &= !HOB;
        match reg {
            1 => self.feature.write(v),
            2 => self.count.write(v),
            3 => self.lba_low.write(v),
            4 => self.lba_mid.write(v),
            5 => self.lba_high.write(v),
            6 => self.device = v & 0x5f,
            7 if !self.slave() && self.status & BSY == 0 => self.command(v),
            _ => {}
        }
    }

    pub fn write_control(&mut self, v: u8) {
        if v & SRST != 0 && self.control & SRST == 0 {
            self.reset();
        }
        self.control = v;
    }

    /// The 28-bit or 48-bit address and sector count of the taskfile.
    fn address(&self, ext: bool) -> (u64, u64) {
        let b = |x: u8| u64::from(x);
        if ext {
            let lba = b(self.lba_low.cur)
                | b(self.lba_mid.cur) << 8
                | b(self.lba_high.cur) << 16
                | b(self.lba_low.prev) << 24
                | b(self.lba_mid.prev) << 32
                | b(self.lba_high.prev) << 40;
            let n = b(self.count.cur) | b(self.count.prev) << 8;
            (lba, if n == 0 { 65536 } else { n })
        } else {
            let lba = b(self.lba_low.cur)
                | b(self.lba_mid.cur) << 8
                | b(self.lba_high.cur) << 16
                | b(self.device & 0xf) << 24;
            let n = b(self.count.cur);
            (lba, if n == 0 { 256 } else { n })
        }
    }

    /// Ends a command: ready, with an interrupt.
    fn finish(&mut self) {
        self.status = DRDY | DSC;
        self.pio = Pio::None;
        self.raise();
    }

    fn abort(&mut self, error: u8) {
        self.error = error;
        self.status = DRDY | DSC | ERR;
        self.pio = Pio::None;
        self.dma = None;
        self.raise();
    }

    fn command(&mut self, cmd: u8) {
        self.error = 0;
        self.dma = None;
        self.pio = Pio::None;
        let in_range = |c: &Channel, lba: u64, n: u64| {
            lba.checked_add(n).is_some_and(|e| e <= c.image.sectors())
        };
        match cmd {
            0xec => {
                let sectors = self.image.sectors();
                let data = identify::drive(&self.serial, sectors, self.write_cache, self.multiple);
                self.start_buffer(data);
            }
            // READ SECTORS / MULTIPLE (and EXT), WRITE likewise.
            0x20 | 0x21 | 0x24 | 0xc4 | 0x29 | 0x30 | 0x31 | 0x34 | 0xc5 | 0x39 => {
                let ext = matches!(cmd, 0x24 | 0x29 | 0x34 | 0x39);
                if self.device & DEV_LBA == 0 && !ext {
                    // CHS addressing is not offered (IDENTIFY says LBA).
                    return self.abort(ABRT);
                }
                let (lba, n) = self.address(ext);
                if !in_range(self, lba, n) {
                    return self.abort(IDNF | ABRT);
                }
                let multi = matches!(cmd, 0xc4 | 0x29 | 0xc5 | 0x39);
                self.lba = lba;
                self.left = n;
                self.block = if multi { u64::from(self.multiple) } else { 1 };
                if matches!(cmd, 0x20 | 0x21 | 0x24 | 0xc4 | 0x29) {
                    self.next_in();
                } else {
                    self.next_out(false);
                }
            }
            // READ DMA / WRITE DMA (and EXT): the bus master moves the data.
            0xc8 | 0xc9 | 0x25 | 0xca | 0xcb | 0x35 => {
                let ext = matches!(cmd, 0x25 | 0x35);
                if self.device & DEV_LBA == 0 && !ext {
                    return self.abort(ABRT);
                }
                let (lba, sectors) = self.address(ext);
                if !in_range(self, lba, sectors) {
                    return self.abort(IDNF | ABRT);
                }
                self.dma = Some(DmaRequest {
                    lba,
                    sectors,
                    read: matches!(cmd, 0xc8 | 0xc9 | 0x25),
                });
                self.status = DRDY | DSC | DRQ;
            }
            // FLUSH CACHE (EXT).
            0xe7 | 0xea => match self.image.flush() {
                Ok(()) => self.finish(),
                Err(_) => self.abort(ABRT),
            },
            // SET MULTIPLE MODE: a power of two up to MAX_MULTIPLE.
            0xc6 => {
                let n = u16::from(self.count.cur);
                if n.is_power_of_two() && n <= MAX_MULTIPLE {
                    self.multiple = n;
                    self.finish();
                } else {
                    self.abort(ABRT);
                }
            }
            // SET FEATURES: write cache on/off, transfer mode, others accepted.
            0xef => {
                match self.feature.cur {
                    0x02 => self.write_cache = true,
                    0x82 => self.write_cache = false,
                    _ => {}
                }
                self.finish();
            }
            // CHECK POWER MODE: active.
            0xe5 => {
                self.count.write(0xff);
                self.finish();
            }
            // READ VERIFY (EXT), INITIALIZE DEVICE PARAMETERS, RECALIBRATE,
            // SEEK, IDLE/STANDBY (IMMEDIATE), SLEEP, NOP-like no-ops.
            0x40 | 0x41 | 0x42 | 0x91 | 0x10..=0x1f | 0x70 | 0xe0..=0xe3 | 0xe6 => self.finish(),
            _ => self.abort(ABRT),
        }
    }

    fn start_buffer(&mut self, data: Vec<u8>) {
        self.buf = data;
        self.pos = 0;
        self.left = 0;
        self.pio = Pio::In;
        self.status = DRDY | DSC | DRQ;
        self.raise();
    }

    /// Loads the next DRQ block of a PIO read.
    fn next_in(&mut self) {
        let n = self.block.min(self.left);
        // n <= MAX_MULTIPLE sectors.
        let mut buf = vec![0u8; n as usize * SECTOR];
        if let Err(e) = self.image.buffer_io(self.lba, &mut buf, false) {
            return self.abort(image_error(e));
        }
        self.lba += n;
        self.left -= n;
        self.buf = buf;
        self.pos = 0;
        self.pio = Pio::In;
        self.status = DRDY | DSC | DRQ;
        self.raise();
    }

    /// Opens the next DRQ block of a PIO write (an interrupt for every
    /// block but the first).
    fn next_out(&mut self, irq: bool) {
        let n = self.block.min(self.left);
        self.buf = vec![0u8; n as usize * SECTOR];
        self.pos = 0;
        self.pio = Pio::Out;
        self.status = DRDY | DSC | DRQ;
        if irq {
            self.raise();
        }
    }

    /// A PIO read of the data register (2 or 4 bytes).
    pub fn read_data(&mut self, data: &mut [u8]) {
        data.fill(0);
        if self.pio != Pio::In || self.slave() {
            return;
        }
        for b in data.iter_mut() {
            if let Some(&v) = self.buf.get(self.pos) {
                *b = v;
                self.pos += 1;
            }
        }
        if self.pos >= self.buf.len() {
            if self.left > 0 {
                self.next_in();
            } else {
                self.status = DRDY | DSC;
                self.pio = Pio::None;
            }
        }
    }

    pub fn write_data(&mut self, data: &[u8]) {
        if self.pio != Pio::Out || self.slave() {
            return;
        }
        for &v in data {
            if let Some(b) = self.buf.get_mut(self.pos) {
                *b = v;
                self.pos += 1;
            }
        }
        if self.pos >= self.buf.len() {
            let n = (self.buf.len() / SECTOR) as u64;
            let mut buf = std::mem::take(&mut self.buf);
            if let Err(e) = self.image.buffer_io(self.lba, &mut buf, true) {
                return self.abort(image_error(e));
            }
            self.lba += n;
            self.left -= n.min(self.left);
            if self.left > 0 {
                self.next_out(true);
            } else {
                self.finish();
            }
        }
    }

    /// The bus master finished (or failed) the pending DMA command.
    pub fn dma_done(&mut self, r: Result<(), ImageError>) {
        self.dma = None;
        match r {
            Ok(()) => self.finish(),
            Err(e) => self.abort(image_error(e)),
        }
    }
}

fn image_error(e: ImageError) -> u8 {
    match e {
        ImageError::OutOfRange => IDNF | ABRT,
        ImageError::ReadOnly => ABRT,
        ImageError::Io => UNC | ABRT,
    }
}
