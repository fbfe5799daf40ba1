/* crt0: user program entry. The kernel enters at e_entry with rdi = the spawn argument and rsp =
 * the top of the user stack (16-byte aligned). main(arg)'s return value becomes the exit status. */
#define SYS_EXIT 9 /* harness.h is C-only; lib/ulib.c asserts that this matches */

    .section .text.entry, "ax"
    .globl _start
    .type _start, @function
_start:
    movq    %rsp, ulib_entry_rsp(%rip)
    movq    %rdi, ulib_entry_arg(%rip)
    xorl    %ebp, %ebp
    andq    $-16, %rsp
    call    main                    /* rdi is still the spawn argument */
    movl    %eax, %edi
    movl    $SYS_EXIT, %eax
    syscall
1:  ud2                             /* SYS_EXIT returned: let the kernel kill us */
    jmp     1b
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
