/* keel-chaos run --zk-servers 3, against keeld: 3 nodes with three
 * replicas on a 3-server ZooKeeper ensemble for 25 s, while a node is cut
 * off together with the ZooKeeper server that leads (the with-zk-server
 * partition: that server loses its quorum, the node cannot reach the
 * other two, so its session ends and it must fence itself) and another
 * server is killed and restarted while the other two keep the quorum.
 * Every check must pass; faults.jsonl and events.jsonl must show what was
 * done to which server. Where the test may not make network namespaces
 * the partition is skipped (the run says so) and the rest still runs.
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
    dir = tu_tmpdir("chaos-ens");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* Whether a line of text holds both a and b. */
static int line_with(const char *text, const char *a, const char *b)
{
    const char *p;

    for (p = text; (p = strstr(p, a)) != NULL; p++) {
        const char *bol = p, *eol = strchr(p, '\n'), *q;
        while (bol > text && bol[-1] != '\n')
            bol--;
        q = strstr(bol, b);
        if (q != NULL && (eol == NULL || q < eol))
            return 1;
    }
    return 0;
}

START_TEST(node_cut_with_its_server)
{
    char *bin = tu_bin("keel-chaos"), *keeld = tu_bin("keeld");
    char run[512], *out = NULL, *err = NULL, path[600], *text, *p;
    char node[8] = "", zk[8] = "";
    int rc, parted;

    snprintf(run, sizeof run, "%s/run", dir);
    {
        const char *argv[] = {bin,           "run",
                              "--zk-servers", "3",
                              "--nodes",     "3",
                              "--replicas",  "3",
                              "--seconds",   "25",
                              "--faults",    "partition,zk",
                              "--partitions", "with-zk-server",
                              "--seed",      "2",
                              "--out",       run,
                              "--keeld",     keeld,
                              "--zk-conf",   KEEL_SOURCE_DIR "/zk-conf",
                              NULL};
        rc = tu_run_for(argv, 240, &out, &err);
    }
    fprintf(stderr, "--- keel-chaos run --zk-servers 3: exit %d\n%s%s", rc,
            out ? out : "", err ? err : "");
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "ZooKeeper: an ensemble of 3 servers"));
    ck_assert_ptr_nonnull(strstr(out, "linearizability: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "replicas-agree: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "verdict: PASS"));
    ck_assert_ptr_null(strstr(out, "warning:"));

    snprintf(path, sizeof path, "%s/run.json", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "\"zk_servers\":3,"));
    free(text);
    /* The report has a lane per server. */
    snprintf(path, sizeof path, "%s/report.html", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "id=verdict>PASS<"));
    ck_assert_ptr_nonnull(strstr(text, ">zk1</text>"));
    ck_assert_ptr_nonnull(strstr(text, ">zk3</text>"));
    free(text);

    /* Seed 2 deals the partition with the leader first, then a kill of
     * zk2: one server, so the ensemble serves throughout. */
    ck_assert_int_eq(tu_chaos_faults(run, "zk", "done"), 1);
    snprintf(path, sizeof path, "%s/events.jsonl", run);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert(line_with(text, "\"node\":\"zk2\"", "\"event\":\"kill\""));
    ck_assert(line_with(text, "\"node\":\"zk2\"", "\"event\":\"start\""));
    ck_assert(!line_with(text, "\"node\":\"zk\"", "\"event\""));
    parted = strstr(out, "keel-chaos: partition faults skipped: ") == NULL;
    if (!parted) {
        fprintf(stderr, "test_chaos_ensemble: partitions could not be made "
                        "here; the zk fault was\n");
        ck_assert_int_eq(tu_chaos_faults(run, "partition", "done"), 0);
        free(text);
        goto done;
    }
    ck_assert_int_eq(tu_chaos_faults(run, "partition", "done"), 1);
    /* Which node and which server were cut, from faults.jsonl. */
    {
        char *faults;
        snprintf(path, sizeof path, "%s/faults.jsonl", run);
        faults = tu_read_file(path);
        ck_assert_ptr_nonnull(faults);
        p = strstr(faults, "\"shape\":\"with-zk-server\"");
        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(strstr(p, "\"zk_planned\":\"leader\""));
        ck_assert_int_eq(sscanf(strstr(p, "\"node\":\""), "\"node\":\"%7[^\"]",
                                node),
                         1);
        ck_assert_int_eq(
            sscanf(strstr(p, "with ZooKeeper "), "with ZooKeeper %7s", zk), 1);
        free(faults);
    }
    /* The node and the server were cut and joined again. */
    {
        char a[32], b[32];
        snprintf(a, sizeof a, "\"node\":\"%s\"", node);
        ck_assert(line_with(text, a, "\"event\":\"partition\""));
        ck_assert(line_with(text, a, "\"event\":\"heal\""));
        snprintf(b, sizeof b, "\"node\":\"%s\"", zk);
        ck_assert(line_with(text, b, "\"event\":\"partition\""));
        ck_assert(line_with(text, b, "\"event\":\"heal\""));
    }
    free(text);
    /* Cut from the two servers that kept the quorum for longer than its
     * session timeout, the node fenced itself. */
    snprintf(path, sizeof path, "%s/nodes/%s.log", run, node);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "fenced"));
    free(text);
done:
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
        fprintf(stderr, "test_chaos_ensemble: skipped: ZooKeeper is not "
                        "installed (sh scripts/install-deps)\n");
        return 77;
    }
    s = suite_create("chaos_ensemble");
    tc = tcase_create("run");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, node_cut_with_its_server);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
