/* See fmt.h. */
#include "fmt.h"

struct out {
    fmt_put_fn put;
    void *ctx;
    unsigned long len;
};

static void emit(struct out *o, char c)
{
    o->put(o->ctx, c);
    o->len++;
}

static void emit_padded(struct out *o, const char *s, unsigned long n, int width, int left, char pad)
{
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left) {
        /* zero padding goes after a sign */
        if (pad == '0' && n > 0 && s[0] == '-') {
            emit(o, '-');
            s++, n--;
        }
        while (fill-- > 0) emit(o, pad);
    }
    for (unsigned long i = 0; i < n; i++) emit(o, s[i]);
    if (left)
        while (fill-- > 0) emit(o, ' ');
}

unsigned long fmt_format(fmt_put_fn put, void *ctx, const char *fmt, __builtin_va_list ap)
{
    struct out o = {put, ctx, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            emit(&o, *fmt);
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
            long v = lng ? __builtin_va_arg(ap, long) : __builtin_va_arg(ap, int);
            unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
            do *--p = (char)('0' + u % 10); while (u /= 10);
            if (v < 0) *--p = '-';
            emit_padded(&o, p, (unsigned long)(end - p), width, left, pad);
            break;
        }
        case 'u': {
            unsigned long u = lng ? __builtin_va_arg(ap, unsigned long) : __builtin_va_arg(ap, unsigned int);
            do *--p = (char)('0' + u % 10); while (u /= 10);
            emit_padded(&o, p, (unsigned long)(end - p), width, left, pad);
            break;
        }
        case 'p':
            lng = 1;
            emit(&o, '0');
            emit(&o, 'x');
            /* fall through */
        case 'x':
        case 'X': {
            const char *digits = *fmt == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            unsigned long u = lng ? __builtin_va_arg(ap, unsigned long) : __builtin_va_arg(ap, unsigned int);
            do *--p = digits[u & 15]; while (u >>= 4);
            emit_padded(&o, p, (unsigned long)(end - p), width, left, pad);
            break;
        }
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            if (!s) s = "(null)";
            unsigned long n = 0;
            while ((prec < 0 || n < (unsigned long)prec) && s[n]) n++;
            emit_padded(&o, s, n, width, left, ' ');
            break;
        }
        case 'c': {
            char c = (char)__builtin_va_arg(ap, int);
            emit_padded(&o, &c, 1, width, left, ' ');
            break;
        }
        case '%':
            emit(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            emit(&o, '%');
            emit(&o, *fmt);
            break;
        }
    }
    return o.len;
}
