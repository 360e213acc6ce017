//! The default guest: the Debian cloud kernel and vessel's busybox
//! initramfs (built by the `guest` crate), used when no kernel is given,
//! and the command line that makes its init run a command.

pub use guest::PrepareOptions;
use guest::{GuestImage, PrepareError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DefaultGuestError {
    #[error("cannot prepare the default guest")]
    Prepare(#[from] PrepareError),
    #[error(
        "the command is too long for the kernel command line ({len} bytes, at most {max}): \\
         put it in a script on a disk instead"
    )]
    CommandTooLong { len: usize, max: usize },
}

/// What to boot for the default guest.
#[derive(Debug, Clone)]
pub struct DefaultBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// The prepared default guest, preparing it first when it is missing.
/// Progress lines go to `progress`.
pub fn image(progress: &mut dyn FnMut(&str)) -> Result<GuestImage, DefaultGuestError> {
    if let Some(image) = guest::find_prepared() {
        return Ok(image);
    }
    progress("vessel: the default guest is not prepared yet: preparing it now");
    Ok(guest::prepare(&PrepareOptions::default(), progress)?)
}

/// The boot of `image`: the uncompressed vmlinux (entered through PVH, so no
/// engine spends time decompressing), the initramfs, and the image's command
/// line (or `cmdline`), with `command` appended for its init to run.
pub fn boot(
    image: &GuestImage,
    cmdline: Option<&str>,
    command: &[String],
) -> Result<DefaultBoot, DefaultGuestError> {
    let mut line = cmdline.unwrap_or(&image.default_cmdline).to_string();
    if !command.is_empty() {
        line.push(' ');
        line.push_str(&guest::command_cmdline(command));
    }
    check_length(&line)?;
    Ok(DefaultBoot {
        kernel: image.vmlinux.clone(),
        initrd: image.initramfs.clone(),
        cmdline: line,
    })
}

/// Appends `extra` (such as the agent's parameters, `crate::stdio`) to a
/// command line made by [`boot`], which must stay within the kernel's limit.
pub fn append_cmdline(line: &mut String, extra: &str) -> Result<(), DefaultGuestError> {
    line.push(' ');
    line.push_str(extra);
    check_length(line)
}

fn check_length(line: &str) -> Result<(), DefaultGuestError> {
    if line.len() > guest::KERNEL_CMDLINE_MAX {
        return Err(DefaultGuestError::CommandTooLong {
            len: line.len(),
            max: guest::KERNEL_CMDLINE_MAX,
        });
    }
    Ok(())
}

pub use guest::{command_cmdline, make_rootfs, prepare};
