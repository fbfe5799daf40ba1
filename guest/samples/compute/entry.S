/*
 * compute: entry points. Linked at 0xFFFFFFFF80100000 (after the parameter
 * block), loaded at physical 0x100000.
 */
    .section .text.entry, "ax"

/* BSP entry: RDI = physical address of the boot-info block. */
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    movq    %rdi, %r12
    leaq    bsp_stack_top(%rip), %rsp
    xorl    %ebp, %ebp
    movq    %r12, %rdi
    call    bsp_main
1:  cli
    hlt
    jmp     1b
    .size _start, . - _start

/* AP entry: RSP = mailbox rsp, RDI = mailbox arg (APIC ID). Halts when done. */
    .globl ap_entry
    .type ap_entry, @function
ap_entry:
    cli
    cld
    andq    $-16, %rsp
    xorl    %ebp, %ebp
    call    ap_main
1:  cli
    hlt
    jmp     1b
    .size ap_entry, . - ap_entry

    .bss
    .balign 16
bsp_stack:
    .skip 65536
bsp_stack_top:

    .section .note.GNU-stack, "", @progbits
