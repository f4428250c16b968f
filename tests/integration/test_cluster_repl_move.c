/* Replicated units that move, end to end with a real ZooKeeper and real
 * keeld processes started with --replicas 3 (docs/cluster.md,
 * "Replication stream" and "Catch-up"). Checked:
 *  - a node drained under load hands its units off with their backups
 *    in sync and equal to the new primaries; nothing acknowledged lost;
 *  - a unit fails over twice, the second time to a replica that caught
 *    up after the first; nothing acknowledged lost, the replicas agree
 *    after each step;
 *  - the controller killed while it leads units, then the next one
 *    killed while a returning node is caught up: each following
 *    controller finishes the failovers and the catch-up from the map and
 *    the nodes' states.
 *  - a write answered in doubt (its primary fenced while a dead backup,
 *    still in sync, had not acknowledged it): a drain moves the units
 *    only once that backup is dropped, never carrying it over in sync
 *    without the write.
 *  - a unit streamed (drain, R = 2) to a backup still being caught up,
 *    whose replication writer holds the catch-up's check and pieces
 *    (failpoints, common/failpoint.h): the stream is stored after them,
 *    and the new primary has every acknowledged write.
 * The fixture (counters "r<j>" under a load through the nodes) is
 * tests/support/replfix.h, shared with test_cluster_repl.c and
 * test_cluster_repl_catchup.c. The map is read straight from ZooKeeper.
 * Every wait is bounded; the checks are about outcomes, not durations.
 * On a failure the nodes' logs are printed. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "clmap.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "replfix.h"
#include "runtime/client.h"
#include "testutil.h"

#define SHARDS TU_REPL_SHARDS
#define COUNTERS TU_REPL_COUNTERS

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_repl_setup(&fx, "clreplm", "rpm");
}

static void teardown(void)
{
    tu_repl_teardown(&fx);
}

/* A primary drained under load hands its units off only with everything
 * acknowledged on their backups: the new primaries and the backups the
 * map keeps in sync hold the same records, and no acknowledged increment
 * is lost. */
START_TEST(a_drained_primary_hands_off_with_its_backups)
{
    keel_client *c = NULL;
    keel_shard_map m;
    long acked[COUNTERS] = {0};
    int touched[SHARDS] = {0};
    int i, j, round, code = -1;
    char id[16], *out = NULL, *err = NULL;

    tu_repl_start(&fx, 3, 3, "2000");
    for (round = 0; round < 6; round++) {
        if (round == 2) {
            /* n0 leaves, through n1, while the increments go on */
            CHECK(tu_keel(fx.nodes[1].addr, &out, &err, "node", "drain",
                          "n0", NULL) == 0,
                  "drain n0: %s", err != NULL ? err : "");
            free(out);
            free(err);
        }
        for (j = 0; j < COUNTERS; j++) {
            long v;
            tu_repl_counter_id(j, id, sizeof id);
            v = tu_repl_incr(&fx, &c, 1, id);
            CHECK(v == acked[j] + 1, "%s answered %ld after %ld increments",
                  id, v, acked[j]);
            acked[j] = v;
            touched[tu_repl_shard_of(id)] = 1;
        }
    }
    keel_client_close(c);
    code = tu_keeld_stop(&fx.nodes[0], SIGTERM);
    CHECK(code == 0, "drained n0 exited with %d", code);
    for (j = 0; j < COUNTERS; j++)
        for (i = 1; i < 3; i++) {
            long v;
            tu_repl_counter_id(j, id, sizeof id);
            v = tu_repl_get(&fx, i, id);
            CHECK(v == acked[j], "%s is %ld through n%d, %ld acknowledged", id,
                  v, i, acked[j]);
        }
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)j);
        const char *p = keel_map_primary(&m, (uint32_t)keel_map_cap_index(
                                                 &m, ""),
                                         (uint32_t)j);
        char d1[128], d2[128];
        CHECK(p != NULL && strcmp(p, "n0") != 0,
              "shard %d still on n0 after its drain", j);
        CHECK(!tu_map_in_sync(&m, u, "n0"), "drained n0 in sync for shard %d",
              j);
        if (!touched[j] || !tu_map_in_sync(&m, u, "n1") ||
            !tu_map_in_sync(&m, u, "n2"))
            continue;
        tu_cluster_digest(&fx, 1, (uint32_t)j, d1, sizeof d1);
        tu_cluster_digest(&fx, 2, (uint32_t)j, d2, sizeof d2);
        CHECK(d1[0] != '\0' && strcmp(d1, d2) == 0,
              "shard %d differs between n1 '%s' and n2 '%s', both in sync", j,
              d1, d2);
    }
    keel_map_free(&m);
}
END_TEST

