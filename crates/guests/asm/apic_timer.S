# apic_timer: the local APIC timer in periodic mode (divide by 16)
# interrupts the CPU; ten interrupts counted with sti;hlt. The PIT at
# 100 Hz through the IOAPIC is the watchdog (300 ticks, about 3 s): if the
# timer's interrupts never come, the guest fails instead of halting forever.
        .include "common.S"
        .include "acpi_lib.S"

        .set TIMER_VECTOR, 0x40
        .set TIMER_COUNT, 100000        # 1.6 ms at a 1 GHz APIC bus
        .set TICKS, 10
        .set WATCHDOG_VECTOR, 0x31
        .set WATCHDOG_DIVISOR, 11932    # 100 Hz
        .set WATCHDOG_TICKS, 300

guest_main:
        push %rbx
        call pic_mask_all
        call arm_watchdog
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
        mov watchdog_entry(%rip), %edi  # disarm the watchdog
        mov $0x10000 | WATCHDOG_VECTOR, %esi
        call ioapic_write
        pop %rbx
        ret

# arm_watchdog(): PIT channel 0 at 100 Hz to WATCHDOG_VECTOR through the
# IOAPIC (GSI from the MADT override for IRQ 0, else 2), to this CPU.
arm_watchdog:
        mov $2, %ebx
        call acpi_init
        test %eax, %eax
        jz 1f
        xor %edi, %edi
        mov $2, %esi
        call madt_irq_gsi
        mov %eax, %ebx
1:      mov $1, %edi                    # IOAPIC version: max redirection entry
        call ioapic_read
        shr $16, %eax
        movzbl %al, %eax
        cmp %eax, %ebx
        ja 2f                           # no usable GSI: run without a watchdog
        mov $WATCHDOG_VECTOR, %edi
        lea watchdog_isr(%rip), %rsi
        call idt_set_gate
        lea 0x10(,%rbx,2), %eax
        mov %eax, watchdog_entry(%rip)
        mov $0x20, %edi                 # this CPU's APIC ID
        call lapic_read
        mov %eax, %esi
        and $0xff000000, %esi
        lea 0x11(,%rbx,2), %edi
        call ioapic_write
        mov watchdog_entry(%rip), %edi
        mov $WATCHDOG_VECTOR, %esi
        call ioapic_write
        mov $0x34, %al                  # channel 0, lobyte/hibyte, mode 2
        out %al, $0x43
        mov $WATCHDOG_DIVISOR & 0xff, %al
        out %al, $0x40
        mov $WATCHDOG_DIVISOR >> 8, %al
        out %al, $0x40
2:      ret

watchdog_isr:
        incl watchdog_ticks(%rip)
        cmpl $WATCHDOG_TICKS, watchdog_ticks(%rip)
        jae 1f
        call lapic_eoi
        iretq
1:      PRINT "apic timer: "
        mov ticks(%rip), %edi
        call put_dec
        PRINTLN " interrupts before the watchdog"
        PRINTLN "FAIL: timeout waiting for apic timer interrupts"
        mov $EXIT_TIMEOUT, %edi
        jmp exit

timer_isr:
        incl ticks(%rip)
        call lapic_eoi
        iretq

        .section .data
        .p2align 2
ticks:  .long 0
watchdog_ticks: .long 0
watchdog_entry: .long 0
        .section .text
