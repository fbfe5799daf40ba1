/* open_close: N open+close pairs of an existing RAM file (lmbench lat_syscall open).
 * arg = N (0: 500). */
#include "bench.h"

#define PATH "lm_open_close"

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 500);
    bench_make_file(PATH, 16, 'o');
    uint64_t delta;
    long bad;
    BENCH_MEASURE(delta, bad = 0,
                  for (unsigned long i = 0; i < n; i++) {
                      int fd = sys_open(PATH, O_RDONLY);
                      bad |= fd < 0;
                      bad |= sys_close(fd);
                  },
                  (void)0);
    if (bad) die("an open or close failed");
    sys_unlink(PATH);
    bench_report("open_close", n, delta, NULL);
    return 0;
}