/* With catch-up, a unit fails over more than once: its primary killed,
 * a backup is promoted (alone in sync), the old primary comes back and
 * both other replicas catch up; then the new primary is killed and the
 * unit fails over again, to a replica that caught up. Nothing
 * acknowledged is lost, and the replicas agree after each step. */
START_TEST(a_unit_fails_over_twice)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0};
    const int all[3] = {0, 1, 2};
    keel_shard_map m;
    char id[16], owner[64], second[64];
    int round, port, first_victim = 0, second_victim, rest[2], k;
    uint32_t shard;
    uint64_t epoch;

    tu_repl_start(&fx, 3, 3, "1000");
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, all, 3, round, "three nodes");
    tu_repl_counter_id(0, id, sizeof id);
    shard = tu_repl_shard_of(id);
    tu_cluster_owner_of(&fx, 1, "counter", id, owner, sizeof owner);
    CHECK(owner[0] == 'n', "no owner of %s", id);
    first_victim = owner[1] - '0';
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    epoch = tu_map_unit(&m, "", shard)->shard_epoch;
    keel_map_free(&m);

    /* First failover. */
    port = fx.nodes[first_victim].port;
    keel_client_close(cl[first_victim]);
    cl[first_victim] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[first_victim], SIGKILL),
                     128 + SIGKILL);
    tu_keeld_free(&fx.nodes[first_victim]);
    for (k = 0, round = 0; round < 3; round++)
        if (round != first_victim)
            rest[k++] = round;
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, rest, 2, round,
                           "first primary dead");
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    CHECK(tu_map_unit(&m, "", shard)->shard_epoch > epoch,
          "shard %u did not fail over", shard);
    epoch = tu_map_unit(&m, "", shard)->shard_epoch;
    keel_map_free(&m);
    ck_assert_int_eq(tu_cluster_start_node(&fx, first_victim, port,
                                           "--replicas", "3", "--repl-lag-ms",
                                           "1000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "after the first failover");
    tu_repl_load_round(&fx, cl, acked, all, 3, 0, "after the first failover");
    tu_repl_check_agree(&fx, acked, all, 3, "after the first failover");

    /* Second failover: whoever leads the unit now. */
    tu_cluster_owner_of(&fx, 0, "counter", id, second, sizeof second);
    CHECK(second[0] == 'n', "no owner of %s", id);
    second_victim = second[1] - '0';
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    epoch = tu_map_unit(&m, "", shard)->shard_epoch;
    keel_map_free(&m);
    keel_client_close(cl[second_victim]);
    cl[second_victim] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[second_victim], SIGKILL),
                     128 + SIGKILL);
    tu_keeld_free(&fx.nodes[second_victim]);
    for (k = 0, round = 0; round < 3; round++)
        if (round != second_victim)
            rest[k++] = round;
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, rest, 2, round,
                           "second primary dead");
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    {
        const keel_map_unit *u = tu_map_unit(&m, "", shard);
        const char *p = keel_map_primary(
            &m, (uint32_t)keel_map_cap_index(&m, ""), shard);
        CHECK(u->shard_epoch > epoch && u->promoted && p != NULL &&
                  strcmp(p, second) != 0,
              "shard %u did not fail over a second time (epoch %llu, "
              "primary %s)",
              shard, (unsigned long long)u->shard_epoch, p ? p : "-");
    }
    keel_map_free(&m);
    {
        const int *live = rest;
        int j, kk;
        for (j = 0; j < COUNTERS; j++)
            for (kk = 0; kk < 2; kk++) {
                long v;
                tu_repl_counter_id(j, id, sizeof id);
                v = tu_repl_get(&fx, live[kk], id);
                CHECK(v == acked[j], "%s is %ld through n%d, %ld "
                      "acknowledged (second failover)", id, v, live[kk],
                      acked[j]);
            }
    }
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
}
END_TEST

