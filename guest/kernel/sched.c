/*
 * Spinlocks, kernel threads, per-CPU run queues with work stealing, wait queues,
 * timer-driven preemption and reschedule IPIs.
 *
 * Context switch protocol (see switch_to in entry.S and docs/kernel-contract.md):
 *  - schedule() picks `next` under its run-queue lock, records `prev` in the per-CPU area,
 *    and calls switch_to(prev, next) with interrupts off and no spinlock held.
 *  - The first thing the resumed side does is finish_switch(): it re-queues prev if it is
 *    still runnable, frees it if it is dead, and clears prev->on_cpu. A thread is therefore
 *    never on a run queue while its stack is in use.
 *  - wake_thread() moves BLOCKED -> WAKING with a compare-and-swap, waits for on_cpu == 0
 *    (the sleeper finished switching out), then queues it RUNNABLE. No lost wake-ups, no
 *    double queueing.
 */
#include "kernel.h"

static void thread_list_remove(struct thread *t);

struct percpu cpus[MAX_CPUS];
u32 ncpus = 1;
volatile u32 cpus_online;
static volatile int next_tid = 1;

/* ---- spinlocks ------------------------------------------------------------------------ */

void spin_init(struct spinlock *l, const char *name)
{
    l->locked = 0;
    l->owner_cpu = 0;
    l->owner = NULL;
    l->name = name;
}

