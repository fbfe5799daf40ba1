/*
 * Assembler macros shared by every ring-0 image's entry.S (the kernel and the samples): the boot
 * entry points of the boot protocol (docs/boot-protocol.md), the 256 interrupt stubs and the
 * exception-table entry. Include from a .S file only.
 */
#ifndef GUEST_LIB_ENTRY_H
#define GUEST_LIB_ENTRY_H

/* Record a faulting-instruction -> fixup pair in the image's exception table (cf. Linux's __ex_table). */
#define EX_ENTRY(fault, fixup)          \
    .pushsection __ex_table, "a";       \
    .balign 8;                          \
    .quad fault, fixup;                 \
    .popsection

/*
 * _start, the BSP's entry: RDI = physical address of the boot-info block. Interrupts off, DF
 * clear, optionally .bss zeroed (the loader already has; images that must not rely on it say
 * zero_bss=1), the boot stack, then main(boot_info) (boot_info=0: main()). Halts if main returns.
 */
.macro BSP_ENTRY main:req, stack_top:req, zero_bss=0, boot_info=1
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    .if \boot_info
    movq    %rdi, %r12
    .endif
    .if \zero_bss
    leaq    __bss_start(%rip), %rdi
    leaq    __bss_end(%rip), %rcx
    subq    %rdi, %rcx
    shrq    $3, %rcx
    xorl    %eax, %eax
    rep stosq
    .endif
    leaq    \stack_top(%rip), %rsp
    xorl    %ebp, %ebp
    .if \boot_info
    movq    %r12, %rdi
    .endif
    call    \main
1:  cli
    hlt
    jmp     1b
    .size _start, . - _start
.endm

/* ap_entry, an AP's entry: RSP = the mailbox's rsp, RDI = the mailbox's argument; main(arg), halt if it returns. */
.macro AP_ENTRY main:req
    .globl ap_entry
    .type ap_entry, @function
ap_entry:
    cli
    cld
    andq    $-16, %rsp
    xorl    %ebp, %ebp
    call    \main
1:  cli
    hlt
    jmp     1b
    .size ap_entry, . - ap_entry
.endm

/*
 * isr_stubs: 256 stubs, 16 bytes apart (the stub for vector v is at isr_stubs + 16*v). Vectors
 * without a CPU-pushed error code push a dummy 0 so every frame looks the same; then each pushes
 * its vector and jumps to common. Error-code vectors (SDM vol. 3, table 6-1): 8, 10-14, 17, 21, 29, 30.
 */
.macro ISR_STUBS common:req
    .p2align 4
    .globl isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq   $0
    .endif
    pushq   $vec
    jmp     \common
    .set vec, vec + 1
    .endr
.endm

/*
 * void gdt_load(const struct desc_ptr *gdtr): lgdt, reload CS with a far return (no far jmp in
 * 64-bit mode), reload DS/ES/SS, optionally zero FS/GS (zero_fs_gs=1), load TR.
 */
.macro GDT_LOAD kcode:req, kdata:req, tss:req, zero_fs_gs=0
    .globl gdt_load
    .type gdt_load, @function
gdt_load:
    lgdt    (%rdi)
    pushq   $\kcode
    leaq    1f(%rip), %rax
    pushq   %rax
    lretq
1:  movl    $\kdata, %eax
    movw    %ax, %ds
    movw    %ax, %es
    movw    %ax, %ss
    .if \zero_fs_gs
    xorl    %eax, %eax
    movw    %ax, %fs
    movw    %ax, %gs
    .endif
    movl    $\tss, %eax
    ltr     %ax
    ret
    .size gdt_load, . - gdt_load
.endm

/* The 15 general registers in struct frame order (RAX highest, R15 at the lowest address), and back. */
.macro PUSH_GPRS
    pushq   %rax
    pushq   %rbx
    pushq   %rcx
    pushq   %rdx
    pushq   %rsi
    pushq   %rdi
    pushq   %rbp
    pushq   %r8
    pushq   %r9
    pushq   %r10
    pushq   %r11
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
.endm

.macro POP_GPRS
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %r11
    popq    %r10
    popq    %r9
    popq    %r8
    popq    %rbp
    popq    %rdi
    popq    %rsi
    popq    %rdx
    popq    %rcx
    popq    %rbx
    popq    %rax
.endm

#endif
