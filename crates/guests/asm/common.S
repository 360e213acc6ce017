# common.S: what every test guest shares. Included (with .include) at the
# top of each guest; the guest then defines `guest_main`, a 64-bit
# function that prints its lines and returns (exit status 0) or calls
# `fail`/`exit`.
#
# Owns: the PVH ELF note, the 32-bit PVH entry and the switch to long mode
# (static identity map of the first 4 GiB with 2 MiB pages), the GDT, the
# exception IDT (vectors 0-31 through one common stub and a per-guest
# hook), COM1 output (putc, puts, put_hex, put_dec, PRINT/PRINTLN macros)
# and the debug-exit port.
#
# Calling convention of the helpers: arguments in rdi, rsi; rax, rcx, rdx,
# rsi, rdi, r8-r11 may be clobbered; rbx, rbp, r12-r15 are preserved.

        .set COM1, 0x3f8
        .set COM1_LSR, 0x3fd
        .set DEBUG_EXIT, 0xf4
        .set LAPIC_BASE, 0xfee00000
        .set IOAPIC_BASE, 0xfec00000

        .set SEL_CODE64, 0x08
        .set SEL_DATA, 0x10
        .set SEL_CODE32, 0x18
        .set SEL_UDATA, 0x20
        .set SEL_UCODE64, 0x28
        .set SEL_TSS, 0x30

        .set START_INFO_MAGIC, 0x336ec578
        .set TSS_SIZE, 104

        # Exit statuses.
        .set EXIT_OK, 0
        .set EXIT_CHECK_FAILED, 1
        .set EXIT_TIMEOUT, 2
        .set EXIT_UNEXPECTED_EXCEPTION, 3

        # Exception frame seen by a hook (rdi): saved registers, then the
        # vector and error code pushed by the stub, then what the CPU pushed.
        .set F_RAX, 0
        .set F_RBX, 8
        .set F_RCX, 16
        .set F_RDX, 24
        .set F_RSI, 32
        .set F_RDI, 40
        .set F_RBP, 48
        .set F_R8, 56
        .set F_R9, 64
        .set F_R10, 72
        .set F_R11, 80
        .set F_R12, 88
        .set F_R13, 96
        .set F_R14, 104
        .set F_R15, 112
        .set F_VECTOR, 120
        .set F_ERROR, 128
        .set F_RIP, 136
        .set F_CS, 144
        .set F_RFLAGS, 152
        .set F_RSP, 160
        .set F_SS, 168

# ---------------------------------------------------------------- macros

# Prints a string literal (no newline).
        .macro PRINT text
        .pushsection .rodata
.Lstr\@: .asciz "\text"
        .popsection
        lea .Lstr\@(%rip), %rdi
        call puts
        .endm

# Prints a string literal and a newline.
        .macro PRINTLN text
        .pushsection .rodata
.Lstr\@: .ascii "\text"
        .byte 10, 0
        .popsection
        lea .Lstr\@(%rip), %rdi
        call puts
        .endm

# Prints "FAIL: <text>" and exits with EXIT_CHECK_FAILED.
        .macro FAIL text
        .pushsection .rodata
.Lstr\@: .ascii "FAIL: \text"
        .byte 10, 0
        .popsection
        lea .Lstr\@(%rip), %rdi
        mov $EXIT_CHECK_FAILED, %esi
        jmp fail
        .endm

# ---------------------------------------------------------------- PVH note

        .section .note.Xen, "a"
        .p2align 2
        .long 4                 # namesz
        .long 4                 # descsz: a 32-bit physical entry address
        .long 18                # XEN_ELFNOTE_PHYS32_ENTRY
        .asciz "Xen"
        .long _start
        # QEMU reads the descriptor as a pointer-sized field: follow with
        # an empty note (namesz, descsz, type all 0) so the upper half it
        # reads is zero and stays inside the note segment.
        .long 0, 0, 0

# ---------------------------------------------------------------- entry

        .section .text.entry, "ax"
        .code32
        .globl _start
