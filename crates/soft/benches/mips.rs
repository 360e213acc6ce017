//! Guest instructions per second of the soft engine on a compute loop: a
//! 64-bit checksum over 64 MiB of guest memory (4 instructions per
//! 8-byte word), run in flat 64-bit mode with identity paging.
//! `cargo bench -p soft --bench mips`.

use std::sync::Arc;
use std::time::Instant;

use hypervisor::{Hypervisor, Regs, SpecialRegs, VmExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 80 << 20;
const BUF: u64 = 8 << 20;
const LEN: u64 = 64 << 20;

fn main() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    // Identity map the first 1 GiB with 2 MiB pages.
    mem.write_obj(0x2000u64 | 3, GuestAddress(0x1000))
        .expect("pml4");
    mem.write_obj(0x3000u64 | 3, GuestAddress(0x2000))
        .expect("pdpt");
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(0x3000 + 8 * i))
            .expect("pd");
    }
    // loop: add rax,[rsi]; add rsi,8; dec rcx; jnz loop; hlt
    let code = [
        0x48, 0x03, 0x06, 0x48, 0x83, 0xc6, 0x08, 0x48, 0xff, 0xc9, 0x75, 0xf4, 0xf4,
    ];
    mem.write_slice(&code, GuestAddress(0x10000)).expect("code");
    let hv = soft::SoftHypervisor::new();
    let vm = hv.create_vm().expect("vm");
    vm.set_memory(&mem).expect("set memory");
    let mut vcpu = vm
        .create_vcpu(0, Arc::new(hypervisor::NoDevices))
        .expect("vcpu");
    let mut sregs = SpecialRegs::default();
    sregs.set_flat_long_mode(0x1000);
    vcpu.set_special_regs(&sregs).expect("sregs");
    vcpu.set_regs(&Regs {
        rip: 0x10000,
        rsi: BUF,
        rcx: LEN / 8,
        rflags: 2,
        rsp: 0x8000,
        ..Default::default()
    })
    .expect("regs");
    let t = Instant::now();
    let exit = vcpu.run().expect("run");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(exit, VmExit::Hlt, "the loop ends in HLT");
    let instructions = (LEN / 8) * 4 + 1;
    println!(
        "soft engine: checksum over {} MiB: {instructions} guest instructions in {secs:.3} s = {:.1} MIPS",
        LEN >> 20,
        instructions as f64 / secs / 1e6
    );
}
