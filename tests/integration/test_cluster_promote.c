/* Moving a unit's primary onto one of its in-sync backups without a
 * stream (docs/cluster.md, "A move onto an in-sync backup"), end to end
 * with a real ZooKeeper and three keeld started with --replicas 3 and
 * activation logs. A counter load runs through n1 and n2, one keyed call
 * at a time per counter (a failed call is sent again with its key, so it
 * runs once), while n0 is drained: every unit n0 led goes to one of its
 * in-sync backups. Checked:
 *  - every success answers exactly one more than the counter's last
 *    success, and every final count, read through n1 and n2, is the
 *    acknowledged one;
 *  - each of n0's units is led afterwards by a node that was in its
 *    in-sync set before, at shard_epoch + 1, with both remaining replicas
 *    in sync, and they print the same digest;
 *  - no record was streamed to either recipient (handoff_bytes_in stays
 *    as it was), and units_promoted_on_move counts every unit n0 led;
 *  - the merged activation logs show no actor active on two nodes at
 *    once.
 * Every wait is bounded. On a failure the nodes' logs are printed. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actlog.h"
#include "cluster.h"
#include "clmap.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define NODES 3
#define SHARDS 16
#define COUNTERS 24
#define CLIENT_MS 20000

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "clprom", "pm");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

static void actlog_path(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/n%d.act", fx.dir, i);
}

/* Three nodes, every unit on the three in sync, activation logs on. The
 * lag bound is long: a backup dropped for lag would make its units be
 * streamed, which is right but not what this test is about. */
static void start3(void)
{
    static char act[NODES][512];
    static const char *common[] = {"--repl-lag-ms", "10000", NULL};
    const char *per[NODES][3];
    const char *const *extra[NODES];
    int i;

    for (i = 0; i < NODES; i++) {
        actlog_path(i, act[i], sizeof act[i]);
        per[i][0] = "--activation-log";
        per[i][1] = act[i];
        per[i][2] = NULL;
        extra[i] = per[i];
    }
    tu_cluster_start_together(&fx, NODES, 3, common, extra);
}

static void counter_id(int j, char *id, size_t cap)
{
    snprintf(id, cap, "p%d", j);
}

static uint32_t shard_of(const char *id)
{
    return keel_shard_of("counter", id, strlen(id), SHARDS);
}

static const char *primary_of(const keel_shard_map *m, uint32_t s)
{
    return keel_map_primary(m, (uint32_t)keel_map_cap_index(m, ""), s);
}

/* The counter's value through node i, or -1. */
static long get_via(int i, const char *id)
{
    keel_client *c = NULL;
    char *reply = NULL;
    long v = -1;
    int tries;

    if (keel_client_connect(fx.nodes[i].addr, CLIENT_MS, &c) != 0)
        return -1;
    for (tries = 0; tries < 100 && v < 0; tries++) {
        int rc = keel_client_call(c, KEEL_FRAME_CALL, "counter", id,
                                  strlen(id), "get", 3, &reply, NULL);
        if (rc == 0)
            v = atol(reply);
        else
            tu_sleep_ms(100);
        free(reply);
        reply = NULL;
    }
    keel_client_close(c);
    return v;
}

/* Whether, within 30 s, the map shows every unit as ok says. */
static int wait_units(int (*ok)(const keel_shard_map *m, uint32_t s))
{
    int i, j;

    for (i = 0; i < 300; i++) {
        int left = 0;
        keel_shard_map m;
        if (tu_map_read(&fx, &m) == 0) {
            for (j = 0; j < SHARDS; j++)
                left += !ok(&m, (uint32_t)j);
            keel_map_free(&m);
            if (left == 0)
                return 1;
        }
        tu_sleep_ms(100);
    }
    return 0;
}

/* Unit s has the three nodes in sync. */
static int in_sync_on_3(const keel_shard_map *m, uint32_t s)
{
    const keel_map_unit *u = tu_map_unit(m, "", s);

    return u != NULL && tu_map_in_sync(m, u, "n0") &&
           tu_map_in_sync(m, u, "n1") && tu_map_in_sync(m, u, "n2");
}