_start:
        # PVH: 32-bit protected mode, paging off, flat segments,
        # EBX = hvm_start_info. No stack yet.
        cli
        cld
        movl %ebx, start_info_ptr
        lgdt gdt_desc32
        movl %cr4, %eax
        orl $0x20, %eax                 # PAE
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $0xc0000080, %ecx          # EFER
        rdmsr
        orl $0x100, %eax                # LME
        wrmsr
        movl %cr0, %eax
        orl $0x80000001, %eax           # PG | PE
        movl %eax, %cr0
        ljmp $SEL_CODE64, $entry64

        .code64
entry64:
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        lea stack_top(%rip), %rsp
        lgdt gdt_desc(%rip)
        call idt_init
        call uart_init
        PRINTLN "VESSEL-TEST-BEGIN"
        call guest_main
        xor %edi, %edi
        jmp exit

# exit(edi = status): debug-exit port, then halt forever.
        .globl exit
exit:
        mov %edi, %eax
        out %al, $DEBUG_EXIT
1:      cli
        hlt
        jmp 1b

# fail(rdi = message, esi = status): prints the message, exits.
fail:
        mov %esi, %ebx
        call puts
        mov %ebx, %edi
        jmp exit

# ---------------------------------------------------------------- serial

uart_init:
        mov $0x3f9, %dx                 # IER: no interrupts
        xor %eax, %eax
        out %al, %dx
        mov $0x3fb, %dx                 # LCR: 8N1, DLAB off
        mov $0x03, %al
        out %al, %dx
        mov $0x3fa, %dx                 # FCR: enable and clear FIFOs
        mov $0x07, %al
        out %al, %dx
        ret

# putc(dil = byte). Waits (bounded) for the transmitter holding register.
putc:
        mov $COM1_LSR, %dx
        mov $100000, %ecx
1:      in %dx, %al
        test $0x20, %al
        jnz 2f
        dec %ecx
        jnz 1b
2:      mov $COM1, %dx
        mov %edi, %eax
        out %al, %dx
        ret

# puts(rdi = NUL-terminated string).
puts:
        push %rbx
        mov %rdi, %rbx
1:      movzbl (%rbx), %edi
        test %edi, %edi
        jz 2f
        call putc
        inc %rbx
        jmp 1b
2:      pop %rbx
        ret

# put_hex(rdi = value, esi = number of digits, 1..16), no prefix.
put_hex:
        push %rbx
        push %r12
        mov %rdi, %rbx
        mov %esi, %r12d
        test %r12d, %r12d
        jz 3f
        cmp $16, %r12d
        jbe 1f
        mov $16, %r12d
1:      lea -1(%r12), %ecx
        shl $2, %ecx
        mov %rbx, %rdi
        shr %cl, %rdi
        and $0xf, %edi
        lea hex_digits(%rip), %rax
        movzbl (%rax,%rdi), %edi
        call putc
        dec %r12d
        jnz 1b
3:      pop %r12
        pop %rbx
        ret

# put_hex_prefixed(rdi = value, esi = digits): "0x" then put_hex.
put_hex_prefixed:
        push %rdi
        push %rsi
        mov $'0', %edi
        call putc
        mov $'x', %edi
        call putc
        pop %rsi
        pop %rdi
        jmp put_hex

# put_dec(rdi = unsigned value).
put_dec:
        push %rbx
        sub $32, %rsp
        lea 31(%rsp), %rbx
        movb $0, (%rbx)
        mov %rdi, %rax
        mov $10, %ecx
1:      xor %edx, %edx
        div %rcx
        add $'0', %dl
        dec %rbx
        mov %dl, (%rbx)
        test %rax, %rax
        jnz 1b
        mov %rbx, %rdi
        call puts
        add $32, %rsp
        pop %rbx
        ret

newline:
        mov $10, %edi
        jmp putc

# ---------------------------------------------------------------- APICs

# lapic_read(edi = register offset) -> eax.
lapic_read:
        and $0xff0, %edi
        mov $LAPIC_BASE, %eax
        mov (%rax,%rdi), %eax
        ret

# lapic_write(edi = register offset, esi = value).
lapic_write:
        and $0xff0, %edi
        mov $LAPIC_BASE, %eax
        mov %esi, (%rax,%rdi)
        ret

# lapic_enable(): software-enables the local APIC, spurious vector 0xff
# (with an IRET-only handler), task priority 0.
lapic_enable:
        mov $0xff, %edi
        lea spurious_isr(%rip), %rsi
        call idt_set_gate
        mov $0x80, %edi                 # TPR
        xor %esi, %esi
        call lapic_write
        mov $0xf0, %edi                 # SVR
        mov $0x1ff, %esi
        jmp lapic_write

