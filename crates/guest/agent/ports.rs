//! The vsock ports and kernel parameters shared by the guest agent
//! (`vessel_agent.rs`, built on its own by `rustc`) and the host side
//! (vmm's `stdio` module, through `guest::agent`). The agent connects to
//! the host (CID 2) on each port, one stream each.

/// Host to guest: the command's stdin (the pty's input in TTY mode).
pub const PORT_STDIN: u32 = 52100;
/// Guest to host: the command's stdout (the pty's output in TTY mode).
pub const PORT_STDOUT: u32 = 52101;
/// Guest to host: the command's stderr (closed at once in TTY mode).
pub const PORT_STDERR: u32 = 52102;
/// Both ways, text lines: `winsize ROWS COLS` from the host, `exit N` from
/// the guest once the output streams are closed; the host then closes it.
pub const PORT_CONTROL: u32 = 52103;
