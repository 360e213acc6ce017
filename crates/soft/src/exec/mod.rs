//! The interpreter's instruction dispatch: one decoded instruction is
//! executed against a [`Core`]. RIP is advanced before the handler runs
//! (branches overwrite it) and restored when the instruction faults, so
//! faults are precise: handlers do all checks and reads before writing.

pub mod alu;
pub mod avx;
pub mod avx_gather;
pub mod bits;
pub mod flow;
pub mod intisa;
pub mod mmx;
pub mod muldiv;
pub mod ops;
pub mod shift;
pub mod sse;
pub mod sse2;
pub mod string;
pub mod system;
pub mod x87;
pub mod xsave;

use iced_x86::{Code, Instruction, Mnemonic};

use crate::core::Core;
use crate::cpu::RAX;
use crate::exception::{ExecResult, Fault, Stop};
use crate::flags::{self, mask};

/// Executes one instruction with RIP already past it.
pub(crate) fn dispatch(core: &mut Core, ins: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let m = ins.mnemonic();
    if ins.has_lock_prefix() && !lockable(m, ins) {
        return Err(Fault::ud().into());
    }
    match m {
        M::Mov => {
            if ins.op_register(0).is_segment_register() || ins.op_register(1).is_segment_register()
            {
                system::mov_sreg(core, ins)
            } else if matches!(
                ins.code(),
                Code::Mov_r64_cr
                    | Code::Mov_r32_cr
                    | Code::Mov_cr_r64
                    | Code::Mov_cr_r32
                    | Code::Mov_r64_dr
                    | Code::Mov_r32_dr
                    | Code::Mov_dr_r64
                    | Code::Mov_dr_r32
            ) {
                system::exec(core, ins, m)
            } else {
                alu::mov(core, ins)
            }
        }
        M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
            alu::binop(core, ins, m)
        }
        M::Inc | M::Dec | M::Neg | M::Not => alu::unop(core, ins, m),
        M::Movzx => alu::movzx(core, ins, false),
        M::Movsx | M::Movsxd => alu::movzx(core, ins, true),
        M::Lea => alu::lea(core, ins),
        M::Xchg => alu::xchg(core, ins),
        M::Xadd => alu::xadd(core, ins),
        M::Cmpxchg => alu::cmpxchg(core, ins),
        M::Cmpxchg8b => alu::cmpxchg_wide(core, ins, false),
        M::Cmpxchg16b => intisa::cmpxchg16b(core, ins),
        M::Cbw | M::Cwde | M::Cdqe | M::Cwd | M::Cdq | M::Cqo => alu::convert(core, m),
        M::Bswap => alu::bswap(core, ins),
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr => {
            shift::shift(core, ins, m)
        }
        M::Shld => shift::shift_double(core, ins, true),
        M::Shrd => shift::shift_double(core, ins, false),
        M::Mul => muldiv::mul(core, ins, false),
        M::Imul => muldiv::mul(core, ins, true),
        M::Div => muldiv::div(core, ins, false),
        M::Idiv => muldiv::div(core, ins, true),
        M::Bt | M::Bts | M::Btr | M::Btc => bits::bt(core, ins, m),
        M::Bsf | M::Bsr => bits::scan(core, ins, m),
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => bits::setcc(core, ins),
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => bits::cmovcc(core, ins),
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => flow::jcc(core, ins),
        M::Jmp => {
            if matches!(
                ins.op_kind(0),
                iced_x86::OpKind::FarBranch16 | iced_x86::OpKind::FarBranch32
            ) || is_far_mem(ins)
            {
                system::far_jmp_call(core, ins, false)
            } else {
                flow::jmp(core, ins)
            }
        }
        M::Call => {
            if matches!(
                ins.op_kind(0),
                iced_x86::OpKind::FarBranch16 | iced_x86::OpKind::FarBranch32
            ) || is_far_mem(ins)
            {
                system::far_jmp_call(core, ins, true)
            } else {
                flow::call(core, ins)
            }
        }
        M::Ret => flow::ret(core, ins),
        M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz | M::Jrcxz => {
            flow::loop_ins(core, ins, m)
        }
        M::Push => flow::push_ins(core, ins),
        M::Pop => flow::pop_ins(core, ins),
        M::Pushf | M::Pushfd | M::Pushfq => flow::pushf(core, ins),
        M::Popf | M::Popfd | M::Popfq => flow::popf(core, ins),
        M::Pusha | M::Pushad => flow::pusha(core, ins),
        M::Popa | M::Popad => flow::popa(core, ins),
        M::Leave => flow::leave(core, ins),
        M::Enter => flow::enter(core, ins),
        M::Movsb
        | M::Movsw
        | M::Movsd
        | M::Movsq
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsd
        | M::Cmpsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq
        | M::Insb
        | M::Insw
        | M::Insd
        | M::Outsb
        | M::Outsw
        | M::Outsd
            if is_string(ins) =>
        {
            string::string(core, ins, string_kind(m))
        }
        M::Clc | M::Stc | M::Cmc => {
            let cf = match m {
                M::Clc => false,
                M::Stc => true,
                _ => !core.cpu.flags.cf(),
            };
            core.cpu.flags.set_cf(cf);
            Ok(())
        }
        M::Cld => {
            core.cpu.flags.put(flags::DF, false);
            Ok(())
        }
        M::Std => {
            core.cpu.flags.put(flags::DF, true);
            Ok(())
        }
        M::Lahf => {
            if core.cpu.mode64() && !core.features.has(crate::cpuid::Feature::Lahf) {
                return Err(Fault::ud().into());
            }
            let f = core.cpu.flags.get() & 0xff;
            core.cpu.set8(4, f | 2);
            Ok(())
        }
        M::Sahf => {
            if core.cpu.mode64() && !core.features.has(crate::cpuid::Feature::Lahf) {
                return Err(Fault::ud().into());
            }
            let ah = core.cpu.get8(4);
            let f = core.cpu.flags.get();
            let keep = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF;
            core.cpu
                .flags
                .set_arith((f & !keep) | (ah & keep) | (f & flags::OF));
            Ok(())
        }
        M::Xlatb => {
            let asz = ops::addr_size(ins);
            let off =
                core.cpu.gpr[crate::cpu::RBX].wrapping_add(core.cpu.gpr[RAX] & 0xff) & mask(asz);
            let v = core.read_seg(ops::seg_index(ins.memory_segment()), off, 1)?;
            core.cpu.set8(0, v);
            Ok(())
        }
        M::Nop
        | M::Pause
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Endbr64
        | M::Endbr32
        // The rest of the hint space 0F 18-1F and 0F 0D: no access, no
        // fault.
        | M::Prefetch
        | M::Prefetchwt1
        | M::Reservednop
        | M::Cldemote
        | M::Prefetchit0
        | M::Prefetchit1
        | M::Rdsspd
        | M::Rdsspq
        | M::Clflush
        | M::Clflushopt => {
            // CLFLUSH still checks its operand's address.
            if matches!(m, M::Clflush | M::Clflushopt) {
                let (s, off) = ops::mem_loc(core, ins, 0);
                let lin = core.seg_lin(s, off, 1, false)?;
                core.translate(lin, crate::mmu::Access::Read, false)?;
            }
            Ok(())
        }
        M::INVALID if crate::cache::too_long(ins) => Err(Fault::gp(0).into()),
        M::Ud0 | M::Ud1 | M::Ud2 | M::INVALID => Err(Fault::ud().into()),
        M::Hlt
        | M::Cli
        | M::Sti
        | M::In
        | M::Out
        | M::Rdmsr
        | M::Wrmsr
        | M::Cpuid
        | M::Rdtsc
        | M::Rdtscp
        | M::Rdpmc
        | M::Lgdt
        | M::Lidt
        | M::Sgdt
        | M::Sidt
        | M::Ltr
        | M::Lldt
        | M::Str
        | M::Sldt
        | M::Smsw
        | M::Lmsw
        | M::Clts
        | M::Invlpg
        | M::Invd
        | M::Wbinvd
        | M::Syscall
        | M::Sysret
        | M::Sysretq
        | M::Swapgs
        | M::Int
        | M::Int3
        | M::Into
        | M::Int1
        | M::Iret
        | M::Iretd
        | M::Iretq
        | M::Retf => system::exec(core, ins, m),
        // Where the CPU model lacks XSAVE, XSAVEOPT or XSAVEC, #UD below.
        M::Xsave
        | M::Xsave64
        | M::Xsaveopt
        | M::Xsaveopt64
        | M::Xsavec
        | M::Xsavec64
        | M::Xrstor
        | M::Xrstor64
        | M::Xgetbv
        | M::Xsetbv if core.features.allows(ins) => xsave::exec(core, ins, m),
        _ if x87::handles(m) => noting_writes(core, ins, m, x87::exec),
        _ if intisa::handles(m) => intisa::exec(core, ins, m),
        // The SIMD families raise #UD where the CPUID model lacks them.
        _ if !core.features.allows(ins) => Err(Fault::ud().into()),
        _ if avx::is_vex(ins) => avx::exec(core, ins),
        _ => noting_writes(core, ins, m, sse::exec),
    }
}

