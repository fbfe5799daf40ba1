/* ulib: the tiny freestanding library of the harness user programs (guest/user).
 *
 * System call wrappers follow guest/include/uapi/harness.h: number in rax, arguments in rdi, rsi,
 * rdx, r10, r8, r9, result in rax (negative = -errno). Only rax, rcx and r11 are assumed clobbered
 * (the Linux convention); selftest checks that the kernel preserves every other register. */
#ifndef ULIB_H
#define ULIB_H

#include <stdarg.h>
#include "../../include/uapi/harness.h"

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned long uint64_t;
typedef unsigned int uint32_t;
typedef unsigned char uint8_t;

#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- raw system calls ---- */
#ifdef ULIB_HOST
/* host-test build: the ABI emulated on Linux (host/hostsys.c) */
long host_syscall(long n, long a, long b, long c, long d, long e, long f);
static inline long syscall0(long n) { return host_syscall(n, 0, 0, 0, 0, 0, 0); }
static inline long syscall1(long n, long a) { return host_syscall(n, a, 0, 0, 0, 0, 0); }
static inline long syscall2(long n, long a, long b) { return host_syscall(n, a, b, 0, 0, 0, 0); }
static inline long syscall3(long n, long a, long b, long c) { return host_syscall(n, a, b, c, 0, 0, 0); }
static inline long syscall6(long n, long a, long b, long c, long d, long e, long f) { return host_syscall(n, a, b, c, d, e, f); }
#else
static inline long syscall0(long n)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n) : "rcx", "r11", "memory");
    return r;
}
static inline long syscall1(long n, long a)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a) : "rcx", "r11", "memory");
    return r;
}
static inline long syscall2(long n, long a, long b)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}
static inline long syscall3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static inline long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}
#endif

/* ---- one wrapper per SYS_* ---- */
static inline long sys_read(int fd, void *buf, size_t n) { return syscall3(SYS_READ, fd, (long)buf, (long)n); }
static inline long sys_write(int fd, const void *buf, size_t n) { return syscall3(SYS_WRITE, fd, (long)buf, (long)n); }
static inline int sys_open(const char *path, int flags) { return (int)syscall2(SYS_OPEN, (long)path, flags); }
static inline int sys_close(int fd) { return (int)syscall1(SYS_CLOSE, fd); }
static inline int sys_stat(const char *path, struct h_stat *st) { return (int)syscall2(SYS_STAT, (long)path, (long)st); }
static inline int sys_unlink(const char *path) { return (int)syscall1(SYS_UNLINK, (long)path); }
static inline int sys_readdir(unsigned long index, struct h_dirent *d) { return (int)syscall2(SYS_READDIR, (long)index, (long)d); }
static inline int sys_pipe(int fds[2]) { return (int)syscall1(SYS_PIPE, (long)fds); }
static inline int sys_spawn(const char *program, unsigned long arg) { return (int)syscall2(SYS_SPAWN, (long)program, (long)arg); }
static inline __attribute__((noreturn)) void sys_exit(int status)
{
    syscall1(SYS_EXIT, status);
    for (;;) __asm__ volatile("" ::: "memory");
}
static inline int sys_wait(int pid, int *status) { return (int)syscall2(SYS_WAIT, pid, (long)status); }
static inline int sys_yield(void) { return (int)syscall0(SYS_YIELD); }
static inline int sys_getpid(void) { return (int)syscall0(SYS_GETPID); }
static inline unsigned long sys_brk(unsigned long end) { return (unsigned long)syscall1(SYS_BRK, (long)end); }
static inline int sys_getcpu(void) { return (int)syscall0(SYS_GETCPU); }
static inline long sys_dbt(long cmd, long arg) { return syscall2(SYS_DBT, cmd, arg); }
static inline long sys_lseek(int fd, long offset, int whence) { return syscall3(SYS_LSEEK, fd, offset, whence); }
static inline __attribute__((noreturn)) void sys_shutdown(int status)
{
    syscall1(SYS_SHUTDOWN, status);
    for (;;) __asm__ volatile("" ::: "memory");
}

#define SEEK_SET 0
#define SEEK_CUR 1
#define SEEK_END 2

/* ---- time: guest time is the retired-instruction count ---- */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((uint64_t)hi << 32) | lo;
}

/* ---- strings (string.c); gcc may emit memcpy/memset/memmove/memcmp calls itself ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strcpy(char *dst, const char *src);
char *strcat(char *dst, const char *src);

/* ---- formatted output (printf.c): one write(2) per call, so lines of different processes do
 * not interleave mid-line. %d %i %u %ld %li %lu %x %lx %p %s %c %%, flags '-' '0', width. ---- */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int dprintf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int puts(const char *s); /* writes s and a newline */

/* ---- result lines: "result <workload> <key>=<value> ..." written with one write(2) ---- */
struct result {
    char buf[512];
    size_t len;
};
void result_begin(struct result *r, const char *workload);
void result_u(struct result *r, const char *key, unsigned long value);   /* key=123      */
void result_d(struct result *r, const char *key, long value);            /* key=-5       */
void result_x64(struct result *r, const char *key, unsigned long value); /* key=0x%016lx */
void result_s(struct result *r, const char *key, const char *value);     /* key=word     */
void result_end(struct result *r);                                       /* newline+write */

/* ---- deterministic PRNG: xorshift64* ---- */
struct rng {
    uint64_t s;
};
void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
uint64_t rng_below(struct rng *r, uint64_t n); /* [0, n), n > 0 */

/* ---- FNV-1a 64 ---- */
#define FNV64_INIT 0xcbf29ce484222325UL
uint64_t fnv1a64(uint64_t h, const void *data, size_t n);

/* ---- misc ---- */
/* Prints "<prog>: FAILED: <msg>" and exits with status 1. */
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
const char *errname(long err); /* "-ENOENT" for -2, etc.; "-E?" when unknown */

/* Set by crt0: the program's own name (from ULIB_PROG) and the stack pointer at entry. */
extern const char ulib_prog_name[];
extern unsigned long ulib_entry_rsp;
extern unsigned long ulib_entry_arg;

int main(unsigned long arg);

/* The program's own .c file (compiled with -DULIB_PROG_NAME="name") defines its name. */
#ifdef ULIB_PROG_NAME
const char ulib_prog_name[] = ULIB_PROG_NAME;
#endif

#endif
