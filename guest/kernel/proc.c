/*
 * Processes: bundled-program lookup, ELF loading into a fresh user address space, entry to
 * ring 3, spawn/exit/wait, the syscall table (reached by an indirect call) and the
 * process-related syscalls.
 */
#include "kernel.h"

#define MAX_PROCS 64
#define USER_STACK_MAX (8UL << 20)
#define HEAP_MAX (1UL << 30)

static struct proc procs[MAX_PROCS];
static struct spinlock proc_lock = SPINLOCK_INIT("proc");
static int next_pid = 1;

struct elf64_ehdr {
    u8 ident[16];
    u16 type, machine;
    u32 version;
    u64 entry, phoff, shoff;
    u32 flags;
    u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};
struct elf64_phdr {
    u32 type, flags;
    u64 offset, vaddr, paddr, filesz, memsz, align;
};

void proc_init(void) {}

const struct program *program_find(const char *name)
{
    if (name[0] == '/')
        name++;
    for (u64 i = 0; i < program_count; i++)
        if (strcmp(programs[i].name, name) == 0)
            return &programs[i];
    return NULL;
}

static struct proc *proc_alloc(void)
{
    struct proc *p = NULL;
    spin_lock(&proc_lock);
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i].state == 0) {
            p = &procs[i];
            memset(p, 0, sizeof(*p));
            p->state = 1;
            p->pid = next_pid++;
            break;
        }
    }
    spin_unlock(&proc_lock);
    return p;
}

struct proc *proc_kernel(const char *name)
{
    struct proc *p = proc_alloc();
    ASSERT(p);
    p->name = name;
    p->thread = current();
    current()->proc = p;
    fs_std_fds(p->fds);
    return p;
}

/* Load an ELF image into mm; returns the entry point or 0. */
static u64 elf_load(struct mm *mm, const u8 *img, u64 size)
{
    const struct elf64_ehdr *eh = (const void *)img;
    if (size < sizeof(*eh) || eh->ident[0] != 0x7F || eh->ident[1] != 'E' || eh->ident[2] != 'L' ||
        eh->ident[3] != 'F' || eh->ident[4] != 2 || eh->machine != 62 || eh->type != 2 ||
        eh->phentsize != sizeof(struct elf64_phdr) || eh->phoff > size ||
        eh->phnum * sizeof(struct elf64_phdr) > size - eh->phoff)
        return 0;
    u64 top = 0;
    const struct elf64_phdr *ph = (const void *)(img + eh->phoff);
    for (int i = 0; i < eh->phnum; i++) {
        if (ph[i].type != 1 || ph[i].memsz == 0)
            continue;
        u64 va = ph[i].vaddr, end = va + ph[i].memsz;
        if (ph[i].filesz > ph[i].memsz || ph[i].offset > size || ph[i].filesz > size - ph[i].offset ||
            end < va || va < PAGE_SIZE || end > H_USER_STACK_TOP - USER_STACK_MAX)
            return 0;
        u64 prot = ((ph[i].flags & 2) ? PTE_W : 0) | ((ph[i].flags & 1) ? 0 : PTE_NX);
        for (u64 pg = ALIGN_DOWN(va, PAGE_SIZE); pg < end; pg += PAGE_SIZE)
            if (mm_map_page(mm, pg, prot))
                return 0;
        for (u64 off = 0; off < ph[i].filesz;) {
            u64 a = va + off;
            u64 chunk = PAGE_SIZE - (a % PAGE_SIZE);
            if (chunk > ph[i].filesz - off)
                chunk = ph[i].filesz - off;
            memcpy(P2V(mm_lookup(mm, a)), img + ph[i].offset + off, chunk);
            off += chunk;
        }
        if (end > top)
            top = end;
    }
    if (!top)
        return 0;
    mm->heap_start = mm->brk = ALIGN_UP(top, PAGE_SIZE);
    mm->stack_low = H_USER_STACK_TOP - USER_STACK_MAX;
    return eh->entry;
}

static void user_thread_start(void *arg)
{
    struct proc *p = arg;
    struct thread *t = current();
    irq_disable();
    mm_activate(p->mm);
    struct frame *f = (struct frame *)(t->kstack_top - sizeof(struct frame));
    memset(f, 0, sizeof(*f));
    f->rip = p->entry;
    f->cs = SEL_UCODE;
    f->rflags = 0x202;
    f->rsp = H_USER_STACK_TOP;
    f->ss = SEL_UDATA;
    f->rdi = p->arg;
    ret_to_user(f);
}

int proc_spawn(struct proc *parent, const char *name, u64 arg)
{
    const struct program *prog = program_find(name);
    if (!prog)
        return -ENOENT;
    struct proc *p = proc_alloc();
    if (!p)
        return -EAGAIN;
    p->name = prog->name;
    p->mm = mm_create();
    if (!p->mm)
        goto fail;
    p->entry = elf_load(p->mm, prog->start, (u64)(prog->end - prog->start));
    if (!p->entry)
        goto fail;
    if (mm_map_zero(p->mm, H_USER_STACK_TOP - PAGE_SIZE))
        goto fail;
    p->arg = arg;
    /* The child inherits the parent's open descriptors (so pipes connect processes). */
    for (int i = 0; i < MAX_FDS; i++)
        p->fds[i] = file_dup(parent->fds[i]);
    p->thread = thread_create(user_thread_start, p, p->name, p);
    spin_lock(&proc_lock);
    p->parent = parent;
    spin_unlock(&proc_lock);
    int pid = p->pid;
    thread_start_on(p->thread, -1);
    return pid;
fail:
    if (p->mm)
        mm_destroy(p->mm);
    spin_lock(&proc_lock);
    p->state = 0;
    spin_unlock(&proc_lock);
    return -ENOMEM;
}

