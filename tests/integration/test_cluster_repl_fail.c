/* A primary whose own commit fails after its writes left for its backups
 * (they leave when the batch is flushed, beside the primary's commit):
 * real ZooKeeper, three keeld with --replicas 3, and a file size limit on
 * the primary standing in for its full disk. The put that was refused
 * with ENOSPC must not be kept by the backups that applied it: before its
 * reply leaves they are out of the in-sync set, and they come back from a
 * snapshot of the primary. So after the primary dies and a backup is
 * promoted, the refused put is still absent, every acknowledged one is
 * there, and the replicas in sync agree. While its disk stays full, its
 * next refused puts are sent to no backup (writes leave only once
 * committed there until a commit succeeds), so they cost the backups
 * nothing more.
 *
 * A backup whose own disk fills while frames queue behind its busy
 * replication writer: the frames that joined one transaction fail
 * together, none is acknowledged, and the primary keeps its replies
 * until the backup is out of the in-sync set.
 *
 * A primary stopped in order keeps its backups in sync when it comes
 * back at the same epoch (the clean-stop marker), unless a write of its
 * run was answered in doubt: that write is in its store and perhaps on
 * no backup, which then must catch up before it counts as in sync. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "cluster.h"
#include "clmap.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "replfix.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define SHARDS 16
#define CLIENT_MS 20000
#define VLEN 8192
#define MAXPUT 1500

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "clrfail", "rf");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

/* The value of put i: VLEN bytes that name i. */
static void make_value(char *v, int i)
{
    size_t k;

    for (k = 0; k < VLEN; k++)
        v[k] = (char)('a' + (i * 7 + (int)k) % 26);
}

static int put(keel_client *c, const char *id, int i, char **reply)
{
    char *m = malloc(32 + VLEN);
    int n, rc;

    ck_assert_ptr_nonnull(m);
    n = sprintf(m, "put k%05d ", i);
    make_value(m + n, i);
    rc = keel_client_call(c, KEEL_FRAME_CALL, "kv", id, strlen(id), m,
                          (size_t)n + VLEN, reply, NULL);
    free(m);
    return rc;
}

/* get k<i> of actor id through c: 0 with the value checked, or the
 * error. Retries transport errors and EUNAVAIL (a failover under way)
 * for up to 20 s, reconnecting to node `via`. */
static int get(keel_client **c, int via, const char *id, int i)
{
    char msg[32], *reply = NULL, want[VLEN];
    size_t rlen = 0;
    double deadline = tu_now_s() + 20;
    int rc = KEEL_EUNAVAIL;

    snprintf(msg, sizeof msg, "get k%05d", i);
    while (tu_now_s() < deadline) {
        if (*c == NULL &&
            keel_client_connect(fx.nodes[via].addr, CLIENT_MS, c) != 0) {
            *c = NULL;
            tu_sleep_ms(100);
            continue;
        }
        rc = keel_client_call(*c, KEEL_FRAME_CALL, "kv", id, strlen(id), msg,
                              strlen(msg), &reply, &rlen);
        if (rc == 0 || rc == KEEL_ENOTFOUND)
            break;
        free(reply);
        reply = NULL;
        if (rc == KEEL_ECONN || rc == KEEL_ENOTSENT || rc == KEEL_ETIMEDOUT) {
            keel_client_close(*c);
            *c = NULL;
        }
        tu_sleep_ms(100);
    }
    if (rc == 0) {
        make_value(want, i);
        CHECK(rlen == VLEN && memcmp(reply, want, VLEN) == 0,
              "kv %s k%05d: %zu bytes, not the value written", id, i, rlen);
    }
    free(reply);
    return rc;
}

/* Into id (16 bytes): a kv actor that n0 owns as node `via` sees the map,
 * named PREFIX<j>. */
static void kv_owned_by_n0(int via, const char *prefix, char *id)
{
    char owner[64];
    int j;

    id[0] = '\0';
    for (j = 0; j < 64 && id[0] == '\0'; j++) {
        char cand[16];
        snprintf(cand, sizeof cand, "%s%d", prefix, j);
        tu_cluster_owner_of(&fx, via, "kv", cand, owner, sizeof owner);
        if (strcmp(owner, "n0") == 0)
            snprintf(id, 16, "%s", cand);
    }
    CHECK(id[0] != '\0', "no kv actor owned by n0");
}

