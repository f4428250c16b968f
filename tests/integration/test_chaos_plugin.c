/* keel-chaos run against an actor type of one's own: every node loads
 * chaos_plugin_tally.so (a counter type "tally"), the clients drive tally
 * actors as a counter workload while nodes are killed and a node's file
 * system fills up (its writes fail with ENOSPC, recorded as fail: keel
 * promises they left nothing), and the run checks them against the
 * counter model: every check passes and the history names the plugin's
 * type. Where no file system can be mounted the run says it skipped
 * disk-full.
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
    dir = tu_tmpdir("chaos-plugin");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

START_TEST(plugin_type_checked)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld");
    char *plugin = tu_bin("chaos_plugin_tally.so");
    char run[512], path[600], load[600], *out = NULL, *err = NULL, *text;
    int rc;

    snprintf(run, sizeof run, "%s/run", dir);
    /* With ARGS, as keeld --load takes them (the plugin ignores them). */
    snprintf(load, sizeof load, "%s:some args", plugin);
    {
        const char *argv[] = {bin,         "run",
                              "--nodes",   "3",
                              "--clients", "4",
                              "--actors",  "4",
                              "--seconds", "20",
                              "--workload", "counter",
                              "--load",    load,
                              "--workload-type", "tally",
                              "--faults",  "kill,disk-full",
                              "--seed",    "13",
                              "--out",     run,
                              "--keeld",   keeld,
                              "--zk-conf", KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        rc = tu_run_for(argv, 200, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos run (tally): exit %d\n%s%s", rc,
            out ? out : "", err ? err : "");
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "actor type tally from "));
    ck_assert_ptr_nonnull(strstr(out, "chaos_plugin_tally.so:some args, "
                                      "answering as"));
    ck_assert_ptr_nonnull(strstr(out, "linearizability: PASS (4 actors: 0 "
                                      "register, 4 counter, 0 set;"));
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: PASS (4 actors read"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "final reads: 4 of 4 actors read"));
    /* Seed 13 deals kill, disk-full, kill in 20 s. */
    snprintf(path, sizeof path, "%s/faults.jsonl", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "\"fault\":\"kill\""));
    if (strstr(out, "keel-chaos: disk-full faults skipped: ") == NULL)
        ck_assert_ptr_nonnull(strstr(text, "\"fault\":\"disk-full\",\"node\""
                                           ":\"n"));
    free(text);
    snprintf(path, sizeof path, "%s/history.jsonl", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "\"actor\":\"tally/c"));
    ck_assert_ptr_null(strstr(text, "\"actor\":\"counter/"));
    free(text);
    /* The report's table of the run names the type and its plugin. */
    snprintf(path, sizeof path, "%s/report.html", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "<tr><th>workload_type</th><td>tally"
                                       "</td></tr>"));
    ck_assert_ptr_nonnull(strstr(text, "chaos_plugin_tally.so:some args"
                                       "</td></tr>"));
    free(text);
    free(out);
    free(err);

    /* A type of one's own needs one family to answer as. */
    {
        const char *argv[] = {bin, "run", "--workload-type", "tally",
                              "--out", run, NULL};
        rc = tu_run(argv, &out, &err);
    }
    ck_assert_int_eq(rc, 2);
    ck_assert_ptr_nonnull(strstr(err, "--workload-type needs one workload"));
    free(out);
    free(err);
    free(bin);
    free(keeld);
    free(plugin);
}
END_TEST

/* A --workload-type the nodes do not have (a typo, or a plugin that
 * registers another name) is answered ENOTYPE by every node: the run
 * stops at the first such answer and exits 4, naming the type, instead
 * of running every operation into a failure and passing checks that saw
 * nothing. */
START_TEST(unknown_type_ends_run)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld");
    char *plugin = tu_bin("chaos_plugin_tally.so");
    char run[512], *out = NULL, *err = NULL;
    int rc;

    snprintf(run, sizeof run, "%s/notype", dir);
    {
        const char *argv[] = {bin,         "run",
                              "--nodes",   "1",
                              "--clients", "2",
                              "--actors",  "2",
                              "--seconds", "30",
                              "--workload", "counter",
                              "--load",    plugin,
                              "--workload-type", "talley",
                              "--faults",  "none",
                              "--out",     run,
                              "--keeld",   keeld,
                              "--zk-conf", KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        rc = tu_run_for(argv, 120, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos run (talley): exit %d\n%s%s", rc,
            out ? out : "", err ? err : "");
    ck_assert_int_eq(rc, 4);
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos: the nodes do not have "
                                      "actor type 'talley' (n0 answered "
                                      "talley/c"));
    ck_assert_ptr_nonnull(strstr(err, "with ENOTYPE: "));
    ck_assert_ptr_nonnull(strstr(err, "chaos_plugin_tally.so (--load) does "
                                      "not register it"));
    /* Given up before the final reads and the checks. */
    ck_assert_ptr_null(strstr(out, "final reads:"));
    ck_assert_ptr_null(strstr(out, "verdict:"));
    free(out);
    free(err);

    /* The plugin's type named, the plugin itself forgotten; and a run
     * too short for the fault asked for says so. */
    snprintf(run, sizeof run, "%s/noload", dir);
    {
        const char *argv[] = {bin,         "run",
                              "--nodes",   "1",
                              "--clients", "2",
                              "--actors",  "2",
                              "--seconds", "3",
                              "--rate",    "0",
                              "--workload", "counter",
                              "--workload-type", "tally",
                              "--faults",  "kill",
                              "--out",     run,
                              "--keeld",   keeld,
                              "--zk-conf", KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        rc = tu_run_for(argv, 120, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos run (tally, no --load): exit %d\n%s%s",
            rc, out ? out : "", err ? err : "");
    ck_assert_int_eq(rc, 4);
    ck_assert_ptr_nonnull(strstr(err, "the nodes do not have actor type "
                                      "'tally' (n0 answered tally/c"));
    ck_assert_ptr_nonnull(strstr(err, "give the plugin that registers it "
                                      "with --load PLUGIN.so"));
    ck_assert_ptr_nonnull(strstr(out, " 3 s, ops as fast as they go, faults "
                                      "kill: 0 scheduled\n"));
    ck_assert_ptr_nonnull(strstr(out, "  no fault fits in 3 s "));
    ck_assert_ptr_null(strstr(out, "verdict:"));
    free(out);
    free(err);
    free(bin);
    free(keeld);
    free(plugin);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *tc;

    if (!tu_zk_available()) {
        fprintf(stderr, "test_chaos_plugin: skipped: ZooKeeper is not "
                        "installed (sh scripts/install-deps)\n");
        return 77;
    }
    s = suite_create("chaos_plugin");
    tc = tcase_create("plugin");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, plugin_type_checked);
    tcase_add_test(tc, unknown_type_ends_run);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
