/*
 * A RAM file system (flat namespace, files grow by pages), pipes, the console and the
 * per-process file descriptor syscalls. One global FS lock protects the namespace and file
 * contents; each pipe has its own lock and wait queues.
 */
#include "kernel.h"

#define MAX_INODES 128
#define FILE_MAX_PAGES 512             /* one page of page pointers: 2 MiB per file */
#define MAX_FILES 256
#define PIPE_SIZE PAGE_SIZE

enum { FK_FILE = 1, FK_PIPE = 2, FK_CONSOLE = 3 };

struct inode {
    int used;                      /* slot in use (linked or still open) */
    int linked;                    /* has a name */
    int opens;
    char name[H_NAME_MAX + 1];
    u64 size;
    u64 ino;
    u64 *pages;                    /* FILE_MAX_PAGES physical addresses (0 = hole) */
};

struct pipe {
    struct spinlock lock;
    u8 *buf;
    u64 rpos, wpos;                /* monotonic byte counters */
    int readers, writers;
    struct waitq rwait, wwait;
};

struct file {
    int used;                      /* slot taken (cleared only after the last close is done) */
    int kind;
    int flags;
    volatile int refs;
    u64 off;
    struct inode *inode;
    struct pipe *pipe;
    int write_end;
};

static struct spinlock fs_lock = SPINLOCK_INIT("fs");
static struct inode inodes[MAX_INODES];
static u64 next_ino = 1;
static struct file files[MAX_FILES];
static struct spinlock files_lock = SPINLOCK_INIT("files");

void fs_init(void) { console_file(); }

/* ---- file objects ---------------------------------------------------------------------- */

static struct file *file_alloc(int kind, int flags)
{
    struct file *r = NULL;
    spin_lock(&files_lock);
    for (int i = 0; i < MAX_FILES; i++) {
        if (!files[i].used) {
            r = &files[i];
            memset(r, 0, sizeof(*r));
            r->used = 1;
            r->refs = 1;
            r->kind = kind;
            r->flags = flags;
            break;
        }
    }
    spin_unlock(&files_lock);
    return r;
}

struct file *file_dup(struct file *f)
{
    if (f) {
        ASSERT(f->refs > 0);
        __atomic_fetch_add(&f->refs, 1, __ATOMIC_SEQ_CST);
    }
    return f;
}

struct file *console_file(void)
{
    static struct file *in, *out;
    if (!out) {
        in = file_alloc(FK_CONSOLE, O_RDONLY);
        out = file_alloc(FK_CONSOLE, O_WRONLY);
        ASSERT(in && out);
    }
    (void)in;
    return out;
}

static struct file *console_in(void)
{
    console_file();
    return &files[0];
}

static void file_free(struct file *f)
{
    spin_lock(&files_lock);
    ASSERT(f->used && f->refs == 0);
    f->used = 0;
    spin_unlock(&files_lock);
}

static void inode_free_locked(struct inode *ip)
{
    ASSERT(spin_held(&fs_lock));
    if (ip->pages) {
        for (int i = 0; i < FILE_MAX_PAGES; i++)
            if (ip->pages[i])
                pmm_free(ip->pages[i], 1);
        kfree_pages(ip->pages, 1);
    }
    memset(ip, 0, sizeof(*ip));
}

static void pipe_release(struct pipe *p, int write_end)
{
    spin_lock(&p->lock);
    if (write_end)
        p->writers--;
    else
        p->readers--;
    ASSERT(p->readers >= 0 && p->writers >= 0);
    int gone = p->readers == 0 && p->writers == 0;
    waitq_wake_all(&p->rwait, &p->lock);
    waitq_wake_all(&p->wwait, &p->lock);
    spin_unlock(&p->lock);
    if (gone) {
        kfree_pages(p->buf, 1);
        kfree_pages(p, 1);
    }
}

void file_close(struct file *f)
{
    if (!f)
        return;
    ASSERT(f->refs > 0);
    if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_SEQ_CST) != 0)
        return;
    if (f->kind == FK_PIPE) {
        pipe_release(f->pipe, f->write_end);
    } else if (f->kind == FK_FILE) {
        spin_lock(&fs_lock);
        struct inode *ip = f->inode;
        ASSERT(ip->opens > 0);
        ip->opens--;
        if (!ip->linked && ip->opens == 0)
            inode_free_locked(ip);
        spin_unlock(&fs_lock);
    } else {
        panic("console file closed for good");
    }
    file_free(f);
}

/* ---- fd table -------------------------------------------------------------------------- */

