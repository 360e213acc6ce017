//! PCI configuration mechanism #1 and the root bus: one bus device over
//! 0xcf8..0xd00 (offset 0: the 32-bit CONFIG_ADDRESS register; offsets
//! 4-7: CONFIG_DATA, any 1/2/4-byte access that stays inside it), a host
//! bridge at 00:00.0 and a slot table devices are added to.
//!
//! Only bus 0, function 0 of each slot exists; everything else reads as
//! all ones, which is how a guest learns a function is absent.
//!
//! Endpoint devices build their configuration space from [`config`]
//! (type-0 header, 64-bit memory BARs, capability list), keep their BARs on
//! the MMIO bus where the guest programs them with [`bar`], and raise
//! interrupts through [`msix`] (the machine has no legacy INTx routing).

pub mod bar;
pub mod config;
pub mod msix;

use crate::bus::{lock_device, BusDevice};
use std::sync::{Arc, Mutex};

/// Slots on bus 0.
pub const SLOTS: usize = 32;
/// Dword registers in a conventional configuration space.
pub const CONFIG_REGISTERS: usize = 64;

/// CONFIG_ADDRESS fields.
const ADDRESS_ENABLE: u32 = 0x8000_0000;
const DATA_OFFSET: u64 = 4;

/// A function on the PCI bus, as configuration cycles see it. `reg` is a
/// dword index (byte offset / 4); writes carry the byte `offset` inside
/// that dword and 1, 2 or 4 bytes with `offset + data.len() <= 4`.
pub trait PciDevice: Send {
    fn config_read(&mut self, reg: usize) -> u32;
    fn config_write(&mut self, reg: usize, offset: u8, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("no free slot on pci bus 0")]
    NoFreeSlot,
}

/// A host bridge with no BARs and no capabilities; only the low command
/// bits (I/O, memory, bus master) take writes.
pub struct PciHostBridge {
    config: [u32; 16],
}

pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
pub const HOST_BRIDGE_DEVICE: u16 = 0x0d57;
/// Base class 06 (bridge), subclass 00 (host), prog-if 00.
pub const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;

/// Which bits of each header dword a write may change.
fn host_bridge_write_mask(reg: usize) -> u32 {
    match reg {
        1 => 0x0000_0007,
        _ => 0,
    }
}

impl PciHostBridge {
    pub fn new() -> Self {
        let mut config = [0u32; 16];
        config[0] = u32::from(HOST_BRIDGE_DEVICE) << 16 | u32::from(HOST_BRIDGE_VENDOR);
        // Class code in bits 31:8, revision 0.
        config[2] = HOST_BRIDGE_CLASS << 8;
        // Header type 0 (single function) in bits 23:16: already zero.
        config[11] = u32::from(HOST_BRIDGE_DEVICE) << 16 | u32::from(HOST_BRIDGE_VENDOR);
        PciHostBridge { config }
    }
}

impl Default for PciHostBridge {
    fn default() -> Self {
        PciHostBridge::new()
    }
}

impl PciDevice for PciHostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.get(reg).copied().unwrap_or(0)
    }

    fn config_write(&mut self, reg: usize, offset: u8, data: &[u8]) {
        let Some(old) = self.config.get(reg).copied() else {
            return;
        };
        let mask = host_bridge_write_mask(reg);
        let mut value = old.to_le_bytes();
        let mask_bytes = mask.to_le_bytes();
        for (i, &b) in (usize::from(offset)..).zip(data) {
            if let (Some(v), Some(&m)) = (value.get_mut(i), mask_bytes.get(i)) {
                *v = (*v & !m) | (b & m);
            }
        }
        self.config[reg] = u32::from_le_bytes(value);
    }
}

/// The PCI root: CONFIG_ADDRESS, CONFIG_DATA and bus 0's slots.
pub struct PciRoot {
    address: u32,
    slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>>,
}

