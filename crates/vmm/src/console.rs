//! The serial console on the host terminal: guest output to stdout, host
//! stdin to the UART, the terminal in raw mode while a VM runs, and the
//! escape sequence Ctrl-A then `x` that stops the VM.
//!
//! One input thread serves every VM this process boots (a reboot builds a
//! new VM), so the target of the input is swapped rather than the thread.

use crate::control::{Outcome, VmControl};
use crate::guest_output::{OutputMode, OutputWatch};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where typed bytes go: the UART of the VM that runs now.
pub trait ConsoleInput: Send + Sync {
    /// Queues bytes for the guest; returns how many were accepted.
    fn enqueue(&self, bytes: &[u8]) -> usize;
}

struct Target {
    input: Arc<dyn ConsoleInput>,
    control: Arc<VmControl>,
}

/// The host side of the console.
pub struct Console {
    target: Arc<Mutex<Option<Target>>>,
    output: Arc<OutputWatch>,
    _raw: Option<RawMode>,
}

const ESCAPE: u8 = 0x01; // Ctrl-A

impl Console {
    /// Starts reading stdin. When stdin is a terminal it is put in raw mode
    /// until the console is dropped. `mode` says how guest output is shown.
    pub fn start(mode: OutputMode) -> Self {
        let raw = RawMode::enable();
        let target: Arc<Mutex<Option<Target>>> = Arc::new(Mutex::new(None));
        let t = target.clone();
        // The thread ends at EOF on stdin or with the process.
        let spawned = std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || input_loop(t));
        if let Err(e) = spawned {
            log::warn!("console input disabled: {e}");
        }
        Console {
            target,
            output: OutputWatch::new(mode),
            _raw: raw,
        }
    }

    /// What the guest printed, as far as the VMM cares.
    pub fn output(&self) -> &Arc<OutputWatch> {
        &self.output
    }

    /// Sends input to this VM from now on.
    pub fn attach(&self, input: Arc<dyn ConsoleInput>, control: Arc<VmControl>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(Target { input, control });
    }

    pub fn detach(&self) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn input_loop(target: Arc<Mutex<Option<Target>>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 256];
    let mut escape_pending = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if escape_pending {
                escape_pending = false;
                match b {
                    b'x' | b'X' => {
                        if let Some(t) = target.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                            t.control.stop(Outcome::UserStop);
                        }
                        continue;
                    }
                    ESCAPE => out.push(ESCAPE),
                    other => {
                        out.push(ESCAPE);
                        out.push(other);
                    }
                }
            } else if b == ESCAPE {
                escape_pending = true;
            } else {
                out.push(b);
            }
        }
        deliver(&target, &out);
    }
}

/// Feeds bytes to the guest at the pace its FIFO accepts them.
fn deliver(target: &Mutex<Option<Target>>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let accepted = match target.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(t) if !t.control.is_stopping() => t.input.enqueue(bytes),
            _ => return,
        };
        bytes = &bytes[accepted..];
        if !bytes.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The terminal's settings before raw mode, restored on drop.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enable() -> Option<Self> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return None;
        }
        // SAFETY: termios is plain old data; all-zero is a valid value that
        // tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so host-side messages stay readable.
        raw.c_oflag |= libc::OPOST;
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enable` on the same descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}
