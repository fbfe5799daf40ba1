/* httpd: a request/response server with concurrent clients over pipes (the paper's Apache
 * analogue, prefork style: one server process per connection).
 *
 * The parent writes HD_DOCS documents to the RAM file system, then for each of C connections
 * makes a request pipe and a response pipe and spawns a server process and a client process
 * on them (this same program in server or client mode; the parent keeps none of the fds, so it
 * never holds more than four). Each client sends R requests "GET /hd_doc<k>\n" (k from its own
 * PRNG stream) and reads each response "200 <length>\n<body>", checking the body against the
 * document's formula; the server opens the document, reads it and writes the header and the
 * body (several pipe writes: bodies are up to 3 KiB). When a client has its R responses it
 * closes its request pipe: the server sees end of file and exits 0. The parent waits for all
 * and prints
 *   result httpd clients=C ops=<C*R> bytes=<body bytes> checksum=0x<16 hex>
 *   result httpd_perf clients=C ops=<C*R> insns=I insns_per_op=X
 * The first line is the same for every vCPU count, configuration and schedule (the parent
 * computes it from the clients' PRNG streams); the second's insns is the parent's vCPU time.
 *
 * arg (parent): bits 0-7 C (0: 4, at most 16), bits 8-23 requests per client (0: 40).
 * arg (server): HD_SERVER | req_read_fd | resp_write_fd << 8 | req_write_fd << 16 | resp_read_fd << 24.
 * arg (client): HD_CLIENT | the same fds | index << 32 | requests << 40. */
#include "ulib.h"

#define HD_SERVER   (1UL << 62)
#define HD_CLIENT   (1UL << 61)
#define HD_SEED     0x6874747064727271UL /* "httpdrrq" */
#define HD_DOCS     8
#define HD_MAX_C    16
#define HD_DFLT_C   4
#define HD_DFLT_R   40
#define HD_MAXBODY  3072
#define HD_LINE     64

static unsigned char body[HD_MAXBODY];

static unsigned long doc_length(unsigned k) { return 100 + (k * 389) % (HD_MAXBODY - 100); }
static unsigned char doc_byte(unsigned k, unsigned long i) { return (unsigned char)(k * 31 + i * 7 + (i >> 5)); }
static void doc_name(char *name, unsigned k) { snprintf(name, H_NAME_MAX + 1, "hd_doc%u", k); }

static void write_all(int fd, const void *p, unsigned long n, const char *what)
{
    const char *c = p;
    while (n) {
        long w = sys_write(fd, c, n);
        if (w <= 0) die("%s: write: %s", what, errname(w));
        c += w;
        n -= (unsigned long)w;
    }
}

/* Reads exactly n bytes; returns 0 at end of file before the first byte. */
static int read_exact(int fd, void *p, unsigned long n, const char *what)
{
    char *c = p;
    unsigned long got = 0;
    while (got < n) {
        long r = sys_read(fd, c + got, n - got);
        if (r < 0) die("%s: read: %s", what, errname(r));
        if (r == 0) {
            if (got == 0) return 0;
            die("%s: end of file after %lu of %lu bytes", what, got, n);
        }
        got += (unsigned long)r;
    }
    return 1;
}

/* Reads one '\n'-terminated line (at most HD_LINE bytes, byte by byte: the protocol's framing); 0 at end of file. */
static int read_line(int fd, char *line, const char *what)
{
    for (int i = 0; i < HD_LINE - 1; i++) {
        if (!read_exact(fd, line + i, 1, what)) {
            if (i == 0) return 0;
            die("%s: end of file inside a line", what);
        }
        if (line[i] == '\n') {
            line[i] = 0;
            return 1;
        }
    }
    die("%s: line longer than %d bytes", what, HD_LINE);
}

static unsigned long parse_u(const char *s, const char **end)
{
    unsigned long v = 0;
    while (*s >= '0' && *s <= '9') v = v * 10 + (unsigned long)(*s++ - '0');
    *end = s;
    return v;
}

/* ---------------- server: one connection ---------------- */

static int server(unsigned long arg)
{
    int in = (int)(arg & 0xFF), out = (int)((arg >> 8) & 0xFF);
    sys_close((int)((arg >> 16) & 0xFF));
    sys_close((int)((arg >> 24) & 0xFF));
    char line[HD_LINE], header[HD_LINE];
    while (read_line(in, line, "server")) {
        if (strncmp(line, "GET /", 5)) die("server: bad request '%s'", line);
        const char *name = line + 5;
        int fd = sys_open(name, O_RDONLY);
        if (fd < 0) {
            write_all(out, "404 0\n", 6, "server");
            continue;
        }
        long n = sys_read(fd, body, sizeof body);
        sys_close(fd);
        if (n < 0) die("server: read(%s): %s", name, errname(n));
        int h = snprintf(header, sizeof header, "200 %ld\n", n);
        write_all(out, header, (unsigned long)h, "server");
        write_all(out, body, (unsigned long)n, "server");
    }
    return 0;
}

/* ---------------- client: one connection ---------------- */

