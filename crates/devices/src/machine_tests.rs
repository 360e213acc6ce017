//! Tests of the devices together on an [`IoBus`] at the PC ports the VMM
//! uses, driven through [`DeviceIo`] as an engine would: a few guest-like
//! sequences, and a storm of arbitrary accesses that must not panic.

use crate::acpi_pm::{AcpiPmControl, AcpiPmEvent, AcpiPmTimer, AcpiReset};
use crate::bus::{IoBus, SharedDevice};
use crate::debug_exit::DebugExit;
use crate::events::VmEvent;
use crate::i8042::I8042;
use crate::pci::PciRoot;
use crate::port_sink::PortSink;
use crate::rtc::Rtc;
use crate::serial::Serial;
use crate::test_util::{RecordingIrq, RecordingSink, SharedBuf};
use hypervisor::DeviceIo;
use std::sync::{Arc, Mutex};

struct Machine {
    io: IoBus,
    sink: Arc<RecordingSink>,
    out: SharedBuf,
    serial: Arc<Mutex<Serial>>,
}

fn machine() -> Machine {
    let sink = Arc::new(RecordingSink::default());
    let out = SharedBuf::default();
    let serial = Arc::new(Mutex::new(Serial::new(
        Arc::new(RecordingIrq::default()),
        Box::new(out.clone()),
    )));
    let io = IoBus::new();
    let devices: Vec<(u64, u64, SharedDevice)> = vec![
        (0x3f8, 8, serial.clone()),
        (0x60, 5, Arc::new(Mutex::new(I8042::new(sink.clone())))),
        (0x70, 2, Arc::new(Mutex::new(Rtc::new(512 << 20)))),
        (0x80, 1, Arc::new(Mutex::new(PortSink))),
        (0xf4, 1, Arc::new(Mutex::new(DebugExit::new(sink.clone())))),
        (0xcf8, 8, Arc::new(Mutex::new(PciRoot::new()))),
        (0x600, 4, Arc::new(Mutex::new(AcpiPmEvent::new()))),
        (
            0x604,
            2,
            Arc::new(Mutex::new(AcpiPmControl::new(sink.clone()))),
        ),
        (0x608, 4, Arc::new(Mutex::new(AcpiPmTimer::new()))),
        (0x60c, 1, Arc::new(Mutex::new(AcpiReset::new(sink.clone())))),
    ];
    for (base, len, dev) in devices {
        io.pio.insert(base, len, dev).unwrap();
    }
    Machine {
        io,
        sink,
        out,
        serial,
    }
}

fn inb(io: &IoBus, port: u16) -> u8 {
    let mut d = [0u8];
    io.pio_read(port, &mut d);
    d[0]
}

fn inl(io: &IoBus, port: u16) -> u32 {
    let mut d = [0u8; 4];
    io.pio_read(port, &mut d);
    u32::from_le_bytes(d)
}

#[test]
fn guest_like_sequences() {
    let m = machine();
    // Console output.
    for &b in b"Linux" {
        m.io.pio_write(0x3f8, &[b]);
    }
    assert_eq!(m.out.contents(), b"Linux");
    // PCI probe: type 1 check, then the host bridge.
    m.io.pio_write(0xcf8, &0x8000_0000u32.to_le_bytes());
    assert_eq!(inl(&m.io, 0xcf8), 0x8000_0000);
    assert_eq!(inl(&m.io, 0xcfc), 0x0d57_8086);
    let mut w = [0u8; 2];
    m.io.pio_read(0xcfe, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x0d57);
    // A dword at 0xcfe straddles the end of CONFIG_DATA: unclaimed.
    assert_eq!(inl(&m.io, 0xcfe), 0xffff_ffff);
    // i8042 self test through the real ports.
    m.io.pio_write(0x64, &[0xaa]);
    assert_eq!(inb(&m.io, 0x64) & 1, 1);
    assert_eq!(inb(&m.io, 0x60), 0x55);
    // RTC register D through 0x70/0x71 with the NMI bit set.
    m.io.pio_write(0x70, &[0x8d]);
    assert_eq!(inb(&m.io, 0x71), 0x80);
    assert_eq!(inb(&m.io, 0x80), 0xff);
    // Power off, reset, exit.
    m.io.pio_write(0x604, &(5u16 << 10 | 1 << 13).to_le_bytes());
    m.io.pio_write(0x60c, &[6]);
    m.io.pio_write(0x64, &[0xfe]);
    m.io.pio_write(0xf4, &[1]);
    assert_eq!(
        m.sink.take(),
        vec![
            VmEvent::PowerOff,
            VmEvent::Reset,
            VmEvent::Reset,
            VmEvent::Exit(1)
        ]
    );
}

/// A small deterministic generator (xorshift64*), enough to spray accesses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn arbitrary_accesses_do_not_panic() {
    let m = machine();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let ports: Vec<u16> = (0x0..0x100)
        .chain(0x3f0..0x400)
        .chain(0x5f8..0x620)
        .chain(0xcf0..0xd08)
        .collect();
    for _ in 0..200_000 {
        let r = rng.next();
        let port = ports[(r as usize >> 8) % ports.len()];
        let size = [1usize, 2, 4][(r as usize >> 40) % 3];
        let mut data = (rng.next()).to_le_bytes();
        let data = &mut data[..size];
        if r & 1 == 0 {
            m.io.pio_read(port, data);
        } else {
            // Keep the PCI address pointed somewhere real half the time.
            if port == 0xcf8 && size == 4 && r & 2 == 0 {
                data[3] = 0x80;
                data[2] = 0;
            }
            m.io.pio_write(port, data);
        }
        if r & 0xfff == 0 {
            m.serial.lock().unwrap().enqueue_input(b"in");
        }
    }
    // Still answering sensibly afterwards.
    m.io.pio_write(0xcf8, &0x8000_0000u32.to_le_bytes());
    assert_eq!(inl(&m.io, 0xcfc), 0x0d57_8086);
}
