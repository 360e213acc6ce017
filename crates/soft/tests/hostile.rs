//! Bad guest code never panics or hangs the soft engine: random byte
//! streams run as long-mode CPL0 code (with and without an IDT), an
//! undefined opcode, a jump into unmapped memory and a triple fault, each
//! with its architectural result. Every run is bounded by a kick from a
//! timer thread.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hypervisor::{DescriptorTable, Hypervisor, Regs, Segment, SpecialRegs, Vcpu, VmExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 4 << 20;
const GDT: u64 = 0x500;
const TSS: u64 = 0x600;
const IDT: u64 = 0x6000;
const STUBS: u64 = 0x7000;
const STACK_TOP: u64 = 0x9000;
const CODE: u64 = 0x10_0000;
/// Linear addresses from 2 MiB up are not mapped.
const UNMAPPED: u64 = 0x4000_0000;

struct Machine {
    vm: Box<dyn hypervisor::Vm>,
    vcpu: Box<dyn Vcpu>,
    mem: GuestMemoryMmap,
}

/// Identity-maps the first 2 MiB (4 KiB pages, supervisor, writable), a
/// GDT with 64-bit kernel code/data and a TSS, and (when `idt`) 32 gates
/// to stubs that push their vector and halt.
fn machine(code: &[u8], idt: bool) -> Machine {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let w = |a: u64, v: u64| mem.write_obj(v, GuestAddress(a)).expect("in memory");
    w(0x1000, 0x2000 | 3);
    w(0x2000, 0x3000 | 3);
    w(0x3000, 0x4000 | 3);
    for p in 0..512u64 {
        w(0x4000 + 8 * p, (p << 12) | 3);
    }
    w(GDT + 8, 0x00af_9b00_0000_ffff);
    w(GDT + 16, 0x00cf_9300_0000_ffff);
    w(
        GDT + 24,
        0x67 | ((TSS & 0xff_ffff) << 16) | (0x8b << 40) | ((TSS >> 24) << 56),
    );
    w(TSS + 4, STACK_TOP);
    for v in 0..32u64 {
        let off = STUBS + 4 * v;
        let lo = (off & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((off >> 16) << 48);
        w(IDT + 16 * v, lo);
        w(IDT + 16 * v + 8, 0);
        mem.write_slice(&[0x6a, v as u8, 0xf4, 0x90], GuestAddress(off))
            .expect("stub");
    }
    mem.write_slice(code, GuestAddress(CODE)).expect("code");
    // The tiers as the environment sets them (`VESSEL_SOFT_JIT_HOT=0`
    // translates every block); a block the translator's emitter fails on
    // fails the test.
    let hv = soft::SoftHypervisor::with_config(soft::SoftConfig {
        strict: true,
        ..soft::SoftConfig::from_env()
    });
    let vm = hv.create_vm().expect("vm");
    vm.set_memory(&mem).expect("set memory");
    let mut vcpu = vm
        .create_vcpu(0, Arc::new(hypervisor::NoDevices))
        .expect("vcpu");
    vcpu.set_cpuid(&hv.supported_cpuid().expect("cpuid"))
        .expect("set cpuid");
    let seg = |selector: u16, code: bool| Segment {
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: true,
        s: true,
        l: code,
        db: !code,
        g: true,
        ..Default::default()
    };
    let data = seg(0x10, false);
    let sregs = SpecialRegs {
        cs: seg(0x08, true),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            base: TSS,
            limit: 0x67,
            selector: 0x18,
            type_: 0xb,
            present: true,
            ..Default::default()
        },
        ldt: Segment {
            type_: 2,
            present: true,
            unusable: true,
            ..Default::default()
        },
        gdt: DescriptorTable {
            base: GDT,
            limit: 0x1f,
        },
        idt: DescriptorTable {
            base: IDT,
            limit: if idt { 32 * 16 - 1 } else { 0 },
        },
        cr0: 0x8001_0033,
        cr2: 0,
        cr3: 0x1000,
        cr4: 0x620,
        cr8: 0,
        efer: 0xd01,
        apic_base: 0xfee0_0900,
    };
    vcpu.set_special_regs(&sregs).expect("sregs");
    vcpu.set_regs(&Regs {
        rip: CODE,
        rsp: STACK_TOP,
        rflags: 2,
        ..Default::default()
    })
    .expect("regs");
    Machine { vm, vcpu, mem }
}