static struct file *fd_get(u64 fd)
{
    struct proc *p = current()->proc;
    if (!p || fd >= MAX_FDS)
        return NULL;
    return p->fds[fd];
}

static int fd_install(struct file *f)
{
    struct proc *p = current()->proc;
    for (int i = 0; i < MAX_FDS; i++) {
        if (!p->fds[i]) {
            p->fds[i] = f;
            return i;
        }
    }
    return -EMFILE;
}

/* ---- names ----------------------------------------------------------------------------- */

/* Copy a user path and reduce it to a flat name ("/name" or "name"). */
static long get_name(u64 upath, char *name)
{
    char buf[64];
    long n = strncpy_from_user(buf, (const char *)upath, sizeof(buf));
    if (n < 0)
        return n;
    const char *s = buf;
    if (*s == '/')
        s++, n--;
    if (n == 0)
        return -ENOENT;
    if (n > H_NAME_MAX)
        return -ENAMETOOLONG;
    for (long i = 0; i < n; i++)
        if (s[i] == '/')
            return -ENOENT;
    memcpy(name, s, (size_t)n + 1);
    return n;
}

static struct inode *lookup_locked(const char *name)
{
    for (int i = 0; i < MAX_INODES; i++)
        if (inodes[i].used && inodes[i].linked && strcmp(inodes[i].name, name) == 0)
            return &inodes[i];
    return NULL;
}

static void truncate_locked(struct inode *ip)
{
    for (int i = 0; i < FILE_MAX_PAGES; i++) {
        if (ip->pages[i]) {
            pmm_free(ip->pages[i], 1);
            ip->pages[i] = 0;
        }
    }
    ip->size = 0;
}

/* ---- syscalls -------------------------------------------------------------------------- */

long sys_open(u64 upath, u64 flags, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a2, (void)a3, (void)a4, (void)a5;
    char name[H_NAME_MAX + 1];
    long r = get_name(upath, name);
    if (r < 0)
        return r;
    int acc = (int)(flags & 3);
    if (acc == 3)
        return -EINVAL;
    struct file *f = file_alloc(FK_FILE, (int)flags);
    if (!f)
        return -EMFILE;
    spin_lock(&fs_lock);
    struct inode *ip = lookup_locked(name);
    if (!ip) {
        if (!(flags & O_CREAT)) {
            r = -ENOENT;
            goto fail;
        }
        for (int i = 0; i < MAX_INODES && !ip; i++)
            if (!inodes[i].used)
                ip = &inodes[i];
        if (!ip) {
            r = -ENOSPC;
            goto fail;
        }
        u64 *pages = kalloc_pages(1);
        if (!pages) {
            r = -ENOSPC;
            goto fail;
        }
        memset(ip, 0, sizeof(*ip));
        ip->used = 1;
        ip->linked = 1;
        ip->pages = pages;
        ip->ino = next_ino++;
        memcpy(ip->name, name, strlen(name) + 1);
    }
    if ((flags & O_TRUNC) && acc != O_RDONLY)
        truncate_locked(ip);
    ip->opens++;
    f->inode = ip;
    spin_unlock(&fs_lock);
    int fd = fd_install(f);
    if (fd < 0)
        file_close(f);
    return fd;
fail:
    spin_unlock(&fs_lock);
    f->refs = 0;
    file_free(f);
    return r;
}

long sys_close(u64 fd, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(fd);
    if (!f)
        return -EBADF;
    current()->proc->fds[fd] = NULL;
    file_close(f);
    return 0;
}

static long file_read(struct file *f, u64 ubuf, u64 n)
{
    long done = 0;
    spin_lock(&fs_lock);
    struct inode *ip = f->inode;
    while ((u64)done < n && f->off < ip->size) {
        u64 pg = f->off / PAGE_SIZE, po = f->off % PAGE_SIZE;
        u64 chunk = PAGE_SIZE - po;
        if (chunk > n - (u64)done)
            chunk = n - (u64)done;
        if (chunk > ip->size - f->off)
            chunk = ip->size - f->off;
        static const u8 zeros[PAGE_SIZE];
        const u8 *src = ip->pages[pg] ? (const u8 *)P2V(ip->pages[pg]) + po : zeros;
        size_t left = copy_to_user((void *)(ubuf + (u64)done), src, chunk);
        done += (long)(chunk - left);
        f->off += chunk - left;
        if (left) {
            if (done == 0)
                done = -EFAULT;
            break;
        }
    }
    spin_unlock(&fs_lock);
    return done;
}