spurious_isr:
        iretq

# lapic_eoi(): preserves every register (usable from interrupt handlers).
lapic_eoi:
        push %rax
        mov $LAPIC_BASE + 0xb0, %eax
        movl $0, (%rax)
        pop %rax
        ret

# ioapic_read(edi = register) -> eax.
ioapic_read:
        mov $IOAPIC_BASE, %eax
        mov %edi, (%rax)
        mov 0x10(%rax), %eax
        ret

# ioapic_write(edi = register, esi = value).
ioapic_write:
        mov $IOAPIC_BASE, %eax
        mov %edi, (%rax)
        mov %esi, 0x10(%rax)
        ret

# pic_mask_all(): masks both 8259s so only APIC interrupts arrive.
pic_mask_all:
        mov $0xff, %al
        out %al, $0x21
        out %al, $0xa1
        ret

# ---------------------------------------------------------------- IDT

# tss_load(rdi = RSP0): a 64-bit TSS with that RSP0 and no I/O bitmap, its
# 16-byte descriptor in the GDT's TSS slot, loaded into TR. For the guests
# that enter CPL3 and must come back to CPL0 on an interrupt or exception.
tss_load:
        mov %rdi, tss + 4(%rip)
        movw $TSS_SIZE, tss + 102(%rip)
        lea tss(%rip), %rax
        lea gdt_tss(%rip), %rdi
        movw $TSS_SIZE - 1, (%rdi)      # limit 15:0
        mov %ax, 2(%rdi)                # base 15:0
        mov %rax, %rcx
        shr $16, %rcx
        mov %cl, 4(%rdi)                # base 23:16
        movb $0x89, 5(%rdi)             # present, 64-bit TSS (available)
        movb $0, 6(%rdi)
        shr $8, %rcx
        mov %cl, 7(%rdi)                # base 31:24
        shr $8, %rcx
        mov %ecx, 8(%rdi)               # base 63:32
        movl $0, 12(%rdi)
        mov $SEL_TSS, %eax
        ltr %ax
        ret

# idt_init: exception stubs 0-31 into the IDT, then lidt.
idt_init:
        lea exc_stubs(%rip), %rsi
        xor %edi, %edi
1:      push %rdi
        push %rsi
        call idt_set_gate
        pop %rsi
        pop %rdi
        add $EXC_STUB_SIZE, %rsi
        inc %edi
        cmp $32, %edi
        jb 1b
        lidt idt_desc(%rip)
        ret

# idt_set_gate(edi = vector 0-255, rsi = handler): present 64-bit
# interrupt gate, DPL 0, no IST.
idt_set_gate:
        mov $0x8e, %edx
        jmp idt_set_gate_attr

# idt_set_gate_user(edi = vector, rsi = handler): as above with DPL 3,
# so CPL3 code may reach it with INT n.
idt_set_gate_user:
        mov $0xee, %edx
        # fall through

# idt_set_gate_attr(edi = vector, rsi = handler, edx = type/attr byte).
idt_set_gate_attr:
        movzbl %dil, %edi
        shl $4, %edi
        lea idt(%rip), %rax
        add %rdi, %rax
        mov %esi, %ecx
        mov %cx, (%rax)                 # offset 15:0
        movw $SEL_CODE64, 2(%rax)
        movb $0, 4(%rax)                # IST 0
        mov %dl, 5(%rax)
        shr $16, %ecx
        mov %cx, 6(%rax)                # offset 31:16
        mov %rsi, %rcx
        shr $32, %rcx
        mov %ecx, 8(%rax)               # offset 63:32
        movl $0, 12(%rax)
        ret

# One fixed-size stub per exception vector. Vectors without a CPU error
# code push a zero so every frame looks the same.
        .set EXC_STUB_SIZE, 16
        .p2align 4
exc_stubs:
        .set vec, 0
        .rept 32
        .p2align 4
        .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
        nop
        nop
        .else
        pushq $0
        .endif
        pushq $vec
        jmp exc_common
        .set vec, vec + 1
        .endr