/* Waits (bounded) until some node other than `not` names a controller
 * other than `not`: its index, or -1. */
static int wait_new_controller(int not)
{
    int tries, i, c;

    for (tries = 0; tries < 150; tries++) {
        for (i = 0; i < 3; i++) {
            if (i == not || fx.nodes[i].pid <= 0)
                continue;
            c = tu_repl_controller(&fx, i, 3);
            if (c >= 0 && c != not)
                return c;
        }
        tu_sleep_ms(200);
    }
    return -1;
}

/* Waits (bounded) until node `name` is in the in-sync set of every unit
 * of the default group: 1 when it is. */
static int wait_in_sync_everywhere(const char *name)
{
    keel_shard_map m;
    int tries, ok = 0;
    uint32_t s;

    for (tries = 0; tries < 300 && !ok; tries++) {
        if (tu_map_read(&fx, &m) == 0) {
            ok = keel_map_cap_index(&m, "") >= 0;
            for (s = 0; ok && s < m.shard_count; s++)
                ok = tu_map_in_sync(&m, tu_map_unit(&m, "", s), name);
            keel_map_free(&m);
        }
        if (!ok)
            tu_sleep_ms(100);
    }
    return ok;
}

/* The controller's work left half done is finished by the next one.
 * First the controller itself is killed with -9 while it leads units:
 * no controller is left to fail them over until another node is
 * elected, which promotes their backups (shard_epoch higher, the dead
 * node no longer primary) from the map and the nodes' states. Then the
 * dead node comes back on its data and is being caught up (a snapshot
 * sent) when the new controller is killed too: the third controller
 * fails over what that one led and adds the returning node once caught
 * up. In the end all three nodes are in sync everywhere, they agree, and
 * no acknowledged increment is lost. */
