//! The debug-exit port: a write of `v` asks the VMM to stop the VM with
//! exit status `v` (the port of QEMU's isa-debug-exit, but the status is
//! `v` itself). Wider writes use their low byte. Reads return all ones.

use crate::bus::BusDevice;
use crate::events::{VmEvent, VmEventSink};
use std::sync::Arc;

pub struct DebugExit {
    events: Arc<dyn VmEventSink>,
}

impl DebugExit {
    pub fn new(events: Arc<dyn VmEventSink>) -> Self {
        DebugExit { events }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.events.request(VmEvent::Exit(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RecordingSink;

    #[test]
    fn write_requests_exit_with_value() {
        let sink = Arc::new(RecordingSink::default());
        let mut dev = DebugExit::new(sink.clone());
        dev.write(0, &[0x2a]);
        dev.write(0, &[7, 0, 0, 0]);
        assert_eq!(sink.take(), vec![VmEvent::Exit(0x2a), VmEvent::Exit(7)]);
        let mut d = [0u8; 1];
        dev.read(0, &mut d);
        assert_eq!(d, [0xff]);
    }
}