exc_common:
        push %r15
        push %r14
        push %r13
        push %r12
        push %r11
        push %r10
        push %r9
        push %r8
        push %rbp
        push %rdi
        push %rsi
        push %rdx
        push %rcx
        push %rbx
        push %rax
        mov %rsp, %rdi
        mov exc_hook(%rip), %rax
        test %rax, %rax
        jz exc_unexpected
        cld
        call *%rax
        pop %rax
        pop %rbx
        pop %rcx
        pop %rdx
        pop %rsi
        pop %rdi
        pop %rbp
        pop %r8
        pop %r9
        pop %r10
        pop %r11
        pop %r12
        pop %r13
        pop %r14
        pop %r15
        add $16, %rsp
        iretq

# exc_unexpected(rdi = frame): prints what happened and exits.
exc_unexpected:
        mov %rdi, %rbx
        PRINT "FAIL: unexpected exception vector "
        mov F_VECTOR(%rbx), %rdi
        mov $2, %esi
        call put_hex_prefixed
        PRINT " error "
        mov F_ERROR(%rbx), %rdi
        mov $4, %esi
        call put_hex_prefixed
        PRINT " cs "
        mov F_CS(%rbx), %rdi
        mov $4, %esi
        call put_hex_prefixed
        PRINT " rip "
        mov F_RIP(%rbx), %rdi
        mov $16, %esi
        call put_hex_prefixed
        PRINT " rsp "
        mov F_RSP(%rbx), %rdi
        mov $16, %esi
        call put_hex_prefixed
        PRINT " cr2 "
        mov %cr2, %rdi
        mov $16, %esi
        call put_hex_prefixed
        call newline
        mov $EXIT_UNEXPECTED_EXCEPTION, %edi
        jmp exit

# ---------------------------------------------------------------- data

        .section .rodata
hex_digits:
        .ascii "0123456789abcdef"

        .section .data
        .p2align 3
        .globl start_info_ptr
start_info_ptr:
        .quad 0
# Called with rdi = exception frame; 0 = every exception is unexpected.
exc_hook:
        .quad 0

# GDT: null, kernel code64, kernel data, code32 (flat; also the SYSRET
# compatibility slot), user data, user code64, TSS (16 bytes, filled by
# the guest that needs it).
        .p2align 4
gdt:
        .quad 0
        .quad 0x00af9a000000ffff        # 0x08 code64, DPL0
        .quad 0x00cf92000000ffff        # 0x10 data, DPL0
        .quad 0x00cf9a000000ffff        # 0x18 code32, DPL0
        .quad 0x00cff2000000ffff        # 0x20 data, DPL3
        .quad 0x00affa000000ffff        # 0x28 code64, DPL3
gdt_tss:
        .quad 0                         # 0x30 TSS (low)
        .quad 0                         # 0x30 TSS (high)
gdt_end:

        .p2align 3
        .word 0
gdt_desc32:
        .word gdt_end - gdt - 1
        .long gdt
        .p2align 3
        .word 0, 0, 0
gdt_desc:
        .word gdt_end - gdt - 1
        .quad gdt
        .p2align 3
        .word 0, 0, 0
idt_desc:
        .word 256 * 16 - 1
        .quad idt

# Identity map of 0-4 GiB with 2 MiB pages, user-accessible (the syscall
# guest runs user code in it). The top GiB (MMIO hole: IOAPIC, local APIC)
# is uncached.
        .section .data.pagetables, "aw"
        .p2align 12
        .globl pml4
pml4:
        .quad pdpt + 0x7
        .fill 511, 8, 0
pdpt:
        .quad pd0 + 0x7
        .quad pd0 + 0x1000 + 0x7
        .quad pd0 + 0x2000 + 0x7
        .quad pd0 + 0x3000 + 0x7
        .fill 508, 8, 0
pd0:
        .set page, 0
        .rept 1536
        .quad (page << 21) | 0x87       # P RW US PS
        .set page, page + 1
        .endr
        .rept 512
        .quad (page << 21) | 0x9f       # P RW US PWT PCD PS
        .set page, page + 1
        .endr

        .section .bss
        .p2align 12
idt:
        .skip 256 * 16
        .p2align 4
tss:    .skip TSS_SIZE
        .p2align 4
stack_bottom:
        .skip 16384
stack_top:

        .section .text
        .code64