START_TEST(a_killed_controller_s_work_is_finished_by_the_next)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0};
    const int all[3] = {0, 1, 2};
    uint64_t epochs[SHARDS];
    int led[SHARDS] = {0};
    keel_shard_map m;
    int round, c1, c2, third, port1, port2, rest[2], k, nled = 0, tries;
    char c1name[16], thirdname[16];
    uint32_t s;
    long snaps = 0;

    tu_repl_start(&fx, 3, 3, "1000");
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, all, 3, round, "three nodes");
    c1 = tu_repl_controller(&fx, 0, 3);
    CHECK(c1 >= 0, "n0 names no controller");
    snprintf(c1name, sizeof c1name, "n%d", c1);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (s = 0; s < (uint32_t)SHARDS; s++) {
        const char *p =
            keel_map_primary(&m, (uint32_t)keel_map_cap_index(&m, ""), s);
        epochs[s] = tu_map_unit(&m, "", s)->shard_epoch;
        if (p != NULL && strcmp(p, c1name) == 0) {
            led[s] = 1;
            nled++;
        }
    }
    keel_map_free(&m);
    CHECK(nled > 0, "the controller %s leads no unit", c1name);

    /* The controller dies with units it leads. */
    port1 = fx.nodes[c1].port;
    keel_client_close(cl[c1]);
    cl[c1] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[c1], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[c1]);
    for (k = 0, round = 0; round < 3; round++)
        if (round != c1)
            rest[k++] = round;
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, rest, 2, round,
                           "the controller dead");
    c2 = wait_new_controller(c1);
    CHECK(c2 >= 0, "no controller after %s was killed", c1name);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (s = 0; s < (uint32_t)SHARDS; s++) {
        const char *p =
            keel_map_primary(&m, (uint32_t)keel_map_cap_index(&m, ""), s);
        if (!led[s])
            continue;
        CHECK(tu_map_unit(&m, "", s)->shard_epoch > epochs[s] && p != NULL &&
                  strcmp(p, c1name) != 0,
              "shard %u, led by the killed controller, did not fail over "
              "(epoch %llu, was %llu, primary %s)",
              s, (unsigned long long)tu_map_unit(&m, "", s)->shard_epoch,
              (unsigned long long)epochs[s], p ? p : "-");
    }
    keel_map_free(&m);

    /* The third node must be in sync everywhere before the second
     * controller dies, or a unit would rightly wait for it. */
    third = 3 - c1 - c2;
    snprintf(thirdname, sizeof thirdname, "n%d", third);
    CHECK(wait_in_sync_everywhere(thirdname),
          "%s is not in sync everywhere", thirdname);

    /* The old controller comes back; while it is being caught up, the
     * new controller dies. */
    ck_assert_int_eq(tu_cluster_start_node(&fx, c1, port1, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    for (tries = 0; tries < 300 && snaps == 0; tries++) {
        snaps = tu_keel_stat(fx.nodes[c2].addr, "repl_catchups") +
                tu_keel_stat(fx.nodes[third].addr, "repl_catchups");
        if (snaps <= 0) {
            snaps = 0;
            tu_sleep_ms(50);
        }
    }
    CHECK(snaps > 0, "n%d is not being caught up", c1);
    port2 = fx.nodes[c2].port;
    keel_client_close(cl[c2]);
    cl[c2] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[c2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[c2]);
    rest[0] = third;
    rest[1] = c1;
    CHECK(wait_in_sync_everywhere(c1name),
          "%s was not caught up after the second controller died", c1name);
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, rest, 2, round,
                           "two controllers killed");
    tu_repl_check_agree(&fx, acked, rest, 2, "two controllers killed");

    /* And the second comes back: all three agree. */
    ck_assert_int_eq(tu_cluster_start_node(&fx, c2, port2, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "both controllers back");
    tu_repl_load_round(&fx, cl, acked, all, 3, 0, "both controllers back");
    tu_repl_check_agree(&fx, acked, all, 3, "both controllers back");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
}
END_TEST

/* Whether the map read now has node in the in-sync set of unit s of the
 * default group (and node is a member) with no move of s under way; then
 * *epoch and prim (its primary) say where s is. */
static int in_sync_at_rest(uint32_t s, const char *node, uint64_t *epoch,
                           char *prim, size_t cap)
{
    keel_shard_map m;
    const keel_map_unit *u;
    int ok = 0;

    if (tu_cluster_member_exists(&fx, node) != 1 || tu_map_read(&fx, &m) != 0)
        return 0;
    u = tu_map_unit(&m, "", s);
    if (u != NULL && u->nreplicas > 0 && u->target == KEEL_MAP_NO_NODE &&
        tu_map_in_sync(&m, u, node)) {
        *epoch = u->shard_epoch;
        snprintf(prim, cap, "%s", m.nodes[u->replicas[0]]);
        ok = 1;
    }
    keel_map_free(&m);
    return ok;
}

/* A write answered in doubt (n0 fenced by a ZooKeeper pause while its
 * backup n2, dead, had not acknowledged it) is in n0's store, on n1 and
 * not on n2, which stays in the in-sync set of n0's units (its dead
 * time). n0 then drained, its units go to n1 with the records: n2 must
 * not be carried over in sync without the write. The release waits for
 * the frames n2 has not acknowledged, until the lag has it dropped; back,
 * n2 is in sync again only once caught up, with what n1 held after the
 * drain. Without the wait, the units moved with n2 in sync and the
 * digests differed.
 * n1's copy is read once, before n2 comes back: where placement ranks n2
 * above n1, the unit moves on to n2 once n2 is in sync (rule 3), and n1,
 * listed out of sync, holds nothing of it until n2 has caught it up. The
 * check is therefore made on a map at rest (no move under way, the same
 * primary and epoch before and after the digests are read), against
 * n1's copy from before and against the primary of the moment. */
START_TEST(a_unit_moves_without_a_backup_that_lacks_a_write_in_doubt)
{
    tu_repl_bg_incr w[SHARDS];
    char ids[SHARDS][16], held[SHARDS][128];
    keel_shard_map m;
    int i, j, nw = 0, port2, ci;
    char *out = NULL, *err = NULL;
    pid_t zk;

    tu_repl_start(&fx, 3, 3, "8000");
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    ci = keel_map_cap_index(&m, "");
    for (j = 0; j < 1000 && nw < SHARDS; j++) {
        char id[16];
        uint32_t s;
        const char *p;
        snprintf(id, sizeof id, "w%d", j);
        s = keel_shard_of("counter", id, strlen(id), SHARDS);
        p = keel_map_primary(&m, (uint32_t)ci, s);
        if (p == NULL || strcmp(p, "n0") != 0)
            continue;
        for (i = 0; i < nw; i++)
            if (keel_shard_of("counter", ids[i], strlen(ids[i]), SHARDS) ==
                s)
                break;
        if (i < nw)
            continue;
        snprintf(ids[nw], sizeof ids[nw], "%s", id);
        nw++;
    }
    keel_map_free(&m);
    CHECK(nw > 0, "n0 leads no unit");
    for (i = 0; i < nw; i++)
        CHECK(tu_cluster_counter(&fx, 0, ids[i], "incr") == 1,
              "the first increment of %s failed", ids[i]);
    port2 = fx.nodes[2].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);

    /* The writes wait for n2 (the lag is 8 s); n0 is fenced first, which
     * answers them in doubt. */
    for (i = 0; i < nw; i++)
        tu_repl_bg_incr_start(&w[i], fx.nodes[0].addr, ids[i]);
    tu_sleep_ms(300);
    zk = (pid_t)tu_cluster_zk_pid(&fx);
    ck_assert_int_eq(kill(zk, SIGSTOP), 0);
    /* Past the lease (T/2 = 2 s after the last answered heartbeat left,
     * before the stop), within the session (4 s after the last one
     * ZooKeeper saw, at most a heartbeat, 0.5 s, before the stop): as far
     * from either end as they allow, for a loaded machine's late timers. */
    tu_sleep_ms(2750);
    ck_assert_int_eq(kill(zk, SIGCONT), 0);
    for (i = 0; i < nw; i++)
        CHECK(tu_repl_bg_incr_join(&w[i]) == KEEL_EINDOUBT,
              "the increment of %s answered %s, not EINDOUBT", ids[i],
              keel_err_name(w[i].rc));

    CHECK(tu_keel(fx.nodes[1].addr, &out, &err, "node", "drain", "n0",
                  NULL) == 0,
          "drain n0: %s", err != NULL ? err : "");
    free(out);
    free(err);
    for (i = 0; i < 300 && !tu_repl_leads(&fx, "n0", 0); i++)
        tu_sleep_ms(100);
    CHECK(tu_repl_leads(&fx, "n0", 0), "n0 still leads units after its drain");

    /* n1 leads every unit now, n2 is dead and nothing is written: what
     * n1 holds is what n2 must hold once back in sync. */
    for (i = 0; i < nw; i++) {
        uint32_t s =
            keel_shard_of("counter", ids[i], strlen(ids[i]), SHARDS);
        for (j = 0; j < 50; j++) {
            tu_cluster_digest(&fx, 1, s, held[i], sizeof held[i]);
            if (held[i][0] != '\0')
                break;
            tu_sleep_ms(100);
        }
        CHECK(held[i][0] != '\0', "no digest of shard %u from n1", s);
    }

    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, port2, "--replicas", "3",
                                           "--repl-lag-ms", "8000", NULL),
                     0);
    for (i = 0; i < nw; i++) {
        uint32_t s =
            keel_shard_of("counter", ids[i], strlen(ids[i]), SHARDS);
        char d2[128], dp[128], prim[KEEL_NAME_MAX + 1] = "";
        char again[KEEL_NAME_MAX + 1];
        uint64_t e1 = 0, e2 = 0;
        int ok = 0, pi = -1;
        for (j = 0; j < 300 && !ok; j++) {
            if (in_sync_at_rest(s, "n2", &e1, prim, sizeof prim) &&
                sscanf(prim, "n%d", &pi) == 1 && pi >= 0 && pi < 3) {
                tu_cluster_digest(&fx, 2, s, d2, sizeof d2);
                tu_cluster_digest(&fx, pi, s, dp, sizeof dp);
                /* an empty digest is a call that failed: asked again */
                ok = d2[0] != '\0' && dp[0] != '\0' &&
                     in_sync_at_rest(s, "n2", &e2, again, sizeof again) &&
                     e1 == e2 && strcmp(prim, again) == 0;
            }
            if (!ok)
                tu_sleep_ms(100);
        }
        CHECK(ok, "n2 is not in the in-sync set of shard %u at rest", s);
        CHECK(strcmp(d2, held[i]) == 0,
              "shard %u: n2 is in sync with '%s', n1 held '%s' after the "
              "drain",
              s, d2, held[i]);
        CHECK(strcmp(dp, held[i]) == 0,
              "shard %u: its primary %s has '%s', n1 held '%s' after the "
              "drain",
              s, prim, dp, held[i]);
    }
}
END_TEST

