/*
 * bits: runs bits_work (bits.c, compiled with -march=x86-64-v3) and prints
 *     bits: checksum=0x... rounds=N
 * to port 0xE9, then exits with status 0 through port 0xF4. The host-native build of bits.c
 * (guest/build/host/libbits.so) gives the expected checksum (tests/Shared/BitsSample.cs).
 */
#include <stdint.h>

#include "bits.h"
#include "fmt.h"

#define PORT_CONSOLE 0xE9
#define PORT_EXIT    0xF4
#define BITS_ROUNDS  2000
#define BITS_SEED    0x9E3779B97F4A7C15ULL

static void put(void *ctx, char c)
{
    (void)ctx;
    __asm__ volatile("outb %0, %1" : : "a"((uint8_t)c), "Nd"((uint16_t)PORT_CONSOLE) : "memory");
}

static void print(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    fmt_format(put, 0, fmt, ap);
    __builtin_va_end(ap);
}

void bits_main(void)
{
    uint64_t sum = bits_work(BITS_ROUNDS, BITS_SEED);
    print("bits: checksum=0x%016lx rounds=%d\n", sum, BITS_ROUNDS);
    __asm__ volatile("outl %0, %1" : : "a"(0u), "Nd"((uint16_t)PORT_EXIT) : "memory");
    for (;;)
        __asm__ volatile("cli; hlt");
}
