/* spawn_exit: N spawn("true_prog") + wait pairs (lmbench lat_proc exec, roughly fork+exec+exit).
 * arg = N (0: 50). Instructions retired on the parent's vCPU per pair. */
#include "bench.h"

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 50);
    uint64_t delta;
    long bad;
    int last = 0;
    BENCH_MEASURE(delta, bad = 0,
                  for (unsigned long i = 0; i < n; i++) {
                      int pid = sys_spawn("true_prog", 0);
                      int status = -1;
                      if (pid < 0) {
                          last = pid;
                          bad = 1;
                          break;
                      }
                      bad |= sys_wait(pid, &status) != pid;
                      bad |= status != 0;
                  },
                  (void)0);
    if (last < 0) die("spawn(true_prog): %s", errname(last));
    if (bad) die("a wait failed or true_prog exited non-zero");
    bench_report("spawn_exit", n, delta, NULL);
    return 0;
}
