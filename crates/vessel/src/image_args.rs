//! `vessel run --image PATH [-e KEY=VALUE] [-w DIR] [--user U] [--entrypoint
//! CMD] [-- ARGS]`: runs a command in a container image (an OCI layout
//! directory or a `docker save` archive) on the default guest's kernel and
//! initramfs. The image becomes a cached ext4 disk (the `guest` crate's
//! `oci` module), attached read-only as /dev/vda; the init's helper runs the
//! image's command in it.

use std::path::PathBuf;
use vmm::virtio_devices::BlockConfig;

#[derive(clap::Args, Debug, Default)]
pub struct ImageArgs {
    /// Run a container image: an OCI image layout directory or a `docker
    /// save`/`podman save` archive. Arguments after -- replace its Cmd.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["rootfs", "kernel"])]
    pub image: Option<PathBuf>,
    /// With --image: set an environment variable (KEY alone takes this
    /// process's value). Repeatable.
    #[arg(
        short = 'e',
        long = "env",
        value_name = "KEY=VALUE",
        requires = "image"
    )]
    pub env: Vec<String>,
    /// With --image: the working directory (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR", requires = "image")]
    pub workdir: Option<String>,
    /// With --image: run as USER[:GROUP] (names or numbers).
    #[arg(
        short = 'u',
        long = "user",
        value_name = "USER[:GROUP]",
        requires = "image"
    )]
    pub user: Option<String>,
    /// With --image: replace the image's Entrypoint ("" clears it; the
    /// image's Cmd is then not used).
    #[arg(long, value_name = "CMD", requires = "image")]
    pub entrypoint: Option<String>,
}

/// What `run` needs for an image: its disk and the command for the init.
pub struct ImageRun {
    pub disk: BlockConfig,
    pub command: Vec<String>,
}

impl ImageArgs {
    /// Prepares the image (building its cached disk when missing) and the
    /// command that runs `args` in it; `None` without --image.
    pub fn prepare(&self, args: &[String]) -> anyhow::Result<Option<ImageRun>> {
        let Some(path) = &self.image else {
            return Ok(None);
        };
        let prepared = guest::oci::prepare(path, &guest::cache_dir(), &mut |l| eprintln!("{l}"))
            .map_err(|e| anyhow::Error::new(e).context(format!("--image {}", path.display())))?;
        let overrides = guest::oci::Overrides {
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            args: args.to_vec(),
        };
        let command = guest::oci::command(&prepared.run, &overrides, &|k| std::env::var(k).ok())?;
        let disk = BlockConfig {
            id: Some("image".to_string()),
            readonly: true,
            ..BlockConfig::new(prepared.disk)
        };
        Ok(Some(ImageRun { disk, command }))
    }
}

/// `devices` with the image's disk first (it must be /dev/vda).
pub fn attach(
    image: Option<ImageRun>,
    mut devices: vmm::virtio_devices::DeviceConfig,
) -> vmm::virtio_devices::DeviceConfig {
    if let Some(run) = image {
        devices.disks.insert(0, run.disk);
    }
    devices
}
