/* pipe_echo: echoes bytes from one inherited pipe fd to another until end of file.
 *
 * arg = rfd | wfd << 16 | close1 << 32 | close2 << 48, each a 16-bit fd number, 0xFFFF = none.
 * The child inherits all of its parent's fds (SYS_SPAWN in harness.h); close1 and close2 are
 * inherited fds it must close first (the parent's ends), so that it sees end of file when the
 * parent closes its write end. Exit status 0 at end of file, 1 on an error. */
#include "ulib.h"

#define PE_NONE 0xFFFF

int main(unsigned long arg)
{
    int rfd = (int)(arg & 0xFFFF), wfd = (int)((arg >> 16) & 0xFFFF);
    int c1 = (int)((arg >> 32) & 0xFFFF), c2 = (int)((arg >> 48) & 0xFFFF);
    if (c1 != PE_NONE) sys_close(c1);
    if (c2 != PE_NONE) sys_close(c2);
    char buf[256];
    for (;;) {
        long n = sys_read(rfd, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) die("read(%d): %s", rfd, errname(n));
        for (long off = 0; off < n;) {
            long w = sys_write(wfd, buf + off, (size_t)(n - off));
            if (w <= 0) die("write(%d): %s", wfd, errname(w));
            off += w;
        }
    }
    sys_close(rfd);
    sys_close(wfd);
    return 0;
}
