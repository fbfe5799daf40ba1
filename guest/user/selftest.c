/* selftest: exercises every system call and its error paths. Prints "selftest: <check> ok" or
 * "selftest: <check> FAILED: <why>" per check, then
 *   result selftest checks=<n> failed=<m>
 * and exits 0 only if every check passed.
 *
 * arg: bit 0 set = skip the user-fault checks (children that fault and must be killed).
 *
 * Beyond harness.h it assumes Linux behaviour where the header is silent: reading a write-only
 * fd (or writing a read-only one) is -EBADF; lseek to a negative offset or with an unknown whence
 * is -EINVAL; brk beyond the user half fails without moving the heap end; a heap page given back
 * by shrinking brk reads zero when the heap grows again; wait(pid) on a pid that is not an
 * unreaped child is -ECHILD; a process killed by a fault reports a non-zero status to wait. */
#include "ulib.h"

static int n_checks, n_failed;
static char why[300];

#define FAIL(...)                                   \
    do {                                            \
        snprintf(why, sizeof why, __VA_ARGS__);     \
        return 0;                                   \
    } while (0)
#define EXPECT(cond, ...)                           \
    do {                                            \
        if (!(cond)) FAIL(__VA_ARGS__);             \
    } while (0)
/* expr must equal want; the message names both (with errno names) */
#define EXPECT_EQ(expr, want)                                                                      \
    do {                                                                                           \
        long got_ = (long)(expr), want_ = (long)(want);                                            \
        if (got_ != want_)                                                                         \
            FAIL("line %d: %s = %ld (%s), expected %ld (%s)", __LINE__, #expr, got_, errname(got_), \
                 want_, errname(want_));                                                           \
    } while (0)

static void run(const char *name, int (*fn)(void))
{
    n_checks++;
    why[0] = 0;
    if (fn()) {
        printf("selftest: %s ok\n", name);
    } else {
        n_failed++;
        printf("selftest: %s FAILED: %s\n", name, why);
    }
}

#define KERNEL_PTR    ((void *)0xFFFF800000000000UL)
#define KERNEL_TEXT   ((void *)0xFFFFFFFF80000000UL)
#define NONCANON_PTR  ((void *)0x0000900000000000UL)
#define UNMAPPED_PTR  ((void *)0x0000100000000000UL)
#define TOP_PTR       ((void *)(H_USER_TOP - 2)) /* straddles the end of the user half */

static unsigned long self_arg;

/* ---- helpers ---- */
static int memchr_ok(const char *name)
{
    for (int i = 0; i <= H_NAME_MAX; i++)
        if (name[i] == 0) return 1;
    return 0;
}

static long make_file(const char *path, const void *data, unsigned long n)
{
    int fd = sys_open(path, O_CREAT | O_TRUNC | O_WRONLY);
    if (fd < 0) return fd;
    long w = sys_write(fd, data, n);
    sys_close(fd);
    return w == (long)n ? 0 : (w < 0 ? w : -EIO);
}

static long file_size(const char *path)
{
    struct h_stat st;
    long r = sys_stat(path, &st);
    return r ? r : (long)st.size;
}

/* ---- checks ---- */
static int check_entry(void)
{
    EXPECT((ulib_entry_rsp & 15) == 0, "entry rsp 0x%lx not 16-byte aligned", ulib_entry_rsp);
    EXPECT(ulib_entry_rsp > H_USER_BASE && ulib_entry_rsp <= H_USER_TOP, "entry rsp 0x%lx outside the user half", ulib_entry_rsp);
    EXPECT(ulib_entry_arg == self_arg, "rdi at entry 0x%lx != main's arg 0x%lx", ulib_entry_arg, self_arg);
    volatile char probe[64];
    probe[0] = 1;
    probe[63] = 2;
    EXPECT(probe[0] + probe[63] == 3, "stack");
    return 1;
}

