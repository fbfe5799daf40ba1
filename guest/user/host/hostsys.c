/* The harness ABI on top of Linux system calls, so the user programs can run natively as
 * ordinary Linux processes (make -C guest/user host-test). No libc: raw Linux syscalls only.
 *
 * The flat file system is the current directory (paths "/x" and "x" both mean ./x); spawn is
 * fork + execve of the sibling host binary; fds are inherited by fork; a child killed by a
 * signal reports status 128 + signal. User pointers are checked with process_vm_readv/writev,
 * so bad pointers give -EFAULT instead of crashing the shim. */
#include "ulib.h"

#define L_READ 0
#define L_WRITE 1
#define L_OPEN 2
#define L_CLOSE 3
#define L_STAT 4
#define L_LSEEK 8
#define L_BRK 12
#define L_PIPE 22
#define L_SCHED_YIELD 24
#define L_GETPID 39
#define L_FORK 57
#define L_EXECVE 59
#define L_WAIT4 61
#define L_UNLINK 87
#define L_GETDENTS64 217
#define L_EXIT_GROUP 231
#define L_GETCPU 309
#define L_PROCESS_VM_READV 310
#define L_PROCESS_VM_WRITEV 311
#define L_ACCESS 21

static long lsys(long n, long a, long b, long c, long d, long e, long f)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return r;
}

struct iovec_ {
    void *base;
    unsigned long len;
};

static long self_pid;

/* copy between our own address space and a "user" pointer without faulting */
static long copy_in(void *dst, const void *user, unsigned long n)
{
    struct iovec_ l = {dst, n}, r = {(void *)user, n};
    long got = lsys(L_PROCESS_VM_READV, self_pid, (long)&l, 1, (long)&r, 1, 0);
    return got == (long)n ? 0 : -EFAULT;
}
static long copy_out(void *user, const void *src, unsigned long n)
{
    struct iovec_ l = {(void *)src, n}, r = {user, n};
    long got = lsys(L_PROCESS_VM_WRITEV, self_pid, (long)&l, 1, (long)&r, 1, 0);
    return got == (long)n ? 0 : -EFAULT;
}

/* user path -> "./name" in buf; -EFAULT, -ENAMETOOLONG */
static long get_path(char *buf, const char *user)
{
    char name[H_NAME_MAX + 2];
    unsigned i = 0;
    for (;; i++) {
        if (i == sizeof name) return -ENAMETOOLONG;
        if (copy_in(&name[i], user + i, 1)) return -EFAULT;
        if (!name[i]) break;
    }
    const char *n = name[0] == '/' ? name + 1 : name;
    if (strlen(n) > H_NAME_MAX) return -ENAMETOOLONG;
    if (!*n) return -ENOENT;
    for (const char *c = n; *c; c++)
        if (*c == '/') return -ENOENT;
    strcpy(buf, "./");
    strcat(buf, n);
    return 0;
}

/* Linux struct stat (x86-64) */
struct lstat_ {
    unsigned long dev, ino, nlink;
    unsigned int mode, uid, gid, pad0;
    unsigned long rdev;
    long size, blksize, blocks;
    unsigned long times[6];
    long unused[3];
};

static long h_stat(const char *upath, void *ust)
{
    char path[H_NAME_MAX + 4];
    long r = get_path(path, upath);
    if (r) return r;
    struct lstat_ ls;
    r = lsys(L_STAT, (long)path, (long)&ls, 0, 0, 0, 0);
    if (r) return r;
    struct h_stat st = {(unsigned long)ls.size, ls.ino, (ls.mode & 0170000) == 0010000 ? 2UL : 1UL};
    return copy_out(ust, &st, sizeof st);
}

struct ldirent_ {
    unsigned long ino;
    long off;
    unsigned short reclen;
    unsigned char type;
    char name[];
};

static long h_readdir(unsigned long index, void *ud)
{
    int fd = (int)lsys(L_OPEN, (long)".", 0x10000 /* O_DIRECTORY */, 0, 0, 0, 0);
    if (fd < 0) return fd;
    static char buf[8192];
    unsigned long seen = 0;
    long result = 0;
    for (;;) {
        long n = lsys(L_GETDENTS64, fd, (long)buf, sizeof buf, 0, 0, 0);
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            struct ldirent_ *e = (struct ldirent_ *)(buf + off);
            off += e->reclen;
            if (e->type != 8 /* DT_REG */ || strlen(e->name) > H_NAME_MAX) continue;
            if (seen++ != index) continue;
            struct h_dirent d;
            memset(&d, 0, sizeof d);
            strcpy(d.name, e->name);
            char path[H_NAME_MAX + 4] = "./";
            strcat(path, e->name);
            struct lstat_ ls;
            if (lsys(L_STAT, (long)path, (long)&ls, 0, 0, 0, 0) == 0) d.size = (unsigned long)ls.size;
            d.ino = e->ino;
            result = copy_out(ud, &d, sizeof d);
            if (result == 0) result = 1;
            goto done;
        }
    }
done:
    lsys(L_CLOSE, fd, 0, 0, 0, 0, 0);
    return result;
}

static char exe_dir[256];