/// Where a configuration access goes: slot on bus 0 and dword register.
fn decode(address: u32) -> Option<(usize, usize)> {
    if address & ADDRESS_ENABLE == 0 {
        return None;
    }
    let bus = (address >> 16) & 0xff;
    let slot = (address >> 11) & 0x1f;
    let function = (address >> 8) & 0x7;
    let reg = (address >> 2) & 0x3f;
    (bus == 0 && function == 0).then_some((slot as usize, reg as usize))
}

impl PciRoot {
    /// A root bus holding only the host bridge, at slot 0.
    pub fn new() -> Self {
        let mut slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>> = vec![None; SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(PciHostBridge::new())));
        PciRoot { address: 0, slots }
    }

    /// Puts `device` in the lowest free slot and returns its number.
    pub fn add_device(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Result<u8, PciError> {
        let (slot, entry) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.is_none())
            .ok_or(PciError::NoFreeSlot)?;
        *entry = Some(device);
        // Fewer than 32 slots, so the index fits.
        Ok(slot as u8)
    }

    fn device(&self, slot: usize) -> Option<&Arc<Mutex<dyn PciDevice>>> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// Reads dword `reg` of bus 0 slot `slot` function 0; all ones when
    /// there is no such function.
    pub fn config_read(&self, slot: usize, reg: usize) -> u32 {
        match self.device(slot) {
            Some(dev) if reg < CONFIG_REGISTERS => lock_device(dev).config_read(reg),
            _ => 0xffff_ffff,
        }
    }

    /// Writes bytes at `offset` inside dword `reg` of slot `slot`; dropped
    /// when there is no such function or the bytes leave the dword.
    pub fn config_write(&self, slot: usize, reg: usize, offset: u8, data: &[u8]) {
        let fits = matches!(data.len(), 1 | 2 | 4) && usize::from(offset) + data.len() <= 4;
        if !fits || reg >= CONFIG_REGISTERS {
            return;
        }
        if let Some(dev) = self.device(slot) {
            lock_device(dev).config_write(reg, offset, data);
        }
    }

    fn read_data(&self, offset: u8, data: &mut [u8]) {
        let value = match decode(self.address) {
            Some((slot, reg)) => self.config_read(slot, reg),
            None => 0xffff_ffff,
        };
        let bytes = value.to_le_bytes();
        for (i, b) in (usize::from(offset)..).zip(data.iter_mut()) {
            *b = bytes.get(i).copied().unwrap_or(0xff);
        }
    }

    fn write_data(&self, offset: u8, data: &[u8]) {
        if let Some((slot, reg)) = decode(self.address) {
            self.config_write(slot, reg, offset, data);
        }
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        PciRoot::new()
    }
}

impl BusDevice for PciRoot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (DATA_OFFSET..=7, n) if offset - DATA_OFFSET + n as u64 <= 4 => {
                // In 0..4 by the guard.
                self.read_data((offset - DATA_OFFSET) as u8, data)
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            // Only a dword write at 0xcf8 is CONFIG_ADDRESS; byte writes
            // there (e.g. 0xcfb, 0xcf9) belong to other mechanisms we lack.
            (0, &[a, b, c, d]) => self.address = u32::from_le_bytes([a, b, c, d]) & !0x3,
            (DATA_OFFSET..=7, _) if offset - DATA_OFFSET + data.len() as u64 <= 4 => {
                self.write_data((offset - DATA_OFFSET) as u8, data)
            }
            _ => log::debug!("pci: ignored write at {offset:#x} {data:02x?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(slot: u32, function: u32, reg_byte: u32) -> u32 {
        ADDRESS_ENABLE | slot << 11 | function << 8 | reg_byte
    }

    fn set_address(root: &mut PciRoot, a: u32) {
        root.write(0, &a.to_le_bytes());
    }