/// Runs until the vCPU stops for a reason other than a kick, or until a
/// timer thread's kick after `limit` ends the run.
fn run_bounded(vcpu: &mut dyn Vcpu, limit: Duration) -> VmExit {
    let kicker = vcpu.kicker();
    kicker.clear();
    let k = kicker.clone();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let timer = thread::spawn(move || {
        if wait.recv_timeout(limit).is_err() {
            k.kick();
        }
    });
    let exit = vcpu.run().expect("run");
    // The timer may have gone already (it kicked).
    let _ = done.send(());
    timer.join().expect("timer thread");
    kicker.clear();
    exit
}

/// The vector and error code a stub recorded, and the frame's RIP.
fn handled(m: &mut Machine) -> (u64, Option<u64>, u64) {
    let rsp = m.vcpu.regs().expect("regs").rsp;
    let q = |a: u64| -> u64 { m.mem.read_obj(GuestAddress(a)).expect("stack in memory") };
    let v = q(rsp);
    if matches!(v, 8 | 10..=14 | 17) {
        (v, Some(q(rsp + 8)), q(rsp + 16))
    } else {
        (v, None, q(rsp + 8))
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn random_code(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

#[test]
fn random_bytes_never_panic_or_hang() {
    let seeds: u64 = std::env::var("HOSTILE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let mut exits = std::collections::BTreeMap::<String, u32>::new();
    for seed in 0..seeds {
        for idt in [true, false] {
            let code = random_code(seed, 4096);
            let mut m = machine(&code, idt);
            let exit = run_bounded(m.vcpu.as_mut(), Duration::from_millis(20));
            let name = format!("{exit:?}");
            let kind = name.split([' ', '{', '(']).next().unwrap_or("").to_string();
            *exits.entry(kind).or_default() += 1;
            // The vCPU is still usable after whatever happened.
            m.vcpu.regs().expect("regs after run");
            m.vcpu.special_regs().expect("sregs after run");
        }
    }
    eprintln!("exits over {seeds} seeds: {exits:?}");
    assert!(exits.values().sum::<u32>() == 2 * seeds as u32);
}

#[test]
fn undefined_opcode_is_delivered_through_the_idt() {
    // nop; ud2
    let mut m = machine(&[0x90, 0x0f, 0x0b], true);
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Hlt), "{exit:?}");
    let (v, err, rip) = handled(&mut m);
    assert_eq!(v, 6);
    assert_eq!(err, None);
    assert_eq!(rip, CODE + 1);
}

#[test]
fn an_instruction_over_15_bytes_is_a_general_protection_fault() {
    // nop; seven REX prefixes and MOV r10, imm64: 16 bytes, one past the
    // limit, which the CPU refuses with #GP(0), not #UD.
    let mut code = vec![0x90, 0x49, 0x49, 0x41, 0x49, 0x49, 0x49, 0x49, 0xba];
    code.extend_from_slice(&[0x11; 8]);
    let mut m = machine(&code, true);
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Hlt), "{exit:?}");
    assert_eq!(handled(&mut m), (13, Some(0), CODE + 1));
    // Fourteen REX prefixes before an undefined opcode (FF /7 with a
    // 32-bit displacement): the length is checked first, so #GP(0) too.
    let mut m = machine(
        &[
            0x90, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41,
            0x41, 0xff, 0xba, 0x33, 0x33, 0xff, 0xad,
        ],
        true,
    );
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Hlt), "{exit:?}");
    assert_eq!(handled(&mut m), (13, Some(0), CODE + 1));
    // One prefix fewer: 15 bytes, a valid instruction.
    code.remove(1);
    code.push(0x0f);
    code.push(0x0b);
    let mut m = machine(&code, true);
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Hlt), "{exit:?}");
    assert_eq!(handled(&mut m), (6, None, CODE + 16));
}

#[test]
fn jump_to_unmapped_memory_faults_with_cr2() {
    // mov rax, UNMAPPED; jmp rax
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&UNMAPPED.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xe0]);
    let mut m = machine(&code, true);
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Hlt), "{exit:?}");
    let (v, err, rip) = handled(&mut m);
    assert_eq!(v, 14);
    // Not present, supervisor, instruction fetch (NX enabled).
    assert_eq!(err, Some(0x10));
    assert_eq!(rip, UNMAPPED);
    assert_eq!(m.vcpu.special_regs().expect("sregs").cr2, UNMAPPED);
}

