//! The soft engine against the real CPU on random instruction bytes.
//!
//! Each input runs in the differential harness's machine
//! (`crates/soft/tests/difftest`, included below by path, not copied): at
//! CPL3 under KVM, which on these PVM hosts executes user code natively on
//! the CPU, and on the soft engine in each of its tiers (translator,
//! interpreter with fast handlers, interpreter alone). Any difference in the
//! compared state (general registers, defined flags, exception
//! vector/error/RIP/CR2, data and stack pages, XMM/YMM, x87 state, MXCSR,
//! the XSAVE image: whatever the harness's `Outcome` holds) fails the
//! input, and so does an instruction the CPU runs but the engine stops on
//! (`EmulationFailure`), a soft-side error, or an engine that hangs where
//! the CPU finished (libFuzzer's `-timeout`).
//!
//! Input layout:
//! - bytes 0..8: seed of the harness's generator, which draws the random
//!   start state (registers, data and stack pages, XMM/YMM/MMX/x87
//!   contents, MXCSR and FCW, as its prologue loads them);
//! - bytes 8..10: MXCSR, 10..12: x87 control word, loaded after the
//!   generator's prologue (any 16-bit value is a valid MXCSR here);
//! - bytes 12..: the instruction bytes (at most [`MAX_BODY`]), run as they
//!   are, followed by HLT (a #GP at CPL3, which ends the snippet).
//!
//! Rules for what is not compared, each because the CPU under this KVM is
//! not an oracle for it (and nothing else is skipped):
//! 1. Inputs the CPU does not finish within [`CPU_LIMIT`]: random bytes
//!    make endless loops (`jmp $`, `loop $` with a huge RCX); the CPU is
//!    stopped by a signal (see `watchdog`) and the engine is not run.
//! 2. Flags: those that any instruction of the body, decoded in sequence,
//!    leaves undefined (iced's `rflags_undefined`, and OF after a shift or
//!    rotate by a count other than 1) are masked, as the harness does. On a
//!    difference only, two wider checks follow: the flags left undefined by
//!    an instruction decodable at *any* offset of the body (a jump into the
//!    middle of an instruction) are masked too, and an input in which an
//!    instruction reads (branches on, pushes, adds in) a flag an earlier
//!    one left undefined is not compared. Where the run left the input's
//!    code (a jump into the data or stack pages, whose bytes then run),
//!    the flags left undefined by an instruction decodable at any of the
//!    64 offsets before an exit's RIP in that page are masked as well, and
//!    an input whose body leaves a flag undefined before such a run is not
//!    compared (found: MUL, JMP into data, LOOPNE there read MUL's ZF).
//! 3. Non-deterministic instructions: RDTSC, RDTSCP, RDPID, RDRAND, RDSEED,
//!    and CPUID (KVM's CPUID table is not the engine's CPU model): an input
//!    where one is decodable at any offset of the body is not compared when
//!    it differs.
//! 4. Artifacts of the PVM host, where KVM, not the CPU, has the last word:
//!    (a) PVM turns the CPU's #GP at CPL3 into #UD when its emulator does
//!    not know the instruction (a misaligned SSE operand, a non-canonical
//!    address, INT n through a DPL-0 gate), and #SS (a non-canonical
//!    address through SS) likewise: accepted when KVM says #UD and the
//!    engine #GP or #SS at the same RIP, everything else equal, for a valid
//!    instruction without LOCK with a memory operand, or INT n, and for an
//!    instruction over 15 bytes (the CPU's #GP(0), measured natively; KVM's
//!    emulator stops at an opcode it lacks, x87 here, with #UD first);
//!    (b) an input on which KVM itself fails (an error of the host's CPL0
//!    emulator) is not compared, and is counted on stderr;
//!    (c) KVM delivers INT3 (`CC`), `INT $3` and `INT $4` at CPL3 as #BP
//!    or #OF after the instruction, through the host's own IDT, whose gates
//!    for these two vectors have DPL 3 (Linux's, for INT3 and INTO), where
//!    the CPU with the guest's DPL-0 gates gives #GP(vector * 8 + 2) at the
//!    instruction: accepted when everything else matches (the code page is
//!    INT3 past the input's bytes, so any jump forward lands on one).
//!    Measured natively on this host: `int $4` in a user process gives
//!    SIGSEGV with trapno 4 and RIP after it, `int $5` trapno 13, error 42;
//!    (d) KVM lets port I/O at CPL3 through to the VMM (the reference's
//!    exit loop reads zeros) where the CPU, with IOPL 0 and no I/O bitmap,
//!    gives #GP(0), and emulates INS/OUTS (reading or writing memory
//!    first): when the engine gives #GP(0) at IN/OUT/INS/OUTS, the input is
//!    not compared;
//!    (e) IRET, far transfers, segment loads, LAR/LSL/VERR/VERW and
//!    SGDT/SIDT/SLDT/STR/SMSW use the host's descriptor tables under PVM,
//!    and reads of segment registers (MOV from, PUSH) give the host's
//!    selectors (measured: %cs 0x33, %ds/%fs 0): an input with one in the
//!    body in sequence or at either exit's RIP is not compared;
//!    (f) VEX/XOP code while the guest's CR4.OSXSAVE is clear, and EVEX
//!    code always (the guest's XCR0 has no AVX-512 state), run under the
//!    host's CR4 and XCR0: the engine's #UD there is accepted;
//!    (g) XGETBV and the XSAVE family see the host's XCR0, and KVM runs a
//!    misaligned FXSAVE/FXRSTOR that the CPU refuses with #GP(0): an input
//!    with one in the body in sequence or at either exit's RIP is not
//!    compared;
//!    (h) guest code runs with the host's CR0.AM set: after POPF sets AC,
//!    the CPU raises #AC (vector 17) on a misaligned access where the
//!    guest's CR0.AM is clear; an input where KVM says #AC is not compared;
//!    (i) PVM's emulator also runs bytes the CPU refuses (LOCK on a hint
//!    NOP, prefixes on FXSAVE, ...): the engine's #UD is accepted when the
//!    instruction, run natively in a child process (the harness's
//!    `native` module), raises SIGILL too;
//!    (j) an access whose first byte is canonical and whose last is not
//!    (it crosses 0x8000_0000_0000): KVM answers #PF at the first byte
//!    where the CPU, run natively in a process, gives #GP(0) (`incl
//!    (%rax)` at 0x7fff_ffff_ffff: SIGSEGV with trap number 13): accepted
//!    when KVM says #PF with CR2 in the last bytes below the boundary and
//!    the engine #GP(0) or #SS(0) at the same RIP, everything else equal.
//!    (k) SYSCALL at CPL3 enters PVM's own entry path, which emulates
//!    the transition to the guest's LSTAR (here 0, so CPL0 code at
//!    address 0, itself emulated): an input with SYSCALL in the body in
//!    sequence or at either exit's RIP is not compared (seen: KVM #PF at
//!    RIP 0 with error 0x15, the engine #UD at 0x508 after running the
//!    zero page at CPL0).
//! 5. Where AMD's and Intel's manuals differ, the engine follows AMD's,
//!    the vendor its CPUID names (crates/soft/src/cpuid/leaves.rs), and
//!    this host's CPU is an Intel one: SYSENTER and SYSEXIT in 64-bit
//!    mode are #UD on AMD (APM vol. 3) where Intel gives #GP(0) at CPL3
//!    (or enters): the engine's #UD at either is accepted.
#![no_main]

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../crates/soft/tests/difftest/mod.rs"]
mod difftest;

