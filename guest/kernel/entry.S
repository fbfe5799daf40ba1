/*
 * Kernel entry points: boot (BSP and AP), descriptor reload, interrupt/exception stubs,
 * the syscall entry, the return-to-user path, the context switch and the faultable
 * user-copy routines with their exception-table entries.
 *
 * Linked at 0xFFFFFFFF80100000 (-mcmodel=kernel), loaded at physical 0x100000.
 * Invariants a DBT relies on are documented in docs/kernel-contract.md.
 */
#define EFAULT 14        /* harness.h values (that header is C-only) */
#define ENAMETOOLONG 36

#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x23
#define SEL_UCODE 0x2B
#define SEL_TSS   0x30
#define VEC_SYSCALL 0x100
#define PCPU_KSTACK_TOP 8
#define PCPU_USER_RSP   16
#define FRAME_REDUNDANT_OFFSET (15 * 8)

#include "entry.h"   /* guest/lib: EX_ENTRY, BSP_ENTRY, AP_ENTRY, ISR_STUBS, GDT_LOAD, PUSH_GPRS, POP_GPRS */

    .section .text.entry, "ax"

    BSP_ENTRY kmain, boot_stack_top, zero_bss=1
/* AP: RSP = the AP's idle-thread stack (mailbox rsp), RDI = cpu index. */
    AP_ENTRY ap_main

    .text

    GDT_LOAD SEL_KCODE, SEL_KDATA, SEL_TSS, zero_fs_gs=1

/* Interrupt stubs: every one jumps to isr_common. */
    ISR_STUBS isr_common

/*
 * Common interrupt/exception path. On entry (low to high): vector, error code, RIP, CS,
 * RFLAGS, RSP, SS. swapgs when we came from user mode (CS.RPL == 3), so GS_BASE is the
 * per-CPU area in the kernel. The frame (struct frame, kernel.h) ends up at RSP.
 */
    .p2align 4
isr_common:
    testb   $3, 24(%rsp)
    jz      1f
    swapgs
1:  subq    $8, %rsp                    /* the redundant slot */
    PUSH_GPRS
    movl    %ds, %eax                   /* written on every entry ... */
    movq    %rax, FRAME_REDUNDANT_OFFSET(%rsp)   /* ... and never read back */
    cld
    movq    %rsp, %rdi
    movq    %rsp, %rbx
    andq    $-16, %rsp
    call    isr_dispatch
    movq    %rbx, %rsp
    .globl isr_exit
isr_exit:
    POP_GPRS
    addq    $24, %rsp                   /* redundant slot (not read), vector, error code */
    testb   $3, 8(%rsp)
    jz      2f
    swapgs
2:  iretq

/* void ret_to_user(struct frame *f): enter user mode through the interrupt exit path
 * (iretq). Called with IF = 0 on the thread's kernel stack; a jump, not a return. */
    .globl ret_to_user
    .type ret_to_user, @function
ret_to_user:
    movq    %rdi, %rsp
    jmp     isr_exit
    .size ret_to_user, . - ret_to_user

/*
 * syscall entry (MSR_LSTAR). The CPU saved RIP in RCX and RFLAGS in R11 and cleared
 * IF/DF/TF/AC (MSR_FMASK). Build a struct frame on the thread's kernel stack (top from
 * the per-CPU area), run syscall_dispatch with interrupts on, return with sysretq.
 */
    .globl syscall_entry
    .type syscall_entry, @function