/// A segment load whose descriptor read faults (the GDT runs into an
/// unmapped page) delivers #PF with CR2 at the descriptor and leaves RSP
/// as before the POP.
#[test]
fn a_fault_reading_a_descriptor_keeps_its_cr2() {
    // The GDT's first five entries copied to just below 2 MiB, so entry 5
    // (selector 0x28) lies in the first unmapped page.
    const BASE: u64 = 0x20_0000 - 0x28;
    let mut code = vec![0x0f, 0x01, 0x15, 5, 0, 0, 0]; // lgdt [rip + 5]
    code.extend_from_slice(&[0x6a, 0x28]); // push 0x28
    code.extend_from_slice(&[0x0f, 0xa1]); // pop fs
    code.push(0xf4);
    code.extend_from_slice(&0xffffu16.to_le_bytes());
    code.extend_from_slice(&BASE.to_le_bytes());
    let mut m = machine(&code, true);
    let mut gdt = [0u8; 0x28];
    m.mem.read_slice(&mut gdt, GuestAddress(GDT)).expect("gdt");
    m.mem
        .write_slice(&gdt, GuestAddress(BASE))
        .expect("gdt copy");
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Hlt), "{exit:?}");
    let (v, _, rip) = handled(&mut m);
    assert_eq!(v, 14);
    assert_eq!(rip, CODE + 9, "the #PF names the POP");
    assert_eq!(m.vcpu.special_regs().expect("sregs").cr2, 0x20_0000);
    // The frame sits on the stack the POP left: the pushed selector is
    // still there above it (error code, RIP, CS, RFLAGS, RSP, SS).
    let regs = m.vcpu.regs().expect("regs");
    let frame_rsp: u64 = m
        .mem
        .read_obj(GuestAddress(regs.rsp + 8 + 8 * 4))
        .expect("frame");
    let pushed: u64 = m.mem.read_obj(GuestAddress(frame_rsp)).expect("selector");
    assert_eq!(pushed, 0x28, "RSP at the fault is as before the POP");
}

#[test]
fn triple_fault_shuts_down() {
    // ud2 with no IDT: #UD -> #GP -> #DF -> shutdown.
    let mut m = machine(&[0x0f, 0x0b], false);
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Shutdown), "{exit:?}");
}

#[test]
fn endless_loop_is_stopped_by_a_kick() {
    // jmp $
    let mut m = machine(&[0xeb, 0xfe], true);
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_millis(50));
    assert!(matches!(exit, VmExit::Interrupted), "{exit:?}");
    assert_eq!(m.vcpu.regs().expect("regs").rip, CODE);
}

/// Code a device rewrites behind the engine's back (DMA, reported through
/// the VM's DMA observer) runs as rewritten, not from the decoded-block
/// cache: a disk read into a page that held code must not run the old code.
#[test]
fn code_rewritten_by_a_device_runs_anew() {
    // mov eax, 1; hlt
    let mut m = machine(&[0xb8, 1, 0, 0, 0, 0xf4], false);
    assert_eq!(
        run_bounded(m.vcpu.as_mut(), Duration::from_secs(1)),
        VmExit::Hlt
    );
    assert_eq!(m.vcpu.regs().expect("regs").rax, 1);

    // The "device" writes mov eax, 2 over it through the host mapping.
    let new = [0xb8, 2, 0, 0, 0, 0xf4];
    m.mem
        .write_slice(&new, GuestAddress(CODE))
        .expect("rewrite");
    let dma = m.vm.dma_observer().expect("the soft engine observes DMA");
    dma.written(CODE, new.len() as u64);

    let mut regs = m.vcpu.regs().expect("regs");
    regs.rip = CODE;
    m.vcpu.set_regs(&regs).expect("regs");
    assert_eq!(
        run_bounded(m.vcpu.as_mut(), Duration::from_secs(1)),
        VmExit::Hlt
    );
    assert_eq!(m.vcpu.regs().expect("regs").rax, 2, "the old code ran");
}

/// Where the straddling block of [`straddling_block`] starts, and the
/// page it runs into.
const START: u64 = CODE + 0xffc;
const SECOND: u64 = CODE + 0x1000;

/// A machine with MOV EAX, 1 straddling the end of the code page at
/// `START` and HLT after it on the next page (`SECOND`).
fn straddling_block() -> Machine {
    let m = machine(&[], false);
    m.mem
        .write_slice(&[0xb8, 1, 0, 0], GuestAddress(START))
        .expect("code");
    m.mem
        .write_slice(&[0, 0xf4], GuestAddress(SECOND))
        .expect("code");
    m
}

