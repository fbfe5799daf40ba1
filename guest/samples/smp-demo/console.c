/*
 * smp-demo: console output on port 0xE9 and machine exit on port 0xF4.
 *
 * kprintf understands %s %c %d %u %x, the 'l' length modifier and a
 * zero-padded field width ("%016lx"). Output from one call is never
 * interleaved with another vCPU's (a recursive spinlock keyed by APIC ID).
 */
#include "demo.h"
#include "fmt.h"

static volatile u32 console_owner;   /* APIC ID + 1 of the holder, 0 = free */
static u32 console_depth;

void console_putc(char c)
{
    outb(PORT_CONSOLE, (u8)c);
}

static void console_lock(void)
{
    u32 me = apic_id() + 1;
    if (__atomic_load_n(&console_owner, __ATOMIC_ACQUIRE) == me) {
        console_depth++;   /* re-entered from an exception handler */
        return;
    }
    for (;;) {
        u32 expected = 0;
        if (__atomic_compare_exchange_n(&console_owner, &expected, me, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            break;
        cpu_relax();
    }
    console_depth = 1;
}

static void console_unlock(void)
{
    if (--console_depth == 0)
        __atomic_store_n(&console_owner, 0, __ATOMIC_RELEASE);
}

static void put(void *ctx, char c)
{
    (void)ctx;
    console_putc(c);
}

/* Formatting is guest/lib/fmt.c, shared with the kernel and the user library. */
void kprintf(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    console_lock();
    fmt_format(put, 0, fmt, ap);
    console_unlock();
    __builtin_va_end(ap);
}

void machine_exit(u32 status)
{
    outl(PORT_EXIT, status);
    /* The machine stops at the out; never fall through if it does not. */
    for (;;) {
        irq_disable();
        cpu_halt();
    }
}
