# triple_fault: with an empty IDT (limit 0) any exception becomes #GP,
# then #DF, then a triple fault: the machine shuts down. vessel reports
# the shutdown and exits non-zero; QEMU with -no-reboot exits 0.
        .include "common.S"

guest_main:
        PRINTLN "triple_fault: loading an empty idt"
        lidt empty_idt_desc(%rip)
        ud2
        FAIL "still running after the triple fault"

        .section .data
        .p2align 3
        .word 0, 0, 0
empty_idt_desc:
        .word 0
        .quad 0
        .section .text
