//! XCR0 and the XSAVE area of a KVM vCPU (KVM_GET/SET_XCRS,
//! KVM_GET/SET_XSAVE) as the engine-neutral [`XsaveState`].

use hypervisor::{XsaveState, XSAVE_MIN_SIZE};
use kvm_bindings::{kvm_xcr, kvm_xcrs, kvm_xsave};
use kvm_ioctls::VcpuFd;

use crate::os_error;

/// The size of KVM's fixed `kvm_xsave` region.
const REGION_BYTES: usize = 4096;

/// Reads XCR0 and the 4096-byte standard-format image KVM keeps.
pub fn get(fd: &VcpuFd) -> hypervisor::Result<XsaveState> {
    let xcrs = fd.get_xcrs().map_err(|e| os_error("KVM_GET_XCRS", e))?;
    let xcr0 = xcrs
        .xcrs
        .iter()
        .take(xcrs.nr_xcrs as usize)
        .find(|x| x.xcr == 0)
        .map_or(1, |x| x.value);
    let x = fd.get_xsave().map_err(|e| os_error("KVM_GET_XSAVE", e))?;
    Ok(XsaveState {
        xcr0,
        area: region_bytes(&x),
    })
}

/// Sets XCR0, then the image: the bytes `state` gives replace KVM's, the
/// rest of KVM's image stays (KVM rejects XSTATE_BV bits it does not
/// support with EINVAL).
pub fn set(fd: &VcpuFd, state: &XsaveState) -> hypervisor::Result<()> {
    let mut xcrs = kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    xcrs.xcrs[0] = kvm_xcr {
        xcr: 0,
        reserved: 0,
        value: state.xcr0,
    };
    fd.set_xcrs(&xcrs)
        .map_err(|e| os_error("KVM_SET_XCRS", e))?;
    let mut x = fd.get_xsave().map_err(|e| os_error("KVM_GET_XSAVE", e))?;
    let mut bytes = region_bytes(&x);
    let n = state.area.len().min(REGION_BYTES);
    bytes[..n].copy_from_slice(&state.area[..n]);
    for (w, b) in x.region.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    // SAFETY: `x` is a whole 4096-byte `kvm_xsave`. KVM_SET_XSAVE copies
    // the guest FPU's user-ABI size, which exceeds 4096 bytes only when
    // dynamically enabled components (AMX) were granted to the process
    // with arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM); vessel never asks for
    // them, so the kernel reads within `x`.
    unsafe { fd.set_xsave(&x) }.map_err(|e| os_error("KVM_SET_XSAVE", e))
}

fn region_bytes(x: &kvm_xsave) -> Vec<u8> {
    let mut v = Vec::with_capacity(REGION_BYTES.max(XSAVE_MIN_SIZE));
    for w in &x.region {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}
