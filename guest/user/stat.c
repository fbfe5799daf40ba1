/* stat: N stat calls on an existing RAM file (lmbench lat_syscall stat). arg = N (0: 1000). */
#include "bench.h"

#define PATH "lm_stat"

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 1000);
    bench_make_file(PATH, 100, 's');
    uint64_t delta;
    long bad;
    struct h_stat st;
    BENCH_MEASURE(delta, bad = 0,
                  for (unsigned long i = 0; i < n; i++) bad |= sys_stat(PATH, &st),
                  (void)0);
    if (bad) die("a stat failed");
    if (st.size != 100 || st.kind != 1) die("stat: size %lu kind %lu, expected 100 and 1", st.size, st.kind);
    sys_unlink(PATH);
    bench_report("stat", n, delta, NULL);
    return 0;
}