START_TEST(a_refused_write_is_not_kept_by_the_backups)
{
    static unsigned char acked[MAXPUT];
    const char *common[] = {"--repl-lag-ms", "1000", NULL};
    keel_client *c = NULL;
    keel_shard_map m;
    char id[16] = "", d[3][128];
    int i, j, first_fail = -1, last_ok = -1, nacked = 0, rc;
    uint32_t shard;
    char *reply = NULL;
    long suspects;

    memset(acked, 0, sizeof acked);
    /* n0's data file may not grow past 4 MiB: its disk is full then. */
    fx.nodes[0].fsize_limit = 4L << 20;
    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    kv_owned_by_n0(0, "disk", id);
    shard = keel_shard_of("kv", id, strlen(id), SHARDS);

    CHECK(keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &c) == 0,
          "cannot connect to n0");
    for (i = 0; i < MAXPUT && first_fail < 0; i++) {
        rc = put(c, id, i, &reply);
        if (rc == 0) {
            acked[i] = 1;
            nacked++;
            last_ok = i;
        } else {
            CHECK(rc == KEEL_ENOSPC, "put %d: %s (%s), want OK or ENOSPC", i,
                  keel_err_name(rc), reply ? reply : "");
            first_fail = i;
            fprintf(stderr, "repl fail: put %d refused: %s\n", i, reply);
        }
        free(reply);
        reply = NULL;
    }
    CHECK(first_fail >= 0, "no ENOSPC after %d puts of 8 KiB on n0", i);
    CHECK(nacked > 0, "no put acknowledged before n0's disk was full");
    suspects = tu_keel_stat(fx.nodes[0].addr, "repl_suspects");
    CHECK(suspects > 0, "n0 counts no suspect backup after its commit "
                        "failed");
    keel_client_close(c);
    c = NULL;

    /* The backups that may hold the refused put were dropped before its
     * reply left; they catch up from n0's store and are in sync again. */
    CHECK(tu_map_wait_settled(&fx, 3),
          "the backups of shard %u did not come back in sync", shard);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (i = 0; i < 3; i++) {
        char name[4];
        snprintf(name, sizeof name, "n%d", i);
        d[i][0] = '\0';
        if (tu_map_in_sync(&m, tu_map_unit(&m, "", shard), name))
            tu_cluster_digest(&fx, i, shard, d[i], sizeof d[i]);
    }
    keel_map_free(&m);
    for (i = 0; i < 3; i++)
        for (j = 0; j < 3; j++)
            CHECK(d[i][0] == '\0' || d[j][0] == '\0' ||
                      strcmp(d[i], d[j]) == 0,
                  "shard %u differs between replicas in sync: n%d '%s', "
                  "n%d '%s'",
                  shard, i, d[i], j, d[j]);

    /* The disk stays full: the next puts, with the backups in sync again,
     * are refused too, and, sent to the backups only once committed on
     * n0, cost them nothing more (each used to make them suspect again,
     * each time a drop from the in-sync set and a snapshot). */
    CHECK(keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &c) == 0,
          "cannot connect to n0");
    for (j = 0; j < 10; j++) {
        rc = put(c, id, first_fail, &reply);
        CHECK(rc == KEEL_ENOSPC, "put %d again on a full disk: %s (%s)",
              first_fail, keel_err_name(rc), reply ? reply : "");
        free(reply);
        reply = NULL;
    }
    CHECK(tu_keel_stat(fx.nodes[0].addr, "repl_suspects") == suspects,
          "n0 made backups suspect %ld times over 10 puts refused by its "
          "full disk, after the first refusal's %ld",
          tu_keel_stat(fx.nodes[0].addr, "repl_suspects") - suspects,
          suspects);
    keel_client_close(c);
    c = NULL;
    CHECK(tu_map_wait_settled(&fx, 3),
          "the backups of shard %u are not in sync after the refusals",
          shard);

    /* n0 dies: a backup is promoted. It has every acknowledged put and
     * not the refused one. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    rc = get(&c, 1, id, first_fail);
    CHECK(rc == KEEL_ENOTFOUND,
          "the put refused with ENOSPC on n0 is %s after the failover",
          rc == 0 ? "there" : keel_err_name(rc));
    CHECK(get(&c, 1, id, 0) == 0, "put 0 (acknowledged) is missing");
    CHECK(get(&c, 2, id, last_ok) == 0, "put %d (acknowledged) is missing",
          last_ok);
    keel_client_close(c);
}
END_TEST

/* Starts `nodes` nodes keeping `replicas` replicas, n0 with the failpoint
 * that fails its next flush once file `flag` exists (set by the test;
 * env holds the setting, and must last as long as n0), and finds into id
 * a kv actor n0 owns, named PREFIX<j>. */
static void start_eio(int nodes, int replicas, const char *const *common,
                      const char *prefix, char flag[512], char env[600],
                      char id[16])
{
    snprintf(flag, 512, "%s/eio-now", fx.dir);
    snprintf(env, 600, "KEEL_FAILPOINT_STORE_EIO_FILE=%s", flag);
    fx.nodes[0].child_env = env;
    tu_cluster_start_together(&fx, nodes, replicas, common, NULL);
    kv_owned_by_n0(1, prefix, id);
}

/* A primary whose store breaks (a flush fails with EIO: the store then
 * refuses every commit until a restart recovers from its log) stops as a
 * crashed node would, without handing off and without dropping its
 * backups, so that a backup of each of its units, in sync, takes it and
 * serves it again. Kept running, it held its units and answered ESTORE
 * for them for as long as it ran, and its backups, dropped from the
 * in-sync set as suspects, could not take them even after it died. The
 * writes that may have reached a backup before the failure are answered
 * in doubt: whichever way they went, every acknowledged put is there
 * after the failover and no put refused outright is. */
