//! What the guest prints on its serial console, on its way to stdout.
//!
//! Interactive runs pass every byte through. Command runs (`vessel run --
//! CMD`) forward only the command's own output: what the guest prints after
//! the `VESSEL-GUEST-READY` line and before `VESSEL-EXIT-STATUS=<n>`, whose
//! value becomes vessel's exit status; the boot log before it is kept (the
//! last 64 KiB) to show when the guest fails. In both modes a kernel panic
//! line is noticed, so a guest that panics ends the VM with a message
//! instead of rebooting or hanging. Command runs through the guest agent
//! (`crate::stdio` carries the command's output) show nothing of the
//! console: all of it is kept as the log, and the markers still read.
//! An interactive console on a terminal hides the ready line, which is
//! for programs, not people.

use crate::control::{Outcome, VmControl};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The line the default guest's init prints when userspace is up.
pub const READY_MARKER: &str = "VESSEL-GUEST-READY";
/// What the default guest's init prints when asked for the agent on a root
/// that has none: a `Logged` watch then forwards the command's output.
pub const NO_AGENT_MARKER: &str = "VESSEL-NO-AGENT";
/// What the default guest's init prints after the command, then its status.
pub const EXIT_STATUS_MARKER: &str = "VESSEL-EXIT-STATUS=";
const PANIC_TEXT: &str = "Kernel panic - not syncing";
const BOOT_LOG_MAX: usize = 64 * 1024;
const LINE_MAX: usize = 4096;
/// How long a panicking guest may keep printing before the VM is stopped.
const PANIC_GRACE: Duration = Duration::from_secs(2);

/// How the guest's console output is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    Interactive,
    Command,
    /// A command whose output arrives elsewhere: the console is only logged.
    Logged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Command mode, before the ready line: output goes to the boot log.
    Booting,
    /// Forwarding; `matched` bytes of the exit marker are held back.
    Forwarding { matched: usize },
    /// Reading the digits of the exit status.
    Status,
    /// The command finished: nothing more is forwarded.
    Done,
}

struct State {
    mode: OutputMode,
    phase: Phase,
    line: Vec<u8>,
    status_digits: String,
    exit_status: Option<i32>,
    panic: Option<String>,
    boot_log: VecDeque<u8>,
    control: Option<Arc<VmControl>>,
    /// When the guest first printed the ready marker.
    ready_at: Option<std::time::Instant>,
    /// Interactive on a terminal: bytes held back while they may be the
    /// ready line (at the start of a line), until it is hidden once.
    ready_hold: Option<Vec<u8>>,
    at_line_start: bool,
}

