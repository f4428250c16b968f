/* Cluster mode end to end: a real ZooKeeper (zk-conf/zk.sh) and keeld
 * processes joined with --zk. Any node answers for any actor (forwarding
 * to the owner); a node joining under a counter load takes over its units
 * with their records, and every counter ends exactly at the number of
 * increments that were acknowledged. Every wait is bounded. */
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

#define COUNTERS 12

static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "cluster", "ct");
}

static void teardown(void)
{
    ck_assert_int_eq(tu_cluster_teardown(&fx, SIGTERM), 0);
}

/* Starts node i, with one more option (name and value) unless NULL. */
static void start_node_with(int i, const char *opt, const char *val)
{
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, 0, opt, val, NULL), 0);
}

static void start_node(int i)
{
    start_node_with(i, NULL, NULL);
}

/* `keel call counter NAME OP` through node i; returns the number printed
 * (-1 with the error on stderr if the call failed). */
static long counter(int i, const char *name, const char *op)
{
    return tu_cluster_counter(&fx, i, name, op);
}

static void dump_logs(void)
{
    tu_cluster_dump_logs(&fx);
}

#define ASSERT_COUNT(v, want)                                               \
    do {                                                                    \
        if ((v) != (want))                                                  \
            dump_logs();                                                    \
        ck_assert_int_eq((v), (want));                                      \
    } while (0)

/* Waits (at most 90 s) until every one of the first n nodes answers a
 * read of every counter: the cluster has elected a controller, published
 * a map and every unit has been acquired. Calls that arrive before that
 * are held and answered once it has, but a held call gives up after its
 * bound (5 s), and a loaded machine can take longer than that to start
 * ZooKeeper and three nodes; the load in these tests starts afterwards. */
static void converge(int n)
{
    struct timespec t0, t;
    char name[16];
    int c, i, ok = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        ok = 1;
        for (c = 0; c < COUNTERS && ok; c++) {
            snprintf(name, sizeof name, "c%d", c);
            for (i = 0; i < n && ok; i++)
                ok = counter(i, name, "get") >= 0;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (!ok && t.tv_sec - t0.tv_sec < 90);
    if (!ok)
        dump_logs();
    ck_assert_msg(ok, "the cluster did not converge in 90 s");
}

START_TEST(any_node_answers)
{
    char name[16];
    int i, c;

    for (i = 0; i < 3; i++)
        start_node(i);
    converge(3);
    for (i = 0; i < 3; i++) {
        for (c = 0; c < COUNTERS; c++) {
            snprintf(name, sizeof name, "c%d", c);
            ck_assert_int_eq(counter((i + c) % 3, name, "incr"), i + 1);
        }
    }
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        for (i = 0; i < 3; i++)
            ck_assert_int_eq(counter(i, name, "get"), 3);
    }
}
END_TEST

START_TEST(join_under_load_keeps_every_count)
{
    long acked[COUNTERS];
    char name[16];
    int i, c, r, live = 3;

    memset(acked, 0, sizeof acked);
    for (i = 0; i < 3; i++)
        start_node(i);
    converge(3);
    for (r = 0; r < 8; r++) {
        if (r == 3) {
            start_node(3); /* joins while the load goes on */
            live = 4;
        }
        for (c = 0; c < COUNTERS; c++) {
            long v;
            snprintf(name, sizeof name, "c%d", c);
            v = counter((r + c) % live, name, "incr");
            ASSERT_COUNT(v, acked[c] + 1);
            acked[c] = v;
        }
    }
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        for (i = 0; i < 4; i++)
            ck_assert_int_eq(counter(i, name, "get"), acked[c]);
    }
    /* The newcomer holds some units' records now, and the statistics of
     * both sides say so. */
    {
        char *log = tu_keeld_log(&fx.nodes[3]);
        long off = 0, out = 0;
        ck_assert_ptr_nonnull(log);
        ck_assert_ptr_nonnull(strstr(log, "received"));
        free(log);
        ck_assert_int_gt(tu_keel_stat(fx.nodes[3].addr, "units_acquired"), 0);
        ck_assert_int_gt(tu_keel_stat(fx.nodes[3].addr, "handoff_bytes_in"), 0);
        for (i = 0; i < 3; i++) {
            off += tu_keel_stat(fx.nodes[i].addr, "units_handed_off");
            out += tu_keel_stat(fx.nodes[i].addr, "handoff_bytes_out");
        }
        ck_assert_int_gt(off, 0);
        ck_assert_int_gt(out, 0);
    }
}
END_TEST

