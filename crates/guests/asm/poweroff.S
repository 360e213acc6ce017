# poweroff: ACPI S5 the way an OS does it: PM1a_CNT_BLK from the FADT,
# SLP_TYPa from the DSDT's \_S5 package, then SLP_TYP|SLP_EN written to
# PM1a control. The machine powers off: vessel exits 0 (QEMU too).
        .include "common.S"
        .include "acpi_lib.S"

        .set FADT_DSDT, 40
        .set FADT_PM1A_CNT, 64
        .set FADT_X_DSDT, 140
        .set SLP_EN, 1 << 13

guest_main:
        push %rbx
        push %r12
        call acpi_init
        test %eax, %eax
        jnz 1f
        FAIL "no valid acpi root table"
1:      mov $SIG_FACP, %edi
        call acpi_find_table
        test %rax, %rax
        jnz 2f
        FAIL "no FACP"
2:      mov %rax, %rbx
        mov FADT_PM1A_CNT(%rbx), %r12d
        test %r12d, %r12d
        jnz 3f
        FAIL "FADT has no PM1a control block"
3:      PRINTLN "poweroff: pm1a control block found"
        # DSDT: X_DSDT when the FADT is long enough and it is set, else DSDT.
        xor %edi, %edi
        cmpl $FADT_X_DSDT + 8, 4(%rbx)
        jb 4f
        mov FADT_X_DSDT(%rbx), %rdi
4:      test %rdi, %rdi
        jnz 5f
        mov FADT_DSDT(%rbx), %edi
5:      call s5_slp_typ
        cmp $-1, %eax
        jne 6f
        FAIL "no _S5 package in the DSDT"
6:      mov %eax, %ebx
        PRINTLN "poweroff: _S5 found, entering S5"
        mov %ebx, %eax
        and $7, %eax
        shl $10, %eax
        or $SLP_EN, %eax
        mov %r12d, %edx
        out %ax, %dx
        # The power-off is not instant everywhere (QEMU's TCG finishes its
        # translation block first): give it a moment before calling it lost.
        mov $1000000, %ecx
7:      pause
        loop 7b
        FAIL "still running after entering S5"

# s5_slp_typ(rdi = DSDT) -> eax = SLP_TYPa of \_S5, or -1. Scans the AML
# for "_S5_" followed by PackageOp, PkgLength, NumElements and reads the
# first element (ZeroOp, OneOp, BytePrefix n, or a raw byte).
s5_slp_typ:
        mov 4(%rdi), %ecx               # table length
        cmp $64, %ecx
        jb 9f
        cmp $0x10000, %ecx
        ja 9f
        lea -12(%rdi,%rcx), %rsi        # last position with room to parse
        add $36, %rdi                   # skip the header
1:      cmp %rsi, %rdi
        jae 9f
        cmpl $0x5f35535f, (%rdi)        # "_S5_"
        je 2f
        inc %rdi
        jmp 1b
2:      add $4, %rdi
        cmpb $0x12, (%rdi)              # PackageOp
        jne 1b
        movzbl 1(%rdi), %eax            # PkgLength lead byte
        shr $6, %eax                    # number of extra length bytes
        lea 3(%rdi,%rax), %rdi          # past op, length bytes, NumElements
        movzbl (%rdi), %eax
        cmp $0x0a, %eax                 # BytePrefix
        jne 3f
        movzbl 1(%rdi), %eax
        ret
3:      cmp $0x01, %eax                 # OneOp; ZeroOp (0) and raw bytes as is
        ret
9:      mov $-1, %eax
        ret
