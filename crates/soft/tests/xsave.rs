//! XSAVE, XSAVEOPT, XSAVEC and XRSTOR against the host CPU. The
//! differential harness cannot check them: under this host's KVM the
//! guest's user code runs with the host's XCR0 (AVX-512 and AMX on), and a
//! #GP there comes back through KVM's emulator. So the same code runs here
//! twice: natively, in executable memory, and in the soft engine (64-bit
//! mode, XCR0 = x87|SSE|AVX). Each case restores a prepared image with
//! XRSTOR, runs an operation that changes (or does not change) which
//! components are in use, then saves with one of the four forms and a
//! requested-feature bitmap into a buffer filled with 0xAA, and saves the
//! whole state once more; both buffers (and the restored image, which
//! XSAVEOPT may write back to) must match byte for byte. Requested bitmaps
//! stay within x87|SSE|AVX, which the host's XCR0 includes.

use std::sync::Arc;

use hypervisor::{Hypervisor, Regs, SpecialRegs, Vcpu, VmExit, XsaveState};
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CODE: u64 = 0x10000;
const SLOT: u64 = 0x100;
/// The image XRSTOR reads (RDI).
const A: u64 = 0x200000;
/// The buffer the saves write (RSI).
const B: u64 = 0x202000;
const LEN: usize = 0x1000;
/// Where the closing full XSAVE goes, inside B.
const FULL: i32 = 0x800;

#[derive(Clone, Copy, Debug)]
enum Save {
    Xsave,
    Xsave32,
    Xsaveopt,
    Xsavec,
    /// XSAVEOPT to the image XRSTOR read (the modified optimization).
    XsaveoptSame,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    None,
    Pxor,
    Vpcmpeqd256,
    VpcmpeqdVzeroupper,
    VpcmpeqdVzeroall,
    Vaddps128,
    Ldmxcsr,
    Fninit,
    Fld1,
    Fwait,
    Emms,
    MovdRead,
    Fnstsw,
    Vextractf128,
    Vcvtpd2dq256,
}

const OPS: [Op; 15] = [
    Op::None,
    Op::Pxor,
    Op::Vpcmpeqd256,
    Op::VpcmpeqdVzeroupper,
    Op::VpcmpeqdVzeroall,
    Op::Vaddps128,
    Op::Ldmxcsr,
    Op::Fninit,
    Op::Fld1,
    Op::Fwait,
    Op::Emms,
    Op::MovdRead,
    Op::Fnstsw,
    Op::Vextractf128,
    Op::Vcvtpd2dq256,
];

const SAVES: [Save; 5] = [
    Save::Xsave,
    Save::Xsave32,
    Save::Xsaveopt,
    Save::Xsavec,
    Save::XsaveoptSame,
];

/// The images XRSTOR starts from: XSTATE_BV, compacted or not, MXCSR.
const IMAGES: [(u64, bool, u32); 6] = [
    (0, false, 0x1f80),
    (7, false, 0x1f80),
    (2, false, 0x9fc0),
    (5, false, 0x3f81),
    (4, true, 0x1f80),
    (3, true, 0x1fa0),
];

