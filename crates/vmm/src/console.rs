//! The serial console on the host terminal: guest output to stdout, host
//! stdin to the UART, the terminal in raw mode while a VM runs, and the
//! escape sequence Ctrl-A then `x` that stops the VM.
//!
//! One input thread serves every VM this process boots (a reboot builds a
//! new VM), so the target of the input is swapped rather than the thread.
//! When the command's stdin goes elsewhere (the guest agent's streams,
//! `crate::stdio`), the console reads nothing and a [`Stopper`] lets that
//! code stop the VM, even before the VM is attached.

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

/// The VM input goes to, and a stop asked for before there was one.
#[derive(Default)]
struct Targets {
    now: Option<Target>,
    stop_pending: Option<Outcome>,
}

/// Stops whichever VM the console serves, now or once it is attached.
#[derive(Clone)]
pub struct Stopper(Arc<Mutex<Targets>>);

impl Stopper {
    pub fn stop(&self, outcome: Outcome) {
        let mut t = lock(&self.0);
        match t.now.as_ref() {
            Some(target) => target.control.stop(outcome),
            None => t.stop_pending = Some(outcome),
        }
    }
}

fn lock(m: &Mutex<Targets>) -> std::sync::MutexGuard<'_, Targets> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host side of the console.
pub struct Console {
    target: Arc<Mutex<Targets>>,
    output: Arc<OutputWatch>,
    _raw: Option<RawMode>,
}

const ESCAPE: u8 = 0x01; // Ctrl-A

impl Console {
    /// Starts reading stdin. When stdin is a terminal it is put in raw mode
    /// until the console is dropped. `mode` says how guest output is shown.
    pub fn start(mode: OutputMode) -> Self {
        let raw = RawMode::enable();
        let target: Arc<Mutex<Targets>> = Arc::default();
        let output = OutputWatch::on_stdout(mode);
        let (t, o) = (target.clone(), output.clone());
        let terminal = raw.is_some();
        // The thread ends at EOF on stdin or with the process.
        let spawned = std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || {
                input_loop(&t);
                if !terminal {
                    end_of_input(&t, &o);
                }
            });
        if let Err(e) = spawned {
            log::warn!("console input disabled: {e}");
        }
        Console {
            target,
            output,
            _raw: raw,
        }
    }

    /// A console that does not read stdin nor touch the terminal: the
    /// command's input goes through the guest agent instead.
    pub fn start_without_input(mode: OutputMode) -> Self {
        Console {
            target: Arc::default(),
            output: OutputWatch::new(mode),
            _raw: None,
        }
    }

    /// A handle that stops the VM this console serves.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.target.clone())
    }

    /// What the guest printed, as far as the VMM cares.
    pub fn output(&self) -> &Arc<OutputWatch> {
        &self.output
    }

    /// Sends input to this VM from now on.
    pub fn attach(&self, input: Arc<dyn ConsoleInput>, control: Arc<VmControl>) {
        let mut t = lock(&self.target);
        if let Some(outcome) = t.stop_pending.take() {
            control.stop(outcome);
        }
        t.now = Some(Target { input, control });
    }

    pub fn detach(&self) {
        lock(&self.target).now = None;
    }
}

/// Piped input ended (`vessel run < file`, `</dev/null`): once the guest
/// is up, its console reads end of file (Ctrl-D), so a shell reading it
/// ends, as a shell does at the end of its input. Repeated while the VM
/// runs, since input that arrives before the shell reads is not kept.
fn end_of_input(target: &Mutex<Targets>, output: &OutputWatch) {
    const EOF: u8 = 0x04;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let running = match lock(target).now.as_ref() {
            Some(t) => !t.control.is_stopping(),
            None => output.ready_at().is_none(),
        };
        if !running {
            return;
        }
        if output.ready_at().is_some() {
            deliver(target, &[EOF]);
        }
    }
}

fn input_loop(target: &Arc<Mutex<Targets>>) {
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
                        Stopper(Arc::clone(target)).stop(Outcome::UserStop);
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
        deliver(target, &out);
    }
}

/// Feeds bytes to the guest at the pace its FIFO accepts them.
fn deliver(target: &Mutex<Targets>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let accepted = match lock(target).now.as_ref() {
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
pub(crate) struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Puts the terminal on stdin in raw mode (output post-processing
    /// kept); `None` when stdin is not a terminal.
    pub(crate) fn enable() -> Option<Self> {
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
