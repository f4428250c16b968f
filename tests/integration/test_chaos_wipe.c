/* keel-chaos run with wipes: 3 nodes, 3 replicas of every unit, under 8
 * clients for 45 s while nodes are killed and restarted on their data,
 * or killed and restarted on an empty data directory (a new store, which
 * replication must catch up and never take for an in-sync replica).
 * Every check must pass, replicas-agree included, with every unit's
 * replicas back in sync and compared; faults.jsonl must show the wipes
 * were made. With one replica the run makes no wipe and says so once.
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

#define SECONDS "45"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("chaos-wipe");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

START_TEST(wipes_pass)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld");
    char run[512], *out = NULL, *err = NULL, path[600], *text;
    int rc;

    snprintf(run, sizeof run, "%s/run", dir);
    {
        const char *argv[] = {bin,        "run",
                              "--nodes",  "3",
                              "--replicas", "3",
                              "--clients", "8",
                              "--actors", "12",
                              "--seconds", SECONDS,
                              "--faults", "wipe,kill",
                              "--seed",   "2",
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
    /* Every unit's three replicas back in sync and compared: a wiped
     * replica taken for in sync before its catch-up would differ. */
    ck_assert_ptr_nonnull(strstr(out, "replicas-agree: PASS (64 units, 64 "
                                      "compared across 192 in-sync "
                                      "replicas, 0 replicas out of sync)"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS"));
    /* Settled, in sync, every actor read at the end, no node died by
     * itself. */
    ck_assert_ptr_null(strstr(out, "warning:"));
    ck_assert_ptr_nonnull(strstr(out, "final reads: 16 of 16 actors read"));

    /* Seed 2 deals three wipes and three kills in 45 s. */
    ck_assert_int_ge(tu_chaos_faults(run, "wipe", "done"), 2);
    ck_assert_int_ge(tu_chaos_faults(run, "kill", "done"), 2);
    ck_assert_int_eq(tu_chaos_faults(run, "wipe", "skipped"), 0);
    /* What the faults came to, and where the figures are: the run's own
     * directory, not a placeholder. */
    snprintf(path, sizeof path, " 0 skipped; %s/faults.jsonl)\n", run);
    ck_assert_ptr_nonnull(strstr(out, "faults: "));
    ck_assert_ptr_nonnull(strstr(out, path));
    snprintf(path, sizeof path, " units promoted on a move (%s/cluster.txt)",
             run);
    ck_assert_ptr_nonnull(strstr(out, path));
    ck_assert_ptr_null(strstr(out, "DIR/"));

    snprintf(path, sizeof path, "%s/digests.txt", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "\ndigest n0 (default) 0 "));
    ck_assert_ptr_null(strstr(text, "out_of_sync"));
    free(text);
    snprintf(path, sizeof path, "%s/report.html", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "<th>replicas-agree</th><td><span "
                                       "class='v PASS'>PASS<"));
    free(text);
    free(out);
    free(err);

    /* The recorded run checks the same again. */
    {
        const char *argv[] = {bin, "check", run, NULL};
        rc = tu_run_for(argv, 120, &out, &err);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "replicas-agree: PASS (64 units"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS"));
    free(out);
    free(err);
    free(bin);
    free(keeld);
}
END_TEST

/* With one replica a wipe would lose the node's units by design: the run
 * says so once and makes none (seed 1 plans one in 12 s). The nodes get
 * the --node-arg given (a kill -9 loses nothing acknowledged with
 * durability none either: the page cache outlives the process). */
START_TEST(one_replica_skips_wipes)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld");
    char run[512], *out = NULL, *err = NULL;
    const char *p;
    int rc;

    snprintf(run, sizeof run, "%s/r1", dir);
    {
        const char *argv[] = {bin,        "run",
                              "--nodes",  "2",
                              "--replicas", "1",
                              "--seconds", "12",
                              "--faults", "wipe",
                              "--node-arg", "--durability=none",
                              "--seed",   "1",
                              "--out",    run,
                              "--keeld",  keeld,
                              "--zk-conf", KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        rc = tu_run_for(argv, 200, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos run: exit %d\n%s%s", rc, out ? out : "",
            err ? err : "");
    ck_assert_int_eq(rc, 0);
    p = strstr(out, "keel-chaos: wipe faults skipped: with --replicas 1 a "
                    "node's units have no other copy");
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_null(strstr(p + 20, "wipe faults skipped"));
    ck_assert_ptr_nonnull(strstr(out, "wipe skipped: no wipe with "
                                      "--replicas 1"));
    ck_assert_int_eq(tu_chaos_faults(run, "wipe", "done"), 0);
    ck_assert_int_ge(tu_chaos_faults(run, "wipe", "skipped"), 1);
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS"));
    /* A PASS with every fault skipped says so. */
    ck_assert_ptr_nonnull(strstr(out, "faults: 0 injected of "));
    ck_assert_ptr_nonnull(strstr(out, "warning: no fault was injected "
                                      "(--faults wipe: every planned one "
                                      "skipped): the checks below saw the "
                                      "workload without faults\n"));
    {
        char path[600], *text;
        snprintf(path, sizeof path, "%s/nodes/n0.log", run);
        text = tu_read_file(path);
        ck_assert_ptr_nonnull(text);
        ck_assert_msg(strstr(text, "durability none") != NULL, "%s", text);
        free(text);
        snprintf(path, sizeof path, "%s/run.json", run);
        text = tu_read_file(path);
        ck_assert_ptr_nonnull(text);
        ck_assert_ptr_nonnull(strstr(text, "\"node_args\":[\"--durability="
                                           "none\"]"));
        free(text);
    }
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
        fprintf(stderr, "test_chaos_wipe: skipped: ZooKeeper is not "
                        "installed (sh scripts/install-deps)\n");
        return 77;
    }
    s = suite_create("chaos_wipe");
    tc = tcase_create("wipe");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, wipes_pass);
    tcase_add_test(tc, one_replica_skips_wipes);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
