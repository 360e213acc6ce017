//! The guest agent (`agent/vessel_agent.rs`, built by build.rs): the
//! program the init runs a command through when the VMM passes
//! [`AGENT_PARAM`]`=1`, with its stdin, stdout, stderr and exit status on
//! vsock streams to the host on the [`PORT_STDIN`].. ports. This module
//! is the host's half of that contract.

#[path = "../agent/ports.rs"]
mod ports;

pub use ports::{PORT_CONTROL, PORT_STDERR, PORT_STDIN, PORT_STDOUT};

/// The agent's static executable, shipped as /bin/vessel-agent.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vessel-agent"));
/// Where the init finds the agent.
pub const PATH: &str = "bin/vessel-agent";

/// `vessel.agent=1`: run the command through the agent.
pub const AGENT_PARAM: &str = "vessel.agent";
/// `vessel.tty=ROWSxCOLS`: give the command a pty of that size.
pub const TTY_PARAM: &str = "vessel.tty";
/// `vessel.term=NAME`: the command's TERM in TTY mode.
pub const TERM_PARAM: &str = "vessel.term";

/// The kernel command-line fragment that makes the init run the command
/// through the agent: with a pty of `tty` = (rows, cols) and `term` as
/// TERM when given. A TERM that is not a plain terminal name (letters,
/// digits, `-_.+`, at most 64 bytes) is left out.
pub fn cmdline(tty: Option<(u16, u16)>, term: Option<&str>) -> String {
    let mut line = format!("{AGENT_PARAM}=1");
    if let Some((rows, cols)) = tty {
        line.push_str(&format!(" {TTY_PARAM}={}x{}", rows.max(1), cols.max(1)));
        let plain = |t: &&str| {
            !t.is_empty()
                && t.len() <= 64
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        };
        if let Some(term) = term.filter(plain) {
            line.push_str(&format!(" {TERM_PARAM}={term}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_a_static_elf() {
        assert_eq!(&BINARY[..4], b"\x7fELF");
        // No PT_INTERP program header: the guest has no dynamic loader.
        let u16_at = |o: usize| u16::from_le_bytes([BINARY[o], BINARY[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(BINARY[0x20..0x28].try_into().unwrap()) as usize;
        let (size, count) = (u16_at(0x36), u16_at(0x38));
        assert!(count > 0);
        for i in 0..count {
            let kind = u32::from_le_bytes(BINARY[phoff + i * size..][..4].try_into().unwrap());
            assert_ne!(kind, 3, "the agent has a PT_INTERP");
        }
    }

    #[test]
    fn cmdline_carries_size_and_a_plain_term_only() {
        assert_eq!(cmdline(None, Some("xterm")), "vessel.agent=1");
        assert_eq!(
            cmdline(Some((40, 120)), Some("xterm-256color")),
            "vessel.agent=1 vessel.tty=40x120 vessel.term=xterm-256color"
        );
        assert_eq!(
            cmdline(Some((0, 0)), Some("x y")),
            "vessel.agent=1 vessel.tty=1x1"
        );
    }
}
