# smp: starts every application processor the MADT lists with
# INIT-SIPI-SIPI through the local APIC's ICR. Each AP runs a trampoline
# copied below 1 MiB (real mode -> protected mode -> long mode on the
# shared page tables), adds one to a counter with LOCK XADD and halts. The
# BSP waits, bounded by the TSC, and reports how many CPUs came up.
        .include "common.S"
        .include "acpi_lib.S"

        .set AP_TRAMP_BASE, 0x8000
        .set SIPI_VECTOR, AP_TRAMP_BASE >> 12
        .set CPU_IDS_MAX, 64
        .set WAIT_CYCLES, 3000000000    # ~1-3 s of TSC
        .set INIT_DELAY, 10000000       # ~10 ms
        .set SIPI_DELAY, 200000         # ~200 us
        .set ICR_POLLS, 100000

guest_main:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        call acpi_init
        test %eax, %eax
        jnz 1f
        FAIL "no valid acpi tables"
1:      lea cpu_ids(%rip), %rdi
        mov $CPU_IDS_MAX, %esi
        call madt_cpus
        mov %eax, %r12d                 # CPUs in the MADT
        test %r12d, %r12d
        jnz 2f
        FAIL "no processor in the madt"
2:      cmp $CPU_IDS_MAX, %r12d
        jbe 3f
        FAIL "too many processors in the madt"
3:      call lapic_enable
        mov $0x20, %edi
        call lapic_read
        shr $24, %eax
        mov %eax, %r13d                 # BSP APIC ID

        # The trampoline goes to AP_TRAMP_BASE (after the MADT was read:
        # nothing there is needed any more).
        lea ap_tramp_start(%rip), %rsi
        mov $AP_TRAMP_BASE, %edi
        mov $ap_tramp_end - ap_tramp_start, %ecx
        rep movsb

        xor %r14d, %r14d                # MADT index
        xor %r15d, %r15d                # APs started
4:      cmp %r12d, %r14d
        jae 6f
        lea cpu_ids(%rip), %rax
        movzbl (%rax,%r14), %ebx
        inc %r14d
        cmp %r13d, %ebx
        je 4b
        inc %r15d
        mov %ebx, %edi
        mov $0x4500, %esi               # INIT, level assert
        call send_ipi
        mov $INIT_DELAY, %edi
        call delay
        mov %ebx, %edi
        mov $0x4600 | SIPI_VECTOR, %esi # STARTUP
        call send_ipi
        mov $SIPI_DELAY, %edi
        call delay
        mov %ebx, %edi
        mov $0x4600 | SIPI_VECTOR, %esi
        call send_ipi
        jmp 4b

6:      rdtsc                           # wait for the APs, bounded
        shl $32, %rdx
        or %rax, %rdx
        mov %rdx, %rbx
7:      cmp ap_count(%rip), %r15d
        je 8f
        pause
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        sub %rbx, %rdx
        mov $WAIT_CYCLES, %rax
        cmp %rax, %rdx
        jb 7b
8:      PRINT "smp: "
        mov ap_count(%rip), %edi
        inc %edi
        call put_dec
        PRINT " of "
        mov %r12d, %edi
        call put_dec
        PRINTLN " cpus up"
        mov ap_count(%rip), %eax
        inc %eax
        cmp %r12d, %eax
        je 9f
        PRINTLN "FAIL: not every cpu came up"
        mov $EXIT_TIMEOUT, %edi
        jmp exit
9:      pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

# send_ipi(edi = destination APIC ID, esi = ICR low), then waits (bounded)
# for the delivery status to clear.
send_ipi:
        push %rsi
        shl $24, %edi
        mov %edi, %esi
        mov $0x310, %edi
        call lapic_write
        pop %rsi
        mov $0x300, %edi
        call lapic_write
        mov $ICR_POLLS, %ecx
1:      mov $0x300, %edi
        call lapic_read
        test $0x1000, %eax
        jz 2f
        pause
        dec %ecx
        jnz 1b
2:      ret

# delay(rdi = TSC cycles).
delay:
        mov %rdi, %r8
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        mov %rdx, %r9
1:      pause
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        sub %r9, %rdx
        cmp %r8, %rdx
        jb 1b
        ret

# The AP trampoline: copied to AP_TRAMP_BASE, entered in real mode at
# AP_TRAMP_BASE >> 4 : 0. Only offsets inside it are used until paging is
# on; then it jumps to ap_entry64 in the image.
        .code16
ap_tramp_start:
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl ap_tramp_gdt_desc - ap_tramp_start
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $SEL_CODE32, $AP_TRAMP_BASE + ap_tramp32 - ap_tramp_start
        .code32
ap_tramp32:
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %cr4, %eax
        or $0x20, %eax                  # PAE
        mov %eax, %cr4
        mov $pml4, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx           # EFER.LME
        rdmsr
        or $0x100, %eax
        wrmsr
        mov $0x80000011, %eax           # PG | ET | PE, caches on
        mov %eax, %cr0
        ljmp $SEL_CODE64, $ap_entry64
        .p2align 2
        .word 0
ap_tramp_gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt
ap_tramp_end:
        .code64

ap_entry64:
        mov $1, %eax
        lock xadd %eax, ap_count(%rip)
1:      cli
        hlt
        jmp 1b

        .section .data
        .p2align 2
ap_count: .long 0
        .section .bss
cpu_ids: .skip CPU_IDS_MAX
        .section .text