use std::cell::RefCell;
use std::time::Duration;

use difftest::gen::{snippet, Rng};
use difftest::machine::{Outcome, Snippet, CODE, DATA, FCW_INIT, STACK, X87_INIT};
use difftest::reference::Reference;
use difftest::softrun::{SoftRunner, Tier};
use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter, Instruction, Mnemonic};
use libfuzzer_sys::fuzz_target;

/// The most instruction bytes one input runs.
const MAX_BODY: usize = 64;
/// How long the CPU may take for one input (rule 1).
const CPU_LIMIT: Duration = Duration::from_millis(50);
/// Where the input's MXCSR and x87 control word sit in the stack page:
/// between the generator's x87 values (8 m80s at X87_INIT) and its FCW.
const MXCSR_SLOT: u64 = STACK + 0xc80;
const FCW_SLOT: u64 = STACK + 0xc84;
const _: () = assert!(MXCSR_SLOT >= X87_INIT + 80 && FCW_SLOT + 2 <= FCW_INIT);
/// How many snippets the generator may draw for one input before its
/// layout counts as changed (see `prologue_len`).
const DRAWS: usize = 64;

struct Engines {
    cpu: Reference,
    /// One vCPU per tier of the engine (translator, interpreter with its
    /// fast handlers, interpreter alone), as the differential test runs.
    soft: Vec<SoftRunner>,
}

thread_local! {
    static ENGINES: RefCell<Option<Engines>> = const { RefCell::new(None) };
}

fn engines() -> Engines {
    let cpu = Reference::new().unwrap_or_else(|e| panic!("soft_vs_cpu needs /dev/kvm: {e}"));
    watchdog::start();
    Engines {
        cpu,
        soft: [Tier::Jit, Tier::Interp, Tier::Slow]
            .into_iter()
            .map(SoftRunner::new)
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(s) = build(data) else { return };
    ENGINES.with(|cell| {
        let mut cell = cell.borrow_mut();
        let e = cell.get_or_insert_with(engines);
        check(e, &s, &data[12..data.len().min(12 + MAX_BODY)]);
    });
});

