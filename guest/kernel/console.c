/*
 * Console (port 0xE9) printk, panic() and machine exit (port 0xF4), string helpers.
 *
 * printk output of one call is not interleaved with another CPU's: the console lock is a
 * plain test-and-set lock keyed by CPU (re-entrant for the same CPU, so a panic inside a
 * printk still prints). It is deliberately independent of struct spinlock, so that a
 * broken spinlock build can still report its own failure.
 */
#include "kernel.h"
#include "fmt.h"

static volatile u32 console_owner;   /* cpu + 1 */
static u32 console_depth;
static volatile u32 panicking;

void console_putc(char c) { outb(0xE9, (u8)c); }

static u32 my_cpu_tag(void)
{
    /* GS is valid once trap_init_cpu ran; before that we are on the BSP. */
    return apic_id() + 1;
}

static u64 console_lock(void)
{
    u64 f = irq_save();
    u32 me = my_cpu_tag();
    if (__atomic_load_n(&console_owner, __ATOMIC_ACQUIRE) == me) {
        console_depth++;
        return f;
    }
    for (;;) {
        u32 expected = 0;
        if (__atomic_compare_exchange_n(&console_owner, &expected, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            break;
        cpu_relax();
    }
    console_depth = 1;
    return f;
}

static void console_unlock(u64 f)
{
    if (--console_depth == 0)
        __atomic_store_n(&console_owner, 0, __ATOMIC_RELEASE);
    irq_restore(f);
}

static void put(void *ctx, char c)
{
    (void)ctx;
    console_putc(c);
}

/* Formatting is guest/lib/fmt.c, shared with the sample guests and the user library. */
void vprintk(const char *fmt, __builtin_va_list ap)
{
    fmt_format(put, 0, fmt, ap);
}

static void put_plain(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    vprintk(fmt, ap);
    __builtin_va_end(ap);
}

void printk(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    u64 f = console_lock();
    vprintk(fmt, ap);
    console_unlock(f);
    __builtin_va_end(ap);
}

void machine_exit(u32 status)
{
    outl(0xF4, status);
    for (;;) {
        irq_disable();
        __asm__ volatile("hlt");
    }
}

void panic(const char *fmt, ...)
{
    irq_disable();
    /* Only the first panicking CPU reports; the others stop quietly. */
    if (__atomic_exchange_n(&panicking, 1, __ATOMIC_SEQ_CST))
        for (;;)
            __asm__ volatile("hlt");
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    /* Take the console if we can; never wait forever for it. */
    u32 me = my_cpu_tag();
    for (int i = 0; i < 100000; i++) {
        u32 expected = 0;
        if (console_owner == me ||
            __atomic_compare_exchange_n(&console_owner, &expected, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            break;
        cpu_relax();
    }
    put_plain("\nkernel panic (cpu %u): ", apic_id());
    vprintk(fmt, ap);
    console_putc('\n');
    __builtin_va_end(ap);
    machine_exit(3);
}

/* ---- string helpers (gcc may also emit calls to these) ---- */
void *memset(void *d, int c, size_t n)
{
    u8 *p = d;
    __asm__ volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *r = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return r;
}

void *memmove(void *d, const void *s, size_t n)
{
    u8 *dp = d;
    const u8 *sp = s;
    if (dp <= sp || dp >= sp + n)
        return memcpy(d, s, n);
    while (n--)
        dp[n] = sp[n];
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] - y[i];
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return (u8)*a - (u8)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i] || !a[i])
            return (u8)a[i] - (u8)b[i];
    }
    return 0;
}

/* Console output of a user write(): one lock hold, so a line is not split. */
void console_write(const char *s, size_t n)
{
    u64 f = console_lock();
    for (size_t i = 0; i < n; i++)
        console_putc(s[i]);
    console_unlock(f);
}
