# syscall: a GDT with user segments and a TSS, SYSCALL/SYSRET set up
# through STAR/LSTAR/SFMASK and EFER.SCE. The kernel enters CPL3 with
# SYSRETQ; the user code sums 1..1000 and SYSCALLs back with the result
# in RDI and its CS in RSI. Then, back at CPL3, it raises INT 0x80 (a DPL3
# gate: the CPU must switch to TSS.RSP0) and SYSCALLs again.
        .include "common.S"

        .set MSR_EFER, 0xc0000080
        .set MSR_STAR, 0xc0000081
        .set MSR_LSTAR, 0xc0000082
        .set MSR_SFMASK, 0xc0000084
        .set INT_FRAME_SIZE, 40         # RIP, CS, RFLAGS, RSP, SS

guest_main:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, kernel_rsp(%rip)

        # TSS with RSP0 and no I/O bitmap.
        lea kstack0_top(%rip), %rdi
        call tss_load

        mov $0x80, %edi
        lea int80_isr(%rip), %rsi
        call idt_set_gate_user

        mov $MSR_STAR, %ecx             # SYSRET base 0x18, SYSCALL CS 0x08
        xor %eax, %eax
        mov $(SEL_CODE32 << 16) | SEL_CODE64, %edx
        wrmsr
        mov $MSR_LSTAR, %ecx
        lea syscall_entry(%rip), %rax
        mov %rax, %rdx
        shr $32, %rdx
        wrmsr
        mov $MSR_SFMASK, %ecx           # clear TF, IF, DF on entry
        mov $0x700, %eax
        xor %edx, %edx
        wrmsr
        mov $MSR_EFER, %ecx
        rdmsr
        or $1, %eax                     # SCE
        wrmsr

        lea hook(%rip), %rax
        mov %rax, exc_hook(%rip)
        lea user_sum(%rip), %rcx
        jmp to_user

# to_user(rcx = user RIP): SYSRETQ to CPL3 with interrupts off.
to_user:
        mov $0x2, %r11d                 # user RFLAGS
        lea user_stack_top(%rip), %rsp
        sysretq

# ---- CPL3
user_sum:
        xor %eax, %eax
        mov $1, %ecx
1:      add %rcx, %rax
        inc %rcx
        cmp $1000, %rcx
        jbe 1b
        mov %rax, %rdi
        mov %cs, %esi
        syscall
user_sum_end:
        ud2

user_int:
        int $0x80
        syscall
        ud2

# ---- CPL0
# INT 0x80 from CPL3: records where the CPU put the frame and the CS it
# came from.
int80_isr:
        mov %rsp, int80_rsp(%rip)
        push %rax
        mov 8 + 8(%rsp), %rax           # saved CS
        mov %rax, int80_cs(%rip)
        pop %rax
        iretq

syscall_entry:
        # A SYSCALL that left the CPU at CPL3 cannot print (port I/O
        # faults): report it from the exception hook instead.
        mov %cs, %eax
        test $3, %eax
        jz 1f
        movl $1, syscall_at_cpl3(%rip)
        ud2
1:      mov kernel_rsp(%rip), %rsp
        incl syscall_count(%rip)
        cmpl $1, syscall_count(%rip)
        jne after_int
        mov %rdi, %rbx                  # result
        mov %rsi, %r12                  # user CS
        mov %rcx, %r13                  # user RIP after SYSCALL
        PRINT "syscall: user returned "
        mov %rbx, %rdi
        call put_dec
        call newline
        cmp $500500, %rbx
        je 1f
        FAIL "wrong sum"
1:      mov %r12d, %eax
        and $3, %eax
        cmp $3, %eax
        jne 2f
        cmp $SEL_UCODE64 | 3, %r12d
        je 3f
2:      FAIL "user code did not run at cpl3"
3:      PRINTLN "syscall: cpl3 ok"
        lea user_sum_end(%rip), %rax
        cmp %rax, %r13
        je 4f
        FAIL "rcx does not hold the return address"
4:      lea user_int(%rip), %rcx        # back to CPL3 for INT 0x80
        jmp to_user

after_int:
        lea kstack0_top - INT_FRAME_SIZE(%rip), %rax
        cmp int80_rsp(%rip), %rax
        jne 6f
        cmpq $SEL_UCODE64 | 3, int80_cs(%rip)
        je 7f
6:      FAIL "int 0x80 from cpl3 did not switch to tss.rsp0"
7:      PRINTLN "syscall: int 0x80 from cpl3 ran on tss.rsp0"
        movq $0, exc_hook(%rip)
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

# hook(rdi = frame): names the two ways a CPU can get this guest wrong,
# else reports the exception as unexpected.
hook:
        cmpl $0, syscall_at_cpl3(%rip)
        je 1f
        FAIL "syscall reached lstar but stayed at cpl3"
1:      cmpq $6, F_VECTOR(%rdi)
        jne 2f
        lea user_int(%rip), %rax
        cmp %rax, F_RIP(%rdi)
        jne 2f
        FAIL "int 0x80 from cpl3 raised #UD"
2:      jmp exc_unexpected

        .section .data
        .p2align 3
kernel_rsp:     .quad 0
int80_rsp:      .quad 0
int80_cs:       .quad 0
syscall_count:  .long 0
syscall_at_cpl3: .long 0

        .section .bss
        .p2align 4
kstack0: .skip 4096
kstack0_top:
user_stack: .skip 4096
user_stack_top:
        .section .text
