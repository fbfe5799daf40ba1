/*
 * bits: the BSP's entry point (the sample runs on one vCPU; APs are never started).
 * Linked at 0xFFFFFFFF80100000, loaded at physical 0x100000.
 */
    .section .text.entry, "ax"
#include "entry.h"   /* guest/lib: BSP_ENTRY */
    BSP_ENTRY bits_main, stack_top, boot_info=0

    .bss
    .balign 16
stack:
    .skip 65536
stack_top:
    .section .note.GNU-stack, "", @progbits
