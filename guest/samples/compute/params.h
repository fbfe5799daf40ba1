/*
 * compute: the parameter/result block shared with the host.
 *
 * It is the first thing in the image: virtual 0xFFFFFFFF80100000, physical
 * 0x100000 (ELF symbol `compute_params`; the linker script asserts the
 * address). A host may patch `iterations`, `seed` and `work_cpus` in guest
 * physical memory after loading the image and before running it, and read
 * `checksum[]` / `done[]` after the guest exits.
 *
 * Layout (little-endian):
 *     0  u64 magic       "COMPUTE1" = 0x31455455504D4F43
 *     8  u64 iterations  rounds of work() per vCPU
 *    16  u64 seed        vCPU n uses seed + n
 *    24  u64 work_cpus   how many vCPUs run work() (0 = all of cpu_count)
 *    32  u64 reserved[4]
 *    64  u64 checksum[64]   per APIC ID
 *   576  u64 done[64]       1 once checksum[n] is valid
 */
#ifndef COMPUTE_PARAMS_H
#define COMPUTE_PARAMS_H

#include <stdint.h>

#define COMPUTE_MAGIC        0x31455455504D4F43ULL
#define COMPUTE_MAX_CPUS     64
#ifndef COMPUTE_DEFAULT_ITERS
#define COMPUTE_DEFAULT_ITERS 800
#endif
#define COMPUTE_DEFAULT_SEED  0x0123456789ABCDEFULL

struct compute_params {
    uint64_t magic;
    uint64_t iterations;
    uint64_t seed;
    uint64_t work_cpus;
    uint64_t reserved[4];
    uint64_t checksum[COMPUTE_MAX_CPUS];
    uint64_t done[COMPUTE_MAX_CPUS];
};

_Static_assert(__builtin_offsetof(struct compute_params, checksum) == 64, "params layout");
_Static_assert(__builtin_offsetof(struct compute_params, done) == 576, "params layout");

#endif