static int client(unsigned long arg)
{
    int out = (int)(arg & 0xFF), in = (int)((arg >> 8) & 0xFF);
    sys_close((int)((arg >> 16) & 0xFF));
    sys_close((int)((arg >> 24) & 0xFF));
    unsigned index = (unsigned)((arg >> 32) & 0xFF);
    unsigned long requests = (arg >> 40) & 0xFFFF;
    struct rng rng;
    rng_seed(&rng, HD_SEED + index);
    char line[HD_LINE], request[HD_LINE];
    for (unsigned long i = 0; i < requests; i++) {
        unsigned k = (unsigned)rng_below(&rng, HD_DOCS);
        int q = snprintf(request, sizeof request, "GET /hd_doc%u\n", k);
        write_all(out, request, (unsigned long)q, "client");
        if (!read_line(in, line, "client")) die("client %u: the server closed the connection", index);
        const char *end;
        if (strncmp(line, "200 ", 4)) die("client %u: request %lu (doc %u): response '%s'", index, i, k, line);
        unsigned long n = parse_u(line + 4, &end);
        if (*end || n != doc_length(k)) die("client %u: doc %u: length '%s', expected %lu", index, k, line + 4, doc_length(k));
        read_exact(in, body, n, "client");
        for (unsigned long b = 0; b < n; b++)
            if (body[b] != doc_byte(k, b)) die("client %u: doc %u: byte %lu is 0x%x, expected 0x%x", index, k, b, body[b], doc_byte(k, b));
        if ((i & 7) == 7) sys_yield();
    }
    sys_close(out); /* the server sees end of file */
    if (read_line(in, line, "client")) die("client %u: an extra response '%s'", index, line);
    return 0;
}

/* ---------------- parent ---------------- */

static int parent(unsigned long arg)
{
    unsigned c = (unsigned)(arg & 0xFF);
    unsigned long requests = (arg >> 8) & 0xFFFF;
    if (c == 0) c = HD_DFLT_C;
    if (c > HD_MAX_C) die("at most %d clients", HD_MAX_C);
    if (requests == 0) requests = HD_DFLT_R;
    char name[H_NAME_MAX + 1];
    for (unsigned k = 0; k < HD_DOCS; k++) {
        doc_name(name, k);
        for (unsigned long i = 0; i < doc_length(k); i++) body[i] = doc_byte(k, i);
        int fd = sys_open(name, O_CREAT | O_TRUNC | O_WRONLY);
        if (fd < 0) die("open(%s): %s", name, errname(fd));
        write_all(fd, body, doc_length(k), name);
        sys_close(fd);
    }
    uint64_t t0 = rdtsc();
    int pids[2 * HD_MAX_C];
    for (unsigned i = 0; i < c; i++) {
        int req[2], resp[2];
        long r = sys_pipe(req);
        if (r) die("pipe: %s", errname(r));
        r = sys_pipe(resp);
        if (r) die("pipe: %s", errname(r));
        unsigned long fds = (unsigned long)req[0] | (unsigned long)resp[1] << 8 | (unsigned long)req[1] << 16 | (unsigned long)resp[0] << 24;
        pids[2 * i] = sys_spawn("httpd", HD_SERVER | fds);
        if (pids[2 * i] < 0) die("spawn(httpd server %u): %s", i, errname(pids[2 * i]));
        unsigned long cfds = (unsigned long)req[1] | (unsigned long)resp[0] << 8 | (unsigned long)req[0] << 16 | (unsigned long)resp[1] << 24;
        pids[2 * i + 1] = sys_spawn("httpd", HD_CLIENT | cfds | (unsigned long)i << 32 | requests << 40);
        if (pids[2 * i + 1] < 0) die("spawn(httpd client %u): %s", i, errname(pids[2 * i + 1]));
        sys_close(req[0]);
        sys_close(req[1]);
        sys_close(resp[0]);
        sys_close(resp[1]);
    }
    int failed = 0;
    for (unsigned i = 0; i < 2 * c; i++) {
        int status = -1;
        int r = sys_wait(pids[i], &status);
        if (r != pids[i]) die("wait(%d): %s", pids[i], errname(r));
        if (status != 0) {
            printf("httpd: %s %u exited with status %d\n", (i & 1) ? "client" : "server", i / 2, status);
            failed++;
        }
    }
    uint64_t t1 = rdtsc();
    if (t1 < t0) t1 = t0; /* migrated to a vCPU with a smaller count: no number */
    if (failed) die("%d of %u processes failed", failed, 2 * c);
    /* What the clients asked for, from their PRNG streams: the same for every schedule. */
    uint64_t h = FNV64_INIT;
    unsigned long bytes = 0;
    for (unsigned i = 0; i < c; i++) {
        struct rng rng;
        rng_seed(&rng, HD_SEED + i);
        for (unsigned long q = 0; q < requests; q++) {
            unsigned k = (unsigned)rng_below(&rng, HD_DOCS);
            unsigned char le[4] = {(unsigned char)i, (unsigned char)k, 0, 0};
            h = fnv1a64(h, le, sizeof le);
            bytes += doc_length(k);
        }
    }
    for (unsigned k = 0; k < HD_DOCS; k++) {
        doc_name(name, k);
        sys_unlink(name);
    }
    struct result r;
    result_begin(&r, "httpd");
    result_u(&r, "clients", c);
    result_u(&r, "ops", c * requests);
    result_u(&r, "bytes", bytes);
    result_x64(&r, "checksum", h);
    result_end(&r);
    result_begin(&r, "httpd_perf");
    result_u(&r, "clients", c);
    result_u(&r, "ops", c * requests);
    result_u(&r, "insns", t1 - t0);
    result_u(&r, "insns_per_op", (t1 - t0) / (c * requests));
    result_end(&r);
    return 0;
}

int main(unsigned long arg)
{
    if (arg & HD_SERVER) return server(arg);
    if (arg & HD_CLIENT) return client(arg);
    return parent(arg);
}