/* A unit streamed to a backup that its primary is still catching up is
 * stored there only after the catch-up's pieces that backup took before
 * (docs/cluster.md, "Catch-up"; runtime/unit_stream.c). n0 serves every
 * unit alone (--replicas 2, n1 not started yet) and a "cold" counter of
 * each unit is written. n1 joins and n0 catches it up, sending checks
 * first; n1's replication writer is held (the failpoint
 * REPL_APPLY_DELAY_MS, common/failpoint.h), so the checks wait there. A
 * "hot" counter of each unit is then written through n0 (acknowledged by
 * n0 alone; sent on to n1 after the check), so that n0's copy no longer
 * has the check's digest, and n0 is drained. With no backup in sync, n0
 * streams each unit to n1, the catch-up ending as the unit stops being
 * n0's. Stored before the held pieces, the stream is what the check then
 * compares: another digest, so the check deletes it, and the cold
 * counters are gone from their new primary. n1's acquire is held too
 * (ACQUIRE_DELAY_MS): its fence at the next epoch refuses the pieces of
 * the one before, so without that hold the acquire, 50 ms after the
 * stream, closes the window before the held pieces commit and nothing is
 * lost whatever the order. Before a stream waited for the replication
 * writer, the cold counters of the units being caught up read 0 through
 * n1 ("c44 (shard 0) is 0 through n1 after n0's drain, 3
 * acknowledged"). */
