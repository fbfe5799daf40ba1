/* Result lines, PRNG, hashing, errno names. */
#include "ulib.h"

_Static_assert(SYS_EXIT == 9, "lib/crt0.S hard-codes SYS_EXIT = 9");

/* ---- result lines ---- */
static void result_add(struct result *r, const char *s)
{
    size_t n = strlen(s);
    if (r->len + n >= sizeof r->buf - 1) n = sizeof r->buf - 2 - r->len; /* keep room for '\n' */
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

void result_begin(struct result *r, const char *workload)
{
    r->len = 0;
    result_add(r, "result ");
    result_add(r, workload);
}

void result_u(struct result *r, const char *key, unsigned long value)
{
    char tmp[96];
    snprintf(tmp, sizeof tmp, " %s=%lu", key, value);
    result_add(r, tmp);
}

void result_d(struct result *r, const char *key, long value)
{
    char tmp[96];
    snprintf(tmp, sizeof tmp, " %s=%ld", key, value);
    result_add(r, tmp);
}

void result_x64(struct result *r, const char *key, unsigned long value)
{
    char tmp[96];
    snprintf(tmp, sizeof tmp, " %s=0x%016lx", key, value);
    result_add(r, tmp);
}

void result_s(struct result *r, const char *key, const char *value)
{
    result_add(r, " ");
    result_add(r, key);
    result_add(r, "=");
    result_add(r, value);
}

void result_end(struct result *r)
{
    r->buf[r->len++] = '\n';
    sys_write(1, r->buf, r->len);
    r->len = 0;
}

/* ---- xorshift64* (Vigna) ---- */
void rng_seed(struct rng *r, uint64_t seed)
{
    /* splitmix64 step so that nearby seeds give unrelated streams; never 0 */
    uint64_t z = seed + 0x9e3779b97f4a7c15UL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
    z ^= z >> 31;
    r->s = z ? z : 0x9e3779b97f4a7c15UL;
}

uint64_t rng_next(struct rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dUL;
}

uint64_t rng_below(struct rng *r, uint64_t n)
{
    return (rng_next(r) >> 11) % n;
}

/* ---- FNV-1a 64 ---- */
uint64_t fnv1a64(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3UL;
    }
    return h;
}

/* ---- errno names ---- */
const char *errname(long err)
{
    switch (-err) {
    case 0: return "0";
    case EPERM: return "-EPERM";
    case ENOENT: return "-ENOENT";
    case EIO: return "-EIO";
    case EBADF: return "-EBADF";
    case ECHILD: return "-ECHILD";
    case EAGAIN: return "-EAGAIN";
    case ENOMEM: return "-ENOMEM";
    case EFAULT: return "-EFAULT";
    case EEXIST: return "-EEXIST";
    case EISDIR: return "-EISDIR";
    case EINVAL: return "-EINVAL";
    case EMFILE: return "-EMFILE";
    case EFBIG: return "-EFBIG";
    case ENOSPC: return "-ENOSPC";
    case EPIPE: return "-EPIPE";
    case ENAMETOOLONG: return "-ENAMETOOLONG";
    case ENOSYS: return "-ENOSYS";
    default: return err < 0 ? "-E?" : "(positive)";
    }
}
