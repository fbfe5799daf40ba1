/* fileserver: a filebench-style file-server workload on the RAM file system.
 *
 * The parent removes files left by an earlier run, spawns T workers (this same program in
 * worker mode), waits for all, then hashes the final file-system state and prints
 *   result fileserver workers=T ops=<T*ops> checksum=0x<16 hex>
 *   result fileserver_perf workers=T ops=<T*ops> files=F bytes=B insns=I insns_per_op=X
 * The first line is identical for every vCPU count and schedule: worker w owns the names
 * "fs_w<ww>_f<s>" and runs a fixed sequence of operations from its own PRNG stream
 * (seed FS_SEED + w), so its final files depend on nothing else. The checksum covers the files
 * whose names start with "fs_w", sorted by name: FNV-1a 64 over name, NUL, size (8 bytes, little
 * endian) and contents of each. The second line's insns is the parent's vCPU time (varies).
 *
 * arg (parent): bits 0-7 T (0: 4, at most 16), bits 8-23 operations per worker (0: 150).
 * arg (worker): FS_WORKER | index << 24 | ops << 8 | T.
 *
 * Worker operations, on one of FS_SLOTS files chosen at random: create (random length and
 * contents, written in random-sized chunks), read back and verify, append, overwrite with
 * O_TRUNC, lseek + partial read, stat, delete. Every read is checked against the worker's
 * in-memory copy; any mismatch or unexpected error makes the worker (and then the parent)
 * exit non-zero. */
#include "ulib.h"

#define FS_SEED     0x66696c6573727672UL /* "filesrvr" */
#define FS_WORKER   (1UL << 62)
#define FS_SLOTS    6
#define FS_MAXF     2048
#define FS_MAX_T    16
#define FS_DFLT_T   4
#define FS_DFLT_OPS 150
#define FS_PREFIX   "fs_w"

/* ---------------- worker ---------------- */

static unsigned char shadow[FS_SLOTS][FS_MAXF];
static unsigned long shadow_len[FS_SLOTS];
static int shadow_exists[FS_SLOTS];
static unsigned char iobuf[FS_MAXF];
static unsigned worker_index;
static struct rng rng;

static void slot_name(char *name, unsigned w, unsigned s)
{
    snprintf(name, H_NAME_MAX + 1, FS_PREFIX "%02u_f%u", w, s);
}

static void fill_random(unsigned char *p, unsigned long n)
{
    for (unsigned long i = 0; i < n; i += 8) {
        uint64_t v = rng_next(&rng);
        for (unsigned long j = 0; j < 8 && i + j < n; j++) p[i + j] = (unsigned char)(v >> (8 * j));
    }
}

static void write_all(int fd, const char *name, const unsigned char *p, unsigned long n)
{
    /* random chunk sizes: exercise partial writes at odd offsets */
    while (n) {
        unsigned long k = 1 + rng_below(&rng, 512);
        if (k > n) k = n;
        long w = sys_write(fd, p, k);
        if (w != (long)k) die("worker %u: write(%s, %lu): %s", worker_index, name, k, errname(w));
        p += k;
        n -= k;
    }
}

static void put_file(unsigned s, int flags, const unsigned char *p, unsigned long n)
{
    char name[H_NAME_MAX + 1];
    slot_name(name, worker_index, s);
    int fd = sys_open(name, flags);
    if (fd < 0) die("worker %u: open(%s, 0x%x): %s", worker_index, name, flags, errname(fd));
    write_all(fd, name, p, n);
    long r = sys_close(fd);
    if (r) die("worker %u: close(%s): %s", worker_index, name, errname(r));
}

static void verify(unsigned s)
{
    char name[H_NAME_MAX + 1];
    slot_name(name, worker_index, s);
    struct h_stat st;
    long r = sys_stat(name, &st);
    if (r) die("worker %u: stat(%s): %s", worker_index, name, errname(r));
    if (st.size != shadow_len[s] || st.kind != 1)
        die("worker %u: stat(%s): size %lu kind %lu, expected %lu 1", worker_index, name, st.size, st.kind, shadow_len[s]);
    int fd = sys_open(name, O_RDONLY);
    if (fd < 0) die("worker %u: open(%s): %s", worker_index, name, errname(fd));
    /* ask for more than there is: the read must stop at end of file */
    unsigned long got = 0;
    for (;;) {
        long n = sys_read(fd, iobuf + got, sizeof iobuf - got);
        if (n < 0) die("worker %u: read(%s): %s", worker_index, name, errname(n));
        if (n == 0 || got + (unsigned long)n == sizeof iobuf) {
            got += (unsigned long)n;
            break;
        }
        got += (unsigned long)n;
    }
    if (got != shadow_len[s]) die("worker %u: read %lu bytes of %s, expected %lu", worker_index, got, name, shadow_len[s]);
    if (memcmp(iobuf, shadow[s], got)) die("worker %u: %s: contents differ", worker_index, name);
    sys_close(fd);
}

