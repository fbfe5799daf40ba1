/*
 * smp-demo: the harness machine's end-to-end smoke test.
 *
 * The BSP installs its own GDT/TSS/IDT, exercises exceptions (#BP, #DE, #UD,
 * #GP, #PF) with Linux-style fixup-table recovery, starts every AP through the
 * boot-info mailbox + x2APIC Start-Up IPI, and checks the local APIC timer,
 * a fixed IPI and lock-prefixed atomics. APs never print: they record results
 * in per-CPU slots and only the BSP reports, so the console output is the same
 * however the vCPUs interleave.
 */
#include "demo.h"

#define GDT_CODE 0x08
#define GDT_DATA 0x10
#define GDT_TSS  0x18

#define TIMER_VECTOR        0x20
#define IPI_VECTOR          0x40
#define TIMER_INITIAL_COUNT 5000
#define TICKS_WANTED        3
#define COUNTER_ADDS        1000
#define STACK_SIZE          16384
/* Failsafe for waits on other vCPUs, in guest time (retired instructions). */
#define WAIT_TIMEOUT        (1UL << 31)

#define PF_TEST_ADDR 0x0000200000000000UL   /* outside the 4 GiB identity map */
#define GP_TEST_ADDR 0x8000000000000000UL   /* non-canonical */

struct desc_ptr {
    u16 limit;
    u64 base;
} __attribute__((packed));

struct tss64 {
    u32 reserved0;
    u64 rsp[3];
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iopb_offset;
} __attribute__((packed));

_Static_assert(sizeof(struct tss64) == 104, "TSS layout");

struct idt_gate {
    u16 offset_lo;
    u16 selector;
    u8 ist;
    u8 type_attr;
    u16 offset_mid;
    u32 offset_hi;
    u32 zero;
} __attribute__((packed));

_Static_assert(sizeof(struct idt_gate) == 16, "IDT gate layout");

struct cpu_slot {
    u32 apic_id;
    u32 ticks_ok;
    u32 done;
} __attribute__((aligned(64)));

/* Stacks (all in .bss; 16-byte aligned tops). */
static u8 ap_stacks[MAX_CPUS][STACK_SIZE] __attribute__((aligned(16)));
static u8 rsp0_stack[STACK_SIZE] __attribute__((aligned(16)));

static u64 gdt[5] __attribute__((aligned(16)));
static struct tss64 tss __attribute__((aligned(16)));
static struct idt_gate idt[256] __attribute__((aligned(16)));
static struct desc_ptr idtr;

static struct cpu_slot slots[MAX_CPUS];
static volatile u32 ticks[MAX_CPUS];      /* indexed by APIC ID */
static volatile u32 ap_ready[MAX_CPUS];   /* AP has loaded the IDT and done sti */
static volatile u32 shared_counter;

static volatile u32 ipi_count;
static volatile u32 ipi_apic_id;

static volatile u32 bp_count;
static volatile u64 bp_rip;

/* Last fault recovered through the fixup table. */
static volatile u64 fault_vector;
static volatile u64 fault_error;
static volatile u64 fault_cr2;
static volatile u32 fault_count;

static int failures;

/* ---- local APIC ------------------------------------------------------- */

static void apic_eoi(void)
{
    wrmsr(MSR_X2APIC_EOI, 0);
}

static void apic_timer_start(void)
{
    wrmsr(MSR_X2APIC_TMR_DIV, TMR_DIV_BY_1);
    wrmsr(MSR_X2APIC_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR);
    wrmsr(MSR_X2APIC_TMR_INIT, TIMER_INITIAL_COUNT);   /* starts counting */
}

static void apic_timer_stop(void)
{
    wrmsr(MSR_X2APIC_LVT_TIMER, LVT_MASKED | TIMER_VECTOR);
    wrmsr(MSR_X2APIC_TMR_INIT, 0);
}

static u32 my_ticks(void)
{
    u32 id = apic_id();
    return id < MAX_CPUS ? ticks[id] : 0;
}

/* ---- descriptor tables ------------------------------------------------ */

static void gdt_tss_init(void)
{
    u64 base = (u64)&tss;
    u64 limit = sizeof(tss) - 1;

    tss.rsp[0] = (u64)&rsp0_stack[STACK_SIZE];
    tss.iopb_offset = sizeof(tss);   /* no I/O permission bitmap */

    gdt[0] = 0;
    gdt[1] = 0x00AF9A000000FFFFUL;   /* 0x08: 64-bit code, DPL 0 */
    gdt[2] = 0x00CF92000000FFFFUL;   /* 0x10: data, read/write, DPL 0 */
    gdt[3] = (limit & 0xFFFF)        /* 0x18: available 64-bit TSS */
           | ((base & 0xFFFFFF) << 16)
           | (0x89UL << 40)
           | (((limit >> 16) & 0xF) << 48)
           | (((base >> 24) & 0xFF) << 56);
    gdt[4] = base >> 32;

    struct desc_ptr gdtr = { .limit = sizeof(gdt) - 1, .base = (u64)gdt };
    gdt_load(&gdtr);
}