/* Graceful leave: SIGTERM on a node under a counter load (sent through
 * the other nodes) hands its units off before it exits 0; no call fails
 * meanwhile (callers wait, they see no EUNAVAIL), and every counter ends
 * at its acknowledged count when read through the remaining nodes. */
START_TEST(sigterm_hands_off_under_load)
{
    long acked[COUNTERS];
    char name[16];
    int i, c, r;

    memset(acked, 0, sizeof acked);
    for (i = 0; i < 4; i++)
        start_node(i);
    converge(4);
    for (r = 0; r < 10; r++) {
        if (r == 3)
            ck_assert_int_eq(kill(fx.nodes[3].pid, SIGTERM), 0);
        for (c = 0; c < COUNTERS; c++) {
            long v;
            snprintf(name, sizeof name, "c%d", c);
            v = counter((r + c) % (r < 3 ? 4 : 3), name, "incr");
            ASSERT_COUNT(v, acked[c] + 1);
            acked[c] = v;
        }
    }
    /* It exits by itself (the second SIGTERM changes nothing) with 0. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[3], SIGTERM), 0);
    {
        char *log = tu_keeld_log(&fx.nodes[3]);
        ck_assert_ptr_nonnull(log);
        ck_assert_ptr_nonnull(strstr(log, "every unit handed off"));
        free(log);
    }
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        for (i = 0; i < 3; i++)
            ck_assert_int_eq(counter(i, name, "get"), acked[c]);
    }
}
END_TEST

/* The same through `keel node drain n3` sent to another node: n3 hands
 * its units off under the load and exits 0 by itself. */
START_TEST(node_drain_hands_off_under_load)
{
    long acked[COUNTERS];
    char name[16], *out = NULL, *err = NULL;
    int i, c, r;

    memset(acked, 0, sizeof acked);
    for (i = 0; i < 4; i++)
        start_node(i);
    converge(4);
    for (r = 0; r < 10; r++) {
        if (r == 3) {
            ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, &err, "node",
                                     "drain", "n3", NULL),
                             0);
            ck_assert_ptr_nonnull(strstr(out, "node n3 leaving"));
            free(out);
            free(err);
            out = err = NULL;
            ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, &err, "node",
                                     "drain", "nobody", NULL),
                             1);
            free(out);
            free(err);
        }
        for (c = 0; c < COUNTERS; c++) {
            long v;
            snprintf(name, sizeof name, "c%d", c);
            v = counter((r + c) % (r < 3 ? 4 : 3), name, "incr");
            ASSERT_COUNT(v, acked[c] + 1);
            acked[c] = v;
        }
    }
    /* Signal 0: only wait for it to exit by itself. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[3], 0), 0);
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        for (i = 0; i < 3; i++)
            ck_assert_int_eq(counter(i, name, "get"), acked[c]);
    }
}
END_TEST

/* A dead node's units stay unavailable (one copy of the data): calls for
 * them through a live node fail after a bounded wait (here --hold-timeout
 * 1500) with an error that says they did not run (EUNAVAIL, or EDEADLINE
 * while the dead owner still looked like a member), and every other
 * counter keeps working. */
