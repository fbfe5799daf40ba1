/* Helpers of the lmbench-style microbenchmarks.
 *
 * Guest time is rdtsc = the retired-instruction count of the vCPU the program runs on. A
 * measurement is only meaningful if the program stayed on one vCPU, so BENCH_MEASURE reads
 * getcpu() around the timed region and repeats the whole region (setup included) up to
 * BENCH_TRIES times when the program migrated. */
#ifndef BENCH_H
#define BENCH_H
#include "ulib.h"

#define BENCH_TRIES 5

/* arg = iteration count; 0 selects the default. */
static inline unsigned long bench_iterations(unsigned long arg, unsigned long dflt)
{
    return arg ? arg : dflt;
}

/* Runs `setup; [timed: body]; teardown` until it ran on one vCPU; *delta = instructions. */
#define BENCH_MEASURE(delta, setup, body, teardown)                                              \
    do {                                                                                         \
        for (int try_ = 1;; try_++) {                                                            \
            setup;                                                                               \
            int c0_ = sys_getcpu();                                                              \
            uint64_t t0_ = rdtsc();                                                              \
            body;                                                                                \
            uint64_t t1_ = rdtsc();                                                              \
            int c1_ = sys_getcpu();                                                              \
            teardown;                                                                            \
            (delta) = t1_ - t0_;                                                                 \
            if (c0_ == c1_ && t1_ >= t0_) break;                                                 \
            if (try_ == BENCH_TRIES) {                                                           \
                printf("%s: note: migrated between vCPUs in every try; the number is unreliable\n", \
                       ulib_prog_name);                                                          \
                if (t1_ < t0_) (delta) = 0;                                                      \
                break;                                                                           \
            }                                                                                    \
        }                                                                                        \
    } while (0)

/* "result <name> iterations=N insns_per_op=X [<extra_key>=X]" */
static inline void bench_report(const char *name, unsigned long n, uint64_t delta, const char *extra_key)
{
    struct result r;
    result_begin(&r, name);
    result_u(&r, "iterations", n);
    result_u(&r, "insns_per_op", delta / n);
    if (extra_key) result_u(&r, extra_key, delta / n);
    result_end(&r);
}

/* Creates (or truncates) path and writes n bytes of value c; dies on error. */
static inline void bench_make_file(const char *path, unsigned long n, char c)
{
    int fd = sys_open(path, O_CREAT | O_TRUNC | O_WRONLY);
    if (fd < 0) die("open(%s, O_CREAT|O_TRUNC|O_WRONLY): %s", path, errname(fd));
    char buf[256];
    memset(buf, c, sizeof buf);
    while (n) {
        unsigned long k = n < sizeof buf ? n : sizeof buf;
        long w = sys_write(fd, buf, k);
        if (w != (long)k) die("write(%s, %lu): %s", path, k, errname(w));
        n -= k;
    }
    long r = sys_close(fd);
    if (r) die("close: %s", errname(r));
}

#endif
