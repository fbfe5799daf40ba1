/* runall: runs the default set one program after another (spawn + wait) and prints
 *   runall: <program> exit=<status>
 * per program, then "result runall programs=<n> failed=<m>"; exits with status m (0: all passed).
 * arg: ignored. The set: hello, selftest, the lmbench-style microbenchmarks (default
 * iterations), fileserver (4 workers). */
#include "ulib.h"

static const char *const programs[] = {
    "hello", "selftest", "null_syscall", "read1", "write1", "open_close", "stat",
    "page_fault", "pipe_rtt", "spawn_exit", "fileserver",
};

int main(unsigned long arg)
{
    (void)arg;
    int failed = 0;
    for (unsigned i = 0; i < ARRAY_SIZE(programs); i++) {
        int status = -1;
        int pid = sys_spawn(programs[i], 0);
        if (pid < 0) {
            printf("runall: %s spawn failed: %s\n", programs[i], errname(pid));
            failed++;
            continue;
        }
        int w = sys_wait(pid, &status);
        if (w != pid) {
            printf("runall: %s wait(%d) = %d (%s)\n", programs[i], pid, w, errname(w));
            failed++;
            continue;
        }
        printf("runall: %s exit=%d\n", programs[i], status);
        if (status != 0) failed++;
    }
    struct result r;
    result_begin(&r, "runall");
    result_u(&r, "programs", ARRAY_SIZE(programs));
    result_u(&r, "failed", (unsigned long)failed);
    result_end(&r);
    return failed;
}
