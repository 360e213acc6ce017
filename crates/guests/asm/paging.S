# paging: the guest's own 4 KiB page tables. A write to an unmapped page
# faults (#PF, CR2 = the address, error = not-present|write); the handler
# maps the page and the retried write lands. With CR0.WP=1 a write to a
# read-only page faults with present|write; the handler makes it writable
# and the write is retried.
        .include "common.S"

        .set TEST_VA, 0x100000000       # 4 GiB: PDPT entry 4, not identity mapped
        .set PF_NOT_PRESENT_WRITE, 0x2
        .set PF_PRESENT_WRITE, 0x3

guest_main:
        push %rbx
        # PDPT[4] -> pf_pd, pf_pd[0] -> pf_pt; pf_pt is empty.
        lea pf_pd(%rip), %rax
        or $0x3, %rax
        mov %rax, pdpt + 4 * 8(%rip)
        lea pf_pt(%rip), %rax
        or $0x3, %rax
        mov %rax, pf_pd(%rip)
        mov %cr3, %rax                  # flush
        mov %rax, %cr3
        lea hook(%rip), %rax
        mov %rax, exc_hook(%rip)

        # 1. Write to the unmapped page at TEST_VA: the hook maps page_a.
        lea page_a(%rip), %rax
        mov %rax, fix_pte(%rip)
        movq $0, pf_count(%rip)
        movq $PF_NOT_PRESENT_WRITE, want_error(%rip)
        movabs $TEST_VA, %rbx
        mov %rbx, want_cr2(%rip)
        movabs $0x1122334455667788, %rax
        mov %rax, (%rbx)
        cmpq $1, pf_count(%rip)
        je 1f
        FAIL "no #PF on the unmapped page"
1:      PRINTLN "paging: #PF on unmapped page: cr2 ok, error 0x2 ok"
        movabs $0x1122334455667788, %rax
        cmp page_a(%rip), %rax
        je 2f
        FAIL "retried write did not reach the mapped page"
2:      PRINTLN "paging: retried write reached the new page"

        # 2. Read-only page with CR0.WP=1: reads work, writes fault.
        lea page_b(%rip), %rax
        or $0x1, %rax                   # present, read-only
        mov %rax, pf_pt + 8(%rip)
        mov %cr0, %rax
        or $0x10000, %rax               # WP
        mov %rax, %cr0
        movabs $TEST_VA + 0x1000, %rbx
        mov (%rbx), %rax                # read: a fault here is unexpected
        movq $0, pf_count(%rip)
        movq $0, fix_pte(%rip)          # hook: set RW instead of mapping
        movq $PF_PRESENT_WRITE, want_error(%rip)
        mov %rbx, want_cr2(%rip)
        movq $0x55aa, (%rbx)
        cmpq $1, pf_count(%rip)
        je 3f
        FAIL "no #PF on the read-only page"
3:      PRINTLN "paging: #PF on read-only page with cr0.wp: error 0x3 ok"
        cmpq $0x55aa, page_b(%rip)
        je 4f
        FAIL "write after making the page writable was lost"
4:      PRINTLN "paging: write after making the page writable ok"
        movq $0, exc_hook(%rip)
        pop %rbx
        ret

# hook(rdi = frame): expects one #PF at want_cr2 with want_error. Maps
# fix_pte there when set, else makes the existing entry writable.
hook:
        push %rbx
        mov %rdi, %rbx
        cmpq $14, F_VECTOR(%rbx)
        jne 9f
        cmpq $0, pf_count(%rip)
        jne 9f
        mov %cr2, %rax
        cmp want_cr2(%rip), %rax
        jne 7f
        mov F_ERROR(%rbx), %rax
        cmp want_error(%rip), %rax
        jne 8f
        incq pf_count(%rip)
        # PTE index of want_cr2 inside pf_pt (bits 20:12).
        mov want_cr2(%rip), %rcx
        shr $12, %rcx
        and $0x1ff, %ecx
        lea pf_pt(%rip), %rdx
        mov fix_pte(%rip), %rax
        test %rax, %rax
        jz 1f
        or $0x3, %rax
        mov %rax, (%rdx,%rcx,8)
        jmp 2f
1:      orq $0x2, (%rdx,%rcx,8)
2:      mov want_cr2(%rip), %rax
        invlpg (%rax)
        pop %rbx
        ret
7:      PRINT "paging: cr2 "
        mov %cr2, %rdi
        mov $16, %esi
        call put_hex_prefixed
        call newline
        FAIL "wrong cr2"
8:      PRINT "paging: error "
        mov F_ERROR(%rbx), %rdi
        mov $4, %esi
        call put_hex_prefixed
        call newline
        FAIL "wrong #PF error code"
9:      mov %rbx, %rdi
        jmp exc_unexpected

        .section .data
        .p2align 3
pf_count:       .quad 0
want_cr2:       .quad 0
want_error:     .quad 0
fix_pte:        .quad 0

        .section .bss
        .p2align 12
pf_pd:  .skip 4096
pf_pt:  .skip 4096
page_a: .skip 4096
page_b: .skip 4096
        .section .text