START_TEST(a_primary_whose_store_fails_gives_its_units_up)
{
    static unsigned char acked[MAXPUT], refused[MAXPUT];
    const char *common[] = {"--repl-lag-ms", "1000", NULL};
    char env[600], flag[512], id[16], *reply = NULL, *log;
    keel_client *c = NULL;
    int i, rc, st = 0, exited = 0, after = 0, nacked = 0;
    double until;

    memset(acked, 0, sizeof acked);
    memset(refused, 0, sizeof refused);
    start_eio(3, 3, common, "eio", flag, env, id);
    CHECK(keel_client_connect(fx.nodes[1].addr, CLIENT_MS, &c) == 0,
          "cannot connect to n1");
    /* Puts through n1 to n0's actor; the disk fails after the tenth. */
    until = tu_now_s() + 60;
    for (i = 0; i < MAXPUT && tu_now_s() < until && after < 10; i++) {
        if (i == 10) {
            FILE *f = fopen(flag, "w");
            CHECK(f != NULL, "cannot create %s", flag);
            fclose(f);
        }
        if (c == NULL &&
            keel_client_connect(fx.nodes[1].addr, CLIENT_MS, &c) != 0)
            c = NULL;
        rc = c != NULL ? put(c, id, i, &reply) : KEEL_ENOTSENT;
        if (rc == 0) {
            acked[i] = 1;
            nacked++;
            after += exited;
        } else if (rc == KEEL_ESTORE || rc == KEEL_EIO ||
                   rc == KEEL_EUNAVAIL || rc == KEEL_ENOTSENT ||
                   rc == KEEL_ESTOPPING || rc == KEEL_EDEADLINE) {
            refused[i] = rc != KEEL_ENOTSENT || c != NULL;
        } else {
            CHECK(rc == KEEL_EINDOUBT || rc == KEEL_ECONN ||
                      rc == KEEL_ETIMEDOUT,
                  "put %d: %s (%s)", i, keel_err_name(rc),
                  reply ? reply : "");
        }
        if (rc == KEEL_ECONN || rc == KEEL_ETIMEDOUT || rc == KEEL_ENOTSENT) {
            if (c != NULL)
                keel_client_close(c);
            c = NULL;
        }
        free(reply);
        reply = NULL;
        if (!exited && waitpid(fx.nodes[0].pid, &st, WNOHANG) ==
                           fx.nodes[0].pid) {
            exited = 1;
            fx.nodes[0].pid = -1;
        }
        if (rc != 0)
            tu_sleep_ms(50);
    }
    if (c != NULL)
        keel_client_close(c);
    c = NULL;
    CHECK(exited, "n0 still runs %d puts after its store failed", i - 10);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0,
          "n0 ended with status %d, not a failure exit", st);
    log = tu_keeld_log(&fx.nodes[0]);
    CHECK(log != NULL && strstr(log, "store of node n0 failed") != NULL,
          "n0's log does not say its store failed");
    free(log);
    CHECK(after >= 10,
          "n0's unit was not served again after it stopped (%d puts "
          "acknowledged since)",
          after);
    /* Every acknowledged put is there; none refused outright is. */
    for (i = 0; i < MAXPUT; i++) {
        if (acked[i])
            CHECK(get(&c, 2, id, i) == 0, "put %d (acknowledged) is missing",
                  i);
        else if (refused[i])
            CHECK(get(&c, 2, id, i) == KEEL_ENOTFOUND,
                  "put %d, refused, is there after the failover", i);
    }
    if (c != NULL)
        keel_client_close(c);
    CHECK(nacked > 10, "%d puts acknowledged", nacked);
}
END_TEST

/* A node whose store fails while it leaves (SIGTERM: handing its units
 * off, each by a stream here, one replica) stops at once, as it does
 * when the store fails at any other time: the rest of the leave would
 * read a store that refuses everything, and the node held its units,
 * answering ESTORE for them, until the leave timed out (60 s here). */
START_TEST(a_store_failing_during_a_leave_stops_the_node)
{
    const char *common[] = {"--leave-timeout", "60000", NULL};
    char env[600], flag[512], id[16], *reply = NULL, *log;
    keel_client *c = NULL;
    int i, st = 0, exited = 0;
    double t0;
    FILE *f;

    start_eio(2, 1, common, "lv", flag, env, id);
    CHECK(keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &c) == 0,
          "cannot connect to n0");
    for (i = 0; i < 20; i++) {
        CHECK(put(c, id, i, &reply) == 0, "put %d: %s", i,
              reply ? reply : "");
        free(reply);
        reply = NULL;
    }
    keel_client_close(c);
    /* Idle, then the disk fails and the node is told to leave: its next
     * flush, in the leave, fails. */
    f = fopen(flag, "w");
    CHECK(f != NULL, "cannot create %s", flag);
    fclose(f);
    CHECK(kill(fx.nodes[0].pid, SIGTERM) == 0, "SIGTERM n0");
    t0 = tu_now_s();
    while (!exited && tu_now_s() - t0 < 45) {
        if (waitpid(fx.nodes[0].pid, &st, WNOHANG) == fx.nodes[0].pid) {
            exited = 1;
            fx.nodes[0].pid = -1;
        } else {
            tu_sleep_ms(100);
        }
    }
    log = tu_keeld_log(&fx.nodes[0]);
    CHECK(exited, "n0 still runs %.0f s after its SIGTERM (leave timeout "
                  "60 s)%s",
          tu_now_s() - t0,
          log != NULL && strstr(log, "store of node n0 failed") != NULL
              ? "; its log says its store failed"
              : "");
    free(log);
}
END_TEST

/* A primary whose own loop is held up past the lag bound, here by commits
 * on its loop thread each held 1.2 s after their writes left (as a flush
 * that stalls on a slow disk holds it), must not take its backups, which
 * answered in time, for silent: their acks wait unread in its sockets
 * while it is held. (A second between puts lets its ZooKeeper session
 * and lease run as they would between stalls.) It used to ask the controller to drop both at the
 * first tick after each stall, leaving itself, the slow node, the only
 * replica in sync, so that its death then left its units unavailable. */
START_TEST(a_primary_held_up_does_not_blame_its_backups)
{
    const char *common[] = {"--repl-lag-ms", "1000", NULL};
    keel_client *c = NULL;
    char id[16] = "", *reply = NULL, *log;
    int i, rc;

    fx.nodes[0].child_env = "KEEL_FAILPOINT_REPL_COMMIT_STALL_MS=1200";
    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    kv_owned_by_n0(0, "held", id);
    CHECK(keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &c) == 0,
          "cannot connect to n0");
    for (i = 0; i < 4; i++) {
        rc = put(c, id, i, &reply);
        CHECK(rc == 0, "put %d: %s (%s)", i, keel_err_name(rc),
              reply ? reply : "");
        free(reply);
        reply = NULL;
        tu_sleep_ms(1000);
    }
    keel_client_close(c);
    log = tu_keeld_log(&fx.nodes[0]);
    CHECK(log != NULL && strstr(log, "has not acknowledged") == NULL,
          "n0 blamed a backup for its own stall:\n%s", log ? log : "");
    free(log);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "repl_drop_requests") == 0,
          "n0 asked %ld times to drop a backup that answered in time",
          tu_keel_stat(fx.nodes[0].addr, "repl_drop_requests"));
}
END_TEST

