/* true_prog: exits immediately with status (int)arg (spawn("true_prog", 0) exits 0).
 * Used by spawn_exit and selftest (exit-status propagation). No libc call at all. */
#include "ulib.h"

int main(unsigned long arg)
{
    return (int)arg;
}
