/*
 * Descriptor tables (per-CPU GDT + TSS, one shared IDT), the interrupt/exception
 * dispatcher, the two exception tables, page-fault handling and the local APIC timer.
 */
#include "kernel.h"

struct desc_ptr {
    u16 limit;
    u64 base;
} __attribute__((packed));

struct idt_gate {
    u16 offset_lo;
    u16 selector;
    u8 ist;
    u8 type_attr;
    u16 offset_mid;
    u32 offset_hi;
    u32 zero;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));
static struct desc_ptr idtr;
u64 stat_page_faults, stat_fixups;

#define TIMER_COUNT 50000      /* instructions per scheduler tick (divide by 1) */

/* ---- exception tables ------------------------------------------------------------------ */

/*
 * Two tables map a faulting instruction's address to a fixup address:
 *  1. the built-in table (__ex_table section, EX_ENTRY in entry.S), and
 *  2. up to MAX_EXTABLES tables registered at run time (exception_table_register), the way
 *     Linux modules add theirs; a DBT registers entries for its code-cache copies of the
 *     faultable instructions there.
 * A fault in kernel mode that is not a demand-zero user fault is looked up by its RIP in
 * table 1, then in the registered tables; a hit resumes at the fixup address.
 */
#define MAX_EXTABLES 8
static struct {
    const struct ex_entry *volatile entries;
    volatile size_t n;
} extables[MAX_EXTABLES];
static struct spinlock extable_lock = SPINLOCK_INIT("extable");

int exception_table_register(const struct ex_entry *entries, size_t n)
{
    int h = -ENOSPC;
    spin_lock(&extable_lock);
    for (int i = 0; i < MAX_EXTABLES; i++) {
        if (extables[i].entries == NULL) {
            extables[i].n = 0;
            __atomic_store_n(&extables[i].entries, entries, __ATOMIC_RELEASE);
            __atomic_store_n(&extables[i].n, n, __ATOMIC_RELEASE);
            h = i;
            break;
        }
    }
    spin_unlock(&extable_lock);
    return h;
}

void exception_table_unregister(int h)
{
    ASSERT(h >= 0 && h < MAX_EXTABLES);
    spin_lock(&extable_lock);
    extables[h].n = 0;
    extables[h].entries = NULL;
    spin_unlock(&extable_lock);
}

u64 exception_fixup(u64 rip)
{
    for (const struct ex_entry *e = __ex_table_start; e < __ex_table_end; e++)
        if (e->fault_rip == rip)
            return e->fixup_rip;
    for (int i = 0; i < MAX_EXTABLES; i++) {
        const struct ex_entry *t = __atomic_load_n(&extables[i].entries, __ATOMIC_ACQUIRE);
        size_t n = __atomic_load_n(&extables[i].n, __ATOMIC_ACQUIRE);
        if (!t)
            continue;
        for (size_t k = 0; k < n; k++)
            if (t[k].fault_rip == rip)
                return t[k].fixup_rip;
    }
    return 0;
}

/* ---- descriptor tables ----------------------------------------------------------------- */

static void idt_set_gate(u32 v, u64 handler, u8 type_attr, u8 ist)
{
    idt[v].offset_lo = (u16)handler;
    idt[v].selector = SEL_KCODE;
    idt[v].ist = ist;
    idt[v].type_attr = type_attr;
    idt[v].offset_mid = (u16)(handler >> 16);
    idt[v].offset_hi = (u32)(handler >> 32);
    idt[v].zero = 0;
}

void trap_init(void)
{
    for (u32 v = 0; v < 256; v++)
        idt_set_gate(v, (u64)isr_stubs + 16 * v, 0x8E, 0);
    idt_set_gate(8, (u64)isr_stubs + 16 * 8, 0x8E, 1);     /* #DF on IST1 */
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (u64)idt;
}

