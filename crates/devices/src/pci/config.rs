//! A type-0 PCI configuration header that endpoint devices build on: the
//! 256-byte register file with per-bit write masks, 64-bit memory BARs
//! (their size masks make the guest's all-ones sizing dance work), and the
//! capability list.
//!
//! The header only stores what the guest wrote; whoever owns a BAR's
//! mapping asks [`PciConfig::bar_mapping`] after each write where the BAR
//! should decode now and moves it on the bus.

/// Dword registers of the 256-byte conventional configuration space.
const REGISTERS: usize = 64;
/// Bytes of the configuration space.
const SPACE_BYTES: usize = REGISTERS * 4;
/// First byte after the standard type-0 header, where capabilities go.
const FIRST_CAPABILITY: usize = 0x40;
const COMMAND_REG: usize = 1;
const CAP_POINTER_OFFSET: usize = 0x34;
const BAR_FIRST_REG: usize = 4;
pub const BAR_COUNT: usize = 6;

/// Command register bits.
pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register bit: the capability list pointer is valid.
const STATUS_CAP_LIST: u32 = 1 << 4;
/// Memory BAR type bits: 64-bit, not prefetchable.
const BAR_MEM64: u32 = 0b100;

/// What the identity registers of a function say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass and programming interface, as 0xCCSSPP.
    pub class: u32,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciConfigError {
    #[error("bar {0} does not exist or is taken")]
    BarUnavailable(usize),
    #[error("bar size {0:#x} is not a power of two of at least 16 bytes")]
    BarSize(u64),
    #[error("bar address {0:#x} is not aligned to the bar size")]
    BarAlignment(u64),
    #[error("no room for a {0}-byte capability")]
    CapabilitySpace(usize),
}

#[derive(Debug, Clone, Copy)]
struct Bar {
    size: u64,
}

/// The configuration space of one function.
#[derive(Debug, Clone)]
pub struct PciConfig {
    regs: [u32; REGISTERS],
    masks: [u32; REGISTERS],
    /// BAR slots; a 64-bit BAR takes its index and the next one.
    bars: [Option<Bar>; BAR_COUNT],
    /// Offset of the last capability's "next" byte, to chain the next one.
    last_cap_next: Option<usize>,
    next_cap_offset: usize,
}

impl PciConfig {
    /// A header with these identities, no BARs and no capabilities. The
    /// command register takes the I/O, memory, bus master and INTx-disable
    /// bits; the interrupt line register is scratch space for the guest.
    pub fn new(ids: PciIds) -> Self {
        let mut regs = [0u32; REGISTERS];
        let mut masks = [0u32; REGISTERS];
        regs[0] = u32::from(ids.device) << 16 | u32::from(ids.vendor);
        regs[2] = (ids.class & 0x00ff_ffff) << 8 | u32::from(ids.revision);
        regs[11] = u32::from(ids.subsystem) << 16 | u32::from(ids.subsystem_vendor);
        masks[COMMAND_REG] =
            u32::from(COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE);
        // Interrupt line (byte 0x3c) is writable; the pin stays 0 (no INTx).
        masks[15] = 0xff;
        PciConfig {
            regs,
            masks,
            bars: [None; BAR_COUNT],
            last_cap_next: None,
            next_cap_offset: FIRST_CAPABILITY,
        }
    }

    /// Declares a 64-bit memory BAR at `index` (it also takes `index + 1`)
    /// of `size` bytes, currently at `addr`.
    pub fn add_mem_bar64(
        &mut self,
        index: usize,
        addr: u64,
        size: u64,
    ) -> Result<(), PciConfigError> {
        if index + 1 >= BAR_COUNT || self.bars[index].is_some() || self.bars[index + 1].is_some() {
            return Err(PciConfigError::BarUnavailable(index));
        }
        if !size.is_power_of_two() || size < 16 {
            return Err(PciConfigError::BarSize(size));
        }
        if addr & (size - 1) != 0 {
            return Err(PciConfigError::BarAlignment(addr));
        }
        let mask = !(size - 1);
        let lo = BAR_FIRST_REG + index;
        self.regs[lo] = (addr as u32 & 0xffff_fff0) | BAR_MEM64;
        self.regs[lo + 1] = (addr >> 32) as u32;
        self.masks[lo] = mask as u32 & 0xffff_fff0;
        self.masks[lo + 1] = (mask >> 32) as u32;
        self.bars[index] = Some(Bar { size });
        // The upper half is not a BAR of its own; a zero-size marker keeps
        // it from being taken.
        self.bars[index + 1] = Some(Bar { size: 0 });
        Ok(())
    }

