/* keel-chaos check DIR, run as a user would: a verdict per check, exit 0
 * when all pass, 1 on a violation, 2 on bad input or usage, 3 when the
 * linearizability search is cut short; the usage of run and what run
 * refuses before it starts anything (test_chaos_run runs it). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proc.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("chaos-check");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static void put(const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (strchr(name, '/') != NULL) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s/actlogs", dir);
        mkdir(sub, 0755);
    }
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* keel-chaos ARGS... (up to six, ending at the first NULL); returns the
 * exit code, output in *out and *err. */
static int chaos6(char **out, char **err, const char *a1, const char *a2,
                  const char *a3, const char *a4, const char *a5,
                  const char *a6)
{
    char *bin = tu_bin("keel-chaos");
    const char *argv[] = {bin, a1, a2, a3, a4, a5, a6, NULL};
    int rc = tu_run(argv, out, err);

    fprintf(stderr, "--- keel-chaos %s %s: exit %d\n%s%s", a1 ? a1 : "",
            a2 ? a2 : "", rc, *out ? *out : "", *err ? *err : "");
    free(bin);
    return rc;
}

/* keel-chaos run ARGS... --keeld /bin/true --zk-conf DIR/nozk --out
 * DIR/sub, where DIR/nozk/zk.sh fails at once: what run says before it
 * starts anything, for it stops at ZooKeeper (exit 4). */
static char *run_until_zk(const char *sub, const char *const *args)
{
    char *bin = tu_bin("keel-chaos"), *out = NULL, *err = NULL, run[600],
         nozk[600], script[620];
    const char *argv[32];
    int n = 0, rc;
    FILE *f;

    snprintf(nozk, sizeof nozk, "%s/nozk", dir);
    snprintf(script, sizeof script, "%s/zk.sh", nozk);
    mkdir(nozk, 0700);
    f = fopen(script, "w");
    ck_assert_ptr_nonnull(f);
    fputs("echo 'no ZooKeeper here' >&2\nexit 1\n", f);
    fclose(f);
    snprintf(run, sizeof run, "%s/%s", dir, sub);
    argv[n++] = bin;
    argv[n++] = "run";
    while (*args != NULL && n < 24)
        argv[n++] = *args++;
    argv[n++] = "--keeld";
    argv[n++] = "/bin/true";
    argv[n++] = "--zk-conf";
    argv[n++] = nozk;
    argv[n++] = "--out";
    argv[n++] = run;
    argv[n] = NULL;
    rc = tu_run(argv, &out, &err);
    fprintf(stderr, "--- keel-chaos run (%s): exit %d\n%s%s", sub, rc,
            out ? out : "", err ? err : "");
    ck_assert_int_eq(rc, 4);
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos: ZooKeeper: "));
    free(err);
    free(bin);
    return out;
}

static int chaos(char **out, char **err, const char *a1, const char *a2,
                 const char *a3, const char *a4)
{
    return chaos6(out, err, a1, a2, a3, a4, NULL, NULL);
}

#define LINE(i, t, c, op, args, rest)                                        \
    "{\"t\":\"" t "\",\"index\":" #i ",\"time_ns\":1" #i ",\"client\":" #c \
    ",\"actor\":\"counter/c1\",\"op\":\"" op "\",\"args\":" args rest "}\n"

/* Two increments, a final get that sees both. */
static const char *good_history =
    LINE(0, "invoke", 1, "incr", "1", "")
    LINE(1, "invoke", 2, "incr", "1", "")
    LINE(2, "ok", 2, "incr", "1", ",\"result\":1")
    LINE(3, "ok", 1, "incr", "1", ",\"result\":2")
    LINE(4, "invoke", 1, "get", "null", ",\"final\":true")
    LINE(5, "ok", 1, "get", "null", ",\"result\":2,\"final\":true");

/* counter/c1 is 63 31 in hex; n1 hands it to n2. */
static const char *n1_log =
    "1000 activate counter 6331 shard 5 epoch 1\n"
    "2000 deactivate counter 6331 shard 5 epoch 1\n";
static const char *n2_log = "2001 activate counter 6331 shard 5 epoch 2\n";

