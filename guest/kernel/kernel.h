/*
 * The harness guest kernel: shared definitions.
 *
 * Freestanding C for the harness machine (docs/boot-protocol.md); the user ABI is
 * guest/include/uapi/harness.h; the invariants a kernel DBT relies on are listed in
 * docs/kernel-contract.md.
 */
#ifndef KERNEL_H
#define KERNEL_H

#include "../include/uapi/harness.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef unsigned long size_t;
#define NULL ((void *)0)

#define MAX_CPUS 64
#define PAGE_SIZE 4096UL
#define KERNEL_VMA 0xFFFFFFFF80000000UL
#define P2V(p) ((void *)((u64)(p) + KERNEL_VMA))
#define V2P(v) ((u64)(v) - KERNEL_VMA)
#define PHYS_LIMIT (2UL << 30)           /* the -2 GiB alias covers physical 0..2 GiB */
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((u64)(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((u64)(a) - 1))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define offsetof(t, m) __builtin_offsetof(t, m)

/* ---- GDT selectors (syscall/sysret STAR layout, as Linux) ----
 * 0x08 kernel code, 0x10 kernel data, 0x18 unused 32-bit user code (sysret base),
 * 0x20 user data (DPL3 -> 0x23), 0x28 user code 64 (DPL3 -> 0x2B), 0x30 TSS (16 bytes). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x23
#define SEL_UCODE 0x2B
#define SEL_TSS   0x30
#define GDT_ENTRIES 8

/* ---- vectors ---- */
#define VEC_TIMER    0x20
#define VEC_RESCHED  0x30
#define VEC_TLB      0x31
#define VEC_SPURIOUS 0xFF
#define VEC_SYSCALL  0x100   /* frame->vector value of a syscall frame (not an IDT vector) */

/* ---- boot info (docs/boot-protocol.md section 3) ---- */
#define BOOT_INFO_MAGIC 0x1BADB007UL
struct ap_mailbox { u64 rip, rsp, arg; };
struct boot_info {
    u64 magic;
    u32 version;
    u32 cpu_count;
    u64 memory_bytes;
    u64 reserved_base;
    u64 reserved_size;
    u64 cmdline;           /* 40: physical address of a NUL-terminated string, 0 = none */
    /* 48: kernel virtual address of an exception table that a boot module (a kernel DBT)
     * provides, 0 = none; 56: its number of entries. kmain registers it with
     * exception_table_register; the module fills zeroed entries in later (fixup first). */
    u64 module_extable;
    u64 module_extable_entries;
    struct ap_mailbox ap[MAX_CPUS];
};
_Static_assert(offsetof(struct boot_info, ap) == 64, "boot info layout");

/*
 * The saved-register frame built by every kernel entry (isr_common and syscall_entry in
 * entry.S), lowest address first. struct frame * == the kernel RSP after the pushes.
 *
 * `redundant` is the REDUNDANT SLOT: every entry path writes it (isr_common stores the
 * %ds selector, syscall_entry stores SEL_UDATA) and nothing ever reads it back: the exit
 * paths skip it with `addq $8`/`addq $24`, and no C code looks at it. It plays the role of
 * Linux i386's saved %ds: a DBT may borrow it as a per-entry scratch word (e.g. to stash a
 * translated-code return address or a host register) without changing kernel behaviour.
 * See docs/kernel-contract.md.
 */
struct frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 redundant;                     /* written on entry, never read (see above) */
    u64 vector, error_code;            /* pushed by the stub (dummy 0 if none)     */
    u64 rip, cs, rflags, rsp, ss;      /* pushed by the CPU (or syscall_entry)     */
};
_Static_assert(sizeof(struct frame) == 23 * 8, "frame layout");
#define FRAME_REDUNDANT_OFFSET (15 * 8)

struct tss64 {
    u32 reserved0;
    u64 rsp[3];
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iopb_offset;
} __attribute__((packed));

/* ---- spinlocks ---- */
struct thread;
struct spinlock {
    volatile u32 locked;
    u32 owner_cpu;                 /* cpu id + 1 of the holder, 0 = free */
    struct thread *owner;          /* holder thread (ownership ASSERTs)   */
    u64 saved_flags;               /* RFLAGS of the holder before cli     */
    const char *name;
};
#define SPINLOCK_INIT(n) { 0, 0, NULL, 0, n }
void spin_init(struct spinlock *l, const char *name);
void spin_lock(struct spinlock *l);          /* irqs off + preempt off while held */
int spin_trylock(struct spinlock *l);
void spin_unlock(struct spinlock *l);
int spin_held(struct spinlock *l);           /* held by the current thread */