syscall_entry:
    swapgs
    movq    %rsp, %gs:PCPU_USER_RSP
    movq    %gs:PCPU_KSTACK_TOP, %rsp
    pushq   $SEL_UDATA                  /* ss     */
    pushq   %gs:PCPU_USER_RSP           /* rsp    */
    pushq   %r11                        /* rflags */
    pushq   $SEL_UCODE                  /* cs     */
    pushq   %rcx                        /* rip    */
    pushq   $0                          /* error code */
    pushq   $VEC_SYSCALL                /* vector */
    pushq   $SEL_UDATA                  /* the redundant slot: written, never read */
    PUSH_GPRS
    movq    %rsp, %rdi
    movq    %rsp, %rbx
    andq    $-16, %rsp
    sti
    call    syscall_dispatch            /* returns with IF = 0 */
    movq    %rbx, %rsp
    POP_GPRS
    addq    $24, %rsp                   /* redundant slot (not read), vector, error code */
    popq    %rcx                        /* user RIP */
    addq    $8, %rsp                    /* cs */
    popq    %r11                        /* user RFLAGS */
    swapgs
    popq    %rsp                        /* user RSP */
    sysretq
    .size syscall_entry, . - syscall_entry

/*
 * void switch_to(struct thread *prev, struct thread *next)
 * Saves the callee-saved registers on prev's stack, stores RSP in prev->rsp, loads
 * next->rsp and pops next's callee-saved registers, then `ret` returns into the
 * switch_to call that next made earlier. A thread that never ran (next->started == 0)
 * has an empty stack: instead of returning, we `call thread_entry` on it. No return
 * address is ever fabricated: every `ret` consumes one pushed by a `call`.
 */
    .globl switch_to
    .type switch_to, @function
switch_to:
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    movq    %rsp, 0(%rdi)
    movq    0(%rsi), %rsp
    cmpl    $0, 8(%rsi)
    je      1f
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
1:  movl    $1, 8(%rsi)
    movq    %rsi, %rdi
    xorl    %ebp, %ebp
    call    thread_entry                /* never returns */
    ud2
    .size switch_to, . - switch_to

/* size_t __copy_user(void *dst, const void *src, size_t n): bytes NOT copied. */
    .globl __copy_user
    .type __copy_user, @function
__copy_user:
    movq    %rdx, %rcx
1:  rep movsb
    xorl    %eax, %eax
    ret
2:  movq    %rcx, %rax
    ret
    EX_ENTRY(1b, 2b)
    .size __copy_user, . - __copy_user

/* long __strncpy_user(char *dst, const char *src, size_t max): length without the NUL,
 * -ENAMETOOLONG when no NUL within max bytes, -EFAULT on a fault. */
    .globl __strncpy_user
    .type __strncpy_user, @function
__strncpy_user:
    xorl    %eax, %eax
1:  cmpq    %rdx, %rax
    jae     4f
2:  movb    (%rsi,%rax), %cl
    movb    %cl, (%rdi,%rax)
    testb   %cl, %cl
    jz      3f
    incq    %rax
    jmp     1b
3:  ret
4:  movq    $-ENAMETOOLONG, %rax
    ret
5:  movq    $-EFAULT, %rax
    ret
    EX_ENTRY(2b, 5b)
    .size __strncpy_user, . - __strncpy_user

/* int probe_kernel_read(const void *p): 0 if readable, -EFAULT otherwise (self-test). */
    .globl probe_kernel_read
    .type probe_kernel_read, @function
probe_kernel_read:
    xorl    %eax, %eax
1:  movb    (%rdi), %cl
    ret
2:  movl    $-EFAULT, %eax
    ret
    EX_ENTRY(1b, 2b)
    .size probe_kernel_read, . - probe_kernel_read

/* long dbt_hypercall(long cmd, long arg): ask a host kernel DBT to switch on/off (docs/dbt.md).
 * Without one the vmcall raises #UD and the exception table turns it into -ENOSYS. */
#define ENOSYS 38
    .globl dbt_hypercall
    .type dbt_hypercall, @function
dbt_hypercall:
    movl    $0x444254, %eax
1:  vmcall
    ret
2:  movq    $-ENOSYS, %rax
    ret
    EX_ENTRY(1b, 2b)
    .size dbt_hypercall, . - dbt_hypercall

/* ---- BSP boot stack (becomes CPU 0's idle-thread stack) ---- */
    .bss
    .balign 4096
    .globl boot_stack
boot_stack:
    .skip 16384
    .globl boot_stack_top
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