/* Whether the units marked in `mine` (all when NULL) have n1 and n2 in
 * their in-sync sets; with `mine`, also n0 primary at epochs[s]. With
 * `mark`, marks the units n0 is primary of and records their epochs. */
static int backups_in_sync(int *mine, uint64_t *epochs, int mark)
{
    keel_shard_map m;
    uint32_t s;
    int ok, ci;

    if (tu_map_read(&fx, &m) != 0)
        return 0;
    ci = keel_map_cap_index(&m, "");
    ok = ci >= 0;
    for (s = 0; ok && s < m.shard_count; s++) {
        const keel_map_unit *u = tu_map_unit(&m, "", s);
        const char *p = keel_map_primary(&m, (uint32_t)ci, s);
        if (mark) {
            mine[s] = p != NULL && strcmp(p, "n0") == 0;
            epochs[s] = u->shard_epoch;
        } else if (mine != NULL && !mine[s]) {
            continue;
        } else if (mine != NULL &&
                   (p == NULL || strcmp(p, "n0") != 0 ||
                    u->shard_epoch != epochs[s])) {
            ok = 0;
            break;
        }
        ok = tu_map_in_sync(&m, u, "n1") && tu_map_in_sync(&m, u, "n2");
    }
    keel_map_free(&m);
    return ok;
}

/* Whether every unit has a primary other than `gone` and n0 in sync
 * (its primary, or a backup in the in-sync set). */
static int n0_in_sync_without(const char *gone)
{
    keel_shard_map m;
    uint32_t s;
    int ok, ci;

    if (tu_map_read(&fx, &m) != 0)
        return 0;
    ci = keel_map_cap_index(&m, "");
    ok = ci >= 0;
    for (s = 0; ok && s < m.shard_count; s++) {
        const keel_map_unit *u = tu_map_unit(&m, "", s);
        const char *p = keel_map_primary(&m, (uint32_t)ci, s);
        ok = u != NULL && p != NULL && strcmp(p, gone) != 0 &&
             (strcmp(p, "n0") == 0 || tu_map_in_sync(&m, u, "n0"));
    }
    keel_map_free(&m);
    return ok;
}

/* A counter of a unit whose primary is n0 with no backup in sync, into
 * id (cap bytes); "" when there is none among the first 64 counters. */
static void alone_probe(char *id, size_t cap)
{
    keel_shard_map m;
    int j, ci;

    id[0] = '\0';
    if (tu_map_read(&fx, &m) != 0)
        return;
    ci = keel_map_cap_index(&m, "");
    for (j = 0; ci >= 0 && j < 64; j++) {
        const keel_map_unit *u;
        const char *p;
        uint32_t s;
        snprintf(id, cap, "c%d", j);
        s = keel_shard_of("counter", id, strlen(id), SHARDS);
        u = tu_map_unit(&m, "", s);
        p = keel_map_primary(&m, (uint32_t)ci, s);
        if (u != NULL && p != NULL && strcmp(p, "n0") == 0 &&
            !tu_map_in_sync(&m, u, "n1") && !tu_map_in_sync(&m, u, "n2"))
            break;
        id[0] = '\0';
    }
    keel_map_free(&m);
}

/* A primary that stopped in order (SIGTERM; its backups had died, so it
 * kept its units) left the clean-stop marker: back on its data, it gets
 * its units at the same epoch and suspects nothing, asking no drop of
 * the backups that were in sync. One killed instead
 * (a_restarted_primary_has_its_backups_caught_up in test_cluster_repl)
 * asks them all. */
START_TEST(a_primary_stopped_in_order_keeps_its_backups)
{
    const char *common[] = {"--repl-lag-ms", "1000", NULL};
    int i, port0, mine[SHARDS], n0units = 0;
    uint64_t epochs[SHARDS];
    long drops;
    char *log, probe[32];

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    CHECK(backups_in_sync(mine, epochs, 1),
          "the units did not start with n1 and n2 in sync");
    for (i = 0; i < SHARDS; i++)
        n0units += mine[i];
    CHECK(n0units > 0, "n0 is primary of no unit");
    /* n2 first, and n1 once every unit has n0 in sync again: killed
     * together, a unit of n2's could be promoted to n1 (its session not
     * yet expired), alone in sync, and stay n1's once n1's expired too,
     * as no other replica may have what n1 then acknowledged. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    for (i = 0; i < 300 && !n0_in_sync_without("n2"); i++)
        tu_sleep_ms(100);
    CHECK(n0_in_sync_without("n2"),
          "n2's units did not fail over with n0 in sync");
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[1]);
    /* n1's session expires and n0 takes over its units (failover): then
     * no member is left that n0's leave could hand a unit to, and it
     * stops at once, keeping them all. */
    for (i = 0; i < 300 && !tu_repl_leads(&fx, "n0", 1); i++)
        tu_sleep_ms(100);
    CHECK(tu_repl_leads(&fx, "n0", 1),
          "n0 did not take over the units of n1 and n2");
    alone_probe(probe, sizeof probe);
    CHECK(probe[0] != '\0', "n0 holds no unit alone in sync");
    port0 = fx.nodes[0].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGTERM), 0);
    tu_keeld_free(&fx.nodes[0]);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, port0, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    log = tu_keeld_log(&fx.nodes[0]);
    CHECK(log != NULL && strstr(log, "stopped in order") != NULL,
          "n0 did not find its clean-stop marker");
    free(log);
    /* Serving again: its acquires are done. Suspect backups would have
     * their drops asked at once (a tick, 20 ms). The read that says so
     * goes to a unit n0 holds alone in sync: one with a dead backup in
     * sync would have that backup dropped for it, after the lag. */
    for (i = 0; i < 100 && tu_cluster_counter(&fx, 0, probe, "get") < 0;
         i++)
        tu_sleep_ms(100);
    tu_sleep_ms(1500);
    drops = tu_keel_stat(fx.nodes[0].addr, "repl_drop_requests");
    CHECK(drops == 0, "n0 asked %ld drops after a clean restart", drops);
    CHECK(backups_in_sync(mine, epochs, 0),
          "n1 or n2 left the in-sync set of a unit n0 kept, after n0's "
          "clean restart");
}
END_TEST

