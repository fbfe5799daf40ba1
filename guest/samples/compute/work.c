/*
 * compute: a mix of typical kernel-ish integer code, compiled both for the
 * guest (freestanding, -mcmodel=kernel) and natively for the host
 * (libwork.so, -fPIC). Same -O2 -mgeneral-regs-only in both, so the two
 * instruction streams are comparable.
 *
 * One round:
 *   - fill a 512-byte buffer from a xorshift PRNG and CRC32 it bitwise
 *   - insertion-sort 32 words, quicksort 128 words, verify both
 *   - sieve of Eratosthenes up to 4096 (byte flags)
 *   - open-addressing hash table: 96 inserts, 192 lookups
 *   - strlen / memcpy / memcmp / strchr-style loops over NUL-terminated strings
 * Everything folds into a 64-bit checksum.
 *
 * No libc: the loops below are written out (and built with
 * -fno-tree-loop-distribute-patterns so gcc does not turn them back into
 * memcpy/memset calls).
 */
#include "work.h"

#include <stddef.h>

#define BUF_BYTES    512
#define ISORT_N      32
#define QSORT_N      128
#define SIEVE_N      4096
#define HASH_SLOTS   256          /* power of two */
#define HASH_INSERTS 96
#define HASH_LOOKUPS 192
#define STR_BYTES    200

static inline uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static inline uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    return h;
}

/* ---- CRC32 (reflected, poly 0xEDB88320), one bit at a time ------------------ */

static uint32_t crc32_bitwise(const uint8_t *p, size_t n, uint32_t crc)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ---- sorting ---------------------------------------------------------------- */

static void insertion_sort(uint32_t *a, int n)
{
    for (int i = 1; i < n; i++) {
        uint32_t v = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

static void quicksort(uint32_t *a, int lo, int hi)
{
    while (hi - lo > 8) {
        uint32_t x = a[lo], y = a[(lo + hi) / 2], z = a[hi];
        uint32_t pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                uint32_t t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        /* recurse into the smaller half, loop on the larger one */
        if (j - lo < hi - i) {
            quicksort(a, lo, j);
            lo = i;
        } else {
            quicksort(a, i, hi);
            hi = j;
        }
    }
    insertion_sort(a + lo, hi - lo + 1);
}

static uint64_t check_sorted(const uint32_t *a, int n)
{
    uint64_t h = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && a[i - 1] > a[i])
            h += 0xBAD;
        h = h * 31 + a[i];
    }
    return h;
}

/* ---- sieve ------------------------------------------------------------------ */

static uint64_t sieve(uint8_t *composite, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        composite[i] = 0;
    uint64_t count = 0, sum = 0;
    for (uint32_t i = 2; i < n; i++) {
        if (composite[i])
            continue;
        count++;
        sum += i;
        for (uint32_t j = i * i; j < n; j += i)
            composite[j] = 1;
    }
    return (count << 32) ^ sum;
}

/* ---- hash table (open addressing, linear probing) -------------------------- */

struct slot {
    uint64_t key;     /* 0 = empty */
    uint64_t value;
};

static inline uint32_t hash64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static uint64_t hash_round(struct slot *t, uint64_t *rng)
{
    for (int i = 0; i < HASH_SLOTS; i++) {
        t[i].key = 0;
        t[i].value = 0;
    }
    uint64_t keys[HASH_INSERTS];
    for (int i = 0; i < HASH_INSERTS; i++) {
        uint64_t k = (xorshift64(rng) & 0xFFFFF) | 1;   /* small key space: some duplicates */
        keys[i] = k;
        uint32_t h = hash64(k) & (HASH_SLOTS - 1);
        while (t[h].key != 0 && t[h].key != k)
            h = (h + 1) & (HASH_SLOTS - 1);
        t[h].key = k;
        t[h].value += (uint64_t)i + 1;
    }
    uint64_t acc = 0;
    for (int i = 0; i < HASH_LOOKUPS; i++) {
        /* half hits, half (probable) misses */
        uint64_t k = (i & 1) ? keys[(i * 7) % HASH_INSERTS] : ((xorshift64(rng) & 0xFFFFF) | 1);
        uint32_t h = hash64(k) & (HASH_SLOTS - 1);
        int probes = 0;
        while (t[h].key != 0) {
            if (t[h].key == k) {
                acc += t[h].value;
                break;
            }
            h = (h + 1) & (HASH_SLOTS - 1);
            probes++;
        }
        acc += (uint64_t)probes;
    }
    return acc;
}