/// The snippet for an input: the generator's start state and prologue,
/// the input's MXCSR and FCW, its bytes, HLT.
fn build(data: &[u8]) -> Option<Snippet> {
    if data.len() < 13 {
        return None;
    }
    let seed = u64::from_le_bytes(data[..8].try_into().ok()?);
    let mxcsr = u16::from_le_bytes([data[8], data[9]]);
    let fcw = u16::from_le_bytes([data[10], data[11]]);
    let body = &data[12..data.len().min(12 + MAX_BODY)];
    // The start state and prologue of a generated snippet (drawn again,
    // from the same seed's stream, in the rare case its body's layout is
    // not plain: see `prologue_len`).
    let mut rng = Rng::new(seed);
    let (mut s, len) = (0..DRAWS)
        .find_map(|_| {
            // The generator asks the native check too (`default_signals`).
            let s = default_signals::around(|| snippet(&mut rng));
            prologue_len(&s).map(|len| (s, len))
        })
        .expect("the differential generator's snippets are no longer prologue, body, HLT");
    let mut code = s.code[..len].to_vec();
    // ldmxcsr [MXCSR_SLOT]; fnclex; fldcw [FCW_SLOT] (FNCLEX: no exception
    // the prologue left pending is raised by the FLDCW, before the body).
    code.extend_from_slice(&[0x0f, 0xae, 0x14, 0x25]);
    code.extend_from_slice(&(MXCSR_SLOT as u32).to_le_bytes());
    code.extend_from_slice(&[0xdb, 0xe2, 0xd9, 0x2c, 0x25]);
    code.extend_from_slice(&(FCW_SLOT as u32).to_le_bytes());
    let body_ip = CODE + code.len() as u64;
    code.extend_from_slice(body);
    code.push(0xf4);
    let slot = |a: u64| (a - STACK) as usize;
    s.stack[slot(MXCSR_SLOT)..slot(MXCSR_SLOT) + 4]
        .copy_from_slice(&u32::from(mxcsr).to_le_bytes());
    s.stack[slot(FCW_SLOT)..slot(FCW_SLOT) + 2].copy_from_slice(&fcw.to_le_bytes());
    s.text = disassemble(&code[code.len() - body.len() - 1..], body_ip);
    s.undefined_flags = linear_undefined(body, body_ip);
    // The generator's UD2 patch for the reference points into its own
    // body, which is gone.
    s.cpu_ud_at = None;
    s.code = code;
    Some(s)
}

/// Where the generator's prologue ends in one of its snippets: the code is
/// prologue, one instruction per `codes` entry, HLT. None when decoding
/// the code in sequence does not end that way (a prefix the generator put
/// in front of an instruction can make the decoder split the bytes
/// differently).
fn prologue_len(s: &Snippet) -> Option<usize> {
    let mut ends = vec![0];
    let mut codes = Vec::new();
    let mut d = Decoder::with_ip(64, &s.code, CODE, DecoderOptions::NONE);
    while d.can_decode() {
        codes.push(d.decode().code());
        ends.push(d.position());
    }
    let n = codes.len().checked_sub(s.codes.len() + 1)?;
    let plain =
        codes.last() == Some(&iced_x86::Code::Hlt) && codes[n..codes.len() - 1] == s.codes[..];
    plain.then_some(ends[n])
}

fn disassemble(code: &[u8], ip: u64) -> Vec<String> {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut f = GasFormatter::new();
    let mut out = Vec::new();
    while d.can_decode() {
        let pos = d.position();
        let ins = d.decode();
        let mut t = String::new();
        f.format(&ins, &mut t);
        let bytes: Vec<String> = code[pos..d.position()]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push(format!("{:#x}: {:<30} {t}", ins.ip(), bytes.join(" ")));
    }
    out
}

/// RFLAGS bits as the harness's outcome holds them, from iced's flag set.
fn flag_bits(f: u32) -> u64 {
    use iced_x86::RflagsBits as B;
    [
        (B::CF, 1u64 << 0),
        (B::PF, 1 << 2),
        (B::AF, 1 << 4),
        (B::ZF, 1 << 6),
        (B::SF, 1 << 7),
        (B::IF, 1 << 9),
        (B::DF, 1 << 10),
        (B::OF, 1 << 11),
        (B::AC, 1 << 18),
    ]
    .iter()
    .filter(|(b, _)| f & b != 0)
    .fold(0, |m, (_, v)| m | v)
}

/// The bytes the CPU sees from the body on: the body, the HLT after it
/// and the INT3 filling the rest of the code page (enough for one more
/// instruction).
fn seen(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.push(0xf4);
    v.extend_from_slice(&[0xcc; 15]);
    v
}