/* ---- threads and scheduling ---- */
enum tstate { T_RUNNING = 1, T_RUNNABLE, T_BLOCKED, T_WAKING, T_DEAD };
struct proc;
struct thread {
    u64 rsp;                       /* 0: saved kernel RSP (switch_to)                  */
    u32 started;                   /* 8: 0 until the first switch_to into this thread  */
    u32 pad0;
    void (*fn)(void *);
    void *arg;
    u64 kstack;                    /* base (virtual) of the kernel stack               */
    u64 kstack_top;
    volatile int state;
    volatile int on_cpu;           /* 1 while some CPU runs on its stack               */
    int cpu;                       /* run queue it belongs to                          */
    int on_rq;
    int preempt_count;
    int is_idle;
    u32 cpus_ran;                  /* bitmask of CPUs (< 32) it has run on             */
    struct thread *rq_next;
    struct thread *wq_next;
    struct proc *proc;             /* NULL for kernel threads                           */
    const char *name;
    int tid;
    struct thread *all_next;       /* every thread with a stack, for a DBT's stack walk */
};
/* Every thread that owns a kernel stack (idle threads included), newest first. A thread is
 * linked (one release store) before it can run and unlinked (one store) before its stack is
 * freed, so the list is consistent at every instruction boundary: a DBT that stops every CPU
 * walks it to rewrite code-cache return addresses (docs/kernel-contract.md section 10). */
extern struct thread *volatile thread_list;
_Static_assert(offsetof(struct thread, kstack) == 32 && offsetof(struct thread, kstack_top) == 40 &&
               offsetof(struct thread, all_next) == 120, "struct thread layout: a DBT's stack walk reads these");
void thread_list_add(struct thread *t);
#define KSTACK_PAGES 4
#define KSTACK_SIZE (KSTACK_PAGES * PAGE_SIZE)

struct runqueue {
    struct spinlock lock;
    struct thread *head, *tail;
    int count;
};

struct percpu {
    struct percpu *self;           /* 0  */
    u64 kstack_top;                /* 8: RSP loaded by syscall_entry   */
    u64 user_rsp;                  /* 16: scratch for syscall_entry    */
    struct thread *current;        /* 24 */
    u32 cpu_id;                    /* 32 */
    volatile u32 need_resched;     /* 36 */
    /* 40..71: per-CPU words reserved for a kernel module, the way Linux modules get per-CPU
     * variables: a kernel DBT keeps its tx-nextpc-loc and jumptable pointer here, addressed
     * %gs-relative by translated code. The kernel never reads or writes them
     * (docs/kernel-contract.md section 10). */
    u64 module_percpu[4];          /* 40 */
    struct thread *idle;
    struct thread *prev;           /* the thread switched away from (finish_switch) */
    struct runqueue rq;
    u64 cr3;                       /* currently loaded CR3 */
    struct mm *active_mm;          /* user address space loaded (lazy for kernel threads) */
    volatile u64 ticks;
    volatile u32 online;
    u64 gdt[GDT_ENTRIES] __attribute__((aligned(16)));
    struct tss64 tss __attribute__((aligned(16)));
    u8 df_stack[4096] __attribute__((aligned(16)));
} __attribute__((aligned(64)));

#define PCPU_KSTACK_TOP 8
#define PCPU_USER_RSP   16
#define PCPU_CURRENT    24

_Static_assert(offsetof(struct percpu, module_percpu) == 40, "module per-CPU words: the DBT addresses them as %gs:40");

static inline struct percpu *this_cpu(void)
{
    struct percpu *p;
    __asm__ volatile("movq %%gs:0, %0" : "=r"(p));
    return p;
}
static inline struct thread *current(void)
{
    struct thread *t;
    __asm__ volatile("movq %%gs:24, %0" : "=r"(t));
    return t;
}

extern struct percpu cpus[MAX_CPUS];
extern u32 ncpus;
extern volatile u32 cpus_online;

/* A wait queue is protected by the lock that guards the condition waited for. */
struct waitq {
    struct thread *head;
};
/* Sleep on q; the caller holds `held` (released while asleep, re-taken before return).
 * Callers loop on their condition. Never called from interrupt context. */
void waitq_sleep(struct waitq *q, struct spinlock *held);
void waitq_wake_all(struct waitq *q, struct spinlock *held);   /* caller holds `held` */

