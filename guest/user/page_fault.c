/* page_fault: grows the heap with brk by N pages and writes one byte per 4 KiB page, each a
 * demand-zero fault (lmbench lat_pagefault, anonymous memory). Each try uses fresh pages.
 * arg = N (0: 256). Reports insns_per_fault (= insns_per_op). */
#include "bench.h"

#define PAGE 4096UL

int main(unsigned long arg)
{
    unsigned long n = bench_iterations(arg, 256);
    unsigned long start = sys_brk(0);
    if ((long)start <= 0) die("brk(0) = %ld", (long)start);
    unsigned long base = 0, bad = 0;
    uint64_t delta;
    BENCH_MEASURE(delta,
                  {
                      unsigned long cur = sys_brk(0);
                      base = (cur + PAGE - 1) & ~(PAGE - 1);
                      unsigned long want = base + n * PAGE;
                      unsigned long got = sys_brk(want);
                      if (got != want) die("brk(0x%lx) = 0x%lx (%s)", want, got, errname((long)got));
                  },
                  for (unsigned long i = 0; i < n; i++) {
                      volatile unsigned char *p = (unsigned char *)(base + i * PAGE);
                      *p = 1;      /* the write faults the page in */
                      bad |= p[1]; /* demand-zero: the rest of the page reads 0 */
                  },
                  (void)0);
    if (bad) die("a fresh heap page was not zero");
    for (unsigned long i = 0; i < n; i++)
        if (*(volatile unsigned char *)(base + i * PAGE) != 1) die("page %lu lost its byte", i);
    unsigned long got = sys_brk(start);
    if (got != start) die("shrinking brk back to 0x%lx returned 0x%lx", start, got);
    bench_report("page_fault", n, delta, "insns_per_fault");
    return 0;
}
