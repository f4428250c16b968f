/* Re-replication after the dead time, end to end with a real ZooKeeper
 * and real keeld processes (docs/cluster.md, "Replicas and the in-sync
 * set", rule 2). Three nodes, two replicas per unit, --replica-dead-ms
 * 3000; one counter in every unit, incremented through every node:
 *  - a backup node killed with SIGKILL keeps its places in the replica
 *    lists while its member znode exists and for the dead time after it
 *    went: no unit lists another node before then (the map is polled);
 *  - after it, every unit it held lists the third node instead, which
 *    catches up (a snapshot from the primary) and joins the in-sync set;
 *  - then the primary of the units re-replicated to one node is killed
 *    too: they fail over to that node, and every counter answers there
 *    the count acknowledged before (nothing acknowledged is lost).
 * Every wait is bounded; on a failure the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clmap.h"
#include "cluster.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define SHARDS 16
#define DEAD_MS 3000
#define DEAD_MS_S "3000"

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "cldead", "dd");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    tu_cluster_teardown_zk_paused(&fx, SIGKILL);
}

/* ------------------------------------------------------------ calls */

/* The counter of unit s: the first id "d<k>" that falls in it. */
static void counter_of(uint32_t s, char *id, size_t cap)
{
    tu_cluster_counter_in("d", s, SHARDS, id, cap);
}

/* `op` ("incr" with a request key, or "get") of counter id through node
 * i, sent again (same key) after any failure for at most 40 s. Returns
 * the value answered, or -1 when it never succeeded. *c is reconnected
 * as needed. */
static long call_counter(keel_client **c, int i, const char *id,
                         const char *op)
{
    return tu_cluster_keyed_counter(&fx, c, i, id, op);
}

/* One increment of every unit's counter, unit s through node
 * nodes[(s + round) % nn]; each must answer its count + 1. */
static void load_round(keel_client **cl, long *acked, const int *nodes,
                       int nn, int round, const char *when)
{
    char id[16];
    uint32_t s;

    for (s = 0; s < SHARDS; s++) {
        int i = nodes[(s + (uint32_t)round) % (uint32_t)nn];
        long v;
        counter_of(s, id, sizeof id);
        v = call_counter(&cl[i], i, id, "incr");
        CHECK(v == acked[s] + 1, "%s answered %ld after %ld increments (%s)",
              id, v, acked[s], when);
        acked[s] = v;
    }
}

static int listed(const keel_shard_map *m, const keel_map_unit *u,
                  const char *name)
{
    int ni = keel_map_node_index(m, name);

    return ni >= 0 && keel_map_replica_pos(u, (uint16_t)ni) >= 0;
}

/* ------------------------------------------------------------ tests */