static inline int raw_try(struct spinlock *l)
{
#ifdef KERNEL_BROKEN_SPINLOCK
    /* Deliberately broken (make KERNEL_BROKEN_SPINLOCK=1): the read-modify-write is done
     * without the lock prefix, as a separate load and store. (On this machine a cmpxchg is
     * atomic even without the prefix, so the non-atomic form is spelled out.) Two CPUs can
     * both see 0 and both "acquire"; the ownership ASSERTs below and the self-test's
     * counter check must catch it. */
    if (l->locked == 0) {
        l->locked = 1;
        return 1;
    }
    return 0;
#else
    u32 expected = 0;
    return __atomic_compare_exchange_n(&l->locked, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
#endif
}

static inline void lock_taken(struct spinlock *l, struct thread *me, u64 f)
{
    if (l->owner != NULL || l->owner_cpu != 0)
        panic("spinlock %s: acquired while owned by cpu %u", l->name, l->owner_cpu - 1);
    l->owner = me;
    l->owner_cpu = this_cpu()->cpu_id + 1;
    l->saved_flags = f;
}

void spin_lock(struct spinlock *l)
{
    u64 f = irq_save();
    struct thread *me = current();
    me->preempt_count++;
    /* A debug check: only this thread can have stored me there, so a racy read is exact. */
    if (l->locked && RACY_READ(l->owner) == me)
        panic("spinlock %s: recursive acquire", l->name);
    while (!raw_try(l)) {
        while (l->locked)
            cpu_relax();
    }
    lock_taken(l, me, f);
}

int spin_trylock(struct spinlock *l)
{
    u64 f = irq_save();
    struct thread *me = current();
    if (!raw_try(l)) {
        irq_restore(f);
        return 0;
    }
    me->preempt_count++;
    lock_taken(l, me, f);
    return 1;
}

void spin_unlock(struct spinlock *l)
{
    struct thread *me = current();
    if (!l->locked || l->owner != me || l->owner_cpu != this_cpu()->cpu_id + 1)
        panic("spinlock %s: released by cpu %u but owned by cpu %u", l->name, this_cpu()->cpu_id,
              l->owner_cpu - 1);
    u64 f = l->saved_flags;
    l->owner = NULL;
    l->owner_cpu = 0;
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
    ASSERT(me->preempt_count > 0);
    me->preempt_count--;
    irq_restore(f);
}

int spin_held(struct spinlock *l)
{
    return l->locked && l->owner == current();
}

/* ---- run queues ------------------------------------------------------------------------ */

void sched_check_rq(struct runqueue *rq)
{
    int n = 0;
    struct thread *last = NULL;
    for (struct thread *t = rq->head; t; t = t->rq_next) {
        ASSERT(t->on_rq);
        ASSERT(t->state == T_RUNNABLE);
        ASSERT(!t->is_idle);
        last = t;
        if (++n > 100000)
            panic("run queue: cycle");
    }
    ASSERT(n == rq->count);
    ASSERT(last == rq->tail);
}

static void rq_push(u32 cpu, struct thread *t)
{
    struct runqueue *rq = &cpus[cpu].rq;
    spin_lock(&rq->lock);
    ASSERT(!t->on_rq);
    ASSERT(t->state == T_RUNNABLE);
    t->rq_next = NULL;
    if (rq->tail)
        rq->tail->rq_next = t;
    else
        rq->head = t;
    rq->tail = t;
    rq->count++;
    t->on_rq = 1;
    t->cpu = (int)cpu;
    sched_check_rq(rq);
    spin_unlock(&rq->lock);
}

static struct thread *rq_pop_locked(struct runqueue *rq)
{
    struct thread *t = rq->head;
    if (!t)
        return NULL;
    rq->head = t->rq_next;
    if (!rq->head)
        rq->tail = NULL;
    rq->count--;
    t->on_rq = 0;
    t->rq_next = NULL;
    sched_check_rq(rq);
    return t;
}

static struct thread *pick_next(struct percpu *c)
{
    spin_lock(&c->rq.lock);
    struct thread *t = rq_pop_locked(&c->rq);
    spin_unlock(&c->rq.lock);
    if (t)
        return t;
    /* Work stealing: take the oldest queued thread of another CPU. trylock only, so two
     * CPUs stealing from each other never deadlock. */
    for (u32 k = 1; k < ncpus; k++) {
        struct percpu *o = &cpus[(c->cpu_id + k) % ncpus];
        if (!RACY_READ(o->online) || RACY_READ(o->rq.count) == 0) /* a hint: re-checked under the lock */
            continue;
        if (!spin_trylock(&o->rq.lock))
            continue;
        t = rq_pop_locked(&o->rq);
        spin_unlock(&o->rq.lock);
        if (t)
            return t;
    }
    return NULL;
}

/* A hint read without the run-queue locks: schedule() re-checks under them. */
static int work_available(struct percpu *c)
{
    if (RACY_READ(c->rq.count))
        return 1;
    for (u32 k = 0; k < ncpus; k++)
        if (RACY_READ(cpus[k].online) && RACY_READ(cpus[k].rq.count))
            return 1;
    return 0;
}

/* ---- switching ------------------------------------------------------------------------- */

static void finish_switch(void)
{
    struct percpu *c = this_cpu();
    struct thread *prev = c->prev;
    c->prev = NULL;
    if (!prev)
        return;
    if (prev->state == T_DEAD) {
        thread_list_remove(prev);
        __atomic_store_n(&prev->on_cpu, 0, __ATOMIC_RELEASE);
        kfree_pages((void *)prev->kstack, KSTACK_PAGES);
        kfree_pages(prev, 1);
        return;
    }
    /* Its stack is no longer in use: clear on_cpu first, then (if runnable) queue it, after
     * which another CPU may pick it at once. A RUNNABLE thread is never touched by wakers. */
    int requeue = prev->state == T_RUNNABLE && !prev->is_idle;
    __atomic_store_n(&prev->on_cpu, 0, __ATOMIC_RELEASE);
    if (requeue)
        rq_push(c->cpu_id, prev);
}

void schedule(void)
{
    u64 f = irq_save();
    struct percpu *c = this_cpu();
    struct thread *prev = c->current;
    if (prev->preempt_count != 0)
        panic("schedule: thread %s holds %d spinlock(s)", prev->name, prev->preempt_count);
    c->need_resched = 0;
    struct thread *next = pick_next(c);
    if (!next) {
        if (prev->state == T_RUNNING) {
            irq_restore(f);
            return;
        }
        next = c->idle;
    }
    if (next == prev) {
        /* Only the idle thread can be picked while current (it is never queued). */
        ASSERT(prev->is_idle);
        irq_restore(f);
        return;
    }
    ASSERT(next->state == T_RUNNABLE || next->is_idle);
    ASSERT(!next->on_cpu);
    if (prev->state == T_RUNNING)
        prev->state = T_RUNNABLE;
    c->prev = prev;
    next->state = T_RUNNING;
    next->on_cpu = 1;
    next->cpu = (int)c->cpu_id;
    if (c->cpu_id < 32)
        next->cpus_ran |= 1u << c->cpu_id;
    c->current = next;
    c->kstack_top = next->kstack_top;
    c->tss.rsp[0] = next->kstack_top;
    if (next->proc && next->proc->mm)
        mm_activate(next->proc->mm);   /* kernel threads keep whatever CR3 is loaded (lazy) */
    switch_to(prev, next);
    finish_switch();
    irq_restore(f);
}

void yield(void)
{
    schedule();
}

/* First code a new thread runs: called (not returned to) by switch_to on its empty stack. */
__attribute__((noreturn)) void thread_entry(struct thread *t)
{
    finish_switch();
    irq_enable();
    t->fn(t->arg);
    thread_exit();
}

void thread_exit(void)
{
    irq_disable();
    struct thread *t = current();
    ASSERT(t->preempt_count == 0);
    t->state = T_DEAD;
    schedule();
    panic("thread_exit: dead thread resumed");
}

struct thread *volatile thread_list;
static struct spinlock thread_list_lock = SPINLOCK_INIT("thread_list");

void thread_list_add(struct thread *t)
{
    spin_lock(&thread_list_lock);
    t->all_next = thread_list;
    __atomic_store_n(&thread_list, t, __ATOMIC_RELEASE);
    spin_unlock(&thread_list_lock);
}

static void thread_list_remove(struct thread *t)
{
    spin_lock(&thread_list_lock);
    struct thread *volatile *pp = &thread_list;
    while (*pp && *pp != t)
        pp = &(*pp)->all_next;
    if (*pp)
        *pp = t->all_next;
    spin_unlock(&thread_list_lock);
}

struct thread *thread_create(void (*fn)(void *), void *arg, const char *name, struct proc *p)
{
    struct thread *t = kalloc_pages(1);
    void *stack = kalloc_pages(KSTACK_PAGES);
    if (!t || !stack)
        panic("thread_create: out of memory");
    t->kstack = (u64)stack;
    t->kstack_top = (u64)stack + KSTACK_SIZE;
    /* The top of the stack is reserved for the user frame (user_thread_start builds the
     * first iretq frame there; syscall and interrupt entries from user mode build theirs at
     * the same place), so a new thread's C frames start below it. */
    t->rsp = t->kstack_top - ALIGN_UP(sizeof(struct frame), 16);
    t->started = 0;
    t->fn = fn;
    t->arg = arg;
    t->state = T_RUNNABLE;
    t->proc = p;
    t->name = name;
    t->tid = __atomic_fetch_add(&next_tid, 1, __ATOMIC_RELAXED);
    thread_list_add(t);
    return t;
}

static int pick_idle_cpu(int preferred)
{
    /* Hints read without locks: a wrong guess costs a steal or an IPI, never correctness. */
    if (preferred >= 0 && (u32)preferred < ncpus && RACY_READ(cpus[preferred].online) &&
        RACY_READ(cpus[preferred].current) == cpus[preferred].idle)
        return preferred;
    for (u32 k = 0; k < ncpus; k++)
        if (RACY_READ(cpus[k].online) && RACY_READ(cpus[k].current) == cpus[k].idle && RACY_READ(cpus[k].rq.count) == 0)
            return (int)k;
    return -1;
}

static void kick(u32 cpu)
{
    struct percpu *c = this_cpu();
    if (cpu == c->cpu_id)
        c->need_resched = 1;
    else
        send_ipi(cpu, VEC_RESCHED);
}

void thread_start_on(struct thread *t, int cpu)
{
    if (cpu < 0) {
        cpu = pick_idle_cpu(-1);
        if (cpu < 0)
            cpu = (int)this_cpu()->cpu_id;
    }
    rq_push((u32)cpu, t);
    kick((u32)cpu);
}

void wake_thread(struct thread *t)
{
    int s = T_BLOCKED;
    if (!__atomic_compare_exchange_n(&t->state, &s, T_WAKING, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return;
    while (__atomic_load_n(&t->on_cpu, __ATOMIC_ACQUIRE))
        cpu_relax();
    t->state = T_RUNNABLE;
    int cpu = pick_idle_cpu(t->cpu);
    if (cpu < 0)
        cpu = t->cpu;
    rq_push((u32)cpu, t);
    kick((u32)cpu);
}

void waitq_sleep(struct waitq *q, struct spinlock *held)
{
    struct thread *t = current();
    ASSERT(spin_held(held));
    t->state = T_BLOCKED;
    t->wq_next = q->head;
    q->head = t;
    spin_unlock(held);
    schedule();
    spin_lock(held);
}

void waitq_wake_all(struct waitq *q, struct spinlock *held)
{
    ASSERT(spin_held(held));
    struct thread *t = q->head;
    q->head = NULL;
    while (t) {
        struct thread *n = t->wq_next;
        t->wq_next = NULL;
        wake_thread(t);
        t = n;
    }
}

/* ---- per-CPU setup, tick, idle --------------------------------------------------------- */

void sched_init_cpu(u32 cpu, struct thread *idle)
{
    struct percpu *c = &cpus[cpu];
    spin_init(&c->rq.lock, "runqueue");
    idle->is_idle = 1;
    idle->state = T_RUNNING;
    idle->on_cpu = 1;
    idle->started = 1;
    idle->cpu = (int)cpu;
    idle->name = "idle";
    c->idle = idle;
    c->current = idle;
    c->kstack_top = idle->kstack_top;
    c->tss.rsp[0] = idle->kstack_top;
}

void sched_tick(void)
{
    struct percpu *c = this_cpu();
    c->ticks++;
    c->need_resched = 1;
}

void idle_loop(void)
{
    struct percpu *c = this_cpu();
    for (;;) {
        irq_disable();
        if (work_available(c)) {
            schedule();
            continue;
        }
        __asm__ volatile("sti; hlt" : : : "memory");
    }
}
