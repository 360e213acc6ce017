# apic_timer: the local APIC timer in periodic mode (divide by 16)
# interrupts the CPU; ten interrupts counted with sti;hlt.
        .include "common.S"

        .set TIMER_VECTOR, 0x40
        .set TIMER_COUNT, 100000        # 1.6 ms at a 1 GHz APIC bus
        .set TICKS, 10

guest_main:
        call pic_mask_all
        mov $TIMER_VECTOR, %edi
        lea timer_isr(%rip), %rsi
        call idt_set_gate
        call lapic_enable
        mov $0x3e0, %edi                # divide configuration: 16
        mov $0x3, %esi
        call lapic_write
        mov $0x320, %edi                # LVT timer: periodic, unmasked
        mov $0x20000 | TIMER_VECTOR, %esi
        call lapic_write
        mov $0x380, %edi                # initial count starts the timer
        mov $TIMER_COUNT, %esi
        call lapic_write

1:      cli
        cmpl $TICKS, ticks(%rip)
        jae 2f
        sti
        hlt
        jmp 1b
2:      mov $0x320, %edi                # mask and stop
        mov $0x10000 | TIMER_VECTOR, %esi
        call lapic_write
        mov $0x380, %edi
        xor %esi, %esi
        call lapic_write
        PRINTLN "apic timer: 10 interrupts"
        ret

timer_isr:
        incl ticks(%rip)
        call lapic_eoi
        iretq

        .section .data
        .p2align 2
ticks:  .long 0
        .section .text
