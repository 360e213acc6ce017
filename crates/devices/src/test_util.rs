//! Helpers the unit tests share: an interrupt line that records what was
//! done to it, a sink that records events, and a writer whose bytes the
//! test can read back.

use crate::events::{VmEvent, VmEventSink};
use crate::irq::IrqLine;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Records each level change.
#[derive(Default)]
pub struct RecordingIrq {
    pub levels: Mutex<Vec<bool>>,
}

impl RecordingIrq {
    /// How many rising edges the line has seen.
    pub fn rising_edges(&self) -> usize {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let mut prev = false;
        let mut n = 0;
        for &l in levels.iter() {
            if l && !prev {
                n += 1;
            }
            prev = l;
        }
        n
    }

    pub fn level(&self) -> bool {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        levels.last().copied().unwrap_or(false)
    }
}

impl IrqLine for RecordingIrq {
    fn set_level(&self, high: bool) {
        self.levels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(high);
    }
}

/// Records each event.
#[derive(Default)]
pub struct RecordingSink {
    pub events: Mutex<Vec<VmEvent>>,
}

impl RecordingSink {
    pub fn take(&self) -> Vec<VmEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl VmEventSink for RecordingSink {
    fn request(&self, event: VmEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

/// A writer that appends to a shared buffer.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
