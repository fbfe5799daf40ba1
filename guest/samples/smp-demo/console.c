/*
 * smp-demo: console output on port 0xE9 and machine exit on port 0xF4.
 *
 * kprintf understands %s %c %d %u %x, the 'l' length modifier and a
 * zero-padded field width ("%016lx"). Output from one call is never
 * interleaved with another vCPU's (a recursive spinlock keyed by APIC ID).
 */
#include "demo.h"

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

static void put_str(const char *s)
{
    if (!s)
        s = "(null)";
    while (*s)
        console_putc(*s++);
}

static void put_uint(u64 v, u32 base, int width, char pad)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    for (int i = n; i < width; i++)
        console_putc(pad);
    while (n > 0)
        console_putc(buf[--n]);
}

void kprintf(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    console_lock();
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            console_putc(*p);
            continue;
        }
        p++;
        char pad = ' ';
        int width = 0, is_long = 0;
        if (*p == '0') {
            pad = '0';
            p++;
        }
        while (*p >= '0' && *p <= '9')
            width = width * 10 + (*p++ - '0');
        if (*p == 'l') {
            is_long = 1;
            p++;
        }
        switch (*p) {
        case 's':
            put_str(__builtin_va_arg(ap, const char *));
            break;
        case 'c':
            console_putc((char)__builtin_va_arg(ap, int));
            break;
        case 'd': {
            i64 v = is_long ? __builtin_va_arg(ap, i64) : __builtin_va_arg(ap, int);
            if (v < 0) {
                console_putc('-');
                v = -v;
            }
            put_uint((u64)v, 10, width, pad);
            break;
        }
        case 'u':
            put_uint(is_long ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, u32),
                     10, width, pad);
            break;
        case 'x':
            put_uint(is_long ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, u32),
                     16, width, pad);
            break;
        case '%':
            console_putc('%');
            break;
        case '\0':
            p--;   /* stray '%' at the end */
            break;
        default:
            console_putc('%');
            console_putc(*p);
            break;
        }
    }
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