/// The instructions that start in the body, in sequence.
fn linear(body: &[u8], ip: u64) -> Vec<Instruction> {
    let bytes = seen(body);
    let mut d = Decoder::with_ip(64, &bytes, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.position() < body.len() {
        out.push(d.decode());
    }
    out
}

/// The instructions decodable at every offset of the body.
fn every_offset(body: &[u8], ip: u64) -> Vec<Instruction> {
    let bytes = seen(body);
    (0..body.len())
        .map(|o| {
            let mut d = Decoder::with_ip(64, &bytes[o..], ip + o as u64, DecoderOptions::NONE);
            d.decode()
        })
        .collect()
}

/// Rule 2: the flags an instruction may leave undefined: iced's set, and
/// OF for shifts and rotates by a count other than an immediate 1 (the SDM:
/// OF is defined only for 1-bit shifts).
fn undefined_flags(i: &Instruction) -> u64 {
    use Mnemonic as M;
    let shift = matches!(
        i.mnemonic(),
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    );
    let by_one = (0..i.op_count())
        .any(|k| matches!(i.op_kind(k), iced_x86::OpKind::Immediate8) && i.immediate8() == 1)
        || !(0..i.op_count()).any(|k| {
            matches!(i.op_kind(k), iced_x86::OpKind::Immediate8)
                || (i.op_kind(k) == iced_x86::OpKind::Register
                    && i.op_register(k) == iced_x86::Register::CL)
        });
    let of = if shift && !by_one { 1 << 11 } else { 0 };
    flag_bits(i.rflags_undefined()) | of
}

/// Rule 2: flags left undefined by the body in sequence.
fn linear_undefined(body: &[u8], ip: u64) -> u64 {
    linear(body, ip)
        .iter()
        .fold(0, |m, i| m | undefined_flags(i))
}

/// Rule 2, for code run outside the input: the flags left undefined by an
/// instruction decodable at any of the 64 offsets before `rip`, when
/// `rip` is in the data or stack pages (the path there is not known).
fn outside_undefined(s: &Snippet, o: &Outcome, rip: u64) -> u64 {
    if (CODE..CODE + 0x1000).contains(&rip) {
        return 0;
    }
    (rip.saturating_sub(64)..rip)
        .filter_map(|a| instruction_at(s, o, a))
        .fold(0, |m, i| m | undefined_flags(&i))
}

/// Rule 2: does an instruction read a flag an earlier one left undefined?
/// Or does the body leave a flag undefined and the run go on outside the
/// input (an exit in the data or stack pages), whose code may read it?
fn reads_undefined(body: &[u8], ip: u64, exits: [u64; 2]) -> bool {
    let mut undefined = 0;
    for i in linear(body, ip) {
        if flag_bits(i.rflags_read()) & undefined != 0 {
            return true;
        }
        let written = if difftest::gen::may_write_no_flags(&i) {
            0
        } else {
            flag_bits(i.rflags_modified())
        };
        undefined = (undefined & !written) | undefined_flags(&i);
    }
    let left = exits.iter().any(|r| !(CODE..CODE + 0x1000).contains(r));
    left && undefined != 0
}

/// Rule 3: a non-deterministic instruction decodable anywhere in the body.
fn nondeterministic(body: &[u8], ip: u64) -> Option<Mnemonic> {
    every_offset(body, ip)
        .iter()
        .map(|i| i.mnemonic())
        .find(|m| {
            matches!(
                m,
                Mnemonic::Rdtsc
                    | Mnemonic::Rdtscp
                    | Mnemonic::Rdpid
                    | Mnemonic::Rdrand
                    | Mnemonic::Rdseed
                    | Mnemonic::Cpuid
            )
        })
}

/// The instruction at a guest address, if the address is in a page the
/// snippet can reach.
fn instruction_at(s: &Snippet, o: &Outcome, addr: u64) -> Option<Instruction> {
    let bytes = bytes_at(s, o, addr)?;
    Some(Decoder::with_ip(64, &bytes, addr, DecoderOptions::NONE).decode())
}

/// Rule 4a: PVM turns the CPU's #GP at CPL3 into #UD when its instruction
/// emulator does not know the instruction (#SS too, for a non-canonical
/// address through SS): accepted when KVM gives #UD and the engine #GP or
/// #SS at the same RIP, everything else equal, for a valid
/// instruction without LOCK that either has a memory operand (misaligned
/// SSE, non-canonical address) or is INT n (a DPL-0 gate); and for an
/// instruction over 15 bytes, which the CPU refuses with #GP(0) while
/// KVM's emulator gives #UD for an opcode it does not emulate before it
/// reaches the 16th byte (seen: ten REX prefixes, then FISTTP with SIB and
/// disp32, 18 bytes; natively #GP(0) at its first byte).
fn pvm_gp_as_ud(s: &Snippet, cpu: &Outcome, soft: &Outcome) -> bool {
    if cpu.vector != 6 || !matches!(soft.vector, 12 | 13) || cpu.rip != soft.rip {
        return false;
    }
    let Some(bytes) = bytes_at(s, soft, soft.rip) else {
        return false;
    };
    let ins = Decoder::with_ip(64, &bytes, soft.rip, DecoderOptions::NONE).decode();
    let too_long = (soft.vector, soft.error) == (13, Some(0)) && over_15_bytes(&bytes, soft.rip);
    let memory = (0..ins.op_count()).any(|i| ins.op_kind(i) == iced_x86::OpKind::Memory);
    let int_n = ins.mnemonic() == Mnemonic::Int;
    let known = !ins.is_invalid() && !ins.has_lock_prefix() && (memory || int_n);
    if !(known || too_long) {
        return false;
    }
    let mut patched = soft.clone();
    patched.vector = 6;
    patched.error = None;
    patched == *cpu
}

/// Whether `bytes` start with a valid instruction longer than 15 bytes
/// (which iced calls invalid): a run of legacy and REX prefixes, then an
/// instruction that decodes with the last of them alone.
fn over_15_bytes(bytes: &[u8], ip: u64) -> bool {
    let prefixes = bytes
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0x40..=0x4f
                    | 0x66
                    | 0x67
                    | 0xf0
                    | 0xf2
                    | 0xf3
                    | 0x26
                    | 0x2e
                    | 0x36
                    | 0x3e
                    | 0x64
                    | 0x65
            )
        })
        .count();
    if prefixes < 2 {
        return false;
    }
    let rest = &bytes[prefixes - 1..];
    let ins = Decoder::with_ip(64, rest, ip, DecoderOptions::NONE).decode();
    !ins.is_invalid() && prefixes - 1 + ins.len() > 15
}

