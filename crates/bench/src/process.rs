//! Runs one benchmark subprocess to its end or its deadline: stdin
//! closed, stdout and stderr captured (read on their own threads so a
//! full pipe never stalls the child), wall time measured from spawn to
//! exit. A child past its deadline is killed and reaped.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a subprocess gave no usable output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting on the child failed.
    #[error("cannot wait for the child")]
    Wait(#[source] std::io::Error),
    /// The child ran past its deadline and was killed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The child ended with a status other than the expected one.
    #[error("exited with {status}, expected code {expected}: {tail}")]
    ExitStatus {
        /// How it ended.
        status: ExitStatus,
        /// The code a successful run exits with.
        expected: i32,
        /// The last lines of its output.
        tail: String,
    },
    /// The output lacks a line the guest prints.
    #[error("no '{key}' line in the output: {tail}")]
    MissingLine {
        /// The line's key.
        key: &'static str,
        /// The last lines of the output.
        tail: String,
    },
    /// The guest's command reported a status other than 0.
    #[error("the guest command exited with status {0}")]
    GuestStatus(i32),
    /// A line's value is not a number.
    #[error("'{key}' has no number: {line:?}")]
    BadNumber {
        /// The line's key.
        key: &'static str,
        /// The line.
        line: String,
    },
    /// The guest's init could not set up a device it was given (a shared
    /// directory, a network interface): its line.
    #[error("the guest's init failed: {0:?}")]
    GuestSetup(String),
}

/// What a finished child left behind.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Stdout then stderr, lossily decoded.
    pub output: String,
    /// From spawn to exit.
    pub wall: Duration,
}

/// Starts `cmd` with stdin closed and stdout and stderr piped. A program
/// written a moment ago can fail to start with "text file busy" while a
/// child another thread forked meanwhile still holds it open for writing
/// (until that child execs): that is retried a few times.
pub fn spawn_piped(cmd: &mut Command) -> Result<std::process::Child, RunError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r.map_err(|source| RunError::Spawn { program, source }),
        }
    }
}

/// Runs `cmd` with stdin closed and its output captured; kills it after
/// `timeout`. A program that does not exist is `Spawn` with `NotFound`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Finished, RunError> {
    let start = Instant::now();
    let mut child = spawn_piped(cmd)?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_until(&mut child, start + timeout);
    let wall = start.elapsed();
    // The pipes close when the child is gone, so the readers end.
    let mut output = join(stdout);
    output.push_str(&join(stderr));
    match status {
        Ok(Some(status)) => Ok(Finished {
            status,
            output,
            wall,
        }),
        Ok(None) => Err(RunError::Timeout(timeout)),
        Err(e) => Err(RunError::Wait(e)),
    }
}

/// Polls the child until it exits (`Some`) or `deadline` passes (`None`,
/// after killing and reaping it).
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // The child may exit between try_wait and kill; either way
            // wait reaps it.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    let mut pipe = pipe?;
    std::thread::Builder::new()
        .name("bench-pipe".into())
        .spawn(move || {
            let mut bytes = Vec::new();
            // A read error ends the capture; what was read is kept.
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
        .ok()
}

pub(crate) fn join(reader: Option<JoinHandle<Vec<u8>>>) -> String {
    reader
        .and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` non-empty lines of `output`, joined with " | ".
pub fn tail(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program still open for writing ("text file busy") starts once
    /// the writer lets go.
    #[test]
    fn a_program_still_being_written_starts_once_it_is_closed() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vessel-bench-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("prog");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(b"#!/bin/sh\necho started\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // Held open for writing for a while, as a forked child would.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            drop(f);
        });
        let done = run(&mut Command::new(&path), Duration::from_secs(10)).expect("it starts");
        writer.join().expect("writer");
        assert!(done.output.contains("started"), "{}", done.output);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn captures_output_and_status() {
        let done = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .expect("sh runs");
        assert_eq!(done.status.code(), Some(3));
        assert!(done.output.contains("out\n"), "{}", done.output);
        assert!(done.output.contains("err\n"), "{}", done.output);
    }

    #[test]
    fn a_child_past_its_deadline_is_killed() {
        let t = Instant::now();
        let err = run(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Timeout(_)), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let err = run(
            &mut Command::new("/nonexistent/vessel-bench-program"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        match err {
            RunError::Spawn { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\n\n", 2), "b | c");
        assert_eq!(tail("", 3), "");
    }
}
