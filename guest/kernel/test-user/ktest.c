/*
 * ktest: the kernel's own user-mode test program (bundled into every kernel image).
 * arg 0: the full test; other args are child roles used by the test itself.
 */
#include "../../include/uapi/harness.h"

typedef unsigned long u64;

static long sc(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

static u64 slen(const char *s)
{
    u64 n = 0;
    while (s[n])
        n++;
    return n;
}

static void puts_(const char *s) { sc(SYS_WRITE, 1, (long)s, (long)slen(s)); }

static void fail(const char *what, long v)
{
    char buf[128];
    u64 n = 0;
    const char *p = "ktest: FAILED: ";
    while (*p)
        buf[n++] = *p++;
    while (*what && n < 100)
        buf[n++] = *what++;
    buf[n++] = ' ';
    if (v < 0) {
        buf[n++] = '-';
        v = -v;
    }
    char d[24];
    int k = 0;
    do {
        d[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k)
        buf[n++] = d[--k];
    buf[n++] = '\n';
    sc(SYS_WRITE, 1, (long)buf, (long)n);
    sc(SYS_EXIT, 1, 0, 0);
}

#define CHECK(c, what, v) do { if (!(c)) fail(what, (long)(v)); } while (0)

static int deep(int n)
{
    volatile char big[16384];
    big[0] = (char)n;
    big[sizeof(big) - 1] = (char)n;
    if (n == 0)
        return big[0] + big[sizeof(big) - 1];
    return deep(n - 1) + big[0];
}

static char filebuf[10000], readbuf[10000];

__attribute__((section(".text.entry"))) void _start(u64 arg)
{
    if (arg >= 100) {              /* child: write to the inherited pipe fd, exit 7 */
        const char *m = "hello through a pipe";
        sc(SYS_WRITE, (long)(arg - 100), (long)m, (long)slen(m));
        sc(SYS_EXIT, 7, 0, 0);
    }
    if (arg == 2) {                /* child: die on a bad access */
        volatile int *volatile bad = (volatile int *)0x10;
        *bad = 1;
        sc(SYS_EXIT, 0, 0, 0);
    }
    puts_("ktest: hello from user mode\n");

    long pid = sc(SYS_GETPID, 0, 0, 0);
    CHECK(pid > 0, "getpid", pid);
    long cpu = sc(SYS_GETCPU, 0, 0, 0);
    CHECK(cpu >= 0 && cpu < 64, "getcpu", cpu);
    CHECK(sc(SYS_YIELD, 0, 0, 0) == 0, "yield", 0);
    CHECK(sc(99, 0, 0, 0) == -ENOSYS, "bad syscall number", 0);
    CHECK(sc(SYS_DBT, 0, 0, 0) == -ENOSYS, "dbt", 0);

    /* brk heap: demand-zero pages, shrink, re-grow (zero again) */
    u64 b = (u64)sc(SYS_BRK, 0, 0, 0);
    CHECK(b >= 0x400000 && (b & 4095) == 0, "brk query", b);
    CHECK((u64)sc(SYS_BRK, (long)(b + 5 * 4096 + 100), 0, 0) == b + 5 * 4096 + 100, "brk grow", 0);
    volatile char *h = (volatile char *)b;
    for (u64 i = 0; i < 5 * 4096 + 100; i += 512) {
        CHECK(h[i] == 0, "heap not zero", i);
        h[i] = (char)i;
    }
    CHECK((u64)sc(SYS_BRK, (long)b, 0, 0) == b, "brk shrink", 0);
    CHECK((u64)sc(SYS_BRK, (long)(b + 4096), 0, 0) == b + 4096, "brk regrow", 0);
    CHECK(h[512] == 0, "heap page not fresh after shrink", h[512]);
    CHECK((u64)sc(SYS_BRK, (long)(b - 4096), 0, 0) == b + 4096, "brk below start", 0);

    /* stack growth */
    CHECK(deep(8) == 36, "deep stack", 0);

    /* bad pointers: -EFAULT, never a crash */
    CHECK(sc(SYS_WRITE, 1, 0x10, 5) == -EFAULT, "write from unmapped", 0);
    CHECK(sc(SYS_WRITE, 1, (long)0xFFFFFFFF80100000UL, 5) == -EFAULT, "write from kernel", 0);
    CHECK(sc(SYS_OPEN, 0x7000000000L, O_RDONLY, 0) == -EFAULT, "open bad path", 0);
    CHECK(sc(SYS_PIPE, 0x20, 0, 0) == -EFAULT, "pipe bad fds", 0);
    CHECK(sc(SYS_WRITE, 7, (long)"x", 1) == -EBADF, "write bad fd", 0);

    /* files */
    for (int i = 0; i < 10000; i++)
        filebuf[i] = (char)(i * 7 + 3);
    long fd = sc(SYS_OPEN, (long)"/kt.txt", O_CREAT | O_RDWR, 0);
    CHECK(fd >= 3, "open create", fd);
    CHECK(sc(SYS_WRITE, fd, (long)filebuf, 10000) == 10000, "file write", 0);
    CHECK(sc(SYS_READ, fd, (long)0x10, 10) == 0, "read at eof", 0);
    CHECK(sc(SYS_LSEEK, fd, 0, 0) == 0, "lseek", 0);
    CHECK(sc(SYS_READ, fd, (long)0x10, 10) == -EFAULT, "read to unmapped", 0);
    CHECK(sc(SYS_READ, fd, (long)readbuf, 10000) == 10000, "file read", 0);
    for (int i = 0; i < 10000; i++)
        CHECK(readbuf[i] == filebuf[i], "file content", i);
    CHECK(sc(SYS_LSEEK, fd, -10, 2) == 9990, "lseek end", 0);
    struct h_stat st;
    CHECK(sc(SYS_STAT, (long)"kt.txt", (long)&st, 0) == 0 && st.size == 10000 && st.kind == 1, "stat", st.size);
    struct h_dirent d;
    int seen = 0;
    for (long i = 0; sc(SYS_READDIR, i, (long)&d, 0) == 1; i++)
        if (d.name[0] == 'k' && d.name[1] == 't' && d.size == 10000 && d.ino == st.ino)
            seen = 1;
    CHECK(seen, "readdir", 0);
    CHECK(sc(SYS_CLOSE, fd, 0, 0) == 0, "close", 0);
    CHECK(sc(SYS_CLOSE, fd, 0, 0) == -EBADF, "double close", 0);
    CHECK(sc(SYS_UNLINK, (long)"/kt.txt", 0, 0) == 0, "unlink", 0);
    CHECK(sc(SYS_STAT, (long)"kt.txt", (long)&st, 0) == -ENOENT, "stat after unlink", 0);
    CHECK(sc(SYS_OPEN, (long)"/nope", O_RDONLY, 0) == -ENOENT, "open missing", 0);
    CHECK(sc(SYS_OPEN, (long)"/0123456789012345678901234567890123", O_CREAT, 0) == -ENAMETOOLONG, "long name", 0);

    /* pipe + spawn + wait */
    int fds[2];
    CHECK(sc(SYS_PIPE, (long)fds, 0, 0) == 0, "pipe", 0);
    long child = sc(SYS_SPAWN, (long)"ktest", 100 + fds[1], 0);
    CHECK(child > pid, "spawn", child);
    sc(SYS_CLOSE, fds[1], 0, 0);
    char msg[64];
    long got = 0, r;
    while ((r = sc(SYS_READ, fds[0], (long)msg + got, 63 - got)) > 0)
        got += r;
    CHECK(got == 20 && msg[0] == 'h' && msg[19] == 'e', "pipe read", got);
    int status = -1;
    CHECK(sc(SYS_WAIT, child, (long)&status, 0) == child && status == 7, "wait", status);
    CHECK(sc(SYS_WAIT, child, (long)&status, 0) == -ECHILD, "wait again", 0);
    sc(SYS_CLOSE, fds[0], 0, 0);
    CHECK(sc(SYS_SPAWN, (long)"no-such-program", 0, 0) == -ENOENT, "spawn missing", 0);

    /* a child killed by a user-mode page fault */
    child = sc(SYS_SPAWN, (long)"ktest", 2, 0);
    CHECK(sc(SYS_WAIT, child, (long)&status, 0) == child && status == 128 + 14, "killed child", status);

    puts_("ktest: ok\n");
    sc(SYS_EXIT, 0, 0, 0);
    for (;;)
        ;
}
