# rtc: the CMOS real-time clock. Waits for update-in-progress to clear,
# reads seconds..year and the century in the format register B names
# (BCD or binary, 12 or 24 hour) and checks every field is in range.
        .include "common.S"

        .set UIP_POLLS, 10000

# cmos_read(edi = register) -> eax.
cmos_read:
        mov %edi, %eax
        out %al, $0x70
        in $0x71, %al
        movzbl %al, %eax
        ret

# field(edi = raw value) -> eax = binary value, using r12d (register B);
# fails on a malformed BCD byte.
field:
        mov %edi, %eax
        test $0x4, %r12d                # DM: binary
        jnz 1f
        mov %eax, %ecx
        and $0xf, %ecx
        cmp $9, %ecx
        ja 2f
        mov %eax, %edx
        shr $4, %edx
        cmp $9, %edx
        ja 2f
        imul $10, %edx, %eax
        add %ecx, %eax
1:      ret
2:      FAIL "bad bcd value"

        .macro RANGE reg, lo, hi, what
        cmp $\lo, \reg
        jb 8f
        cmp $\hi, \reg
        ja 8f
        jmp 9f
8:      FAIL "\what out of range"
9:
        .endm

guest_main:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov $UIP_POLLS, %ebx
1:      mov $0x0a, %edi
        call cmos_read
        test $0x80, %al
        jz 2f
        dec %ebx
        jnz 1b
        FAIL "update in progress never cleared"
2:      PRINTLN "rtc: update-in-progress clear"
        mov $0x0b, %edi
        call cmos_read
        mov %eax, %r12d                 # register B

        mov $0x00, %edi                 # seconds
        call cmos_read
        mov %eax, %edi
        call field
        RANGE %eax, 0, 59, "seconds"
        mov $0x02, %edi                 # minutes
        call cmos_read
        mov %eax, %edi
        call field
        RANGE %eax, 0, 59, "minutes"
        mov $0x04, %edi                 # hours
        call cmos_read
        mov %eax, %r13d
        mov %eax, %edi
        and $0x7f, %edi
        call field
        test $0x2, %r12d                # 24-hour mode
        jnz 3f
        RANGE %eax, 1, 12, "hours"
        cmp $12, %eax                   # 12 AM/PM -> 0, PM adds 12
        jne 4f
        xor %eax, %eax
4:      test $0x80, %r13d
        jz 3f
        add $12, %eax
3:      RANGE %eax, 0, 23, "hours"
        mov $0x07, %edi                 # day of month
        call cmos_read
        mov %eax, %edi
        call field
        RANGE %eax, 1, 31, "day"
        mov $0x08, %edi                 # month
        call cmos_read
        mov %eax, %edi
        call field
        RANGE %eax, 1, 12, "month"
        mov $0x09, %edi                 # year in century
        call cmos_read
        mov %eax, %edi
        call field
        RANGE %eax, 0, 99, "year"
        mov %eax, %r14d
        mov $0x32, %edi                 # century
        call cmos_read
        mov %eax, %edi
        call field
        RANGE %eax, 20, 21, "century"
        imul $100, %eax, %eax
        add %r14d, %eax
        RANGE %eax, 2024, 2100, "year"
        PRINTLN "rtc: year ok"
        PRINTLN "rtc: fields in range"
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret
