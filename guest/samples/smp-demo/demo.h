/*
 * smp-demo: shared definitions.
 *
 * Freestanding C for the harness machine; see docs/boot-protocol.md.
 */
#ifndef SMP_DEMO_H
#define SMP_DEMO_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;

#define BOOT_INFO_MAGIC   0x1BADB007UL
#define BOOT_INFO_VERSION 1u
#define MAX_CPUS          64

/* Boot-info block (docs/boot-protocol.md); RDI holds its physical address. */
struct ap_mailbox {
    u64 rip;
    u64 rsp;
    u64 arg;
};

struct boot_info {
    u64 magic;             /* 0  */
    u32 version;           /* 8  */
    u32 cpu_count;         /* 12 */
    u64 memory_bytes;      /* 16 */
    u64 reserved_base;     /* 24 */
    u64 reserved_size;     /* 32 */
    u64 unused[3];         /* 40 */
    struct ap_mailbox ap[MAX_CPUS]; /* 64 */
};

_Static_assert(__builtin_offsetof(struct boot_info, ap) == 64, "boot info layout");
_Static_assert(sizeof(struct ap_mailbox) == 24, "mailbox layout");

/* Interrupt frame built by isr_common in entry.S (lowest address first). */
struct int_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error_code;          /* pushed by the stub (dummy 0 if none) */
    u64 rip, cs, rflags, rsp, ss;    /* pushed by the CPU */
};

_Static_assert(sizeof(struct int_frame) == 22 * 8, "frame layout");

/* x2APIC MSRs */
#define MSR_X2APIC_ID        0x802
#define MSR_X2APIC_EOI       0x80B
#define MSR_X2APIC_ICR       0x830
#define MSR_X2APIC_LVT_TIMER 0x832
#define MSR_X2APIC_TMR_INIT  0x838
#define MSR_X2APIC_TMR_CUR   0x839
#define MSR_X2APIC_TMR_DIV   0x83E

#define ICR_DELIVERY_STARTUP (6u << 8)
#define ICR_SHORTHAND_SELF   (1u << 18)
#define LVT_MASKED           (1u << 16)
#define LVT_PERIODIC         (1u << 17)
#define TMR_DIV_BY_1         0xB

#define PORT_CONSOLE 0xE9
#define PORT_EXIT    0xF4

#include "x86.h"

static inline u32 apic_id(void) { return (u32)rdmsr(MSR_X2APIC_ID); }

/* console.c */
void console_putc(char c);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void machine_exit(u32 status);

/* entry.S */
extern char isr_stubs[];             /* 256 stubs, 16 bytes apart */
extern char ap_entry[];
struct desc_ptr;
void gdt_load(const struct desc_ptr *gdtr);   /* lgdt, reload CS/DS/ES/SS, ltr 0x18 */
u64 test_breakpoint(void);           /* returns the address right after its int3 */
int test_divide_error(void);         /* 1 = recovered through the fixup table */
int test_invalid_opcode(void);
int test_general_protection(void);
int test_page_fault(u64 addr);

struct ex_entry {
    u64 fault_rip;
    u64 fixup_rip;
};
extern const struct ex_entry __ex_table_start[], __ex_table_end[];

#endif
