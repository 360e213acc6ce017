# exceptions: #DE, #UD, #GP (non-canonical address, and a selector beyond
# the GDT limit) each reach their IDT handler with the right vector and
# error code, and execution resumes after the faulting instruction.
# (#BP is left out: INT3 at CPL0 is not emulated by this host's KVM.)
        .include "common.S"

# ARM: the next exception resumes at the `1:` that CHECK starts with.
        .macro ARM
        lea 1f(%rip), %rax
        mov %rax, resume_rip(%rip)
        movq $-1, seen_vector(%rip)
        .endm

# CHECK: compares the exception seen with the expected one and prints.
        .macro CHECK name, vector, error
1:      mov $\vector, %edi
        mov $\error, %esi
        lea .Lname\@(%rip), %rdx
        call report
        .pushsection .rodata
.Lname\@: .asciz "\name"
        .popsection
        .endm

guest_main:
        lea hook(%rip), %rax
        mov %rax, exc_hook(%rip)

        ARM
        xor %ecx, %ecx
        div %ecx
        CHECK "#DE", 0, 0

        ARM
        ud2
        CHECK "#UD", 6, 0

        ARM
        movabs $0x8000000000000000, %rax  # non-canonical
        mov (%rax), %rax
        CHECK "#GP", 13, 0

        ARM
        mov $0x48, %eax                 # beyond the GDT limit
        mov %eax, %ds
        CHECK "#GP", 13, 0x48

        mov $SEL_DATA, %eax
        mov %eax, %ds
        PRINTLN "exceptions: resumed after every fault"
        movq $0, exc_hook(%rip)
        ret

# hook(rdi = frame): records vector and error, resumes at resume_rip.
hook:
        mov resume_rip(%rip), %rax
        test %rax, %rax
        jz exc_unexpected
        mov F_VECTOR(%rdi), %rcx
        mov %rcx, seen_vector(%rip)
        mov F_ERROR(%rdi), %rcx
        mov %rcx, seen_error(%rip)
        mov %rax, F_RIP(%rdi)
        movq $0, resume_rip(%rip)
        ret

# report(edi = expected vector, esi = expected error, rdx = name):
# prints "exceptions: NAME vector V error E ok" or fails.
report:
        push %rbx
        push %r12
        push %r13
        mov %edi, %ebx
        mov %esi, %r12d
        mov %rdx, %r13
        PRINT "exceptions: "
        mov %r13, %rdi
        call puts
        PRINT " vector "
        mov seen_vector(%rip), %rdi
        mov $2, %esi
        call put_hex_prefixed
        PRINT " error "
        mov seen_error(%rip), %rdi
        mov $4, %esi
        call put_hex_prefixed
        cmp seen_vector(%rip), %rbx
        jne 1f
        cmp seen_error(%rip), %r12
        jne 1f
        PRINTLN " ok"
        pop %r13
        pop %r12
        pop %rbx
        ret
1:      call newline
        FAIL "wrong or no exception"

        .section .data
        .p2align 3
resume_rip:     .quad 0
seen_vector:    .quad 0
seen_error:     .quad 0
        .section .text
