//! Userspace interrupt controllers and timers for engines without
//! in-kernel ones (the soft engine): the 8259 PIC pair, the 8254 PIT, the
//! IOAPIC and one local APIC per vCPU, wired together as on a PC. All
//! state sits behind one lock; vCPUs learn about new interrupts through
//! the `notify` callback and poll timers with [`IrqChip::poll`].

pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod pit;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ioapic::{IoApic, Message};
use lapic::{Effect, LocalApic, LVT_LINT0};
use pic::Pic;
use pit::Pit;

/// Start-up signals for an application processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    Init,
    Sipi(u8),
}

/// Called with a vCPU index when that vCPU may have work (an interrupt or
/// a start-up signal).
pub type Notify = Arc<dyn Fn(usize) + Send + Sync>;

struct State {
    pic: Pic,
    pit: Pit,
    ioapic: IoApic,
    lapics: Vec<LocalApic>,
    startup: Vec<Option<Startup>>,
    /// PIT channel 0 output level driven into the PIC/IOAPIC.
    pit_line: bool,
}

/// The machine's interrupt controllers.
pub struct IrqChip {
    state: Mutex<State>,
    notify: Notify,
}

impl std::fmt::Debug for IrqChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IrqChip")
    }
}

/// The IOAPIC pin the PIT's IRQ 0 is wired to (ISA override 0 -> 2).
pub const PIT_IOAPIC_PIN: usize = 2;