/// Whether an instruction `is` one the CPU is no oracle for, in the body
/// (`body` at `ip`) in sequence or at either run's exit RIP (the shape of
/// rules 4e, 4g and 4k).
fn in_body_or_at_exits(
    s: &Snippet,
    [cpu, soft]: [&Outcome; 2],
    (body, ip): (&[u8], u64),
    is: impl Fn(&Instruction) -> bool,
) -> bool {
    linear(body, ip).iter().any(&is)
        || [cpu.rip, soft.rip]
            .iter()
            .filter_map(|&r| instruction_at(s, soft, r))
            .any(|i| is(&i))
}

/// Rule 4e: instructions that use descriptor tables or segment registers
/// (IRET, far transfers, segment loads and reads, LAR/LSL/VERR/VERW,
/// SGDT/SIDT/SLDT/STR/SMSW): PVM runs guest user code on the host's own
/// tables and selectors and
/// emulates the rest, so the CPU is no oracle for them. An input is not
/// compared when one is in the body in sequence or at either exit's RIP.
fn descriptor_tables(s: &Snippet, cpu: &Outcome, soft: &Outcome, body: &[u8], ip: u64) -> bool {
    let uses = |i: &Instruction| {
        use Mnemonic as M;
        let far = matches!(
            i.op0_kind(),
            iced_x86::OpKind::FarBranch16 | iced_x86::OpKind::FarBranch32
        ) || matches!(i.mnemonic(), M::Retf | M::Iret | M::Iretd | M::Iretq)
            || matches!(
                i.memory_size(),
                iced_x86::MemorySize::SegPtr16
                    | iced_x86::MemorySize::SegPtr32
                    | iced_x86::MemorySize::SegPtr64
            );
        let sreg = (0..i.op_count()).any(|k| {
            i.op_kind(k) == iced_x86::OpKind::Register && i.op_register(k).is_segment_register()
        });
        far || sreg
            || matches!(
                i.mnemonic(),
                M::Lds
                    | M::Les
                    | M::Lfs
                    | M::Lgs
                    | M::Lss
                    | M::Lar
                    | M::Lsl
                    | M::Verr
                    | M::Verw
                    | M::Sgdt
                    | M::Sidt
                    | M::Sldt
                    | M::Str
                    | M::Smsw
            )
    };
    in_body_or_at_exits(s, [cpu, soft], (body, ip), uses)
}

/// Rule 4f: VEX/EVEX/XOP instructions run at CPL3 under the host's CR4 and
/// XCR0, not the guest's: where the guest has CR4.OSXSAVE clear (or for
/// EVEX, whose state the engine never enables) the engine's #UD is the
/// architecture's answer and the CPU's is not.
fn host_xsave_state(s: &Snippet, soft: &Outcome) -> bool {
    if soft.vector != 6 {
        return false;
    }
    let Some(ins) = instruction_at(s, soft, soft.rip) else {
        return false;
    };
    let osxsave = difftest::machine::user_sregs().cr4 & (1 << 18) != 0;
    match ins.encoding() {
        iced_x86::EncodingKind::Legacy | iced_x86::EncodingKind::D3NOW => false,
        iced_x86::EncodingKind::VEX | iced_x86::EncodingKind::XOP => !osxsave,
        _ => true,
    }
}

/// Rule 4g: XSAVE-family instructions and XGETBV run at CPL3 with the
/// host's XCR0 (AVX-512 and AMX state on) where the guest's is 7, and this
/// host's KVM executes a misaligned FXSAVE/FXRSTOR where the CPU gives
/// #GP(0): an input with one of them in the body in sequence or at either
/// exit's RIP is not compared.
fn host_xcr0(s: &Snippet, cpu: &Outcome, soft: &Outcome, body: &[u8], ip: u64) -> bool {
    let xsave = |i: &Instruction| {
        use difftest::operands::{is_fxsave_family, is_xsave_family};
        let m = i.mnemonic();
        m == Mnemonic::Xgetbv || is_xsave_family(m) || is_fxsave_family(m)
    };
    in_body_or_at_exits(s, [cpu, soft], (body, ip), xsave)
}