START_TEST(a_unit_streamed_to_a_backup_being_caught_up_keeps_its_writes)
{
    enum { COLD = 3, APPLY_DELAY_MS = 6000, ACQUIRE_DELAY_MS = 8000 };
    keel_client *c = NULL;
    char cold[SHARDS][16], hot[SHARDS][16], apply[16], acquire[16];
    char *out = NULL, *err = NULL;
    long catchups = 0, acquired = 0;
    double since;
    int i, j, s, rc;

    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, 0, "--replicas", "2",
                                           "--repl-lag-ms", "30000", NULL),
                     0);
    /* With R = 2 the units wait up to 3 s for a second member, then go
     * to n0 alone. */
    for (i = 0; i < 300 && !tu_repl_leads(&fx, "n0", 1); i++)
        tu_sleep_ms(100);
    CHECK(tu_repl_leads(&fx, "n0", 1), "n0 does not lead every unit");
    for (s = 0; s < SHARDS; s++) {
        tu_cluster_counter_in("c", (uint32_t)s, SHARDS, cold[s],
                              sizeof cold[s]);
        tu_cluster_counter_in("h", (uint32_t)s, SHARDS, hot[s],
                              sizeof hot[s]);
        for (j = 1; j <= COLD; j++) {
            long v = tu_repl_incr(&fx, &c, 0, cold[s]);
            CHECK(v == j, "%s answered %ld, not %d", cold[s], v, j);
        }
    }

    /* n1 joins, its replication writer and its acquires held. */
    snprintf(apply, sizeof apply, "%d", APPLY_DELAY_MS);
    snprintf(acquire, sizeof acquire, "%d", ACQUIRE_DELAY_MS);
    ck_assert_int_eq(setenv("KEEL_FAILPOINT_REPL_APPLY_DELAY_MS", apply, 1),
                     0);
    ck_assert_int_eq(setenv("KEEL_FAILPOINT_ACQUIRE_DELAY_MS", acquire, 1),
                     0);
    rc = tu_cluster_start_node(&fx, 1, 0, "--replicas", "2", "--repl-lag-ms",
                               "30000", "--log-level", "debug", NULL);
    unsetenv("KEEL_FAILPOINT_REPL_APPLY_DELAY_MS");
    unsetenv("KEEL_FAILPOINT_ACQUIRE_DELAY_MS");
    ck_assert_int_eq(rc, 0);
    for (i = 0; i < 400 && catchups <= 0; i++) {
        catchups = tu_keel_stat(fx.nodes[0].addr, "repl_catchups");
        if (catchups <= 0)
            tu_sleep_ms(25);
    }
    CHECK(catchups > 0, "n0 started no catch-up of n1");
    since = tu_now_s();

    /* Written after the checks were read, acknowledged by n0 alone. */
    for (s = 0; s < SHARDS; s++) {
        long v = tu_repl_incr(&fx, &c, 0, hot[s]);
        CHECK(v == 1, "%s answered %ld, not 1", hot[s], v);
    }
    keel_client_close(c);
    CHECK(tu_keel(fx.nodes[1].addr, &out, &err, "node", "drain", "n0",
                  NULL) == 0,
          "drain n0: %s", err != NULL ? err : "");
    free(out);
    free(err);
    /* Else n1 may have committed the checks before the streams came: the
     * test would prove nothing. */
    fprintf(stderr, "n0 drained %.2f s after its catch-ups of n1 began\n",
            tu_now_s() - since);
    CHECK(tu_now_s() - since < APPLY_DELAY_MS / 2000.0,
          "n0 was drained %.1f s after its catch-ups of n1 began, too late "
          "for n1's held writer (%d ms)",
          tu_now_s() - since, APPLY_DELAY_MS);

    for (i = 0; i < 600 && !tu_repl_leads(&fx, "n1", 1); i++)
        tu_sleep_ms(100);
    CHECK(tu_repl_leads(&fx, "n1", 1),
          "n1 does not lead every unit after n0's drain");
    for (i = 0; i < 600 && acquired < SHARDS; i++) {
        acquired = tu_keel_stat(fx.nodes[1].addr, "units_acquired");
        if (acquired < SHARDS)
            tu_sleep_ms(100);
    }
    CHECK(acquired >= SHARDS, "n1 acquired %ld units of %d", acquired,
          SHARDS);
    for (s = 0; s < SHARDS; s++) {
        long v = tu_repl_get(&fx, 1, cold[s]);
        CHECK(v == COLD,
              "%s (shard %d) is %ld through n1 after n0's drain, %d "
              "acknowledged",
              cold[s], s, v, COLD);
        v = tu_repl_get(&fx, 1, hot[s]);
        CHECK(v == 1,
              "%s (shard %d) is %ld through n1 after n0's drain, 1 "
              "acknowledged",
              hot[s], s, v);
    }
}
END_TEST

