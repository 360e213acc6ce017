//! The translator against the interpreter on a hot loop the differential
//! snippets do not cover: every condition after each natively translated
//! flag-setting form (the ALU group, INC/DEC, IMUL, shifts, rotates), fused with
//! the host's flags or through the condition helper, taken and not taken,
//! MOV, LEA, loads, stores and PUSH/POP between a flag-setting form and
//! its condition (the host's flags redone from the lazy record), NEG,
//! ADC/SBB and INC/DEC on registers and memory, shifts by CL, BSWAP,
//! CDQE and selector reads, in-code
//! self loops, CLI/STI, CMPXCHG and XADD on memory, BT/BTS/BTR/BTC, SETcc to memory, IRETQ, REP MOVS/STOS, and CALL/JMP through a register or memory and RET (indirect
//! exits through the jump table). Registers, flags and the retired count must
//! match between the interpreter and the translator with every block
//! translated on its first run.

use std::sync::Arc;

use hypervisor::{Hypervisor, Regs, SpecialRegs, VmExit};
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;

/// The test program: an LCG feeds operands to each flag-setting form,
/// then every Jcc after it adds its own number to RBX when not taken;
/// SETcc/PUSHFQ read the eager flags of IMUL and shifts.
fn program() -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    a.mov(r15, 300u64).unwrap();
    a.mov(r12, 6364136223846793005u64).unwrap();
    a.mov(r13, 1442695040888963407u64).unwrap();
    a.mov(rsi, DATA).unwrap();
    a.mov(r14, DATA + 0x1000).unwrap();
    a.set_label(&mut top).unwrap();
    a.imul_2(rax, r12).unwrap();
    a.add(rax, r13).unwrap();
    a.mov(qword_ptr(rsi), rax).unwrap();
    let mut k = 0u32;
    for op in 0..14 {
        for cc in 0..16u8 {
            // Operands: pieces of the LCG state, some equal, some small.
            a.mov(rcx, rax).unwrap();
            a.shr(rcx, (cc as u32 * 3) % 61).unwrap();
            a.mov(rdx, rax).unwrap();
            if cc & 3 == 0 {
                a.mov(rdx, rcx).unwrap();
            } else {
                a.shr(rdx, 60 - (cc as u32 % 7)).unwrap();
            }
            match op {
                0 => a.cmp(rcx, rdx).unwrap(),
                1 => a.sub(ecx, edx).unwrap(),
                2 => a.add(rcx, rdx).unwrap(),
                3 => a.and(ecx, edx).unwrap(),
                4 => a.test(rcx, rdx).unwrap(),
                5 => a.inc(ecx).unwrap(),
                6 => a.dec(rdx).unwrap(),
                7 => a.xor(rcx, 0x7fu32 as i32).unwrap(),
                8 => a.cmp(ecx, dword_ptr(rsi)).unwrap(),
                9 => a.sub(rcx, qword_ptr(rsi)).unwrap(),
                10 => {
                    // A CF-reading condition after INC: not fusable.
                    a.add(rcx, rdx).unwrap();
                    a.inc(rdx).unwrap();
                }
                11 => a.or(rcx, 0).unwrap(),
                // Rotates keep SF/ZF/PF/AF of the operation before.
                12 => {
                    a.sub(rdx, rcx).unwrap();
                    a.rol(rcx, (u32::from(cc) * 5) % 64).unwrap();
                }
                _ => {
                    a.and(ecx, edx).unwrap();
                    a.ror(ecx, (u32::from(cc) * 3) % 32).unwrap();
                }
            }
            if op % 2 == 1 {
                // SETcc/CMOVcc right after the flag-setting form (fused)
                // and after a MOV (through the helper), then MOVZX/MOVSX.
                set_cc(&mut a, cc);
                cmov_cc(&mut a, cc);
                a.movzx(edi, bh).unwrap();
                a.add(r9, rdi).unwrap();
                a.movzx(r11d, bl).unwrap();
                a.add(r9, r11).unwrap();
                a.movsx(r11, cl).unwrap();
                a.add(r9, r11).unwrap();
                a.movsxd(r11, ecx).unwrap();
                a.xor(r9, r11).unwrap();
            } else if cc % 4 == 1 {
                // Instructions that leave the guest's flags alone but
                // whose translations change the host's (address
                // arithmetic, the TLB lookup): the condition must see the
                // flag-setting form's flags, redone or through the helper.
                a.lea(rdi, qword_ptr(rcx + rdx * 2 + 5)).unwrap();
                a.mov(qword_ptr(rsi + 8), rdi).unwrap();
                a.mov(rdi, qword_ptr(rsi + 8)).unwrap();
                a.push(rdi).unwrap();
                a.pop(rdi).unwrap();
                a.lea(rdi, qword_ptr(rdi + 1)).unwrap();
            }
            let mut skip = a.create_label();
            match cc {
                0 => a.jo(skip),
                1 => a.jno(skip),
                2 => a.jb(skip),
                3 => a.jae(skip),
                4 => a.je(skip),
                5 => a.jne(skip),
                6 => a.jbe(skip),
                7 => a.ja(skip),
                8 => a.js(skip),
                9 => a.jns(skip),
                10 => a.jp(skip),
                11 => a.jnp(skip),
                12 => a.jl(skip),
                13 => a.jge(skip),
                14 => a.jle(skip),
                _ => a.jg(skip),
            }
            .unwrap();
            k += 1;
            a.add(rbx, k as i32).unwrap();
            a.rol(rbx, 1).unwrap();
            a.set_label(&mut skip).unwrap();
            a.xor(rbx, rcx).unwrap();
            a.add(r9, r10).unwrap();
            a.rol(r10, 5).unwrap();
        }
    }
    // Eager flags: IMUL and shifts, read back with SETcc and PUSHFQ.
    for (i, n) in [1u32, 3, 31, 63].into_iter().enumerate() {
        a.mov(rcx, rax).unwrap();
        match i % 3 {
            0 => a.shl(rcx, n).unwrap(),
            1 => a.shr(ecx, n & 31).unwrap(),
            _ => a.sar(rcx, n).unwrap(),
        }
        a.setb(dl).unwrap();
        a.seto(dh).unwrap();
        a.pushfq().unwrap();
        a.pop(r8).unwrap();
        a.and(r8, 0x8c5).unwrap();
        a.add(r9, r8).unwrap();
        a.add(r9, rdx).unwrap();
        a.mov(rdx, rax).unwrap();
        a.shr(rdx, 40).unwrap();
        a.imul_2(rdx, rcx).unwrap();
        a.pushfq().unwrap();
        a.pop(r8).unwrap();
        a.and(r8, 0x8c5).unwrap();
        a.rol(r9, 3).unwrap();
        a.add(r9, r8).unwrap();
        a.imul_2(ecx, edx).unwrap();
        a.setb(r10b).unwrap();
        a.add(r9, r10).unwrap();
    }
    // Selectors read into registers, NEG (flags as SUB from zero) with
    // its condition after a store, shifts by CL (zero counts included),
    // BSWAP and CDQE.
    a.mov(ecx, ss).unwrap();
    a.add(r9, rcx).unwrap();
    a.mov(rdx, ds).unwrap();
    a.add(r9, rdx).unwrap();
    for (k, cc) in [(0u32, 2u8), (1, 4), (2, 8), (3, 12), (4, 0)] {
        a.mov(rcx, rax).unwrap();
        a.shr(rcx, 8 * k).unwrap();
        a.and(ecx, if k == 4 { 0 } else { 0xffff }).unwrap();
        a.neg(rcx).unwrap();
        a.mov(qword_ptr(rsi + 16), rcx).unwrap();
        if k % 2 == 0 {
            // The flags as the interpreter reads them from the record.
            a.pushfq().unwrap();
            a.pop(r8).unwrap();
            a.and(r8, 0x8d5).unwrap();
            a.add(r9, r8).unwrap();
            a.neg(rcx).unwrap();
            a.neg(rcx).unwrap();
        }
        let mut skip = a.create_label();
        match cc {
            2 => a.jb(skip),
            4 => a.je(skip),
            8 => a.js(skip),
            12 => a.jl(skip),
            _ => a.jo(skip),
        }
        .unwrap();
        a.add(r9, 0x55).unwrap();
        a.set_label(&mut skip).unwrap();
        a.mov(rdx, rax).unwrap();
        a.mov(ecx, 13 * k).unwrap();
        a.shl(rdx, cl).unwrap();
        a.pushfq().unwrap();
        a.pop(r8).unwrap();
        a.add(r9, r8).unwrap();
        a.add(r9, rdx).unwrap();
        a.mov(ecx, 7 * k).unwrap();
        a.shr(edx, cl).unwrap();
        a.setb(r8b).unwrap();
        a.sar(rdx, cl).unwrap();
        a.seto(r8b).unwrap();
        a.add(r9, r8).unwrap();
        a.bswap(rdx).unwrap();
        a.xor(r9, rdx).unwrap();
        a.neg(edx).unwrap();
        a.adc(r9, rdx).unwrap();
        a.sbb(r9, 3).unwrap();
        a.mov(qword_ptr(rsi + 24), rax).unwrap();
        a.sbb(qword_ptr(rsi + 24), rcx).unwrap();
        a.inc(dword_ptr(rsi + 24)).unwrap();
        a.adc(r9, qword_ptr(rsi + 24)).unwrap();
        a.dec(byte_ptr(rsi + 25)).unwrap();
        a.sbb(r10, r10).unwrap();
        a.add(r9, r10).unwrap();
        a.cdqe().unwrap();
        // Shifts by CL whose flags nothing reads.
        a.mov(ecx, 5 * k).unwrap();
        a.shl(rdx, cl).unwrap();
        a.add(r9, rdx).unwrap();
        a.sar(r9, cl).unwrap();
        a.xor(r9, rax).unwrap();
    }
    // CALL and JMP through a register and RET: indirect exits, which go
    // on through the jump table.
    // Then the same through memory (a table at DATA + 64).
    for through_memory in [false, true] {
        let mut func = a.create_label();
        let mut back = a.create_label();
        a.lea(rdi, ptr(func)).unwrap();
        if through_memory {
            a.mov(qword_ptr(rsi + 64), rdi).unwrap();
            a.lea(rdi, ptr(back)).unwrap();
            a.mov(qword_ptr(rsi + 72), rdi).unwrap();
            a.call(qword_ptr(rsi + 64)).unwrap();
            a.jmp(qword_ptr(rsi + 72)).unwrap();
        } else {
            a.call(rdi).unwrap();
            a.lea(rdi, ptr(back)).unwrap();
            a.jmp(rdi).unwrap();
        }
        a.set_label(&mut func).unwrap();
        a.add(r9, 7 + i32::from(through_memory)).unwrap();
        a.rol(r9, 2).unwrap();
        a.ret().unwrap();
        a.set_label(&mut back).unwrap();
        a.add(r9, rdi).unwrap();
    }
    // CMPXCHG and XADD on memory, 32 and 64 bits, with and without LOCK, equal
    // and not (the flags read by ADC and SETcc).
    for (k, size64) in [(0u32, true), (1, false), (2, true), (3, false)] {
        a.mov(qword_ptr(rsi + 80), r9).unwrap();
        if k < 2 {
            a.mov(rax, r9).unwrap();
        } else {
            a.lea(rax, ptr(r9 + 1)).unwrap();
        }
        a.mov(rcx, r11).unwrap();
        match (k & 1 == 0, size64) {
            (true, true) => a.lock().cmpxchg(qword_ptr(rsi + 80), rcx).unwrap(),
            (true, false) => a.lock().cmpxchg(dword_ptr(rsi + 80), ecx).unwrap(),
            (false, true) => a.cmpxchg(qword_ptr(rsi + 80), rcx).unwrap(),
            (false, false) => a.cmpxchg(dword_ptr(rsi + 80), ecx).unwrap(),
        }
        a.adc(r9, rax).unwrap();
        a.setne(r8b).unwrap();
        a.add(r9, r8).unwrap();
        a.add(r9, qword_ptr(rsi + 80)).unwrap();
        // XADD likewise (carry and sign of the sum read after it).
        a.mov(rcx, r11).unwrap();
        a.shl(rcx, k * 13).unwrap();
        match (k & 1 == 0, size64) {
            (true, true) => a.lock().xadd(qword_ptr(rsi + 80), rcx).unwrap(),
            (true, false) => a.lock().xadd(dword_ptr(rsi + 80), ecx).unwrap(),
            (false, true) => a.xadd(qword_ptr(rsi + 80), rcx).unwrap(),
            (false, false) => a.xadd(dword_ptr(rsi + 80), ecx).unwrap(),
        }
        a.adc(r9, rcx).unwrap();
        a.sets(r8b).unwrap();
        a.add(r9, r8).unwrap();
        a.add(r9, qword_ptr(rsi + 80)).unwrap();
        // And once through the lazy record (PUSHFQ evaluates it).
        a.lock().xadd(qword_ptr(rsi + 80), rcx).unwrap();
        a.pushfq().unwrap();
        a.pop(r8).unwrap();
        a.add(r9, r8).unwrap();
    }
    // BT/BTS/BTR/BTC on registers and memory, by an immediate and by a
    // register (the memory forms address the bit string, here up to two
    // elements below and above), 32 and 64 bits, with and without LOCK;
    // CF read by ADC, the other flags (kept) by SETcc.
    a.mov(qword_ptr(rsi + 96), r9).unwrap();
    a.mov(qword_ptr(rsi + 104), r11).unwrap();
    a.mov(qword_ptr(rsi + 112), rax).unwrap();
    a.lea(rdi, ptr(rsi + 104)).unwrap();
    for (k, op) in (0u32..24).zip((0..4).cycle()) {
        a.cmp(r9, r11).unwrap();
        a.mov(rcx, rax).unwrap();
        a.shr(rcx, k).unwrap();
        a.and(ecx, 127).unwrap();
        a.sub(rcx, 64).unwrap();
        let imm = (k * 11) % 70;
        match (k % 6, op) {
            (0, 0) | (0, 2) => a.bt(r9, imm).unwrap(),
            (0, _) => a.bts(r9d, imm).unwrap(),
            (1, 1) => a.btr(r9, rcx).unwrap(),
            (1, _) => a.btc(r9d, ecx).unwrap(),
            (2, 0) => a.bt(qword_ptr(rdi), imm).unwrap(),
            (2, 1) => a.lock().bts(qword_ptr(rdi), imm).unwrap(),
            (2, 2) => a.btr(dword_ptr(rdi), imm).unwrap(),
            (2, _) => a.btc(qword_ptr(rdi), imm).unwrap(),
            (3, 0) | (4, 0) => a.bt(qword_ptr(rdi), rcx).unwrap(),
            (3, 1) => a.lock().bts(qword_ptr(rdi), rcx).unwrap(),
            (3, _) => a.btr(dword_ptr(rdi), ecx).unwrap(),
            (4, _) => a.btc(dword_ptr(rdi), ecx).unwrap(),
            _ => a.bt(r9d, ecx).unwrap(),
        }
        a.setl(r8b).unwrap();
        // SETcc to memory, of CF (just set) and of SF/OF (kept).
        a.setb(byte_ptr(rsi + 126)).unwrap();
        a.setge(byte_ptr(rsi + 127)).unwrap();
        a.adc(r9, r8).unwrap();
        a.add(r9w, word_ptr(rsi + 126)).unwrap();
    }
    a.add(r9, qword_ptr(rsi + 96)).unwrap();
    a.add(r9, qword_ptr(rsi + 104)).unwrap();
    a.add(r9, qword_ptr(rsi + 112)).unwrap();
    // IRETQ at the same privilege, to the next instruction (which goes
    // on in the translated run) and elsewhere, with CF set in the image.
    for to_next in [true, false] {
        let mut target = a.create_label();
        a.mov(r10, rsp).unwrap();
        a.mov(eax, ss).unwrap();
        a.push(rax).unwrap();
        a.push(r10).unwrap();
        a.pushfq().unwrap();
        a.or(qword_ptr(rsp), 1).unwrap();
        a.mov(eax, cs).unwrap();
        a.push(rax).unwrap();
        a.lea(rax, ptr(target)).unwrap();
        a.push(rax).unwrap();
        a.iretq().unwrap();
        if !to_next {
            a.add(r9, 0x999).unwrap();
        }
        a.set_label(&mut target).unwrap();
        a.adc(r9, 3).unwrap();
    }
    // REP STOS/MOVS: within a page (native), across one, overlapping
    // (destination below and above the source), backwards (DF set) and
    // with RCX zero; the memory summed back.
    for (k, (movs, scale, count, from, to)) in [
        (false, 0u32, 37u32, 0, 0x100),
        (false, 3, 21, 0, 0xf80),
        (true, 0, 45, 0x108, 0x100),
        (true, 3, 9, 0x100, 0x110),
        (true, 3, 30, 0x100, 0x200),
        (true, 0, 40, 0x100, 0x108),
        (true, 0, 0, 0x100, 0x200),
        (false, 2, 700, 0, 0x10),
    ]
    .into_iter()
    .enumerate()
    {
        a.lea(rsi, ptr(r14 + from)).unwrap();
        a.lea(rdi, ptr(r14 + to)).unwrap();
        a.mov(ecx, count).unwrap();
        a.mov(rax, r9).unwrap();
        if k == 3 {
            a.std().unwrap();
            a.lea(rsi, ptr(rsi + 8 * (count - 1))).unwrap();
            a.lea(rdi, ptr(rdi + 8 * (count - 1))).unwrap();
        }
        match (movs, scale) {
            (false, 0) => a.rep().stosb().unwrap(),
            (false, 2) => a.rep().stosd().unwrap(),
            (false, _) => a.rep().stosq().unwrap(),
            (true, 0) => a.rep().movsb().unwrap(),
            (true, _) => a.rep().movsq().unwrap(),
        }
        a.cld().unwrap();
        a.add(r9, rcx).unwrap();
        a.add(r9, rsi).unwrap();
        a.add(r9, rdi).unwrap();
        a.add(r9, qword_ptr(r14 + 0x100)).unwrap();
        a.add(r9, qword_ptr(r14 + 0x128)).unwrap();
        a.add(r9, qword_ptr(r14 + 0xff8)).unwrap();
        a.add(r9, qword_ptr(r14 + 0x1000)).unwrap();
    }
    a.mov(rsi, DATA).unwrap();
    // CLI and STI (at CPL 0, no interrupt waiting: both native), seen
    // through PUSHFQ.
    for _ in 0..2 {
        a.cli().unwrap();
        a.pushfq().unwrap();
        a.pop(r8).unwrap();
        a.add(r9, r8).unwrap();
        a.sti().unwrap();
        a.pushfq().unwrap();
        a.pop(r8).unwrap();
        a.add(r9, r8).unwrap();
    }
    // A tight self loop (in-code rounds), then the outer loop.
    a.mov(ecx, 100u32).unwrap();
    let mut inner = a.create_label();
    a.set_label(&mut inner).unwrap();
    a.add(r11, rcx).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(inner).unwrap();
    a.dec(r15).unwrap();
    a.jnz(top).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

