//! What runs in the container, decided as `docker run` decides it: the
//! image's Entrypoint with the user's arguments after `--` in place of the
//! image's Cmd (`--entrypoint` replaces the Entrypoint and drops the Cmd),
//! the image's Env with `-e KEY=VALUE` over it (`-e KEY` takes the host's
//! value) and a default PATH, WorkingDir or `-w`, User or `--user`.
//!
//! [`command`] gives the words for the guest: the initramfs's helper
//! `/sbin/vessel-oci-exec WORKDIR USER ENV... -- ARGV...` (see `init.rs`),
//! which mounts the image and runs ARGV in it.

use super::RunConfig;

/// The helper in the initramfs that enters the image.
pub const HELPER: &str = "/sbin/vessel-oci-exec";

/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The user's changes to the image's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--entrypoint`: `Some("")` clears the image's.
    pub entrypoint: Option<String>,
    /// `-e KEY=VALUE` or `-e KEY`, in order.
    pub env: Vec<String>,
    /// `-w DIR`.
    pub workdir: Option<String>,
    /// `--user USER[:GROUP]`.
    pub user: Option<String>,
    /// The arguments after `--`.
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    #[error("no command: the image has no Entrypoint or Cmd; give one after --")]
    NoCommand,
    #[error(
        "bad environment variable {0:?}: expected KEY=VALUE with a KEY of letters, digits and _"
    )]
    BadEnv(String),
    #[error("working directory {0:?} must be an absolute path")]
    RelativeWorkdir(String),
    #[error("bad user {0:?}: expected NAME, UID, NAME:GROUP or UID:GID")]
    BadUser(String),
}

/// The words that make the guest's helper run the container's command.
pub fn command(
    image: &RunConfig,
    o: &Overrides,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, LaunchError> {
    let argv = argv(image, o);
    if argv.is_empty() {
        return Err(LaunchError::NoCommand);
    }
    let workdir = workdir(image, o)?;
    let user = o
        .user
        .clone()
        .or_else(|| image.user.clone())
        .unwrap_or_default();
    if user.contains(|c: char| c.is_whitespace() || c.is_control()) || user.matches(':').count() > 1
    {
        return Err(LaunchError::BadUser(user));
    }
    let mut words = vec![HELPER.to_string(), workdir, user];
    words.extend(env(image, o, host_env)?);
    words.push("--".to_string());
    words.extend(argv);
    Ok(words)
}

/// Entrypoint + Cmd, as Docker combines them.
pub fn argv(image: &RunConfig, o: &Overrides) -> Vec<String> {
    let (entrypoint, default_cmd) = match &o.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if o.args.is_empty() {
        default_cmd
    } else {
        o.args.clone()
    };
    entrypoint.into_iter().chain(cmd).collect()
}

fn workdir(image: &RunConfig, o: &Overrides) -> Result<String, LaunchError> {
    if let Some(w) = &o.workdir {
        if !w.starts_with('/') {
            return Err(LaunchError::RelativeWorkdir(w.clone()));
        }
        return Ok(w.clone());
    }
    // An image's relative WorkingDir is taken from the root, as Docker does.
    Ok(match image.working_dir.as_deref() {
        None | Some("") => "/".to_string(),
        Some(w) if w.starts_with('/') => w.to_string(),
        Some(w) => format!("/{w}"),
    })
}

/// The environment, `KEY=VALUE` each, later entries winning in the guest.
fn env(
    image: &RunConfig,
    o: &Overrides,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, LaunchError> {
    let mut out: Vec<String> = Vec::new();
    let mut set = |entry: String| -> Result<(), LaunchError> {
        let key = entry.split('=').next().unwrap_or_default();
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || entry.contains('\0') {
            return Err(LaunchError::BadEnv(entry));
        }
        let prefix = format!("{key}=");
        out.retain(|e| !e.starts_with(&prefix));
        out.push(entry);
        Ok(())
    };
    set(format!("PATH={DEFAULT_PATH}"))?;
    for e in image.env.iter().flatten() {
        // Images built by hand can hold anything: keep what is well formed.
        if e.contains('=') {
            let _ = set(e.clone());
        }
    }
    for e in &o.env {
        if e.contains('=') {
            set(e.clone())?;
        } else if let Some(v) = host_env(e) {
            set(format!("{e}={v}"))?;
        } else if e.is_empty() {
            return Err(LaunchError::BadEnv(e.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image() -> RunConfig {
        RunConfig {
            entrypoint: Some(s(&["/bin/tool", "--flag"])),
            cmd: Some(s(&["default"])),
            env: Some(s(&["A=1", "PATH=/img/bin", "B=two words"])),
            working_dir: Some("/work".into()),
            user: None,
        }
    }

    fn no_host(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn args_replace_cmd_and_entrypoint_stays() {
        let o = Overrides {
            args: s(&["x", "y"]),
            ..Default::default()
        };
        assert_eq!(argv(&image(), &o), s(&["/bin/tool", "--flag", "x", "y"]));
        assert_eq!(
            argv(&image(), &Overrides::default()),
            s(&["/bin/tool", "--flag", "default"])
        );
    }

    #[test]
    fn entrypoint_override_drops_the_images_cmd() {
        let o = Overrides {
            entrypoint: Some("/bin/sh".into()),
            ..Default::default()
        };
        assert_eq!(argv(&image(), &o), s(&["/bin/sh"]));
        let o = Overrides {
            entrypoint: Some(String::new()),
            args: s(&["ls"]),
            ..Default::default()
        };
        assert_eq!(argv(&image(), &o), s(&["ls"]));
    }

    #[test]
    fn command_words_carry_workdir_user_env_and_argv() {
        let o = Overrides {
            env: s(&["A=override", "HOSTVAR", "MISSING"]),
            user: Some("1000:100".into()),
            args: s(&["arg"]),
            ..Default::default()
        };
        let host = |k: &str| (k == "HOSTVAR").then(|| "from host".to_string());
        let words = command(&image(), &o, &host).unwrap();
        assert_eq!(
            words,
            s(&[
                HELPER,
                "/work",
                "1000:100",
                "PATH=/img/bin",
                "B=two words",
                "A=override",
                "HOSTVAR=from host",
                "--",
                "/bin/tool",
                "--flag",
                "arg"
            ])
        );
    }

    #[test]
    fn defaults_path_and_root_dir() {
        let img = RunConfig {
            cmd: Some(s(&["run"])),
            working_dir: Some("rel".into()),
            ..Default::default()
        };
        let words = command(&img, &Overrides::default(), &no_host).unwrap();
        assert_eq!(words[1], "/rel");
        assert_eq!(words[2], "");
        assert_eq!(words[3], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn bad_input_is_refused() {
        let empty = RunConfig::default();
        assert_eq!(
            command(&empty, &Overrides::default(), &no_host),
            Err(LaunchError::NoCommand)
        );
        for bad in ["=x", "1A=x", "A B=x", "-x=1", "A=\0"] {
            let o = Overrides {
                env: s(&[bad]),
                ..Default::default()
            };
            assert!(command(&image(), &o, &no_host).is_err(), "{bad:?}");
        }
        let o = Overrides {
            workdir: Some("rel".into()),
            ..Default::default()
        };
        assert!(matches!(
            command(&image(), &o, &no_host),
            Err(LaunchError::RelativeWorkdir(_))
        ));
        let o = Overrides {
            user: Some("a:b:c".into()),
            ..Default::default()
        };
        assert!(matches!(
            command(&image(), &o, &no_host),
            Err(LaunchError::BadUser(_))
        ));
    }
}
