/* hello: the first program to try on a new kernel. Prints one line and exits 0.
 * arg: ignored. */
#include "ulib.h"

int main(unsigned long arg)
{
    (void)arg;
    printf("hello from user space, pid %d, cpu %d\n", sys_getpid(), sys_getcpu());
    return 0;
}
