/* The storage side of cluster safety, end to end (real ZooKeeper, keeld
 * processes): a node killed, forgotten and restarted on its data while
 * counters are incremented through the others keeps every acknowledged
 * increment, round after round: the purge of its stale copies never
 * deletes what a handoff back to it has just stored. Every wait and every
 * loop is bounded. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

#define NNODES 3
#define COUNTERS 16
#define ROUNDS 3

static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "cstore", "cs");
    fx.quiet = 1; /* the load's failed calls are counted, not reported */
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

static void start_node(int i)
{
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, 0, NULL), 0);
}

/* The number a counter call printed, or -1 (the call failed: its fate is
 * unknown for an incr). */
static long counter(int i, const char *name, const char *op)
{
    return tu_cluster_counter(&fx, i, name, op);
}

/* Increments through n0 and n1 until told to stop: per counter, the
 * increments acknowledged and those attempted. */
struct load {
    int round;
    atomic_int stop;
    atomic_long acked[COUNTERS]; /* read by the test while it runs */
    long tried[COUNTERS];
};

/* Whether every counter has had an increment acknowledged. */
static int all_acked(struct load *l)
{
    for (int c = 0; c < COUNTERS; c++)
        if (atomic_load(&l->acked[c]) == 0)
            return 0;
    return 1;
}

static void *load_main(void *arg)
{
    struct load *l = arg;
    char name[32];
    int k = 0, c;

    while (!atomic_load(&l->stop) && k < 100000) {
        c = k % COUNTERS;
        snprintf(name, sizeof name, "r%dc%d", l->round, c);
        l->tried[c]++;
        if (counter(k % 2, name, "incr") > 0)
            atomic_fetch_add(&l->acked[c], 1);
        k++;
    }
    return NULL;
}

static void forget_n2(void)
{
    char *out = NULL, *err = NULL;
    int tries, rc;

    /* Refused while n2's session lives (2 s). */
    for (tries = 0; tries < 200; tries++) {
        rc = tu_keel(fx.nodes[0].addr, &out, &err, "node", "forget", "n2",
                     NULL);
        if (rc == 0)
            break;
        free(out);
        free(err);
        out = err = NULL;
        usleep(100 * 1000);
    }
    ck_assert_msg(rc == 0, "forget n2 was never accepted");
    free(out);
    free(err);
}

/* Waits (at most 30 s) until n0 lists node n2 as a member: a node that
 * is killed before it ever joined is unknown to the cluster, and there
 * is nothing to forget. */
static void wait_n2_member(void)
{
    char *out = NULL;
    int tries, seen = 0;

    for (tries = 0; tries < 300 && !seen; tries++) {
        if (tu_keel(fx.nodes[0].addr, &out, NULL, "nodes", NULL) == 0 &&
            out != NULL && strstr(out, "node n2 ") != NULL)
            seen = 1;
        free(out);
        out = NULL;
        if (!seen)
            usleep(100 * 1000);
    }
    ck_assert_msg(seen, "n2 never joined");
}

/* Waits (at most 60 s) until n2 owns a unit, handed over and settled:
 * killed before any was, it would hold nothing, and the cluster, which
 * then lists it nowhere, has nothing of it to forget. */
static void wait_n2_owns_some(void)
{
    char *out = NULL, *line;
    int tries, owns = 0;

    wait_n2_member();
    for (tries = 0; tries < 600 && !owns; tries++) {
        if (tu_keel(fx.nodes[0].addr, &out, NULL, "shards", "--node", "n2",
                    NULL) == 0)
            for (line = out; line != NULL && *line != '\0' && !owns;) {
                char *nl = strchr(line, '\n');
                if (nl != NULL)
                    *nl = '\0';
                owns = strstr(line, "owner n2 ") != NULL &&
                       strstr(line, "target") == NULL;
                line = nl != NULL ? nl + 1 : NULL;
            }
        free(out);
        out = NULL;
        if (!owns)
            usleep(100 * 1000);
    }
    ck_assert_msg(owns, "n2 never got a unit");
}

/* After the forget, n2's units move once its session timeout and a
 * quarter have passed since its member znode went: waits (at most 30 s)
 * until the map gives n2 nothing. */
static void wait_n2_owns_nothing(void)
{
    char *out = NULL;
    int tries, empty = 0;

    for (tries = 0; tries < 300 && !empty; tries++) {
        char *err = NULL;
        /* No unit line (the nodes run --insecure: the answer says so),
         * or no n2 at all: owning nothing, it leaves the map too. */
        if (tu_keel(fx.nodes[0].addr, &out, &err, "shards", "--node", "n2",
                    NULL) == 0)
            empty = out != NULL && strstr(out, "unit ") == NULL;
        else
            empty = err != NULL && strstr(err, "no node 'n2'") != NULL;
        free(out);
        free(err);
        out = NULL;
        if (!empty)
            usleep(100 * 1000);
    }
    ck_assert_msg(empty, "n2's units were not reassigned after the forget");
}