/// Runs an x87/MMX/SSE handler and, when the instruction completed,
/// records the XSAVE components it wrote.
#[inline]
fn noting_writes(
    core: &mut Core,
    ins: &Instruction,
    m: Mnemonic,
    run: fn(&mut Core, &Instruction, Mnemonic) -> ExecResult,
) -> ExecResult {
    let r = run(core, ins, m);
    if !matches!(r, Err(Stop::Fault(_) | Stop::Unsupported)) {
        xsave::note_write(&mut core.cpu.fpu, ins, m);
    }
    r
}

fn is_far_mem(ins: &Instruction) -> bool {
    matches!(
        ins.code(),
        Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Jmp_m1664
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664
    )
}

/// MOVSD/CMPSD are also SSE2 mnemonics; iced-x86 gives the string forms
/// memory-operand kinds of their own.
fn is_string(ins: &Instruction) -> bool {
    use iced_x86::OpKind as K;
    (0..ins.op_count()).any(|i| {
        matches!(
            ins.op_kind(i),
            K::MemorySegSI
                | K::MemorySegESI
                | K::MemorySegRSI
                | K::MemorySegDI
                | K::MemorySegEDI
                | K::MemorySegRDI
                | K::MemoryESDI
                | K::MemoryESEDI
                | K::MemoryESRDI
        )
    })
}

fn string_kind(m: Mnemonic) -> string::StrOp {
    use string::StrOp as S;
    use Mnemonic as M;
    match m {
        M::Movsb | M::Movsw | M::Movsd | M::Movsq => S::Movs,
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => S::Stos,
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => S::Lods,
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => S::Cmps,
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => S::Scas,
        M::Insb | M::Insw | M::Insd => S::Ins,
        _ => S::Outs,
    }
}

fn lockable(m: Mnemonic, ins: &Instruction) -> bool {
    use Mnemonic as M;
    ins.op_kind(0) == iced_x86::OpKind::Memory
        && matches!(
            m,
            M::Add
                | M::Or
                | M::Adc
                | M::Sbb
                | M::And
                | M::Sub
                | M::Xor
                | M::Inc
                | M::Dec
                | M::Neg
                | M::Not
                | M::Xchg
                | M::Xadd
                | M::Cmpxchg
                | M::Cmpxchg8b
                | M::Cmpxchg16b
                | M::Bts
                | M::Btr
                | M::Btc
        )
}
