/*
 * compute: the integer workload shared by the guest image and the host-native
 * library (guest/build/host/libwork.so). No OS calls, no libc, no globals:
 * every call works on its own stack buffers, so any number of vCPUs (or host
 * threads) can run it at once.
 */
#ifndef COMPUTE_WORK_H
#define COMPUTE_WORK_H

#include <stdint.h>

/* Runs `iterations` rounds of the mixed workload seeded with `seed`; returns a checksum. */
uint64_t work(uint64_t iterations, uint64_t seed);

#endif
