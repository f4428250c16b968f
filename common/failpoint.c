/* Failpoints (common/failpoint.h): compiled in only with KEEL_FAILPOINTS. */
#include "common/failpoint.h"

#ifdef KEEL_FAILPOINTS
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"

static const char *const fp_env[KEEL_FP_COUNT] = {
    [KEEL_FP_REPL_APPLY_DELAY_MS] = "KEEL_FAILPOINT_REPL_APPLY_DELAY_MS",
    [KEEL_FP_ACQUIRE_DELAY_MS] = "KEEL_FAILPOINT_ACQUIRE_DELAY_MS",
    [KEEL_FP_SUSPECT_DROP_DELAY_MS] =
        "KEEL_FAILPOINT_SUSPECT_DROP_DELAY_MS",
    [KEEL_FP_REPL_COMMIT_STALL_MS] = "KEEL_FAILPOINT_REPL_COMMIT_STALL_MS",
};
static int fp_value[KEEL_FP_COUNT];
static pthread_once_t fp_once = PTHREAD_ONCE_INIT;
/* KEEL_FAILPOINT_ARM_FILE: while it names a file that does not exist, every
 * failpoint reads 0; once the file is seen, they read their values for
 * good. NULL when the variable is unset: armed from the start. */
static const char *fp_arm_file;
static int fp_armed;

static void fp_read(void)
{
    const char *arm = getenv("KEEL_FAILPOINT_ARM_FILE");

    if (arm != NULL && *arm != '\0') {
        __atomic_store_n(&fp_arm_file, arm, __ATOMIC_RELEASE);
        keel_warn("failpoints wait for %s to exist", arm);
    } else {
        __atomic_store_n(&fp_armed, 1, __ATOMIC_RELEASE);
    }
    for (int i = 0; i < KEEL_FP_COUNT; i++) {
        const char *s = getenv(fp_env[i]);
        char *end;
        long v;
        if (s == NULL || *s == '\0')
            continue;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX) {
            keel_warn("failpoint %s=%s: not a number from 0 to %d, off",
                      fp_env[i], s, INT_MAX);
            continue;
        }
        __atomic_store_n(&fp_value[i], (int)v, __ATOMIC_RELEASE);
        if (v > 0)
            keel_warn("failpoint %s=%ld is on (a test build)", fp_env[i], v);
    }
}

void keel_failpoints_load(void)
{
    pthread_once(&fp_once, fp_read);
}

int keel_failpoint(keel_failpoint_id fp)
{
    if ((unsigned)fp >= KEEL_FP_COUNT)
        return 0;
    if (!__atomic_load_n(&fp_armed, __ATOMIC_ACQUIRE)) {
        const char *arm = __atomic_load_n(&fp_arm_file, __ATOMIC_ACQUIRE);
        if (arm == NULL || access(arm, F_OK) != 0)
            return 0;
        __atomic_store_n(&fp_armed, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&fp_value[fp], __ATOMIC_ACQUIRE);
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int keel_failpoint_unused;
#endif