/* A drained backup stops as soon as it leads nothing (cluster_rt.c,
 * leave_tick), whatever its units' replacements have copied. R = 2 on
 * three nodes, every unit on two of them in sync; the replication
 * writers are held (REPL_APPLY_DELAY_MS), so that the replacements the
 * drain of n2 appends are still being caught up when n2 exits. Every
 * unit n2 backed up must still list its replacement once n2 is gone: a
 * gone backup within its dead time takes a backup place back from
 * placement, and a replacement dropped for it copies nothing for the
 * dead time (5 minutes), the unit on one complete copy. */
START_TEST(a_drained_backup_leaves_its_replacement_listed)
{
    enum { APPLY_DELAY_MS = 8000 };
    keel_shard_map before, after;
    char apply[16], arm[600], *out = NULL, *err = NULL;
    int i, j, checked = 0, catching = 0, gone = 0;
    FILE *f;
    double t0;

    /* Armed only once every unit is in sync: held from the start, a
     * backup that a loaded machine registers late is caught up one held
     * commit after another, and the cluster never settles. */
    snprintf(apply, sizeof apply, "%d", APPLY_DELAY_MS);
    snprintf(arm, sizeof arm, "%s/arm-failpoints", fx.dir);
    ck_assert_int_eq(setenv("KEEL_FAILPOINT_REPL_APPLY_DELAY_MS", apply, 1),
                     0);
    ck_assert_int_eq(setenv("KEEL_FAILPOINT_ARM_FILE", arm, 1), 0);
    tu_repl_start(&fx, 3, 2, "1000");
    unsetenv("KEEL_FAILPOINT_REPL_APPLY_DELAY_MS");
    unsetenv("KEEL_FAILPOINT_ARM_FILE");
    f = fopen(arm, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    CHECK(tu_map_read(&fx, &before) == 0, "no map");
    t0 = tu_now_s();
    CHECK(tu_keel(fx.nodes[0].addr, &out, &err, "node", "drain", "n2",
                  NULL) == 0,
          "drain n2: %s", err != NULL ? err : "");
    free(out);
    free(err);
    for (i = 0; i < 300 && !gone; i++) {
        gone = tu_cluster_member_exists(&fx, "n2") == 0;
        if (!gone)
            tu_sleep_ms(100);
    }
    CHECK(gone, "n2 still a member 30 s after its drain");
    fprintf(stderr, "n2 gone %.1f s after its drain\n", tu_now_s() - t0);
    tu_sleep_ms(2000);
    CHECK(tu_map_read(&fx, &after) == 0, "no map");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *ub = tu_map_unit(&before, "", (uint32_t)j);
        const keel_map_unit *ua = tu_map_unit(&after, "", (uint32_t)j);
        const char *p = before.nodes[ub->replicas[0]], *other = NULL;
        char was[128], now[128];
        size_t off = 0;
        int r, listed = 0;
        if (strcmp(p, "n2") == 0 || ub->nreplicas != 2 ||
            strcmp(before.nodes[ub->replicas[1]], "n2") != 0)
            continue;
        other = strcmp(p, "n0") == 0 ? "n1" : "n0";
        checked++;
        was[0] = now[0] = '\0';
        for (r = 0; r < ub->nreplicas; r++)
            off += (size_t)snprintf(was + off, sizeof was - off, "%s%s ",
                                    before.nodes[ub->replicas[r]],
                                    keel_map_insync(ub, r) ? "*" : "");
        off = 0;
        for (r = 0; r < ua->nreplicas; r++) {
            const char *nm = after.nodes[ua->replicas[r]];
            off += (size_t)snprintf(now + off, sizeof now - off, "%s%s ", nm,
                                    keel_map_insync(ua, r) ? "*" : "");
            listed |= strcmp(nm, other) == 0;
        }
        CHECK(listed,
              "shard %d: %s-> %safter n2's drain: its replacement %s is "
              "not listed",
              j, was, now, other);
        catching += !tu_map_in_sync(&after, ua, other);
        fprintf(stderr, "shard %d: %s-> %s\n", j, was, now);
    }
    CHECK(checked > 0, "no unit had n2 as its backup");
    CHECK(catching > 0, "every replacement was in sync when n2 left: the "
                        "held writers did not hold");
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_repl_move");
    TCase *tc = tcase_create("cluster_repl_move");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_drained_primary_hands_off_with_its_backups);
    tcase_add_test(tc, a_unit_fails_over_twice);
    tcase_add_test(tc, a_killed_controller_s_work_is_finished_by_the_next);
    tcase_add_test(tc,
                   a_unit_moves_without_a_backup_that_lacks_a_write_in_doubt);
    suite_add_tcase(s, tc);
    /* Its own case, so that CK_RUN_CASE runs it alone. */
    tc = tcase_create("stream_after_catch_up");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc,
                   a_unit_streamed_to_a_backup_being_caught_up_keeps_its_writes);
    suite_add_tcase(s, tc);
    tc = tcase_create("drained_backup_stops");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_drained_backup_leaves_its_replacement_listed);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
