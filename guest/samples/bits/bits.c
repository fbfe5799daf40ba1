/*
 * bits: bit manipulation as gcc compiles it for x86-64-v3. The builtins are the ones
 * <immintrin.h> wraps (_pdep_u64 and friends); the plain C idioms below are the ones gcc turns
 * into andn, blsi, blsr, blsmsk, shlx/shrx/sarx, rorx, mulx and movbe.
 */
#include "bits.h"

static inline uint64_t next(uint64_t *s)
{
    /* xorshift64*: a cheap, well-mixed sequence. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

__attribute__((noinline)) static uint64_t bmi1(uint64_t a, uint64_t b, uint32_t c)
{
    uint64_t r = ~a & b;                                  /* andn */
    r += a & -a;                                          /* blsi */
    r ^= b & (b - 1);                                     /* blsr */
    r += a ^ (a - 1);                                     /* blsmsk */
    r ^= __builtin_ia32_bextr_u64(b, (c & 0x3F) | ((c >> 8 & 0x3F) << 8));
    r += __builtin_ia32_bextr_u32((uint32_t)a, c & 0xFFFF);
    r ^= (uint64_t)(~(uint32_t)a & (uint32_t)b);          /* andn, 32-bit */
    r += (uint32_t)b & -(uint32_t)b;                      /* blsi, 32-bit */
    return r;
}

__attribute__((noinline)) static uint64_t bmi2(uint64_t a, uint64_t b, uint32_t n)
{
    uint64_t r = __builtin_ia32_pdep_di(a, b);
    r ^= __builtin_ia32_pext_di(b, a);
    r += __builtin_ia32_pdep_si((uint32_t)a, (uint32_t)(b >> 7));
    r ^= __builtin_ia32_pext_si((uint32_t)b, (uint32_t)(a >> 3));
    r += __builtin_ia32_bzhi_di(a, n & 0x7F);
    r ^= __builtin_ia32_bzhi_si((uint32_t)b, n >> 8 & 0x3F);
    r += a << (n & 63);                                   /* shlx */
    r ^= b >> (n >> 3 & 63);                              /* shrx */
    r += (uint64_t)((int64_t)a >> (n >> 5 & 63));         /* sarx */
    r ^= (uint32_t)a << (n & 31);                         /* shlx, 32-bit */
    r += (a >> 17 | a << 47) ^ b;                         /* rorx (a stays live) */
    unsigned __int128 p = (unsigned __int128)a * b;       /* mulx */
    r ^= (uint64_t)(p >> 64) + (uint64_t)p + a;
    return r;
}

__attribute__((noinline)) static uint64_t counts(uint64_t a, uint64_t b)
{
    uint64_t r = (uint64_t)__builtin_popcountll(a);
    r += a ? (uint64_t)__builtin_ctzll(a) : 64;           /* tzcnt */
    r += b ? (uint64_t)__builtin_clzll(b) : 64;           /* lzcnt */
    r += (uint64_t)__builtin_popcount((uint32_t)b);
    return r;
}

__attribute__((noinline)) static uint64_t swaps(const uint64_t *p, const uint32_t *q, uint64_t *out)
{
    uint64_t r = __builtin_bswap64(p[0]) + __builtin_bswap32(q[1]);   /* movbe loads */
    *out = __builtin_bswap64(r ^ p[1]);                               /* movbe store */
    return r;
}

__attribute__((noinline)) static uint64_t carries(uint64_t a, uint64_t b, uint64_t c)
{
    unsigned long long lo, hi;
    unsigned char cf = __builtin_ia32_addcarryx_u64(0, a, b, &lo);
    cf = __builtin_ia32_addcarryx_u64(cf, c, a, &hi);
    return lo ^ hi ^ cf;
}

uint64_t bits_work(uint64_t rounds, uint64_t seed)
{
    uint64_t s = seed | 1, sum = 0;
    uint64_t buf[4];
    uint32_t words[4];
    for (uint64_t i = 0; i < rounds; i++) {
        uint64_t a = next(&s), b = next(&s);
        uint32_t n = (uint32_t)next(&s);
        /* Edge values now and then: zero sources, one-bit masks, full masks. */
        if ((i & 15) == 3) a = 0;
        if ((i & 31) == 7) b = 1ULL << (n & 63);
        if ((i & 63) == 11) b = ~0ULL;
        buf[0] = a; buf[1] = b; words[1] = n;
        sum = sum * 31 + bmi1(a, b, n);
        sum ^= bmi2(a, b, n);
        sum += counts(a, b);
        sum ^= swaps(buf, words, &buf[2]) + buf[2];
        sum += carries(a, b, sum);
    }
    return sum;
}