/* Two of three nodes lost within a session timeout (R = 3): n2, then n1
 * a second later, while n2's session still runs. When n2's expires, n1
 * is still a member; a unit of n2's promoted there, alone in sync, would
 * have no live in-sync replica once n1's expired too, and would wait for
 * n1 to come back. The controller's link to n1 failed when n1 died, and
 * failover prefers n0. */
START_TEST(two_nodes_lost_together_leave_the_third_serving)
{
    int i, mine[SHARDS];
    uint64_t epochs[SHARDS];
    char id[32];
    long v = -1;

    tu_cluster_start_together(&fx, 3, 3, NULL, NULL);
    CHECK(backups_in_sync(mine, epochs, 1),
          "the units did not start with n1 and n2 in sync");
    /* A write n0 leads: it replicates to both, over links that fail
     * when they die. */
    tu_cluster_counter_owned_by(&fx, 0, "c", "n0", id, sizeof id);
    CHECK(id[0] != '\0', "n0 leads no counter");
    for (i = 0; i < 100 && tu_cluster_counter(&fx, 0, id, "incr") < 0; i++)
        tu_sleep_ms(100);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    tu_sleep_ms(1000);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[1]);
    for (i = 0; i < 300 && !tu_repl_leads(&fx, "n0", 1); i++)
        tu_sleep_ms(100);
    CHECK(tu_repl_leads(&fx, "n0", 1),
          "n0 does not lead every unit 30 s after n1 and n2 died");
    for (i = 0; i < 100 && (v = tu_cluster_counter(&fx, 0, id, "get")) < 0;
         i++)
        tu_sleep_ms(100);
    CHECK(v == 1, "counter %s reads %ld through n0, not 1", id, v);
}
END_TEST

/* A counter id whose unit has the replicas first, second, third (in that
 * order), all in sync, in the map read now; "" when none. */
static void counter_on(const char *first, const char *second,
                       const char *third, char *id, size_t cap)
{
    keel_shard_map m;
    int i;

    id[0] = '\0';
    if (tu_map_read(&fx, &m) != 0)
        return;
    for (i = 0; i < 2000 && id[0] == '\0'; i++) {
        char cand[16];
        const keel_map_unit *u;
        snprintf(cand, sizeof cand, "p%d", i);
        u = tu_map_unit(&m, "",
                        keel_shard_of("counter", cand, strlen(cand), SHARDS));
        if (u != NULL && u->nreplicas == 3 &&
            strcmp(m.nodes[u->replicas[0]], first) == 0 &&
            strcmp(m.nodes[u->replicas[1]], second) == 0 &&
            strcmp(m.nodes[u->replicas[2]], third) == 0 &&
            u->insync == 7)
            snprintf(id, cap, "%s", cand);
    }
    keel_map_free(&m);
}

/* A unit's primary killed, and its first in-sync backup stopped (SIGSTOP,
 * so its links stay up and nothing hints that it is going) a second
 * later: when the primary's session expires, the controller promotes the
 * stopped backup, alone in sync. It never applies that map, so it never
 * writes its state, and never serves: once its session expires too, the
 * third replica, in sync before that promotion, takes the unit with
 * every acknowledged write. Before, the unit waited for the stopped node
 * to come back. */
START_TEST(a_promoted_node_that_never_served_gives_way)
{
    char id[16] = "", names[3][8];
    int i, ctl, a = -1, b = -1, order;
    long v = -1;

    tu_cluster_start_together(&fx, 3, 3, NULL, NULL);
    ctl = tu_repl_controller(&fx, 0, 3);
    CHECK(ctl >= 0, "no controller named");
    for (i = 0; i < 3; i++)
        snprintf(names[i], sizeof names[i], "n%d", i);
    for (order = 0; order < 2 && id[0] == '\0'; order++) {
        a = (ctl + 1 + order) % 3;
        b = (ctl + 2 - order) % 3;
        counter_on(names[a], names[b], names[ctl], id, sizeof id);
    }
    CHECK(id[0] != '\0', "no unit has %s's first backup other than %s",
          names[ctl], names[ctl]);
    for (i = 0; i < 3; i++)
        CHECK(tu_cluster_counter(&fx, ctl, id, "incr") == i + 1,
              "increment %d of %s failed", i + 1, id);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[a], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[a]);
    tu_sleep_ms(1000);
    ck_assert_int_eq(kill(fx.nodes[b].pid, SIGSTOP), 0);
    for (i = 0; i < 300 && !tu_repl_leads(&fx, names[ctl], 1); i++)
        tu_sleep_ms(100);
    {
        int led = tu_repl_leads(&fx, names[ctl], 1);
        ck_assert_int_eq(kill(fx.nodes[b].pid, SIGCONT), 0);
        CHECK(led, "%s does not lead every unit 30 s after %s died and %s "
                   "stopped",
              names[ctl], names[a], names[b]);
    }
    for (i = 0; i < 100 && (v = tu_cluster_counter(&fx, ctl, id, "get")) < 0;
         i++)
        tu_sleep_ms(100);
    CHECK(v == 3, "counter %s reads %ld through %s, not 3", id, v,
          names[ctl]);
}
END_TEST

