//! Firecracker's API requests carried out on a vessel [`Instance`]: the
//! wire types of the `api` crate turned into the VMM's configuration, and
//! the VMM's answers turned back into wire types. The instance decides what
//! is allowed in which state; this adapter keeps the bodies as the client
//! sent them, for `GET /vm/config`.

use api::model::{
    ActionKind, Balloon, BalloonStats, BootSource, CacheType as WireCache, Drive,
    FirecrackerVersion, FullVmConfiguration, InstanceInfo, InstanceState as WireState, IoEngine,
    Logger, MachineConfiguration, Metrics, NetworkInterface, PartialDrive, PartialNetworkInterface,
    RateLimiter, Serial, TokenBucket, VmState, Vsock,
};
use api::{Backend, Fault, Reply, Request};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use vmm::instance::{self, error_chain, Instance, InstanceError, InstanceState};
use vmm::live::LiveHandles;
use vmm::logger::{LoggerHandle, LoggerUpdate};
use vmm::metrics::MetricsSink;
use vmm::virtio_devices::{
    BalloonConfig, BalloonHandle, BlockConfig, CacheType, IoEngine as BlockIoEngine, NetConfig,
    RateLimiterConfig, RateLimiterUpdate, TokenBucketConfig, VsockConfig,
};

/// Firecracker's rate limiter body as the devices' configuration.
fn limiter(wire: &RateLimiter) -> RateLimiterConfig {
    let bucket = |b: &TokenBucket| TokenBucketConfig {
        size: b.size,
        one_time_burst: b.one_time_burst.unwrap_or(0),
        refill_time_ms: b.refill_time,
    };
    RateLimiterConfig {
        bandwidth: wire.bandwidth.as_ref().map(bucket),
        ops: wire.ops.as_ref().map(bucket),
    }
}

/// A PATCH's limiter: buckets left out are kept.
fn limiter_update(wire: Option<&RateLimiter>) -> RateLimiterUpdate {
    wire.map(|w| RateLimiterUpdate::patch(&limiter(w)))
        .unwrap_or_default()
}

/// The API's view of one VMM process.
pub struct VmmBackend {
    instance: Arc<Instance>,
    id: String,
    /// The bodies accepted so far, as sent.
    wire: Mutex<FullVmConfiguration>,
    logger: Option<LoggerHandle>,
    metrics: Arc<MetricsSink>,
}

fn fault(e: InstanceError) -> Fault {
    Fault(error_chain(&e))
}

impl VmmBackend {
    pub fn new(
        instance: Arc<Instance>,
        id: String,
        logger: Option<LoggerHandle>,
        metrics: Arc<MetricsSink>,
    ) -> Self {
        VmmBackend {
            instance,
            id,
            wire: Mutex::new(FullVmConfiguration {
                machine_config: Some(MachineConfiguration::default()),
                ..Default::default()
            }),
            logger,
            metrics,
        }
    }

