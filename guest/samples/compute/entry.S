/*
 * compute: entry points. Linked at 0xFFFFFFFF80100000 (after the parameter
 * block), loaded at physical 0x100000.
 */
    .section .text.entry, "ax"

#include "../../lib/entry.h"   /* BSP_ENTRY, AP_ENTRY (compute keeps its own flags: no -I guest/lib) */

    BSP_ENTRY bsp_main, bsp_stack_top
/* AP: RSP = mailbox rsp, RDI = mailbox arg (APIC ID). Halts when done. */
    AP_ENTRY ap_main

    .bss
    .balign 16
bsp_stack:
    .skip 65536
bsp_stack_top:

    .section .note.GNU-stack, "", @progbits
