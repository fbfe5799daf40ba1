/* The printf-style formatter every guest image shares: the kernel's printk, the sample guests'
 * console, and the user library's printf family. Freestanding: no libc, no globals, no SSE.
 *
 * Conversions: %d %i %u %x %X %p %s %c %%, the l (ll, z) length modifier, flags '-' and '0', a
 * decimal width, and a precision for %s (%.4s). %p prints 0x and the value in hex. */
#ifndef GUEST_FMT_H
#define GUEST_FMT_H

typedef void (*fmt_put_fn)(void *ctx, char c);

/* Formats fmt with ap, handing each output character to put(ctx, c); returns the count. */
unsigned long fmt_format(fmt_put_fn put, void *ctx, const char *fmt, __builtin_va_list ap);

#endif