struct thread *thread_create(void (*fn)(void *), void *arg, const char *name, struct proc *p);
void thread_start_on(struct thread *t, int cpu);
void schedule(void);
void yield(void);
__attribute__((noreturn)) void thread_exit(void);
void sched_init_cpu(u32 cpu, struct thread *idle);
void sched_tick(void);
__attribute__((noreturn)) void idle_loop(void);
void wake_thread(struct thread *t);
void sched_check_rq(struct runqueue *rq);

/* ---- memory ---- */
void pmm_init(u64 start, u64 end);
u64 pmm_alloc(size_t n);                    /* n contiguous zeroed pages, physical; 0 = none */
void pmm_free(u64 pa, size_t n);
u64 pmm_free_pages(void);
u64 pmm_total_pages(void);
void *kalloc_pages(size_t n);               /* virtual (alias) address, or NULL */
void kfree_pages(void *v, size_t n);

#define PTE_P   0x1UL
#define PTE_W   0x2UL
#define PTE_U   0x4UL
#define PTE_PS  0x80UL
#define PTE_NX  (1UL << 63)
#define PTE_ADDR 0x000FFFFFFFFFF000UL

struct mm {
    u64 pml4;                      /* physical */
    u64 heap_start, brk;
    u64 stack_low;                 /* lowest stack address allowed (growth limit) */
    volatile u64 cpu_mask;         /* CPUs with this CR3 loaded */
    u64 pages;                     /* user pages mapped */
};
extern u64 kernel_pml4;
void vm_init(void);
struct mm *mm_create(void);
void mm_destroy(struct mm *mm);
int mm_map_zero(struct mm *mm, u64 va);     /* fresh zero page, RW + NX; 0 ok */
int mm_map_page(struct mm *mm, u64 va, u64 flags);
u64 mm_lookup(struct mm *mm, u64 va);       /* physical address or 0 */
void mm_unmap_range(struct mm *mm, u64 start, u64 end);
void mm_activate(struct mm *mm);            /* load CR3 (NULL: kernel tables) */
int handle_user_fault(u64 addr, u64 err);   /* demand-zero; 0 = handled */
void tlb_shootdown(struct mm *mm, u64 va, int all);
void tlb_ipi_handler(void);

/* ---- traps ---- */
struct ex_entry { u64 fault_rip, fixup_rip; };
int exception_table_register(const struct ex_entry *entries, size_t n);
/* vmcall to a host DBT (RAX = DBT_HYPERCALL, RDI = cmd, RSI = arg); -ENOSYS when none is attached
 * (the vmcall raises #UD, recovered through the exception table). entry.S. */
#define DBT_HYPERCALL 0x444254
long dbt_hypercall(long cmd, long arg);
void exception_table_unregister(int handle);
u64 exception_fixup(u64 rip);
void trap_init(void);
void trap_init_cpu(void);
extern u64 stat_page_faults, stat_fixups;

/* ---- user access (entry.S); return the number of bytes NOT copied ---- */
size_t copy_from_user(void *dst, const void *usrc, size_t n);
size_t copy_to_user(void *udst, const void *src, size_t n);
long strncpy_from_user(char *dst, const char *usrc, size_t max);   /* len, -EFAULT, -ENAMETOOLONG */
size_t __copy_user(void *dst, const void *src, size_t n);
long __strncpy_user(char *dst, const char *src, size_t max);
int user_range_ok(u64 p, size_t n);

/* ---- processes ---- */
#define MAX_FDS 16
struct file;
struct proc {
    int pid;
    int state;                     /* 0 free, 1 alive, 2 zombie */
    int exit_status;
    struct proc *parent;
    struct mm *mm;
    struct thread *thread;
    struct file *fds[MAX_FDS];
    struct waitq child_wait;
    const char *name;
    u64 entry, arg;
};
void proc_init(void);
struct proc *proc_kernel(const char *name);
int proc_spawn(struct proc *parent, const char *name, u64 arg);   /* pid or -errno */
int proc_wait(struct proc *self, int pid, int *status);           /* pid or -errno */
__attribute__((noreturn)) void proc_exit(int status);
void syscall_init_cpu(void);
struct program { const char *name; const u8 *start, *end; u64 in_default; };
extern const struct program programs[];
extern const u64 program_count;
const struct program *program_find(const char *name);

