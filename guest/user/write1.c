/* write1: N one-byte writes to a RAM file (lmbench lat_syscall write). The file grows to N
 * bytes; each try starts from offset 0. arg = N (0: 1000). */
#include "bench.h"

#define PATH "lm_write1"

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 1000);
    int fd = sys_open(PATH, O_CREAT | O_TRUNC | O_RDWR);
    if (fd < 0) die("open(%s, O_CREAT|O_TRUNC|O_RDWR): %s", PATH, errname(fd));
    uint64_t delta;
    char c = 'w';
    long bad;
    BENCH_MEASURE(delta, { bad = sys_lseek(fd, 0, SEEK_SET); },
                  for (unsigned long i = 0; i < n; i++) bad |= sys_write(fd, &c, 1) ^ 1, (void)0);
    if (bad) die("a write did not return 1 (or lseek failed)");
    struct h_stat st;
    long r = sys_stat(PATH, &st);
    if (r) die("stat(%s): %s", PATH, errname(r));
    if (st.size != n) die("file size %lu after %lu one-byte writes", st.size, n);
    sys_close(fd);
    sys_unlink(PATH);
    bench_report("write1", n, delta, NULL);
    return 0;
}
