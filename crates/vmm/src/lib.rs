//! The VMM: turns a [`VmConfig`] into a running machine and sees it to its end.
//!
//! It owns the pieces that tie engines, devices and boot code together:
//! engine selection ([`engine`]), guest memory ([`memory`]), device wiring
//! ([`device_manager`]), the builder that boots a VM ([`builder`]), one thread
//! per vCPU ([`vcpu`]), the stop/reset/power-off protocol between them
//! ([`control`]) and the serial console on the host terminal ([`console`]).
//! Nothing here knows about the CLI.

pub mod builder;
pub mod config;
pub mod console;
pub mod control;
pub mod default_guest;
pub mod device_manager;
pub mod engine;
pub mod event_loop;
pub mod guest_output;
pub mod instance;
pub mod live;
pub mod logger;
pub mod memory;
pub mod metrics;
pub mod stdio;
pub mod storage_devices;
pub mod user_net;
pub mod vcpu;
pub mod virtio_devices;

pub use builder::{run_vm, run_vm_with, Error};
pub use config::{ConfigError, EngineChoice, VmConfig};
pub use control::Outcome;
pub use guest_output::OutputMode;
