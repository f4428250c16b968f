/* Cluster coordination against a real ZooKeeper (started through
 * zk-conf/zk.sh on a free loopback port, in its own directory): three
 * coordination agents on one libev loop elect one controller, which
 * publishes a map covering all three; killing the controller's session
 * elects another with a higher controller_epoch whose map covers the
 * remaining members; the old controller's writes fail. Every wait is
 * bounded. */
#include <check.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/controller.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk.h"
#include "keel.h"
#include "testutil.h"
#include "zk.h"

#define SHARDS 64
#define NODES 3

static tu_zk server;

static void suite_setup(void)
{
    if (!tu_zk_available()) {
        fprintf(stderr, "ZooKeeper is not installed (sh scripts/install-deps)\n");
        exit(1);
    }
    /* tick 200 ms: sessions of 0.4..4 s, so expiry tests stay short */
    if (tu_zk_start(&server, 1, 200) != 0)
        exit(1);
}

static void suite_teardown(void)
{
    tu_zk_stop(&server);
}

static void wake(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

typedef int (*cond_fn)(void *arg);

/* Runs the loop until cond holds or secs pass. */
static int run_until(struct ev_loop *loop, cond_fn cond, void *arg,
                     double secs)
{
    ev_timer t;
    double deadline;
    int ok;

    ev_timer_init(&t, wake, 0.01, 0.01);
    ev_timer_start(loop, &t);
    ev_now_update(loop);
    deadline = ev_now(loop) + secs;
    while (!(ok = cond(arg)) && ev_now(loop) < deadline)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    return ok;
}

typedef struct world {
    keel_cluster *c[NODES];
    int alive[NODES];
    char names[NODES][16];
} world;

static int count_controllers(world *w, int *which)
{
    int i, n = 0;

    for (i = 0; i < NODES; i++)
        if (w->alive[i] && keel_cluster_is_controller(w->c[i])) {
            n++;
            if (which)
                *which = i;
        }
    return n;
}

/* Every live agent applied the same map, with no move in progress, in
 * which every live node and no other is a primary. */
static int converged(void *arg)
{
    world *w = arg;
    const keel_shard_map *ref = NULL;
    int i, j;

    if (count_controllers(w, NULL) != 1)
        return 0;
    for (i = 0; i < NODES; i++) {
        const keel_shard_map *m;
        size_t u, n;
        if (!w->alive[i])
            continue;
        m = keel_cluster_map(w->c[i]);
        if (m == NULL)
            return 0;
        if (ref == NULL)
            ref = m;
        else if (m->map_epoch != ref->map_epoch)
            return 0;
        n = (size_t)m->ncaps * m->shard_count;
        for (u = 0; u < n; u++)
            if (m->units[u].target != KEEL_MAP_NO_NODE ||
                m->units[u].nreplicas == 0)
                return 0;
    }
    for (j = 0; j < NODES; j++) {
        uint32_t s;
        int owns = 0;
        for (s = 0; s < SHARDS; s++) {
            const char *p = keel_map_primary(ref, 0, s);
            if (strcmp(p, w->names[j]) == 0)
                owns = 1;
        }
        if (owns != w->alive[j])
            return 0;
    }
    /* each live node serves its own units */
    for (i = 0; i < NODES; i++) {
        uint32_t s;
        if (!w->alive[i])
            continue;
        for (s = 0; s < SHARDS; s++) {
            keel_placement p;
            keel_cluster_placement(w->c[i], "", s, &p);
            if (strcmp(keel_map_primary(ref, 0, s), w->names[i]) == 0
                    ? p.state != KEEL_PLACEMENT_LOCAL
                    : p.state != KEEL_PLACEMENT_REMOTE)
                return 0;
        }
    }
    return 1;
}

static void on_multi(keel_zk *zk, int rc, size_t failed,
                     const keel_zk_op_result *res, size_t n, void *arg)
{
    int *out = arg;

    (void)zk;
    (void)res;
    (void)n;
    out[0] = rc;
    out[1] = (int)failed;
    out[2] = 1;
}

static int flag_set(void *arg)
{
    return ((int *)arg)[2];
}

static void on_session(keel_zk *zk, int event, void *arg)
{
    (void)zk;
    if (event == KEEL_ZK_CONNECTED)
        *(int *)arg = 1;
}

static int is_set(void *arg)
{
    return *(int *)arg;
}

START_TEST(test_election_and_failover)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char cluster[32], path[128];
    world w;
    keel_controller *old;
    uint64_t old_epoch;
    int32_t old_version;
    int i, who = -1, who2 = -1;

    keel_log_set_level(KEEL_LOG_WARN);
    memset(&w, 0, sizeof w);
    snprintf(cluster, sizeof cluster, "it%d", (int)getpid());
    for (i = 0; i < NODES; i++) {
        keel_cluster_options o;
        char addr[32];
        snprintf(w.names[i], sizeof w.names[i], "node-%d", i);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 7100 + i);
        keel_cluster_options_init(&o);
        o.zk_hosts = server.hosts;
        o.cluster = cluster;
        o.node = w.names[i];
        o.address = addr;
        o.shard_count = SHARDS;
        o.session_timeout_ms = 2000;
        /* The dead controller's units go to the others after 0.5 s (no
         * runtime holds data here, so nothing is lost). */
        o.reassign_dead_owner = 1;
        o.dead_owner_grace_ms = 500;
        ck_assert_int_eq(keel_cluster_create(loop, &o, NULL, &w.c[i]), 0);
        ck_assert_int_eq(keel_cluster_start(w.c[i]), 0);
        w.alive[i] = 1;
    }
    ck_assert_msg(run_until(loop, converged, &w, 15),
                  "three agents did not converge on one map");
    ck_assert_int_eq(count_controllers(&w, &who), 1);
    old = keel_cluster_controller(w.c[who]);
    old_epoch = old->epoch;
    old_version = old->epoch_version;
    ck_assert_uint_ge(old_epoch, 1);

    /* Kill the controller's session: its member and election znodes go
     * with it, at once. */
    keel_zk_close(keel_cluster_zk(w.c[who]));
    w.alive[who] = 0;
    ck_assert_msg(run_until(loop, converged, &w, 15),
                  "the remaining agents did not converge");
    ck_assert_int_eq(count_controllers(&w, &who2), 1);
    ck_assert_int_ne(who2, who);
    ck_assert_uint_gt(keel_cluster_controller(w.c[who2])->epoch, old_epoch);

    /* The old controller cannot write any more: its session is gone... */
    ck_assert_int_eq(keel_controller_republish(old), KEEL_ESESSION);
    /* ...and even a live session holding its epoch's version would fail
     * as a whole on the check op. */
    {
        keel_zk *raw;
        keel_zk_op ops[2];
        int connected = 0, res[3] = {0, 0, 0};
        char epath[128];
        ck_assert_int_eq(keel_zk_real_create(loop, server.hosts, &raw), 0);
        ck_assert_int_eq(keel_zk_connect(raw, 2000, on_session, &connected),
                         0);
        ck_assert(run_until(loop, is_set, &connected, 10));
        snprintf(epath, sizeof epath, "/keel/%s/controller_epoch", cluster);
        snprintf(path, sizeof path, "/keel/%s/map", cluster);
        memset(ops, 0, sizeof ops);
        ops[0].type = KEEL_ZK_OP_CHECK;
        ops[0].path = epath;
        ops[0].version = old_version;
        ops[1].type = KEEL_ZK_OP_SET;
        ops[1].path = path;
        ops[1].data = "garbage";
        ops[1].len = 7;
        ops[1].version = KEEL_ZK_ANY_VERSION;
        ck_assert_int_eq(keel_zk_multi(raw, ops, 2, on_multi, res), 0);
        ck_assert(run_until(loop, flag_set, res, 10));
        ck_assert_int_eq(res[0], KEEL_EBADVERSION);
        ck_assert_int_eq(res[1], 0);
        keel_zk_destroy(raw);
    }
    /* The map was not touched: the agents still agree on a valid one. */
    ck_assert(run_until(loop, converged, &w, 1));

    for (i = 0; i < NODES; i++)
        keel_cluster_destroy(w.c[i]);
    ev_loop_destroy(loop);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("zk_election");
    TCase *tc = tcase_create("real");

    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_election_and_failover);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
