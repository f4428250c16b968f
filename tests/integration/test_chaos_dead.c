/* keel-chaos run with a short dead time: 4 nodes, 3 replicas of every
 * unit, nodes killed and stopped for longer than --replica-dead-ms
 * (1.5 s), so that live nodes replace them in replica lists and catch
 * up, and a node that comes back deletes, a dead time later, its copies
 * of the units no list names it for any more. Every check must pass,
 * replicas-agree included, and the nodes must have deleted copies (in a
 * run of kills and pauses only, a node leaves a replica list only by
 * being replaced). run.json records the dead time.
 *
 * Skipped (exit 77) without the ZooKeeper server package. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaosrun.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("chaos-dead");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* The number before " what" in the run's replication line; -1 if none. */
static long figure(const char *out, const char *what)
{
    const char *line = strstr(out, "replication, as "), *p;

    if (line == NULL || (p = strstr(line, what)) == NULL)
        return -1;
    while (p > line && p[-1] == ' ')
        p--;
    while (p > line && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return strtol(p, NULL, 10);
}

START_TEST(replaced_and_deleted_pass)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld");
    char run[512], *out = NULL, *err = NULL, path[600], *text;
    int rc;

    snprintf(run, sizeof run, "%s/run", dir);
    {
        const char *argv[] = {bin,        "run",
                              "--nodes",  "4",
                              "--replicas", "3",
                              "--seconds", "40",
                              "--faults", "kill,stop",
                              "--replica-dead-ms", "1500",
                              "--seed",   "901",
                              "--out",    run,
                              "--keeld",  keeld,
                              "--zk-conf", KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        rc = tu_run_for(argv, 280, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos run: exit %d\n%s%s", rc, out ? out : "",
            err ? err : "");
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "linearizability: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "replicas-agree: PASS (64 units, 64 "
                                      "compared across 192 in-sync "
                                      "replicas, 0 replicas out of sync)"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS"));
    ck_assert_ptr_null(strstr(out, "warning:"));
    ck_assert_ptr_nonnull(strstr(out, "final reads: 16 of 16 actors read"));
    /* Seed 901 kills and stops nodes for 2.5 to 4.7 s, past the 1.5 s. */
    ck_assert_int_ge(tu_chaos_faults(run, "kill", "done"), 2);
    ck_assert_int_ge(tu_chaos_faults(run, "stop", "done"), 2);
    ck_assert_msg(figure(out, "copies deleted") > 0,
                  "no copy deleted: %ld", figure(out, "copies deleted"));
    ck_assert_msg(figure(out, "catch-ups") > 0, "no catch-up");

    snprintf(path, sizeof path, "%s/run.json", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "\"replica_dead_ms\":1500"));
    free(text);
    snprintf(path, sizeof path, "%s/cluster.txt", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "# STAT n0 (since its last start)\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nrepl_copies_deleted "));
    free(text);
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
        fprintf(stderr, "test_chaos_dead: skipped: ZooKeeper is not "
                        "installed (sh scripts/install-deps)\n");
        return 77;
    }
    s = suite_create("chaos_dead");
    tc = tcase_create("dead");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, replaced_and_deleted_pass);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
