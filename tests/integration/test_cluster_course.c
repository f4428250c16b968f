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

#include "cluster.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

#define COUNTERS 32

static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "course", "cc");
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

static void start_node(int i)
{
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, 0, "--hold-timeout",
                                           "500", NULL),
                     0);
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
    rc = tu_keel(fx.nodes[i].addr, &out, &err, "-t", "3000", "call", "counter",
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
    char name[16];

    snprintf(name, sizeof name, "c%d", c);
    tu_cluster_owner_of(&fx, i, "counter", name, owner, cap);
}

/* Whether `keel nodes` through node i lists node `id`. */
static int listed(int i, const char *id)
{
    char *out = NULL, *err = NULL, pat[32];
    int yes;

    snprintf(pat, sizeof pat, "\nnode %s ", id);
    yes = tu_keel(fx.nodes[i].addr, &out, &err, "nodes", NULL) == 0 &&
          out != NULL && strstr(out, pat) != NULL;
    free(out);
    free(err);
    return yes;
}

static long acked[COUNTERS];
static int unknown[COUNTERS]; /* increments of unknown fate */

/* One increment of every counter (but those skip[] names, when given),
 * through the nodes in `via`. */
static void load_round(const int *via, int nvia, int r, const int *skip)
{
    int c;

    for (c = 0; c < COUNTERS; c++) {
        long v = -1;
        int st;
        if (skip != NULL && skip[c])
            continue;
        st = counter(via[(r + c) % nvia], c, "incr", &v);
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
            tu_cluster_dump_logs(&fx);
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
    int i, c, r, on_d, pending, passes, waits[COUNTERS];

    memset(acked, 0, sizeof acked);
    memset(unknown, 0, sizeof unknown);
    for (i = 0; i < 3; i++)
        start_node(i);
    /* settled: every counter answers */
    t0 = tu_now_s();
    do {
        long v;
        pending = 0;
        for (c = 0; c < COUNTERS; c++)
            pending += counter(c % 3, c, "get", &v) != C_OK;
    } while (pending > 0 && tu_now_s() - t0 < 90);
    ck_assert_int_eq(pending, 0);
    for (r = 0; r < 2; r++)
        load_round(three, 3, r, NULL);

    /* n3 joins, running only in short slices until it is a member, and
     * stays stopped from then on: the moves to it start while it cannot
     * answer (a unit it received in its last slice is its own). */
    start_node(3);
    t0 = tu_now_s();
    ck_assert_int_eq(kill(fx.nodes[3].pid, SIGSTOP), 0);
    while (!listed(0, "n3") && tu_now_s() - t0 < 30) {
        kill(fx.nodes[3].pid, SIGCONT);
        usleep(2000);
        kill(fx.nodes[3].pid, SIGSTOP);
        usleep(20000);
    }
    ck_assert(listed(0, "n3"));
    /* Drained while stopped (refused only if its session has expired
     * already); the load goes on; its session expires. */
    if (tu_keel(fx.nodes[1].addr, &out, &err, "node", "drain", "n3", NULL) != 0)
        ck_assert(!listed(1, "n3"));
    free(out);
    free(err);
    for (r = 2; r < 4; r++)
        load_round(three, 3, r, NULL);
    t0 = tu_now_s();
    while (listed(0, "n3") && tu_now_s() - t0 < 30)
        usleep(50000);
    ck_assert(!listed(0, "n3"));

    /* Within a bound, every counter answers again, except those whose
     * data went to n3 before it stopped: their owner is n3, and they wait
     * for it. */
    t0 = tu_now_s();
    passes = 0;
    do {
        passes++;
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
    } while (pending > 0 && (tu_now_s() - t0 < 20 || passes < 3));
    if (pending > 0)
        tu_cluster_dump_logs(&fx);
    ck_assert_msg(pending == 0,
                  "%d counters not owned by the stopped node stay "
                  "unavailable",
                  pending);
    for (c = 0; c < COUNTERS; c++) {
        long v;
        where(0, c, owner, sizeof owner);
        waits[c] = strcmp(owner, "n3") == 0;
        if (waits[c])
            ck_assert_int_eq(counter(1, c, "get", &v), C_UNAVAIL);
    }
    fprintf(stderr, "course: %d of %d counters wait for n3\n", on_d,
            COUNTERS);
    /* The load goes on through the others (each call to one that waits
     * would only be held for the hold bound again). */
    for (r = 4; r < 6; r++)
        load_round(three, 3, r, waits);

    /* n3 resumes: fenced at once, it stores none of the streams that wait
     * in its sockets, rejoins as a new incarnation and serves what it
     * holds. Then every counter answers through every node. */
    ck_assert_int_eq(kill(fx.nodes[3].pid, SIGCONT), 0);
    t0 = tu_now_s();
    passes = 0;
    do {
        passes++;
        pending = 0;
        for (c = 0; c < COUNTERS; c++)
            for (i = 0; i < 4; i++)
                if (check_count(i, c) != C_OK)
                    pending++;
    } while (pending > 0 && (tu_now_s() - t0 < 60 || passes < 3));
    if (pending > 0)
        tu_cluster_dump_logs(&fx);
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

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, target_stopped_mid_stream_then_drained);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