/* ---- string routines -------------------------------------------------------- */

static size_t k_strlen(const char *s)
{
    const char *p = s;
    while (*p)
        p++;
    return (size_t)(p - s);
}

static void k_memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    /* word copy for the aligned middle, bytes for the rest (like a simple kernel memcpy) */
    while (n >= 8 && (((uintptr_t)d | (uintptr_t)s) & 7) == 0) {
        *(uint64_t *)d = *(const uint64_t *)s;
        d += 8;
        s += 8;
        n -= 8;
    }
    while (n--)
        *d++ = *s++;
}

static int k_memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

static const char *k_strchr(const char *s, int c)
{
    for (; *s; s++)
        if (*s == (char)c)
            return s;
    return NULL;
}

static uint64_t string_round(char *a, char *b, uint64_t *rng)
{
    /* a: random lowercase text with spaces, NUL-terminated */
    size_t len = STR_BYTES - 1 - (size_t)(xorshift64(rng) & 31);
    for (size_t i = 0; i < len; i++) {
        uint32_t r = (uint32_t)xorshift64(rng);
        a[i] = (r & 7) == 0 ? ' ' : (char)('a' + (r >> 8) % 26);
    }
    a[len] = 0;
    uint64_t h = k_strlen(a);
    k_memcpy(b, a, len + 1);
    h = mix(h, (uint64_t)(k_memcmp(a, b, len + 1) + 2));
    /* perturb one byte and compare again */
    size_t at = (size_t)(xorshift64(rng) % len);
    b[at] ^= 0x20;
    h = mix(h, (uint64_t)(k_memcmp(a, b, len + 1) + 2));
    /* count words */
    uint64_t words = 0;
    for (const char *p = a; (p = k_strchr(p, ' ')) != NULL; p++)
        words++;
    h = mix(h, words);
    /* unaligned copy of a suffix */
    k_memcpy(b + 1, a + 3, len - 3 + 1);
    h = mix(h, k_strlen(b + 1));
    return h;
}

/* ---- driver ----------------------------------------------------------------- */

uint64_t work(uint64_t iterations, uint64_t seed)
{
    uint8_t buf[BUF_BYTES];
    uint32_t small[ISORT_N];
    uint32_t big[QSORT_N];
    uint8_t composite[SIEVE_N];
    struct slot table[HASH_SLOTS];
    char sa[STR_BYTES + 8], sb[STR_BYTES + 8];

    uint64_t rng = seed | 1;
    uint64_t h = seed;
    uint32_t crc = 0;

    for (uint64_t it = 0; it < iterations; it++) {
        /* CRC32 over fresh random bytes */
        for (int i = 0; i < BUF_BYTES; i += 8) {
            uint64_t r = xorshift64(&rng);
            for (int k = 0; k < 8; k++)
                buf[i + k] = (uint8_t)(r >> (8 * k));
        }
        crc = crc32_bitwise(buf, BUF_BYTES, crc);
        h = mix(h, crc);

        /* sorting */
        for (int i = 0; i < ISORT_N; i++)
            small[i] = (uint32_t)xorshift64(&rng);
        insertion_sort(small, ISORT_N);
        h = mix(h, check_sorted(small, ISORT_N));
        for (int i = 0; i < QSORT_N; i++)
            big[i] = (uint32_t)xorshift64(&rng) & 0xFFFF;
        quicksort(big, 0, QSORT_N - 1);
        h = mix(h, check_sorted(big, QSORT_N));

        /* sieve: every 4th round (it is the biggest single piece) */
        if ((it & 3) == 0)
            h = mix(h, sieve(composite, SIEVE_N - (uint32_t)(it & 0xF0)));

        /* hash table */
        h = mix(h, hash_round(table, &rng));

        /* strings */
        h = mix(h, string_round(sa, sb, &rng));
    }
    return h;
}
