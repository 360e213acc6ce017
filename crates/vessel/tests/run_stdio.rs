//! `vessel run -- CMD` with the command's stdio on the guest agent's vsock
//! streams, in the real Debian guest: stdin (EOF included) reaches the
//! command, stdout and stderr come back apart, the exit status passes
//! through; and on a terminal (a tmux session at 120x40) the command has a
//! pty of the terminal's size that follows resizes, and Ctrl-C during
//! boot ends vessel at once with status 130 and the terminal as it was.
//! The terminal test needs tmux (scripts/setup installs it); it is skipped
//! loudly without it, and fails instead under CI=true.

mod common;
use common::sha256_file as host_sha256;
use common::{temp_dir, vessel};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

struct Output {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `vessel run ARGS` with `stdin`, killing it after BOOT_TIMEOUT.
fn vessel_run(args: &[&str], stdin: Stdio) -> Output {
    let mut child = vessel()
        .arg("run")
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vessel");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let status = wait_for(&mut child, BOOT_TIMEOUT);
    let stderr = err_reader.join().unwrap_or_default();
    assert!(
        status.is_some(),
        "vessel run {args:?} timed out; stderr:\n{stderr}"
    );
    Output {
        status: status.flatten(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr,
    }
}

/// `Some(code)` when the child ended within `timeout` (killed otherwise).
fn wait_for(child: &mut Child, timeout: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return Some(st.code());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn piped_stdin_reaches_cat() {
    let mut echo = Command::new("echo")
        .arg("hello")
        .stdout(Stdio::piped())
        .spawn()
        .expect("echo on the host");
    let pipe = echo.stdout.take().expect("piped");
    let r = vessel_run(&["--", "cat"], Stdio::from(pipe));
    let _ = echo.wait();
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "hello\n");
}

#[test]
fn ten_mib_of_stdin_hash_as_on_the_host() {
    let file = Temp(std::env::temp_dir().join(format!("vessel-stdio-{}", std::process::id())));
    let status = Command::new("sh")
        .args(["-c", "head -c 10M /dev/urandom > \"$1\"", "sh"])
        .arg(&file.0)
        .status()
        .expect("head on the host");
    assert!(status.success());
    let want = host_sha256(&file.0);
    let mut cat = Command::new("cat")
        .arg(&file.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("cat on the host");
    let pipe = cat.stdout.take().expect("piped");
    let started = Instant::now();
    let r = vessel_run(&["--", "sha256sum"], Stdio::from(pipe));
    let _ = cat.wait();
    eprintln!(
        "10 MiB through sha256sum in the guest: {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    let got = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        got.split_whitespace().next(),
        Some(want.as_str()),
        "stdout: {got}"
    );
}

/// stdin at EOF at once (/dev/null), each line on its own stream, and the
/// command's status, in one boot.
#[test]
fn streams_apart_eof_and_status() {
    let script = "cat; echo out; echo err >&2; exit 7";
    let r = vessel_run(&["--", "sh", "-c", script], Stdio::null());
    assert_eq!(r.status, Some(7), "stderr:\n{}", r.stderr);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "out\n");
    assert!(
        r.stderr.lines().any(|l| l == "err"),
        "no err line on stderr:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("out"),
        "stdout leaked to stderr:\n{}",
        r.stderr
    );
}

struct Temp(PathBuf);
impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A tmux server of the test's own, killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "tmux is missing under CI: scripts/setup installs it"
            );
            eprintln!(
                "TERMINAL TEST SKIPPED ({name}): tmux is not installed (apt-get install tmux)"
            );
            return None;
        }
        Some(Tmux {
            socket: format!("vessel-{name}-{}", std::process::id()),
        })
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux")
    }

    /// A detached 120x40 session running `script` in sh.
    fn session(&self, script: &str) {
        let out = self.cmd(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            "sh",
            "-c",
            script,
        ]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Waits until the screen shows `text`; the screen when it does.
    fn wait_screen(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// Prepares the default guest first, so that the time measured is the
/// VM's (a Ctrl-C while vessel prepares the guest is an ordinary SIGINT).
fn prepare_guest() {
    let out = vessel()
        .args(["guest", "prepare"])
        .output()
        .expect("vessel guest prepare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shell line that runs vessel in the tmux pane, with the terminal's
/// settings saved before and after and vessel's status written out.
fn pane_script(dir: &Path, vessel_args: &str) -> String {
    let d = dir.display();
    format!(
        "stty -g > {d}/before; {} run {vessel_args}; echo $? > {d}/status; \
         date +%s.%N > {d}/ended; stty -g > {d}/after; echo PANE-DONE; sleep 600",
        env!("CARGO_BIN_EXE_vessel")
    )
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The pane's terminal settings after vessel are those from before it.
fn assert_terminal_restored(dir: &Path) {
    assert_eq!(
        read(dir, "before"),
        read(dir, "after"),
        "the terminal was not restored"
    );
}

#[test]
fn a_terminal_gives_a_pty_of_its_size_that_follows_resizes() {
    let Some(tmux) = Tmux::start("tty-size") else {
        return;
    };
    prepare_guest();
    let dir = temp_dir("tty-size");
    let guest = "'stty size; read a; stty size; read b; echo TERM=$TERM'";
    tmux.session(&pane_script(&dir.0, &format!("-- sh -c {guest}")));
    let screen = tmux.wait_screen("40 120", BOOT_TIMEOUT);
    assert!(
        !screen.contains("VESSEL-"),
        "markers on the screen:\n{screen}"
    );
    let out = tmux.cmd(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The size is polled: give it a moment before the command asks again.
    std::thread::sleep(Duration::from_millis(500));
    tmux.cmd(&["send-keys", "-t", "t", "Enter"]);
    tmux.wait_screen("30 100", Duration::from_secs(60));
    tmux.cmd(&["send-keys", "-t", "t", "Enter"]);
    let screen = tmux.wait_screen("PANE-DONE", Duration::from_secs(60));
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("TERM=") && l.len() > 5),
        "no TERM in the guest:\n{screen}"
    );
    assert_eq!(read(&dir.0, "status"), "0", "screen:\n{screen}");
    assert_terminal_restored(&dir.0);
}

#[test]
fn ctrl_c_during_boot_ends_vessel_with_130() {
    let Some(tmux) = Tmux::start("ctrl-c") else {
        return;
    };
    prepare_guest();
    let dir = temp_dir("ctrl-c");
    tmux.session(&pane_script(&dir.0, "-- sleep 60"));
    std::thread::sleep(Duration::from_secs(1));
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    tmux.cmd(&["send-keys", "-t", "t", "C-c"]);
    let screen = tmux.wait_screen("PANE-DONE", Duration::from_secs(30));
    let ended: f64 = read(&dir.0, "ended").parse().expect("end time");
    assert_eq!(read(&dir.0, "status"), "130", "screen:\n{screen}");
    assert!(
        ended - sent < 2.0,
        "vessel took {:.2} s to end after Ctrl-C",
        ended - sent
    );
    assert_terminal_restored(&dir.0);
}

#[test]
fn the_interactive_shell_has_the_terminals_size_and_term() {
    let Some(tmux) = Tmux::start("shell-size") else {
        return;
    };
    prepare_guest();
    let dir = temp_dir("shell-size");
    tmux.session(&pane_script(&dir.0, "--net none"));
    tmux.wait_screen("vessel:/#", BOOT_TIMEOUT);
    tmux.cmd(&[
        "send-keys",
        "-t",
        "t",
        "stty size; echo T=$TERM; poweroff",
        "Enter",
    ]);
    let screen = tmux.wait_screen("PANE-DONE", Duration::from_secs(60));
    assert!(screen.contains("40 120"), "no size:\n{screen}");
    // tmux's own TERM, not busybox init's serial default (vt102).
    assert!(
        screen
            .lines()
            .any(|l| l.trim() == "T=tmux-256color" || l.trim() == "T=screen"),
        "the host's TERM did not reach the shell:\n{screen}"
    );
    assert!(!screen.contains("VESSEL-GUEST-READY"), "{screen}");
    assert_eq!(read(&dir.0, "status"), "0", "screen:\n{screen}");
    assert_terminal_restored(&dir.0);
}

/// `vessel run` with no command and stdin at its end: the guest's shell
/// reads end of file and the VM powers off, instead of waiting forever.
#[test]
fn an_interactive_shell_on_empty_stdin_ends() {
    let out = vessel_run(&["--net", "none"], Stdio::null());
    assert_eq!(out.status, Some(0), "stderr:\n{}", out.stderr);
}