    /// Appends a capability with `id` and `body` (the bytes after the id
    /// and next-pointer bytes) to the list; returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, PciConfigError> {
        // Capabilities are dword aligned.
        let len = (2 + body.len()).next_multiple_of(4);
        let offset = self.next_cap_offset;
        if offset + len > SPACE_BYTES {
            return Err(PciConfigError::CapabilitySpace(len));
        }
        self.set_byte(offset, id);
        self.set_byte(offset + 1, 0);
        for (i, &b) in body.iter().enumerate() {
            self.set_byte(offset + 2 + i, b);
        }
        match self.last_cap_next {
            Some(next) => self.set_byte(next, offset as u8),
            None => {
                self.set_byte(CAP_POINTER_OFFSET, offset as u8);
                self.regs[COMMAND_REG] |= STATUS_CAP_LIST << 16;
            }
        }
        self.last_cap_next = Some(offset + 1);
        self.next_cap_offset = offset + len;
        Ok(offset)
    }

    /// Lets the guest write the bits of `mask` in the `mask.len()` bytes at
    /// `offset` (a capability's control registers).
    pub fn set_write_mask(&mut self, offset: usize, mask: &[u8]) {
        for (i, &m) in mask.iter().enumerate() {
            let at = offset + i;
            if let Some(reg) = self.masks.get_mut(at / 4) {
                let shift = (at % 4) * 8;
                *reg = (*reg & !(0xff << shift)) | u32::from(m) << shift;
            }
        }
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        if let Some(reg) = self.regs.get_mut(offset / 4) {
            let shift = (offset % 4) * 8;
            *reg = (*reg & !(0xff << shift)) | u32::from(value) << shift;
        }
    }

    /// The byte at `offset` (0 past the end).
    pub fn byte(&self, offset: usize) -> u8 {
        self.regs
            .get(offset / 4)
            .map_or(0, |r| (r >> ((offset % 4) * 8)) as u8)
    }

    /// The little-endian word at `offset`.
    pub fn word(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.byte(offset), self.byte(offset + 1)])
    }

    /// Dword register `reg`; 0 past the end.
    pub fn read(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(0)
    }

    /// Writes `data` at byte `offset` of dword `reg`, only the bits the
    /// write mask allows. Bytes past the dword are dropped.
    pub fn write(&mut self, reg: usize, offset: u8, data: &[u8]) {
        let (Some(old), Some(&mask)) = (self.regs.get(reg).copied(), self.masks.get(reg)) else {
            return;
        };
        let mut value = old.to_le_bytes();
        let mask_bytes = mask.to_le_bytes();
        for (i, &b) in (usize::from(offset)..).zip(data) {
            if let (Some(v), Some(&m)) = (value.get_mut(i), mask_bytes.get(i)) {
                *v = (*v & !m) | (b & m);
            }
        }
        self.regs[reg] = u32::from_le_bytes(value);
    }

    pub fn command(&self) -> u16 {
        self.regs[COMMAND_REG] as u16
    }

    /// Where memory BAR `index` decodes now: `None` when memory decoding
    /// is off or there is no such BAR. Also `None` while the guest has the
    /// BAR at an address that would wrap (mid-sizing).
    pub fn bar_mapping(&self, index: usize) -> Option<(u64, u64)> {
        let size = self.bars.get(index)?.as_ref()?.size;
        if size == 0 || self.command() & COMMAND_MEMORY == 0 {
            return None;
        }
        let addr = self.bar_address(index)?;
        addr.checked_add(size)?;
        Some((addr, size))
    }

    /// The address programmed into memory BAR `index`.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        self.bars.get(index)?.as_ref()?;
        let lo = self.regs.get(BAR_FIRST_REG + index)?;
        let hi = self.regs.get(BAR_FIRST_REG + index + 1)?;
        Some(u64::from(*hi) << 32 | u64::from(lo & 0xffff_fff0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            class: 0x01_00_00,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        }
    }

    #[test]
    fn identity_registers() {
        let c = PciConfig::new(ids());
        assert_eq!(c.read(0), 0x1042_1af4);
        assert_eq!(c.read(2), 0x0100_0001);
        assert_eq!(c.read(11), 0x0040_1af4);
        assert_eq!(c.read(64), 0);
    }

    #[test]
    fn bar_sizing_and_moving() {
        let mut c = PciConfig::new(ids());
        c.add_mem_bar64(0, 0xc000_0000, 0x8000).unwrap();
        assert_eq!(c.bar_mapping(0), None, "memory decode off");
        c.write(1, 0, &[COMMAND_MEMORY as u8]);
        assert_eq!(c.bar_mapping(0), Some((0xc000_0000, 0x8000)));
        // Sizing: all ones reads back the size mask and the type bits.
        c.write(4, 0, &[0xff; 4]);
        c.write(5, 0, &[0xff; 4]);
        assert_eq!(c.read(4), 0xffff_8004);
        assert_eq!(c.read(5), 0xffff_ffff);
        assert_eq!(c.bar_mapping(0), None, "would wrap");
        c.write(4, 0, &0xd000_0000u32.to_le_bytes());
        c.write(5, 0, &[0; 4]);
        assert_eq!(c.bar_mapping(0), Some((0xd000_0000, 0x8000)));
        // The upper half cannot be taken by another BAR.
        assert_eq!(
            c.add_mem_bar64(1, 0, 0x1000),
            Err(PciConfigError::BarUnavailable(1))
        );
        assert_eq!(
            c.add_mem_bar64(5, 0, 0x1000),
            Err(PciConfigError::BarUnavailable(5))
        );
        assert_eq!(
            c.add_mem_bar64(2, 0x10, 0x1000),
            Err(PciConfigError::BarAlignment(0x10))
        );
        assert_eq!(
            c.add_mem_bar64(2, 0, 0x1001),
            Err(PciConfigError::BarSize(0x1001))
        );
    }

    #[test]
    fn read_only_fields_resist_writes() {
        let mut c = PciConfig::new(ids());
        c.write(0, 0, &[0; 4]);
        c.write(2, 0, &[0; 4]);
        c.write(1, 0, &[0xff; 4]);
        assert_eq!(c.read(0), 0x1042_1af4);
        assert_eq!(c.read(2), 0x0100_0001);
        assert_eq!(c.command(), 0x0407);
        // Writes past the dword are dropped, not wrapped.
        c.write(15, 3, &[1, 2, 3, 4]);
        assert_eq!(c.read(15), 0);
        c.write(99, 0, &[1]);
    }

    #[test]
    fn capability_chain() {
        let mut c = PciConfig::new(ids());
        let a = c
            .add_capability(0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .unwrap();
        let b = c.add_capability(0x09, &[0xaa; 14]).unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x4c);
        assert_eq!(c.byte(0x34), 0x40);
        assert_eq!(c.byte(0x41), 0x4c);
        assert_eq!(c.byte(0x4d), 0);
        assert_eq!(c.read(1) >> 16 & 0x10, 0x10, "status lists capabilities");
        assert_eq!(c.word(0x42), 0x0201);
        // Capability bytes are read-only unless a mask opens them.
        c.write(0x10, 2, &[0xff, 0xff]);
        assert_eq!(c.word(0x42), 0x0201);
        c.set_write_mask(0x42, &[0x00, 0xc0]);
        c.write(0x10, 2, &[0xff, 0xff]);
        assert_eq!(c.word(0x42), 0xc201);
        // The space runs out eventually instead of overflowing.
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = c.add_capability(0x09, &[0; 30]) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(PciConfigError::CapabilitySpace(32)));
    }
}
