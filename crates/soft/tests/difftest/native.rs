//! The native CPU's verdict on an instruction the harness's decoder calls
//! invalid: does this CPU raise #UD for the bytes at CPL3?
//!
//! This machine's KVM (PVM) catches a #UD (and some #GPs) its guest's
//! user code raises and lets its instruction emulator try the
//! instruction, which ignores prefixes the CPU refuses (LOCK on RDRAND or
//! a hint NOP, 66h on FXSAVE, ...) and executes it. For such bytes the
//! reference is not the CPU; the CPU's answer is found by running them
//! here, in a child process of the test at CPL3 on the real CPU: a
//! SIGILL is the CPU's #UD. The child is forked, runs only the bytes
//! followed by `exit_group(0)` in a page mapped before the fork, with an
//! alarm against a hang and no core dump; the parent waits for it.
//! Answers are cached by bytes.
//!
//! The unsafe code is the mapping, the fork and the jump into the page;
//! between fork and exit the child calls only system calls (async-signal
//! safe), never the allocator or a lock.

use std::collections::HashMap;
use std::sync::Mutex;

use iced_x86::{Decoder, DecoderOptions};

use super::machine::{Outcome, Snippet, CODE};

const PAGE: usize = 4096;

/// Does the CPU raise #UD for `bytes` (one instruction, up to 15 bytes)?
pub fn raises_ud(bytes: &[u8]) -> bool {
    static CACHE: Mutex<Option<HashMap<Vec<u8>, bool>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(&v) = map.get(bytes) {
        return v;
    }
    let v = run_in_child(bytes);
    map.insert(bytes.to_vec(), v);
    v
}

fn run_in_child(bytes: &[u8]) -> bool {
    if bytes.len() > 15 {
        return false;
    }
    // mov eax, 231 (exit_group); xor edi, edi; syscall
    let mut code = bytes.to_vec();
    code.extend_from_slice(&[0xb8, 0xe7, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]);
    // SAFETY: an anonymous private mapping of one page, owned here and
    // unmapped below; no existing memory is touched.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: `page` is a writable mapping of PAGE bytes and `code` is at
    // most 24 bytes; the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page.cast::<u8>(), code.len()) };
    // SAFETY: fork duplicates this process; the child (pid 0) only makes
    // system calls and jumps into `page` (see the module doc), the parent
    // goes on.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: the child's own limits and alarm; then it runs the
        // bytes, which end in exit_group, or dies of a signal; _exit in
        // case it returns.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::alarm(1);
            let run: extern "C" fn() =
                std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(page);
            run();
            libc::_exit(0);
        }
    }
    let mut status = 0;
    if pid > 0 {
        // SAFETY: waits for the child just forked, writing its status
        // into a local.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    // SAFETY: the page mapped above, no longer used.
    unsafe { libc::munmap(page, PAGE) };
    pid > 0 && libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGILL
}

/// Is `want` (the reference) a #UD where `got` (the engine) raised #GP or
/// #SS at the same instruction, and does the CPU not raise #UD for that
/// instruction's bytes? Then the #UD is this host's KVM's: it sends the
/// CPU's #GP/#SS at CPL3 to its instruction emulator, which answers #UD
/// for an instruction it cannot emulate (MMX/SSE with a non-canonical
/// address), and the run is not compared.
pub fn host_ud_for_fault(s: &Snippet, want: &Outcome, got: &Outcome) -> bool {
    if want.vector != 6 || !matches!(got.vector, 12 | 13) || want.rip != got.rip {
        return false;
    }
    let Some(at) = want.rip.checked_sub(CODE).map(|a| a as usize) else {
        return false;
    };
    let Some(rest) = s.code.get(at..) else {
        return false;
    };
    let ins = Decoder::with_ip(64, rest, want.rip, DecoderOptions::NONE).decode();
    !ins.is_invalid() && !raises_ud(&rest[..ins.len()])
}