START_TEST(a_dead_backup_is_replaced_after_the_dead_time)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[SHARDS] = {0};
    const int all[3] = {0, 1, 2}, two[2] = {0, 1};
    int held[SHARDS] = {0}, nheld = 0, on[2] = {0, 0};
    char newcomer[SHARDS][8];
    keel_shard_map before, m;
    double t_kill, t_present, t_gone = 0, t_done = 0, t_first = 0;
    int round, k, survivor, other, critical = 0;
    uint32_t s;

    tu_cluster_start_together(&fx, 3, 2,
                              (const char *const[]){"--repl-lag-ms", "1000",
                                                    "--replica-dead-ms",
                                                    DEAD_MS_S, NULL},
                              NULL);
    for (round = 0; round < 3; round++)
        load_round(cl, acked, all, 3, round, "three nodes");
    CHECK(tu_map_read(&fx, &before) == 0, "no map");
    for (s = 0; s < SHARDS; s++) {
        held[s] = listed(&before, tu_map_unit(&before, "", s), "n2");
        nheld += held[s];
        newcomer[s][0] = '\0';
    }
    CHECK(nheld > 0, "n2 holds no unit");

    /* n2 dies. Until its member znode has been gone for the dead time,
     * no unit may list a node it did not list before. */
    keel_client_close(cl[2]);
    cl[2] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    t_kill = tu_now_s();
    t_present = t_kill; /* its session outlives it */
    for (k = 0; k < 1000 && t_done == 0 && tu_now_s() < t_kill + 60; k++) {
        int done = 1;
        double now;
        if (t_gone == 0) {
            /* Gone after the last look that saw it (a slow loop must not
             * make a timely replacement look early). */
            double look = tu_now_s();
            if (tu_cluster_member_exists(&fx, "n2") == 0)
                t_gone = t_present;
            else
                t_present = look;
        }
        CHECK(tu_map_read(&fx, &m) == 0, "no map");
        now = tu_now_s();
        for (s = 0; s < SHARDS; s++) {
            const keel_map_unit *u = tu_map_unit(&m, "", s);
            const keel_map_unit *ub = tu_map_unit(&before, "", s);
            int r;
            for (r = 0; r < u->nreplicas; r++) {
                const char *name = m.nodes[u->replicas[r]];
                if (listed(&before, ub, name))
                    continue;
                /* A replacement: n2's znode gone for the dead time (the
                 * controller saw it go after we did, at the earliest one
                 * poll before; a second allows for that). */
                CHECK(t_gone != 0 && now - t_gone >= DEAD_MS / 1000.0 - 1.0,
                      "shard %u lists %s %.1f s after n2 was killed, %.1f s "
                      "after its member znode went (dead time %d ms)",
                      s, name, now - t_kill,
                      t_gone != 0 ? now - t_gone : -1.0, DEAD_MS);
                snprintf(newcomer[s], sizeof newcomer[s], "%s", name);
                if (t_first == 0)
                    t_first = now;
            }
            if (held[s] &&
                (listed(&m, u, "n2") || u->nreplicas != 2 ||
                 u->insync != 3 || u->target != KEEL_MAP_NO_NODE))
                done = 0;
        }
        keel_map_free(&m);
        if (done)
            t_done = now;
        else
            tu_sleep_ms(100);
    }
    CHECK(t_done != 0,
          "the units n2 held were not re-replicated, in sync, within 60 s");
    fprintf(stderr,
            "dead: n2's member znode went %.1f s after its kill; the first "
            "replacement showed %.1f s after that, every unit in sync "
            "again %.1f s after it\n",
            t_gone - t_kill, t_first - t_gone, t_done - t_gone);
    for (s = 0; s < SHARDS; s++)
        if (held[s]) {
            CHECK(newcomer[s][0] == 'n' &&
                      (newcomer[s][1] == '0' || newcomer[s][1] == '1'),
                  "shard %u: no live node replaced n2", s);
            on[newcomer[s][1] - '0']++;
        }
    CHECK(tu_keel_stat(fx.nodes[0].addr, "repl_catchups") +
                  tu_keel_stat(fx.nodes[1].addr, "repl_catchups") >
              0,
          "no snapshot was sent");
    for (round = 0; round < 2; round++)
        load_round(cl, acked, two, 2, round, "n2 replaced");

    /* The primary of the units re-replicated to `survivor` dies: they
     * fail over to it, and it has every count acknowledged. */
    survivor = on[1] > on[0] ? 1 : 0;
    other = 1 - survivor;
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (s = 0; s < SHARDS; s++) {
        const char *p = keel_map_primary(
            &m, (uint32_t)keel_map_cap_index(&m, ""), s);
        char sv[8];
        snprintf(sv, sizeof sv, "n%d", survivor);
        if (held[s] && strcmp(newcomer[s], sv) == 0 && p != NULL &&
            p[1] - '0' == other)
            critical++;
    }
    keel_map_free(&m);
    CHECK(critical > 0, "no unit was re-replicated to n%d under n%d",
          survivor, other);
    keel_client_close(cl[other]);
    cl[other] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[other], SIGKILL),
                     128 + SIGKILL);
    tu_keeld_free(&fx.nodes[other]);
    for (s = 0; s < SHARDS; s++) {
        char id[16];
        long v;
        counter_of(s, id, sizeof id);
        v = call_counter(&cl[survivor], survivor, id, "get");
        CHECK(v == acked[s],
              "%s (shard %u) is %ld on n%d after n%d died, %ld acknowledged "
              "(%s)",
              id, s, v, survivor, other, acked[s],
              held[s] ? "re-replicated" : "not n2's");
    }
    /* ...and it takes writes alone. */
    {
        const int one[1] = {survivor};
        load_round(cl, acked, one, 1, 0, "one node left");
    }
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (s = 0; s < SHARDS; s++) {
        const char *p = keel_map_primary(
            &m, (uint32_t)keel_map_cap_index(&m, ""), s);
        CHECK(p != NULL && p[1] - '0' == survivor,
              "shard %u is led by %s, not n%d", s, p ? p : "-", survivor);
    }
    keel_map_free(&m);
    keel_map_free(&before);
    for (k = 0; k < 3; k++)
        if (cl[k] != NULL)
            keel_client_close(cl[k]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_dead");
    TCase *tc = tcase_create("cluster_dead");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_dead_backup_is_replaced_after_the_dead_time);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
