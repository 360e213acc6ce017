# reboot: pulses the CPU reset line through the i8042 (command 0xfe), the
# way Linux's reboot=k does. vessel restarts the guest, or exits 0 with
# --no-reboot (QEMU with -no-reboot exits 0).
        .include "common.S"

guest_main:
        PRINTLN "reboot: pulsing the reset line through the i8042"
        mov $0xfe, %al
        out %al, $0x64
        # The reset is not instant everywhere: give it a moment.
        mov $1000000, %ecx
1:      pause
        loop 1b
        FAIL "still running after the reset pulse"
