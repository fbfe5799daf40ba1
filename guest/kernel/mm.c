/*
 * Physical page allocator (bitmap, above the kernel image and below the reserved region),
 * kernel page tables (the kernel half, PML4[256..511], shared by every address space),
 * per-process user address spaces, demand-zero faults and TLB shootdown IPIs.
 */
#include "kernel.h"

/* ---- physical pages -------------------------------------------------------------------- */

#define PMM_MAX_PAGES (PHYS_LIMIT / PAGE_SIZE)
static u64 pmm_bitmap[PMM_MAX_PAGES / 64];   /* 1 = allocated (or not managed) */
static u64 pmm_base, pmm_pages, pmm_free_count, pmm_hint;
static struct spinlock pmm_lock = SPINLOCK_INIT("pmm");

static inline int bit_get(u64 i) { return (pmm_bitmap[i / 64] >> (i % 64)) & 1; }
static inline void bit_set(u64 i) { pmm_bitmap[i / 64] |= 1UL << (i % 64); }
static inline void bit_clear(u64 i) { pmm_bitmap[i / 64] &= ~(1UL << (i % 64)); }

void pmm_init(u64 start, u64 end)
{
    start = ALIGN_UP(start, PAGE_SIZE);
    end = ALIGN_DOWN(end, PAGE_SIZE);
    if (end > PHYS_LIMIT)
        end = PHYS_LIMIT;
    ASSERT(end > start);
    pmm_base = start;
    pmm_pages = (end - start) / PAGE_SIZE;
    pmm_free_count = pmm_pages;
    pmm_hint = 0;
}

u64 pmm_alloc(size_t n)
{
    ASSERT(n > 0);
    spin_lock(&pmm_lock);
    u64 found = ~0UL;
    for (int pass = 0; pass < 2 && found == ~0UL; pass++) {
        u64 i = pass == 0 ? pmm_hint : 0;
        u64 limit = pass == 0 ? pmm_pages : pmm_hint + n;
        if (limit > pmm_pages)
            limit = pmm_pages;
        while (i + n <= limit) {
            u64 k = 0;
            while (k < n && !bit_get(i + k))
                k++;
            if (k == n) {
                found = i;
                break;
            }
            i += k + 1;
        }
    }
    if (found == ~0UL) {
        spin_unlock(&pmm_lock);
        return 0;
    }
    for (u64 k = 0; k < n; k++)
        bit_set(found + k);
    ASSERT(pmm_free_count >= n);
    pmm_free_count -= n;
    pmm_hint = found + n;
    spin_unlock(&pmm_lock);
    u64 pa = pmm_base + found * PAGE_SIZE;
    memset(P2V(pa), 0, n * PAGE_SIZE);
    return pa;
}

void pmm_free(u64 pa, size_t n)
{
    ASSERT((pa & (PAGE_SIZE - 1)) == 0);
    if (pa < pmm_base || pa + n * PAGE_SIZE > pmm_base + pmm_pages * PAGE_SIZE)
        panic("pmm_free: 0x%lx outside the managed range", pa);
    u64 i = (pa - pmm_base) / PAGE_SIZE;
    spin_lock(&pmm_lock);
    for (u64 k = 0; k < n; k++) {
        if (!bit_get(i + k))
            panic("pmm_free: double free of page 0x%lx", pa + k * PAGE_SIZE);
        bit_clear(i + k);
    }
    pmm_free_count += n;
    ASSERT(pmm_free_count <= pmm_pages);
    if (i < pmm_hint)
        pmm_hint = i;
    spin_unlock(&pmm_lock);
}

/* Under the lock: the count changes on every CPU that allocates or frees (the harness's race
 * detector found the unlocked read racing pmm_free on another CPU; explore kernel --races). */
u64 pmm_free_pages(void)
{
    spin_lock(&pmm_lock);
    u64 n = pmm_free_count;
    spin_unlock(&pmm_lock);
    return n;
}
u64 pmm_total_pages(void) { return pmm_pages; }

void *kalloc_pages(size_t n)
{
    u64 pa = pmm_alloc(n);
    return pa ? P2V(pa) : NULL;
}

void kfree_pages(void *v, size_t n)
{
    pmm_free(V2P(v), n);
}