static long file_write(struct file *f, u64 ubuf, u64 n)
{
    long done = 0, err = 0;
    spin_lock(&fs_lock);
    struct inode *ip = f->inode;
    if (f->flags & O_APPEND)
        f->off = ip->size;
    while ((u64)done < n) {
        u64 pg = f->off / PAGE_SIZE, po = f->off % PAGE_SIZE;
        if (pg >= FILE_MAX_PAGES) {
            err = -EFBIG;
            break;
        }
        if (!ip->pages[pg]) {
            ip->pages[pg] = pmm_alloc(1);
            if (!ip->pages[pg]) {
                err = -ENOSPC;
                break;
            }
        }
        u64 chunk = PAGE_SIZE - po;
        if (chunk > n - (u64)done)
            chunk = n - (u64)done;
        size_t left = copy_from_user((u8 *)P2V(ip->pages[pg]) + po, (const void *)(ubuf + (u64)done), chunk);
        done += (long)(chunk - left);
        f->off += chunk - left;
        if (f->off > ip->size)
            ip->size = f->off;
        if (left) {
            err = -EFAULT;
            break;
        }
    }
    spin_unlock(&fs_lock);
    return done ? done : err;
}

static long pipe_read(struct pipe *p, u64 ubuf, u64 n)
{
    if (n == 0)
        return 0;
    spin_lock(&p->lock);
    while (p->wpos == p->rpos && p->writers > 0)
        waitq_sleep(&p->rwait, &p->lock);
    long done = 0;
    while ((u64)done < n && p->wpos != p->rpos) {
        u64 at = p->rpos % PIPE_SIZE;
        u64 chunk = PIPE_SIZE - at;
        if (chunk > p->wpos - p->rpos)
            chunk = p->wpos - p->rpos;
        if (chunk > n - (u64)done)
            chunk = n - (u64)done;
        size_t left = copy_to_user((void *)(ubuf + (u64)done), p->buf + at, chunk);
        done += (long)(chunk - left);
        p->rpos += chunk - left;
        if (left) {
            if (!done)
                done = -EFAULT;
            break;
        }
    }
    waitq_wake_all(&p->wwait, &p->lock);
    spin_unlock(&p->lock);
    return done;
}

static long pipe_write(struct pipe *p, u64 ubuf, u64 n)
{
    long done = 0, err = 0;
    spin_lock(&p->lock);
    while ((u64)done < n) {
        if (p->readers == 0) {
            err = -EPIPE;
            break;
        }
        if (p->wpos - p->rpos == PIPE_SIZE) {
            waitq_wake_all(&p->rwait, &p->lock);
            waitq_sleep(&p->wwait, &p->lock);
            continue;
        }
        u64 at = p->wpos % PIPE_SIZE;
        u64 chunk = PIPE_SIZE - at;
        if (chunk > PIPE_SIZE - (p->wpos - p->rpos))
            chunk = PIPE_SIZE - (p->wpos - p->rpos);
        if (chunk > n - (u64)done)
            chunk = n - (u64)done;
        size_t left = copy_from_user(p->buf + at, (const void *)(ubuf + (u64)done), chunk);
        done += (long)(chunk - left);
        p->wpos += chunk - left;
        if (left) {
            err = -EFAULT;
            break;
        }
    }
    waitq_wake_all(&p->rwait, &p->lock);
    spin_unlock(&p->lock);
    return done ? done : err;
}

long sys_read(u64 fd, u64 buf, u64 n, u64 a3, u64 a4, u64 a5)
{
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(fd);
    if (!f || (f->flags & 3) == O_WRONLY)
        return -EBADF;
    if (!user_range_ok(buf, n))
        return -EFAULT;
    switch (f->kind) {
    case FK_CONSOLE:
        return 0;
    case FK_PIPE:
        return pipe_read(f->pipe, buf, n);
    default:
        return file_read(f, buf, n);
    }
}

long sys_write(u64 fd, u64 buf, u64 n, u64 a3, u64 a4, u64 a5)
{
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(fd);
    if (!f || (f->flags & 3) == O_RDONLY)
        return -EBADF;
    if (!user_range_ok(buf, n))
        return -EFAULT;
    switch (f->kind) {
    case FK_CONSOLE: {
        char kbuf[1024];
        long done = 0;
        while ((u64)done < n) {
            u64 chunk = n - (u64)done > sizeof(kbuf) ? sizeof(kbuf) : n - (u64)done;
            size_t left = copy_from_user(kbuf, (const void *)(buf + (u64)done), chunk);
            console_write(kbuf, chunk - left);
            done += (long)(chunk - left);
            if (left)
                return done ? done : -EFAULT;
        }
        return done;
    }
    case FK_PIPE:
        return pipe_write(f->pipe, buf, n);
    default:
        return file_write(f, buf, n);
    }
}

