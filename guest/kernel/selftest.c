/*
 * Kernel self-test, run by init before any user program: both exception tables, the page
 * allocator's invariants, and a contended spinlock / preemptive scheduling / work-stealing
 * test with kernel threads. Invariant violations panic (non-zero exit status).
 */
#include "kernel.h"

int selftest_fail;
int probe_kernel_read(const void *p);

/* A faulting load that is NOT in the built-in table: only a registered table can fix it. */
__asm__(".text\n"
        ".globl st_probe\n"
        "st_probe:\n"
        "    xorl %eax, %eax\n"
        ".globl st_probe_fault\n"
        "st_probe_fault:\n"
        "    movb (%rdi), %cl\n"
        "    ret\n"
        ".globl st_probe_fixup\n"
        "st_probe_fixup:\n"
        "    movl $1, %eax\n"
        "    ret\n");
int st_probe(const void *p);
extern char st_probe_fault[], st_probe_fixup[];

#define UNMAPPED_KERNEL ((const void *)0xFFFF900000000000UL)

static void test_extables(void)
{
    ASSERT(probe_kernel_read(&selftest_fail) == 0);
    ASSERT(probe_kernel_read(UNMAPPED_KERNEL) == -EFAULT);
    static struct ex_entry mine[1];
    mine[0].fault_rip = (u64)st_probe_fault;
    mine[0].fixup_rip = (u64)st_probe_fixup;
    int h = exception_table_register(mine, 1);
    ASSERT(h >= 0);
    ASSERT(st_probe(&selftest_fail) == 0);
    ASSERT(st_probe(UNMAPPED_KERNEL) == 1);
    exception_table_unregister(h);
    ASSERT(exception_fixup((u64)st_probe_fault) == 0);
    printk("selftest: exception tables ok\n");
}

static void test_allocator(void)
{
    u64 before = pmm_free_pages();
    u64 pages[32];
    for (int i = 0; i < 32; i++) {
        pages[i] = pmm_alloc(i % 4 + 1);
        ASSERT(pages[i] != 0);
        const u64 *w = P2V(pages[i]);
        for (u64 k = 0; k < (u64)(i % 4 + 1) * PAGE_SIZE / 8; k++)
            ASSERT(w[k] == 0);
        for (int j = 0; j < i; j++)
            ASSERT(pages[j] + (u64)(j % 4 + 1) * PAGE_SIZE <= pages[i] ||
                   pages[i] + (u64)(i % 4 + 1) * PAGE_SIZE <= pages[j]);
        memset(P2V(pages[i]), 0xA5, (u64)(i % 4 + 1) * PAGE_SIZE);
    }
    ASSERT(pmm_free_pages() == before - (8 * (1 + 2 + 3 + 4)));
    for (int i = 0; i < 32; i++)
        pmm_free(pages[i], i % 4 + 1);
    ASSERT(pmm_free_pages() == before);
    printk("selftest: allocator ok\n");
}

/* ---- contended lock + scheduler ---- */

#define ST_ITER 1500
static struct spinlock st_lock = SPINLOCK_INIT("selftest");
static volatile u64 st_counter;
static struct spinlock st_done_lock = SPINLOCK_INIT("selftest-done");
static struct waitq st_done_wait;
static int st_done;
/* Progress hints each worker writes and any worker reads: racy by design. */
static volatile u32 st_cpus_ran[64] __data_racy;
static int st_workers;
/* Yields a finished worker may make while no worker has been seen on a second CPU. */
#define ST_STEAL_WAIT 20000

static u32 st_cpus_seen(void)
{
    u32 all = 0;
    for (int i = 0; i < st_workers; i++)
        all |= st_cpus_ran[i];
    return all;
}

static void st_worker(void *arg)
{
    u64 idx = (u64)arg;
    for (int i = 0; i < ST_ITER; i++) {
        spin_lock(&st_lock);
        ASSERT(spin_held(&st_lock));
        u64 v = st_counter;                 /* a deliberately wide read-modify-write window */
        for (volatile int k = 0; k < 3; k++)
            ;
        st_counter = v + 1;
        spin_unlock(&st_lock);
        if ((i & 63) == 63) {
            st_cpus_ran[idx] = current()->cpus_ran;
            yield();
        }
    }
    st_cpus_ran[idx] = current()->cpus_ran;
    /* On a loaded host a free-running vCPU's thread can be kept off the host CPU for milliseconds,
       long enough for CPU 0 to run every worker alone. Before finishing, every worker stays
       runnable (yielding) until some worker has run on a second CPU, for a bounded number of
       yields: a scheduler that never steals still fails the check below, only later. */
    for (int spins = 0; ncpus > 1 && popcount64(st_cpus_seen()) < 2 && spins < ST_STEAL_WAIT; spins++) {
        yield();
        st_cpus_ran[idx] = current()->cpus_ran;
    }
    spin_lock(&st_done_lock);
    st_done++;
    waitq_wake_all(&st_done_wait, &st_done_lock);
    spin_unlock(&st_done_lock);
}

static void test_scheduler(void)
{
    int n = (int)(2 * ncpus + 2);
    if (n > 64)
        n = 64;
    st_counter = 0;
    st_done = 0;
    st_workers = n;
    for (int i = 0; i < n; i++)
        st_cpus_ran[i] = 0;
    /* All start on CPU 0's run queue: the other CPUs must steal them. */
    for (int i = 0; i < n; i++)
        thread_start_on(thread_create(st_worker, (void *)(u64)i, "st-worker", NULL), 0);
    spin_lock(&st_done_lock);
    while (st_done < n)
        waitq_sleep(&st_done_wait, &st_done_lock);
    spin_unlock(&st_done_lock);
    u64 expect = (u64)n * ST_ITER;
    if (st_counter != expect)
        panic("selftest: spinlock counter %lu, expected %lu (lost updates: the lock is broken)", st_counter,
              expect);
    u32 all = 0;
    for (int i = 0; i < n; i++)
        all |= st_cpus_ran[i];
    int used = popcount64(all);
    if (ncpus > 1 && used < 2) {
        printk("selftest: scheduler FAILED: workers ran on %d cpu(s) only\n", used);
        selftest_fail = 1;
    }
    printk("selftest: scheduler threads=%d iterations=%d counter=%lu ok\n", n, ST_ITER, st_counter);
}

void selftest_run(void)
{
    test_extables();
    test_allocator();
    test_scheduler();
    printk("selftest: kernel ok\n");
}
