//! MSI-X for PCI endpoints: the vector table and pending-bit array a BAR
//! exposes, the enable and function-mask bits of the capability's message
//! control word, and delivery through the VM ([`hypervisor::Vm::signal_msi`])
//! of vectors that are neither masked nor disabled. A vector raised while
//! masked is remembered in the PBA and sent when it is unmasked.

use hypervisor::Vm;
use std::sync::Arc;

/// Bytes per table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: u64 = 16;
/// The capability ID.
pub const CAPABILITY_ID: u8 = 0x11;
/// Message control bits.
pub const CONTROL_ENABLE: u16 = 1 << 15;
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control bit 0: the entry is masked.
const VECTOR_MASKED: u32 = 1;

/// Where message-signalled interrupts go.
pub trait MsiSink: Send + Sync {
    fn signal(&self, address: u64, data: u32);
}

/// Delivers through the VM's engine.
pub struct VmMsi(pub Arc<dyn Vm>);

impl MsiSink for VmMsi {
    fn signal(&self, address: u64, data: u32) {
        if let Err(e) = self.0.signal_msi(address, data) {
            log::warn!("msi to {address:#x} data {data:#x} failed: {e}");
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Entry {
    fn masked() -> Self {
        Entry {
            control: VECTOR_MASKED,
            ..Default::default()
        }
    }
}

/// The MSI-X state of one function.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    sink: Arc<dyn MsiSink>,
}

impl Msix {
    /// `vectors` entries (1..=2048), all masked, MSI-X disabled.
    pub fn new(vectors: u16, sink: Arc<dyn MsiSink>) -> Self {
        let n = usize::from(vectors.clamp(1, 2048));
        Msix {
            entries: vec![Entry::masked(); n],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
            sink,
        }
    }

    pub fn vectors(&self) -> u16 {
        // At most 2048 by construction.
        self.entries.len() as u16
    }

    /// Bytes the table takes in its BAR.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes the pending-bit array takes (whole qwords).
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// The message control word for the capability: table size - 1 plus
    /// the enable and mask bits.
    pub fn control(&self) -> u16 {
        let mut c = self.vectors() - 1;
        if self.enabled {
            c |= CONTROL_ENABLE;
        }
        if self.function_masked {
            c |= CONTROL_FUNCTION_MASK;
        }
        c
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Applies a guest write of the message control word.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.flush_pending();
    }

    /// Raises `vector`: sent now, or left pending while masked. Vectors
    /// past the table are dropped.
    pub fn trigger(&mut self, vector: u16) {
        let v = usize::from(vector);
        let Some(entry) = self.entries.get(v).copied() else {
            return;
        };
        if !self.enabled {
            return;
        }
        if self.function_masked || entry.control & VECTOR_MASKED != 0 {
            self.set_pending(v, true);
            return;
        }
        self.send(entry);
    }

    fn send(&self, e: Entry) {
        self.sink
            .signal(u64::from(e.addr_hi) << 32 | u64::from(e.addr_lo), e.data);
    }

    fn set_pending(&mut self, v: usize, on: bool) {
        if let Some(word) = self.pending.get_mut(v / 64) {
            let bit = 1u64 << (v % 64);
            if on {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    fn is_pending(&self, v: usize) -> bool {
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    /// Sends the pending vectors that are no longer masked.
    fn flush_pending(&mut self) {
        if !self.enabled || self.function_masked {
            return;
        }
        for v in 0..self.entries.len() {
            let e = self.entries[v];
            if self.is_pending(v) && e.control & VECTOR_MASKED == 0 {
                self.set_pending(v, false);
                self.send(e);
            }
        }
    }

    /// A read of the table at `offset` (dword or qword accesses; anything
    /// else reads as zero).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match data.len() {
            4 => {
                let v = self.table_dword(offset);
                data.copy_from_slice(&v.to_le_bytes());
            }
            8 => {
                let lo = self.table_dword(offset);
                let hi = offset.checked_add(4).map_or(0, |o| self.table_dword(o));
                data.copy_from_slice(&(u64::from(hi) << 32 | u64::from(lo)).to_le_bytes());
            }
            _ => {}
        }
    }

    fn table_dword(&self, offset: u64) -> u32 {
        let Some(e) = usize::try_from(offset / ENTRY_SIZE)
            .ok()
            .and_then(|i| self.entries.get(i))
        else {
            return 0;
        };
        match offset % ENTRY_SIZE {
            0 => e.addr_lo,
            4 => e.addr_hi,
            8 => e.data,
            12 => e.control,
            _ => 0,
        }
    }

    /// A write to the table at `offset` (dword or qword, aligned).
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        match *data {
            [a, b, c, d] => self.table_write_dword(offset, u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => {
                self.table_write_dword(offset, u32::from_le_bytes([a, b, c, d]));
                if let Some(hi) = offset.checked_add(4) {
                    self.table_write_dword(hi, u32::from_le_bytes([e, f, g, h]));
                }
            }
            _ => {}
        }
    }

    fn table_write_dword(&mut self, offset: u64, value: u32) {
        let Some(index) = usize::try_from(offset / ENTRY_SIZE)
            .ok()
            .filter(|&i| i < self.entries.len())
        else {
            return;
        };
        let e = &mut self.entries[index];
        match offset % ENTRY_SIZE {
            0 => e.addr_lo = value & !0x3,
            4 => e.addr_hi = value,
            8 => e.data = value,
            12 => e.control = value & VECTOR_MASKED,
            _ => return,
        }
        self.flush_pending();
    }

    /// A read of the pending-bit array (read-only to the guest).
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|at| Some((usize::try_from(at / 8).ok()?, at % 8)))
                .and_then(|(w, byte)| Some(self.pending.get(w)? >> (byte * 8)))
                .map_or(0, |w| w as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, u32)>>);

    impl MsiSink for Recorder {
        fn signal(&self, address: u64, data: u32) {
            self.0.lock().unwrap().push((address, data));
        }
    }

    fn program(m: &mut Msix, v: u64, addr: u64, data: u32) {
        m.table_write(v * 16, &(addr as u32).to_le_bytes());
        m.table_write(v * 16 + 4, &((addr >> 32) as u32).to_le_bytes());
        m.table_write(v * 16 + 8, &data.to_le_bytes());
    }

    #[test]
    fn masked_vectors_pend_and_fire_on_unmask() {
        let rec = Arc::new(Recorder::default());
        let mut m = Msix::new(3, rec.clone());
        assert_eq!(m.control(), 2);
        program(&mut m, 1, 0xfee0_0000, 0x41);
        m.trigger(1);
        assert!(rec.0.lock().unwrap().is_empty(), "disabled");
        m.set_control(CONTROL_ENABLE);
        m.trigger(1);
        assert!(rec.0.lock().unwrap().is_empty(), "entry masked");
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        m.table_write(16 + 12, &0u32.to_le_bytes());
        assert_eq!(*rec.0.lock().unwrap(), vec![(0xfee0_0000, 0x41)]);
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        m.trigger(1);
        assert_eq!(rec.0.lock().unwrap().len(), 1);
        m.set_control(CONTROL_ENABLE);
        assert_eq!(rec.0.lock().unwrap().len(), 2);
        m.trigger(1);
        assert_eq!(rec.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn out_of_range_accesses_are_harmless() {
        let rec = Arc::new(Recorder::default());
        let mut m = Msix::new(2, rec.clone());
        m.set_control(CONTROL_ENABLE);
        m.trigger(7);
        m.trigger(u16::MAX);
        m.table_write(1 << 40, &[1, 2, 3, 4]);
        m.table_write(3, &[1, 2, 3]);
        let mut d = [0xffu8; 4];
        m.table_read(u64::MAX - 2, &mut d);
        assert_eq!(d, [0; 4]);
        m.pba_read(u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
        assert!(rec.0.lock().unwrap().is_empty());
        // Qword access to an entry reads back address halves.
        program(&mut m, 0, 0x1_fee0_1000, 5);
        let mut q = [0u8; 8];
        m.table_read(0, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1_fee0_1000);
        m.table_read(12, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1, "masked at reset");
        assert_eq!(m.table_size(), 32);
        assert_eq!(m.pba_size(), 8);
    }
}