/// Shared between the UART's writer and the VMM.
pub struct OutputWatch {
    state: Mutex<State>,
    /// Where forwarded output goes instead of stdout (`PUT /serial`).
    redirect: Mutex<Option<Arc<std::fs::File>>>,
    /// Bytes the guest wrote to the UART, and bytes that could not be
    /// written on (for the metrics' `uart` group).
    pub written: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl OutputWatch {
    pub fn new(mode: OutputMode) -> Arc<Self> {
        Self::build(mode, false)
    }

    /// As [`OutputWatch::new`], for output on this process's stdout: an
    /// interactive console there hides the ready line when it is a terminal.
    pub fn on_stdout(mode: OutputMode) -> Arc<Self> {
        // SAFETY: isatty only inspects the descriptor.
        let stdout_is_tty = unsafe { libc::isatty(libc::STDOUT_FILENO) } == 1;
        Self::build(mode, mode == OutputMode::Interactive && stdout_is_tty)
    }

    fn build(mode: OutputMode, hide_ready: bool) -> Arc<Self> {
        let phase = match mode {
            OutputMode::Interactive => Phase::Forwarding { matched: 0 },
            OutputMode::Command | OutputMode::Logged => Phase::Booting,
        };
        Arc::new(OutputWatch {
            state: Mutex::new(State {
                mode,
                phase,
                line: Vec::new(),
                status_digits: String::new(),
                exit_status: None,
                panic: None,
                boot_log: VecDeque::new(),
                control: None,
                ready_at: None,
                ready_hold: hide_ready.then(Vec::new),
                at_line_start: true,
            }),
            redirect: Mutex::new(None),
            written: Default::default(),
            dropped: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The VM whose output this is now (a reboot makes a new one).
    pub fn attach(&self, control: Arc<VmControl>) {
        self.lock().control = Some(control);
    }

    /// Guest instructions retired by the last VM attached, once its vCPUs
    /// ended (0 on engines that do not count them).
    pub fn instructions_retired(&self) -> u64 {
        self.lock().control.as_ref().map_or(0, |c| c.retired())
    }

    /// The command's exit status, once the guest reported it.
    pub fn exit_status(&self) -> Option<i32> {
        self.lock().exit_status
    }

    /// The guest's panic line, if it panicked.
    pub fn panic(&self) -> Option<String> {
        self.lock().panic.clone()
    }

    /// What the guest printed before the command started (command mode).
    pub fn boot_log(&self) -> String {
        let s = self.lock();
        let bytes: Vec<u8> = s.boot_log.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Sends the guest's output to `file` instead of stdout from now on.
    pub fn redirect_to(&self, file: Arc<std::fs::File>) {
        *self.redirect.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
    }

    fn redirect(&self) -> Option<Arc<std::fs::File>> {
        self.redirect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When the guest first printed `VESSEL-GUEST-READY` on a line.
    pub fn ready_at(&self) -> Option<std::time::Instant> {
        self.lock().ready_at
    }

    /// A writer for the UART.
    pub fn writer(self: &Arc<Self>) -> GuestOutput {
        GuestOutput(self.clone())
    }

    /// Routes `bytes` and returns what goes to the host's stdout.
    fn feed(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = self.lock();
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            s.watch_line(b);
            match s.phase {
                Phase::Booting => {
                    if s.boot_log.len() == BOOT_LOG_MAX {
                        s.boot_log.pop_front();
                    }
                    s.boot_log.push_back(b);
                    if s.mode == OutputMode::Logged {
                        if b == b'\n' && s.last_line_is(NO_AGENT_MARKER) {
                            s.mode = OutputMode::Command;
                        }
                        continue;
                    }
                    if b == b'\n' && s.last_line_is(READY_MARKER) {
                        s.phase = Phase::Forwarding { matched: 0 };
                    }
                }
                Phase::Forwarding { .. } if s.ready_hold.is_some() => s.hold_ready(b, &mut out),
                Phase::Forwarding { matched } => s.forward(b, matched, &mut out),
                Phase::Status => {
                    if b.is_ascii_digit() && s.status_digits.len() < 10 {
                        s.status_digits.push(char::from(b));
                    } else {
                        s.exit_status = Some(s.status_digits.parse().unwrap_or(255));
                        s.phase = Phase::Done;
                    }
                }
                Phase::Done => {}
            }
        }
        out
    }
}

impl State {
    /// Keeps the current line for the ready marker and the panic check.
    fn watch_line(&mut self, b: u8) {
        if b == b'\n' {
            if self.mode == OutputMode::Logged && self.exit_status.is_none() {
                self.exit_status = logged_status(&self.line);
            }
            if self.ready_at.is_none() && self.line.trim_ascii_end() == READY_MARKER.as_bytes() {
                self.ready_at = Some(std::time::Instant::now());
            }
            if self.panic.is_none() {
                let line = String::from_utf8_lossy(&self.line);
                if let Some(at) = line.find(PANIC_TEXT) {
                    let text = line[at..].trim_end().to_string();
                    self.panic = Some(text.clone());
                    if let Some(control) = self.control.clone() {
                        stop_after_grace(control, text);
                    }
                }
            }
            self.line.clear();
        } else if self.line.len() < LINE_MAX {
            self.line.push(b);
        }
    }

    /// Whether the line just ended by `\n` (still in the boot log) is `text`.
    fn last_line_is(&self, text: &str) -> bool {
        let log = self.boot_log.iter().rev().skip(1);
        let line: Vec<u8> = log.take_while(|&&c| c != b'\n').copied().collect();
        let line: Vec<u8> = line.into_iter().rev().collect();
        String::from_utf8_lossy(&line).trim_end_matches('\r') == text
    }

    /// Passes `b` through unless it continues the exit marker, which is
    /// held back until it either completes or turns out to be output.
    fn forward(&mut self, b: u8, matched: usize, out: &mut Vec<u8>) {
        let marker = EXIT_STATUS_MARKER.as_bytes();
        if self.exit_marker_applies() && marker.get(matched) == Some(&b) {
            if matched + 1 == marker.len() {
                self.phase = Phase::Status;
            } else {
                self.phase = Phase::Forwarding {
                    matched: matched + 1,
                };
            }
            return;
        }
        out.extend_from_slice(&marker[..matched]);
        if self.exit_marker_applies() && b == marker[0] {
            self.phase = Phase::Forwarding { matched: 1 };
        } else {
            out.push(b);
            self.phase = Phase::Forwarding { matched: 0 };
        }
    }

    /// Interactive on a terminal: passes `b` through, except the first
    /// line that is exactly the ready marker (with its `\r\n`).
    fn hold_ready(&mut self, b: u8, out: &mut Vec<u8>) {
        let Some(held) = self.ready_hold.as_mut() else {
            out.push(b);
            return;
        };
        let marker = READY_MARKER.as_bytes();
        let holding = !held.is_empty() || self.at_line_start;
        self.at_line_start = b == b'\n';
        if holding {
            held.push(b);
            let n = held.len();
            let is_prefix = n <= marker.len() && marker.starts_with(held);
            let in_ending = n > marker.len() && held.starts_with(marker) && {
                let tail = &held[marker.len()..];
                tail == b"\r" || tail == b"\n" || tail == b"\r\n"
            };
            if in_ending && b == b'\n' {
                self.ready_hold = None; // hidden; nothing more is held
            } else if !(is_prefix || in_ending) {
                out.append(held);
            }
            return;
        }
        out.push(b);
    }

    /// Only command runs look for the exit marker; an interactive console
    /// shows everything.
    fn exit_marker_applies(&self) -> bool {
        self.mode == OutputMode::Command
    }
}

/// The status in a console line that starts with the exit marker.
fn logged_status(line: &[u8]) -> Option<i32> {
    let line = String::from_utf8_lossy(line);
    let digits = line.trim_end().strip_prefix(EXIT_STATUS_MARKER)?;
    Some(digits.parse().unwrap_or(255))
}

fn stop_after_grace(control: Arc<VmControl>, text: String) {
    let spawned = std::thread::Builder::new()
        .name("panic-grace".into())
        .spawn(move || {
            std::thread::sleep(PANIC_GRACE);
            control.stop(Outcome::Failed(format!(
                "the guest kernel panicked: {text}"
            )));
        });
    if let Err(e) = spawned {
        log::warn!("cannot time the guest panic: {e}");
    }
}

/// The UART's output: filtered by the watch, written through to stdout at
/// once so that a crash loses nothing.
pub struct GuestOutput(Arc<OutputWatch>);

impl Write for GuestOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering::Relaxed;
        self.0.written.fetch_add(buf.len() as u64, Relaxed);
        let out = self.0.feed(buf);
        if out.is_empty() {
            return Ok(buf.len());
        }
        if let Some(file) = self.0.redirect() {
            // A named pipe nobody reads: the output is dropped, the guest
            // is not held up.
            if (&*file).write_all(&out).is_err() {
                self.0.dropped.fetch_add(out.len() as u64, Relaxed);
            }
        } else {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out)?;
            stdout.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(w: &OutputWatch, chunks: &[&str]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(w.feed(c.as_bytes()));
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn interactive_passes_everything() {
        let w = OutputWatch::new(OutputMode::Interactive);
        let text = "boot\r\nVESSEL-GUEST-READY\r\n# VESSEL-EXIT-STATUS=3\n";
        assert_eq!(feed_all(&w, &[text]), text);
        assert_eq!(w.exit_status(), None);
    }

    #[test]
    fn the_ready_line_is_timed_once_split_or_not() {
        let w = OutputWatch::new(OutputMode::Interactive);
        feed_all(
            &w,
            &["echo VESSEL-GUEST-READY is not it\n", "VESSEL-GUEST-"],
        );
        assert_eq!(w.ready_at(), None);
        feed_all(&w, &["READY\r\n"]);
        let first = w.ready_at().expect("timed");
        feed_all(&w, &["VESSEL-GUEST-READY\n"]);
        assert_eq!(w.ready_at(), Some(first));
    }

    #[test]
    fn command_forwards_only_the_command_output() {
        let w = OutputWatch::new(OutputMode::Command);
        let out = feed_all(
            &w,
            &[
                "[ 0.1] booting\r\nVESSEL-GUEST-",
                "READY\r\n",
                "a  b \"c\"\nVESSEL-EXIT-",
                "STATUS=7\n",
                "[ 2.0] reboot: Power down\n",
            ],
        );
        assert_eq!(out, "a  b \"c\"\n");
        assert_eq!(w.exit_status(), Some(7));
        assert!(w.boot_log().contains("booting"));
    }

    #[test]
    fn a_partial_marker_in_the_output_is_not_lost() {
        let w = OutputWatch::new(OutputMode::Command);
        let out = feed_all(
            &w,
            &[
                "VESSEL-GUEST-READY\n",
                "VESSEL-EXIT-X VVESSEL",
                "-EXIT-STATUS=0\n",
            ],
        );
        assert_eq!(out, "VESSEL-EXIT-X V");
        assert_eq!(w.exit_status(), Some(0));
    }

    #[test]
    fn output_without_final_newline_still_reports_status() {
        let w = OutputWatch::new(OutputMode::Command);
        let out = feed_all(
            &w,
            &["VESSEL-GUEST-READY\nno newlineVESSEL-EXIT-STATUS=125\n"],
        );
        assert_eq!(out, "no newline");
        assert_eq!(w.exit_status(), Some(125));
    }

    #[test]
    fn a_terminal_does_not_see_the_ready_line() {
        let w = OutputWatch::build(OutputMode::Interactive, true);
        let out = feed_all(
            &w,
            &[
                "boot\r\nVESSEL-GUEST-RE",
                "X\r\nVESSEL-GUEST-",
                "READY\r",
                "\nshell\r\nVESSEL-GUEST-READY\r\n",
            ],
        );
        assert_eq!(
            out,
            "boot\r\nVESSEL-GUEST-REX\r\nshell\r\nVESSEL-GUEST-READY\r\n"
        );
        assert!(w.ready_at().is_some());
    }

    #[test]
    fn logged_mode_shows_nothing_but_reads_the_status() {
        let w = OutputWatch::new(OutputMode::Logged);
        let out = feed_all(
            &w,
            &[
                "[ 0.1] boot\r\nVESSEL-GUEST-READY\r\nagent says\r\nVESSEL-EXIT-STA",
                "TUS=42\r\n",
            ],
        );
        assert_eq!(out, "");
        assert_eq!(w.exit_status(), Some(42));
        assert!(w.boot_log().contains("agent says"));
        assert!(w.ready_at().is_some());
    }

    #[test]
    fn logged_mode_forwards_when_the_guest_has_no_agent() {
        let w = OutputWatch::new(OutputMode::Logged);
        let out = feed_all(
            &w,
            &["boot\nVESSEL-NO-AGENT\r\nVESSEL-GUEST-READY\nout\nVESSEL-EXIT-STATUS=3\n"],
        );
        assert_eq!(out, "out\n");
        assert_eq!(w.exit_status(), Some(3));
    }

    #[test]
    fn a_panic_line_is_noticed() {
        let w = OutputWatch::new(OutputMode::Interactive);
        feed_all(&w, &["[ 1.0] Kernel panic - not syncing: Requested init /nonexistent failed (error -2).\r\n"]);
        assert_eq!(
            w.panic().as_deref(),
            Some("Kernel panic - not syncing: Requested init /nonexistent failed (error -2).")
        );
    }
}