static void op_create(unsigned s, int flags)
{
    unsigned long n = 1 + rng_below(&rng, FS_MAXF / 2);
    fill_random(shadow[s], n);
    shadow_len[s] = n;
    shadow_exists[s] = 1;
    put_file(s, flags, shadow[s], n);
}

static void op_append(unsigned s)
{
    unsigned long k = 1 + rng_below(&rng, 256);
    if (shadow_len[s] + k > FS_MAXF) k = FS_MAXF - shadow_len[s];
    if (k == 0) {
        op_create(s, O_WRONLY | O_TRUNC);
        return;
    }
    fill_random(shadow[s] + shadow_len[s], k);
    put_file(s, O_WRONLY | O_APPEND, shadow[s] + shadow_len[s], k);
    shadow_len[s] += k;
}

static void op_pread(unsigned s)
{
    char name[H_NAME_MAX + 1];
    slot_name(name, worker_index, s);
    unsigned long off = rng_below(&rng, shadow_len[s] + 1);
    unsigned long want = 1 + rng_below(&rng, 300);
    int fd = sys_open(name, O_RDONLY);
    if (fd < 0) die("worker %u: open(%s): %s", worker_index, name, errname(fd));
    long p = sys_lseek(fd, (long)off, SEEK_SET);
    if (p != (long)off) die("worker %u: lseek(%s, %lu): %s", worker_index, name, off, errname(p));
    long n = sys_read(fd, iobuf, want);
    unsigned long expect = shadow_len[s] - off < want ? shadow_len[s] - off : want;
    if (n != (long)expect) die("worker %u: read(%s @%lu, %lu) = %ld, expected %lu", worker_index, name, off, want, n, expect);
    if (memcmp(iobuf, shadow[s] + off, expect)) die("worker %u: %s @%lu: contents differ", worker_index, name, off);
    sys_close(fd);
}

static int worker(unsigned long arg)
{
    worker_index = (unsigned)((arg >> 24) & 0xFF);
    unsigned long ops = (arg >> 8) & 0xFFFF;
    rng_seed(&rng, FS_SEED + worker_index);
    char name[H_NAME_MAX + 1];
    for (unsigned s = 0; s < FS_SLOTS; s++) {
        slot_name(name, worker_index, s);
        sys_unlink(name);
    }
    for (unsigned long i = 0; i < ops; i++) {
        unsigned s = (unsigned)rng_below(&rng, FS_SLOTS);
        if (!shadow_exists[s]) {
            op_create(s, O_CREAT | O_TRUNC | O_WRONLY);
            continue;
        }
        unsigned c = (unsigned)rng_below(&rng, 100);
        if (c < 30) {
            verify(s);
        } else if (c < 55) {
            op_append(s);
        } else if (c < 68) {
            op_create(s, (c & 1) ? O_WRONLY | O_TRUNC : O_CREAT | O_TRUNC | O_RDWR);
        } else if (c < 80) {
            op_pread(s);
        } else if (c < 88) {
            struct h_stat st;
            slot_name(name, worker_index, s);
            long r = sys_stat(name, &st);
            if (r || st.size != shadow_len[s]) die("worker %u: stat(%s): %s size %lu", worker_index, name, errname(r), st.size);
        } else {
            slot_name(name, worker_index, s);
            long r = sys_unlink(name);
            if (r) die("worker %u: unlink(%s): %s", worker_index, name, errname(r));
            r = sys_stat(name, &(struct h_stat){0});
            if (r != -ENOENT) die("worker %u: stat(%s) after unlink: %s", worker_index, name, errname(r));
            shadow_exists[s] = 0;
            shadow_len[s] = 0;
        }
        if ((i & 15) == 15) sys_yield();
    }
    for (unsigned s = 0; s < FS_SLOTS; s++)
        if (shadow_exists[s]) verify(s);
    return 0;
}

/* ---------------- parent ---------------- */

#define FS_MAX_FILES 512
static char names[FS_MAX_FILES][H_NAME_MAX + 1];
static unsigned long sizes[FS_MAX_FILES];