/// A write elsewhere on a code page leaves its blocks in place (their
/// bytes are unchanged), but a later write to the block itself, on
/// either of its pages, still makes the new code run.
#[test]
fn code_kept_after_a_write_beside_it_still_sees_later_rewrites() {
    let mut m = straddling_block();
    let dma = m.vm.dma_observer().expect("the soft engine observes DMA");
    let go = |m: &mut Machine| {
        let mut regs = m.vcpu.regs().expect("regs");
        regs.rip = START;
        m.vcpu.set_regs(&regs).expect("regs");
        let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(1));
        assert_eq!(exit, VmExit::Hlt);
        m.vcpu.regs().expect("regs").rax & 0xffff_ffff
    };
    let write = |m: &mut Machine, at: u64, bytes: &[u8]| {
        m.mem.write_slice(bytes, GuestAddress(at)).expect("write");
        dma.written(at, bytes.len() as u64);
    };
    // Often enough to be translated as well.
    for _ in 0..200 {
        assert_eq!(go(&mut m), 1);
    }
    // Beside the block on both pages: it stays as it was.
    write(&mut m, CODE + 0x100, &[0xcc; 16]);
    write(&mut m, SECOND + 0x100, &[0xcc; 16]);
    assert_eq!(go(&mut m), 1);
    // Then into it on the first page, then on the second.
    write(&mut m, START + 1, &[2]);
    assert_eq!(go(&mut m), 2, "the old first page ran");
    for _ in 0..200 {
        go(&mut m);
    }
    write(&mut m, CODE + 0x200, &[0xcc; 16]);
    write(&mut m, SECOND + 0x200, &[0xcc; 16]);
    assert_eq!(go(&mut m), 2);
    write(&mut m, SECOND, &[7]);
    assert_eq!(go(&mut m), 0x0700_0002, "the old second page ran");
}

/// Long REP MOVSB/STOSQ within a page (the bulk path, a piece at a
/// time) leave memory as element-by-element order does, also for a copy
/// whose destination overlaps its source from below.
#[test]
fn long_rep_moves_and_stores_keep_element_order() {
    const BUF: u64 = 0x18_0000;
    let mut code = Vec::new();
    let mov = |code: &mut Vec<u8>, reg: u8, v: u64| {
        code.extend_from_slice(&[0x48, 0xb8 + reg]);
        code.extend_from_slice(&v.to_le_bytes());
    };
    // rep stosq: 300 quadwords of RAX at BUF.
    mov(&mut code, 7, BUF); // rdi
    mov(&mut code, 1, 300); // rcx
    mov(&mut code, 0, 0x1122_3344_5566_7788); // rax
    code.extend_from_slice(&[0xf3, 0x48, 0xab]);
    // rep movsb: 3000 bytes from BUF + 0x1105 down to BUF + 0x1100
    // (overlapping, destination below the source).
    mov(&mut code, 6, BUF + 0x1105); // rsi
    mov(&mut code, 7, BUF + 0x1100); // rdi
    mov(&mut code, 1, 3000); // rcx
    code.extend_from_slice(&[0xf3, 0xa4, 0xf4]);
    let mut m = machine(&code, false);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 251) as u8).collect();
    m.mem
        .write_slice(&pattern, GuestAddress(BUF + 0x1000))
        .expect("pattern");
    assert_eq!(
        run_bounded(m.vcpu.as_mut(), Duration::from_secs(5)),
        VmExit::Hlt
    );
    let mut got = vec![0u8; 0x2000];
    m.mem
        .read_slice(&mut got, GuestAddress(BUF))
        .expect("read back");
    for q in 0..300 {
        let v = u64::from_le_bytes(got[q * 8..q * 8 + 8].try_into().unwrap());
        assert_eq!(v, 0x1122_3344_5566_7788, "quadword {q}");
    }
    assert_eq!(got[300 * 8], 0, "stored past the count");
    // Destination below the source: each byte is read before the copy
    // reaches it, so the result is the source as it was.
    let mut want = pattern.clone();
    want[0x100..0x100 + 3000].copy_from_slice(&pattern[0x105..0x105 + 3000]);
    assert!(
        got[0x1000..] == want[..],
        "the copy differs from byte order"
    );
    let regs = m.vcpu.regs().expect("regs");
    assert_eq!(
        (regs.rcx, regs.rsi, regs.rdi),
        (0, BUF + 0x1105 + 3000, BUF + 0x1100 + 3000)
    );
}