/* Whether n1 is a live member and in the in-sync set of unit `shard`,
 * whose primary is n0. */
static int n1_in_sync(uint32_t shard)
{
    keel_shard_map m;
    const keel_map_unit *u;
    const char *p;
    int ok;

    if (tu_cluster_member_exists(&fx, "n1") != 1 || tu_map_read(&fx, &m) != 0)
        return 0;
    u = tu_map_unit(&m, "", shard);
    p = keel_map_primary(&m, (uint32_t)keel_map_cap_index(&m, ""), shard);
    ok = u != NULL && p != NULL && strcmp(p, "n0") == 0 &&
         tu_map_in_sync(&m, u, "n1");
    keel_map_free(&m);
    return ok;
}

/* A write whose backups never acknowledged it and that was answered in
 * doubt (n0 fenced: ZooKeeper paused past 2/3 of the session timeout,
 * its in-sync backups dead) is in n0's store and in no backup's. n0 then
 * stops in order and comes back on its data with its units at the same
 * epoch: it must not take its backups for equal to it, though nothing is
 * left unsettled. A backup that returns is in sync only once caught up,
 * with n0's digest. With the clean-stop marker left by that stop, n0
 * suspected nothing and n1 came back in sync without the write. */
START_TEST(a_write_answered_in_doubt_leaves_no_clean_stop)
{
    const char *common[] = {"--repl-lag-ms", "20000", NULL};
    int i, port0, port1, mine[SHARDS];
    uint64_t epochs[SHARDS];
    char id[16] = "", other[16] = "", d0[128], d1[128];
    uint32_t shard = 0;
    tu_repl_bg_incr dc;
    pid_t zk;
    long v;

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    CHECK(backups_in_sync(mine, epochs, 1),
          "the units did not start with n1 and n2 in sync");
    for (i = 0; i < 1000 && id[0] == '\0'; i++) {
        char cand[16];
        snprintf(cand, sizeof cand, "d%d", i);
        shard = keel_shard_of("counter", cand, strlen(cand), SHARDS);
        if (mine[shard])
            snprintf(id, sizeof id, "%s", cand);
    }
    CHECK(id[0] != '\0', "no counter in a unit n0 leads");
    for (i = 0; i < 1000 && other[0] == '\0'; i++) {
        char cand[16];
        snprintf(cand, sizeof cand, "o%d", i);
        if (!mine[keel_shard_of("counter", cand, strlen(cand), SHARDS)])
            snprintf(other, sizeof other, "%s", cand);
    }
    CHECK(other[0] != '\0', "no counter in a unit n0 does not lead");
    CHECK(tu_cluster_counter(&fx, 0, id, "incr") == 1,
          "the first increment of %s failed", id);
    port0 = fx.nodes[0].port;
    port1 = fx.nodes[1].port;
    for (i = 2; i >= 1; i--) {
        ck_assert_int_eq(tu_keeld_stop(&fx.nodes[i], SIGKILL), 128 + SIGKILL);
        tu_keeld_free(&fx.nodes[i]);
    }
    for (i = 0; i < 300 && !tu_repl_leads(&fx, "n0", 1); i++)
        tu_sleep_ms(100);
    CHECK(tu_repl_leads(&fx, "n0", 1),
          "n0 did not take over the units of n1 and n2");
    CHECK(backups_in_sync(mine, epochs, 0),
          "n1 and n2 left the in-sync sets of n0's units before any write");

    /* The write waits for the dead backups (the lag is 20 s); n0 is
     * fenced before it asks them out, which answers it in doubt. */
    tu_repl_bg_incr_start(&dc, fx.nodes[0].addr, id);
    tu_sleep_ms(300);
    zk = (pid_t)tu_cluster_zk_pid(&fx);
    ck_assert_int_eq(kill(zk, SIGSTOP), 0);
    tu_sleep_ms(3100); /* past 2/3 of the 4 s session, within it */
    ck_assert_int_eq(kill(zk, SIGCONT), 0);
    CHECK(tu_repl_bg_incr_join(&dc) == KEEL_EINDOUBT,
          "the increment answered %s, not EINDOUBT", keel_err_name(dc.rc));

    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGTERM), 0);
    tu_keeld_free(&fx.nodes[0]);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, port0, "--replicas", "3",
                                           "--repl-lag-ms", "20000", NULL),
                     0);
    /* Serving again, its acquires done: a counter of a unit it leads
     * alone answers (a read of one with backups in sync would wait for
     * the dead ones, and the lag would drop them). Suspect backups have
     * their drops asked at once (a tick, 20 ms). */
    for (i = 0; i < 100 && tu_cluster_counter(&fx, 0, other, "get") < 0; i++)
        tu_sleep_ms(100);
    tu_sleep_ms(1000);

    /* n1 back on its data, without the write. */
    ck_assert_int_eq(tu_cluster_start_node(&fx, 1, port1, "--replicas", "3",
                                           "--repl-lag-ms", "20000", NULL),
                     0);
    for (i = 0; i < 300 && !n1_in_sync(shard); i++)
        tu_sleep_ms(100);
    CHECK(n1_in_sync(shard), "n1 did not come back into the in-sync set of "
                             "shard %u",
          shard);
    tu_cluster_digest(&fx, 0, shard, d0, sizeof d0);
    tu_cluster_digest(&fx, 1, shard, d1, sizeof d1);
    CHECK(d0[0] != '\0' && strcmp(d0, d1) == 0,
          "shard %u: n1 is in sync with '%s', n0 has '%s'", shard, d1, d0);
    v = tu_cluster_counter(&fx, 1, id, "get");
    CHECK(v == 2, "%s answers %ld through n1, not the 2 n0's store holds", id,
          v);
}
END_TEST