void proc_exit(int status)
{
    struct thread *t = current();
    struct proc *p = t->proc;
    ASSERT(p && p->mm);
    ASSERT(read_flags() & RFLAGS_IF);
    for (int i = 0; i < MAX_FDS; i++) {
        file_close(p->fds[i]);
        p->fds[i] = NULL;
    }
    struct mm *mm = p->mm;
    irq_disable();
    p->mm = NULL;                  /* schedule() no longer switches to it */
    irq_enable();
    mm_destroy(mm);
    spin_lock(&proc_lock);
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i].state && procs[i].parent == p) {
            procs[i].parent = NULL;
            if (procs[i].state == 2)
                procs[i].state = 0;        /* orphaned zombie: reap now */
        }
    }
    p->exit_status = status;
    p->thread = NULL;
    t->proc = NULL;
    if (p->parent) {
        p->state = 2;
        waitq_wake_all(&p->parent->child_wait, &proc_lock);
    } else {
        p->state = 0;
    }
    spin_unlock(&proc_lock);
    thread_exit();
}

int proc_wait(struct proc *self, int pid, int *status)
{
    spin_lock(&proc_lock);
    for (;;) {
        int have = 0;
        for (int i = 0; i < MAX_PROCS; i++) {
            struct proc *c = &procs[i];
            if (!c->state || c->parent != self || (pid > 0 && c->pid != pid))
                continue;
            have = 1;
            if (c->state == 2) {
                int r = c->pid;
                if (status)
                    *status = c->exit_status;
                c->state = 0;
                spin_unlock(&proc_lock);
                return r;
            }
        }
        if (!have) {
            spin_unlock(&proc_lock);
            return -ECHILD;
        }
        waitq_sleep(&self->child_wait, &proc_lock);
    }
}

/* ---- syscalls -------------------------------------------------------------------------- */

static long sys_spawn(u64 uname, u64 arg, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a2, (void)a3, (void)a4, (void)a5;
    char name[64];
    long n = strncpy_from_user(name, (const char *)uname, sizeof(name));
    if (n < 0)
        return n == -ENAMETOOLONG ? -ENOENT : n;
    return proc_spawn(current()->proc, name, arg);
}

static long sys_exit(u64 status, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    proc_exit((int)status);
}

static long sys_wait(u64 pid, u64 ustatus, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (ustatus && !user_range_ok(ustatus, sizeof(int)))
        return -EFAULT;
    int st = 0;
    int r = proc_wait(current()->proc, (int)pid, &st);
    if (r > 0 && ustatus && copy_to_user((void *)ustatus, &st, sizeof(st)))
        return -EFAULT;
    return r;
}

static long sys_yield(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    yield();
    return 0;
}

static long sys_getpid(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return current()->proc->pid;
}

static long sys_getcpu(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a0, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    return apic_id();
}

static long sys_brk(u64 end, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    struct mm *mm = current()->proc->mm;
    if (end == 0 || end < mm->heap_start || end > mm->heap_start + HEAP_MAX || end > mm->stack_low)
        return (long)mm->brk;
    if (end < mm->brk)
        mm_unmap_range(mm, ALIGN_UP(end, PAGE_SIZE), ALIGN_UP(mm->brk, PAGE_SIZE));
    mm->brk = end;
    return (long)end;
}

static long sys_dbt(u64 cmd, u64 arg, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a2, (void)a3, (void)a4, (void)a5;
    if (cmd > DBT_OFF)
        return -EINVAL;
    return dbt_hypercall((long)cmd, (long)arg);
}

static long sys_shutdown(u64 status, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    machine_exit((u32)status);
}

typedef long (*syscall_fn)(u64, u64, u64, u64, u64, u64);

/* The syscall table: syscall_dispatch calls through it (an indirect call). */
syscall_fn const syscall_table[SYS_COUNT] = {
    [SYS_READ] = sys_read,       [SYS_WRITE] = sys_write,   [SYS_OPEN] = sys_open,
    [SYS_CLOSE] = sys_close,     [SYS_STAT] = sys_stat,     [SYS_UNLINK] = sys_unlink,
    [SYS_READDIR] = sys_readdir, [SYS_PIPE] = sys_pipe,     [SYS_SPAWN] = sys_spawn,
    [SYS_EXIT] = sys_exit,       [SYS_WAIT] = sys_wait,     [SYS_YIELD] = sys_yield,
    [SYS_GETPID] = sys_getpid,   [SYS_BRK] = sys_brk,       [SYS_GETCPU] = sys_getcpu,
    [SYS_DBT] = sys_dbt,         [SYS_LSEEK] = sys_lseek,   [SYS_SHUTDOWN] = sys_shutdown,
};

/* Called by syscall_entry with interrupts on; returns with interrupts off (sysretq next). */
void syscall_dispatch(struct frame *f)
{
    u64 nr = f->rax;
    long r = -ENOSYS;
    if (nr < SYS_COUNT && syscall_table[nr])
        r = syscall_table[nr](f->rdi, f->rsi, f->rdx, f->r10, f->r8, f->r9);
    f->rax = (u64)r;
    if (this_cpu()->need_resched)
        schedule();
    irq_disable();
}

void syscall_init_cpu(void)
{
    wrmsr(MSR_STAR, (0x18UL << 48) | ((u64)SEL_KCODE << 32));
    wrmsr(MSR_LSTAR, (u64)syscall_entry);
    wrmsr(MSR_FMASK, 0x200 | 0x400 | 0x100 | 0x40000);   /* IF DF TF AC */
}