static void idt_set_gate(u32 vector, u64 handler, u8 type_attr)
{
    idt[vector].offset_lo = (u16)handler;
    idt[vector].selector = GDT_CODE;
    idt[vector].ist = 0;
    idt[vector].type_attr = type_attr;
    idt[vector].offset_mid = (u16)(handler >> 16);
    idt[vector].offset_hi = (u32)(handler >> 32);
    idt[vector].zero = 0;
}

static void idt_init(void)
{
    /* Every vector gets a stub; the ones this demo does not expect end up in
     * the "unexpected exception" path instead of escalating to a triple fault. */
    for (u32 v = 0; v < 256; v++)
        idt_set_gate(v, (u64)isr_stubs + 16 * v, 0x8E);   /* P, DPL 0, interrupt gate */
    idt_set_gate(3, (u64)isr_stubs + 16 * 3, 0x8F);       /* #BP: trap gate */
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (u64)idt;
}

static void idt_load(void)
{
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

/* ---- interrupt dispatch (called from isr_common with the frame) ------- */

static u64 find_fixup(u64 rip)
{
    for (const struct ex_entry *e = __ex_table_start; e < __ex_table_end; e++)
        if (e->fault_rip == rip)
            return e->fixup_rip;
    return 0;
}

static __attribute__((noreturn)) void unexpected(struct int_frame *f)
{
    kprintf("unexpected exception %lu at 0x%016lx (cpu %u, err=0x%lx)\n",
            f->vector, f->rip, apic_id(), f->error_code);
    machine_exit(1);
}

void isr_dispatch(struct int_frame *f)
{
    switch (f->vector) {
    case 3:   /* #BP: trap, RIP already points after the int3 */
        bp_count++;
        bp_rip = f->rip;
        return;
    case 0:   /* #DE */
    case 6:   /* #UD */
    case 13:  /* #GP */
    case 14: {/* #PF */
        u64 fixup = find_fixup(f->rip);
        if (!fixup)
            unexpected(f);
        fault_vector = f->vector;
        fault_error = f->error_code;
        fault_cr2 = f->vector == 14 ? read_cr2() : 0;
        fault_count++;
        f->rip = fixup;
        return;
    }
    case TIMER_VECTOR: {
        u32 id = apic_id();
        if (id < MAX_CPUS)
            ticks[id]++;
        apic_eoi();
        return;
    }
    case IPI_VECTOR:
        ipi_apic_id = apic_id();
        __atomic_fetch_add(&ipi_count, 1, __ATOMIC_SEQ_CST);
        apic_eoi();
        return;
    default:
        unexpected(f);
    }
}

/* ---- helpers ---------------------------------------------------------- */

static void add_to_counter(void)
{
    for (int i = 0; i < COUNTER_ADDS; i++)
        __atomic_fetch_add(&shared_counter, 1, __ATOMIC_SEQ_CST);   /* lock add/inc */
}

static void wait_my_ticks(void)
{
    while (my_ticks() < TICKS_WANTED)
        cpu_halt();   /* IF=1; the periodic timer wakes us */
}

static int wait_flag(volatile u32 *flag, const char *what, u32 cpu)
{
    u64 start = rdtsc();
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
        if (rdtsc() - start > WAIT_TIMEOUT) {
            kprintf("timeout waiting for %s of cpu %u\n", what, cpu);
            failures++;
            return 0;
        }
        cpu_relax();
    }
    return 1;
}

static void check(int ok, const char *name, const char *ok_text)
{
    if (ok) {
        kprintf("%s: %s\n", name, ok_text);
    } else {
        failures++;
        kprintf("%s: FAILED (vector=%lu err=0x%lx cr2=0x%016lx faults=%u)\n",
                name, fault_vector, fault_error, fault_cr2, fault_count);
    }
}

static void reset_fault(void)
{
    fault_vector = ~0UL;
    fault_error = ~0UL;
    fault_cr2 = 0;
    fault_count = 0;
}

/* ---- exception tests (BSP, IF=0) -------------------------------------- */

static void exception_tests(void)
{
    u64 expect_rip = test_breakpoint();
    if (bp_count == 1 && bp_rip == expect_rip) {
        kprintf("bp: ok\n");
    } else {
        failures++;
        kprintf("bp: FAILED (count=%u rip=0x%016lx expected=0x%016lx)\n",
                bp_count, bp_rip, expect_rip);
    }

    reset_fault();
    int r = test_divide_error();
    check(r && fault_vector == 0 && fault_count == 1, "de", "recovered");

    reset_fault();
    r = test_invalid_opcode();
    check(r && fault_vector == 6 && fault_count == 1, "ud", "recovered");

    reset_fault();
    r = test_general_protection();
    if (r && fault_vector == 13 && fault_count == 1 && fault_error == 0)
        kprintf("gp: err=0x%lx recovered\n", fault_error);
    else
        check(0, "gp", "");

    reset_fault();
    r = test_page_fault(PF_TEST_ADDR);
    if (r && fault_vector == 14 && fault_count == 1 && fault_cr2 == PF_TEST_ADDR)
        kprintf("pf: cr2=0x%016lx err=0x%lx recovered\n", fault_cr2, fault_error);
    else
        check(0, "pf", "");
}