static long h_spawn(const char *uname, unsigned long arg)
{
    char name[H_NAME_MAX + 4];
    long r = get_path(name, uname); /* "./prog" */
    if (r) return r;
    char path[320];
    strcpy(path, exe_dir);
    strcat(path, name + 1);
    if (lsys(L_ACCESS, (long)path, 1 /* X_OK */, 0, 0, 0, 0)) return -ENOENT;
    char hex[24];
    snprintf(hex, sizeof hex, "%lx", arg);
    long pid = lsys(L_FORK, 0, 0, 0, 0, 0, 0);
    if (pid) return pid;
    char *argv[] = {path, hex, NULL};
    char *envp[] = {NULL};
    lsys(L_EXECVE, (long)path, (long)argv, (long)envp, 0, 0, 0);
    lsys(L_EXIT_GROUP, 127, 0, 0, 0, 0, 0);
    return 0;
}

static long h_wait(long pid, void *ustatus)
{
    if (pid <= 0) return -ECHILD;
    int ws = 0;
    long r = lsys(L_WAIT4, pid, (long)&ws, 0, 0, 0, 0);
    if (r < 0) return r;
    int status = (ws & 0x7f) == 0 ? (ws >> 8) & 0xff : 128 + (ws & 0x7f);
    if (ustatus && copy_out(ustatus, &status, sizeof status)) return -EFAULT;
    return r;
}

long host_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    (void)d, (void)e, (void)f;
    char path[H_NAME_MAX + 4];
    long r;
    switch ((unsigned long)n) {
    case SYS_READ: return lsys(L_READ, a, b, c, 0, 0, 0);
    case SYS_WRITE: return lsys(L_WRITE, a, b, c, 0, 0, 0);
    case SYS_OPEN:
        if ((r = get_path(path, (const char *)a))) return r;
        return lsys(L_OPEN, (long)path, b & (O_RDWR | O_WRONLY | O_CREAT | O_TRUNC | O_APPEND), 0644, 0, 0, 0);
    case SYS_CLOSE: return lsys(L_CLOSE, a, 0, 0, 0, 0, 0);
    case SYS_STAT: return h_stat((const char *)a, (void *)b);
    case SYS_UNLINK:
        if ((r = get_path(path, (const char *)a))) return r;
        return lsys(L_UNLINK, (long)path, 0, 0, 0, 0, 0);
    case SYS_READDIR: return h_readdir((unsigned long)a, (void *)b);
    case SYS_PIPE: {
        int fds[2];
        if (copy_out((void *)a, fds, sizeof fds)) return -EFAULT;
        r = lsys(L_PIPE, (long)fds, 0, 0, 0, 0, 0);
        if (r) return r;
        return copy_out((void *)a, fds, sizeof fds);
    }
    case SYS_SPAWN: return h_spawn((const char *)a, (unsigned long)b);
    case SYS_EXIT: return lsys(L_EXIT_GROUP, a, 0, 0, 0, 0, 0);
    case SYS_WAIT: return h_wait(a, (void *)b);
    case SYS_YIELD: return lsys(L_SCHED_YIELD, 0, 0, 0, 0, 0, 0);
    case SYS_GETPID: return lsys(L_GETPID, 0, 0, 0, 0, 0, 0);
    case SYS_BRK: {
        unsigned long cur = (unsigned long)lsys(L_BRK, 0, 0, 0, 0, 0, 0);
        if (a == 0) return (long)cur;
        if ((unsigned long)a >= H_USER_TOP) return (long)cur;
        return lsys(L_BRK, a, 0, 0, 0, 0, 0);
    }
    case SYS_GETCPU: {
        unsigned cpu = 0;
        r = lsys(L_GETCPU, (long)&cpu, 0, 0, 0, 0, 0);
        return r ? r : (long)cpu;
    }
    case SYS_LSEEK: return lsys(L_LSEEK, a, b, c, 0, 0, 0);
    case SYS_SHUTDOWN: return lsys(L_EXIT_GROUP, a, 0, 0, 0, 0, 0);
    case SYS_DBT: return (unsigned long)a > DBT_OFF ? -EINVAL : -ENOSYS; /* the kernel without a DBT */
    default: return -ENOSYS;
    }
}

void host_start(unsigned long *sp) __attribute__((noreturn));
void host_start(unsigned long *sp)
{
    self_pid = lsys(L_GETPID, 0, 0, 0, 0, 0, 0);
    /* write to a pipe without reader: -EPIPE, not SIGPIPE */
    struct { unsigned long handler, flags, restorer, mask; } ign = {1 /* SIG_IGN */, 0, 0, 0};
    lsys(13 /* rt_sigaction */, 13 /* SIGPIPE */, (long)&ign, 0, 8, 0, 0);
    long argc = (long)sp[0];
    char **argv = (char **)(sp + 1);
    /* exe_dir = dirname(argv[0]) + "/" */
    const char *a0 = argv[0];
    long slash = -1;
    for (long i = 0; a0[i]; i++)
        if (a0[i] == '/') slash = i;
    if (slash < 0) strcpy(exe_dir, "./");
    else {
        memcpy(exe_dir, a0, (unsigned long)slash + 1);
        exe_dir[slash + 1] = 0;
    }
    unsigned long arg = 0;
    if (argc > 1)
        for (const char *p = argv[1]; *p; p++)
            arg = arg * 16 + (unsigned long)(*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
    ulib_entry_arg = arg;
    /* selftest checks that rsp was 16-byte aligned at entry and within the user half: true here */
    int status = main(arg);
    lsys(L_EXIT_GROUP, status, 0, 0, 0, 0, 0);
    for (;;) {}
}
