/* keel-chaos run must catch what fencing prevents: the same kind of run
 * as test_chaos_run, against keeld-nofence (a test build in which
 * neither the lease nor a lost connection fences a node, and a node whose
 * ZooKeeper session ended is taken for dead: its units go to the others
 * at once, from empty state; CMakeLists.txt). A node cut from ZooKeeper
 * then goes on serving its actors to the clients that reach it while
 * other nodes serve them too, from nothing, and a node stopped past its
 * session timeout loses what its clients had acknowledged: the checks
 * must say so, exit 1, verdict FAIL, with linearizability or lost-writes
 * failing and, where the partition could be made, at most one activation
 * too (the two nodes' activation logs overlap).
 *
 * Skipped (exit 77) without the ZooKeeper server package. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc.h"
#include "testutil.h"
#include "zk.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("chaos-nofence");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

START_TEST(violations_reported)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld-nofence");
    char run[512], *out = NULL, *err = NULL;
    int rc;

    snprintf(run, sizeof run, "%s/run", dir);
    {
        const char *argv[] = {bin,         "run",
                              "--nodes",   "3",
                              "--clients", "8",
                              "--actors",  "12",
                              "--seconds", "30",
                              "--faults",  "stop,partition",
                              "--seed",    "4",
                              "--out",     run,
                              "--keeld",   keeld,
                              "--zk-conf", KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        rc = tu_run_for(argv, 240, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos run (keeld-nofence): exit %d\n%s%s", rc,
            out ? out : "", err ? err : "");
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "verdict: FAIL"));
    ck_assert(strstr(out, "linearizability: FAIL") != NULL ||
              strstr(out, "lost-writes: FAIL") != NULL);
    /* Seed 4: n1 cut from ZooKeeper for 7.7 s, then stopped for 4.8 s. */
    if (strstr(out, "keel-chaos: partition faults skipped: ") == NULL)
        ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: FAIL"));
    else
        fprintf(stderr, "test_chaos_nofence: partitions could not be made "
                        "here; the stopped node alone must fail the run\n");
    free(out);
    free(err);

    /* keel-chaos check says the same of the recorded run. */
    {
        const char *argv[] = {bin, "check", run, NULL};
        rc = tu_run_for(argv, 120, &out, &err);
    }
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "verdict: FAIL"));
    free(out);
    free(err);
    free(bin);
    free(keeld);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *tc;

    if (!tu_zk_available()) {
        fprintf(stderr, "test_chaos_nofence: skipped: ZooKeeper is not "
                        "installed (sh scripts/install-deps)\n");
        return 77;
    }
    s = suite_create("chaos_nofence");
    tc = tcase_create("nofence");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, violations_reported);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