static int check_registers(void)
{
    static unsigned long out[12];
    static const unsigned long want[12] = {
        0x1111111111111111UL, 0x2222222222222222UL, 0x3333333333333333UL, 0x4444444444444444UL,
        0x5555555555555555UL, 0x6666666666666666UL, 0x7777777777777777UL, 0x8888888888888888UL,
        0x9999999999999999UL, 0xAAAAAAAAAAAAAAAAUL, 0xBBBBBBBBBBBBBBBBUL, 0xCCCCCCCCCCCCCCCCUL,
    };
    static const char *const names[12] = {"rbx", "rbp", "rdi", "rsi", "rdx", "r8", "r9", "r10", "r12", "r13", "r14", "r15"};
    __asm__ volatile(
        "push %%rbx\n\tpush %%rbp\n\tpush %%r12\n\tpush %%r13\n\tpush %%r14\n\tpush %%r15\n\t"
        "push %[out]\n\t"
        "movabs $0x1111111111111111, %%rbx\n\tmovabs $0x2222222222222222, %%rbp\n\t"
        "movabs $0x3333333333333333, %%rdi\n\tmovabs $0x4444444444444444, %%rsi\n\t"
        "movabs $0x5555555555555555, %%rdx\n\tmovabs $0x6666666666666666, %%r8\n\t"
        "movabs $0x7777777777777777, %%r9\n\tmovabs $0x8888888888888888, %%r10\n\t"
        "movabs $0x9999999999999999, %%r12\n\tmovabs $0xAAAAAAAAAAAAAAAA, %%r13\n\t"
        "movabs $0xBBBBBBBBBBBBBBBB, %%r14\n\tmovabs $0xCCCCCCCCCCCCCCCC, %%r15\n\t"
        "movl %[nr], %%eax\n\t"
        "syscall\n\t"
        "pop %%rax\n\t"
        "mov %%rbx, 0(%%rax)\n\tmov %%rbp, 8(%%rax)\n\tmov %%rdi, 16(%%rax)\n\tmov %%rsi, 24(%%rax)\n\t"
        "mov %%rdx, 32(%%rax)\n\tmov %%r8, 40(%%rax)\n\tmov %%r9, 48(%%rax)\n\tmov %%r10, 56(%%rax)\n\t"
        "mov %%r12, 64(%%rax)\n\tmov %%r13, 72(%%rax)\n\tmov %%r14, 80(%%rax)\n\tmov %%r15, 88(%%rax)\n\t"
        "pop %%r15\n\tpop %%r14\n\tpop %%r13\n\tpop %%r12\n\tpop %%rbp\n\tpop %%rbx"
        :
        : [out] "r"(out), [nr] "i"(SYS_GETPID)
        : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory", "cc");
    for (int i = 0; i < 12; i++)
        EXPECT(out[i] == want[i], "%s changed across a syscall: 0x%lx, expected 0x%lx", names[i], out[i], want[i]);
    return 1;
}

static int check_getpid_yield(void)
{
    int a = sys_getpid(), b = sys_getpid();
    EXPECT(a > 0, "getpid = %d", a);
    EXPECT_EQ(b, a);
    EXPECT_EQ(sys_yield(), 0);
    EXPECT_EQ(sys_getpid(), a);
    return 1;
}

static int check_getcpu(void)
{
    for (int i = 0; i < 4; i++) {
        int c = sys_getcpu();
        EXPECT(c >= 0 && c < 256, "getcpu = %d (%s)", c, errname(c));
        sys_yield();
    }
    return 1;
}

static int check_console(void)
{
    static const char msg[] = "selftest: (console write)\n";
    EXPECT_EQ(sys_write(1, msg, sizeof msg - 1), sizeof msg - 1);
    EXPECT_EQ(sys_write(2, msg, sizeof msg - 1), sizeof msg - 1);
    EXPECT_EQ(sys_write(1, msg, 0), 0);
    char buf[8];
    EXPECT_EQ(sys_read(0, buf, sizeof buf), 0); /* fd 0 reads as end of file */
    return 1;
}

static int check_rdtsc(void)
{
    uint64_t a = rdtsc();
    volatile int x = 0;
    for (int i = 0; i < 100; i++) x += i;
    uint64_t b = rdtsc();
    /* may migrate between the reads: only a same-vCPU pair is checked */
    int c0 = sys_getcpu();
    uint64_t c = rdtsc(), d = rdtsc();
    if (sys_getcpu() == c0) EXPECT(d > c, "rdtsc did not advance: %lu then %lu", c, d);
    (void)a, (void)b;
    return 1;
}

static int check_bad_fd(void)
{
    char buf[4] = "abc";
    EXPECT_EQ(sys_read(-1, buf, 1), -EBADF);
    EXPECT_EQ(sys_read(100, buf, 1), -EBADF);
    EXPECT_EQ(sys_read(1000000, buf, 1), -EBADF);
    EXPECT_EQ(sys_write(-1, buf, 1), -EBADF);
    EXPECT_EQ(sys_write(100, buf, 1), -EBADF);
    EXPECT_EQ(sys_close(-1), -EBADF);
    EXPECT_EQ(sys_close(100), -EBADF);
    EXPECT_EQ(sys_lseek(100, 0, SEEK_SET), -EBADF);
    EXPECT_EQ(sys_read(1, buf, 1), -EBADF); /* the console is write only */
    int fd = sys_open("st_badfd", O_CREAT | O_TRUNC | O_RDWR);
    EXPECT(fd >= 3, "open = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_close(fd), 0);
    EXPECT_EQ(sys_close(fd), -EBADF); /* twice */
    EXPECT_EQ(sys_write(fd, buf, 1), -EBADF);
    EXPECT_EQ(sys_unlink("st_badfd"), 0);
    return 1;
}

static int check_access_modes(void)
{
    char buf[4] = "xyz";
    EXPECT_EQ(make_file("st_modes", "hello", 5), 0);
    int fd = sys_open("st_modes", O_RDONLY);
    EXPECT(fd >= 0, "open O_RDONLY = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_write(fd, buf, 1), -EBADF);
    EXPECT_EQ(sys_read(fd, buf, 2), 2);
    sys_close(fd);
    fd = sys_open("st_modes", O_WRONLY);
    EXPECT(fd >= 0, "open O_WRONLY = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_read(fd, buf, 1), -EBADF);
    EXPECT_EQ(sys_write(fd, "J", 1), 1);
    sys_close(fd);
    EXPECT_EQ(file_size("st_modes"), 5); /* no O_TRUNC: overwrote one byte only */
    fd = sys_open("st_modes", O_RDONLY);
    EXPECT_EQ(sys_read(fd, buf, 4), 4);
    EXPECT(memcmp(buf, "Jell", 4) == 0, "contents %.4s", buf);
    sys_close(fd);
    EXPECT_EQ(sys_unlink("st_modes"), 0);
    return 1;
}

static int check_efault_write(void)
{
    EXPECT_EQ(sys_write(1, KERNEL_PTR, 5), -EFAULT);
    EXPECT_EQ(sys_write(1, KERNEL_TEXT, 5), -EFAULT);
    EXPECT_EQ(sys_write(1, NONCANON_PTR, 5), -EFAULT);
    EXPECT_EQ(sys_write(1, UNMAPPED_PTR, 5), -EFAULT);
    EXPECT_EQ(sys_write(1, (void *)0, 5), -EFAULT);
    EXPECT_EQ(sys_write(1, TOP_PTR, 5), -EFAULT);
    EXPECT_EQ(sys_write(1, (void *)~0UL, 5), -EFAULT); /* wraps around */
    int fds[2];
    EXPECT_EQ(sys_pipe(fds), 0);
    EXPECT_EQ(sys_write(fds[1], KERNEL_PTR, 5), -EFAULT);
    sys_close(fds[0]);
    sys_close(fds[1]);
    return 1;
}

static int check_efault_read(void)
{
    EXPECT_EQ(make_file("st_efault", "0123456789", 10), 0);
    int fd = sys_open("st_efault", O_RDONLY);
    EXPECT(fd >= 0, "open = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_read(fd, KERNEL_PTR, 5), -EFAULT);
    EXPECT_EQ(sys_read(fd, KERNEL_TEXT, 5), -EFAULT);
    EXPECT_EQ(sys_read(fd, NONCANON_PTR, 5), -EFAULT);
    EXPECT_EQ(sys_read(fd, UNMAPPED_PTR, 5), -EFAULT);
    EXPECT_EQ(sys_read(fd, (void *)0, 5), -EFAULT);
    EXPECT_EQ(sys_read(fd, TOP_PTR, 5), -EFAULT);
    /* our own text is mapped read-only; _start (0x400000) never runs again */
    EXPECT_EQ(sys_read(fd, (void *)H_USER_BASE, 5), -EFAULT);
    /* still at offset 0 after the failed reads? Linux leaves the offset alone */
    char buf[10];
    EXPECT_EQ(sys_lseek(fd, 0, SEEK_SET), 0);
    EXPECT_EQ(sys_read(fd, buf, 10), 10);
    EXPECT(memcmp(buf, "0123456789", 10) == 0, "contents");
    sys_close(fd);
    EXPECT_EQ(sys_unlink("st_efault"), 0);
    return 1;
}

static int check_efault_args(void)
{
    struct h_stat st;
    struct h_dirent d;
    EXPECT_EQ(make_file("st_efargs", "x", 1), 0);
    EXPECT_EQ(sys_open(KERNEL_PTR, O_RDONLY), -EFAULT);
    EXPECT_EQ(sys_open(UNMAPPED_PTR, O_CREAT | O_RDWR), -EFAULT);
    EXPECT_EQ(sys_open((char *)0, O_RDONLY), -EFAULT);
    EXPECT_EQ(sys_stat(KERNEL_PTR, &st), -EFAULT);
    EXPECT_EQ(sys_stat("st_efargs", KERNEL_PTR), -EFAULT);
    EXPECT_EQ(sys_stat("st_efargs", (void *)H_USER_BASE), -EFAULT); /* read-only text */
    EXPECT_EQ(sys_unlink(KERNEL_PTR), -EFAULT);
    EXPECT_EQ(sys_pipe(KERNEL_PTR), -EFAULT);
    EXPECT_EQ(sys_pipe(UNMAPPED_PTR), -EFAULT);
    EXPECT_EQ(sys_readdir(0, KERNEL_PTR), -EFAULT);
    EXPECT_EQ(sys_spawn(KERNEL_PTR, 0), -EFAULT);
    EXPECT_EQ(sys_spawn(UNMAPPED_PTR, 0), -EFAULT);
    EXPECT_EQ(sys_stat("st_efargs", &st), 0); /* still there */
    EXPECT_EQ(sys_readdir(0, &d), 1);
    EXPECT_EQ(sys_unlink("st_efargs"), 0);
    return 1;
}

static int check_enoent(void)
{
    struct h_stat st;
    EXPECT_EQ(sys_open("st_no_such_file", O_RDONLY), -ENOENT);
    EXPECT_EQ(sys_open("st_no_such_file", O_RDWR | O_TRUNC), -ENOENT);
    EXPECT_EQ(sys_stat("st_no_such_file", &st), -ENOENT);
    EXPECT_EQ(sys_unlink("st_no_such_file"), -ENOENT);
    EXPECT_EQ(sys_spawn("no_such_program", 0), -ENOENT);
    return 1;
}

static int check_names(void)
{
    struct h_stat a, b;
    char longname[48];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    EXPECT_EQ(sys_open(longname, O_CREAT | O_RDWR), -ENAMETOOLONG);
    EXPECT_EQ(sys_stat(longname, &a), -ENAMETOOLONG);
    char maxname[H_NAME_MAX + 1];
    memset(maxname, 'm', H_NAME_MAX);
    maxname[H_NAME_MAX] = 0; /* exactly 31 bytes: allowed */
    int fd = sys_open(maxname, O_CREAT | O_RDWR);
    EXPECT(fd >= 0, "open of a %d-byte name = %d (%s)", H_NAME_MAX, fd, errname(fd));
    sys_close(fd);
    EXPECT_EQ(sys_unlink(maxname), 0);
    /* "/name" and "name" are the same file */
    EXPECT_EQ(make_file("/st_alias", "abc", 3), 0);
    EXPECT_EQ(sys_stat("st_alias", &a), 0);
    EXPECT_EQ(sys_stat("/st_alias", &b), 0);
    EXPECT(a.ino == b.ino && a.size == 3 && b.size == 3, "st_alias ino %lu/%lu size %lu/%lu", a.ino, b.ino, a.size, b.size);
    EXPECT_EQ(sys_unlink("st_alias"), 0);
    EXPECT_EQ(sys_stat("/st_alias", &a), -ENOENT);
    return 1;
}

static int check_file_rw(void)
{
    struct h_stat st, st2;
    char buf[32];
    int fd = sys_open("st_file", O_CREAT | O_TRUNC | O_RDWR);
    EXPECT(fd >= 0, "open = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_write(fd, "0123456789", 10), 10);
    EXPECT_EQ(sys_lseek(fd, 0, SEEK_CUR), 10);
    EXPECT_EQ(sys_lseek(fd, 0, SEEK_SET), 0);
    EXPECT_EQ(sys_read(fd, buf, sizeof buf), 10); /* short read at end of file */
    EXPECT(memcmp(buf, "0123456789", 10) == 0, "contents");
    EXPECT_EQ(sys_read(fd, buf, sizeof buf), 0);
    EXPECT_EQ(sys_close(fd), 0);
    EXPECT_EQ(sys_stat("st_file", &st), 0);
    EXPECT(st.size == 10 && st.kind == 1, "stat size %lu kind %lu", st.size, st.kind);
    /* O_CREAT on an existing file without O_TRUNC keeps its contents (and inode) */
    fd = sys_open("st_file", O_CREAT | O_RDWR);
    EXPECT(fd >= 0, "open = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_read(fd, buf, sizeof buf), 10);
    EXPECT(memcmp(buf, "0123456789", 10) == 0, "contents after O_CREAT without O_TRUNC");
    sys_close(fd);
    EXPECT_EQ(sys_stat("st_file", &st2), 0);
    EXPECT(st2.ino == st.ino && st2.size == 10, "ino %lu -> %lu, size %lu", st.ino, st2.ino, st2.size);
    /* O_APPEND writes at the end whatever the offset */
    fd = sys_open("st_file", O_WRONLY | O_APPEND);
    EXPECT(fd >= 0, "open O_APPEND = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_write(fd, "ab", 2), 2);
    sys_lseek(fd, 0, SEEK_SET);
    EXPECT_EQ(sys_write(fd, "cd", 2), 2);
    sys_close(fd);
    EXPECT_EQ(file_size("st_file"), 14);
    fd = sys_open("st_file", O_RDONLY);
    EXPECT_EQ(sys_read(fd, buf, sizeof buf), 14);
    EXPECT(memcmp(buf, "0123456789abcd", 14) == 0, "contents after O_APPEND");
    sys_close(fd);
    /* O_TRUNC empties it */
    fd = sys_open("st_file", O_RDWR | O_TRUNC);
    EXPECT(fd >= 0, "open O_TRUNC = %d (%s)", fd, errname(fd));
    EXPECT_EQ(file_size("st_file"), 0);
    EXPECT_EQ(sys_read(fd, buf, sizeof buf), 0);
    sys_close(fd);
    /* unlink, then it is gone */
    EXPECT_EQ(sys_unlink("st_file"), 0);
    EXPECT_EQ(sys_stat("st_file", &st), -ENOENT);
    EXPECT_EQ(sys_open("st_file", O_RDONLY), -ENOENT);
    EXPECT_EQ(sys_unlink("st_file"), -ENOENT);
    return 1;
}

static int check_lseek(void)
{
    char buf[8];
    EXPECT_EQ(make_file("st_seek", "abcdefghij", 10), 0);
    int fd = sys_open("st_seek", O_RDWR);
    EXPECT(fd >= 0, "open = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_lseek(fd, 0, SEEK_END), 10);
    EXPECT_EQ(sys_lseek(fd, -3, SEEK_END), 7);
    EXPECT_EQ(sys_read(fd, buf, 8), 3);
    EXPECT(memcmp(buf, "hij", 3) == 0, "read after SEEK_END -3: %.3s", buf);
    EXPECT_EQ(sys_lseek(fd, -5, SEEK_CUR), 5);
    EXPECT_EQ(sys_read(fd, buf, 1), 1);
    EXPECT_EQ(buf[0], 'f');
    EXPECT_EQ(sys_lseek(fd, -1, SEEK_SET), -EINVAL);
    EXPECT_EQ(sys_lseek(fd, -100, SEEK_END), -EINVAL);
    EXPECT_EQ(sys_lseek(fd, 0, 7), -EINVAL);
    EXPECT_EQ(sys_lseek(fd, 0, SEEK_CUR), 6); /* failed seeks moved nothing */
    EXPECT_EQ(sys_lseek(fd, 20, SEEK_SET), 20); /* past the end: allowed */
    EXPECT_EQ(sys_read(fd, buf, 4), 0);
    sys_close(fd);
    EXPECT_EQ(sys_unlink("st_seek"), 0);
    return 1;
}

static int check_big_file(void)
{
    /* a 10000-byte transfer across page boundaries, from and into the heap */
    unsigned long b0 = sys_brk(0);
    unsigned long want = b0 + 3 * 4096;
    EXPECT_EQ(sys_brk(want), want);
    unsigned char *src = (unsigned char *)b0, *dst = src + 10000;
    EXPECT(want - b0 >= 10000 + 2048, "heap");
    struct rng r;
    rng_seed(&r, 42);
    for (int i = 0; i < 10000; i++) src[i] = (unsigned char)rng_next(&r);
    int fd = sys_open("st_big", O_CREAT | O_TRUNC | O_RDWR);
    EXPECT(fd >= 0, "open = %d (%s)", fd, errname(fd));
    EXPECT_EQ(sys_write(fd, src, 10000), 10000);
    EXPECT_EQ(file_size("st_big"), 10000);
    EXPECT_EQ(sys_lseek(fd, 4000, SEEK_SET), 4000);
    EXPECT_EQ(sys_read(fd, dst, 2048), 2048);
    EXPECT(memcmp(dst, src + 4000, 2048) == 0, "contents at 4000");
    sys_close(fd);
    EXPECT_EQ(sys_unlink("st_big"), 0);
    EXPECT_EQ(sys_brk(b0), b0);
    return 1;
}

static int find_entry(const char *name, struct h_dirent *out)
{
    struct h_dirent d;
    for (unsigned long i = 0; i < 4096; i++) {
        int r = sys_readdir(i, &d);
        if (r != 1) return 0;
        const char *n = d.name[0] == '/' ? d.name + 1 : d.name;
        if (strcmp(n, name) == 0) {
            *out = d;
            return 1;
        }
    }
    return 0;
}

static int check_readdir(void)
{
    static const char *const names[3] = {"st_dir0", "st_dir1", "st_dir2"};
    for (int i = 0; i < 3; i++) EXPECT_EQ(make_file(names[i], "xyz", (unsigned long)i), 0);
    unsigned long total = 0;
    struct h_dirent d;
    for (;; total++) {
        int r = sys_readdir(total, &d);
        if (r == 0) break;
        EXPECT(r == 1, "readdir(%lu) = %d (%s)", total, r, errname(r));
        EXPECT(total < 4096, "readdir never ends");
        EXPECT(memchr_ok(d.name), "readdir(%lu): name not NUL-terminated", total);
    }
    EXPECT(total >= 3, "readdir lists %lu entries", total);
    EXPECT_EQ(sys_readdir(total + 100, &d), 0);
    for (int i = 0; i < 3; i++) {
        struct h_stat st;
        EXPECT(find_entry(names[i], &d), "%s not listed", names[i]);
        EXPECT_EQ(sys_stat(names[i], &st), 0);
        EXPECT(d.size == (unsigned long)i && d.ino == st.ino, "%s: readdir size %lu ino %lu, stat size %lu ino %lu",
               names[i], d.size, d.ino, st.size, st.ino);
    }
    for (int i = 0; i < 3; i++) EXPECT_EQ(sys_unlink(names[i]), 0);
    for (int i = 0; i < 3; i++) EXPECT(!find_entry(names[i], &d), "%s still listed after unlink", names[i]);
    return 1;
}

static int check_pipe(void)
{
    int fds[2] = {-1, -1};
    char buf[16];
    EXPECT_EQ(sys_pipe(fds), 0);
    EXPECT(fds[0] >= 0 && fds[1] >= 0 && fds[0] != fds[1], "pipe fds %d %d", fds[0], fds[1]);
    EXPECT_EQ(sys_write(fds[1], "hello", 5), 5);
    EXPECT_EQ(sys_read(fds[0], buf, 3), 3);
    EXPECT_EQ(sys_read(fds[0], buf + 3, sizeof buf), 2); /* returns what is there */
    EXPECT(memcmp(buf, "hello", 5) == 0, "pipe contents");
    EXPECT_EQ(sys_read(fds[1], buf, 1), -EBADF);  /* write end */
    EXPECT_EQ(sys_write(fds[0], "x", 1), -EBADF); /* read end */
    /* writer closed: the data still comes out, then end of file */
    EXPECT_EQ(sys_write(fds[1], "bye", 3), 3);
    EXPECT_EQ(sys_close(fds[1]), 0);
    EXPECT_EQ(sys_read(fds[0], buf, sizeof buf), 3);
    EXPECT_EQ(sys_read(fds[0], buf, sizeof buf), 0);
    EXPECT_EQ(sys_read(fds[0], buf, sizeof buf), 0);
    EXPECT_EQ(sys_close(fds[0]), 0);
    /* reader closed: -EPIPE */
    EXPECT_EQ(sys_pipe(fds), 0);
    EXPECT_EQ(sys_close(fds[0]), 0);
    EXPECT_EQ(sys_write(fds[1], "x", 1), -EPIPE);
    EXPECT_EQ(sys_close(fds[1]), 0);
    return 1;
}

static int check_pipe_capacity(void)
{
    /* more than one page through a pipe, written and read in odd chunks, with no reader blocking:
     * write what fits first (at least one byte must fit in an empty pipe) */
    int fds[2];
    EXPECT_EQ(sys_pipe(fds), 0);
    char wbuf[100], rbuf[100];
    unsigned long sent = 0, recvd = 0;
    while (recvd < 6000) {
        if (sent < 6000 && sent - recvd < 100) {
            for (int i = 0; i < 37; i++) wbuf[i] = (char)(sent + (unsigned long)i);
            EXPECT_EQ(sys_write(fds[1], wbuf, 37), 37);
            sent += 37;
        }
        long n = sys_read(fds[0], rbuf, 53);
        EXPECT(n > 0, "read = %ld (%s)", n, errname(n));
        for (long i = 0; i < n; i++) EXPECT(rbuf[i] == (char)(recvd + (unsigned long)i), "byte %lu", recvd + (unsigned long)i);
        recvd += (unsigned long)n;
        if (sent >= 6000 && recvd >= sent) break;
    }
    sys_close(fds[0]);
    sys_close(fds[1]);
    return 1;
}

static int check_spawn_wait(void)
{
    int st = -1;
    int pid = sys_spawn("true_prog", 7);
    EXPECT(pid > 0, "spawn(true_prog) = %d (%s)", pid, errname(pid));
    EXPECT(pid != sys_getpid(), "child pid = parent pid");
    EXPECT_EQ(sys_wait(pid, &st), pid);
    EXPECT_EQ(st, 7); /* main's return value, through crt0 and SYS_EXIT */
    EXPECT_EQ(sys_wait(pid, &st), -ECHILD); /* already reaped */
    EXPECT_EQ(sys_wait(sys_getpid(), &st), -ECHILD);
    EXPECT_EQ(sys_wait(999999, &st), -ECHILD);
    /* several children, reaped in reverse order */
    int pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = sys_spawn("true_prog", (unsigned long)(10 + i));
        EXPECT(pids[i] > 0, "spawn = %d (%s)", pids[i], errname(pids[i]));
    }
    EXPECT(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2], "duplicate pids");
    for (int i = 2; i >= 0; i--) {
        EXPECT_EQ(sys_wait(pids[i], &st), pids[i]);
        EXPECT_EQ(st, 10 + i);
    }
    return 1;
}

static int check_fd_inheritance(void)
{
    int to[2], from[2];
    char c = 0;
    EXPECT_EQ(sys_pipe(to), 0);
    EXPECT_EQ(sys_pipe(from), 0);
    unsigned long arg = (unsigned long)to[0] | (unsigned long)from[1] << 16 | (unsigned long)to[1] << 32 |
                        (unsigned long)from[0] << 48;
    int pid = sys_spawn("pipe_echo", arg);
    EXPECT(pid > 0, "spawn(pipe_echo) = %d (%s)", pid, errname(pid));
    sys_close(to[0]);
    sys_close(from[1]);
    EXPECT_EQ(sys_write(to[1], "q", 1), 1);
    EXPECT_EQ(sys_read(from[0], &c, 1), 1); /* blocks until the child echoes */
    EXPECT_EQ(c, 'q');
    EXPECT_EQ(sys_write(to[1], "rs", 2), 2);
    char two[2] = {0, 0};
    long got = 0;
    while (got < 2) {
        long n = sys_read(from[0], two + got, (unsigned long)(2 - got));
        EXPECT(n > 0, "read = %ld (%s)", n, errname(n));
        got += n;
    }
    EXPECT(two[0] == 'r' && two[1] == 's', "echo %c%c", two[0], two[1]);
    EXPECT_EQ(sys_close(to[1]), 0); /* child: end of file, exits 0 */
    int st = -1;
    EXPECT_EQ(sys_wait(pid, &st), pid);
    EXPECT_EQ(st, 0);
    EXPECT_EQ(sys_read(from[0], &c, 1), 0); /* its write end died with it */
    sys_close(from[0]);
    return 1;
}

static int check_brk(void)
{
    unsigned long b0 = sys_brk(0);
    EXPECT((long)b0 > 0 && b0 >= H_USER_BASE && b0 < H_USER_TOP, "brk(0) = 0x%lx", b0);
    EXPECT_EQ(sys_brk(0), b0);
    unsigned long page0 = (b0 + 4095) & ~4095UL; /* first page entirely above b0 */
    unsigned long want = page0 + 3 * 4096 + 123;
    EXPECT_EQ(sys_brk(want), want);
    EXPECT_EQ(sys_brk(0), want);
    volatile unsigned char *p = (unsigned char *)b0;
    for (unsigned long a = 0; a < want - b0; a += 512) EXPECT(p[a] == 0, "heap byte 0x%lx not zero", b0 + a);
    for (unsigned long a = 0; a < want - b0; a += 512) p[a] = 0x5A;
    EXPECT(p[want - b0 - 1] == 0, "last heap byte");
    p[want - b0 - 1] = 0x5A;
    /* shrink: pages wholly above the new end are given back */
    EXPECT_EQ(sys_brk(b0), b0);
    EXPECT_EQ(sys_brk(0), b0);
    EXPECT_EQ(sys_brk(want), want);
    volatile unsigned char *q = (unsigned char *)page0;
    for (unsigned long a = 0; a < want - page0; a += 512) EXPECT(q[a] == 0, "regrown heap byte 0x%lx not zero", page0 + a);
    EXPECT_EQ(sys_brk(b0), b0);
    /* impossible requests fail and leave the end alone */
    unsigned long r = sys_brk(H_USER_TOP + 4096);
    EXPECT(r != H_USER_TOP + 4096, "brk beyond the user half succeeded");
    EXPECT_EQ(sys_brk(0), b0);
    r = sys_brk(0xFFFFFFFF80000000UL);
    EXPECT(r != 0xFFFFFFFF80000000UL, "brk into the kernel half succeeded");
    EXPECT_EQ(sys_brk(0), b0);
    return 1;
}

static int check_enosys(void)
{
    EXPECT_EQ(syscall0(SYS_COUNT), -ENOSYS);
    EXPECT_EQ(syscall0(SYS_COUNT + 1), -ENOSYS);
    EXPECT_EQ(syscall0(1000), -ENOSYS);
    EXPECT_EQ(syscall0(0x7FFFFFFF), -ENOSYS);
    EXPECT_EQ(syscall0(-1), -ENOSYS);
    EXPECT_EQ(syscall0((long)0x100000000UL + SYS_GETPID), -ENOSYS); /* upper bits are not ignored */
    /* SYS_DBT: -ENOSYS without a DBT, else the state (0 or 1); unknown commands are -EINVAL */
    long q = sys_dbt(DBT_QUERY, 0);
    if (q != -ENOSYS) EXPECT(q == 0 || q == 1, "sys_dbt(DBT_QUERY) = %ld", q);
    EXPECT_EQ(sys_dbt(DBT_OFF + 1, 0), -EINVAL);
    EXPECT_EQ(sys_dbt(-1, 0), -EINVAL);
    return 1;
}

static int check_fd_limit(void)
{
    /* open until the table is full (-EMFILE); every fd comes back after close */
    EXPECT_EQ(make_file("st_many", "m", 1), 0);
    static int fds[1024];
    int n = 0, last = 0;
    while (n < (int)ARRAY_SIZE(fds)) {
        last = sys_open("st_many", O_RDONLY);
        if (last < 0) break;
        fds[n++] = last;
    }
    int err = last < 0 ? last : 0;
    for (int i = 0; i < n; i++) EXPECT_EQ(sys_close(fds[i]), 0);
    EXPECT(err == 0 || err == -EMFILE, "open #%d = %d (%s), expected -EMFILE", n + 1, err, errname(err));
    EXPECT(n >= 8, "only %d fds", n);
    int fd = sys_open("st_many", O_RDONLY);
    EXPECT(fd >= 0, "open after closing all = %d (%s)", fd, errname(fd));
    sys_close(fd);
    EXPECT_EQ(sys_unlink("st_many"), 0);
    printf("selftest: (fd table: %d files opened, then %s)\n", n, err ? errname(err) : "no limit hit");
    return 1;
}

static int check_user_faults(void)
{
    static const char *const what[] = {"null read", "write to text", "ud2", "hlt", "divide by zero",
                                       "kernel read", "non-canonical read", "(nx)", "unmapped read"};
    for (unsigned long m = 0; m < ARRAY_SIZE(what); m++) {
        if (m == 7) continue; /* NX is the kernel's choice */
        int st = 0;
        int pid = sys_spawn("fault_prog", m);
        EXPECT(pid > 0, "spawn(fault_prog, %lu) = %d (%s)", m, pid, errname(pid));
        EXPECT_EQ(sys_wait(pid, &st), pid);
        EXPECT(st != 0, "fault_prog %s: exit status 0, not killed", what[m]);
    }
    /* the kernel survived, and so did we */
    EXPECT(sys_getpid() > 0, "getpid");
    return 1;
}

int main(unsigned long arg)
{
    self_arg = arg;
    run("entry", check_entry);
    run("registers", check_registers);
    run("getpid_yield", check_getpid_yield);
    run("getcpu", check_getcpu);
    run("console", check_console);
    run("rdtsc", check_rdtsc);
    run("bad_fd", check_bad_fd);
    run("access_modes", check_access_modes);
    run("efault_write", check_efault_write);
    run("efault_read", check_efault_read);
    run("efault_args", check_efault_args);
    run("enoent", check_enoent);
    run("names", check_names);
    run("file_rw", check_file_rw);
    run("lseek", check_lseek);
    run("big_file", check_big_file);
    run("readdir", check_readdir);
    run("pipe", check_pipe);
    run("pipe_stream", check_pipe_capacity);
    run("spawn_wait", check_spawn_wait);
    run("fd_inheritance", check_fd_inheritance);
    run("brk", check_brk);
    run("enosys", check_enosys);
    run("fd_limit", check_fd_limit);
    if (!(arg & 1)) run("user_faults", check_user_faults);
    struct result r;
    result_begin(&r, "selftest");
    result_u(&r, "checks", (unsigned long)n_checks);
    result_u(&r, "failed", (unsigned long)n_failed);
    result_end(&r);
    return n_failed ? 1 : 0;
}
