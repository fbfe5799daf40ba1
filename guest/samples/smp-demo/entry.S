/*
 * smp-demo: entry points, descriptor-table reload, interrupt stubs and the
 * exception-test routines with their fixup-table entries.
 *
 * Linked at 0xFFFFFFFF80100000 (-mcmodel=kernel), loaded at physical 0x100000.
 * The machine enters _start in 64-bit mode with the first 4 GiB identity
 * mapped and physical 0..2 GiB aliased at 0xFFFFFFFF80000000.
 */

#include "entry.h"   /* guest/lib: EX_ENTRY, BSP_ENTRY, AP_ENTRY, ISR_STUBS, GDT_LOAD, PUSH_GPRS, POP_GPRS */

    .section .text.entry, "ax"

    BSP_ENTRY bsp_main, bsp_stack_top, zero_bss=1
/* AP: RSP = mailbox rsp, RDI = mailbox arg (cpu index). */
    AP_ENTRY ap_main

    .text

    GDT_LOAD 0x08, 0x10, 0x18   /* this sample's GDT: kernel code, kernel data, TSS */

/* Interrupt stubs: every one jumps to isr_common. */
    ISR_STUBS isr_common

/*
 * Common path. Stack on entry (low to high): vector, error code, RIP, CS,
 * RFLAGS, RSP, SS. After the 15 pushes below the stack holds a struct
 * int_frame (demo.h); isr_dispatch(frame) may rewrite any field, including
 * RIP for exception fixups.
 */
    .p2align 4
isr_common:
    PUSH_GPRS
    cld
    movq    %rsp, %rdi                  /* arg: struct int_frame * */
    movq    %rsp, %rbx                  /* callee-saved copy of the frame pointer */
    andq    $-16, %rsp                  /* ABI alignment for the C call */
    call    isr_dispatch
    movq    %rbx, %rsp
    POP_GPRS
    addq    $16, %rsp                   /* drop vector and error code */
    iretq

/* ---- exception tests ------------------------------------------------- */

/* u64 test_breakpoint(void): returns the address following the int3. */
    .globl test_breakpoint
    .type test_breakpoint, @function
test_breakpoint:
    int3
1:  leaq    1b(%rip), %rax
    ret
    .size test_breakpoint, . - test_breakpoint

/* int test_divide_error(void): 1 if the #DE was recovered via the fixup. */
    .globl test_divide_error
    .type test_divide_error, @function
test_divide_error:
    movl    $1, %eax
    xorl    %edx, %edx
    xorl    %ecx, %ecx
1:  divl    %ecx                        /* #DE */
    xorl    %eax, %eax
    ret
2:  movl    $1, %eax
    ret
    EX_ENTRY(1b, 2b)
    .size test_divide_error, . - test_divide_error

/* int test_invalid_opcode(void) */
    .globl test_invalid_opcode
    .type test_invalid_opcode, @function
test_invalid_opcode:
1:  ud2                                 /* #UD */
    xorl    %eax, %eax
    ret
2:  movl    $1, %eax
    ret
    EX_ENTRY(1b, 2b)
    .size test_invalid_opcode, . - test_invalid_opcode

/* int test_general_protection(void): load from a non-canonical address. */
    .globl test_general_protection
    .type test_general_protection, @function
test_general_protection:
    movabsq $0x8000000000000000, %rdx
1:  movq    (%rdx), %rax                /* #GP(0) */
    xorl    %eax, %eax
    ret
2:  movl    $1, %eax
    ret
    EX_ENTRY(1b, 2b)
    .size test_general_protection, . - test_general_protection

/* int test_page_fault(u64 addr): load from an unmapped address. */
    .globl test_page_fault
    .type test_page_fault, @function
test_page_fault:
1:  movq    (%rdi), %rax                /* #PF, not-present read */
    xorl    %eax, %eax
    ret
2:  movl    $1, %eax
    ret
    EX_ENTRY(1b, 2b)
    .size test_page_fault, . - test_page_fault

/* ---- BSP boot stack -------------------------------------------------- */

    .bss
    .balign 16
bsp_stack:
    .skip 16384
bsp_stack_top:

    .section .note.GNU-stack, "", @progbits