fn image(bv: u64, compact: bool, mxcsr: u32, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut a = vec![0u8; LEN];
    for b in a.iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *b = s as u8;
    }
    // x87: every exception masked, a plain status, some registers valid.
    a[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    a[2..4].copy_from_slice(&0x3800u16.to_le_bytes());
    a[5] = 0;
    a[6..8].copy_from_slice(&0u16.to_le_bytes());
    a[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    a[512..576].fill(0);
    a[512..520].copy_from_slice(&bv.to_le_bytes());
    if compact {
        a[520..528].copy_from_slice(&(7u64 | 1 << 63).to_le_bytes());
    }
    a
}

fn op(a: &mut CodeAssembler, o: Op) -> Result<(), IcedError> {
    match o {
        Op::None => {}
        Op::Pxor => a.pxor(xmm3, xmm3)?,
        Op::Vpcmpeqd256 => a.vpcmpeqd(ymm5, ymm5, ymm5)?,
        Op::VpcmpeqdVzeroupper => {
            a.vpcmpeqd(ymm5, ymm5, ymm5)?;
            a.vzeroupper()?;
        }
        Op::VpcmpeqdVzeroall => {
            a.vpcmpeqd(ymm5, ymm5, ymm5)?;
            a.vzeroall()?;
        }
        Op::Vaddps128 => a.vaddps(xmm1, xmm2, xmm3)?,
        Op::Ldmxcsr => a.ldmxcsr(dword_ptr(rdi + 24))?,
        Op::Fninit => a.fninit()?,
        Op::Fld1 => a.fld1()?,
        Op::Fwait => a.wait()?,
        Op::Emms => a.emms()?,
        Op::MovdRead => a.movd(ecx, xmm0)?,
        Op::Fnstsw => a.fnstsw(ax)?,
        // 256-bit forms with an XMM destination: AVX in use all the same.
        Op::Vextractf128 => {
            a.vzeroall()?;
            a.vextractf128(xmm1, ymm0, 1)?;
        }
        Op::Vcvtpd2dq256 => {
            a.vzeroall()?;
            a.vcvtpd2dq(xmm1, ymm0)?;
        }
    }
    Ok(())
}

/// The body both runs share: RDI = image, RSI = buffer.
fn body(a: &mut CodeAssembler, o: Op, save: Save, rfbm: u32) -> Result<(), IcedError> {
    a.mov(eax, 7u32)?;
    a.xor(edx, edx)?;
    a.xrstor64(ptr(rdi))?;
    op(a, o)?;
    a.mov(eax, rfbm)?;
    a.xor(edx, edx)?;
    match save {
        Save::Xsave => a.xsave64(ptr(rsi))?,
        Save::Xsave32 => a.xsave(ptr(rsi))?,
        Save::Xsaveopt => a.xsaveopt64(ptr(rsi))?,
        Save::Xsavec => a.xsavec64(ptr(rsi))?,
        Save::XsaveoptSame => a.xsaveopt64(ptr(rdi))?,
    }
    a.mov(eax, 7u32)?;
    a.xsave64(ptr(rsi + FULL))?;
    Ok(())
}

fn guest_code(o: Op, save: Save, rfbm: u32) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).expect("assembler");
    body(&mut a, o, save, rfbm).expect("body");
    a.hlt().expect("hlt");
    a.assemble(0).expect("assemble")
}

/// The host's version: keeps the caller's MXCSR and x87 control word
/// (the ABI's callee-saved parts) and leaves the x87 stack empty.
fn host_code(o: Op, save: Save, rfbm: u32) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).expect("assembler");
    let mut host = || -> Result<(), IcedError> {
        a.sub(rsp, 24)?;
        a.stmxcsr(dword_ptr(rsp))?;
        a.fnstcw(word_ptr(rsp + 4))?;
        body(&mut a, o, save, rfbm)?;
        a.fninit()?;
        a.fldcw(word_ptr(rsp + 4))?;
        a.ldmxcsr(dword_ptr(rsp))?;
        a.vzeroupper()?;
        a.add(rsp, 24)?;
        a.ret()
    };
    host().expect("host code");
    a.assemble(0).expect("assemble")
}

/// Runs `code` on the host with RDI = `img`, RSI = `buf`.
fn run_host(code: &[u8], img: &mut [u8], buf: &mut [u8]) {
    assert!(img.len() >= LEN && buf.len() >= LEN);
    let mut m = dynasmrt::mmap::MutableBuffer::new(code.len()).expect("mmap");
    m.set_len(code.len());
    m.copy_from_slice(code);
    let x = m.make_exec().expect("exec");
    let entry = x.ptr(dynasmrt::AssemblyOffset(0));
    // SAFETY: `entry` is the start of `code`, now executable and alive
    // as long as `x`: a System V function of two pointer arguments that
    // touches only the 4 KiB behind each (checked above, and 64-byte
    // aligned by `aligned`), its own 24 bytes of stack, and the vector
    // and x87 state, whose callee-saved parts (MXCSR, FCW) it restores
    // and whose x87 stack it leaves empty.
    unsafe {
        let f: extern "sysv64" fn(*mut u8, *mut u8) = std::mem::transmute(entry);
        f(img.as_mut_ptr(), buf.as_mut_ptr());
    }
}

