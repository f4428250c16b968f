/* Moves that change course while the owners release, end to end: real
 * ZooKeeper, real keeld processes. Three nodes serve a counter load; a
 * fourth joins and is stopped (SIGSTOP) while units stream to it, then
 * drained while stopped, and its session expires. The owners must call
 * off what they had not handed over and serve those units again; only
 * units whose data really is on the stopped node may stay unavailable,
 * and those come back with it. No acknowledged increment is lost.
 * Every wait is bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "testutil.h"
#include "zk.h"

#define MAXN 4
#define COUNTERS 32

static tu_zk server;
static char *dir;
static tu_keeld nodes[MAXN];
static char cluster[32];

static void suite_setup(void)
{
    if (!tu_zk_available()) {
        fprintf(stderr, "ZooKeeper is not installed (sh scripts/install-deps)\n");
        exit(1);
    }
    if (tu_zk_start(&server, 1, 200) != 0)
        exit(1);
}

static void suite_teardown(void)
{
    tu_zk_stop(&server);
}

static void setup(void)
{
    static int round;
    dir = tu_tmpdir("course");
    memset(nodes, 0, sizeof nodes);
    snprintf(cluster, sizeof cluster, "cc%d-%d", (int)getpid(), round++);
}

static void teardown(void)
{
    int i;

    for (i = 0; i < MAXN; i++) {
        if (nodes[i].pid > 0) {
            kill(nodes[i].pid, SIGCONT);
            tu_keeld_stop(&nodes[i], SIGKILL);
        }
        tu_keeld_free(&nodes[i]);
    }
    tu_rmrf(dir);
    free(dir);
}

static void start_node(int i)
{
    char data[512], id[16];
    const char *extra[] = {"--shards", "64", "--zk", server.hosts,
                           "--cluster", cluster, "--node-id", id,
                           "--zk-session-timeout", "2000",
                           "--hold-timeout", "1000", NULL};

    snprintf(data, sizeof data, "%s/n%d", dir, i);
    snprintf(id, sizeof id, "n%d", i);
    ck_assert_int_eq(tu_keeld_start(&nodes[i], data, 0, extra), 0);
}

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

enum { C_OK = 0, C_UNAVAIL, C_UNKNOWN };

/* `keel call counter cN OP` through node i, at most 3 s for the answer.
 * C_OK with the value; C_UNAVAIL when the node says EUNAVAIL (the call was
 * held and never ran); C_UNKNOWN otherwise (it may have run). */
static int counter(int i, int c, const char *op, long *value)
{
    char name[16], *out = NULL, *err = NULL;
    int rc, st;

    snprintf(name, sizeof name, "c%d", c);
    rc = tu_keel(nodes[i].addr, &out, &err, "-t", "3000", "call", "counter",
                 name, op, NULL);
    if (rc == 0 && out != NULL) {
        *value = strtol(out, NULL, 10);
        st = C_OK;
    } else {
        st = err != NULL && strstr(err, "EUNAVAIL") != NULL ? C_UNAVAIL
                                                            : C_UNKNOWN;
    }
    free(out);
    free(err);
    return st;
}

/* The owner node of counter c as node i sees it ("n3"), into owner. */
static void where(int i, int c, char *owner, size_t cap)
{
    char name[16], *out = NULL, *err = NULL, *p;

    snprintf(name, sizeof name, "c%d", c);
    owner[0] = '\0';
    if (tu_keel(nodes[i].addr, &out, &err, "where", "counter", name,
                NULL) == 0 &&
        out != NULL && (p = strstr(out, "\nowner ")) != NULL)
        sscanf(p, "\nowner %15s", owner);
    (void)cap;
    free(out);
    free(err);
}

/* Whether `keel nodes` through node i lists node `id`. */
static int listed(int i, const char *id)
{
    char *out = NULL, *err = NULL, pat[32];
    int yes;

    snprintf(pat, sizeof pat, "\nnode %s ", id);
    yes = tu_keel(nodes[i].addr, &out, &err, "nodes", NULL) == 0 &&
          out != NULL && strstr(out, pat) != NULL;
    free(out);
    free(err);
    return yes;
}

static long acked[COUNTERS];
static int unknown[COUNTERS]; /* increments of unknown fate */

/* One increment of every counter, through the nodes in `via`. */
static void load_round(const int *via, int nvia, int r)
{
    int c;

    for (c = 0; c < COUNTERS; c++) {
        long v = -1;
        int st = counter(via[(r + c) % nvia], c, "incr", &v);
        if (st == C_OK) {
            if (unknown[c] == 0)
                ck_assert_int_eq(v, acked[c] + 1);
            else
                ck_assert(v > acked[c] && v <= acked[c] + 1 + unknown[c]);
            acked[c]++;
        } else if (st == C_UNKNOWN) {
            unknown[c]++;
        }
    }
}