/* ---- kernel page tables ---------------------------------------------------------------- */

u64 kernel_pml4;

void vm_init(void)
{
    /* The kernel half: PML4[511] -> PDPT[510], [511] = physical 0..2 GiB in 1 GiB pages,
     * supervisor only (this covers the image, the allocator's pages, the boot-info block and
     * the reserved region). The boot identity map of the low 4 GiB is dropped: the low half
     * belongs to user processes. */
    kernel_pml4 = pmm_alloc(1);
    u64 pdpt = pmm_alloc(1);
    ASSERT(kernel_pml4 && pdpt);
    u64 *pd = P2V(pdpt);
    pd[510] = 0x00000000UL | PTE_P | PTE_W | PTE_PS;
    pd[511] = 0x40000000UL | PTE_P | PTE_W | PTE_PS;
    u64 *pml4 = P2V(kernel_pml4);
    pml4[511] = pdpt | PTE_P | PTE_W;
}

/* ---- user address spaces --------------------------------------------------------------- */

struct mm *mm_create(void)
{
    struct mm *mm = kalloc_pages(1);
    if (!mm)
        return NULL;
    mm->pml4 = pmm_alloc(1);
    if (!mm->pml4) {
        kfree_pages(mm, 1);
        return NULL;
    }
    u64 *dst = P2V(mm->pml4), *src = P2V(kernel_pml4);
    for (int i = 256; i < 512; i++)
        dst[i] = src[i];
    return mm;
}

static u64 *walk(struct mm *mm, u64 va, int create)
{
    u64 *table = P2V(mm->pml4);
    for (int level = 3; level > 0; level--) {
        u64 idx = (va >> (12 + 9 * level)) & 511;
        u64 e = table[idx];
        if (!(e & PTE_P)) {
            if (!create)
                return NULL;
            u64 pa = pmm_alloc(1);
            if (!pa)
                return NULL;
            e = pa | PTE_P | PTE_W | PTE_U;
            table[idx] = e;
        }
        table = P2V(e & PTE_ADDR);
    }
    return &table[(va >> 12) & 511];
}

/* Map a fresh zero page at va with PTE_W / PTE_NX as given in flags. An existing mapping
 * keeps its page and gains W, and loses NX if flags lacks it (segments sharing a page). */
int mm_map_page(struct mm *mm, u64 va, u64 flags)
{
    va = ALIGN_DOWN(va, PAGE_SIZE);
    ASSERT(va < H_USER_TOP);
    u64 *pte = walk(mm, va, 1);
    if (!pte)
        return -ENOMEM;
    if (*pte & PTE_P) {
        *pte |= flags & PTE_W;
        if (!(flags & PTE_NX))
            *pte &= ~PTE_NX;
        return 0;
    }
    u64 pa = pmm_alloc(1);
    if (!pa)
        return -ENOMEM;
    *pte = pa | PTE_P | PTE_U | (flags & (PTE_W | PTE_NX));
    mm->pages++;
    return 0;
}

int mm_map_zero(struct mm *mm, u64 va)
{
    return mm_map_page(mm, va, PTE_W | PTE_NX);
}

u64 mm_lookup(struct mm *mm, u64 va)
{
    u64 *pte = walk(mm, va, 0);
    if (!pte || !(*pte & PTE_P))
        return 0;
    return (*pte & PTE_ADDR) | (va & (PAGE_SIZE - 1));
}

void mm_unmap_range(struct mm *mm, u64 start, u64 end)
{
    start = ALIGN_UP(start, PAGE_SIZE);
    u64 n = 0, last = 0;
    for (u64 va = start; va < end; va += PAGE_SIZE) {
        u64 *pte = walk(mm, va, 0);
        if (!pte || !(*pte & PTE_P))
            continue;
        u64 pa = *pte & PTE_ADDR;
        *pte = 0;
        mm->pages--;
        n++;
        last = va;
        /* Invalidate everywhere before the page can be reused. */
        tlb_shootdown(mm, va, 0);
        pmm_free(pa, 1);
    }
    (void)last;
}