/// SETcc BH (a high-byte register).
fn set_cc(a: &mut CodeAssembler, cc: u8) {
    match cc {
        0 => a.seto(bh),
        1 => a.setno(bh),
        2 => a.setb(bh),
        3 => a.setae(bh),
        4 => a.sete(bh),
        5 => a.setne(bh),
        6 => a.setbe(bh),
        7 => a.seta(bh),
        8 => a.sets(bh),
        9 => a.setns(bh),
        10 => a.setp(bh),
        11 => a.setnp(bh),
        12 => a.setl(bh),
        13 => a.setge(bh),
        14 => a.setle(bh),
        _ => a.setg(bh),
    }
    .unwrap();
}

/// CMOVcc R10D, EDX (32-bit: zero-extends either way).
fn cmov_cc(a: &mut CodeAssembler, cc: u8) {
    match cc {
        0 => a.cmovo(r10d, edx),
        1 => a.cmovno(r10d, edx),
        2 => a.cmovb(r10d, edx),
        3 => a.cmovae(r10d, edx),
        4 => a.cmove(r10d, edx),
        5 => a.cmovne(r10d, edx),
        6 => a.cmovbe(r10d, edx),
        7 => a.cmova(r10d, edx),
        8 => a.cmovs(r10d, edx),
        9 => a.cmovns(r10d, edx),
        10 => a.cmovp(r10d, edx),
        11 => a.cmovnp(r10d, edx),
        12 => a.cmovl(r10d, edx),
        13 => a.cmovge(r10d, edx),
        14 => a.cmovle(r10d, edx),
        _ => a.cmovg(r10d, edx),
    }
    .unwrap();
}