/// A block that runs into a second page is decoded anew when that page
/// is mapped somewhere else (the first page unchanged): after the guest
/// remaps it and flushes it with INVLPG, the new bytes run.
#[test]
fn remapping_a_blocks_second_page_runs_the_new_bytes() {
    const REMAP: u64 = CODE + 0x2000;
    const OTHER: u64 = 0x18_0000;
    let mut m = straddling_block();
    // The other page has a different last immediate byte.
    m.mem
        .write_slice(&[5, 0xf4], GuestAddress(OTHER))
        .expect("code");
    // Remap SECOND to OTHER (identity page table at 0x4000), INVLPG it,
    // then jump back to the straddling instruction.
    let pte = 0x4000 + 8 * (SECOND >> 12);
    let mut remap = vec![0x48, 0xb8];
    remap.extend_from_slice(&(OTHER | 3).to_le_bytes()); // mov rax, OTHER|3
    remap.extend_from_slice(&[0x48, 0xbb]);
    remap.extend_from_slice(&pte.to_le_bytes()); // mov rbx, pte
    remap.extend_from_slice(&[0x48, 0x89, 0x03]); // mov [rbx], rax
    remap.extend_from_slice(&[0x48, 0xb9]);
    remap.extend_from_slice(&SECOND.to_le_bytes()); // mov rcx, SECOND
    remap.extend_from_slice(&[0x0f, 0x01, 0x39]); // invlpg [rcx]
    remap.extend_from_slice(&[0x48, 0xba]);
    remap.extend_from_slice(&START.to_le_bytes()); // mov rdx, START
    remap.extend_from_slice(&[0xff, 0xe2]); // jmp rdx
    m.mem
        .write_slice(&remap, GuestAddress(REMAP))
        .expect("code");

    let go = |m: &mut Machine, rip: u64| {
        let mut regs = m.vcpu.regs().expect("regs");
        regs.rip = rip;
        m.vcpu.set_regs(&regs).expect("regs");
        let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(1));
        let regs = m.vcpu.regs().expect("regs");
        assert_eq!(exit, VmExit::Hlt, "from {rip:#x}: {regs:x?}");
        regs.rax & 0xffff_ffff
    };
    assert_eq!(go(&mut m, START), 1);
    assert_eq!(go(&mut m, REMAP), 0x0500_0001, "the old second page ran");
}

/// A fault in the middle of a translated block shows the guest's handler
/// the flags of the instruction before it, even when an instruction after
/// it overwrites them all (the translator drops flag work nothing reads,
/// and a possible fault counts as a reader).
#[test]
fn a_fault_in_translated_code_sees_the_flags_before_it() {
    let mut code = vec![
        // Enough rounds for the loop's block to be translated.
        0x41, 0xb8, 0x10, 0x27, 0, 0, // mov r8d, 10000
        0xbe, 0x00, 0x80, 0, 0, // mov esi, 0x8000
        0xb8, 1, 0, 0, 0, // mov eax, 1
        0xbb, 2, 0, 0, 0, // mov ebx, 2
        0x49, 0xb9, // mov r9, UNMAPPED
    ];
    code.extend_from_slice(&UNMAPPED.to_le_bytes());
    let top = code.len();
    code.extend_from_slice(&[
        0x41, 0x83, 0xf8, 0x01, // cmp r8d, 1
        0x49, 0x0f, 0x44, 0xf1, // cmove rsi, r9 (the last round reads unmapped memory)
        0x48, 0x39, 0xd8, // cmp rax, rbx: CF, PF, AF, SF
        0x48, 0x8b, 0x0e, // mov rcx, [rsi]
        0x48, 0x01, 0xd2, // add rdx, rdx: overwrites every flag
        0x41, 0xff, 0xc8, // dec r8d
    ]);
    let back = top as i64 - (code.len() as i64 + 2);
    code.extend_from_slice(&[0x75, back as u8, 0xf4]); // jnz top; hlt
    let mut m = machine(&code, true);
    let exit = run_bounded(m.vcpu.as_mut(), Duration::from_secs(5));
    assert!(matches!(exit, VmExit::Hlt), "{exit:?}");
    let (v, _, rip) = handled(&mut m);
    assert_eq!(v, 14);
    assert_eq!(rip, CODE + top as u64 + 11, "the load faulted");
    let rsp = m.vcpu.regs().expect("regs").rsp;
    let rflags: u64 = m
        .mem
        .read_obj(GuestAddress(rsp + 32))
        .expect("stack in memory");
    // CF, PF, AF and SF of 1 - 2; ZF and OF clear.
    assert_eq!(rflags & 0x8d5, 0x95, "rflags {rflags:#x}");
    assert_eq!(m.vcpu.regs().expect("regs").r8, 1, "in the last round");
}
