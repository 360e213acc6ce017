//! `/boot-source` body: kernel, optional initrd and command line.

use super::{check_optional_path, check_path, ModelError};
use serde::{Deserialize, Serialize};

/// The x86-64 kernel's command line buffer (COMMAND_LINE_SIZE), less its NUL.
pub const MAX_CMDLINE_LEN: usize = 2047;

/// Body of `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

impl BootSource {
    /// Paths are plain and the command line fits the kernel's buffer.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_path("kernel_image_path", &self.kernel_image_path)?;
        check_optional_path("initrd_path", self.initrd_path.as_deref())?;
        if let Some(args) = &self.boot_args {
            if args.len() > MAX_CMDLINE_LEN {
                return Err(ModelError::CmdlineTooLong(args.len()));
            }
            if args.contains('\0') {
                return Err(ModelError::CmdlineHasNul);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getting_started_body_parses() {
        let b: BootSource = serde_json::from_str(
            r#"{"kernel_image_path": "./vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"}"#,
        )
        .unwrap();
        assert_eq!(b.validate(), Ok(()));
        assert_eq!(b.initrd_path, None);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut b = BootSource {
            kernel_image_path: String::new(),
            initrd_path: None,
            boot_args: None,
        };
        assert!(matches!(b.validate(), Err(ModelError::PathEmpty { .. })));
        b.kernel_image_path = "/k".into();
        b.boot_args = Some("x".repeat(MAX_CMDLINE_LEN + 1));
        assert_eq!(
            b.validate(),
            Err(ModelError::CmdlineTooLong(MAX_CMDLINE_LEN + 1))
        );
        b.boot_args = Some("a\0b".into());
        assert_eq!(b.validate(), Err(ModelError::CmdlineHasNul));
        assert!(serde_json::from_str::<BootSource>(r#"{"boot_args": "x"}"#).is_err());
    }
}