/// Rule 4i: the engine's #UD at an instruction that the CPU, run natively
/// in a child process (the harness's `native` module), refuses with SIGILL
/// too: whatever KVM answered came from PVM's instruction emulator.
fn native_ud(s: &Snippet, soft: &Outcome) -> bool {
    if soft.vector != 6 {
        return false;
    }
    let (Some(bytes), Some(ins)) = (
        bytes_at(s, soft, soft.rip),
        instruction_at(s, soft, soft.rip),
    ) else {
        return false;
    };
    let len = ins.len().clamp(1, bytes.len());
    default_signals::around(|| difftest::native::raises_ud(&bytes[..len]))
}

/// The native check's child (the harness's `native` module, called here,
/// by the generator and by the reference for bytes the decoder calls
/// invalid) must die of
/// the signal its instruction raises (SIGILL is the CPU's #UD), but it
/// inherits the handlers that libFuzzer and ASAN install in this process,
/// which would report a crash of the fuzzer (and write an artifact)
/// instead. So the signals an instruction can raise get their default
/// action while the check, the generator or the reference run forks and
/// waits; this process itself runs no guest bytes meanwhile (KVM runs
/// them).
mod default_signals {
    const SIGNALS: [libc::c_int; 6] = [
        libc::SIGILL,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];

    pub fn around<T>(f: impl FnOnce() -> T) -> T {
        // SAFETY: sigaction is plain old data; all-zero is a valid value
        // (no handler, empty mask, no flags), overwritten below.
        let mut old: [libc::sigaction; 6] = unsafe { std::mem::zeroed() };
        // SAFETY: as above; SIG_DFL with an empty mask is the default action.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        for (sig, old) in SIGNALS.iter().zip(old.iter_mut()) {
            // SAFETY: valid signal numbers and pointers to live sigaction
            // values; the previous action is kept in `old` for the restore.
            unsafe { libc::sigaction(*sig, &dfl, old) };
        }
        let r = f();
        for (sig, old) in SIGNALS.iter().zip(old.iter()) {
            // SAFETY: restores the action saved above for the same signal.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        r
    }
}

/// Up to 32 bytes at a guest address as the snippet left them (enough to
/// see an instruction run past 15 bytes): the code page (INT3 past the
/// code, as `load` fills it), data and stack pages.
fn bytes_at(s: &Snippet, o: &Outcome, addr: u64) -> Option<Vec<u8>> {
    let within = |base: u64, v: &[u8], len: usize| {
        let off = usize::try_from(addr.checked_sub(base)?).ok()?;
        (off < len).then(|| {
            let mut b: Vec<u8> = v.iter().skip(off).take(32).copied().collect();
            b.resize(32, 0xcc);
            b.truncate(len - off);
            b
        })
    };
    within(CODE, &s.code, 0x1000)
        .or_else(|| within(DATA, &o.data, o.data.len()))
        .or_else(|| within(STACK, &o.stack, o.stack.len()))
}

/// Rule 4c: KVM delivers INT3 (CC), `INT $3` and `INT $4` at CPL3 through
/// the host's IDT (DPL-3 gates for #BP and #OF) as a trap after the
/// instruction, where the guest's IDT gate of DPL 0 makes the CPU (and the
/// engine) give #GP(vector * 8 + 2) at the instruction itself (with RF in
/// the pushed RFLAGS, as for every fault).
fn pvm_int3(s: &Snippet, cpu: &Outcome, soft: &Outcome) -> bool {
    // INT3 or INT n with or without prefixes in front.
    let Some(ins) = instruction_at(s, soft, soft.rip) else {
        return false;
    };
    let vector = match ins.mnemonic() {
        Mnemonic::Int3 => 3,
        Mnemonic::Int if matches!(ins.immediate8(), 3 | 4) => u64::from(ins.immediate8()),
        _ => return false,
    };
    let gp = Some(vector * 8 + 2);
    if cpu.vector != vector || (soft.vector, soft.error) != (13, gp) {
        return false;
    }
    let mut patched = soft.clone();
    patched.vector = vector;
    patched.error = None;
    patched.rip += ins.len() as u64;
    patched.rflags &= !(1 << 16);
    patched == *cpu
}

/// Rule 4d: KVM lets port I/O at CPL3 through to the VMM (the reference
/// reads zeros) and emulates INS/OUTS, memory access first, where the CPU
/// checks IOPL 0 and the TSS's I/O bitmap (none here) and gives #GP(0):
/// the engine's #GP(0) at an I/O instruction is not compared further.
fn pvm_port_io(s: &Snippet, soft: &Outcome) -> bool {
    if (soft.vector, soft.error) != (13, Some(0)) {
        return false;
    }
    let Some(ins) = instruction_at(s, soft, soft.rip) else {
        return false;
    };
    matches!(
        ins.mnemonic(),
        Mnemonic::In
            | Mnemonic::Out
            | Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd
    )
}

