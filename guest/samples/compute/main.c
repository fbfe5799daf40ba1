/*
 * compute: an integer compute benchmark guest.
 *
 * The BSP reads cpu_count from the boot-info block, starts APs 1..work_cpus-1
 * through the mailbox + x2APIC Start-Up IPI, runs work(iterations, seed) itself,
 * waits for every AP's checksum and prints
 *     compute: cpu N checksum=0x... iterations=I     (one per working vCPU)
 *     compute: checksum=0x... iterations=I           (the BSP's, last)
 * to port 0xE9, then exits with status 0 through port 0xF4.
 *
 * No IDT: nothing here faults or takes interrupts (a fault would triple-fault
 * and stop the machine with a report).
 */
#include <stdint.h>

#include "params.h"
#include "work.h"

#define PORT_CONSOLE 0xE9
#define PORT_EXIT    0xF4
#define MSR_X2APIC_ICR 0x830
#define ICR_DELIVERY_STARTUP 0x600
#define AP_STACK_SIZE (64 * 1024)

struct ap_mailbox {
    uint64_t rip, rsp, arg;
};

struct boot_info {
    uint64_t magic;
    uint32_t version;
    uint32_t cpu_count;
    uint64_t memory_bytes;
    uint64_t reserved_base;
    uint64_t reserved_size;
    uint8_t reserved[24];
    struct ap_mailbox ap[64];
};

_Static_assert(__builtin_offsetof(struct boot_info, ap) == 64, "boot-info layout");

/* The host-visible parameter block: first in the image (linker.ld). */
__attribute__((section(".params"), used))
volatile struct compute_params compute_params = {
    .magic = COMPUTE_MAGIC,
    .iterations = COMPUTE_DEFAULT_ITERS,
    .seed = COMPUTE_DEFAULT_SEED,
    .work_cpus = 0,
};

static uint8_t ap_stacks[COMPUTE_MAX_CPUS][AP_STACK_SIZE] __attribute__((aligned(16)));

void ap_entry(void);   /* entry.S */

/* Called by the compiler for struct copies / zeroing even when the code does not ask for it. */
void *memset(void *d, int c, unsigned long n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static void put_str(const char *s)
{
    while (*s)
        outb(PORT_CONSOLE, (uint8_t)*s++);
}

static void put_hex(uint64_t v)
{
    put_str("0x");
    for (int i = 60; i >= 0; i -= 4)
        outb(PORT_CONSOLE, (uint8_t)"0123456789abcdef"[(v >> i) & 0xF]);
}

static void put_dec(uint64_t v)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n > 0)
        outb(PORT_CONSOLE, (uint8_t)buf[--n]);
}

static void report(int cpu, uint64_t checksum, uint64_t iters)
{
    put_str("compute: ");
    if (cpu >= 0) {
        put_str("cpu ");
        put_dec((uint64_t)cpu);
        put_str(" ");
    }
    put_str("checksum=");
    put_hex(checksum);
    put_str(" iterations=");
    put_dec(iters);
    put_str("\n");
}

void ap_main(uint64_t cpu)
{
    uint64_t r = work(compute_params.iterations, compute_params.seed + cpu);
    compute_params.checksum[cpu] = r;
    __atomic_store_n(&compute_params.done[cpu], 1, __ATOMIC_RELEASE);
}

void bsp_main(struct boot_info *bi)
{
    uint64_t iters = compute_params.iterations;
    uint32_t ncpus = bi->cpu_count;
    if (ncpus > COMPUTE_MAX_CPUS)
        ncpus = COMPUTE_MAX_CPUS;
    if (compute_params.work_cpus != 0 && compute_params.work_cpus < ncpus)
        ncpus = (uint32_t)compute_params.work_cpus;

    for (uint32_t i = 1; i < ncpus; i++) {
        bi->ap[i].rip = (uint64_t)ap_entry;
        bi->ap[i].rsp = (uint64_t)&ap_stacks[i][AP_STACK_SIZE];
        bi->ap[i].arg = i;
        wrmsr(MSR_X2APIC_ICR, ((uint64_t)i << 32) | ICR_DELIVERY_STARTUP);
    }

    uint64_t mine = work(iters, compute_params.seed);
    compute_params.checksum[0] = mine;
    compute_params.done[0] = 1;

    for (uint32_t i = 1; i < ncpus; i++) {
        while (!__atomic_load_n(&compute_params.done[i], __ATOMIC_ACQUIRE))
            __asm__ volatile("pause" : : : "memory");
        report((int)i, compute_params.checksum[i], iters);
    }
    if (ncpus > 1)
        report(0, mine, iters);
    report(-1, mine, iters);
    outl(PORT_EXIT, 0);
}
