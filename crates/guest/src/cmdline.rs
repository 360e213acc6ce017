//! How the VMM tells the guest's init what to run, and how the init answers.
//!
//! The contract (the init script in `init.rs` is the other half):
//! - `vessel.cmd=<B64>` on the kernel command line, where `<B64>` is the
//!   standard base64 (RFC 4648, `+/`, with `=` padding, no line breaks) of a
//!   UTF-8 shell script. The init decodes it with `base64 -d` and runs it as
//!   `/bin/sh -c SCRIPT` on the console (which is its controlling tty).
//! - [`command_cmdline`] makes that script from an argv by quoting each
//!   argument for the shell, so spaces, quotes, newlines, `$` and unicode
//!   reach the program unchanged; [`script_cmdline`] passes a script as is.
//! - Before running it the init prints `VESSEL-GUEST-READY` on its own line;
//!   after, it prints `VESSEL-EXIT-STATUS=<n>` followed by a newline, and
//!   powers off. The status line is not necessarily at the start of a line
//!   (the command's output may not end in a newline): match it anywhere.
//! - The kernel's command line holds at most 2048 bytes on x86
//!   ([`KERNEL_CMDLINE_MAX`]); base64 grows the script by 4/3.

use base64::Engine as _;

/// Name of the kernel parameter carrying the command.
pub const CMD_PARAM: &str = "vessel.cmd";
/// Printed by the init when userspace is up.
pub const READY_MARKER: &str = "VESSEL-GUEST-READY";
/// Prefix of the line the init prints with the command's exit status.
pub const EXIT_STATUS_MARKER: &str = "VESSEL-EXIT-STATUS=";
/// x86 `COMMAND_LINE_SIZE` including the terminating NUL.
pub const KERNEL_CMDLINE_MAX: usize = 2048;

/// The command-line fragment (`vessel.cmd=...`) that makes the init run
/// `argv` through `/bin/sh`, each argument arriving exactly as given. NUL
/// bytes cannot be passed to a program and are dropped.
pub fn command_cmdline(argv: &[String]) -> String {
    script_cmdline(&shell_join(argv))
}

/// The command-line fragment that makes the init run `script` with
/// `/bin/sh -c`.
pub fn script_cmdline(script: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(script.replace('\0', ""));
    format!("{CMD_PARAM}={b64}")
}

/// Quotes each argument for a POSIX shell and joins them with spaces.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One argument quoted for a POSIX shell: bare when it only has safe
/// characters, else in single quotes with `'` written as `'\''`.
pub fn shell_quote(arg: &str) -> String {
    let arg = arg.replace('\0', "");
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg;
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The script carried by a `vessel.cmd=` fragment or a whole command line
/// containing one (the inverse of [`script_cmdline`]); `None` when there is
/// none or it does not decode.
pub fn decode_cmdline(cmdline: &str) -> Option<String> {
    let prefix = format!("{CMD_PARAM}=");
    let b64 = cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Finds the exit status the init reported in console output.
pub fn parse_exit_status(console: &str) -> Option<i32> {
    let at = console.rfind(EXIT_STATUS_MARKER)?;
    let digits: String = console[at + EXIT_STATUS_MARKER.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const NASTY: &[&str] = &[
        "printf",
        "%s|",
        "two words",
        "it's",
        "\"double\"",
        "line\nbreak",
        "tab\there",
        "$HOME `id` $(id)",
        "back\\slash",
        "",
        "ünïcødé ✓",
        "*",
        "'",
        "a'b\"c",
    ];

    #[test]
    fn fragment_is_one_word_without_quotes() {
        let frag = command_cmdline(&args(NASTY));
        assert!(frag.starts_with("vessel.cmd="));
        assert!(!frag.contains([' ', '\n', '"', '\'', '\t']));
    }

    #[test]
    fn decode_inverts_encode() {
        for script in ["uname -r", "echo 'a b'\nexit 3", "ünïcødé", ""] {
            let frag = script_cmdline(script);
            let line = format!("console=ttyS0 {frag} quiet");
            assert_eq!(decode_cmdline(&line).as_deref(), Some(script));
        }
        assert_eq!(decode_cmdline("console=ttyS0"), None);
        assert_eq!(decode_cmdline("vessel.cmd=!!!"), None);
    }

    #[test]
    fn quoting_round_trips_through_a_real_shell() {
        // The host's /bin/sh stands in for busybox sh: both are POSIX.
        let script = decode_cmdline(&command_cmdline(&args(NASTY))).unwrap();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let want: String = NASTY[2..].iter().map(|a| format!("{a}|")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }

    #[test]
    fn nul_bytes_are_dropped_not_fatal() {
        let script = decode_cmdline(&command_cmdline(&args(&["a\0b"]))).unwrap();
        assert_eq!(script, "ab");
    }

    #[test]
    fn exit_status_is_found_anywhere() {
        assert_eq!(parse_exit_status("hi\nVESSEL-EXIT-STATUS=0\n"), Some(0));
        assert_eq!(
            parse_exit_status("no newlineVESSEL-EXIT-STATUS=42\r\n"),
            Some(42)
        );
        assert_eq!(parse_exit_status("VESSEL-EXIT-STATUS=\n"), None);
        assert_eq!(parse_exit_status("nothing"), None);
    }
}