long sys_lseek(u64 fd, u64 off, u64 whence, u64 a3, u64 a4, u64 a5)
{
    (void)a3, (void)a4, (void)a5;
    struct file *f = fd_get(fd);
    if (!f)
        return -EBADF;
    if (f->kind != FK_FILE)
        return -EINVAL;
    spin_lock(&fs_lock);
    i64 base = whence == 0 ? 0 : whence == 1 ? (i64)f->off : whence == 2 ? (i64)f->inode->size : -1;
    i64 n = base + (i64)off;
    long r;
    if (whence > 2 || n < 0) {
        r = -EINVAL;
    } else {
        f->off = (u64)n;
        r = n;
    }
    spin_unlock(&fs_lock);
    return r;
}

long sys_stat(u64 upath, u64 ust, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a2, (void)a3, (void)a4, (void)a5;
    char name[H_NAME_MAX + 1];
    long r = get_name(upath, name);
    if (r < 0)
        return r;
    struct h_stat st;
    spin_lock(&fs_lock);
    struct inode *ip = lookup_locked(name);
    if (ip) {
        st.size = ip->size;
        st.ino = ip->ino;
        st.kind = FK_FILE;
    }
    spin_unlock(&fs_lock);
    if (!ip)
        return -ENOENT;
    return copy_to_user((void *)ust, &st, sizeof(st)) ? -EFAULT : 0;
}

long sys_unlink(u64 upath, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    char name[H_NAME_MAX + 1];
    long r = get_name(upath, name);
    if (r < 0)
        return r;
    spin_lock(&fs_lock);
    struct inode *ip = lookup_locked(name);
    if (ip) {
        ip->linked = 0;
        ip->name[0] = 0;
        if (ip->opens == 0)
            inode_free_locked(ip);
    }
    spin_unlock(&fs_lock);
    return ip ? 0 : -ENOENT;
}

long sys_readdir(u64 index, u64 ud, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a2, (void)a3, (void)a4, (void)a5;
    struct h_dirent d;
    int found = 0;
    u64 k = 0;
    spin_lock(&fs_lock);
    for (int i = 0; i < MAX_INODES; i++) {
        if (!inodes[i].used || !inodes[i].linked)
            continue;
        if (k++ == index) {
            memset(&d, 0, sizeof(d));
            d.ino = inodes[i].ino;
            d.size = inodes[i].size;
            memcpy(d.name, inodes[i].name, strlen(inodes[i].name) + 1);
            found = 1;
            break;
        }
    }
    spin_unlock(&fs_lock);
    if (!found)
        return 0;
    return copy_to_user((void *)ud, &d, sizeof(d)) ? -EFAULT : 1;
}

long sys_pipe(u64 ufds, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    (void)a1, (void)a2, (void)a3, (void)a4, (void)a5;
    if (!user_range_ok(ufds, 2 * sizeof(int)))
        return -EFAULT;
    struct pipe *p = kalloc_pages(1);
    u8 *buf = kalloc_pages(1);
    struct file *r = file_alloc(FK_PIPE, O_RDONLY), *w = file_alloc(FK_PIPE, O_WRONLY);
    if (!p || !buf || !r || !w) {
        if (p)
            kfree_pages(p, 1);
        if (buf)
            kfree_pages(buf, 1);
        if (r) {
            r->refs = 0;
            file_free(r);
        }
        if (w) {
            w->refs = 0;
            file_free(w);
        }
        return -ENOMEM;
    }
    spin_init(&p->lock, "pipe");
    p->buf = buf;
    p->readers = p->writers = 1;
    r->pipe = w->pipe = p;
    w->write_end = 1;
    int fds[2];
    fds[0] = fd_install(r);
    fds[1] = fds[0] >= 0 ? fd_install(w) : -EMFILE;
    if (fds[1] < 0) {
        if (fds[0] >= 0)
            current()->proc->fds[fds[0]] = NULL;
        file_close(r);
        file_close(w);
        return -EMFILE;
    }
    if (copy_to_user((void *)ufds, fds, sizeof(fds))) {
        current()->proc->fds[fds[0]] = NULL;
        current()->proc->fds[fds[1]] = NULL;
        file_close(r);
        file_close(w);
        return -EFAULT;
    }
    return 0;
}

/* Standard descriptors of a process without a parent process: 0 reads EOF, 1/2 console. */
void fs_std_fds(struct file **fds)
{
    fds[0] = file_dup(console_in());
    fds[1] = file_dup(console_file());
    fds[2] = file_dup(console_file());
}