impl IrqChip {
    pub fn new(notify: Notify) -> Self {
        let now = Instant::now();
        IrqChip {
            state: Mutex::new(State {
                pic: Pic::default(),
                pit: Pit::new(now),
                ioapic: IoApic::default(),
                lapics: Vec::new(),
                startup: Vec::new(),
                pit_line: false,
            }),
            notify,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state
        // for interrupt delivery; keep going rather than cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the local APIC of vCPU `index` (APIC ID = index).
    pub fn add_cpu(&self, index: usize) {
        let mut s = self.lock();
        while s.lapics.len() <= index {
            let id = s.lapics.len() as u8;
            s.lapics.push(LocalApic::new(id, Instant::now()));
            s.startup.push(None);
        }
    }

    /// Drives GSI `gsi`: IOAPIC pin `gsi`, and PIC line `gsi` below 16.
    pub fn set_irq_line(&self, gsi: u32, level: bool) {
        let mut wake = Vec::new();
        {
            let mut s = self.lock();
            if gsi < 16 {
                s.pic.set_irq(gsi, level);
                if s.pic.intr() {
                    wake.push(0);
                }
            }
            if let Some(m) = s.ioapic.set_line(gsi as usize, level) {
                deliver(&mut s, m, &mut wake);
            }
        }
        self.wake(wake);
    }

    /// Delivers an MSI (address 0xfeeXXXXX, data with vector and mode).
    pub fn signal_msi(&self, address: u64, data: u32) {
        let m = Message {
            vector: data as u8,
            delivery: ((data >> 8) & 7) as u8,
            logical: address & 4 != 0,
            dest: ((address >> 12) & 0xff) as u8,
            level: data & (1 << 15) != 0,
        };
        let mut wake = Vec::new();
        deliver(&mut self.lock(), m, &mut wake);
        self.wake(wake);
    }

    fn wake(&self, cpus: Vec<usize>) {
        for c in cpus {
            (self.notify)(c);
        }
    }

    /// Handles a port access if it belongs to the PIC, ELCR or PIT.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) -> bool {
        if !matches!(
            port,
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 | 0x40..=0x43 | 0x61
        ) {
            return false;
        }
        let mut s = self.lock();
        let v = match port {
            0x40..=0x43 | 0x61 => s.pit.pio_read(port, Instant::now()),
            _ => s.pic.pio_read(port),
        }
        .unwrap_or(0xff);
        data.iter_mut().for_each(|b| *b = 0xff);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
        true
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) -> bool {
        if !matches!(
            port,
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 | 0x40..=0x43 | 0x61
        ) {
            return false;
        }
        let v = data.first().copied().unwrap_or(0);
        let mut wake = Vec::new();
        {
            let mut s = self.lock();
            match port {
                0x40..=0x43 | 0x61 => {
                    s.pit.pio_write(port, v, Instant::now());
                }
                _ => {
                    s.pic.pio_write(port, v);
                    if s.pic.intr() {
                        wake.push(0);
                    }
                }
            }
        }
        self.wake(wake);
        true
    }

    pub fn ioapic_read(&self, offset: u64, data: &mut [u8]) {
        let v = self.lock().ioapic.read(offset);
        fill(data, v);
    }

    pub fn ioapic_write(&self, offset: u64, data: &[u8]) {
        let v = word(data);
        let mut wake = Vec::new();
        {
            let mut s = self.lock();
            if let Some(m) = s.ioapic.write(offset, v) {
                deliver(&mut s, m, &mut wake);
            }
        }
        self.wake(wake);
    }

    pub fn lapic_read(&self, cpu: usize, offset: u64, data: &mut [u8]) {
        let s = self.lock();
        let v = s
            .lapics
            .get(cpu)
            .map(|a| a.read(offset & 0xff0, Instant::now()))
            .unwrap_or(0);
        fill(data, v >> (8 * (offset & 3)));
    }

    pub fn lapic_write(&self, cpu: usize, offset: u64, data: &[u8]) {
        let v = word(data);
        let mut wake = Vec::new();
        {
            let mut s = self.lock();
            let Some(a) = s.lapics.get_mut(cpu) else {
                return;
            };
            match a.write(offset & 0xff0, v, Instant::now()) {
                Effect::Eoi(vec) => {
                    for m in s.ioapic.eoi(vec) {
                        deliver(&mut s, m, &mut wake);
                    }
                }
                Effect::Ipi(icr) => ipi(&mut s, cpu, icr, &mut wake),
                Effect::TimerChanged => wake.push(cpu),
                Effect::None => {}
            }
        }
        self.wake(wake);
    }

    /// IA32_TSC_DEADLINE of vCPU `cpu` (see [`LocalApic::tsc_deadline`]).
    pub fn tsc_deadline(&self, cpu: usize) -> u64 {
        self.lock()
            .lapics
            .get(cpu)
            .map_or(0, LocalApic::tsc_deadline)
    }

    /// A write of vCPU `cpu`'s IA32_TSC_DEADLINE, due at `due` (see
    /// [`LocalApic::set_tsc_deadline`]).
    pub fn set_tsc_deadline(&self, cpu: usize, v: u64, due: Option<Instant>) {
        let changed = self
            .lock()
            .lapics
            .get_mut(cpu)
            .is_some_and(|a| a.set_tsc_deadline(v, due));
        if changed {
            self.wake(vec![cpu]);
        }
    }

    pub fn set_tpr(&self, cpu: usize, tpr: u8) {
        if let Some(a) = self.lock().lapics.get_mut(cpu) {
            a.tpr = tpr;
        }
    }

    pub fn tpr(&self, cpu: usize) -> u8 {
        self.lock().lapics.get(cpu).map(|a| a.tpr).unwrap_or(0)
    }

    /// Fires due timers (PIT, every local APIC timer).
    pub fn poll(&self, now: Instant) {
        let mut wake = Vec::new();
        {
            let mut s = self.lock();
            let ticks = s.pit.poll(now);
            if ticks > 0 {
                // One edge per poll on IRQ 0 / IOAPIC pin 2.
                s.pic.set_irq(0, false);
                s.pic.set_irq(0, true);
                s.pit_line = true;
                if s.pic.intr() {
                    wake.push(0);
                }
                let _ = s.ioapic.set_line(PIT_IOAPIC_PIN, false);
                if let Some(m) = s.ioapic.set_line(PIT_IOAPIC_PIN, true) {
                    deliver(&mut s, m, &mut wake);
                }
            }
            for (i, a) in s.lapics.iter_mut().enumerate() {
                if a.poll_timer(now) {
                    wake.push(i);
                }
            }
        }
        self.wake(wake);
    }

    /// The earliest instant a timer needs [`poll`](Self::poll).
    pub fn next_deadline(&self) -> Option<Instant> {
        let s = self.lock();
        let mut d = s.pit.next_deadline();
        for a in &s.lapics {
            if let Some(t) = a.timer_deadline() {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        }
        d
    }

    /// True when vCPU `cpu` has an interrupt to take (when IF allows).
    pub fn has_interrupt(&self, cpu: usize) -> bool {
        let s = self.lock();
        let Some(a) = s.lapics.get(cpu) else {
            return false;
        };
        a.pending().is_some() || (extint(a) && s.pic.intr())
    }

    /// Acknowledges the highest-priority interrupt of vCPU `cpu`.
    pub fn ack(&self, cpu: usize) -> Option<u8> {
        let mut s = self.lock();
        let s = &mut *s;
        let a = s.lapics.get_mut(cpu)?;
        if let Some(v) = a.ack() {
            return Some(v);
        }
        if extint(a) {
            return s.pic.ack();
        }
        None
    }

    /// Takes a pending INIT or SIPI for vCPU `cpu`.
    pub fn take_startup(&self, cpu: usize) -> Option<Startup> {
        self.lock().startup.get_mut(cpu).and_then(|s| s.take())
    }
}

fn extint(a: &LocalApic) -> bool {
    let l = a.lvt[LVT_LINT0];
    !a.enabled() && a.id == 0 || (l & (1 << 16) == 0 && (l >> 8) & 7 == 7)
}

fn fill(data: &mut [u8], v: u32) {
    let b = v.to_le_bytes();
    for (i, d) in data.iter_mut().enumerate() {
        *d = b.get(i).copied().unwrap_or(0);
    }
}

fn word(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    for (i, d) in data.iter().take(4).enumerate() {
        b[i] = *d;
    }
    u32::from_le_bytes(b)
}

fn targets(s: &State, logical: bool, dest: u8) -> Vec<usize> {
    s.lapics
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            if logical {
                // Flat model: LDR bits 31-24 are a bitmask.
                (a.ldr >> 24) as u8 & dest != 0
            } else {
                dest == 0xff || a.id == dest
            }
        })
        .map(|(i, _)| i)
        .collect()
}

