//! Builds the machine's devices and maps them on the port and MMIO buses at
//! the addresses `arch::layout` fixes, so the ACPI tables describe exactly
//! what is there.

use crate::console::ConsoleInput;
use crate::control::VmControl;
use arch::layout::ports;
use devices::{
    AcpiPmControl, AcpiPmEvent, AcpiPmTimer, AcpiReset, BusError, DebugExit, IoBus, IrqLine,
    PciRoot, PortSink, Rtc, Serial, SharedDevice, I8042,
};
use hypervisor::Vm;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot map {name} on the {bus} bus")]
    Map {
        name: &'static str,
        bus: &'static str,
        source: BusError,
    },
}

/// An interrupt line wired to a GSI of the VM's interrupt controllers.
struct GsiLine {
    vm: Arc<dyn Vm>,
    gsi: u32,
}

impl IrqLine for GsiLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            log::warn!("cannot set GSI {}: {e}", self.gsi);
        }
    }
}

/// The devices of one VM.
pub struct DeviceManager {
    pub io: Arc<IoBus>,
    pub serial: Arc<Mutex<Serial>>,
    /// The PCI host bridge and its config-space ports; PCI functions are
    /// added to it before the guest runs.
    pub pci: Arc<Mutex<PciRoot>>,
    /// The keyboard controller, for Ctrl+Alt+Del from the host.
    pub i8042: Arc<Mutex<I8042>>,
}

/// Console input into the UART.
struct SerialInput(Arc<Mutex<Serial>>);

impl ConsoleInput for SerialInput {
    fn enqueue(&self, bytes: &[u8]) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .enqueue_input(bytes)
    }
}

impl DeviceManager {
    pub fn new(
        vm: Arc<dyn Vm>,
        control: Arc<VmControl>,
        memory_bytes: u64,
        output: Box<dyn std::io::Write + Send>,
    ) -> Result<Self, DeviceError> {
        let io = IoBus::default();
        let irq = |gsi| -> Arc<dyn IrqLine> {
            Arc::new(GsiLine {
                vm: vm.clone(),
                gsi,
            })
        };

        let serial = Arc::new(Mutex::new(Serial::new(irq(ports::COM1_IRQ), output)));
        let pci = Arc::new(Mutex::new(PciRoot::new()));
        let i8042 = Arc::new(Mutex::new(
            I8042::new(control.clone()).with_irqs(Some(irq(ports::I8042_KBD_IRQ)), None),
        ));
        let pio: Vec<(&'static str, u16, u16, SharedDevice)> = vec![
            ("serial", ports::COM1, 8, serial.clone()),
            ("i8042", ports::I8042_DATA, 5, i8042.clone()),
            (
                "rtc",
                ports::RTC,
                2,
                Arc::new(Mutex::new(Rtc::new(memory_bytes))),
            ),
            ("post", ports::POST, 1, Arc::new(Mutex::new(PortSink))),
            (
                "debug-exit",
                ports::DEBUG_EXIT,
                4,
                Arc::new(Mutex::new(DebugExit::new(control.clone()))),
            ),
            ("pci", ports::PCI_CONFIG_ADDRESS, 8, pci.clone()),
            (
                "acpi-pm1a-evt",
                ports::ACPI_PM1A_EVT,
                4,
                Arc::new(Mutex::new(AcpiPmEvent::new())),
            ),
            (
                "acpi-pm1a-cnt",
                ports::ACPI_PM1A_CNT,
                2,
                Arc::new(Mutex::new(AcpiPmControl::new(control.clone()))),
            ),
            (
                "acpi-pm-tmr",
                ports::ACPI_PM_TMR,
                4,
                Arc::new(Mutex::new(AcpiPmTimer::new())),
            ),
            (
                "acpi-reset",
                ports::ACPI_RESET,
                1,
                Arc::new(Mutex::new(AcpiReset::new(control.clone()))),
            ),
        ];
        for (name, base, len, dev) in pio {
            io.pio
                .insert(u64::from(base), u64::from(len), dev)
                .map_err(|source| DeviceError::Map {
                    name,
                    bus: "port",
                    source,
                })?;
        }
        Ok(DeviceManager {
            io: Arc::new(io),
            serial,
            pci,
            i8042,
        })
    }

    /// The UART's receive side, for the console.
    pub fn console_input(&self) -> Arc<dyn ConsoleInput> {
        Arc::new(SerialInput(self.serial.clone()))
    }
}
