/*
 * Boot (BSP and APs) and init: parse the command line, run the kernel self-test, spawn the
 * requested bundled programs one after another, report, shut down.
 */
#include "kernel.h"

static struct thread idle0;
extern char boot_stack[], boot_stack_top[];
char boot_cmdline[512];
u64 boot_cmdline_len;
static u64 mem_bytes;

static int cmdline_get(const char *key, char *out, size_t outsz)
{
    size_t klen = strlen(key);
    const char *s = boot_cmdline;
    while (*s) {
        while (*s == ' ')
            s++;
        const char *w = s;
        while (*s && *s != ' ')
            s++;
        if ((size_t)(s - w) > klen && strncmp(w, key, klen) == 0 && w[klen] == '=') {
            size_t n = (size_t)(s - w) - klen - 1;
            if (n >= outsz)
                n = outsz - 1;
            memcpy(out, w + klen + 1, n);
            out[n] = 0;
            return 1;
        }
        if ((size_t)(s - w) == klen && strncmp(w, key, klen) == 0) {
            out[0] = 0;
            return 1;
        }
    }
    return 0;
}

static void run_workloads(void)
{
    struct proc *self = proc_kernel("init");
    char list[512];
    int have_list = cmdline_get("run", list, sizeof(list));
    int total = 0, failed = 0;
    if (!have_list) {
        /* Default: every bundled program marked as part of the default set. */
        list[0] = 0;
        size_t n = 0;
        for (u64 i = 0; i < program_count; i++) {
            if (!programs[i].in_default)
                continue;
            size_t l = strlen(programs[i].name);
            if (n + l + 2 >= sizeof(list))
                break;
            if (n)
                list[n++] = ',';
            memcpy(list + n, programs[i].name, l);
            n += l;
            list[n] = 0;
        }
    }
    char *s = list;
    while (*s) {
        char *name = s;
        while (*s && *s != ',')
            s++;
        if (*s)
            *s++ = 0;
        if (!*name)
            continue;
        total++;
        /* name:ARG passes ARG (decimal, or 0x hex) to the program's main: its iteration count or load. */
        u64 arg = 0;
        for (char *c = name; *c; c++)
            if (*c == ':') {
                *c++ = 0;
                int hex = c[0] == '0' && (c[1] == 'x' || c[1] == 'X');
                for (c += hex ? 2 : 0; *c; c++) {
                    int d = *c >= '0' && *c <= '9' ? *c - '0' : hex && (*c | 32) >= 'a' && (*c | 32) <= 'f' ? (*c | 32) - 'a' + 10 : -1;
                    if (d < 0)
                        break;
                    arg = arg * (hex ? 16 : 10) + (u64)d;
                }
                break;
            }
        u64 t0 = rdtsc();   /* guest time (retired instructions) on init's CPU */
        int pid = proc_spawn(self, name, arg);
        if (pid < 0) {
            printk("workload %s exit=spawn-error(%d)\n", name, pid);
            failed++;
            continue;
        }
        int status = -1;
        int r = proc_wait(self, pid, &status);
        ASSERT(r == pid);
        printk("workload %s exit=%d time=%lu\n", name, status, rdtsc() - t0);
        if (status != 0)
            failed++;
    }
    extern u64 stat_shootdowns;
    u64 ticks = 0;
    for (u32 i = 0; i < ncpus; i++)
        ticks += RACY_READ(cpus[i].ticks); /* statistics: the other CPUs keep ticking */
    printk("kernel: stats page-faults=%lu fixups=%lu tlb-shootdowns=%lu ticks=%lu free-pages=%lu\n",
           stat_page_faults, stat_fixups, stat_shootdowns, ticks, pmm_free_pages());
    printk("init: %d workloads, %d failed\n", total, failed);
    machine_exit(failed || selftest_fail ? 1 : 0);
}

static void init_thread(void *arg)
{
    (void)arg;
    char v[8];
    if (!cmdline_get("selftest", v, sizeof(v)) || v[0] != '0')
        selftest_run();
    run_workloads();
}

