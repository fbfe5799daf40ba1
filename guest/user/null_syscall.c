/* null_syscall: N getpid calls (lmbench lat_syscall null). arg = N (0: 2000). */
#include "bench.h"

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 2000);
    uint64_t delta;
    int pid = sys_getpid();
    long bad = 0;
    BENCH_MEASURE(delta, bad = 0, for (unsigned long i = 0; i < n; i++) bad |= sys_getpid() ^ pid, (void)0);
    if (bad) die("getpid changed");
    bench_report("null_syscall", n, delta, NULL);
    return 0;
}