/// A 64-byte aligned 4 KiB buffer.
#[repr(C, align(64))]
struct Aligned([u8; LEN]);

struct Guest {
    mem: GuestMemoryMmap,
    vcpu: Box<dyn Vcpu>,
    next: u64,
}

impl Guest {
    fn new() -> Guest {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("memory");
        mem.write_obj(0x2000u64 | 3, GuestAddress(0x1000)).unwrap();
        mem.write_obj(0x3000u64 | 3, GuestAddress(0x2000)).unwrap();
        mem.write_obj(0x83u64, GuestAddress(0x3000)).unwrap();
        mem.write_obj(0x20_0083u64, GuestAddress(0x3008)).unwrap();
        let hv = soft::SoftHypervisor::new();
        let vm = hv.create_vm().expect("vm");
        vm.set_memory(&mem).expect("set memory");
        let mut vcpu = vm
            .create_vcpu(0, Arc::new(hypervisor::NoDevices))
            .expect("vcpu");
        let mut sregs = SpecialRegs::default();
        sregs.set_flat_long_mode(0x1000);
        sregs.cr4 |= 1 << 18;
        vcpu.set_special_regs(&sregs).expect("sregs");
        vcpu.set_xsave(&XsaveState {
            xcr0: 7,
            ..Default::default()
        })
        .expect("xcr0");
        Guest {
            mem,
            vcpu,
            next: CODE,
        }
    }