fn deliver(s: &mut State, m: Message, wake: &mut Vec<usize>) {
    let mut t = targets(s, m.logical, m.dest);
    if m.delivery == 1 && t.len() > 1 {
        // Lowest priority: pick the first target.
        t.truncate(1);
    }
    for i in t {
        match m.delivery {
            0 | 1 => {
                if let Some(a) = s.lapics.get_mut(i) {
                    a.accept(m.vector, m.level);
                }
            }
            4 => {
                // NMI is not modelled; treat as a fixed vector 2.
                if let Some(a) = s.lapics.get_mut(i) {
                    a.accept(2, false);
                }
            }
            5 => s.startup[i] = Some(Startup::Init),
            6 => s.startup[i] = Some(Startup::Sipi(m.vector)),
            _ => {}
        }
        wake.push(i);
    }
}

fn ipi(s: &mut State, from: usize, icr: u64, wake: &mut Vec<usize>) {
    let delivery = ((icr >> 8) & 7) as u8;
    let logical = icr & (1 << 11) != 0;
    let level_assert = icr & (1 << 14) != 0;
    let shorthand = (icr >> 18) & 3;
    let dest = (icr >> 56) as u8;
    if delivery == 5 && !level_assert {
        // INIT level de-assert: no action.
        return;
    }
    let all: Vec<usize> = (0..s.lapics.len()).collect();
    let t: Vec<usize> = match shorthand {
        1 => vec![from],
        2 => all,
        3 => all.into_iter().filter(|&i| i != from).collect(),
        _ => targets(s, logical, dest),
    };
    for i in t {
        let m = Message {
            vector: icr as u8,
            delivery,
            logical: false,
            dest: s.lapics[i].id,
            level: false,
        };
        deliver(s, m, wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn chip() -> (IrqChip, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let c = IrqChip::new(Arc::new(move |_| {
            n2.fetch_add(1, Ordering::SeqCst);
        }));
        c.add_cpu(0);
        c.add_cpu(1);
        (c, n)
    }

    #[test]
    fn msi_reaches_the_addressed_cpu() {
        let (c, n) = chip();
        c.lapic_write(1, 0xf0, &0x1ffu32.to_le_bytes());
        c.signal_msi(0xfee0_1000, 0x41);
        assert!(c.has_interrupt(1));
        assert!(!c.has_interrupt(0) || c.ack(0) != Some(0x41));
        assert_eq!(c.ack(1), Some(0x41));
        assert!(n.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn init_sipi_reach_the_ap() {
        let (c, _) = chip();
        c.lapic_write(0, 0x310, &(1u32 << 24).to_le_bytes());
        c.lapic_write(0, 0x300, &0x4500u32.to_le_bytes());
        assert_eq!(c.take_startup(1), Some(Startup::Init));
        c.lapic_write(0, 0x300, &0x4608u32.to_le_bytes());
        assert_eq!(c.take_startup(1), Some(Startup::Sipi(8)));
    }

    #[test]
    fn pic_interrupt_reaches_bsp_through_extint() {
        let (c, _) = chip();
        c.set_irq_line(4, true);
        assert!(c.has_interrupt(0));
        assert_eq!(c.ack(0), Some(0x08 + 4));
    }
}