/* Unit s is not n0's, and on its way nowhere. */
static int off_n0(const keel_shard_map *m, uint32_t s)
{
    const char *p = primary_of(m, s);
    const keel_map_unit *u = tu_map_unit(m, "", s);

    return p != NULL && strcmp(p, "n0") != 0 && u != NULL &&
           u->target == KEEL_MAP_NO_NODE;
}

/* Drains n0 through n1 and waits for its units to have moved. */
static void drain_n0(void)
{
    char *out = NULL, *err = NULL;

    CHECK(tu_keel(fx.nodes[1].addr, &out, &err, "node", "drain", "n0",
                  NULL) == 0,
          "drain n0: %s", err != NULL ? err : "");
    free(out);
    free(err);
    CHECK(wait_units(off_n0), "n0's units did not all move within 30 s");
}

/* ------------------------------------------------------------ the load */

struct ctr {
    long acked;   /* the last success's value */
    long bad_v;   /* the first success that was not acked + 1 */
    int bad;
    int given_up; /* a call that never succeeded within 30 s */
};

static struct ctr ctrs[COUNTERS];
static volatile int stop_load;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static long acked_of(int j)
{
    long v;

    pthread_mutex_lock(&mu);
    v = ctrs[j].acked;
    pthread_mutex_unlock(&mu);
    return v;
}

/* Counter j, through n1 and n2 in turn: each increment with a key of its
 * own, sent again with that key until it succeeds (30 s at most). */
