/* read1: N one-byte reads from a RAM file (lmbench lat_syscall read). The file is N bytes long,
 * so the reads are sequential and need no lseek. arg = N (0: 1000). */
#include "bench.h"

#define PATH "lm_read1"

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 1000);
    bench_make_file(PATH, n, 'r');
    int fd = sys_open(PATH, O_RDONLY);
    if (fd < 0) die("open(%s): %s", PATH, errname(fd));
    uint64_t delta;
    char c;
    long bad;
    BENCH_MEASURE(delta, { bad = sys_lseek(fd, 0, SEEK_SET); },
                  for (unsigned long i = 0; i < n; i++) bad |= sys_read(fd, &c, 1) ^ 1, (void)0);
    if (bad) die("a read did not return 1 byte (or lseek failed)");
    if (c != 'r') die("read the wrong byte 0x%x", c);
    long r = sys_read(fd, &c, 1);
    if (r != 0) die("read at end of file: %ld, expected 0", r);
    sys_close(fd);
    sys_unlink(PATH);
    bench_report("read1", n, delta, NULL);
    return 0;
}
