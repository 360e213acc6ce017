//! Paravirtual I/O for vessel guests: the virtio 1.x "modern" PCI
//! transport ([`pci`]) and the devices behind it, one folder each with the
//! same files (`device.rs` features/config/activate/reset, `handler.rs`
//! queue processing, `persist.rs` snapshot state, `metrics.rs` counters):
//! [`block`] (raw image file), [`net`] (TAP), [`rng`] (host getrandom),
//! [`balloon`], [`vsock`] (host Unix sockets, as Firecracker has them) and
//! [`fs`] (a host directory over virtio-fs).
//!
//! Descriptor chains are validated once, in [`queue`], before a device
//! looks at them: a structurally broken chain marks the device
//! NEEDS_RESET; a well-formed chain with a bad request gets an error
//! status. Guest memory is reached only through `vm-memory`'s checked
//! accessors.

pub mod balloon;
pub mod block;
pub mod device;
pub mod fs;
pub mod net;
pub mod pci;
pub mod queue;
pub mod rng;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_driver;
pub mod vsock;

pub use device::{ActivateError, Interrupt, VirtioDevice};
pub use pci::VirtioPciDevice;

/// Device IDs (virtio 1.2 section 5).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const BALLOON: u32 = 5;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
    pub const FS: u32 = 26;
}

/// Feature bits every transport/device shares (virtio 1.2 section 6).
pub mod features {
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// Device status bits (virtio 1.2 section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}
