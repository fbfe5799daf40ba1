/* The printf family on top of the shared formatter (guest/lib/fmt.c). Each printf/dprintf call
 * is one write(2). */
#include "ulib.h"
#include "fmt.h"

struct buf {
    char *buf;
    size_t size, len; /* len counts every byte, even past size */
};

static void put(void *ctx, char c)
{
    struct buf *b = ctx;
    if (b->len + 1 < b->size) b->buf[b->len] = c;
    b->len++;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct buf b = {buf, size, 0};
    fmt_format(put, &b, fmt, ap);
    if (size) buf[b.len < size ? b.len : size - 1] = 0;
    return (int)b.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

static int vdprintf(int fd, const char *fmt, va_list ap)
{
    char buf[512];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    size_t len = n < (int)sizeof buf ? (size_t)n : sizeof buf - 1;
    sys_write(fd, buf, len);
    return n;
}

int dprintf(int fd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vdprintf(fd, fmt, ap);
    va_end(ap);
    return n;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vdprintf(1, fmt, ap);
    va_end(ap);
    return n;
}

int puts(const char *s)
{
    return printf("%s\n", s);
}

void die(const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("%s: FAILED: %s\n", ulib_prog_name, buf);
    sys_exit(1);
}