START_TEST(forgotten_node_rejoins_under_load)
{
    int r, c, i;

    for (i = 0; i < NNODES; i++)
        start_node(i);
    wait_n2_owns_some();
    for (r = 0; r < ROUNDS; r++) {
        struct load l;
        pthread_t th;
        double t0;
        char name[32];

        memset(&l, 0, sizeof l);
        l.round = r;
        ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
        tu_keeld_free(&fx.nodes[2]);
        forget_n2();
        wait_n2_owns_nothing();
        ck_assert_int_eq(pthread_create(&th, NULL, load_main, &l), 0);
        /* The counters live on n0 and n1 for a while, then n2 comes back
         * on its stale data and takes some of them over by handoff, while
         * it purges what it held before the forget. */
        usleep(1500 * 1000);
        start_node(2);
        /* 6 s, and on a slow machine until every counter has had an
         * increment acknowledged (each call is a keel process; those
         * made while its unit moves fail), for at most 40 s. */
        t0 = tu_now_s();
        while (tu_now_s() - t0 < 6.0 ||
               (!all_acked(&l) && tu_now_s() - t0 < 40.0))
            usleep(100 * 1000);
        atomic_store(&l.stop, 1);
        pthread_join(th, NULL);
        {
            /* The round went through the purge and a handoff back. */
            char *log = tu_keeld_log(&fx.nodes[2]);
            ck_assert_ptr_nonnull(log);
            ck_assert_ptr_nonnull(strstr(log, "this node was forgotten"));
            ck_assert_ptr_nonnull(strstr(log, "received"));
            free(log);
        }
        for (c = 0; c < COUNTERS; c++) {
            snprintf(name, sizeof name, "r%dc%d", r, c);
            long acked = atomic_load(&l.acked[c]);

            ck_assert_int_gt(acked, 0);
            for (i = 0; i < NNODES; i++) {
                long v = counter(i, name, "get");
                if (v < acked || v > l.tried[c])
                    tu_cluster_dump_logs(&fx);
                ck_assert_msg(v >= acked && v <= l.tried[c],
                              "round %d: counter %s read through n%d: %ld, "
                              "acknowledged %ld, attempted %ld",
                              r, name, i, v, acked, l.tried[c]);
            }
        }
    }
}
END_TEST

/* n2 comes back under its name on an empty data directory (a replaced
 * disk). Its units' data is not there: it must not serve them from
 * nothing. It refuses to join and says why (log, `keel nodes`); its
 * counters are not answered; once the operator forgets it (allowed: it is
 * not a member), it joins by itself, and its counters start over from 0
 * (the loss accepted) while every other counter keeps its value. */
START_TEST(replaced_disk_is_refused)
{
    char name[32], owner[64], lost[32] = "", *out = NULL, *log;
    long want[COUNTERS];
    int c, i, seen = 0, tries;

    for (i = 0; i < NNODES; i++)
        start_node(i);
    wait_n2_owns_some();
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "d%d", c);
        want[c] = 0;
        for (tries = 0; tries < 100 && want[c] < 3; tries++)
            if (counter(0, name, "incr") > 0)
                want[c]++;
            else
                usleep(100 * 1000);
        ck_assert_int_eq(want[c], 3);
        tu_cluster_owner_of(&fx, 0, "counter", name, owner, sizeof owner);
        if (strcmp(owner, "n2") == 0 && lost[0] == '\0')
            snprintf(lost, sizeof lost, "%s", name);
    }
    ck_assert_msg(lost[0] != '\0', "n2 owns none of the counters");

    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    {
        char data[512];
        const char *extra[] = {"--shards", "64", "--zk", fx.zk.hosts,
                               "--cluster", fx.name, "--node-id", "n2",
                               "--zk-session-timeout", "2000",
                               "--insecure", NULL};
        snprintf(data, sizeof data, "%s/n2-replaced", fx.dir);
        ck_assert_int_eq(tu_keeld_start(&fx.nodes[2], data, 0, extra), 0);
    }
    for (tries = 0; tries < 200 && !seen; tries++) {
        if (tu_keel(fx.nodes[2].addr, &out, NULL, "nodes", NULL) == 0 &&
            out != NULL && strstr(out, "refused EMISMATCH") != NULL)
            seen = 1;
        free(out);
        out = NULL;
        if (!seen)
            usleep(100 * 1000);
    }
    ck_assert_msg(seen, "n2 on an empty directory was not refused");
    log = tu_keeld_log(&fx.nodes[2]);
    ck_assert_ptr_nonnull(strstr(log, "refuses to join"));
    free(log);
    /* A call through it is answered at once, saying why, rather than
     * held to its deadline: its client should try another member. */
    {
        char *err = NULL;
        ck_assert_int_ne(tu_keel(fx.nodes[2].addr, &out, &err, "call",
                                 "counter", lost, "get", NULL),
                         0);
        ck_assert_msg(err != NULL &&
                          strstr(err, "EUNAVAIL") != NULL &&
                          strstr(err, "refuses this node") != NULL,
                      "a call through the refused n2: '%s'",
                      err != NULL ? err : "(null)");
        free(out);
        free(err);
        out = NULL;
    }
    /* Its counter is not answered from nothing, through any node. */
    for (i = 0; i < NNODES; i++) {
        long v = counter(i, lost, "get");
        ck_assert_msg(v != 0, "%s read 0 through n%d from an empty disk",
                      lost, i);
    }

    forget_n2();
    /* n2 joins by itself at its next check (every 5 s). */
    wait_n2_member();
    for (c = 0; c < COUNTERS; c++) {
        long v = -1;
        snprintf(name, sizeof name, "d%d", c);
        for (tries = 0; tries < 100 && v < 0; tries++)
            if ((v = counter(0, name, "get")) < 0)
                usleep(100 * 1000);
        if (strcmp(name, lost) == 0)
            ck_assert_msg(v == 0, "%s (its data lost and given up): %ld",
                          name, v);
        else if (v != 0)
            ck_assert_msg(v == want[c], "%s: %ld, acknowledged %ld", name, v,
                          want[c]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_storage");
    TCase *tc = tcase_create("cluster_storage");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, forgotten_node_rejoins_under_load);
    tcase_add_test(tc, replaced_disk_is_refused);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