/* Reads counter c through node i; checks it against what was
 * acknowledged. Returns the status. */
static int check_count(int i, int c)
{
    long v = -1;
    int st = counter(i, c, "get", &v);

    if (st == C_OK) {
        if (v < acked[c] || v > acked[c] + unknown[c])
            tu_keeld_dump_logs(nodes, MAXN);
        ck_assert_msg(v >= acked[c] && v <= acked[c] + unknown[c],
                      "c%d via n%d: %ld, acknowledged %ld (+%d unknown)", c,
                      i, v, acked[c], unknown[c]);
    }
    return st;
}

START_TEST(target_stopped_mid_stream_then_drained)
{
    const int three[] = {0, 1, 2};
    char owner[16], *out = NULL, *err = NULL;
    double t0;
    int i, c, r, on_d, pending;

    memset(acked, 0, sizeof acked);
    memset(unknown, 0, sizeof unknown);
    for (i = 0; i < 3; i++)
        start_node(i);
    /* settled: every counter answers */
    t0 = now_s();
    do {
        long v;
        pending = 0;
        for (c = 0; c < COUNTERS; c++)
            pending += counter(c % 3, c, "get", &v) != C_OK;
    } while (pending > 0 && now_s() - t0 < 90);
    ck_assert_int_eq(pending, 0);
    for (r = 0; r < 2; r++)
        load_round(three, 3, r);

    /* n3 joins, running only in short slices until it is a member, and
     * stays stopped from then on: the moves to it start while it cannot
     * answer (a unit it received in its last slice is its own). */
    start_node(3);
    t0 = now_s();
    ck_assert_int_eq(kill(nodes[3].pid, SIGSTOP), 0);
    while (!listed(0, "n3") && now_s() - t0 < 30) {
        kill(nodes[3].pid, SIGCONT);
        usleep(2000);
        kill(nodes[3].pid, SIGSTOP);
        usleep(20000);
    }
    ck_assert(listed(0, "n3"));
    /* Drained while stopped (refused only if its session has expired
     * already); the load goes on; its session expires. */
    if (tu_keel(nodes[1].addr, &out, &err, "node", "drain", "n3", NULL) != 0)
        ck_assert(!listed(1, "n3"));
    free(out);
    free(err);
    for (r = 2; r < 4; r++)
        load_round(three, 3, r);
    t0 = now_s();
    while (listed(0, "n3") && now_s() - t0 < 30)
        usleep(50000);
    ck_assert(!listed(0, "n3"));

    /* Within a bound, every counter answers again, except those whose
     * data went to n3 before it stopped: their owner is n3, and they wait
     * for it. */
    t0 = now_s();
    do {
        pending = on_d = 0;
        for (c = 0; c < COUNTERS; c++) {
            where(0, c, owner, sizeof owner);
            if (strcmp(owner, "n3") == 0) {
                on_d++;
                continue;
            }
            if (check_count(c % 3, c) != C_OK)
                pending++;
        }
    } while (pending > 0 && now_s() - t0 < 20);
    if (pending > 0)
        tu_keeld_dump_logs(nodes, MAXN);
    ck_assert_msg(pending == 0,
                  "%d counters not owned by the stopped node stay "
                  "unavailable",
                  pending);
    for (c = 0; c < COUNTERS; c++) {
        long v;
        where(0, c, owner, sizeof owner);
        if (strcmp(owner, "n3") == 0)
            ck_assert_int_eq(counter(1, c, "get", &v), C_UNAVAIL);
    }
    fprintf(stderr, "course: %d of %d counters wait for n3\n", on_d,
            COUNTERS);
    for (r = 4; r < 6; r++)
        load_round(three, 3, r);

    /* n3 resumes: fenced at once, it stores none of the streams that wait
     * in its sockets, rejoins as a new incarnation and serves what it
     * holds. Then every counter answers through every node. */
    ck_assert_int_eq(kill(nodes[3].pid, SIGCONT), 0);
    t0 = now_s();
    do {
        pending = 0;
        for (c = 0; c < COUNTERS; c++)
            for (i = 0; i < 4; i++)
                if (check_count(i, c) != C_OK)
                    pending++;
    } while (pending > 0 && now_s() - t0 < 60);
    if (pending > 0)
        tu_keeld_dump_logs(nodes, MAXN);
    ck_assert_int_eq(pending, 0);
    for (c = 0; c < COUNTERS; c++)
        if (unknown[c] == 0)
            for (i = 0; i < 4; i++) {
                long v = -1;
                ck_assert_int_eq(counter(i, c, "get", &v), C_OK);
                ck_assert_int_eq(v, acked[c]);
            }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_course");
    TCase *tc = tcase_create("course");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, target_stopped_mid_stream_then_drained);
    suite_add_tcase(s, tc);
    suite_setup();
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    suite_teardown();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