START_TEST(all_pass)
{
    char *out, *err;

    put("history.jsonl", good_history);
    put("actlogs/n1.log", n1_log);
    put("actlogs/n2.log", n2_log);
    put("actlogs/README", "not a log\n");
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "3 ok, 0 fail, 0 info, 0 without "
                                      "completion; 1 final reads) by 2 "
                                      "clients on 1 actors"));
    ck_assert_ptr_nonnull(strstr(out, "linearizability: PASS (1 actors: 0 "
                                      "register, 1 counter, 0 set;"));
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: PASS (2 "
                                      "nodes, 2 activations of 1 actors, 1 "
                                      "moves between nodes"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS\n"));
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
}
END_TEST

/* No activation logs, no final reads: those checks are skipped, said so,
 * and the run still passes on what was checked. */
START_TEST(skipped_checks)
{
    char *out, *err;

    put("history.jsonl", LINE(0, "invoke", 1, "incr", "1", "")
                             LINE(1, "ok", 1, "incr", "1", ",\"result\":1"));
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: SKIPPED"));
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: SKIPPED (no "));
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS"));
    free(out);
    free(err);
    put("actlogs/notes.txt", "x\n");
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: SKIPPED (no "
                                      "NODE.log in "));
    free(out);
    free(err);
}
END_TEST

/* A final get that lost an increment: both history checks fail. */
START_TEST(violations_exit_1)
{
    char *out, *err;

    put("history.jsonl",
        LINE(0, "invoke", 1, "incr", "1", "")
        LINE(1, "ok", 1, "incr", "1", ",\"result\":1")
        LINE(2, "invoke", 1, "incr", "1", "")
        LINE(3, "ok", 1, "incr", "1", ",\"result\":2")
        LINE(4, "invoke", 2, "get", "null", ",\"final\":true")
        LINE(5, "ok", 2, "get", "null", ",\"result\":1,\"final\":true"));
    put("actlogs/n1.log", n1_log);
    put("actlogs/n2.log", n2_log);
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "linearizability: FAIL"));
    ck_assert_ptr_nonnull(strstr(out, "counter/c1 (counter model): not "
                                      "linearizable"));
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: FAIL"));
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: FAIL\n"));
    free(out);
    free(err);

    /* A good history, but the two nodes overlap. */
    put("history.jsonl", good_history);
    put("actlogs/n2.log", "1500 activate counter 6331 shard 5 epoch 2\n");
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "linearizability: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: FAIL"));
    ck_assert_ptr_nonnull(strstr(out, "counter/6331 (\"c1\") active on two "
                                      "nodes at once"));
    free(out);
    free(err);
}
END_TEST

START_TEST(bad_input_exit_2)
{
    char *out, *err, want[600];

    put("history.jsonl", LINE(0, "invoke", 1, "incr", "1", "")
                             "{\"t\":\"ok\",\"index\":1}\n");
    put("actlogs/n1.log", n1_log);
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 2);
    snprintf(want, sizeof want, "keel-chaos: %s/history.jsonl:2: \"time_ns\" "
                                "missing\n",
             dir);
    ck_assert_str_eq(err, want);
    ck_assert_ptr_nonnull(strstr(out, "history: BAD INPUT: "));
    ck_assert_ptr_nonnull(strstr(out, "linearizability: not checked"));
    /* What does not depend on the history is still checked. */
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: BAD INPUT\n"));
    free(out);
    free(err);

    put("history.jsonl", good_history);
    put("actlogs/n2.log", "2000 activate counter 6331 shard 5\n");
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "/actlogs/n2.log:1: expected"));
    ck_assert_ptr_nonnull(strstr(out, "linearizability: PASS"));
    free(out);
    free(err);

    /* A violation outweighs bad input. */
    put("actlogs/n1.log", "1000 activate counter 6331 shard 5 epoch 1\n");
    put("actlogs/n3.log", "1000 activate counter 6331 shard 5 epoch 1\n");
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 2);
    free(out);
    free(err);
    put("actlogs/n2.log", "");
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 1);
    free(out);
    free(err);
    put("history.jsonl", "not json\n");
    ck_assert_int_eq(chaos(&out, &err, "check", dir, NULL, NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "verdict: FAIL"));
    free(out);
    free(err);

    ck_assert_int_eq(chaos(&out, &err, "check", "/nonexistent/run", NULL,
                           NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos: check: no run directory "
                                      "/nonexistent/run (No such file"));
    free(out);
    free(err);
}
END_TEST

