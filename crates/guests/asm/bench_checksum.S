# bench_checksum: the compute benchmark guest (not a test guest: it is
# not in the `guests::all()` table). The kernel sets up a TSS (RSP0 for
# the way back) and SYSRET, then drops to CPL3, where all the work runs:
# it fills 64 MiB at 16 MiB with a pattern, reads the TSC, runs a
# checksum loop over the 64 MiB N times (`passes=N` on the command line,
# default 8) with an exactly known instruction count, reads the TSC again
# and returns to CPL0 through `ud2` (#UD). The kernel then prints the checksum, the instructions
# retired between the two RDTSCs and the TSC delta, and exits with 0.
#
# CPL3 matters: on a host whose KVM emulates CPL0 (PVM) the loop still
# runs natively there, so the same guest measures every engine.
        .include "common.S"

        .set MSR_EFER, 0xc0000080
        .set MSR_STAR, 0xc0000081

        .set BUF_BASE, 0x1000000        # 16 MiB; needs 80 MiB of RAM
        .set BUF_WORDS, (64 << 20) / 8
        .set DEFAULT_PASSES, 8          # `passes=N` on the command line: 1..MAX
        .set MAX_PASSES, 1000
        # Instructions retired after the first RDTSC up to and including
        # the second: `shl`, `or`, `mov`, `xor`, `mov` before the passes;
        # per pass two `mov`s, BUF_WORDS iterations of five (rol, add, add,
        # dec, jnz), then `dec` and `jnz`; after the passes `mov`, `rdtsc`.
        .set LOOP_INSNS, 5
        .set PASS_INSNS, 2 + BUF_WORDS * LOOP_INSNS + 2
        .set FIXED_INSNS, 5 + 2
        .set START_INFO_CMDLINE, 24     # hvm_start_info.cmdline_paddr

guest_main:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, kernel_rsp(%rip)

        # TSS with RSP0 for the #UD from CPL3.
        lea kstack_top(%rip), %rdi
        call tss_load

        # SYSRET: user CS = STAR[63:48] + 16, SS = STAR[63:48] + 8.
        mov $MSR_STAR, %ecx
        xor %eax, %eax
        mov $(SEL_CODE32 << 16) | SEL_CODE64, %edx
        wrmsr
        mov $MSR_EFER, %ecx
        rdmsr
        or $1, %eax                     # SCE
        wrmsr

        call parse_passes
        mov %eax, passes(%rip)

        lea hook(%rip), %rax
        mov %rax, exc_hook(%rip)
        lea user_bench(%rip), %rcx
        mov $0x2, %r11d                 # user RFLAGS: interrupts off
        lea user_stack_top(%rip), %rsp
        sysretq

# ---- CPL3
user_bench:
        # Pattern: word i = (i + 1) * golden ratio (mod 2^64).
        mov $BUF_BASE, %edi
        mov $BUF_WORDS, %ecx
        movabs $0x9e3779b97f4a7c15, %rdx
        mov %rdx, %rax
1:      mov %rax, (%rdi)
        add %rdx, %rax
        add $8, %rdi
        dec %rcx
        jnz 1b

        lfence
        rdtsc                           # the counted instructions follow
        shl $32, %rdx
        or %rdx, %rax
        mov %rax, %r14                  # start TSC
        xor %eax, %eax                  # checksum
        mov passes(%rip), %r9d
2:      mov $BUF_BASE, %esi
        mov $BUF_WORDS, %ecx
3:      rol $1, %rax
        add (%rsi), %rax
        add $8, %rsi
        dec %rcx
        jnz 3b
        dec %r9d
        jnz 2b
        mov %rax, %rbx
        rdtsc                           # the last counted instruction
        lfence
        shl $32, %rdx
        or %rdx, %rax
        sub %r14, %rax                  # TSC delta
user_done:
        ud2

# ---- CPL0
# hook(rdi = frame): the #UD at user_done from CPL3 carries the results
# in RAX (TSC delta) and RBX (checksum); anything else is unexpected.
hook:
        cmpq $6, F_VECTOR(%rdi)
        jne 1f
        testq $3, F_CS(%rdi)
        jz 1f
        lea user_done(%rip), %rax
        cmp %rax, F_RIP(%rdi)
        jne 1f
        mov F_RAX(%rdi), %r12           # TSC delta
        mov F_RBX(%rdi), %r13           # checksum
        mov kernel_rsp(%rip), %rsp
        jmp report
1:      jmp exc_unexpected

report:
        movq $0, exc_hook(%rip)
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        PRINT "bench: checksum "
        mov %r13, %rdi
        mov $16, %esi
        call put_hex_prefixed
        call newline
        PRINT "bench: passes "
        mov passes(%rip), %edi
        call put_dec
        call newline
        PRINT "bench: instructions "
        mov passes(%rip), %edi
        imul $PASS_INSNS, %rdi, %rdi
        add $FIXED_INSNS, %rdi
        call put_dec
        call newline
        PRINT "bench: tsc-ticks "
        mov %r12, %rdi
        call put_dec
        call newline
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

# parse_passes() -> eax: N from `passes=N` on the PVH command line when
# 1 <= N <= MAX_PASSES, else DEFAULT_PASSES. The scan is bounded and stops
# at the command line's NUL.
parse_passes:
        mov start_info_ptr(%rip), %rax
        test %rax, %rax
        jz 9f
        mov START_INFO_CMDLINE(%rax), %rsi
        test %rsi, %rsi
        jz 9f
        mov $0xffff0000, %eax           # stay inside the identity map
        cmp %rax, %rsi
        jae 9f
        lea passes_key(%rip), %rdi
        mov $4096, %ecx
1:      cmpb $0, (%rsi)
        je 9f
        xor %edx, %edx
2:      movzbl (%rdi,%rdx), %eax
        test %eax, %eax
        jz 4f                           # the whole key matched
        cmpb %al, (%rsi,%rdx)           # a NUL in the text never matches
        jne 3f
        inc %edx
        jmp 2b
3:      inc %rsi
        dec %ecx
        jnz 1b
        jmp 9f
4:      add %rdx, %rsi
        xor %eax, %eax
5:      movzbl (%rsi), %ecx
        sub $'0', %ecx
        cmp $9, %ecx
        ja 6f
        imul $10, %eax, %eax
        add %ecx, %eax
        cmp $MAX_PASSES, %eax
        ja 9f
        inc %rsi
        jmp 5b
6:      test %eax, %eax
        jz 9f
        ret
9:      mov $DEFAULT_PASSES, %eax
        ret

        .section .rodata
passes_key:
        .asciz "passes="

        .section .data
        .p2align 3
kernel_rsp:     .quad 0
passes:         .long 0

        .section .bss
        .p2align 4
kstack: .skip 4096
kstack_top:
user_stack: .skip 4096
user_stack_top:
        .section .text
