# acpi_lib.S: finding and checking ACPI tables, included after common.S by
# the guests that read them. Everything in the tables is treated as
# hostile: addresses must lie inside the identity-mapped 4 GiB, lengths
# are bounded, every table's checksum is verified before it is used.
#
# acpi_init        -> eax 1 when an RSDP and its root table (XSDT when the
#                     RSDP has revision >= 2 and one, else RSDT) are valid
# acpi_find_table  edi = signature -> rax = table or 0
# acpi_check_all   -> eax 1 when every table the root lists is valid
# madt_cpus        rdi = id array, esi = capacity -> eax = enabled LAPICs
# madt_irq_gsi     edi = ISA IRQ, esi = default -> eax = GSI

        .set SIG_FACP, 0x50434146
        .set SIG_APIC, 0x43495041
        .set SIG_DSDT, 0x54445344
        .set SIG_XSDT, 0x54445358
        .set SIG_RSDT, 0x54445352
        .set RSDP_SIG, 0x2052545020445352       # "RSD PTR "
        .set ACPI_HDR_SIZE, 36
        .set ACPI_TABLE_MAX, 0x100000
        .set RSDP_EXT_MAX, 4096
        .set SI_RSDP, 32

# acpi_checksum(rdi = address, esi = length) -> al = byte sum; ZF when 0.
acpi_checksum:
        xor %eax, %eax
        test %esi, %esi
        jz 2f
1:      add (%rdi), %al
        inc %rdi
        dec %esi
        jnz 1b
2:      test %al, %al
        ret

# acpi_rsdp_ok(rdi = candidate) -> eax 1 when signature and checksums hold.
acpi_rsdp_ok:
        push %rbx
        mov %rdi, %rbx
        xor %eax, %eax
        mov $0x100000000 - RSDP_EXT_MAX, %rcx
        cmp %rcx, %rbx
        jae 9f
        mov $RSDP_SIG, %rcx
        cmp %rcx, (%rbx)
        jne 9f
        mov %rbx, %rdi
        mov $20, %esi
        call acpi_checksum
        jnz 8f
        cmpb $2, 15(%rbx)               # revision
        jb 7f
        mov 20(%rbx), %esi              # extended length
        cmp $36, %esi
        jb 8f
        cmp $RSDP_EXT_MAX, %esi
        ja 8f
        mov %rbx, %rdi
        call acpi_checksum
        jnz 8f
7:      mov $1, %eax
        jmp 9f
8:      xor %eax, %eax
9:      pop %rbx
        ret

# acpi_find_rsdp() -> rax = RSDP or 0: start_info.rsdp_paddr when it
# holds a valid one, else a scan of 0xe0000-0xfffff on 16-byte steps.
acpi_find_rsdp:
        push %rbx
        mov start_info_ptr(%rip), %rbx
        mov $0x100000000 - 64, %rax
        cmp %rax, %rbx
        jae 2f
        cmpl $START_INFO_MAGIC, (%rbx)
        jne 2f
        mov SI_RSDP(%rbx), %rbx
        test %rbx, %rbx
        jz 2f
        mov %rbx, %rdi
        call acpi_rsdp_ok
        test %eax, %eax
        jz 2f
        mov %rbx, %rax
        pop %rbx
        ret
2:      mov $0xe0000, %ebx
3:      mov $RSDP_SIG, %rax
        cmp %rax, (%rbx)
        jne 4f
        mov %rbx, %rdi
        call acpi_rsdp_ok
        test %eax, %eax
        jz 4f
        mov %rbx, %rax
        pop %rbx
        ret
4:      add $16, %ebx
        cmp $0x100000, %ebx
        jb 3b
        xor %eax, %eax
        pop %rbx
        ret

# acpi_table_ok(rdi = table) -> eax = its length when it lies in range
# and its checksum holds, else 0.
acpi_table_ok:
        push %rbx
        push %r12
        mov %rdi, %rbx
        xor %eax, %eax
        test %rbx, %rbx
        jz 9f
        mov $0x100000000 - ACPI_HDR_SIZE, %rcx
        cmp %rcx, %rbx
        jae 9f
        mov 4(%rbx), %r12d
        cmp $ACPI_HDR_SIZE, %r12d
        jb 9f
        cmp $ACPI_TABLE_MAX, %r12d
        ja 9f
        lea (%rbx,%r12), %rcx
        mov $0x100000000, %rdx
        cmp %rdx, %rcx
        ja 9f
        mov %rbx, %rdi
        mov %r12d, %esi
        call acpi_checksum
        mov $0, %eax
        jnz 9f
        mov %r12d, %eax
9:      pop %r12
        pop %rbx
        ret

# acpi_init() -> eax 1 when the RSDP and its root table are valid; sets
# acpi_root, acpi_root_entry_size, acpi_root_entries.
acpi_init:
        push %rbx
        call acpi_find_rsdp
        test %rax, %rax
        jz 8f
        mov %rax, %rbx
        cmpb $2, 15(%rbx)
        jb 1f
        mov 24(%rbx), %rdi              # XSDT
        test %rdi, %rdi
        jz 1f
        movl $SIG_XSDT, acpi_root_sig(%rip)
        movq $8, acpi_root_entry_size(%rip)
        jmp 2f
1:      mov 16(%rbx), %edi              # RSDT
        movl $SIG_RSDT, acpi_root_sig(%rip)
        movq $4, acpi_root_entry_size(%rip)