    fn wire(&self) -> MutexGuard<'_, FullVmConfiguration> {
        self.wire.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn info(&self) -> Result<Reply, Fault> {
        let state = match self.instance.state() {
            InstanceState::NotStarted => WireState::NotStarted,
            InstanceState::Running => WireState::Running,
            InstanceState::Paused => WireState::Paused,
            // The process ends right after; Firecracker has no such state.
            InstanceState::Stopped => WireState::Running,
        };
        Reply::json(&InstanceInfo {
            app_name: "vessel".to_string(),
            id: self.id.clone(),
            state,
            vmm_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    fn put_machine_config(&self, m: MachineConfiguration) -> Result<Reply, Fault> {
        self.instance
            .set_machine_config(instance::MachineConfig {
                vcpu_count: usize::from(m.vcpu_count),
                mem_size_mib: m.mem_size_mib,
                smt: m.smt,
                track_dirty_pages: m.track_dirty_pages,
            })
            .map_err(fault)?;
        self.wire().machine_config = Some(m);
        Ok(Reply::NoContent)
    }

    fn put_boot_source(&self, b: BootSource) -> Result<Reply, Fault> {
        self.instance
            .set_boot_source(instance::BootSource {
                kernel: PathBuf::from(&b.kernel_image_path),
                initrd: b.initrd_path.as_ref().map(PathBuf::from),
                boot_args: b.boot_args.clone(),
            })
            .map_err(fault)?;
        self.wire().boot_source = Some(b);
        Ok(Reply::NoContent)
    }

    fn put_drive(&self, d: Drive) -> Result<Reply, Fault> {
        let path = d.path_on_host.clone().unwrap_or_default();
        self.instance
            .put_drive(instance::Drive {
                id: d.drive_id.clone(),
                block: BlockConfig {
                    readonly: d.read_only(),
                    id: Some(d.drive_id.clone()),
                    cache: match d.cache_type {
                        WireCache::Unsafe => CacheType::Unsafe,
                        WireCache::Writeback => CacheType::Writeback,
                    },
                    rate_limiter: d.rate_limiter.as_ref().map(limiter),
                    io_engine: match d.io_engine.unwrap_or_default() {
                        IoEngine::Sync => BlockIoEngine::Sync,
                        IoEngine::Async => BlockIoEngine::Async,
                    },
                    ..BlockConfig::new(path)
                },
                is_root_device: d.is_root_device,
                partuuid: d.partuuid.clone(),
            })
            .map_err(fault)?;
        let mut wire = self.wire();
        wire.drives.retain(|x| x.drive_id != d.drive_id);
        wire.drives.push(d);
        Ok(Reply::NoContent)
    }

    fn put_net(&self, n: NetworkInterface) -> Result<Reply, Fault> {
        let mac = n.mac_bytes().map_err(|e| Fault(e.to_string()))?;
        self.instance
            .put_net(instance::NetInterface {
                id: n.iface_id.clone(),
                net: NetConfig {
                    mac,
                    id: Some(n.iface_id.clone()),
                    rx_rate_limiter: n.rx_rate_limiter.as_ref().map(limiter),
                    tx_rate_limiter: n.tx_rate_limiter.as_ref().map(limiter),
                    ..NetConfig::new(n.host_dev_name.clone())
                },
            })
            .map_err(fault)?;
        let mut wire = self.wire();
        wire.network_interfaces.retain(|x| x.iface_id != n.iface_id);
        wire.network_interfaces.push(n);
        Ok(Reply::NoContent)
    }

    fn put_balloon(&self, b: Balloon) -> Result<Reply, Fault> {
        if b.deflate_on_oom {
            log::warn!("balloon: deflate_on_oom is not offered to the guest yet");
        }
        self.instance
            .set_balloon(BalloonConfig {
                target_mib: u64::from(b.amount_mib),
                deflate_after: None,
            })
            .map_err(fault)?;
        self.wire().balloon = Some(b);
        Ok(Reply::NoContent)
    }

    fn action(&self, kind: ActionKind) -> Result<Reply, Fault> {
        match kind {
            ActionKind::InstanceStart => self.instance.start().map_err(fault)?,
            ActionKind::SendCtrlAltDel => self.instance.send_ctrl_alt_del().map_err(fault)?,
            ActionKind::FlushMetrics => {
                if self.wire().metrics.is_none() {
                    return Err(Fault::new(
                        "FlushMetrics needs a metrics destination: PUT /metrics first",
                    ));
                }
                self.metrics
                    .flush()
                    .map_err(|e| Fault(format!("cannot write the metrics: {e}")))?;
            }
        }
        Ok(Reply::NoContent)
    }

    fn patch_vm(&self, state: VmState) -> Result<Reply, Fault> {
        match state {
            VmState::Paused => self.instance.pause(),
            VmState::Resumed => self.instance.resume(),
        }
        .map_err(fault)?;
        Ok(Reply::NoContent)
    }

    fn put_vsock(&self, v: Vsock) -> Result<Reply, Fault> {
        self.instance
            .set_vsock(VsockConfig {
                guest_cid: v.guest_cid,
                uds_path: PathBuf::from(&v.uds_path),
            })
            .map_err(fault)?;
        self.wire().vsock = Some(v);
        Ok(Reply::NoContent)
    }

    /// After boot: a new image (the guest sees a disk change) and/or new
    /// limits; buckets the body leaves out are kept.
    fn patch_drive(&self, p: PartialDrive) -> Result<Reply, Fault> {
        let live = self.running("PATCH /drives (use PUT before InstanceStart)")?;
        let devices = &live.virtio;
        let err = |e: vmm::virtio_devices::VirtioError| Fault(error_chain(&e));
        if let Some(path) = &p.path_on_host {
            devices
                .swap_drive_image(&p.drive_id, Path::new(path))
                .map_err(err)?;
        }
        if p.rate_limiter.is_some() {
            devices
                .update_drive_limiter(&p.drive_id, &limiter_update(p.rate_limiter.as_ref()))
                .map_err(err)?;
        }
        let mut wire = self.wire();
        if let Some(d) = wire.drives.iter_mut().find(|d| d.drive_id == p.drive_id) {
            if p.path_on_host.is_some() {
                d.path_on_host = p.path_on_host;
            }
            if p.rate_limiter.is_some() {
                d.rate_limiter = p.rate_limiter;
            }
        }
        Ok(Reply::NoContent)
    }

    fn patch_net(&self, p: PartialNetworkInterface) -> Result<Reply, Fault> {
        self.running("PATCH /network-interfaces (use PUT before InstanceStart)")?
            .virtio
            .update_net_limiters(
                &p.iface_id,
                &limiter_update(p.rx_rate_limiter.as_ref()),
                &limiter_update(p.tx_rate_limiter.as_ref()),
            )
            .map_err(|e| Fault(error_chain(&e)))?;
        Ok(Reply::NoContent)
    }

    fn put_logger(&self, l: Logger) -> Result<Reply, Fault> {
        let Some(handle) = &self.logger else {
            return Err(Fault::new(
                "the logger could not be installed in this process, so it cannot be configured",
            ));
        };
        // Firecracker's PUT /logger without a level means Info.
        let level = Some(
            l.level
                .map_or(log::LevelFilter::Info, |level| level.to_filter()),
        );
        handle
            .update(LoggerUpdate {
                log_path: l.log_path.as_ref().map(PathBuf::from),
                level,
                show_level: l.show_level,
                show_log_origin: l.show_log_origin,
                module: l.module.clone(),
            })
            .map_err(|e| Fault(error_chain(&e)))?;
        self.wire().logger = Some(l);
        Ok(Reply::NoContent)
    }

    fn put_metrics(&self, m: Metrics) -> Result<Reply, Fault> {
        if self.wire().metrics.is_some() {
            return Err(Fault::new(
                "the metrics destination is already set: it can be set once per process",
            ));
        }
        self.metrics
            .set_path(Path::new(&m.metrics_path))
            .map_err(|e| Fault(error_chain(&e)))?;
        self.wire().metrics = Some(m);
        Ok(Reply::NoContent)
    }

    /// The running VM's handles, for `what`, which needs one.
    fn running(&self, what: &'static str) -> Result<LiveHandles, Fault> {
        self.instance.require_running(what).map_err(fault)?;
        self.instance.live().get().map_err(|e| Fault(e.to_string()))
    }

    /// The running balloon's controls.
    fn balloon(&self, what: &'static str) -> Result<BalloonHandle, Fault> {
        if self.wire().balloon.is_none() {
            return Err(Fault::new(
                "no balloon device: PUT /balloon before InstanceStart",
            ));
        }
        self.running(what)?
            .virtio
            .balloon
            .clone()
            .ok_or_else(|| Fault::new("the balloon device is not running"))
    }

    /// The balloon as configured, with its current target once running.
    fn get_balloon(&self) -> Result<Reply, Fault> {
        let Some(mut b) = self.wire().balloon.clone() else {
            return Err(Fault::new(
                "no balloon device: PUT /balloon before InstanceStart",
            ));
        };
        if let Ok(live) = self.instance.live().get() {
            if let Some(h) = &live.virtio.balloon {
                b.amount_mib = u32::try_from(h.target_mib()).unwrap_or(u32::MAX);
            }
        }
        Reply::json(&b)
    }

    fn patch_balloon(&self, amount_mib: u32) -> Result<Reply, Fault> {
        let handle = self.balloon("PATCH /balloon")?;
        let memory = self
            .wire()
            .machine_config
            .clone()
            .unwrap_or_default()
            .mem_size_mib;
        if u64::from(amount_mib) > memory {
            return Err(Fault(format!(
                "amount_mib {amount_mib} is more than the guest's {memory} MiB: use at most {memory}"
            )));
        }
        handle.set_target_mib(u64::from(amount_mib));
        if let Some(b) = self.wire().balloon.as_mut() {
            b.amount_mib = amount_mib;
        }
        Ok(Reply::NoContent)
    }

    fn balloon_stats(&self) -> Result<Reply, Fault> {
        let handle = self.balloon("GET /balloon/statistics")?;
        let (target, actual) = handle.pages();
        let mib = |pages: u32| u32::try_from((u64::from(pages) * 4096) >> 20).unwrap_or(u32::MAX);
        let mut stats = BalloonStats {
            target_pages: target,
            actual_pages: actual,
            target_mib: mib(target),
            actual_mib: mib(actual),
            ..Default::default()
        };
        for (tag, value) in handle.stats().entries {
            let slot = match tag {
                0 => &mut stats.swap_in,
                1 => &mut stats.swap_out,
                2 => &mut stats.major_faults,
                3 => &mut stats.minor_faults,
                4 => &mut stats.free_memory,
                5 => &mut stats.total_memory,
                6 => &mut stats.available_memory,
                7 => &mut stats.disk_caches,
                8 => &mut stats.hugetlb_allocations,
                9 => &mut stats.hugetlb_failures,
                10 => &mut stats.oom_kill,
                11 => &mut stats.alloc_stall,
                12 => &mut stats.async_scan,
                13 => &mut stats.direct_scan,
                14 => &mut stats.async_reclaim,
                15 => &mut stats.direct_reclaim,
                _ => continue,
            };
            *slot = Some(value);
        }
        Reply::json(&stats)
    }

    fn put_serial(&self, serial: Serial) -> Result<Reply, Fault> {
        if serial.rate_limiter.is_some() {
            return Self::not_yet("a rate limiter on the serial console");
        }
        if let Some(path) = &serial.serial_out_path {
            self.instance
                .set_serial_out(Path::new(path))
                .map_err(fault)?;
        }
        self.wire().serial = Some(serial);
        Ok(Reply::NoContent)
    }

    fn not_yet(what: &str) -> Result<Reply, Fault> {
        Err(Fault(format!("{what} is not supported by vessel yet")))
    }
}

impl Backend for VmmBackend {
    fn handle(&self, request: Request) -> Result<Reply, Fault> {
        match request {
            Request::GetInstanceInfo => self.info(),
            Request::GetVersion => Reply::json(&FirecrackerVersion {
                firecracker_version: env!("CARGO_PKG_VERSION").to_string(),
            }),
            Request::GetVmConfig => Reply::json(&*self.wire()),
            Request::GetMachineConfig => {
                let m = self.wire().machine_config.clone().unwrap_or_default();
                Reply::json(&m)
            }
            Request::PutMachineConfig(m) => self.put_machine_config(m),
            Request::PatchMachineConfig(p) => {
                let m = self
                    .wire()
                    .machine_config
                    .clone()
                    .unwrap_or_default()
                    .patched(&p);
                m.validate().map_err(|e| Fault(e.to_string()))?;
                self.put_machine_config(m)
            }
            Request::PutBootSource(b) => self.put_boot_source(b),
            Request::PutDrive(d) => self.put_drive(d),
            Request::PutNetworkInterface(n) => self.put_net(n),
            Request::Action(kind) => self.action(kind),
            Request::PatchVm(state) => self.patch_vm(state),
            Request::PutBalloon(b) => self.put_balloon(b),
            Request::GetBalloon => self.get_balloon(),
            Request::PutEntropy(e) => {
                if e.rate_limiter.is_some() {
                    return Self::not_yet("a rate limiter on the entropy device");
                }
                self.instance.set_entropy().map_err(fault)?;
                self.wire().entropy = Some(e);
                Ok(Reply::NoContent)
            }
            Request::PatchDrive(p) => self.patch_drive(p),
            Request::PatchNetworkInterface(p) => self.patch_net(p),
            Request::PatchBalloon(u) => self.patch_balloon(u.amount_mib),
            Request::GetBalloonStats => self.balloon_stats(),
            Request::PatchBalloonStats(_) => Err(Fault::new(
                "vessel polls the balloon's statistics every second; \
                 the interval cannot be changed yet",
            )),
            Request::PutVsock(v) => self.put_vsock(v),
            Request::PutLogger(l) => self.put_logger(l),
            Request::PutMetrics(m) => self.put_metrics(m),
            Request::PutSerial(serial) => self.put_serial(serial),
        }
    }
}
