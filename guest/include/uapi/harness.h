/* The user/kernel ABI of the harness guest kernel (guest/kernel) and its user programs
 * (guest/user). Shared by both sides; plain C, no libc.
 *
 * System calls: `syscall` with the number in rax and arguments in rdi, rsi, rdx, r10, r8, r9
 * (the Linux x86-64 convention); the result comes back in rax; a negative result is -errno.
 * rcx and r11 are clobbered by the instruction itself. */
#ifndef HARNESS_UAPI_H
#define HARNESS_UAPI_H

#define SYS_READ      0   /* long read(int fd, void *buf, unsigned long n)                           */
#define SYS_WRITE     1   /* long write(int fd, const void *buf, unsigned long n)                    */
#define SYS_OPEN      2   /* int open(const char *path, int flags)                                   */
#define SYS_CLOSE     3   /* int close(int fd)                                                       */
#define SYS_STAT      4   /* int stat(const char *path, struct h_stat *st)                           */
#define SYS_UNLINK    5   /* int unlink(const char *path)                                            */
#define SYS_READDIR   6   /* int readdir(unsigned long index, struct h_dirent *d): 1 entry, 0 end    */
#define SYS_PIPE      7   /* int pipe(int fds[2]): fds[0] read end, fds[1] write end                 */
#define SYS_SPAWN     8   /* int spawn(const char *program, unsigned long arg): pid; the child gets
                             arg in rdi at its entry point (program = a bundled program's name) and
                             inherits the parent's open file descriptors, same numbers (like
                             fork+exec), so pipes can be handed to children                          */
#define SYS_EXIT      9   /* void exit(int status)                                                   */
#define SYS_WAIT     10   /* int wait(int pid, int *status): pid, or -ECHILD                         */
#define SYS_YIELD    11   /* int yield(void)                                                         */
#define SYS_GETPID   12   /* int getpid(void)                                                        */
#define SYS_BRK      13   /* unsigned long brk(unsigned long end): sets the heap end (0: query);
                             returns the new end; heap pages are demand-zero                         */
#define SYS_GETCPU   14   /* int getcpu(void): the APIC ID this call ran on                          */
#define SYS_DBT      15   /* long dbt(long cmd, long arg): the kernel DBT (docs/dbt.md): DBT_QUERY
                             returns 1 (translating) or 0; DBT_ON / DBT_OFF switch every CPU on or
                             off and return the previous state; -ENOSYS when no DBT is attached   */
#define SYS_LSEEK    16   /* long lseek(int fd, long offset, int whence): SEEK_SET 0, CUR 1, END 2   */
#define SYS_SHUTDOWN 17   /* void shutdown(int status): stop the machine (port 0xF4) with status     */
#define SYS_COUNT    18

#define DBT_QUERY 0
#define DBT_ON    1
#define DBT_OFF   2

/* open flags */
#define O_RDONLY   0
#define O_WRONLY   1
#define O_RDWR     2
#define O_CREAT    0x40
#define O_TRUNC    0x200
#define O_APPEND   0x400

/* errno values (Linux numbering) */
#define EPERM    1
#define ENOENT   2
#define EIO      5
#define EBADF    9
#define ECHILD  10
#define EAGAIN  11
#define ENOMEM  12
#define EFAULT  14
#define EEXIST  17
#define EISDIR  21
#define EINVAL  22
#define EMFILE  24
#define EFBIG   27
#define ENOSPC  28
#define EPIPE   32
#define ENAMETOOLONG 36
#define ENOSYS  38

#define H_NAME_MAX 31      /* file names: flat namespace, "/name" or "name", at most 31 bytes */

struct h_stat {
    unsigned long size;    /* bytes */
    unsigned long ino;     /* stable per file while it exists */
    unsigned long kind;    /* 1 regular file, 2 pipe, 3 console */
};

struct h_dirent {
    unsigned long ino;
    unsigned long size;
    char name[H_NAME_MAX + 1];
};

/* fd 1 and 2 are the console (write only) in every process; fd 0 reads as end of file. */

/* User programs: static ELF64 executables linked at H_USER_BASE, entered at e_entry with
 * rdi = the spawn argument, rsp = the top of a user stack (16-byte aligned); they must end with
 * SYS_EXIT. The user half of every address space is [0, H_USER_TOP). */
#define H_USER_BASE  0x400000UL
#define H_USER_TOP   0x800000000000UL
#define H_USER_STACK_TOP 0x7FFFFFF00000UL

/* Result lines (console, one per measurement), stable and machine-readable:
 *   result <workload> <key>=<value> <key>=<value> ...
 * e.g. "result null_syscall iterations=10000 insns_per_op=57"; guest time is rdtsc. */

#endif