/* A bound on the search that is too low: undecided, exit 3. */
START_TEST(undecided_exit_3)
{
    char *out, *err;

    put("history.jsonl", good_history);
    ck_assert_int_eq(chaos(&out, &err, "check", "--max-states", "1", dir), 3);
    ck_assert_ptr_nonnull(strstr(out, "linearizability: UNDECIDED"));
    /* The count given is the bound, not one past it. */
    ck_assert_ptr_nonnull(strstr(out, "counter/c1: undecided after 1 "
                                      "configurations (raise --max-states)"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: UNDECIDED"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "check", "--max-states", "100", dir),
                     0);
    free(out);
    free(err);
}
END_TEST

/* The commands are run and check; other words are unknown commands. run
 * refuses bad options before it starts anything. */
START_TEST(usage)
{
    char *out, *err, path[600];

    ck_assert_int_eq(chaos(&out, &err, NULL, NULL, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "usage: keel-chaos run "));
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos check [--max-states N]"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "--help", NULL, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: keel-chaos run "));
    ck_assert_ptr_nonnull(strstr(out, "--faults LIST"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "bogus", dir, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos: unknown command "
                                      "'bogus'"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--nodes", "0", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "--nodes must lie within 1 and"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--faults", "kill,fire", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "unknown fault 'fire'"));
    free(out);
    free(err);
    /* An empty list (an unset variable in a script) is no "none". */
    ck_assert_int_eq(chaos(&out, &err, "run", "--faults", "", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "--faults is empty"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--workload", "queue", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "--workload: register, counter"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", dir, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "run takes options only"));
    free(out);
    free(err);
    /* A usage error ends with a pointer to --help, not the option list
     * that would push the error off the screen. */
    ck_assert_int_eq(chaos(&out, &err, "run", "--bogus", NULL, NULL), 2);
    ck_assert_msg(strstr(err, "'--bogus'") != NULL &&
                      strstr(err, "Try 'keel-chaos --help' for every "
                                  "option.\n") != NULL &&
                      strstr(err, "--faults LIST") == NULL,
                  "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "check", dir, dir, NULL), 2);
    ck_assert_msg(strncmp(err, "keel-chaos: check takes one directory\n"
                               "usage: keel-chaos run ",
                          60) == 0 &&
                      strstr(err, "--faults LIST") == NULL,
                  "%s", err);
    free(out);
    free(err);
    /* Refused before anything starts or is written. */
    ck_assert_int_eq(chaos(&out, &err, "run", "--replicas", "6", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "--replicas"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--replica-dead-ms", "0",
                           NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "--replica-dead-ms must lie within 1 "
                                      "and 86400000"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--node-arg", "--data=/tmp",
                           NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "--node-arg --data=/tmp: the run sets "
                                      "--data itself"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--node-arg", "--replicas",
                           NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "(give it to keel-chaos run)"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--node-arg", "--load=x.so:a",
                           NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "(give it to keel-chaos run: --load "
                                      "PLUGIN.so[:ARGS])"));
    free(out);
    free(err);
    /* --load PATH.so:ARGS, as keeld takes it: the file is what comes
     * before the first ':' (accepted here, the run then stops at the
     * keeld that is not there); a missing one is named. */
    put("plugin.so", "not really\n");
    snprintf(path, sizeof path, "%s/plugin.so:buggy:and more", dir);
    ck_assert_int_eq(chaos6(&out, &err, "run", "--load", path, "--keeld",
                            "/nonexistent/keeld", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "no keeld at /nonexistent/keeld"));
    ck_assert_ptr_null(strstr(err, "--load"));
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/noplugin.so:buggy", dir);
    ck_assert_int_eq(chaos(&out, &err, "run", "--load", path, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "/noplugin.so:buggy: no such file "));
    ck_assert_ptr_nonnull(strstr(err, "/noplugin.so (the path ends at the "
                                      "first ':'"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--load", ":buggy", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "give PATH.so or PATH.so:ARGS"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--zk-servers", "2", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "--zk-servers takes 1 or 3, not 2"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--partitions", "bogus", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "unknown partition shape 'bogus'"));
    free(out);
    free(err);
    /* A node cut off with one of three servers needs the three. */
    ck_assert_int_eq(chaos(&out, &err, "run", "--faults=partition",
                           "--partitions", "with-zk-server"),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "with-zk-server needs an ensemble "
                                      "(--zk-servers 3)"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--partitions", "majority",
                           NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "--partitions needs partition among"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "run", "--keeld", "/nonexistent/keeld",
                           NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "no keeld at /nonexistent/keeld"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "check", NULL, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "check takes one directory"));
    free(out);
    free(err);
    ck_assert_int_eq(chaos(&out, &err, "check", "--max-states", "x", dir), 2);
    ck_assert_ptr_nonnull(strstr(err, "--max-states takes a number"));
    free(out);
    free(err);
    /* report names a run directory that is not there as such, not as
     * the page it could not write. */
    snprintf(path, sizeof path, "%s/nosuch", dir);
    ck_assert_int_eq(chaos(&out, &err, "report", path, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos: report: no run "
                                      "directory "));
    ck_assert_ptr_nonnull(strstr(err, "/nosuch (No such file or "
                                      "directory)"));
    ck_assert_ptr_null(strstr(err, "report.html"));
    free(out);
    free(err);
    put("afile", "x\n");
    snprintf(path, sizeof path, "%s/afile", dir);
    ck_assert_int_eq(chaos(&out, &err, "report", path, NULL, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err, "/afile is not a directory: give the "
                                      "run directory"));
    free(out);
    free(err);
}
END_TEST

/* What run says before it starts: kinds the cluster cannot take are
 * named and left out of the schedule; a --faults of nothing but those is
 * warned of; --replicas above --nodes is taken as keeld takes it, and
 * said; kinds a short run has no room for are named. */
START_TEST(run_says_what_it_cannot_do)
{
    char *out;

    {
        const char *args[] = {"--nodes", "2", "--faults", "pair,kill",
                              "--seconds", "60", NULL};
        out = run_until_zk("pair2", args);
    }
    ck_assert_ptr_nonnull(strstr(out, "keel-chaos: pair faults skipped: with "
                                      "2 nodes a pair (a node killed, "
                                      "another stopped) leaves none to "
                                      "serve: it needs --nodes 3 or more; "
                                      "none is planned\n"));
    /* "  planned: +  6.0 s kill n1 for 2.5 s" */
    ck_assert_ptr_null(strstr(out, " s pair n"));
    ck_assert_ptr_nonnull(strstr(out, " s kill n"));
    ck_assert_ptr_null(strstr(out, "warning: no fault"));
    free(out);
    {
        const char *args[] = {"--nodes", "2", "--faults", "pair",
                              "--seconds", "60", NULL};
        out = run_until_zk("pair-only", args);
    }
    ck_assert_ptr_nonnull(strstr(out, "faults pair: 0 scheduled\n"));
    ck_assert_ptr_nonnull(strstr(out, "warning: no fault of --faults pair "
                                      "can be made with 2 nodes: this run "
                                      "injects none\n"));
    ck_assert_ptr_null(strstr(out, "no fault fits"));
    free(out);
    {
        const char *args[] = {"--nodes", "3", "--replicas", "4", "--faults",
                              "join", NULL};
        out = run_until_zk("r4", args);
    }
    ck_assert_ptr_nonnull(strstr(out, "  --replicas 4 with 3 nodes: a unit "
                                      "has min(R, members) replicas, as "
                                      "keeld places them: 3 here, one more "
                                      "while a join fault's spare node is "
                                      "in\n"));
    free(out);
    {
        const char *args[] = {"--nodes", "1", "--replicas", "3", "--faults",
                              "wipe", NULL};
        out = run_until_zk("r3n1", args);
    }
    ck_assert_ptr_nonnull(strstr(out, "a unit has min(R, members) replicas, "
                                      "as keeld places them: 1 here\n"));
    ck_assert_ptr_nonnull(strstr(out, "keel-chaos: wipe faults skipped: with "
                                      "one node a node's units have no "
                                      "other copy"));
    free(out);
    /* A run too short for one fault of each kind asked for names those
     * left out, and the --seconds that fits them. */
    {
        const char *args[] = {"--faults", "all", "--seconds", "40", NULL};
        out = run_until_zk("short", args);
    }
    ck_assert_msg(strstr(out, "  not scheduled: ") != NULL &&
                      strstr(out, "give --seconds 132 or more for one of "
                                  "each kind asked for)\n") != NULL,
                  "%s", out);
    free(out);
    {
        const char *args[] = {"--faults", "kill,stop", "--seconds", "60",
                              NULL};
        out = run_until_zk("fits", args);
    }
    ck_assert_ptr_null(strstr(out, "not scheduled"));
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_check");
    TCase *tc = tcase_create("check");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, all_pass);
    tcase_add_test(tc, skipped_checks);
    tcase_add_test(tc, violations_exit_1);
    tcase_add_test(tc, bad_input_exit_2);
    tcase_add_test(tc, undecided_exit_3);
    tcase_add_test(tc, usage);
    tcase_add_test(tc, run_says_what_it_cannot_do);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
