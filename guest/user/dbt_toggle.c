/* dbt_toggle: runs the fileserver workload as a child and meanwhile switches the kernel DBT off
 * and on again, arg times (0: 20), with some syscalls in between so that every switch lands in
 * the middle of the file server's work on the other CPUs. Without a DBT (dbt() = -ENOSYS) it just
 * runs the file server. Exits with the file server's status; prints how many switches happened. */
#include "ulib.h"

static long dbt(long cmd) { return syscall2(SYS_DBT, cmd, 0); }

int main(unsigned long arg)
{
    unsigned long rounds = arg ? arg : 20;
    long was_on = dbt(DBT_QUERY);
    int pid = sys_spawn("fileserver", 0);
    if (pid < 0) die("spawn(fileserver): %s", errname(pid));
    unsigned long offs = 0, ons = 0;
    if (was_on >= 0) {
        for (unsigned long i = 0; i < rounds; i++) {
            for (int k = 0; k < 200; k++) sys_getpid();
            if (dbt(DBT_OFF) == 1) offs++;
            for (int k = 0; k < 200; k++) sys_getpid();
            if (dbt(DBT_ON) == 0) ons++;
        }
    }
    int status = -1;
    if (sys_wait(pid, &status) != pid) die("wait(fileserver) failed");
    long now = dbt(DBT_QUERY);
    printf("result dbt_toggle rounds=%lu offs=%lu ons=%lu dbt=%ld\n", rounds, offs, ons, now);
    return status;
}
