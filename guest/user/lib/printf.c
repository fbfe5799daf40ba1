/* A small printf: %d %i %u %x %X %p %s %c %%, the l (and ll/z) length modifier, flags '-' and
 * '0', a decimal width, a precision for %s (%.4s). Each printf/dprintf call is one write(2). */
#include "ulib.h"

struct out {
    char *buf;
    size_t size, len; /* len counts every byte, even past size */
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size) o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, int left, char pad)
{
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left) {
        /* zero padding goes after a sign */
        if (pad == '0' && n > 0 && s[0] == '-') {
            put(o, '-');
            s++, n--;
        }
        while (fill-- > 0) put(o, pad);
    }
    for (size_t i = 0; i < n; i++) put(o, s[i]);
    if (left)
        while (fill-- > 0) put(o, ' ');
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {buf, size, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        int left = 0, width = 0, lng = 0;
        char pad = ' ';
        for (;; fmt++) {
            if (*fmt == '-') left = 1;
            else if (*fmt == '0') pad = '0';
            else break;
        }
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        int prec = -1; /* only for %s: at most prec bytes */
        if (*fmt == '.') {
            prec = 0;
            fmt++;
            while (*fmt >= '0' && *fmt <= '9') prec = prec * 10 + (*fmt++ - '0');
        }
        while (*fmt == 'l' || *fmt == 'z') lng = 1, fmt++;
        if (left) pad = ' ';
        char tmp[24];
        char *end = tmp + sizeof tmp, *p = end;
        switch (*fmt) {
        case 'd':
        case 'i': {
            long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
            do *--p = (char)('0' + u % 10); while (u /= 10);
            if (v < 0) *--p = '-';
            put_padded(&o, p, (size_t)(end - p), width, left, pad);
            break;
        }
        case 'u': {
            unsigned long u = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            do *--p = (char)('0' + u % 10); while (u /= 10);
            put_padded(&o, p, (size_t)(end - p), width, left, pad);
            break;
        }
        case 'p':
            lng = 1;
            put(&o, '0');
            put(&o, 'x');
            /* fall through */
        case 'x':
        case 'X': {
            const char *digits = *fmt == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            unsigned long u = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            do *--p = digits[u & 15]; while (u >>= 4);
            put_padded(&o, p, (size_t)(end - p), width, left, pad);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            size_t n = 0;
            while ((prec < 0 || n < (size_t)prec) && s[n]) n++;
            put_padded(&o, s, n, width, left, ' ');
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            put_padded(&o, &c, 1, width, left, ' ');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            put(&o, '%');
            put(&o, *fmt);
            break;
        }
    }
    if (size) buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
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
