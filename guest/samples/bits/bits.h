/*
 * bits: the x86-64-v3 integer workload shared by the guest image (bits.elf) and the host-native
 * library (guest/build/host/libbits.so), both built with -march=x86-64-v3 so that gcc emits
 * BMI1, BMI2, MOVBE, LZCNT and POPCNT. No OS calls, no libc, no globals.
 */
#ifndef BITS_H
#define BITS_H

#include <stdint.h>

/* Runs `rounds` rounds of bit manipulation seeded with `seed`; returns a checksum. */
uint64_t bits_work(uint64_t rounds, uint64_t seed);

#endif