/* Writers of the merged-frames test: each puts to an actor of its own
 * through a connection of its own, so that n0 flushes batch after batch
 * and n1 receives frames faster than its writer flushes them. */
#define MERGE_WRITERS 6
#define MERGE_PUTS 250

struct merge_writer {
    char id[16];
    int ok, failed, first_rc;
    char first_err[128];
};

static void *merge_writer_main(void *arg)
{
    struct merge_writer *w = arg;
    keel_client *c = NULL;
    int i, rc;

    if (keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &c) != 0) {
        w->failed = MERGE_PUTS;
        w->first_rc = KEEL_ECONN;
        return NULL;
    }
    for (i = 0; i < MERGE_PUTS; i++) {
        char *reply = NULL;
        rc = put(c, w->id, i, &reply);
        if (rc == 0) {
            w->ok++;
        } else if (w->failed++ == 0) {
            w->first_rc = rc;
            snprintf(w->first_err, sizeof w->first_err, "%s",
                     reply ? reply : "");
        }
        free(reply);
    }
    keel_client_close(c);
    return NULL;
}

/* Whether n1's log says a commit of merged frames failed. */
static int merged_commit_failed(void)
{
    char *log = tu_keeld_log(&fx.nodes[1]);
    int yes = log != NULL && strstr(log, "none of them is acknowledged");

    free(log);
    return yes;
}

/* Frames that queued behind n1's busy writer and joined one transaction
 * fail together when n1's disk is full: none may be acknowledged. A frame
 * acknowledged without its writes would leave n1 in sync with a hole once
 * its disk has room again (the limit is lifted as soon as such a commit
 * failed, well within the lag bound, so n1 normally stays in sync): the
 * replicas in sync must agree, n1 included. */
START_TEST(frames_merged_on_a_backup_fail_together)
{
    const char *common[] = {"--repl-lag-ms", "5000", NULL};
    struct merge_writer w[MERGE_WRITERS];
    pthread_t th[MERGE_WRITERS];
    struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    keel_client *c = NULL;
    keel_shard_map m;
    char owner[64], d[3][128];
    uint32_t shards[MERGE_WRITERS];
    int i, j, k, nw = 0, failed = 0;
    long merged;

    memset(w, 0, sizeof w);
    /* n1, a backup of every unit, may not grow a file past 4 MiB. */
    fx.nodes[1].fsize_limit = 4L << 20;
    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    for (j = 0; j < 256 && nw < MERGE_WRITERS; j++) {
        char cand[16];
        snprintf(cand, sizeof cand, "mf%d", j);
        tu_cluster_owner_of(&fx, 0, "kv", cand, owner, sizeof owner);
        if (strcmp(owner, "n0") != 0)
            continue;
        shards[nw] = keel_shard_of("kv", cand, strlen(cand), SHARDS);
        snprintf(w[nw++].id, sizeof w[0].id, "%s", cand);
    }
    CHECK(nw == MERGE_WRITERS, "only %d kv actors owned by n0", nw);
    for (i = 0; i < nw; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, merge_writer_main,
                                        &w[i]),
                         0);
    /* At most 60 s (the writers take a few). */
    for (i = 0; i < 1200 && !(failed = merged_commit_failed()); i++)
        tu_sleep_ms(50);
    if (failed)
        ck_assert_int_eq(prlimit(fx.nodes[1].pid, RLIMIT_FSIZE, &unlimited,
                                 NULL),
                         0);
    for (i = 0; i < nw; i++)
        pthread_join(th[i], NULL);
    CHECK(failed, "no commit of merged frames failed on n1");
    merged = tu_keel_stat(fx.nodes[1].addr, "repl_merged_frames");
    CHECK(merged > 0, "n1 counts no merged frame (%ld)", merged);
    CHECK(tu_keel_stat(fx.nodes[1].addr, "repl_refused") > 0,
          "n1 refused nothing");

    /* n0's disk is not full: every put is acknowledged, with n1 in sync
     * again or out of the in-sync sets. */
    for (i = 0; i < nw; i++)
        CHECK(w[i].failed == 0, "actor %s: %d puts failed, the first %s (%s)",
              w[i].id, w[i].failed, keel_err_name(w[i].first_rc),
              w[i].first_err);
    /* n1, out of some set or not, is in sync everywhere again. */
    CHECK(tu_map_wait_settled(&fx, 3), "the replicas did not settle");
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (i = 0; i < nw; i++) {
        const keel_map_unit *u = tu_map_unit(&m, "", shards[i]);
        for (k = 0; k < 3; k++) {
            char name[4];
            snprintf(name, sizeof name, "n%d", k);
            d[k][0] = '\0';
            if (tu_map_in_sync(&m, u, name))
                tu_cluster_digest(&fx, k, shards[i], d[k], sizeof d[k]);
        }
        CHECK(d[0][0] != '\0', "no digest of shard %u from n0", shards[i]);
        for (k = 1; k < 3; k++)
            CHECK(d[k][0] == '\0' || strcmp(d[0], d[k]) == 0,
                  "shard %u: n%d in sync with '%s', n0 has '%s'", shards[i],
                  k, d[k], d[0]);
    }
    keel_map_free(&m);
    /* And the last put of each actor reads back. */
    for (i = 0; i < nw; i++)
        CHECK(get(&c, 0, w[i].id, MERGE_PUTS - 1) == 0,
              "put %d of %s is missing", MERGE_PUTS - 1, w[i].id);
    keel_client_close(c);
}
END_TEST

