/* keel-chaos run interrupted: SIGINT in the middle of a run (during a
 * partition where the test may make network namespaces) ends it through
 * its usual end, says so, and then ends as the signal would have (130);
 * it killed its nodes and stopped ZooKeeper, and removed its namespaces
 * and bridge; its directory keeps what it recorded,
 * which check calls INCOMPLETE (not PASS), and run refuses to use the
 * name again. Options the run cannot use are refused before it starts:
 * a --zk-conf without zk.sh. keel-chaos --version answers.
 *
 * Skipped (exit 77) without the ZooKeeper server package. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("chaos-int");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* Whether the file at path (re-read every 100 ms, up to secs) comes to
 * hold text. */
static int wait_text(const char *path, const char *text, int secs)
{
    int i;

    for (i = 0; i < secs * 10; i++) {
        char *s = tu_read_file(path);
        int found = s != NULL && strstr(s, text) != NULL;
        free(s);
        if (found)
            return 1;
        tu_sleep_ms(100);
    }
    return 0;
}

/* Whether the process pid is gone, within 10 s (a process killed as
 * the run ended may still await its reaping by init). The nodes would
 * also die with the harness (their parent-death signal), so the test
 * asks the run's log too: the run itself killed each. */
static int gone(long pid)
{
    int i;

    for (i = 0; i < 100; i++) {
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
            return 1;
        tu_sleep_ms(100);
    }
    return 0;
}

