# pit_irq: the 8254 PIT's IRQ0 reaches the CPU through the IOAPIC (at the
# GSI the MADT's interrupt source override names) and the local APIC:
# channel 0 as a 1 kHz rate generator, ten interrupts counted with sti;hlt.
# A one-shot local APIC timer (about 3 s) is the watchdog: if the PIT's
# interrupts never come, the guest fails instead of halting forever.
        .include "common.S"
        .include "acpi_lib.S"

        .set PIT_VECTOR, 0x30
        .set PIT_DIVISOR, 1193          # 1.193182 MHz / 1193 = 1 kHz
        .set TICKS, 10
        .set WATCHDOG_VECTOR, 0x41
        .set WATCHDOG_COUNT, 23437500   # x 128 = 3 s at a 1 GHz APIC bus

guest_main:
        push %rbx
        push %r12
        call pic_mask_all
        # GSI of ISA IRQ 0: the MADT override, else 2 (the PC wiring).
        mov $2, %r12d
        call acpi_init
        test %eax, %eax
        jz 1f
        xor %edi, %edi
        mov $2, %esi
        call madt_irq_gsi
        mov %eax, %r12d
1:      PRINT "pit: irq0 is gsi "
        mov %r12d, %edi
        call put_dec
        call newline
        mov $1, %edi                    # IOAPIC version: max redirection entry
        call ioapic_read
        shr $16, %eax
        movzbl %al, %eax
        cmp %eax, %r12d
        jbe 2f
        FAIL "gsi beyond the ioapic's redirection entries"

2:      mov $PIT_VECTOR, %edi
        lea pit_isr(%rip), %rsi
        call idt_set_gate
        call lapic_enable
        mov $0x20, %edi                 # local APIC ID register
        call lapic_read
        shr $24, %eax
        mov %eax, %ebx
        # Redirection entry: high dword = destination, low = fixed, physical,
        # edge, active high, unmasked.
        lea 0x11(,%r12,2), %edi
        mov %ebx, %esi
        shl $24, %esi
        call ioapic_write
        lea 0x10(,%r12,2), %edi
        mov $PIT_VECTOR, %esi
        call ioapic_write

        mov $WATCHDOG_VECTOR, %edi
        lea watchdog_isr(%rip), %rsi
        call idt_set_gate
        mov $0x3e0, %edi                # divide by 128
        mov $0xa, %esi
        call lapic_write
        mov $0x320, %edi                # LVT timer: one-shot
        mov $WATCHDOG_VECTOR, %esi
        call lapic_write
        mov $0x380, %edi
        mov $WATCHDOG_COUNT, %esi
        call lapic_write

        mov $0x34, %al                  # channel 0, lobyte/hibyte, mode 2
        out %al, $0x43
        mov $PIT_DIVISOR & 0xff, %al
        out %al, $0x40
        mov $PIT_DIVISOR >> 8, %al
        out %al, $0x40

3:      cli
        cmpl $TICKS, ticks(%rip)
        jae 4f
        sti
        hlt
        jmp 3b
4:      lea 0x10(,%r12,2), %edi         # mask the entry again
        mov $0x10000 | PIT_VECTOR, %esi
        call ioapic_write
        mov $0x320, %edi                # disarm the watchdog
        mov $0x10000 | WATCHDOG_VECTOR, %esi
        call lapic_write
        PRINTLN "pit: 10 ticks"
        pop %r12
        pop %rbx
        ret

pit_isr:
        incl ticks(%rip)
        call lapic_eoi
        iretq

watchdog_isr:
        PRINT "pit: "
        mov ticks(%rip), %edi
        call put_dec
        PRINTLN " ticks before the watchdog"
        PRINTLN "FAIL: timeout waiting for pit interrupts"
        mov $EXIT_TIMEOUT, %edi
        jmp exit

        .section .data
        .p2align 2
ticks:  .long 0
        .section .text
