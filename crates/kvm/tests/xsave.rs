//! `Vcpu::xsave`/`set_xsave` on the KVM engine: XCR0 and the AVX
//! component go in and come back out. Needs `/dev/kvm` (skipped loudly
//! without it) and a host with AVX.

use std::sync::Arc;

use hypervisor::{Hypervisor, XsaveState, XSAVE_AVX_OFFSET, XSAVE_MIN_SIZE};
use kvm::KvmHypervisor;
use vm_memory::{GuestAddress, GuestMemoryMmap};

#[test]
fn xcr0_and_ymm_round_trip() {
    if !std::path::Path::new("/dev/kvm").exists() || !std::arch::is_x86_feature_detected!("avx") {
        eprintln!("KVM XSAVE TEST SKIPPED: no /dev/kvm or no AVX");
        return;
    }
    let hv = KvmHypervisor::new().expect("/dev/kvm opens");
    let memory: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let vm = hv.create_vm().unwrap();
    vm.set_memory(&memory).unwrap();
    let mut vcpu = vm.create_vcpu(0, Arc::new(hypervisor::NoDevices)).unwrap();
    // XCR0 bits KVM accepts follow the vCPU's CPUID (leaf 0xD).
    vcpu.set_cpuid(&hv.supported_cpuid().unwrap()).unwrap();

    let mut s = vcpu.xsave().unwrap();
    assert!(s.area.len() >= XSAVE_MIN_SIZE);
    s.xcr0 = 7;
    s.set_xstate_bv(7);
    s.area[24..28].copy_from_slice(&0x1f81u32.to_le_bytes());
    s.area[160] = 0x11; // XMM0
    s.area[XSAVE_AVX_OFFSET + 16 * 3] = 0x33; // YMM3[128..]
    vcpu.set_xsave(&s).unwrap();

    let got = vcpu.xsave().unwrap();
    assert_eq!(got.xcr0, 7);
    assert_eq!(got.xstate_bv() & 4, 4, "AVX present");
    assert_eq!(got.area[160], 0x11);
    assert_eq!(got.ymm_hi(3)[0], 0x33);
    assert_eq!(&got.area[24..28], &0x1f81u32.to_le_bytes());

    // An XCR0 with AVX but not SSE is refused, as XSETBV refuses it.
    let bad = XsaveState {
        xcr0: 5,
        ..got.clone()
    };
    assert!(vcpu.set_xsave(&bad).is_err());
}