    fn run(&mut self, code: &[u8], img: &mut [u8], buf: &mut [u8]) -> Result<(), String> {
        assert!(code.len() as u64 <= SLOT);
        let at = self.next;
        self.next += SLOT;
        self.mem.write_slice(code, GuestAddress(at)).unwrap();
        self.mem.write_slice(img, GuestAddress(A)).unwrap();
        self.mem.write_slice(buf, GuestAddress(B)).unwrap();
        self.vcpu
            .set_regs(&Regs {
                rip: at,
                rdi: A,
                rsi: B,
                rsp: 0x8000,
                rflags: 2,
                ..Default::default()
            })
            .expect("regs");
        let exit = self.vcpu.run().expect("run");
        if exit != VmExit::Hlt {
            return Err(format!("guest stopped: {exit:x?}"));
        }
        self.mem.read_slice(img, GuestAddress(A)).unwrap();
        self.mem.read_slice(buf, GuestAddress(B)).unwrap();
        Ok(())
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// The masked moves and gathers, run after the image is restored: their
/// table is the image's bytes 0x400-0xbff (XRSTOR reads below 0x340),
/// their indices the restored YMM1 cut to 0..63 by the constants at 0xe00
/// (doublewords) and 0xe20 (quadwords),
/// stores go to the buffer at 0xc00 (0xe00 for VMASKMOVDQU).
fn simd_memory_op(a: &mut CodeAssembler, k: usize) -> Result<bool, IcedError> {
    let t = 0x400;
    match k {
        0 => a.vgatherdps_3(xmm2, ptr(rdi + xmm1 * 4 + t), xmm3)?,
        1 => a.vgatherdps_3(ymm2, ptr(rdi + ymm1 * 4 + t), ymm3)?,
        2 => a.vgatherdpd_3(xmm2, ptr(rdi + xmm1 * 8 + t), xmm3)?,
        3 => a.vgatherdpd_3(ymm2, ptr(rdi + xmm1 * 8 + t), ymm3)?,
        4 => a.vgatherqps_3(xmm2, ptr(rdi + xmm1 * 4 + t), xmm3)?,
        5 => a.vgatherqps_3(xmm2, ptr(rdi + ymm1 * 4 + t), xmm3)?,
        6 => a.vgatherqpd_3(xmm2, ptr(rdi + xmm1 * 8 + t), xmm3)?,
        7 => a.vgatherqpd_3(ymm2, ptr(rdi + ymm1 * 8 + t), ymm3)?,
        8 => a.vpgatherdd_3(xmm2, ptr(rdi + xmm1 * 2 + t), xmm3)?,
        9 => a.vpgatherdd_3(ymm2, ptr(rdi + ymm1 + t), ymm3)?,
        10 => a.vpgatherdq_3(xmm2, ptr(rdi + xmm1 * 8 + t), xmm3)?,
        11 => a.vpgatherdq_3(ymm2, ptr(rdi + xmm1 * 8 + t), ymm3)?,
        12 => a.vpgatherqd_3(xmm2, ptr(rdi + xmm1 * 4 + t), xmm3)?,
        13 => a.vpgatherqd_3(xmm2, ptr(rdi + ymm1 * 4 + t), xmm3)?,
        14 => a.vpgatherqq_3(xmm2, ptr(rdi + xmm1 * 8 + t), xmm3)?,
        15 => a.vpgatherqq_3(ymm2, ptr(rdi + ymm1 * 8 + t - 8), ymm3)?,
        16 => a.vmaskmovps(xmm2, xmm3, ptr(rdi + t + 4))?,
        17 => a.vmaskmovps(ymm2, ymm3, ptr(rdi + t))?,
        18 => a.vmaskmovpd(xmm2, xmm3, ptr(rdi + t + 8))?,
        19 => a.vmaskmovpd(ymm2, ymm3, ptr(rdi + t))?,
        20 => a.vmaskmovps(ptr(rsi + 0xc00), xmm3, xmm2)?,
        21 => a.vmaskmovps(ptr(rsi + 0xc04), ymm3, ymm2)?,
        22 => a.vmaskmovpd(ptr(rsi + 0xc00), xmm3, xmm2)?,
        23 => a.vmaskmovpd(ptr(rsi + 0xc08), ymm3, ymm2)?,
        24 => a.vpmaskmovd(xmm2, xmm3, ptr(rdi + t))?,
        25 => a.vpmaskmovd(ymm2, ymm3, ptr(rdi + t + 12))?,
        26 => a.vpmaskmovq(xmm2, xmm3, ptr(rdi + t))?,
        27 => a.vpmaskmovq(ymm2, ymm3, ptr(rdi + t))?,
        28 => a.vpmaskmovd(ptr(rsi + 0xc00), xmm3, xmm2)?,
        29 => a.vpmaskmovd(ptr(rsi + 0xc00), ymm3, ymm2)?,
        30 => a.vpmaskmovq(ptr(rsi + 0xc00), xmm3, xmm2)?,
        31 => a.vpmaskmovq(ptr(rsi + 0xc08), ymm3, ymm2)?,
        32 => {
            a.push(rdi)?;
            a.lea(rdi, ptr(rsi + 0xe00))?;
            a.vmaskmovdqu(xmm2, xmm3)?;
            a.pop(rdi)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Restores an image, cuts YMM1 to small indices, runs `simd_memory_op`
/// `k`, saves the whole state to the buffer.
fn memory_body(a: &mut CodeAssembler, k: usize) -> Result<bool, IcedError> {
    a.mov(eax, 7u32)?;
    a.xor(edx, edx)?;
    a.xrstor64(ptr(rdi))?;
    // Quadword indices for the Q gathers, doublewords for the rest.
    let qword = matches!(k, 4..=7 | 12..=15);
    a.vpand(ymm1, ymm1, ptr(rdi + if qword { 0xe20 } else { 0xe00 }))?;
    if !simd_memory_op(a, k)? {
        return Ok(false);
    }
    a.mov(eax, 7u32)?;
    a.xor(edx, edx)?;
    a.xsave64(ptr(rsi))?;
    Ok(true)
}

#[test]
fn masked_moves_and_gathers_match_the_host_cpu() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("AVX2 TESTS SKIPPED: the host lacks AVX2");
        return;
    }
    let mut guest = Guest::new();
    let mut failures = Vec::new();
    let mut cases = 0;
    for k in 0.. {
        let mut probe = CodeAssembler::new(64).expect("assembler");
        if !memory_body(&mut probe, k).expect("body") {
            break;
        }
        for seed in 0..24u64 {
            cases += 1;
            let mut img = image(7, false, 0x1f80, seed * 77 + k as u64);
            for i in (0..32).step_by(4) {
                img[0xe00 + i..0xe04 + i].copy_from_slice(&0x3fu32.to_le_bytes());
            }
            for i in (0..32).step_by(8) {
                img[0xe20 + i..0xe28 + i].copy_from_slice(&0x3fu64.to_le_bytes());
            }
            let mut g = CodeAssembler::new(64).expect("assembler");
            memory_body(&mut g, k).expect("body");
            g.hlt().expect("hlt");
            let code = g.assemble(0).expect("assemble");
            let mut h = CodeAssembler::new(64).expect("assembler");
            let mut host = || -> Result<(), IcedError> {
                h.sub(rsp, 24)?;
                h.stmxcsr(dword_ptr(rsp))?;
                h.fnstcw(word_ptr(rsp + 4))?;
                memory_body(&mut h, k)?;
                h.fninit()?;
                h.fldcw(word_ptr(rsp + 4))?;
                h.ldmxcsr(dword_ptr(rsp))?;
                h.vzeroupper()?;
                h.add(rsp, 24)?;
                h.ret()
            };
            host().expect("host code");
            let hcode = h.assemble(0).expect("assemble");
            let (mut hi, mut hb) = (Aligned([0; LEN]), Aligned([0xaa; LEN]));
            hi.0.copy_from_slice(&img);
            run_host(&hcode, &mut hi.0, &mut hb.0);
            let (mut gi, mut gb) = (img.clone(), vec![0xaa; LEN]);
            if let Err(e) = guest.run(&code, &mut gi, &mut gb) {
                failures.push(format!("op {k} seed {seed}: {e}"));
                continue;
            }
            if let Some(i) = first_difference(&hb.0, &gb) {
                failures.push(format!(
                    "op {k} seed {seed}: buffer byte {i}: host {:#x} soft {:#x}",
                    hb.0[i], gb[i]
                ));
            }
        }
    }
    assert_none_differ(&failures, cases);
}

#[test]
fn xsave_family_matches_the_host_cpu() {
    if !std::arch::is_x86_feature_detected!("avx")
        || !std::arch::is_x86_feature_detected!("xsaveopt")
        || !std::arch::is_x86_feature_detected!("xsavec")
    {
        eprintln!("XSAVE TESTS SKIPPED: the host lacks AVX, XSAVEOPT or XSAVEC");
        return;
    }
    let mut guest = Guest::new();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (k, &(bv, compact, mxcsr)) in IMAGES.iter().enumerate() {
        for &o in &OPS {
            for &save in &SAVES {
                for rfbm in [7u32, 1, 2, 4, 3, 5, 6, 0] {
                    cases += 1;
                    let seed = cases as u64 + k as u64 * 1000;
                    let img = image(bv, compact, mxcsr, seed);
                    let (mut gi, mut gb) = (img.clone(), vec![0xaa; LEN]);
                    let name = format!(
                        "image bv={bv} compact={compact} mxcsr={mxcsr:#x}, {o:?}, {save:?} rfbm={rfbm}"
                    );
                    if let Err(e) = guest.run(&guest_code(o, save, rfbm), &mut gi, &mut gb) {
                        failures.push(format!("{name}: {e}"));
                        continue;
                    }
                    let fld1 = matches!(o, Op::Fld1);
                    if fld1 {
                        // FLD1 records its own address as FIP, which
                        // differs between the two runs.
                        gb[8..16].fill(0);
                        gb[FULL as usize + 8..FULL as usize + 16].fill(0);
                        gi[8..16].fill(0);
                    }
                    // Which components the CPU reports in use (XSTATE_BV,
                    // and what XSAVEOPT/XSAVEC write) is not always the
                    // same for the same case on this loaded host (the SDM
                    // lets XINUSE be set conservatively; seen: SSE marked
                    // in use on 1 case in 3,600 in some runs, never the
                    // same case twice), so a case that differs is run on
                    // the host again, three times at most, and passes when
                    // one of the CPU's answers is the engine's.
                    let mut last = None;
                    for _ in 0..3 {
                        let (mut hi, mut hb) = (Aligned([0; LEN]), Aligned([0xaa; LEN]));
                        hi.0.copy_from_slice(&img);
                        run_host(&host_code(o, save, rfbm), &mut hi.0, &mut hb.0);
                        if fld1 {
                            hb.0[8..16].fill(0);
                            hb.0[FULL as usize + 8..FULL as usize + 16].fill(0);
                            hi.0[8..16].fill(0);
                        }
                        let diff = first_difference(&hb.0, &gb).map(|i| ("buffer", i));
                        let diff = diff.or(first_difference(&hi.0, &gi).map(|i| ("image", i)));
                        last = diff.map(|(what, i)| {
                            format!(
                                "{name}: {what} byte {i}: host {:#x} soft {:#x}",
                                if what == "buffer" { hb.0[i] } else { hi.0[i] },
                                if what == "buffer" { gb[i] } else { gi[i] },
                            )
                        });
                        if last.is_none() {
                            break;
                        }
                    }
                    failures.extend(last);
                }
            }
        }
    }
    failures.sort_by_key(|f| f.contains("guest stopped"));
    assert_none_differ(&failures, cases);
}

/// Random VEX-prefixed instructions, one per run, as 64-bit CPL0 code
/// with CR4.OSXSAVE and XCR0 = x87|SSE|AVX: every form the engine or
/// hostop takes (and every malformed one) must end in an exit (HLT, or a
/// shutdown: there is no IDT), never a panic or a hang.
#[test]
fn random_vex_instructions_never_panic_or_hang() {
    let mut s: u64 = 0x5eed_a7c0;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut halted = 0;
    for _ in 0..3000 {
        // A fresh vCPU each time: one that shut down stays down.
        let mut guest = Guest::new();
        let r = next();
        // C5 xx or C4 with map 1-3, an opcode, a ModRM naming a register
        // or [RDI] (the data page), an immediate byte; cut after the one
        // instruction iced-x86 decodes there, then HLT.
        let mut code = if r & 1 == 0 {
            vec![0xc5, (r >> 8) as u8]
        } else {
            vec![
                0xc4,
                ((r >> 8) as u8 & 0xe3) | 0xe0 | (1 + (r >> 56) as u8 % 3),
                (r >> 16) as u8,
            ]
        };
        let modrm = if (r >> 24) & 1 == 0 {
            0xc0 | ((r >> 32) as u8 & 0x3f)
        } else {
            ((r >> 32) as u8 & 0x38) | 0x07
        };
        code.extend_from_slice(&[(r >> 40) as u8, modrm, (r >> 48) as u8]);
        let len = iced_x86::Decoder::new(64, &code, iced_x86::DecoderOptions::NONE)
            .decode()
            .len()
            .clamp(1, code.len());
        code.truncate(len);
        code.push(0xf4);
        let (mut img, mut buf) = (vec![0u8; LEN], vec![0u8; LEN]);
        let kicker = guest.vcpu.kicker();
        let k = kicker.clone();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let timer = std::thread::spawn(move || {
            if wait
                .recv_timeout(std::time::Duration::from_secs(5))
                .is_err()
            {
                k.kick();
            }
        });
        match guest.run(&code, &mut img, &mut buf) {
            Ok(()) => halted += 1,
            Err(e) => assert!(
                e.contains("Shutdown"),
                "{code:02x?}: {e} (only faults, which shut down a vCPU without an IDT, may stop it)"
            ),
        }
        let _ = done.send(());
        timer.join().expect("timer");
        kicker.clear();
    }
    // Most random encodings are #UD (VEX.vvvv, VEX.L) or fault; some
    // hundreds are forms that run.
    assert!(halted > 100, "only {halted} of 3000 ran to HLT");
}

/// Prints the first 30 failures and fails when there is any.
fn assert_none_differ(failures: &[String], cases: usize) {
    for f in failures.iter().take(30) {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ",
        failures.len()
    );
}
