//! Builds the guest agent (`agent/vessel_agent.rs`, std only) as a static
//! x86-64 Linux executable with the same `rustc` that builds this crate;
//! `guest::agent::BINARY` embeds it and the initramfs ships it as
//! /bin/vessel-agent. Static linking needs glibc's static libraries
//! (Debian's libc6-dev, installed by scripts/setup).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=agent");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let output = out_dir.join("vessel-agent");
    let status = Command::new(rustc)
        .args(["--edition", "2021", "-O", "-C", "panic=abort"])
        .args(["-C", "target-feature=+crt-static", "-C", "strip=symbols"])
        .arg(manifest.join("agent/vessel_agent.rs"))
        .arg("-o")
        .arg(&output)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the guest agent failed ({s}): static glibc is needed, install libc6-dev"
        ),
        Err(e) => panic!("cannot run rustc to build the guest agent: {e}"),
    }
}