START_TEST(dead_owner_units_unavailable)
{
    char name[16];
    int c, unavailable = 0;

    for (c = 0; c < 3; c++)
        start_node_with(c, "--hold-timeout", "1500");
    converge(3);
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        ck_assert_int_eq(counter(c % 3, name, "incr"), 1);
    }
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    for (c = 0; c < COUNTERS; c++) {
        char *out = NULL, *err = NULL;
        int rc;
        snprintf(name, sizeof name, "c%d", c);
        rc = tu_keel(fx.nodes[c % 2].addr, &out, &err, "call", "counter", name,
                     "get", NULL);
        if (rc == 0) {
            ck_assert_str_eq(out, "1\n");
        } else {
            /* Not run, after the bound: held (EUNAVAIL), or waiting to
             * be sent to the dead owner's address (EDEADLINE). */
            ck_assert_msg(err != NULL &&
                              ((strstr(err, "EUNAVAIL") != NULL &&
                                strstr(err, " 1500 ms") != NULL) ||
                               strstr(err, "EDEADLINE") != NULL),
                          "counter %s: exit %d: %s", name, rc, err);
            unavailable++;
        }
        free(out);
        free(err);
    }
    ck_assert_int_gt(unavailable, 0);
    ck_assert_int_lt(unavailable, COUNTERS);
    /* `keel shards` lists, after the unit lines, each unit whose owner is
     * not a live member: n2's, and only those (n2's session has expired
     * by now: calls above waited past it). */
    {
        char *out = NULL, *err = NULL, *sh = NULL;
        const char *p;
        size_t n2_units = 0, listed = 0;
        int tries;
        for (tries = 0; tries < 100; tries++) {
            free(out);
            out = NULL;
            ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, &err, "shards",
                                     NULL),
                             0);
            free(err);
            err = NULL;
            if (strstr(out, "is not a live member") != NULL)
                break;
            usleep(100 * 1000);
        }
        ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &sh, NULL, "shards",
                                 "--node", "n2", NULL),
                         0);
        for (p = sh; (p = strstr(p, "unit (default) ")) != NULL; p++)
            if (p == sh || p[-1] == '\n')
                n2_units++;
        for (p = out; (p = strstr(p, "\nunavailable unit ")) != NULL; p++) {
            ck_assert_ptr_nonnull(strstr(p, "owner n2 is not a live member"));
            listed++;
        }
        ck_assert_uint_gt(listed, 0);
        ck_assert_uint_eq(listed, n2_units);
        ck_assert_ptr_nonnull(strstr(sh, "\nunavailable unit (default) "));
        free(out);
        free(sh);
    }
}
END_TEST

/* `keel node forget n2` after n2 was killed: refused while n2 is still a
 * member (and for a live node), then accepted through another node; n2's
 * counters answer again, starting from 0 (their state is lost), and every
 * other counter kept its value. */
START_TEST(forget_dead_node_reassigns_its_units)
{
    char name[16], *out = NULL, *err = NULL;
    int c, rc, zero = 0;

    for (c = 0; c < 3; c++)
        start_node(c);
    converge(3);
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        ck_assert_int_eq(counter(c % 3, name, "incr"), 1);
    }
    rc = tu_keel(fx.nodes[0].addr, &out, &err, "node", "forget", "n1", NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "EEXIST"));
    /* Says what to do for a running node and for a killed one. */
    ck_assert_msg(strstr(err, "drain it") != NULL &&
                      strstr(err, "session has expired") != NULL,
                  "forget of a member: %s", err);
    free(out);
    free(err);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    /* n2 stays a member until its session expires (2 s): until then the
     * forget is refused. */
    rc = tu_cluster_forget(&fx, 1, "n2", 100, 100, &out);
    ck_assert_msg(rc == 0, "forget n2: %s",
                  rc > 0 ? "refused (EEXIST) 100 times" : "failed");
    ck_assert_ptr_nonnull(strstr(out, "node n2 forgotten: its "));
    ck_assert_ptr_nonnull(strstr(out, "the state they held is lost"));
    free(out);
    for (c = 0; c < COUNTERS; c++) {
        long v;
        snprintf(name, sizeof name, "c%d", c);
        v = counter(c % 2, name, "get");
        ck_assert_msg(v == 0 || v == 1, "counter %s: %ld", name, v);
        if (v == 0)
            zero++;
    }
    ck_assert_int_gt(zero, 0);
    ck_assert_int_lt(zero, COUNTERS);
}
END_TEST