fn run(jit: bool) -> (Regs, u64) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("memory");
    mem.write_obj(0x2000u64 | 3, GuestAddress(0x1000)).unwrap();
    mem.write_obj(0x3000u64 | 3, GuestAddress(0x2000)).unwrap();
    mem.write_obj(0x83u64, GuestAddress(0x3000)).unwrap();
    mem.write_slice(&program(), GuestAddress(CODE)).unwrap();
    // Every block translated on its first run; an emitter failure fails
    // the test (instead of the interpreter quietly running the block).
    let hv = soft::SoftHypervisor::with_config(soft::SoftConfig {
        translate: jit,
        hot_after: 0,
        strict: true,
        ..soft::SoftConfig::default()
    });
    let vm = hv.create_vm().expect("vm");
    vm.set_memory(&mem).expect("set memory");
    let mut vcpu = vm
        .create_vcpu(0, Arc::new(hypervisor::NoDevices))
        .expect("vcpu");
    let mut sregs = SpecialRegs::default();
    sregs.set_flat_long_mode(0x1000);
    // A GDT for IRETQ to load CS (0x08) and SS (0x10) from.
    mem.write_obj(0x00af_9b00_0000_ffffu64, GuestAddress(0x6008))
        .unwrap();
    mem.write_obj(0x00cf_9300_0000_ffffu64, GuestAddress(0x6010))
        .unwrap();
    sregs.gdt.base = 0x6000;
    sregs.gdt.limit = 0x17;
    vcpu.set_special_regs(&sregs).expect("sregs");
    vcpu.set_regs(&Regs {
        rip: CODE,
        rax: 12345,
        rflags: 2,
        rsp: 0x8000,
        ..Default::default()
    })
    .expect("regs");
    assert_eq!(vcpu.run().expect("run"), VmExit::Hlt);
    let regs = vcpu.regs().expect("regs");
    (regs, vcpu.instructions_retired().unwrap_or(0))
}

#[test]
fn translated_loop_matches_the_interpreter() {
    let (want, want_n) = run(false);
    let (got, got_n) = run(true);
    assert_eq!(format!("{want:x?}"), format!("{got:x?}"));
    assert_eq!(want_n, got_n, "instructions retired");
    assert!(want_n > 100_000, "the loop ran ({want_n} instructions)");
}
