//! Emulated storage controllers for guests without virtio drivers: an
//! NVMe controller ([`nvme`], Linux `nvme`, in-box on Windows) and a PIIX3
//! IDE controller ([`ide`], Linux `ata_piix`). Each is a
//! PCI function served inline on the vCPU thread that touches its
//! registers, over [`virtio::block::Image`] (the image file, O_DIRECT,
//! read-only mode and locking virtio-blk uses). Everything the guest
//! hands the device (queue addresses, PRP entries, command fields) is
//! checked before use: a bad command completes with an error status, a
//! bad queue stops the controller (CSTS.CFS), nothing panics.

pub mod ide;
pub mod nvme;