    fn read32(root: &mut PciRoot, a: u32) -> u32 {
        set_address(root, a);
        let mut d = [0u8; 4];
        root.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_ids_and_class() {
        let mut root = PciRoot::new();
        assert_eq!(read32(&mut root, addr(0, 0, 0)), 0x0d57_8086);
        assert_eq!(read32(&mut root, addr(0, 0, 8)) >> 8, 0x06_00_00);
        assert_eq!(read32(&mut root, addr(0, 0, 0xc)) >> 16 & 0xff, 0);
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let mut root = PciRoot::new();
        assert_eq!(read32(&mut root, addr(3, 0, 0)), 0xffff_ffff);
        assert_eq!(read32(&mut root, addr(0, 1, 0)), 0xffff_ffff);
        assert_eq!(read32(&mut root, addr(0, 0, 0) | 1 << 16), 0xffff_ffff);
        // Without the enable bit nothing is addressed.
        assert_eq!(read32(&mut root, 0), 0xffff_ffff);
    }

    #[test]
    fn byte_and_word_reads_at_cfe() {
        let mut root = PciRoot::new();
        set_address(&mut root, addr(0, 0, 0));
        let mut w = [0u8; 2];
        root.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0d57);
        let mut b = [0u8; 1];
        root.read(6, &mut b);
        assert_eq!(b[0], 0x57);
        root.read(7, &mut b);
        assert_eq!(b[0], 0x0d);
        root.read(4, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x8086);
        // Class code byte at config offset 0x0b through 0xcff.
        set_address(&mut root, addr(0, 0, 8));
        root.read(7, &mut b);
        assert_eq!(b[0], 0x06);
    }

    #[test]
    fn address_register_reads_back() {
        let mut root = PciRoot::new();
        set_address(&mut root, 0x8000_0000);
        let mut d = [0u8; 4];
        root.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
        // A byte write at 0xcfb is not CONFIG_ADDRESS.
        root.write(3, &[0x01]);
        root.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
    }

    #[test]
    fn host_bridge_read_only_fields_stay() {
        let mut root = PciRoot::new();
        set_address(&mut root, addr(0, 0, 0));
        root.write(4, &0xdead_beef_u32.to_le_bytes());
        assert_eq!(read32(&mut root, addr(0, 0, 0)), 0x0d57_8086);
        set_address(&mut root, addr(0, 0, 0x10));
        root.write(4, &0xffff_ffff_u32.to_le_bytes());
        assert_eq!(read32(&mut root, addr(0, 0, 0x10)), 0, "no BAR");
        set_address(&mut root, addr(0, 0, 4));
        root.write(4, &0xffff_u16.to_le_bytes());
        assert_eq!(read32(&mut root, addr(0, 0, 4)), 0x7);
    }

    /// Remembers writes, answers reads with the register number.
    #[derive(Default)]
    struct Fake {
        writes: Vec<(usize, u8, Vec<u8>)>,
    }

    impl PciDevice for Fake {
        fn config_read(&mut self, reg: usize) -> u32 {
            reg as u32
        }
        fn config_write(&mut self, reg: usize, offset: u8, data: &[u8]) {
            self.writes.push((reg, offset, data.to_vec()));
        }
    }

    #[test]
    fn added_devices_get_slots_and_accesses() {
        let mut root = PciRoot::new();
        let fake = Arc::new(Mutex::new(Fake::default()));
        assert_eq!(root.add_device(fake.clone()), Ok(1));
        assert_eq!(read32(&mut root, addr(1, 0, 0x14)), 5);
        set_address(&mut root, addr(1, 0, 0x04));
        root.write(6, &[0xaa, 0xbb]);
        // Crossing the end of CONFIG_DATA is not delivered.
        root.write(7, &[0xcc, 0xdd]);
        assert_eq!(fake.lock().unwrap().writes, vec![(1, 2, vec![0xaa, 0xbb])]);
        for expected in 2..SLOTS {
            let slot = root.add_device(Arc::new(Mutex::new(Fake::default())));
            assert_eq!(slot, Ok(expected as u8));
        }
        assert_eq!(
            root.add_device(Arc::new(Mutex::new(Fake::default()))),
            Err(PciError::NoFreeSlot)
        );
    }
}
