//! What the VMM process reports in its metrics (Firecracker's groups): API
//! requests and failures by path (`api_server`), and the running VM's
//! block and net devices by id (`block`, `net`), each counter as its change
//! since the last flush.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vmm::live::{LiveHandles, LiveVm};
use vmm::metrics::MetricsSource;

/// The API server's request counters.
pub struct ApiServerMetrics(pub Arc<api::ApiMetrics>);

impl MetricsSource for ApiServerMetrics {
    fn group(&self) -> (&'static str, serde_json::Value) {
        ("api_server", self.0.to_json())
    }
}

/// Turns running totals into changes since the previous report, keyed by
/// device id and counter name.
#[derive(Default)]
struct Deltas(Mutex<HashMap<(String, &'static str), u64>>);

impl Deltas {
    fn take(&self, id: &str, name: &'static str, total: &AtomicU64) -> u64 {
        let now = total.load(Ordering::Relaxed);
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let before = last.insert((id.to_string(), name), now).unwrap_or(0);
        now.saturating_sub(before)
    }
}

/// A group read from the running VM's devices.
#[derive(Debug, Clone, Copy)]
pub enum VmGroup {
    /// Block devices by drive id.
    Block,
    /// Network devices by interface id.
    Net,
    /// vCPU exits by reason: the port and MMIO accesses the bus served.
    Vcpu,
    /// The vsock device's traffic.
    Vsock,
}

/// One metrics group of the running VM (empty while none runs).
pub struct VmMetrics {
    group: VmGroup,
    live: Arc<LiveVm>,
    deltas: Deltas,
}

impl VmMetrics {
    pub fn new(group: VmGroup, live: Arc<LiveVm>) -> Self {
        VmMetrics {
            group,
            live,
            deltas: Deltas::default(),
        }
    }

    fn block(&self, h: &LiveHandles) -> Value {
        let mut group = serde_json::Map::new();
        for (id, drive) in &h.virtio.drives {
            let id = id.clone().unwrap_or_default();
            let m = drive.metrics();
            let d = |name, c: &AtomicU64| self.deltas.take(&id, name, c);
            let v = json!({
                "read_count": d("read_count", &m.reads),
                "write_count": d("write_count", &m.writes),
                "read_bytes": d("read_bytes", &m.read_bytes),
                "write_bytes": d("write_bytes", &m.write_bytes),
                "flush_count": d("flush_count", &m.flushes),
                "io_errors": d("io_errors", &m.errors),
                "rate_limiter_throttled_events":
                    d("rate_limiter_throttled_events", &m.rate_limiter_throttled),
            });
            group.insert(id, v);
        }
        Value::Object(group)
    }

    fn net(&self, h: &LiveHandles) -> Value {
        let mut group = serde_json::Map::new();
        for (id, net) in &h.virtio.nets {
            let id = id.clone().unwrap_or_default();
            let m = net.metrics();
            let d = |name, c: &AtomicU64| self.deltas.take(&id, name, c);
            let v = json!({
                "tx_packets_count": d("tx_packets_count", &m.tx_packets),
                "tx_bytes_count": d("tx_bytes_count", &m.tx_bytes),
                "tx_dropped": d("tx_dropped", &m.tx_dropped),
                "rx_packets_count": d("rx_packets_count", &m.rx_packets),
                "rx_bytes_count": d("rx_bytes_count", &m.rx_bytes),
                "rx_dropped": d("rx_dropped", &m.rx_dropped),
                "rx_rate_limiter_throttled":
                    d("rx_rate_limiter_throttled", &m.rx_rate_limiter_throttled),
                "tx_rate_limiter_throttled":
                    d("tx_rate_limiter_throttled", &m.tx_rate_limiter_throttled),
            });
            group.insert(id, v);
        }
        Value::Object(group)
    }

    fn vcpu(&self, h: &LiveHandles) -> Value {
        let c = &h.io.counts;
        let d = |name, v: &AtomicU64| self.deltas.take("vcpu", name, v);
        json!({
            "exit_io_in": d("exit_io_in", &c.pio_in),
            "exit_io_out": d("exit_io_out", &c.pio_out),
            "exit_mmio_read": d("exit_mmio_read", &c.mmio_read),
            "exit_mmio_write": d("exit_mmio_write", &c.mmio_write),
        })
    }

    fn vsock(&self, h: &LiveHandles) -> Value {
        let Some(m) = &h.virtio.vsock else {
            return json!({});
        };
        let d = |name, v: &AtomicU64| self.deltas.take("vsock", name, v);
        json!({
            "rx_packets_count": d("rx_packets_count", &m.rx_packets),
            "rx_bytes_count": d("rx_bytes_count", &m.rx_bytes),
            "tx_packets_count": d("tx_packets_count", &m.tx_packets),
            "tx_bytes_count": d("tx_bytes_count", &m.tx_bytes),
            "tx_bad_packets": d("tx_bad_packets", &m.tx_bad_packets),
            "conns_added": d("conns_added", &m.conns_added),
            "conns_reset": d("conns_reset", &m.conns_reset),
            "conns_refused": d("conns_refused", &m.conns_refused),
            "host_rejected": d("host_rejected", &m.host_rejected),
        })
    }
}

impl MetricsSource for VmMetrics {
    fn group(&self) -> (&'static str, Value) {
        let name = match self.group {
            VmGroup::Block => "block",
            VmGroup::Net => "net",
            VmGroup::Vcpu => "vcpu",
            VmGroup::Vsock => "vsock",
        };
        let Ok(h) = self.live.get() else {
            return (name, json!({}));
        };
        let value = match self.group {
            VmGroup::Block => self.block(&h),
            VmGroup::Net => self.net(&h),
            VmGroup::Vcpu => self.vcpu(&h),
            VmGroup::Vsock => self.vsock(&h),
        };
        (name, value)
    }
}

/// The serial console: bytes the guest wrote, and those that could not be
/// passed on (a `serial_out_path` pipe nobody read).
pub struct UartMetrics {
    instance: Arc<vmm::instance::Instance>,
    deltas: Deltas,
}

impl UartMetrics {
    pub fn new(instance: Arc<vmm::instance::Instance>) -> Self {
        UartMetrics {
            instance,
            deltas: Deltas::default(),
        }
    }
}

impl MetricsSource for UartMetrics {
    fn group(&self) -> (&'static str, serde_json::Value) {
        let Some(out) = self.instance.console_output() else {
            return ("uart", serde_json::json!({}));
        };
        let d = |name, v: &AtomicU64| self.deltas.take("uart", name, v);
        (
            "uart",
            serde_json::json!({
                "write_count": d("write_count", &out.written),
                "missed_write_count": d("missed_write_count", &out.dropped),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_report_the_change_since_the_last_take() {
        let d = Deltas::default();
        let c = AtomicU64::new(5);
        assert_eq!(d.take("a", "n", &c), 5);
        assert_eq!(d.take("a", "n", &c), 0);
        c.store(9, Ordering::Relaxed);
        assert_eq!(d.take("a", "n", &c), 4);
        assert_eq!(d.take("b", "n", &c), 9, "per device");
    }
}