static void free_level(u64 table_pa, int level)
{
    u64 *t = P2V(table_pa);
    for (int i = 0; i < 512; i++) {
        if (!(t[i] & PTE_P))
            continue;
        if (level > 1)
            free_level(t[i] & PTE_ADDR, level - 1);
        else
            pmm_free(t[i] & PTE_ADDR, 1);
    }
    pmm_free(table_pa, 1);
}

void mm_activate(struct mm *mm)
{
    struct percpu *c = this_cpu();
    u64 f = irq_save();
    if (c->active_mm != mm) {
        if (c->active_mm)
            __atomic_fetch_and(&c->active_mm->cpu_mask, ~(1UL << c->cpu_id), __ATOMIC_SEQ_CST);
        if (mm)
            __atomic_fetch_or(&mm->cpu_mask, 1UL << c->cpu_id, __ATOMIC_SEQ_CST);
        c->active_mm = mm;
        c->cr3 = mm ? mm->pml4 : kernel_pml4;
        write_cr3(c->cr3);
    }
    irq_restore(f);
}

void mm_destroy(struct mm *mm)
{
    /* Make every CPU (including lazy kernel threads) drop this CR3, then free. */
    mm_activate(NULL);
    tlb_shootdown(mm, 0, 2);
    ASSERT(mm->cpu_mask == 0);
    u64 *pml4 = P2V(mm->pml4);
    for (int i = 0; i < 256; i++)
        if (pml4[i] & PTE_P)
            free_level(pml4[i] & PTE_ADDR, 3);
    pmm_free(mm->pml4, 1);
    kfree_pages(mm, 1);
}

int handle_user_fault(u64 addr, u64 err)
{
    struct thread *t = current();
    if (!t->proc || !t->proc->mm || (err & 1) || addr >= H_USER_TOP)
        return -1;
    struct mm *mm = t->proc->mm;
    int ok = (addr >= mm->heap_start && addr < mm->brk) ||
             (addr >= mm->stack_low && addr < H_USER_STACK_TOP);
    if (!ok)
        return -1;
    return mm_map_zero(mm, addr) == 0 ? 0 : -1;
}

/* ---- TLB shootdown --------------------------------------------------------------------- */

static volatile u32 tlb_lock;
static struct {
    struct mm *mm;
    u64 va;
    int mode;                      /* 0 page, 1 all, 2 detach (drop the CR3) */
    volatile u32 pending;
} tlb_req;
u64 stat_shootdowns;

void tlb_ipi_handler(void)
{
    struct percpu *c = this_cpu();
    struct mm *mm = tlb_req.mm;
    if (c->active_mm == mm) {
        if (tlb_req.mode == 2)
            mm_activate(NULL);
        else if (tlb_req.mode == 1)
            write_cr3(c->cr3);
        else
            invlpg(tlb_req.va);
    }
    __atomic_fetch_sub(&tlb_req.pending, 1, __ATOMIC_SEQ_CST);
}

/* Called with interrupts enabled and no spinlock held: the initiator waits for the other
 * CPUs' acknowledgements with IF = 1, so two initiators cannot deadlock. */
void tlb_shootdown(struct mm *mm, u64 va, int mode)
{
    struct percpu *c = this_cpu();
    struct thread *me = current();
    ASSERT(read_flags() & RFLAGS_IF);
    me->preempt_count++;            /* stay on this CPU while we hold the request */
    c = this_cpu();
    if (c->active_mm == mm && mode != 2) {
        if (mode == 1)
            write_cr3(c->cr3);
        else
            invlpg(va);
    }
    u64 others = mm->cpu_mask & ~(1UL << c->cpu_id);
    if (others) {
        while (__atomic_exchange_n(&tlb_lock, 1, __ATOMIC_ACQUIRE))
            cpu_relax();
        others = mm->cpu_mask & ~(1UL << c->cpu_id);
        tlb_req.mm = mm;
        tlb_req.va = va;
        tlb_req.mode = mode;
        tlb_req.pending = (u32)popcount64(others);
        for (u32 k = 0; k < ncpus; k++)
            if (others & (1UL << k))
                send_ipi(k, VEC_TLB);
        while (__atomic_load_n(&tlb_req.pending, __ATOMIC_ACQUIRE))
            cpu_relax();
        stat_shootdowns++;
        __atomic_store_n(&tlb_lock, 0, __ATOMIC_RELEASE);
    }
    me->preempt_count--;
}