static const char *base_name(const char *n)
{
    return n[0] == '/' ? n + 1 : n;
}

/* Collects the names starting with FS_PREFIX; returns the count. */
static unsigned collect(void)
{
    unsigned count = 0;
    struct h_dirent d;
    for (unsigned long i = 0;; i++) {
        int r = sys_readdir(i, &d);
        if (r == 0) break;
        if (r < 0) die("readdir(%lu): %s", i, errname(r));
        if (r != 1) die("readdir(%lu) returned %d", i, r);
        d.name[H_NAME_MAX] = 0;
        const char *n = base_name(d.name);
        if (strncmp(n, FS_PREFIX, strlen(FS_PREFIX))) continue;
        if (count == FS_MAX_FILES) die("more than %d files", FS_MAX_FILES);
        strcpy(names[count], n);
        sizes[count] = d.size;
        count++;
    }
    return count;
}

static int parent(unsigned long arg)
{
    unsigned t = (unsigned)(arg & 0xFF);
    unsigned long ops = (arg >> 8) & 0xFFFF;
    if (t == 0) t = FS_DFLT_T;
    if (t > FS_MAX_T) die("at most %d workers", FS_MAX_T);
    if (ops == 0) ops = FS_DFLT_OPS;

    /* start from a clean namespace (an earlier run in the same boot) */
    unsigned old = collect();
    for (unsigned i = 0; i < old; i++) sys_unlink(names[i]);

    uint64_t t0 = rdtsc();
    int pids[FS_MAX_T];
    for (unsigned w = 0; w < t; w++) {
        pids[w] = sys_spawn("fileserver", FS_WORKER | (unsigned long)w << 24 | ops << 8 | t);
        if (pids[w] < 0) die("spawn(fileserver worker %u): %s", w, errname(pids[w]));
    }
    int failed = 0;
    for (unsigned w = 0; w < t; w++) {
        int status = -1;
        int r = sys_wait(pids[w], &status);
        if (r != pids[w]) die("wait(%d): %s", pids[w], errname(r));
        if (status != 0) {
            printf("fileserver: worker %u exited with status %d\n", w, status);
            failed++;
        }
    }
    uint64_t t1 = rdtsc();
    if (t1 < t0) t1 = t0; /* migrated to a vCPU with a smaller count: no number */
    if (failed) die("%d of %u workers failed", failed, t);

    unsigned count = collect();
    /* insertion sort by name: readdir order is the kernel's business */
    for (unsigned i = 1; i < count; i++) {
        for (unsigned j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char tmp[H_NAME_MAX + 1];
            unsigned long ts = sizes[j];
            strcpy(tmp, names[j]);
            strcpy(names[j], names[j - 1]);
            strcpy(names[j - 1], tmp);
            sizes[j] = sizes[j - 1];
            sizes[j - 1] = ts;
        }
    }
    uint64_t h = FNV64_INIT;
    unsigned long bytes = 0;
    for (unsigned i = 0; i < count; i++) {
        h = fnv1a64(h, names[i], strlen(names[i]) + 1);
        unsigned char le[8];
        for (int b = 0; b < 8; b++) le[b] = (unsigned char)(sizes[i] >> (8 * b));
        h = fnv1a64(h, le, 8);
        int fd = sys_open(names[i], O_RDONLY);
        if (fd < 0) die("open(%s): %s", names[i], errname(fd));
        unsigned long got = 0;
        for (;;) {
            long n = sys_read(fd, iobuf, sizeof iobuf);
            if (n < 0) die("read(%s): %s", names[i], errname(n));
            if (n == 0) break;
            h = fnv1a64(h, iobuf, (unsigned long)n);
            got += (unsigned long)n;
        }
        sys_close(fd);
        if (got != sizes[i]) die("%s: read %lu bytes, readdir said %lu", names[i], got, sizes[i]);
        bytes += got;
    }

    struct result r;
    result_begin(&r, "fileserver");
    result_u(&r, "workers", t);
    result_u(&r, "ops", t * ops);
    result_x64(&r, "checksum", h);
    result_end(&r);
    result_begin(&r, "fileserver_perf");
    result_u(&r, "workers", t);
    result_u(&r, "ops", t * ops);
    result_u(&r, "files", count);
    result_u(&r, "bytes", bytes);
    result_u(&r, "insns", t1 - t0);
    result_u(&r, "insns_per_op", (t1 - t0) / (t * ops));
    result_end(&r);
    return 0;
}

int main(unsigned long arg)
{
    return (arg & FS_WORKER) ? worker(arg) : parent(arg);
}