void ap_main(u64 index)
{
    struct percpu *c = &cpus[index];
    wrmsr(MSR_GS_BASE, (u64)c);
    write_cr3(kernel_pml4);
    trap_init_cpu();
    __atomic_store_n(&c->online, 1, __ATOMIC_RELEASE);
    __atomic_fetch_add(&cpus_online, 1, __ATOMIC_SEQ_CST);
    idle_loop();
}

void kmain(u64 boot_info_phys)
{
    struct boot_info *bi = P2V(boot_info_phys);
    if (bi->magic != BOOT_INFO_MAGIC)
        panic("bad boot info magic 0x%lx", bi->magic);
    ncpus = bi->cpu_count ? bi->cpu_count : 1;
    if (ncpus > MAX_CPUS)
        ncpus = MAX_CPUS;
    mem_bytes = bi->memory_bytes;
    if (bi->cmdline) {
        const char *src = P2V(bi->cmdline);
        size_t n = 0;
        while (src[n] && n < sizeof(boot_cmdline) - 1) {
            boot_cmdline[n] = src[n];
            n++;
        }
        boot_cmdline[n] = 0;
        boot_cmdline_len = n;
    }

    /* Per-CPU area of the BSP through GS, and the boot stack as CPU 0's idle thread. */
    for (u32 i = 0; i < MAX_CPUS; i++) {
        cpus[i].self = &cpus[i];
        cpus[i].cpu_id = i;
    }
    wrmsr(MSR_GS_BASE, (u64)&cpus[0]);
    idle0.kstack = (u64)boot_stack;
    idle0.kstack_top = (u64)boot_stack_top;
    sched_init_cpu(0, &idle0);
    thread_list_add(&idle0);

    /* Physical memory: from the end of the image to the reserved region (or RAM end). */
    u64 start = ALIGN_UP(V2P(__image_end), PAGE_SIZE);
    u64 end = mem_bytes;
    if (bi->reserved_size && bi->reserved_base >= start && bi->reserved_base < end)
        end = bi->reserved_base;
    pmm_init(start, end);
    vm_init();
    write_cr3(kernel_pml4);
    cpus[0].cr3 = kernel_pml4;

    trap_init();
    trap_init_cpu();
    if (bi->module_extable && bi->module_extable_entries)
        ASSERT(exception_table_register((const struct ex_entry *)bi->module_extable,
                                        bi->module_extable_entries) >= 0);
    fs_init();
    proc_init();
    printk("kernel: boot cpus=%u memory=%luMiB free-pages=%lu cmdline=\"%s\"\n", ncpus, mem_bytes >> 20,
           pmm_free_pages(), boot_cmdline);

    /* Start every AP on its own idle-thread stack. */
    cpus[0].online = 1;
    cpus_online = 1;
    for (u32 i = 1; i < ncpus; i++) {
        struct thread *idle = thread_create(NULL, NULL, "idle", NULL);
        sched_init_cpu(i, idle);
        cpus[i].cr3 = kernel_pml4;
        bi->ap[i].rip = (u64)ap_entry;
        bi->ap[i].rsp = idle->kstack_top;
        bi->ap[i].arg = i;
        /* wrmsr to the x2APIC ICR is not serializing (SDM vol. 3, 9.3): without the fence the
         * start-up IPI can overtake the mailbox stores still in this CPU's store buffer, and the
         * AP starts from a stale mailbox. KERNEL_MISSING_FENCE plants exactly that (wrong under
         * x86-TSO only; see docs/tso.md). */
#ifndef KERNEL_MISSING_FENCE
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
        wrmsr(MSR_X2APIC_ICR, ((u64)i << 32) | (6u << 8));
    }
    u64 t0 = rdtsc();
    while (__atomic_load_n(&cpus_online, __ATOMIC_ACQUIRE) < ncpus) {
        if (rdtsc() - t0 > (1UL << 32))
            panic("smp: only %u of %u cpus came online", cpus_online, ncpus);
        cpu_relax();
    }
    printk("smp: %u cpus online\n", ncpus);

    struct thread *init = thread_create(init_thread, NULL, "init", NULL);
    thread_start_on(init, 0);
    idle_loop();
}