static void *worker(void *arg)
{
    int j = (int)(intptr_t)arg, round;
    keel_client *cl[NODES] = {NULL};
    struct ctr *c = &ctrs[j];
    char id[16];

    counter_id(j, id, sizeof id);
    for (round = 0; !stop_load && !c->bad && !c->given_up; round++) {
        uint8_t key[KEEL_REQUEST_KEY_LEN];
        double deadline = tu_now_s() + 30;
        long v = -1;
        if (keel_client_new_key(key) != 0)
            abort();
        while (v < 0 && tu_now_s() < deadline) {
            int i = 1 + (j + round) % 2;
            char *reply = NULL;
            int rc;
            if (cl[i] == NULL &&
                keel_client_connect(fx.nodes[i].addr, CLIENT_MS, &cl[i]) !=
                    0) {
                cl[i] = NULL;
                tu_sleep_ms(50);
                continue;
            }
            rc = keel_client_call_keyed(cl[i], KEEL_FRAME_CALL, key,
                                        "counter", id, strlen(id), "incr", 4,
                                        &reply, NULL);
            if (rc == 0) {
                v = atol(reply);
            } else {
                if (rc == KEEL_ECONN || rc == KEEL_ENOTSENT ||
                    rc == KEEL_ETIMEDOUT) {
                    keel_client_close(cl[i]);
                    cl[i] = NULL;
                }
                tu_sleep_ms(20);
            }
            free(reply);
        }
        pthread_mutex_lock(&mu);
        if (v < 0) {
            c->given_up = 1;
        } else if (v != c->acked + 1) {
            c->bad = 1;
            c->bad_v = v;
        } else {
            c->acked = v;
        }
        pthread_mutex_unlock(&mu);
    }
    for (round = 0; round < NODES; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
    return NULL;
}

/* ------------------------------------------------------------ the test */

START_TEST(drain_promotes_in_sync_backups_without_streaming)
{
    pthread_t t[COUNTERS];
    keel_shard_map before, after;
    long bytes_in[NODES], promoted[NODES];
    int led[SHARDS] = {0}, touched[SHARDS] = {0};
    int i, j, nled = 0, code, moved = 0;
    long nprom = 0;
    char id[16];
    tu_actlog acts;

    start3();
    memset(ctrs, 0, sizeof ctrs);
    stop_load = 0;
    for (j = 0; j < COUNTERS; j++)
        CHECK(pthread_create(&t[j], NULL, worker, (void *)(intptr_t)j) == 0,
              "no thread");
    /* some writes everywhere before the move */
    for (i = 0; i < 100; i++) {
        int done = 1;
        for (j = 0; j < COUNTERS; j++)
            done &= acked_of(j) >= 3;
        if (done)
            break;
        tu_sleep_ms(100);
    }
    CHECK(tu_map_read(&fx, &before) == 0, "no map");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *u = tu_map_unit(&before, "", (uint32_t)j);
        CHECK(u != NULL && tu_map_in_sync(&before, u, "n0") &&
                  tu_map_in_sync(&before, u, "n1") &&
                  tu_map_in_sync(&before, u, "n2"),
              "shard %d: not on the three nodes in sync before the drain", j);
        if (strcmp(primary_of(&before, (uint32_t)j), "n0") == 0) {
            led[j] = 1;
            nled++;
        }
    }
    for (j = 0; j < COUNTERS; j++) {
        counter_id(j, id, sizeof id);
        touched[shard_of(id)] = 1;
    }
    CHECK(nled > 0, "n0 leads no unit");
    for (i = 1; i < NODES; i++) {
        bytes_in[i] = tu_keel_stat(fx.nodes[i].addr, "handoff_bytes_in");
        promoted[i] = tu_keel_stat(fx.nodes[i].addr, "units_promoted_on_move");
        CHECK(bytes_in[i] >= 0 && promoted[i] == 0,
              "n%d: handoff_bytes_in %ld, units_promoted_on_move %ld", i,
              bytes_in[i], promoted[i]);
    }

    /* n0 leaves, through n1, under the load */
    drain_n0();
    /* the load goes on a little on the new primaries */
    tu_sleep_ms(500);
    stop_load = 1;
    for (j = 0; j < COUNTERS; j++)
        pthread_join(t[j], NULL);
    code = tu_keeld_stop(&fx.nodes[0], SIGTERM);
    CHECK(code == 0, "drained n0 exited with %d", code);

    for (j = 0; j < COUNTERS; j++) {
        counter_id(j, id, sizeof id);
        CHECK(!ctrs[j].bad, "%s answered %ld after %ld acknowledged", id,
              ctrs[j].bad_v, ctrs[j].acked);
        CHECK(!ctrs[j].given_up, "%s: an increment never succeeded", id);
        CHECK(ctrs[j].acked >= 3, "%s: only %ld increments", id,
              ctrs[j].acked);
        for (i = 1; i < NODES; i++) {
            long v = get_via(i, id);
            CHECK(v == ctrs[j].acked, "%s is %ld through n%d, %ld acknowledged",
                  id, v, i, ctrs[j].acked);
        }
    }

    CHECK(tu_map_read(&fx, &after) == 0, "no map");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *ub = tu_map_unit(&before, "", (uint32_t)j);
        const keel_map_unit *ua = tu_map_unit(&after, "", (uint32_t)j);
        const char *p = primary_of(&after, (uint32_t)j);
        char d1[128], d2[128];
        unsigned long long recs = 0;
        CHECK(p != NULL && strcmp(p, "n0") != 0, "shard %d still on n0", j);
        CHECK(tu_map_in_sync(&after, ua, "n1") &&
                  tu_map_in_sync(&after, ua, "n2"),
              "shard %d: n1 and n2 not both in sync after the drain", j);
        if (led[j]) {
            moved++;
            CHECK(tu_map_in_sync(&before, ub, p),
                  "shard %d went to %s, not in sync before", j, p);
            CHECK(ua->shard_epoch == ub->shard_epoch + 1,
                  "shard %d: epoch %llu -> %llu", j,
                  (unsigned long long)ub->shard_epoch,
                  (unsigned long long)ua->shard_epoch);
        }
        tu_cluster_digest(&fx, 1, (uint32_t)j, d1, sizeof d1);
        tu_cluster_digest(&fx, 2, (uint32_t)j, d2, sizeof d2);
        CHECK(strncmp(d1, "digest ", 7) == 0 && strcmp(d1, d2) == 0,
              "shard %d differs: n1 '%s', n2 '%s'", j, d1, d2);
        if (led[j] && touched[j])
            CHECK(sscanf(d1, "digest %*s records %llu", &recs) == 1 &&
                      recs > 0,
                  "shard %d moved with counters but holds no record: %s", j,
                  d1);
    }
    keel_map_free(&before);
    keel_map_free(&after);
    CHECK(moved == nled, "%d of n0's %d units moved", moved, nled);

    /* measured: nothing streamed, every move a promotion */
    for (i = 1; i < NODES; i++) {
        long b = tu_keel_stat(fx.nodes[i].addr, "handoff_bytes_in");
        long p = tu_keel_stat(fx.nodes[i].addr, "units_promoted_on_move");
        CHECK(b == bytes_in[i], "n%d received %ld record bytes in handoffs",
              i, b - bytes_in[i]);
        CHECK(p >= 0, "n%d: no units_promoted_on_move", i);
        nprom += p - promoted[i];
    }
    CHECK(nprom == nled, "%ld units promoted on move, n0 led %d", nprom, nled);
    fprintf(stderr, "promote: %d units moved off n0, %ld without a stream\n",
            nled, nprom);

    /* no actor active on two nodes at once */
    tu_actlog_init(&acts);
    for (i = 0; i < NODES; i++) {
        char path[512];
        actlog_path(i, path, sizeof path);
        tu_actlog_parse(&acts, path, i, 0, 0, 0);
    }
    fprintf(stderr, "promote: %zu activations, %zu moves between nodes\n",
            acts.n, tu_actlog_check(&acts));
    tu_actlog_free(&acts);
}
END_TEST