/* A write answered in doubt because its primary fenced must still hold up
 * the reads after it until every backup in sync has it, or is out of the
 * in-sync set. Two nodes keeping two replicas; n1's disk fills (a file
 * size limit), so that it refuses n0's next write, which waits for it
 * (the lag is 15 s). ZooKeeper stops for 3.1 s: n0 fences (past 2/3 of
 * its 4 s session) and answers the write in doubt, and serves again once
 * ZooKeeper is back, its session alive. A read through n0 then shows the
 * write only once n1 is out of the in-sync set: n0 is killed right after,
 * n1's disk freed, and n1 must not be promoted without the write the read
 * showed (it is not: out of sync, the unit waits for n0). Before, the
 * read's confirm round passed n1 at once, n1 was promoted, and the write
 * was gone. */
START_TEST(a_read_after_a_write_in_doubt_waits_for_the_backups)
{
    const char *common[] = {"--repl-lag-ms", "15000", NULL};
    struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    keel_client *c = NULL;
    char id[16] = "", *reply = NULL;
    int i, port0, rc = 0, w1 = -1;
    pid_t zk;

    fx.nodes[1].fsize_limit = 4L << 20;
    tu_cluster_start_together(&fx, 2, 2, common, NULL);
    port0 = fx.nodes[0].port;
    kv_owned_by_n0(0, "rd", id);

    /* Puts until one is not answered within 3 s: n1 refused it. */
    CHECK(keel_client_connect(fx.nodes[0].addr, 3000, &c) == 0,
          "cannot connect to n0");
    for (i = 0; i < MAXPUT && w1 < 0; i++) {
        rc = put(c, id, i, &reply);
        free(reply);
        reply = NULL;
        if (rc == KEEL_ETIMEDOUT)
            w1 = i;
        else
            CHECK(rc == 0, "put %d: %s", i, keel_err_name(rc));
    }
    keel_client_close(c);
    c = NULL;
    CHECK(w1 >= 0, "every put of %d was answered: n1's disk never filled",
          i);
    CHECK(tu_keel_stat(fx.nodes[1].addr, "repl_refused") > 0,
          "put %d waits, but n1 refused nothing", w1);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "repl_waiting") > 0,
          "put %d waits for nothing on n0", w1);

    /* n0 fences and answers put w1 in doubt; its session lives. */
    zk = (pid_t)tu_cluster_zk_pid(&fx);
    ck_assert_int_eq(kill(zk, SIGSTOP), 0);
    tu_sleep_ms(3100);
    ck_assert_int_eq(kill(zk, SIGCONT), 0);
    for (i = 0; i < 200 && tu_keel_stat(fx.nodes[0].addr, "repl_waiting");
         i++)
        tu_sleep_ms(100);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "repl_waiting") == 0,
          "put %d is still waiting after n0 fenced", w1);
    /* The write still stands before later reads, but keeps no actor
     * resident: a fenced node passivates them all (before, the actor
     * stayed, and counted as active again, on a unit perhaps moved on,
     * once the node served). */
    for (i = 0; i < 50 && tu_keel_stat(fx.nodes[0].addr, "resident_actors");
         i++)
        tu_sleep_ms(100);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "resident_actors") == 0,
          "n0 keeps %s resident after it fenced", id);

    /* The read shows put w1 (n0 has it), but only once n1 is out of the
     * in-sync set (before: at once, n1 in sync). */
    rc = get(&c, 0, id, w1);
    CHECK(rc == 0, "put %d (in doubt, in n0's store) reads %s through n0",
          w1, keel_err_name(rc));
    keel_client_close(c);
    c = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    ck_assert_int_eq(prlimit(fx.nodes[1].pid, RLIMIT_FSIZE, &unlimited,
                             NULL),
                     0);
    rc = get(&c, 1, id, w1);
    CHECK(rc != KEEL_ENOTFOUND,
          "put %d, read through n0, is not there after n0 died: n1 took "
          "the unit without it",
          w1);
    keel_client_close(c);
    c = NULL;
    /* n0 back on its data: the unit is served again, with the write. */
    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, port0, "--replicas", "2",
                                           "--repl-lag-ms", "15000", NULL),
                     0);
    rc = get(&c, 0, id, w1);
    CHECK(rc == 0, "put %d reads %s once n0 is back", w1, keel_err_name(rc));
    keel_client_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_repl_fail");
    TCase *tc = tcase_create("cluster_repl_fail");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_refused_write_is_not_kept_by_the_backups);
    tcase_add_test(tc, a_primary_stopped_in_order_keeps_its_backups);
    tcase_add_test(tc, two_nodes_lost_together_leave_the_third_serving);
    tcase_add_test(tc, a_promoted_node_that_never_served_gives_way);
    tcase_add_test(tc, a_write_answered_in_doubt_leaves_no_clean_stop);
    tcase_add_test(tc, frames_merged_on_a_backup_fail_together);
    suite_add_tcase(s, tc);
    tc = tcase_create("store_fails");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_primary_whose_store_fails_gives_its_units_up);
    tcase_add_test(tc, a_store_failing_during_a_leave_stops_the_node);
    suite_add_tcase(s, tc);
    tc = tcase_create("read_after_doubt");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_read_after_a_write_in_doubt_waits_for_the_backups);
    suite_add_tcase(s, tc);
    tc = tcase_create("held_up");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_primary_held_up_does_not_blame_its_backups);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