START_TEST(an_interrupted_run_cleans_up_and_is_incomplete)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld");
    char run[512], opath[600], epath[600], path[700], *out, *err, *log;
    const char *p;
    int rc, nodes = 0, parts;
    pid_t pid;

    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(opath, sizeof opath, "%s/out.txt", dir);
    snprintf(epath, sizeof epath, "%s/err.txt", dir);
    {
        const char *argv[] = {bin,         "run",
                              "--nodes",   "3",
                              "--replicas", "3",
                              "--seconds", "60",
                              "--faults",  "partition",
                              "--seed",    "3",
                              "--out",     run,
                              "--keeld",   keeld,
                              "--zk-conf", KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        pid = tu_spawn(argv, opath, epath);
    }
    ck_assert_int_gt(pid, 0);
    ck_assert_msg(wait_text(opath, "clients running", 120),
                  "the run's clients never started");
    out = tu_read_file(opath);
    parts = strstr(out, "partition faults skipped") == NULL;
    free(out);
    /* Where namespaces can be made, in the middle of a partition (its
     * progress line, "+  7.0 s  partition: ..."). */
    if (parts)
        ck_assert_msg(wait_text(opath, " s  partition: ", 60),
                      "no partition began");
    else
        tu_sleep_ms(2000);
    ck_assert_int_eq(kill(pid, SIGINT), 0);
    rc = tu_wait_exit(pid, 90);
    out = tu_read_file(opath);
    err = tu_read_file(epath);
    fprintf(stderr, "--- keel-chaos run, interrupted: exit %d\n%s%s", rc,
            out ? out : "", err ? err : "");
    /* Ended as by the signal, after its cleanup, as a shell expects. */
    ck_assert_int_eq(rc, 256 + SIGINT);
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos: interrupted ("));
    ck_assert_ptr_nonnull(strstr(err, "the run did not finish and is not "
                                      "checked"));
    ck_assert_ptr_null(strstr(out, "verdict:"));
    free(out);
    free(err);

    /* Nothing of the run runs on: nodes, ZooKeeper, namespaces. */
    snprintf(path, sizeof path, "%s/run.log", run);
    log = tu_read_file(path);
    ck_assert_ptr_nonnull(log);
    for (p = log; (p = strstr(p, " started (pid ")) != NULL; p++) {
        long npid = atol(p + strlen(" started (pid "));
        char killed[64];
        ck_assert_int_gt(npid, 0);
        ck_assert_msg(gone(npid), "node pid %ld still runs", npid);
        snprintf(killed, sizeof killed, " killed (pid %ld)", npid);
        ck_assert_msg(strstr(log, killed) != NULL,
                      "the run did not kill node pid %ld", npid);
        nodes++;
    }
    ck_assert_int_eq(nodes, 3);
    ck_assert_msg(strstr(log, "zookeeper stopped") != NULL,
                  "the run did not stop ZooKeeper");
    snprintf(path, sizeof path, "%s/zk/zk.pid", run);
    {
        char *zp = tu_read_file(path);
        if (zp != NULL) /* zk.sh removes it when it stops the server */
            ck_assert_msg(gone(atol(zp)), "ZooKeeper (pid %s) still runs",
                          zp);
        free(zp);
    }
    if (parts) {
        char ns[64], *q;
        struct stat st;
        p = strstr(log, "namespaces ");
        ck_assert_ptr_nonnull(p);
        snprintf(ns, sizeof ns, "%s", p + strlen("namespaces "));
        q = strstr(ns, "..");
        ck_assert_ptr_nonnull(q);
        *q = '\0'; /* "kcPID-n0" */
        snprintf(path, sizeof path, "/run/netns/%s", ns);
        ck_assert_msg(stat(path, &st) != 0, "namespace %s is left", ns);
        q = strstr(ns, "-n0");
        ck_assert_ptr_nonnull(q);
        strcpy(q, "br"); /* the bridge, "kcPIDbr" */
        snprintf(path, sizeof path, "/sys/class/net/%s", ns);
        ck_assert_msg(stat(path, &st) != 0, "bridge %s is left", ns);
    }
    free(log);
    snprintf(path, sizeof path, "%s/run.json", run);
    ck_assert_int_ne(access(path, F_OK), 0);

    /* What it recorded checks, as a run that did not finish. */
    {
        const char *argv[] = {bin, "check", run, NULL};
        rc = tu_run_for(argv, 120, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos check: exit %d\n%s%s", rc, out, err);
    ck_assert_int_eq(rc, 2);
    ck_assert_ptr_nonnull(strstr(out, "run: not finished: "));
    ck_assert_ptr_nonnull(strstr(out, "verdict: INCOMPLETE\n"));
    ck_assert_ptr_null(strstr(out, "verdict: PASS"));
    free(out);
    free(err);
    {
        const char *argv[] = {bin, "report", run, NULL};
        rc = tu_run_for(argv, 120, &out, &err);
    }
    ck_assert_int_eq(rc, 0);
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/report.html", run);
    out = tu_read_file(path);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(strstr(out, "id=verdict>INCOMPLETE<"));
    free(out);

    /* Its name is taken, and the refusal says why. */
    {
        const char *argv[] = {bin, "run", "--seconds", "5", "--out", run,
                              "--keeld", keeld, "--zk-conf",
                              KEEL_SOURCE_DIR "/zk-conf", NULL};
        rc = tu_run_for(argv, 60, &out, &err);
    }
    ck_assert_int_eq(rc, 2);
    ck_assert_ptr_nonnull(strstr(err, "holds a run already (one that did "
                                      "not finish"));
    free(out);
    free(err);
    free(bin);
    free(keeld);
}
END_TEST

START_TEST(unusable_options_are_refused_first)
{
    char *bin = tu_bin("keel-chaos"), *out = NULL, *err = NULL, run[512];
    int rc;

    snprintf(run, sizeof run, "%s/run", dir);
    {
        const char *argv[] = {bin, "run", "--zk-conf", dir, "--out", run,
                              NULL};
        rc = tu_run_for(argv, 60, &out, &err);
    }
    ck_assert_int_eq(rc, 2);
    ck_assert_ptr_nonnull(strstr(err, "keel-chaos: no zk.sh in "));
    ck_assert_int_ne(access(run, F_OK), 0); /* nothing made */
    free(out);
    free(err);
    {
        const char *argv[] = {bin, "--version", NULL};
        rc = tu_run_for(argv, 30, &out, &err);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "keel-chaos "));
    ck_assert(strchr(out, '.') != NULL);
    free(out);
    free(err);
    free(bin);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *tc;

    if (!tu_zk_available()) {
        fprintf(stderr, "test_chaos_interrupt: skipped: ZooKeeper is not "
                        "installed (sh scripts/install-deps)\n");
        return 77;
    }
    s = suite_create("chaos_interrupt");
    tc = tcase_create("interrupt");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, an_interrupted_run_cleans_up_and_is_incomplete);
    tcase_add_test(tc, unusable_options_are_refused_first);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
