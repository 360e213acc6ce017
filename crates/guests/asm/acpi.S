# acpi: the RSDP (from start_info or the BIOS-area scan) and its
# checksums, the root table (XSDT, or RSDT on firmware without one) and the
# checksum of every table it lists, FADT and MADT by signature, the DSDT
# through the FADT, and the enabled processors in the MADT.
        .include "common.S"
        .include "acpi_lib.S"

        .set FADT_DSDT, 40
        .set FADT_X_DSDT, 140

guest_main:
        push %rbx
        call acpi_find_rsdp
        test %rax, %rax
        jnz 1f
        FAIL "no valid rsdp"
1:      PRINTLN "acpi: rsdp found, checksums ok"
        call acpi_init
        test %eax, %eax
        jnz 2f
        FAIL "root table missing or bad checksum"
2:      PRINTLN "acpi: root table checksum ok"
        call acpi_check_all
        test %eax, %eax
        jnz 3f
        FAIL "a table listed in the root table is bad"
3:      PRINTLN "acpi: every listed table checksum ok"

        mov $SIG_FACP, %edi
        call acpi_find_table
        test %rax, %rax
        jnz 4f
        FAIL "no FACP"
4:      mov %rax, %rbx
        PRINTLN "acpi: found FACP"
        mov $SIG_APIC, %edi
        call acpi_find_table
        test %rax, %rax
        jnz 5f
        FAIL "no APIC"
5:      PRINTLN "acpi: found APIC"

        # DSDT: X_DSDT when the FADT is long enough and it is set, else DSDT.
        xor %edi, %edi
        cmpl $FADT_X_DSDT + 8, 4(%rbx)
        jb 6f
        mov FADT_X_DSDT(%rbx), %rdi
6:      test %rdi, %rdi
        jnz 7f
        mov FADT_DSDT(%rbx), %edi
7:      push %rdi
        call acpi_table_ok
        pop %rdi
        test %eax, %eax
        jnz 8f
        FAIL "dsdt missing or bad checksum"
8:      cmpl $SIG_DSDT, (%rdi)
        je 9f
        FAIL "dsdt signature"
9:      PRINTLN "acpi: found DSDT, checksum ok"

        lea cpu_ids(%rip), %rdi
        mov $CPU_IDS_MAX, %esi
        call madt_cpus
        mov %eax, %ebx
        PRINT "madt: "
        mov %ebx, %edi
        call put_dec
        PRINTLN " cpus"
        test %ebx, %ebx
        jnz 10f
        FAIL "no enabled processor in the madt"
10:     pop %rbx
        ret

        .set CPU_IDS_MAX, 64
        .section .bss
cpu_ids: .skip CPU_IDS_MAX
        .section .text
