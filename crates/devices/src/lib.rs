//! The device side of the machine model every engine shares: the port and
//! MMIO buses that route guest accesses to devices ([`bus`]), the events a
//! device raises toward the VMM ([`events`]), the interrupt line devices
//! drive ([`irq`]), and the emulated PC devices: a 16550A UART, a minimal
//! i8042, the CMOS RTC, PCI configuration mechanism #1 with a host bridge,
//! the ACPI fixed hardware, a debug-exit port and a port sink.

pub mod acpi_pm;
pub mod bus;
pub mod debug_exit;
pub mod events;
pub mod i8042;
pub mod irq;
pub mod pci;
pub mod port_sink;
pub mod rtc;
pub mod serial;

#[cfg(test)]
mod machine_tests;
#[cfg(test)]
pub(crate) mod test_util;

pub use acpi_pm::{AcpiPmControl, AcpiPmEvent, AcpiPmTimer, AcpiReset};
pub use bus::{Bus, BusDevice, BusError, IoBus, SharedDevice};
pub use debug_exit::DebugExit;
pub use events::{VmEvent, VmEventSink};
pub use i8042::I8042;
pub use irq::IrqLine;
pub use pci::{PciDevice, PciError, PciHostBridge, PciRoot};
pub use port_sink::PortSink;
pub use rtc::Rtc;
pub use serial::{Serial, SerialError};
pub mod irqchip;
