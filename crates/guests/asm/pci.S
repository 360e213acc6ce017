# pci: configuration mechanism #1 (0xcf8/0xcfc). Scans bus 0 and checks
# that 00:00.0 is a host bridge (class 06, subclass 00). Other devices
# differ between machines and are not printed.
        .include "common.S"

# pci_read(edi = bus << 16 | device << 11 | function << 8 | offset) -> eax.
pci_read:
        mov %edi, %eax
        and $0x00fffffc, %eax
        or $0x80000000, %eax
        mov $0xcf8, %dx
        out %eax, %dx
        mov $0xcfc, %dx
        in %dx, %eax
        ret

guest_main:
        push %rbx
        push %r12
        xor %ebx, %ebx                  # device
        xor %r12d, %r12d                # devices found
1:      mov %ebx, %edi
        shl $11, %edi
        call pci_read
        cmp $0xffff, %ax
        je 2f
        inc %r12d
2:      inc %ebx
        cmp $32, %ebx
        jb 1b
        test %r12d, %r12d
        jnz 3f
        FAIL "no device on bus 0"
3:      PRINTLN "pci: bus 0 scanned"
        xor %edi, %edi                  # 00:00.0 vendor/device
        call pci_read
        cmp $0xffff, %ax
        je 4f
        test %ax, %ax
        jnz 5f
4:      FAIL "no device at 00:00.0"
5:      mov $0x08, %edi                 # class code, revision
        call pci_read
        shr $16, %eax
        cmp $0x0600, %eax
        je 6f
        FAIL "00:00.0 is not a host bridge"
6:      PRINTLN "pci: host bridge at 00:00.0"
        pop %r12
        pop %rbx
        ret
