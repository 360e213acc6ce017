//! The CPU model reaches execution: under the baseline model's CPUID the
//! soft engine raises #UD for BMI1/BMI2, SSSE3, XSAVE, AVX2 and FSGSBASE
//! instructions, as a CPU without them does, and runs TZCNT as the BSF it is there; under
//! the engine's full table the same bytes run. The code runs at CPL3 in
//! the differential harness's machine (its exception handlers push the
//! vector and halt).

#[allow(dead_code)]
mod difftest;

use std::sync::Arc;

use difftest::machine::{user_sregs, write_image, CODE, MEM_SIZE, USER_RSP, XCR0};
use hypervisor::{Hypervisor, Regs, VmExit};
use soft::cpuid::{CpuModel, Feature, Features};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The #UD vector, and the #GP the closing HLT raises at CPL3.
const UD: u64 = 6;
const GP: u64 = 13;

/// Runs `code` (then HLT) with the CPUID of `model` and `regs`; returns
/// the vector that ended it and the registers.
fn run(model: CpuModel, code: &[u8], regs: Regs) -> (u64, Regs) {
    let hv = soft::SoftHypervisor::new();
    let vm = hv.create_vm().expect("vm");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("memory");
    vm.set_memory(&mem).expect("set memory");
    write_image(&mem);
    let mut bytes = code.to_vec();
    bytes.push(0xf4);
    mem.write_slice(&bytes, GuestAddress(CODE)).expect("code");
    let mut vcpu = vm
        .create_vcpu(0, Arc::new(hypervisor::NoDevices))
        .expect("vcpu");
    let table = hv.supported_cpuid().expect("cpuid");
    vcpu.set_cpuid(&model.apply(&table).expect("model"))
        .expect("set cpuid");
    vcpu.set_special_regs(&user_sregs()).expect("sregs");
    // XCR0 as the machine's: x87, SSE, AVX (a model without XSAVE still
    // raises #UD first).
    let mut x = vcpu.xsave().expect("xsave");
    x.xcr0 = XCR0;
    vcpu.set_xsave(&x).expect("xcr0");
    vcpu.set_regs(&Regs {
        rip: CODE,
        rsp: USER_RSP,
        rflags: 0x202,
        ..regs
    })
    .expect("regs");
    assert!(matches!(vcpu.run().expect("run"), VmExit::Hlt));
    let out = vcpu.regs().expect("regs");
    let vector: u64 = mem.read_obj(GuestAddress(out.rsp)).expect("vector");
    (vector, out)
}

#[test]
fn baseline_lacks_the_v2_v3_and_extra_families() {
    let cases: [(&str, &[u8]); 6] = [
        ("andn eax,ebx,ecx", &[0xc4, 0xe2, 0x60, 0xf2, 0xc1]),
        ("xgetbv", &[0x31, 0xc9, 0x0f, 0x01, 0xd0]),
        ("vpaddd ymm0,ymm1,ymm2", &[0xc5, 0xf5, 0xfe, 0xc2]),
        ("shlx rax,rbx,rcx", &[0xc4, 0xe2, 0xf1, 0xf7, 0xc3]),
        ("pshufb xmm0,xmm1", &[0x66, 0x0f, 0x38, 0x00, 0xc1]),
        ("rdfsbase rax", &[0xf3, 0x48, 0x0f, 0xae, 0xc0]),
    ];
    for (text, code) in cases {
        let (v, _) = run(CpuModel::Baseline, code, Regs::default());
        assert_eq!(v, UD, "{text} under baseline");
        let (v, _) = run(CpuModel::Max, code, Regs::default());
        if text.starts_with("pshufb") && !Features::engine_max().has(Feature::Ssse3) {
            // Advertised (and run) where SSSE3 is exact on this host.
            continue;
        }
        assert_eq!(v, GP, "{text} under max runs up to the HLT");
    }
}

#[test]
fn tzcnt_is_bsf_without_bmi1() {
    // tzcnt eax, ecx
    let code = [0xf3, 0x0f, 0xbc, 0xc1];
    let regs = Regs {
        rax: 0x1234,
        rcx: 0,
        ..Default::default()
    };
    // BSF of zero leaves the destination; TZCNT gives the operand size.
    let (v, out) = run(CpuModel::Baseline, &code, regs);
    assert_eq!((v, out.rax), (GP, 0x1234));
    let (_, out) = run(CpuModel::Max, &code, regs);
    assert_eq!(out.rax, 32);
}
