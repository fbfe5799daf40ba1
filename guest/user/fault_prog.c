/* fault_prog: takes one user-mode fault and should be killed by the kernel (selftest spawns it
 * and expects wait() to report a non-zero status). If the fault does not kill it, it exits 0 so
 * the parent notices.
 *
 * arg: 0 read of NULL, 1 write to its own text (read-only page), 2 ud2, 3 hlt (privileged, #GP),
 *      4 divide by zero, 5 read of a kernel address, 6 read of a non-canonical address,
 *      7 jump to a non-executable page (the data segment; #PF only with NX enabled),
 *      8 read of an unmapped user address */
#include "ulib.h"

static volatile unsigned long sink;
static unsigned char data_page_code[16] __attribute__((aligned(16))) = {0xC3}; /* ret */

int main(unsigned long arg)
{
    switch (arg) {
    case 0: sink = *(volatile unsigned long *)0; break;
    case 1: *(volatile unsigned char *)(unsigned long)&main = 0xCC; break;
    case 2: __asm__ volatile("ud2"); break;
    case 3: __asm__ volatile("hlt"); break;
    case 4: {
        volatile unsigned long zero = 0;
        sink = 1000 / zero;
        break;
    }
    case 5: sink = *(volatile unsigned long *)0xFFFFFFFF80000000UL; break;
    case 6: sink = *(volatile unsigned long *)0x0000900000000000UL; break;
    case 7: ((void (*)(void))(unsigned long)data_page_code)(); break;
    case 8: sink = *(volatile unsigned long *)0x0000100000000000UL; break;
    default: return 2;
    }
    return 0;
}
