/* Host (Linux) entry of the user programs, for host-test only: Linux starts us with rsp at
 * argc/argv/envp; host_start picks the spawn argument from argv[1] and calls main. */
    .section .text.entry, "ax"
    .globl _start
    .type _start, @function
_start:
    movq    %rsp, ulib_entry_rsp(%rip)
    xorl    %ebp, %ebp
    movq    %rsp, %rdi
    andq    $-16, %rsp
    call    host_start
    ud2
    .size _start, . - _start

    .bss
    .balign 8
    .globl ulib_entry_rsp
ulib_entry_rsp:
    .quad   0
    .globl ulib_entry_arg
ulib_entry_arg:
    .quad   0

    .section .note.GNU-stack, "", @progbits