/* A record larger than the nodes' maximum frame still moves with its unit:
 * registers written with the largest value one message can carry (their
 * record plus the transfer framing exceed --max-frame 65536) are all
 * intact after a second node joined and took some of them over. */
#define BIG_FRAME 65536
#define BIG_VALUE (BIG_FRAME - 36) /* a `write V` frame of exactly 64 KiB */
#define BIG_REGS 16

static int reg_call(int i, const char *name, const char *op,
                    const char *arg, char **out)
{
    char *err = NULL;
    int rc = tu_keel(fx.nodes[i].addr, out, &err, "call", "register", name, op,
                     arg, NULL);

    if (rc != 0)
        fprintf(stderr, "register %s %s via n%d: exit %d: %s\n", name, op, i,
                rc, err ? err : "");
    free(err);
    return rc;
}

START_TEST(large_record_moves_with_its_unit)
{
    char name[16], *out = NULL, *val, *cas;
    int r, moved = 0;

    val = malloc(BIG_VALUE + 1);
    cas = malloc(BIG_VALUE + 3);
    ck_assert_ptr_nonnull(val);
    ck_assert_ptr_nonnull(cas);
    start_node_with(0, "--max-frame", "65536");
    converge(1);
    for (r = 0; r < BIG_REGS; r++) {
        snprintf(name, sizeof name, "r%02d", r);
        memset(val, 'a' + r, BIG_VALUE);
        val[BIG_VALUE] = '\0';
        ck_assert_int_eq(reg_call(0, name, "write", val, &out), 0);
        ck_assert_str_eq(out, "OK\n");
        free(out);
    }
    start_node_with(1, "--max-frame", "65536");
    converge(2);
    for (r = 0; r < BIG_REGS; r++) {
        struct timespec t0, t;
        int rc;
        snprintf(name, sizeof name, "r%02d", r);
        memset(val, 'a' + r, BIG_VALUE);
        /* `cas V x` (exactly 64 KiB too); a unit still moving may answer
         * EUNAVAIL after the hold bound: retried, 60 s in all. */
        memcpy(cas, val, BIG_VALUE);
        memcpy(cas + BIG_VALUE, " x", 3);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
            out = NULL;
            rc = reg_call(1, name, "cas", cas, &out);
            if (rc != 0)
                free(out);
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while (rc != 0 && t.tv_sec - t0.tv_sec < 60);
        if (rc != 0)
            dump_logs();
        ck_assert_int_eq(rc, 0);
        ck_assert_str_eq(out, "OK\n");
        free(out);
        ck_assert_int_eq(reg_call(0, name, "read", NULL, &out), 0);
        ck_assert_str_eq(out, "x\n");
        free(out);
        ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, NULL, "where",
                                 "register", name, NULL),
                         0);
        moved += strstr(out, "\nowner n1\n") != NULL;
        free(out);
    }
    /* Some of them live on the newcomer now (all 16 staying put has odds
     * of 1 in 65,536 with two nodes). */
    ck_assert_int_gt(moved, 0);
    free(val);
    free(cas);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("cluster");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, any_node_answers);
    tcase_add_test(tc, join_under_load_keeps_every_count);
    tcase_add_test(tc, dead_owner_units_unavailable);
    tcase_add_test(tc, forget_dead_node_reassigns_its_units);
    tcase_add_test(tc, sigterm_hands_off_under_load);
    tcase_add_test(tc, node_drain_hands_off_under_load);
    tcase_add_test(tc, large_record_moves_with_its_unit);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
