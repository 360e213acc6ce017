//! Events a device raises toward the VMM: guest-requested exit, power off,
//! reset or panic. Devices hold an `Arc<dyn VmEventSink>`; the VMM decides
//! what each event does to the VM's lifecycle.

use std::sync::mpsc::Sender;

/// Something the guest asked the VM as a whole to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmEvent {
    /// The guest wrote this value to the debug-exit port; the VMM stops
    /// the VM with it as exit status.
    Exit(u8),
    /// ACPI S5 or an equivalent power-off request.
    PowerOff,
    /// A system reset (i8042 reset line, ACPI reset register).
    Reset,
    /// The guest reported a panic (e.g. pvpanic).
    Panic,
}

/// Where devices send [`VmEvent`]s. Called on the vCPU thread that made the
/// access, so implementations must not block for long.
pub trait VmEventSink: Send + Sync {
    fn request(&self, event: VmEvent);
}

/// A channel is a ready-made sink: the receiving side (the VMM's event loop)
/// sees events in the order they were requested. A closed channel drops the
/// event, since nobody is left to act on it.
impl VmEventSink for Sender<VmEvent> {
    fn request(&self, event: VmEvent) {
        if self.send(event).is_err() {
            log::debug!("vm event {event:?} dropped: receiver gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn channel_sink_delivers_in_order() {
        let (tx, rx) = channel();
        tx.request(VmEvent::Reset);
        tx.request(VmEvent::Exit(3));
        assert_eq!(rx.try_recv(), Ok(VmEvent::Reset));
        assert_eq!(rx.try_recv(), Ok(VmEvent::Exit(3)));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn closed_channel_does_not_panic() {
        let (tx, rx) = channel::<VmEvent>();
        drop(rx);
        tx.request(VmEvent::PowerOff);
    }
}
