/*
 * bits: the BSP's entry point (the sample runs on one vCPU; APs are never started).
 * Linked at 0xFFFFFFFF80100000, loaded at physical 0x100000.
 */
    .section .text.entry, "ax"
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    leaq    stack_top(%rip), %rsp
    xorl    %ebp, %ebp
    call    bits_main
1:  cli
    hlt
    jmp     1b
    .size _start, . - _start

    .bss
    .balign 16
stack:
    .skip 65536
stack_top:
    .section .note.GNU-stack, "", @progbits
