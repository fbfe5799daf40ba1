/*
 * bits: runs bits_work (bits.c, compiled with -march=x86-64-v3) and prints
 *     bits: checksum=0x... rounds=N
 * to port 0xE9, then exits with status 0 through port 0xF4. The host-native build of bits.c
 * (guest/build/host/libbits.so) gives the expected checksum: tests/Machine.Smp.Tests and
 * tests/Dbt.Tests compare native and translated runs with it.
 */
#include <stdint.h>

#include "bits.h"

#define PORT_CONSOLE 0xE9
#define PORT_EXIT    0xF4
#define BITS_ROUNDS  2000
#define BITS_SEED    0x9E3779B97F4A7C15ULL

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static void put_str(const char *s)
{
    while (*s)
        outb(PORT_CONSOLE, (uint8_t)*s++);
}

static void put_hex(uint64_t v)
{
    put_str("0x");
    for (int i = 60; i >= 0; i -= 4)
        outb(PORT_CONSOLE, (uint8_t)"0123456789abcdef"[(v >> i) & 0xF]);
}

static void put_dec(uint64_t v)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n > 0)
        outb(PORT_CONSOLE, (uint8_t)buf[--n]);
}

void bits_main(void)
{
    uint64_t sum = bits_work(BITS_ROUNDS, BITS_SEED);
    put_str("bits: checksum=");
    put_hex(sum);
    put_str(" rounds=");
    put_dec(BITS_ROUNDS);
    put_str("\n");
    outl(PORT_EXIT, 0);
    for (;;)
        __asm__ volatile("cli; hlt");
}