/* ---- files ---- */
void fs_init(void);
struct file *file_dup(struct file *f);
void file_close(struct file *f);
struct file *console_file(void);
void fs_std_fds(struct file **fds);
long sys_read(u64 fd, u64 buf, u64 n, u64, u64, u64);
long sys_write(u64 fd, u64 buf, u64 n, u64, u64, u64);
long sys_open(u64 path, u64 flags, u64, u64, u64, u64);
long sys_close(u64 fd, u64, u64, u64, u64, u64);
long sys_stat(u64 path, u64 st, u64, u64, u64, u64);
long sys_unlink(u64 path, u64, u64, u64, u64, u64);
long sys_readdir(u64 index, u64 d, u64, u64, u64, u64);
long sys_pipe(u64 fds, u64, u64, u64, u64, u64);
long sys_lseek(u64 fd, u64 off, u64 whence, u64, u64, u64);

/* ---- console, panic ---- */
void console_putc(char c);
void console_write(const char *s, size_t n);
void printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprintk(const char *fmt, __builtin_va_list ap);
__attribute__((noreturn)) void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void machine_exit(u32 status);
/* Intended data races, as KCSAN's annotations: the harness's race detector (harness explore
 * --races) leaves them out. __data_racy marks a variable every access of which may race (it goes to
 * .data.racy, between __data_racy_start and __data_racy_end). RACY_READ(x) is one load of x that may
 * race with a writer (a hint re-checked under a lock, a debug check): the load's address is
 * recorded in .racy_pcs, between __racy_pcs_start and __racy_pcs_end. */
#define __data_racy __attribute__((section(".data.racy")))
#define RACY_READ(x) ({                                                                          \
        __typeof__(x) __racy_v;                                                                  \
        __asm__ volatile("1: mov %1, %0\n\t.pushsection .racy_pcs, \"a\"\n\t.balign 8\n\t.quad 1b\n\t" \
                         ".popsection" : "=r"(__racy_v) : "m"(x));                               \
        __racy_v; })

#define ASSERT(c) do { if (__builtin_expect(!(c), 0)) \
    panic("ASSERT failed: %s (%s:%d)", #c, __FILE__, __LINE__); } while (0)

/* ---- string ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* ---- misc ---- */
static inline int popcount64(u64 v)
{
    int n = 0;
    while (v) {
        v &= v - 1;
        n++;
    }
    return n;
}
void selftest_run(void);
extern u64 boot_cmdline_len;
extern char boot_cmdline[512];
extern int selftest_fail;

/* ---- entry.S ---- */
extern char isr_stubs[];
extern char ap_entry[];
extern char syscall_entry[];
void gdt_load(void *gdtr);
void switch_to(struct thread *prev, struct thread *next);
__attribute__((noreturn)) void ret_to_user(struct frame *f);
extern const struct ex_entry __ex_table_start[], __ex_table_end[];
extern char __image_start[], __image_end[];

/* ---- x86 helpers ---- */
#define MSR_EFER 0xC0000080
#define MSR_STAR 0xC0000081
#define MSR_LSTAR 0xC0000082
#define MSR_FMASK 0xC0000084
#define MSR_GS_BASE 0xC0000101
#define MSR_KERNEL_GS_BASE 0xC0000102
#define MSR_X2APIC_ID 0x802
#define MSR_X2APIC_EOI 0x80B
#define MSR_X2APIC_ICR 0x830
#define MSR_X2APIC_LVT_TIMER 0x832
#define MSR_X2APIC_TMR_INIT 0x838
#define MSR_X2APIC_TMR_DIV 0x83E
#define RFLAGS_IF 0x200UL

#include "x86.h"

static inline void irq_restore(u64 f) { if (f & RFLAGS_IF) irq_enable(); }
static inline u64 irq_save(void) { u64 f = read_flags(); irq_disable(); return f; }
static inline u32 apic_id(void) { return (u32)rdmsr(MSR_X2APIC_ID); }
static inline void apic_eoi(void) { wrmsr(MSR_X2APIC_EOI, 0); }
/* wrmsr to the x2APIC ICR is not serializing (SDM vol. 3, 9.3): without the fence the IPI can
 * reach the other CPU before this CPU's earlier stores do (its handler would read a stale TLB
 * shootdown request, or decrement tlb_req.pending before our store of it lands). Linux's
 * weak_wrmsr_fence. Found by review against the harness's TSO model (docs/tso.md). */
static inline void send_ipi(u32 cpu, u32 vec)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    wrmsr(MSR_X2APIC_ICR, ((u64)cpu << 32) | vec);
}

#endif