/* Per-CPU: GDT, TSS, IDT, GS base, syscall MSRs, local APIC timer. */
void trap_init_cpu(void)
{
    struct percpu *c = this_cpu();
    u64 base = (u64)&c->tss, limit = sizeof(c->tss) - 1;
    c->tss.iopb_offset = sizeof(c->tss);
    c->tss.ist[0] = (u64)&c->df_stack[sizeof(c->df_stack)];
    c->gdt[0] = 0;
    c->gdt[1] = 0x00AF9A000000FFFFUL;   /* 0x08 kernel code 64     */
    c->gdt[2] = 0x00CF92000000FFFFUL;   /* 0x10 kernel data        */
    c->gdt[3] = 0x00CFFA000000FFFFUL;   /* 0x18 user code 32 (STAR sysret base, unused) */
    c->gdt[4] = 0x00CFF2000000FFFFUL;   /* 0x20 user data, DPL 3   */
    c->gdt[5] = 0x00AFFA000000FFFFUL;   /* 0x28 user code 64, DPL 3 */
    c->gdt[6] = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (0x89UL << 40) |
                (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56);
    c->gdt[7] = base >> 32;
    struct desc_ptr gdtr = { .limit = sizeof(c->gdt) - 1, .base = (u64)c->gdt };
    gdt_load(&gdtr);
    /* gdt_load zeroed the GS selector; re-establish the per-CPU base. */
    wrmsr(MSR_GS_BASE, (u64)c);
    wrmsr(MSR_KERNEL_GS_BASE, 0);
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
    syscall_init_cpu();
    wrmsr(MSR_X2APIC_TMR_DIV, 0xB);               /* divide by 1 */
    wrmsr(MSR_X2APIC_LVT_TIMER, (1u << 17) | VEC_TIMER);
    wrmsr(MSR_X2APIC_TMR_INIT, TIMER_COUNT);
}

/* ---- dispatch -------------------------------------------------------------------------- */

static const char *const exc_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP",
    "#SS", "#GP", "#PF", "?15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

static __attribute__((noreturn)) void kernel_fault(struct frame *f, u64 cr2)
{
    panic("unhandled %s (vector %lu) in kernel at rip 0x%lx err 0x%lx cr2 0x%lx rsp 0x%lx",
          f->vector < 32 && exc_names[f->vector] ? exc_names[f->vector] : "?", f->vector, f->rip,
          f->error_code, cr2, f->rsp);
}

static __attribute__((noreturn)) void user_fault(struct frame *f, u64 cr2)
{
    struct proc *p = current()->proc;
    printk("pid %d (%s): %s at rip 0x%lx err 0x%lx addr 0x%lx: killed\n", p ? p->pid : -1,
           p ? p->name : "?", f->vector < 32 && exc_names[f->vector] ? exc_names[f->vector] : "?",
           f->rip, f->error_code, cr2);
    irq_enable();
    proc_exit(128 + (int)f->vector);
}

void isr_dispatch(struct frame *f)
{
    u64 v = f->vector;
    int from_user = (f->cs & 3) != 0;
    if (v < 32) {
        u64 cr2 = 0;
        if (v == 14) {
            cr2 = read_cr2();
            __atomic_fetch_add(&stat_page_faults, 1, __ATOMIC_RELAXED);
            /* Demand-zero heap/stack, whether the access came from user mode or from a
             * kernel copy_*_user on the process's behalf. */
            if (cr2 < H_USER_TOP && handle_user_fault(cr2, f->error_code) == 0)
                goto out;
        }
        if (from_user)
            user_fault(f, cr2);
        u64 fixup = exception_fixup(f->rip);
        if (!fixup)
            kernel_fault(f, cr2);
        __atomic_fetch_add(&stat_fixups, 1, __ATOMIC_RELAXED);
        f->rip = fixup;
        goto out;
    }
    switch (v) {
    case VEC_TIMER:
        sched_tick();
        apic_eoi();
        break;
    case VEC_RESCHED:
        this_cpu()->need_resched = 1;
        apic_eoi();
        break;
    case VEC_TLB:
        tlb_ipi_handler();
        apic_eoi();
        break;
    case VEC_SPURIOUS:
        break;
    default:
        panic("unexpected interrupt vector %lu at rip 0x%lx", v, f->rip);
    }
out:
    /* Preemption on the way out: only if the interrupted context had interrupts on (so it
     * held no spinlock), is still running, and is not inside a no-preempt region. */
    if ((f->rflags & RFLAGS_IF) && this_cpu()->need_resched) {
        struct thread *t = current();
        if (t->state == T_RUNNING && t->preempt_count == 0 && !t->is_idle)
            schedule();
    }
}

/* ---- user access ----------------------------------------------------------------------- */

int user_range_ok(u64 p, size_t n)
{
    return p < H_USER_TOP && n <= H_USER_TOP - p;
}

size_t copy_from_user(void *dst, const void *usrc, size_t n)
{
    if (!user_range_ok((u64)usrc, n))
        return n;
    return __copy_user(dst, usrc, n);
}

size_t copy_to_user(void *udst, const void *src, size_t n)
{
    if (!user_range_ok((u64)udst, n))
        return n;
    return __copy_user(udst, src, n);
}

long strncpy_from_user(char *dst, const char *usrc, size_t max)
{
    if ((u64)usrc >= H_USER_TOP)
        return -EFAULT;
    if (max > H_USER_TOP - (u64)usrc)
        max = H_USER_TOP - (u64)usrc;
    return __strncpy_user(dst, usrc, max);
}