/* A unit promoted on a move is answered to the node that handed it over:
 * a reply between nodes, not a call's. Counted as one, it made
 * calls_completed exceed the calls a node answered, and put a latency of
 * the machine's uptime (the frame has no submission time) into the call
 * latency of every node that took a unit over. */
START_TEST(a_promotion_on_a_move_is_no_call)
{
    long calls[NODES], promoted[NODES], nprom = 0;
    int i;

    start3();
    CHECK(wait_units(in_sync_on_3),
          "the units never had the three nodes in sync");
    for (i = 1; i < NODES; i++) {
        calls[i] = tu_keel_stat(fx.nodes[i].addr, "calls_completed");
        promoted[i] = tu_keel_stat(fx.nodes[i].addr, "units_promoted_on_move");
        CHECK(calls[i] >= 0 && promoted[i] == 0,
              "n%d: calls_completed %ld, units_promoted_on_move %ld", i,
              calls[i], promoted[i]);
    }
    /* no call at all while n0 leaves */
    drain_n0();
    for (i = 1; i < NODES; i++) {
        long c = tu_keel_stat(fx.nodes[i].addr, "calls_completed");
        long p = tu_keel_stat(fx.nodes[i].addr, "units_promoted_on_move");
        CHECK(c == calls[i],
              "n%d answered no call but counts %ld calls completed (and "
              "%ld units promoted on the move)",
              i, c - calls[i], p - promoted[i]);
        nprom += p - promoted[i];
    }
    CHECK(nprom > 0, "no unit was promoted on the move");

    /* calls still count, from their arrival */
    for (i = 1; i < NODES; i++)
        calls[i] = tu_keel_stat(fx.nodes[i].addr, "calls_completed");
    CHECK(get_via(1, "quiet") == 0, "no counter through n1");
    for (i = 1; i < NODES; i++) {
        long c = tu_keel_stat(fx.nodes[i].addr, "calls_completed");
        long avg_us = tu_keel_stat(fx.nodes[i].addr, "latency_avg_us");
        CHECK(c >= calls[i] + (i == 1), "n%d: %ld calls completed after %ld",
              i, c, calls[i]);
        CHECK(avg_us >= 0 && avg_us < 5000000,
              "n%d's mean call latency is %ld us", i, avg_us);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_promote");
    TCase *tc = tcase_create("cluster_promote");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, drain_promotes_in_sync_backups_without_streaming);
    tcase_add_test(tc, a_promotion_on_a_move_is_no_call);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