/* ---- application processors ------------------------------------------- */

void ap_main(u64 index)
{
    idt_load();
    apic_timer_start();
    irq_enable();
    __atomic_store_n(&ap_ready[index], 1, __ATOMIC_RELEASE);

    add_to_counter();
    wait_my_ticks();
    if (index == 1) {
        /* AP 1 is the BSP's IPI target; stay interruptible until it arrives. */
        while (!__atomic_load_n(&ipi_count, __ATOMIC_ACQUIRE))
            cpu_halt();
    }
    apic_timer_stop();

    slots[index].apic_id = apic_id();
    slots[index].ticks_ok = my_ticks() >= TICKS_WANTED;
    __atomic_store_n(&slots[index].done, 1, __ATOMIC_RELEASE);

    irq_disable();
    for (;;)
        cpu_halt();
}

/* ---- bootstrap processor ---------------------------------------------- */

void bsp_main(struct boot_info *bi)
{
    kprintf("smp-demo: start\n");
    if (bi->magic != BOOT_INFO_MAGIC || bi->version != BOOT_INFO_VERSION) {
        kprintf("smp-demo: bad boot info (magic=0x%lx version=%u)\n", bi->magic, bi->version);
        machine_exit(1);
    }

    gdt_tss_init();
    idt_init();
    idt_load();

    exception_tests();

    u32 ncpus = bi->cpu_count;
    if (ncpus == 0)
        ncpus = 1;
    if (ncpus > MAX_CPUS)
        ncpus = MAX_CPUS;
    kprintf("cpus: %u\n", ncpus);

    /* Start every AP: fill its mailbox, then send a Start-Up IPI. */
    for (u32 i = 1; i < ncpus; i++) {
        bi->ap[i].rip = (u64)ap_entry;
        bi->ap[i].rsp = (u64)&ap_stacks[i][STACK_SIZE];
        bi->ap[i].arg = i;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        wrmsr(MSR_X2APIC_ICR, ((u64)i << 32) | ICR_DELIVERY_STARTUP);
    }

    apic_timer_start();
    irq_enable();
    add_to_counter();
    wait_my_ticks();

    /* One fixed IPI: to AP 1 if there is one, otherwise to ourselves. */
    u32 ipi_target = ncpus > 1 ? 1 : 0;
    if (ipi_target == 1) {
        if (wait_flag(&ap_ready[1], "start-up", 1))
            wrmsr(MSR_X2APIC_ICR, ((u64)1 << 32) | IPI_VECTOR);
    } else {
        wrmsr(MSR_X2APIC_ICR, ICR_SHORTHAND_SELF | IPI_VECTOR);
    }
    if (ipi_target == 0)
        wait_flag(&ipi_count, "ipi", 0);

    apic_timer_stop();
    slots[0].apic_id = apic_id();
    slots[0].ticks_ok = my_ticks() >= TICKS_WANTED;
    slots[0].done = 1;

    for (u32 i = 1; i < ncpus; i++)
        wait_flag(&slots[i].done, "completion", i);
    irq_disable();

    for (u32 i = 0; i < ncpus; i++) {
        struct cpu_slot *s = &slots[i];
        if (s->done && s->apic_id == i && s->ticks_ok) {
            kprintf("cpu %u: apic-id %u ticks>=%u ok\n", i, s->apic_id, TICKS_WANTED);
        } else {
            failures++;
            kprintf("cpu %u: FAILED (done=%u apic-id=%u ticks_ok=%u)\n",
                    i, s->done, s->apic_id, s->ticks_ok);
        }
    }

    u32 counter = __atomic_load_n(&shared_counter, __ATOMIC_ACQUIRE);
    if (counter == COUNTER_ADDS * ncpus) {
        kprintf("counter: %u\n", counter);
    } else {
        failures++;
        kprintf("counter: %u FAILED (expected %u)\n", counter, COUNTER_ADDS * ncpus);
    }

    if (ipi_count == 1 && ipi_apic_id == ipi_target) {
        kprintf("ipi: ok\n");
    } else {
        failures++;
        kprintf("ipi: FAILED (count=%u received-by=%u expected=%u)\n",
                ipi_count, ipi_apic_id, ipi_target);
    }

    if (failures) {
        kprintf("smp-demo: FAILED (%d)\n", failures);
        machine_exit(1);
    }
    kprintf("smp-demo: done\n");
    machine_exit(0);
}