/// Rule 4j: an access crossing the canonical boundary upwards: KVM gives
/// #PF at its first byte (below 0x8000_0000_0000) where the CPU natively
/// gives #GP(0) (#SS(0) through SS), as the engine does.
fn pvm_canonical_crossing(cpu: &Outcome, soft: &Outcome) -> bool {
    const BOUNDARY: u64 = 0x8000_0000_0000;
    let below = cpu.cr2.is_some_and(|a| a < BOUNDARY && BOUNDARY - a < 64);
    if cpu.vector != 14 || !below || !matches!(soft.vector, 12 | 13) || soft.error != Some(0) {
        return false;
    }
    let mut patched = soft.clone();
    (patched.vector, patched.error, patched.cr2) = (cpu.vector, cpu.error, cpu.cr2);
    patched == *cpu
}

/// Rule 4k: SYSCALL goes through PVM's own entry path.
fn pvm_syscall(s: &Snippet, cpu: &Outcome, soft: &Outcome, body: &[u8], ip: u64) -> bool {
    let is = |i: &Instruction| i.mnemonic() == Mnemonic::Syscall;
    in_body_or_at_exits(s, [cpu, soft], (body, ip), is)
}

/// Rule 5: SYSENTER/SYSEXIT in 64-bit mode, #UD on the engine's vendor
/// (AMD), not on this Intel host.
fn amd_sysenter(s: &Snippet, soft: &Outcome) -> bool {
    soft.vector == 6
        && instruction_at(s, soft, soft.rip)
            .is_some_and(|i| matches!(i.mnemonic(), Mnemonic::Sysenter | Mnemonic::Sysexit))
}

fn check(e: &mut Engines, s: &Snippet, body: &[u8]) {
    let body_ip = CODE + (s.code.len() - body.len() - 1) as u64;
    let guard = watchdog::arm(CPU_LIMIT);
    // The reference asks the native check about bytes the decoder calls
    // invalid (see `default_signals`).
    let cpu = default_signals::around(|| e.cpu.run(s));
    if guard.fired() {
        return; // rule 1
    }
    drop(guard);
    let cpu = match cpu {
        Ok(o) => o,
        Err(err) => {
            eprintln!("soft_vs_cpu: KVM failed, not compared (rule 4b): {err}");
            return;
        }
    };
    for soft in &mut e.soft {
        let tier = soft.tier;
        match soft.run(s) {
            Ok(o) => compare(s, body, body_ip, &cpu, &o, tier),
            Err(err) => fail(
                s,
                &format!("the engine ({tier:?} tier) failed where the CPU ran: {err}"),
                &cpu,
                None,
            ),
        }
    }
}

/// Compares one tier's outcome with the CPU's, by the rules.
fn compare(s: &Snippet, body: &[u8], body_ip: u64, cpu: &Outcome, soft: &Outcome, tier: Tier) {
    if cpu == soft {
        return;
    }
    // Rule 2, wider: flags left undefined by anything decodable in the body.
    let wide = every_offset(body, body_ip)
        .iter()
        .fold(0, |m, i| m | undefined_flags(i))
        | outside_undefined(s, soft, cpu.rip)
        | outside_undefined(s, soft, soft.rip);
    let (mut c, mut g) = (cpu.clone(), soft.clone());
    c.rflags &= !wide;
    g.rflags &= !wide;
    if c == g
        || reads_undefined(body, body_ip, [cpu.rip, soft.rip])
        || pvm_gp_as_ud(s, &c, &g)
        || pvm_int3(s, &c, &g)
        || pvm_port_io(s, &g)
        || descriptor_tables(s, &c, &g, body, body_ip)
        || host_xsave_state(s, &g)
        || host_xcr0(s, &c, &g, body, body_ip)
        || (c.vector == 17 && difftest::machine::user_sregs().cr0 & (1 << 18) == 0)
        || native_ud(s, &g)
        || pvm_canonical_crossing(&c, &g)
        || amd_sysenter(s, &g)
        || pvm_syscall(s, &c, &g, body, body_ip)
        || nondeterministic(body, body_ip).is_some()
    {
        return;
    }
    let what = format!(
        "the engine ({tier:?} tier) differs from the CPU (flags masked: {:#x}, on difference {wide:#x})",
        s.undefined_flags
    );
    fail(s, &what, cpu, Some(soft));
}

fn fail(s: &Snippet, what: &str, cpu: &Outcome, soft: Option<&Outcome>) -> ! {
    let mut msg = format!("{what}\ncode after the prologue:\n");
    for line in &s.text {
        msg.push_str(&format!("  {line}\n"));
    }
    msg.push_str(&format!("start regs: {:x?}\n", s.regs));
    if let Some(g) = soft {
        msg.push_str(&diff(cpu, g));
        // Code run outside the input (a jump into the data or stack
        // pages): the bytes up to the CPU's exit, to decode by hand.
        for (who, rip) in [("cpu", cpu.rip), ("soft", g.rip)] {
            if (CODE..CODE + 0x1000).contains(&rip) {
                continue;
            }
            let from = rip.saturating_sub(64);
            let bytes: Vec<String> = (from..rip + 16)
                .filter_map(|a| bytes_at(s, g, a).and_then(|b| b.first().copied()))
                .map(|b| format!("{b:02x}"))
                .collect();
            msg.push_str(&format!(
                "bytes from {from:#x} ({who} exit at {rip:#x}): {}\n",
                bytes.join(" ")
            ));
        }
    } else {
        msg.push_str(&format!(
            "cpu: vector {} error {:?} rip {:#x}\n",
            cpu.vector, cpu.error, cpu.rip
        ));
    }
    panic!("{msg}");
}

