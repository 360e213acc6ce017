# hello: the PVH entry reached 64-bit long mode.
        .include "common.S"

guest_main:
        PRINTLN "hello from the vessel test guest"
        mov $0xc0000080, %ecx           # EFER
        rdmsr
        test $0x400, %eax               # LMA
        jnz 1f
        FAIL "efer.lma is clear"
1:      mov %cs, %eax
        cmp $SEL_CODE64, %eax
        je 2f
        FAIL "cs is not the 64-bit code selector"
2:      PRINTLN "hello: long mode ok"
        ret
