/* pipe_rtt: one-byte round trips through two pipes to a child pipe_echo (lmbench lat_pipe).
 * The child inherits the pipe fds (SYS_SPAWN in harness.h); see pipe_echo.c for its arg.
 * arg = N round trips (0: 200). Reports insns_per_roundtrip (= insns_per_op): instructions
 * retired on the parent's vCPU per round trip (the child's work counts only when it runs on
 * the same vCPU). */
#include "bench.h"

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 200);
    int to_child[2], from_child[2];
    long r = sys_pipe(to_child);
    if (r) die("pipe: %s", errname(r));
    r = sys_pipe(from_child);
    if (r) die("pipe: %s", errname(r));
    unsigned long echo_arg = (unsigned long)to_child[0] | (unsigned long)from_child[1] << 16 |
                             (unsigned long)to_child[1] << 32 | (unsigned long)from_child[0] << 48;
    int pid = sys_spawn("pipe_echo", echo_arg);
    if (pid < 0) die("spawn(pipe_echo): %s", errname(pid));
    sys_close(to_child[0]);
    sys_close(from_child[1]);

    /* warm up: the child is running and echoing */
    char c = 'p', d = 0;
    if (sys_write(to_child[1], &c, 1) != 1 || sys_read(from_child[0], &d, 1) != 1 || d != c)
        die("first round trip failed");

    uint64_t delta;
    long bad;
    BENCH_MEASURE(delta, bad = 0,
                  for (unsigned long i = 0; i < n; i++) {
                      c = (char)i;
                      bad |= sys_write(to_child[1], &c, 1) ^ 1;
                      bad |= sys_read(from_child[0], &d, 1) ^ 1;
                      bad |= c ^ d;
                  },
                  (void)0);
    if (bad) die("a round trip failed or echoed the wrong byte");

    sys_close(to_child[1]); /* the child sees end of file and exits 0 */
    int status = -1;
    int w = sys_wait(pid, &status);
    if (w != pid) die("wait(%d): %s", pid, errname(w));
    if (status != 0) die("pipe_echo exited with status %d", status);
    r = sys_read(from_child[0], &d, 1);
    if (r != 0) die("read after the child exited: %ld, expected 0 (end of file)", r);
    sys_close(from_child[0]);
    bench_report("pipe_rtt", n, delta, "insns_per_roundtrip");
    return 0;
}