fn diff(w: &Outcome, g: &Outcome) -> String {
    let mut out = String::new();
    for i in 0..16 {
        if w.gpr[i] != g.gpr[i] {
            out.push_str(&format!(
                "gpr[{i}]: cpu {:#x} soft {:#x}\n",
                w.gpr[i], g.gpr[i]
            ));
        }
    }
    let exit = |o: &Outcome| (o.vector, o.error, o.rip, o.rsp, o.cr2);
    out.push_str(&format!(
        "exit (vector, error, rip, rsp, cr2): cpu {:x?} soft {:x?}\n",
        exit(w),
        exit(g)
    ));
    if w.rflags != g.rflags {
        out.push_str(&format!(
            "rflags: cpu {:#x} soft {:#x}\n",
            w.rflags, g.rflags
        ));
    }
    for (name, a, b) in [("data", &w.data, &g.data), ("stack", &w.stack, &g.stack)] {
        if let Some(i) = a.iter().zip(b.iter()).position(|(x, y)| x != y) {
            let q = |v: &[u8]| {
                let j = i & !7;
                v.get(j..j + 8)
                    .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            };
            out.push_str(&format!(
                "{name}[{:#x}] (first difference): cpu {:x?} soft {:x?}\n",
                i & !7,
                q(a),
                q(b)
            ));
        }
    }
    for (i, (a, b)) in w.xmm.iter().zip(&g.xmm).enumerate() {
        if a != b {
            out.push_str(&format!("xmm{i}: cpu {a:x?} soft {b:x?}\n"));
        }
    }
    for (i, (a, b)) in w.st.iter().zip(&g.st).enumerate() {
        if a != b {
            out.push_str(&format!("st{i}: cpu {a:x?} soft {b:x?}\n"));
        }
    }
    // Whatever else the harness compares (MXCSR, FCW, XSAVE image, ...),
    // with the fields above cleared.
    let rest = |o: &Outcome| {
        let mut o = o.clone();
        (o.gpr, o.data, o.stack, o.xmm, o.st) =
            ([0; 16], Vec::new(), Vec::new(), Vec::new(), Vec::new());
        (o.vector, o.error, o.rip, o.rsp, o.cr2, o.rflags) = (0, None, 0, 0, None, 0);
        o
    };
    let (a, b) = (rest(w), rest(g));
    if a != b {
        out.push_str(&format!(
            "other state: cpu {a:x?}\n             soft {b:x?}\n"
        ));
    }
    out
}

/// Ends a `KVM_RUN` that takes too long (rule 1). A thread, started once,
/// looks every few milliseconds at the armed deadline; past it, it sends
/// the fuzzing thread [`watchdog::signal`] (a no-op handler installed
/// without `SA_RESTART`, so `KVM_RUN` returns `EINTR`), again on each look
/// until the run is disarmed, so a signal that lands just before the thread
/// enters `KVM_RUN` is followed by another.
mod watchdog {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, Once};
    use std::time::{Duration, Instant};

    struct Armed {
        thread: libc::pthread_t,
        deadline: Instant,
    }

    static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
    static FIRED: AtomicBool = AtomicBool::new(false);

    fn signal() -> libc::c_int {
        vmm_sys_util::signal::SIGRTMIN() + 3
    }

    extern "C" fn nothing(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

    fn lock() -> std::sync::MutexGuard<'static, Option<Armed>> {
        ARMED.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs the handler and starts the thread (once).
    pub fn start() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            vmm_sys_util::signal::register_signal_handler(signal(), nothing)
                .expect("watchdog signal handler");
            std::thread::spawn(|| loop {
                std::thread::sleep(Duration::from_millis(5));
                let armed = lock();
                if let Some(a) = armed.as_ref() {
                    if Instant::now() > a.deadline {
                        FIRED.store(true, Ordering::SeqCst);
                        // SAFETY: `a.thread` is the fuzzing thread, which
                        // disarms (under this lock) before it could exit,
                        // so it is alive; the signal's handler is
                        // installed above and does nothing.
                        unsafe { libc::pthread_kill(a.thread, signal()) };
                    }
                }
            });
        });
    }

    /// Watches the calling thread until the guard drops.
    pub struct Guard(());

    pub fn arm(limit: Duration) -> Guard {
        FIRED.store(false, Ordering::SeqCst);
        *lock() = Some(Armed {
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            deadline: Instant::now() + limit,
        });
        Guard(())
    }

    impl Guard {
        /// Whether the run went past its deadline.
        pub fn fired(&self) -> bool {
            FIRED.load(Ordering::SeqCst)
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            *lock() = None;
        }
    }
}