2:      mov %rdi, acpi_root(%rip)
        call acpi_table_ok
        test %eax, %eax
        jz 8f
        mov acpi_root(%rip), %rdi
        mov acpi_root_sig(%rip), %ecx
        cmp %ecx, (%rdi)
        jne 8f
        sub $ACPI_HDR_SIZE, %eax
        xor %edx, %edx
        divq acpi_root_entry_size(%rip)
        mov %rax, acpi_root_entries(%rip)
        mov $1, %eax
        pop %rbx
        ret
8:      xor %eax, %eax
        pop %rbx
        ret

# acpi_root_entry(edi = index < acpi_root_entries) -> rax = table address.
acpi_root_entry:
        mov acpi_root(%rip), %rax
        add $ACPI_HDR_SIZE, %rax
        cmpq $8, acpi_root_entry_size(%rip)
        jne 1f
        mov (%rax,%rdi,8), %rax
        ret
1:      mov (%rax,%rdi,4), %eax
        ret

# acpi_find_table(edi = signature) -> rax = valid table or 0.
acpi_find_table:
        push %rbx
        push %r12
        mov %edi, %r12d
        xor %ebx, %ebx
1:      cmp acpi_root_entries(%rip), %rbx
        jae 8f
        mov %ebx, %edi
        call acpi_root_entry
        mov %rax, %rdi
        push %rax
        call acpi_table_ok
        pop %rdi
        test %eax, %eax
        jz 2f
        cmp %r12d, (%rdi)
        jne 2f
        mov %rdi, %rax
        pop %r12
        pop %rbx
        ret
2:      inc %ebx
        jmp 1b
8:      xor %eax, %eax
        pop %r12
        pop %rbx
        ret

# acpi_check_all() -> eax 1 when every table the root lists is valid.
acpi_check_all:
        push %rbx
        xor %ebx, %ebx
1:      cmp acpi_root_entries(%rip), %rbx
        jae 8f
        mov %ebx, %edi
        call acpi_root_entry
        mov %rax, %rdi
        call acpi_table_ok
        test %eax, %eax
        jz 9f
        inc %ebx
        jmp 1b
8:      mov $1, %eax
9:      pop %rbx
        ret

# madt_next(rdi = entry, rsi = end) -> rax = entry after it, or 0 when
# the entry is malformed or the last one.
madt_next:
        lea 2(%rdi), %rax
        cmp %rsi, %rax
        ja 8f
        movzbl 1(%rdi), %eax
        cmp $2, %eax
        jb 8f
        add %rdi, %rax
        cmp %rsi, %rax
        ja 8f
        ret
8:      xor %eax, %eax
        ret

# madt_bounds() -> rdi = first entry, rsi = end, or rdi = 0 without a
# valid MADT.
madt_bounds:
        mov $SIG_APIC, %edi
        call acpi_find_table
        test %rax, %rax
        jz 8f
        mov 4(%rax), %esi
        add %rax, %rsi
        lea 44(%rax), %rdi
        cmp %rsi, %rdi
        ja 8f
        ret
8:      xor %edi, %edi
        ret

# madt_cpus(rdi = byte array for APIC IDs, esi = capacity) -> eax =
# number of enabled processor local APIC entries (IDs stored up to capacity).
madt_cpus:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rdi, %r12
        mov %esi, %r13d
        xor %r14d, %r14d
        call madt_bounds
        test %rdi, %rdi
        jz 9f
        mov %rdi, %rbx
        mov %rsi, %r15
1:      mov %rbx, %rdi
        mov %r15, %rsi
        call madt_next
        test %rax, %rax
        jz 9f
        cmpb $0, (%rbx)                 # processor local APIC
        jne 2f
        cmpb $8, 1(%rbx)
        jb 2f
        testb $1, 4(%rbx)               # enabled
        jz 2f
        cmp %r13d, %r14d
        jae 3f
        movzbl 3(%rbx), %ecx            # APIC ID
        mov %cl, (%r12,%r14)
3:      inc %r14d
2:      mov %rax, %rbx
        jmp 1b
9:      mov %r14d, %eax
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

# madt_irq_gsi(edi = ISA IRQ, esi = default) -> eax = GSI from an
# interrupt source override for it, else the default.
madt_irq_gsi:
        push %rbx
        push %r12
        push %r13
        mov %edi, %r12d
        mov %esi, %r13d                 # result
        call madt_bounds
        test %rdi, %rdi
        jz 9f
        mov %rdi, %rbx
1:      mov %rbx, %rdi
        push %rsi
        call madt_next
        pop %rsi
        test %rax, %rax
        jz 9f
        cmpb $2, (%rbx)                 # interrupt source override
        jne 2f
        cmpb $10, 1(%rbx)
        jb 2f
        cmpb $0, 2(%rbx)                # bus: ISA
        jne 2f
        movzbl 3(%rbx), %ecx            # source IRQ
        cmp %r12d, %ecx
        jne 2f
        mov 4(%rbx), %r13d              # GSI
2:      mov %rax, %rbx
        jmp 1b
9:      mov %r13d, %eax
        pop %r13
        pop %r12
        pop %rbx
        ret

        .section .data
        .p2align 3
acpi_root:              .quad 0
acpi_root_entry_size:   .quad 0
acpi_root_entries:      .quad 0
acpi_root_sig:          .quad 0
        .section .text
