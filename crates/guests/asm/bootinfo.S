# bootinfo: the PVH hvm_start_info handed over in EBX: magic, the memory
# map (RAM at 1 MiB, total usable RAM) and the command line.
        .include "common.S"

        .set SI_MAGIC, 0
        .set SI_VERSION, 4
        .set SI_CMDLINE, 24
        .set SI_MEMMAP, 40
        .set SI_MEMMAP_ENTRIES, 48
        .set SI_SIZE, 56
        .set MM_ENTRY_SIZE, 24
        .set MM_MAX_ENTRIES, 128
        .set MM_TYPE_RAM, 1
        .set CMDLINE_MAX, 256

guest_main:
        push %rbx
        push %r12
        push %r13
        push %r14
        mov start_info_ptr(%rip), %rbx
        # The structure must lie inside the identity-mapped 4 GiB.
        mov $0x100000000 - SI_SIZE, %rax
        cmp %rax, %rbx
        jb 1f
        FAIL "start_info address out of range"
1:      cmpl $START_INFO_MAGIC, SI_MAGIC(%rbx)
        je 2f
        FAIL "start_info magic"
2:      PRINTLN "bootinfo: start_info magic ok"
        cmpl $1, SI_VERSION(%rbx)
        jae 3f
        FAIL "start_info version 0 has no memory map"

        # Memory map: sum the RAM entries, look for RAM covering 1 MiB.
3:      mov SI_MEMMAP_ENTRIES(%rbx), %ecx
        cmp $MM_MAX_ENTRIES, %ecx
        jbe 4f
        FAIL "memory map has too many entries"
4:      test %ecx, %ecx
        jnz 5f
        FAIL "memory map is empty"
5:      mov SI_MEMMAP(%rbx), %r12
        imul $MM_ENTRY_SIZE, %ecx, %eax
        mov $0x100000000, %rdx
        sub %rax, %rdx
        cmp %rdx, %r12
        jb 6f
        FAIL "memory map address out of range"
6:      mov %ecx, %r13d                 # entries left
        xor %r14d, %r14d                # usable bytes
        xor %ebp, %ebp                  # RAM at 1 MiB seen
7:      cmpl $MM_TYPE_RAM, 16(%r12)
        jne 8f
        mov (%r12), %rax                # addr
        mov 8(%r12), %rdx               # size
        add %rdx, %r14
        cmp $0x100000, %rax
        ja 8f
        add %rax, %rdx                  # end (a wrap makes it small: no match)
        cmp $0x100000, %rdx
        jbe 8f
        mov $1, %ebp
8:      add $MM_ENTRY_SIZE, %r12
        dec %r13d
        jnz 7b
        test %ebp, %ebp
        jnz 9f
        FAIL "no RAM at 1 MiB in the memory map"
9:      PRINTLN "bootinfo: ram at 1 MiB ok"
        PRINT "bootinfo: usable ram "
        mov %r14, %rdi
        shr $20, %rdi
        call put_dec
        PRINTLN " MiB"

        # Command line: printable ASCII, NUL-terminated within CMDLINE_MAX.
        mov SI_CMDLINE(%rbx), %r12
        test %r12, %r12
        jnz 10f
        FAIL "no command line"
10:     mov $0x100000000 - CMDLINE_MAX, %rax
        cmp %rax, %r12
        jb 11f
        FAIL "command line address out of range"
11:     xor %ecx, %ecx
12:     movzbl (%r12,%rcx), %eax
        test %eax, %eax
        jz 14f
        cmp $0x20, %eax
        jb 13f
        cmp $0x7e, %eax
        ja 13f
        inc %ecx
        cmp $CMDLINE_MAX, %ecx
        jb 12b
13:     FAIL "command line is not printable or too long"
14:     PRINT "bootinfo: cmdline "
        mov %r12, %rdi
        call puts
        call newline
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret
