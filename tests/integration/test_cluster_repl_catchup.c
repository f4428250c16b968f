/* Catch-up of backups out of sync (docs/cluster.md, "Catch-up"), end to
 * end with a real ZooKeeper and real keeld processes started with
 * --replicas 3: a backup killed and started again on its data, one
 * started on an empty data directory (under a new store id, which the
 * map records; one of its units, of about 10 MiB, is sent in parts and
 * written to meanwhile, and ends equal on the three nodes), and a node
 * that joins after the first placement are sent snapshots and added
 * back: every unit has its three replicas in sync again, with the same
 * digest, nothing acknowledged lost. The fixture (counters "r<j>" under
 * a load through the nodes) is tests/support/replfix.h, shared with
 * test_cluster_repl.c and test_cluster_repl_move.c. The map is read
 * straight from ZooKeeper. Every wait is bounded; the checks are about
 * outcomes, not durations. On a failure the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "clmap.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "rawconn.h"
#include "replfix.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define SHARDS TU_REPL_SHARDS
#define COUNTERS TU_REPL_COUNTERS

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_repl_setup(&fx, "clreplc", "rpc");
}

static void teardown(void)
{
    tu_repl_teardown(&fx);
}

/* A backup killed under load is dropped from the in-sync sets; started
 * again on its data it is sent a snapshot of each unit it backs up, and
 * the controller adds it back: every unit has its three replicas in sync
 * again, they print the same digest, and no acknowledged increment is
 * lost. */
START_TEST(a_restarted_backup_catches_up)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0};
    const int all[3] = {0, 1, 2}, two[2] = {0, 1};
    int round, port;

    tu_repl_start(&fx, 3, 3, "1000");
    for (round = 0; round < 3; round++)
        tu_repl_load_round(&fx, cl, acked, all, 3, round, "three nodes");
    port = fx.nodes[2].port;
    keel_client_close(cl[2]);
    cl[2] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    for (round = 0; round < 3; round++)
        tu_repl_load_round(&fx, cl, acked, two, 2, round, "n2 dead");
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, port, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "n2 back on its data");
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, all, 3, round, "n2 caught up");
    tu_repl_check_agree(&fx, acked, all, 3, "n2 caught up");
    CHECK(tu_keel_stat(fx.nodes[0].addr, "repl_catchups") +
                  tu_keel_stat(fx.nodes[1].addr, "repl_catchups") >
              0,
          "no snapshot was sent");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
}
END_TEST

/* Puts entry `key` of kv actor `id` through node i: a value of `len`
 * bytes of one letter. */
static void big_put(int i, const char *id, int key, size_t len)
{
    keel_client *c = tu_repl_connect(&fx, i);
    char *msg = malloc(len + 32), *reply = NULL;
    int n, rc = -1, tries;

    ck_assert_ptr_nonnull(msg);
    n = snprintf(msg, 32, "put k%d ", key);
    memset(msg + n, 'a' + key % 26, len);
    for (tries = 0; tries < 50 && rc != 0; tries++) {
        rc = keel_client_call(c, KEEL_FRAME_CALL, "kv", id, strlen(id), msg,
                              (size_t)n + len, &reply, NULL);
        free(reply);
        reply = NULL;
        if (rc != 0)
            tu_sleep_ms(100);
    }
    CHECK(rc == 0, "put k%d of kv %s through n%d: %s", key, id, i,
          keel_strerror(rc));
    free(msg);
    keel_client_close(c);
}

/* The unit of kv actor `id` has the same digest on the three nodes. */
static void big_agree(const char *id, const char *what)
{
    uint32_t shard = keel_shard_of("kv", id, strlen(id), SHARDS);
    char d[3][128];
    int i, tries, same = 0;

    for (tries = 0; tries < 50 && !same; tries++) {
        for (i = 0; i < 3; i++)
            tu_cluster_digest(&fx, i, shard, d[i], sizeof d[i]);
        same = d[0][0] != '\0' && strcmp(d[0], d[1]) == 0 &&
               strcmp(d[0], d[2]) == 0;
        if (!same)
            tu_sleep_ms(200);
    }
    CHECK(same, "%s: the unit of kv %s differs: n0 %s, n1 %s, n2 %s", what,
          id, d[0], d[1], d[2]);
}


/* A node back on an empty data directory (its disk replaced) comes back
 * under another store id: it is never taken for an in-sync replica of
 * what it held before; it catches up like any backup out of sync, and
 * the map records its new store. */
START_TEST(a_wiped_backup_catches_up_under_its_new_store)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0};
    const int all[3] = {0, 1, 2}, two[2] = {0, 1};
    keel_shard_map m;
    char dir[600], old_store[KEEL_MAP_STORE_HEX + 1];
    int round, port, tries, idx, gone = 0;
    uint32_t s;

    tu_repl_start(&fx, 3, 3, "1000");
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, all, 3, round, "three nodes");
    /* A unit of about 10 MiB: its snapshot goes in parts. */
    for (round = 0; round < 12; round++)
        big_put(round % 2, "big", round, 900 << 10);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    idx = keel_map_node_index(&m, "n2");
    CHECK(idx >= 0 && m.store_ids[idx][0] != '\0', "n2 has no store id");
    snprintf(old_store, sizeof old_store, "%s", m.store_ids[idx]);
    keel_map_free(&m);
    port = fx.nodes[2].port;
    keel_client_close(cl[2]);
    cl[2] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    for (round = 0; round < 2; round++)
        tu_repl_load_round(&fx, cl, acked, two, 2, round, "n2 dead");
    /* Its units failed over (the load above went through them). */
    for (tries = 0; tries < 100 && !gone; tries++) {
        if (tu_map_read(&fx, &m) == 0) {
            gone = 1;
            for (s = 0; s < (uint32_t)SHARDS; s++) {
                const char *p = keel_map_primary(
                    &m, (uint32_t)keel_map_cap_index(&m, ""), s);
                if (p != NULL && strcmp(p, "n2") == 0)
                    gone = 0;
            }
            keel_map_free(&m);
        }
        if (!gone)
            tu_sleep_ms(200);
    }
    CHECK(gone, "n2 still leads units after it died");
    snprintf(dir, sizeof dir, "%s/n2", fx.dir);
    tu_rmrf(dir);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, port, "--replicas", "3",
                                           "--repl-lag-ms", "1000", "--http",
                                           "127.0.0.1:0", NULL),
                     0);
    /* Writes to the big unit while its snapshot may be on its way. */
    for (round = 12; round < 15; round++)
        big_put(round % 2, "big", round, 64 << 10);
    tu_repl_wait_all_in_sync(&fx, "n2 back on an empty disk");
    big_agree("big", "n2 caught up from an empty disk");
    {
        char *log = NULL;
        int parts = 0, t;
        for (t = 0; t < 3; t++) {
            log = tu_keeld_log(&fx.nodes[t]);
            parts |= log != NULL && strstr(log, "snapshot (in parts") != NULL;
            free(log);
        }
        CHECK(parts, "no snapshot went in parts");
    }
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    idx = keel_map_node_index(&m, "n2");
    CHECK(idx >= 0 && m.store_ids[idx][0] != '\0' &&
              strcmp(m.store_ids[idx], old_store) != 0,
          "the map does not record n2's new store (still '%s')",
          idx >= 0 ? m.store_ids[idx] : "?");
    keel_map_free(&m);
    tu_repl_load_round(&fx, cl, acked, all, 3, 0, "n2 caught up");
    tu_repl_check_agree(&fx, acked, all, 3, "n2 caught up from an empty disk");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
}
END_TEST

/* With a catch-up rate (--catchup-mib-s 1 on every node), a backup
 * restarted while a unit of about 9 MiB was written without it still
 * catches up on everything, equal on the three nodes; the primaries
 * waited for the rate (repl_catchup_waits), and the snapshot bytes they
 * sent took at least as long as the rate allows: a part goes only while
 * the budget (a quarter second of the rate) is above zero, and one part
 * (at most 4 MiB) may overdraw it, so B bytes need at least
 * (B - 4.25 MiB) / rate seconds. A slower machine only makes it take
 * longer. */
START_TEST(a_rate_limited_catch_up_completes)
{
    const char *common[] = {"--repl-lag-ms", "1000", "--http", "127.0.0.1:0",
                            "--catchup-mib-s", "1", NULL};
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0}, before[2], bytes = 0, waits = 0;
    const int all[3] = {0, 1, 2}, two[2] = {0, 1};
    double t0, took, least;
    int round, port, i;

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    tu_repl_load_round(&fx, cl, acked, all, 3, 0, "three nodes");
    port = fx.nodes[2].port;
    keel_client_close(cl[2]);
    cl[2] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    /* Written without n2: its primary drops it from the unit's in-sync
     * set, and sends it the whole unit once it is back. */
    for (round = 0; round < 10; round++)
        big_put(round % 2, "big", round, 900 << 10);
    tu_repl_load_round(&fx, cl, acked, two, 2, 0, "n2 dead");
    for (i = 0; i < 2; i++)
        before[i] = tu_keel_stat(fx.nodes[i].addr, "repl_catchup_bytes");
    t0 = tu_now_s();
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, port, "--replicas", "3",
                                           "--repl-lag-ms", "1000", "--http",
                                           "127.0.0.1:0", "--catchup-mib-s",
                                           "1", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "n2 back at 1 MiB/s");
    took = tu_now_s() - t0;
    big_agree("big", "n2 caught up at 1 MiB/s");
    for (i = 0; i < 2; i++) {
        bytes += tu_keel_stat(fx.nodes[i].addr, "repl_catchup_bytes") -
                 before[i];
        waits += tu_keel_stat(fx.nodes[i].addr, "repl_catchup_waits");
    }
    CHECK(bytes > 8L << 20, "only %ld snapshot bytes went to n2", bytes);
    CHECK(waits > 0, "no snapshot part waited for the rate");
    least = ((double)bytes - (4.25 * (1 << 20))) / (1 << 20);
    CHECK(took >= least,
          "%ld snapshot bytes in %.2f s at 1 MiB/s (at least %.2f s)", bytes,
          took, least);
    tu_repl_load_round(&fx, cl, acked, all, 3, 1, "n2 caught up");
    tu_repl_check_agree(&fx, acked, all, 3, "n2 caught up at 1 MiB/s");
    for (i = 0; i < 3; i++)
        if (cl[i] != NULL)
            keel_client_close(cl[i]);
}
END_TEST

/* The node (0 to 2) that kv actor "big" lives on, its name in owner. */
static int big_primary(char *owner, size_t cap)
{
    tu_cluster_owner_of(&fx, 0, "kv", "big", owner, cap);
    CHECK(owner[0] == 'n' && owner[1] >= '0' && owner[1] <= '2',
          "kv big has no primary: \"%s\"", owner);
    return owner[1] - '0';
}

/* Sums statistic `name` over nodes n0..n2 but node `skip`. */
static long stat_others(int skip, const char *name)
{
    long sum = 0;
    int i;

    for (i = 0; i < 3; i++)
        if (i != skip)
            sum += tu_keel_stat(fx.nodes[i].addr, name);
    return sum;
}

/* A primary killed with nothing in flight, its units failed over, and
 * started again on its data, with nothing written meanwhile, holds what
 * the new primaries hold: each of its catch-ups is a check of its copy's
 * digest, which matches, and none of the unit's records (about 5 MiB)
 * goes again. Then the three copies agree, and every acknowledged
 * increment is there. */
START_TEST(a_returning_copy_is_checked_not_sent)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0}, bytes, same;
    const int all[3] = {0, 1, 2};
    char owner[32] = "";
    int k, v = -1, port, tries, moved = 0;
    uint32_t shard = keel_shard_of("kv", "big", 3, SHARDS);

    tu_cluster_start_together(&fx, 3, 3,
                              (const char *const[]){"--repl-lag-ms", "1000",
                                                    NULL},
                              NULL);
    tu_repl_load_round(&fx, cl, acked, all, 3, 0, "three nodes");
    for (k = 0; k < 6; k++)
        big_put(k % 3, "big", k, 900 << 10);
    big_agree("big", "before the kill");
    v = big_primary(owner, sizeof owner);
    for (k = 0; k < 3; k++)
        if (cl[k] != NULL) {
            keel_client_close(cl[k]);
            cl[k] = NULL;
        }
    port = fx.nodes[v].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[v], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[v]);
    /* Its units fail over once its session has expired. */
    for (tries = 0; tries < 150 && !moved; tries++) {
        keel_shard_map m;
        const char *p;
        if (tu_map_read(&fx, &m) == 0) {
            p = keel_map_primary(&m, 0, shard);
            moved = p != NULL && strcmp(p, owner) != 0;
            keel_map_free(&m);
        }
        if (!moved)
            tu_sleep_ms(200);
    }
    CHECK(moved, "the unit of kv big did not fail over from n%d", v);
    bytes = stat_others(v, "repl_catchup_bytes");
    same = stat_others(v, "repl_catchup_same");
    ck_assert_int_eq(tu_cluster_start_node(&fx, v, port, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "the old primary back on its data");
    big_agree("big", "the old primary caught up");
    bytes = stat_others(v, "repl_catchup_bytes") - bytes;
    same = stat_others(v, "repl_catchup_same") - same;
    CHECK(same > 0, "no catch-up found n%d's copy the same", v);
    CHECK(bytes < 1L << 20,
          "%ld bytes of snapshots went to n%d, which held every record",
          bytes, v);
    tu_repl_load_round(&fx, cl, acked, all, 3, 1, "caught up");
    tu_repl_check_agree(&fx, acked, all, 3, "caught up");
    for (k = 0; k < 3; k++)
        if (cl[k] != NULL)
            keel_client_close(cl[k]);
}
END_TEST

/* Frame `id` of a REPL body from `from` at `stream`: one piece of unit
 * (cap, shard) at epoch and seq, a check of `digest` (check) or empty.
 * Into f (room for 512 bytes); returns the frame's length. */
static size_t repl_piece(uint8_t *f, uint64_t id, const char *from,
                         uint64_t stream, const char *cap, uint32_t shard,
                         uint64_t epoch, uint64_t seq, int check,
                         uint64_t digest)
{
    uint8_t *p = f + KEEL_FRAME_HEADER;
    size_t n;

    n = keel_repl_head_encode(p, from, strlen(from), stream, 1);
    n += keel_repl_unit_encode(p + n, cap, strlen(cap), shard, epoch, seq,
                               check ? 1 : 0);
    if (check)
        n += keel_repl_op_encode(p + n, KEEL_REPL_CHECK_UNIT, NULL, 0,
                                 digest, NULL, 0);
    keel_frame_header(f, KEEL_FRAME_REPL, id, n);
    return KEEL_FRAME_HEADER + n;
}

/* The one ack of a REPL answer read from fd: its status and seq. */
static void read_ack(int fd, int *status, uint64_t *seq)
{
    tu_rframe f;
    const uint8_t *p;
    size_t len;
    uint16_t n = 0;
    keel_repl_ack a;

    CHECK(tu_read_frame(fd, &f, 10000) == 1, "no answer to a REPL frame");
    CHECK(f.kind == KEEL_FRAME_REPLY, "a REPL frame answered kind %d (%s)",
          f.kind, keel_err_name(f.code));
    p = f.body;
    len = f.len;
    CHECK(keel_repl_acks_parse(&p, &len, &n) == 0 && n == 1 &&
              keel_repl_ack_next(&p, &len, &a) == 0,
          "a REPL answer of %zu bytes is not one ack", f.len);
    *status = a.status;
    *seq = a.seq;
}

/* A check piece sent again while the backup has taken the piece after it
 * but has not answered the first copy yet (its commit under way: a
 * primary whose connection broke sends again everything unanswered) is
 * answered as the first copy is, EDIFFERS: an answer of 0 would tell the
 * primary that the backup holds its copy, when the first copy deleted
 * it. Driven over a raw connection that speaks as the unit's primary:
 * the check, the empty piece after it, and the check again, in one
 * write, so that all three are taken before the first is answered. */
START_TEST(a_resent_check_is_answered_as_the_first)
{
    uint8_t buf[3 * 512];
    keel_shard_map m;
    const keel_map_unit *mu;
    char from[KEEL_NAME_MAX + 1], cap[KEEL_NAME_MAX + 1];
    uint32_t shard = keel_shard_of("kv", "resent", 6, SHARDS);
    uint64_t epoch, stream = UINT64_MAX - 1, seq[3];
    int st[3], b = -1, fd, i;
    size_t len = 0;

    tu_cluster_start_together(&fx, 3, 3,
                              (const char *const[]){"--repl-lag-ms", "1000",
                                                    NULL},
                              NULL);
    big_put(0, "resent", 1, 1000);
    big_agree("resent", "after the put");
    CHECK(tu_map_read(&fx, &m) == 0, "cannot read the map");
    mu = keel_map_unit_at(&m, 0, shard);
    CHECK(mu->nreplicas == 3 && mu->insync == 7, "unit %u: %u replicas, "
          "in sync %#x", shard, mu->nreplicas, mu->insync);
    snprintf(from, sizeof from, "%s", m.nodes[mu->replicas[0]]);
    snprintf(cap, sizeof cap, "%s", m.caps[0]);
    epoch = mu->shard_epoch;
    for (i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "n%d", i);
        if (strcmp(name, m.nodes[mu->replicas[1]]) == 0)
            b = i;
    }
    keel_map_free(&m);
    CHECK(b >= 0, "the unit's first backup is none of n0..n2");

    fd = tu_raw_connect(fx.nodes[b].port);
    CHECK(fd >= 0, "cannot connect to n%d", b);
    {
        uint8_t f[KEEL_FRAME_HEADER + 5 + KEEL_NAME_MAX];
        size_t fl = strlen(from);
        tu_rframe r;
        keel_frame_header(f, KEEL_FRAME_INFO, 1, 5 + fl);
        memcpy(f + KEEL_FRAME_HEADER, "peer", 5);
        memcpy(f + KEEL_FRAME_HEADER + 5, from, fl);
        CHECK(tu_send_all(fd, f, KEEL_FRAME_HEADER + 5 + fl) == 0 &&
                  tu_read_frame(fd, &r, 10000) == 1,
              "n%d did not answer INFO peer", b);
    }
    /* A newer stream than the primary's: taken from a snapshot piece on,
     * here the check (whose digest is no copy's). */
    len += repl_piece(buf + len, 2, from, stream, cap, shard, epoch, 5, 1,
                      0x5eed);
    len += repl_piece(buf + len, 3, from, stream, cap, shard, epoch, 6, 0, 0);
    len += repl_piece(buf + len, 4, from, stream, cap, shard, epoch, 5, 1,
                      0x5eed);
    CHECK(tu_send_all(fd, buf, len) == 0, "cannot send to n%d", b);
    for (i = 0; i < 3; i++)
        read_ack(fd, &st[i], &seq[i]);
    close(fd);
    CHECK(st[0] == KEEL_EDIFFERS && seq[0] == 5,
          "the check was answered %s seq %llu", keel_err_name(st[0]),
          (unsigned long long)seq[0]);
    CHECK(st[1] == 0 && seq[1] == 6, "the piece after it was answered %s "
          "seq %llu", keel_err_name(st[1]), (unsigned long long)seq[1]);
    CHECK(st[2] == KEEL_EDIFFERS,
          "the check sent again was answered %s seq %llu: as if n%d held "
          "the primary's copy, which the first check deleted",
          keel_err_name(st[2]), (unsigned long long)seq[2], b);
}
END_TEST

/* The record count node i's store holds of shard s (its `keel digest`
 * line), or -1. */
static long records_of(int i, uint32_t s)
{
    char d[128];
    const char *p;

    tu_cluster_digest(&fx, i, s, d, sizeof d);
    p = strstr(d, " records ");
    return p != NULL ? strtol(p + 9, NULL, 10) : -1;
}

/* Whether the map lists node n<i> among unit u's replicas. */
static int lists(const keel_shard_map *m, const keel_map_unit *u, int i)
{
    char name[8];
    int idx;

    snprintf(name, sizeof name, "n%d", i);
    idx = keel_map_node_index(m, name);
    return idx >= 0 && keel_map_replica_pos(u, (uint16_t)idx) >= 0;
}

/* The replicas the map lists for each unit, among nodes n0..n<nodes-1>,
 * print the same digest. */
static void listed_agree(int nodes)
{
    keel_shard_map m;
    int i, s;

    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)s);
        char d0[128] = "", d[128];
        for (i = 0; i < nodes; i++) {
            if (!lists(&m, u, i))
                continue;
            tu_cluster_digest(&fx, i, (uint32_t)s, d, sizeof d);
            if (d0[0] == '\0')
                snprintf(d0, sizeof d0, "%s", d);
            CHECK(strcmp(d, d0) == 0, "shard %d: n%d has '%s', '%s' "
                                      "elsewhere",
                  s, i, d, d0);
        }
    }
    keel_map_free(&m);
}

/* A fourth node joins three with three replicas: placement takes one of
 * the three out of the replica list of most units. Each node deletes
 * its copy of the units the map has not listed it for in the dead time
 * (1 s here), the replicas listed agree, and no acknowledged increment
 * is lost. */
START_TEST(a_copy_no_list_names_is_deleted)
{
    keel_client *cl[4] = {NULL, NULL, NULL, NULL};
    long acked[COUNTERS] = {0}, held[3][SHARDS];
    const int three[3] = {0, 1, 2}, four[4] = {0, 1, 2, 3};
    int i, s, k, tries, dropped = 0, left = 0;

    tu_cluster_start_together(&fx, 3, 3,
                              (const char *const[]){"--repl-lag-ms", "1000",
                                                    "--replica-dead-ms",
                                                    "1000", NULL},
                              NULL);
    for (k = 0; k < 3; k++)
        tu_repl_load_round(&fx, cl, acked, three, 3, k, "three nodes");
    for (i = 0; i < 3; i++)
        for (s = 0; s < SHARDS; s++)
            held[i][s] = records_of(i, (uint32_t)s);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 3, 0, "--replicas", "3",
                                           "--repl-lag-ms", "1000",
                                           "--replica-dead-ms", "1000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "n3 joined");
    for (tries = 0; tries < 100; tries++) {
        keel_shard_map m;
        if (tu_map_read(&fx, &m) != 0) {
            tu_sleep_ms(200);
            continue;
        }
        dropped = left = 0;
        for (s = 0; s < SHARDS; s++) {
            const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)s);
            for (i = 0; i < 3; i++) {
                if (u == NULL || lists(&m, u, i) || held[i][s] <= 0)
                    continue;
                dropped++;
                left += records_of(i, (uint32_t)s) != 0;
            }
        }
        keel_map_free(&m);
        if (dropped > 0 && left == 0)
            break;
        tu_sleep_ms(200);
    }
    CHECK(dropped > 0, "no node holding a unit left its replica list");
    CHECK(left == 0, "%d of %d copies the map no longer lists are still "
                     "there",
          left, dropped);
    /* Each deletion is counted where it was made. */
    for (tries = 0; tries < 50; tries++) {
        long deleted = 0;
        for (i = 0; i < 3; i++)
            deleted += tu_keel_stat(fx.nodes[i].addr, "repl_copies_deleted");
        if (deleted >= dropped || tries == 49) {
            CHECK(deleted >= dropped,
                  "repl_copies_deleted counts %ld of %d copies deleted",
                  deleted, dropped);
            break;
        }
        tu_sleep_ms(100);
    }
    for (k = 0; k < 2; k++)
        tu_repl_load_round(&fx, cl, acked, four, 4, k, "four nodes");
    for (k = 0; k < COUNTERS; k++) {
        char id[16];
        tu_repl_counter_id(k, id, sizeof id);
        CHECK(tu_repl_get(&fx, 3, id) == acked[k],
              "%s lost acknowledged increments", id);
    }
    listed_agree(4);
    for (k = 0; k < 4; k++)
        if (cl[k] != NULL)
            keel_client_close(cl[k]);
}
END_TEST

/* A node that took units in handoffs (n1, then n0, leave in order with
 * two replicas: n2 takes every unit, by stream or keep frame) and hands
 * them on when the others come back, placement no longer listing it,
 * deletes its copies a dead time later, as any node does: the handoffs it
 * took long settled do not count as units coming to it. */
START_TEST(a_copy_taken_in_a_handoff_goes_once_unlisted)
{
    static const char *const opts[] = {"--repl-lag-ms", "1000",
                                       "--replica-dead-ms", "1000", NULL};
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0}, held[SHARDS];
    const int three[3] = {0, 1, 2}, alone[1] = {2};
    int i, s, k, tries, port[2], unlisted = 0, left = 0;

    tu_cluster_start_together(&fx, 3, 2, opts, NULL);
    for (k = 0; k < 2; k++)
        tu_repl_load_round(&fx, cl, acked, three, 3, k, "three nodes");
    for (i = 1; i >= 0; i--) {
        if (cl[i] != NULL)
            keel_client_close(cl[i]);
        cl[i] = NULL;
        port[i] = fx.nodes[i].port;
        ck_assert_int_eq(tu_keeld_stop(&fx.nodes[i], SIGTERM), 0);
        tu_keeld_free(&fx.nodes[i]);
    }
    for (tries = 0; tries < 100 && !tu_repl_leads(&fx, "n2", 1); tries++)
        tu_sleep_ms(100);
    CHECK(tu_repl_leads(&fx, "n2", 1), "n2 does not lead every unit");
    tu_repl_load_round(&fx, cl, acked, alone, 1, 0, "n2 alone");
    for (s = 0; s < SHARDS; s++)
        held[s] = records_of(2, (uint32_t)s);
    for (i = 1; i >= 0; i--)
        ck_assert_int_eq(tu_cluster_start_node(&fx, i, port[i], "--replicas",
                                               "2", "--repl-lag-ms", "1000",
                                               "--replica-dead-ms", "1000",
                                               NULL),
                         0);
    CHECK(tu_map_wait_settled(&fx, 2) || tu_map_wait_settled(&fx, 2),
          "n0 and n1 back: the units did not get 2 replicas in sync");
    for (tries = 0; tries < 100; tries++) {
        keel_shard_map m;
        if (tu_map_read(&fx, &m) != 0) {
            tu_sleep_ms(200);
            continue;
        }
        unlisted = left = 0;
        for (s = 0; s < SHARDS; s++) {
            const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)s);
            if (u == NULL || lists(&m, u, 2) || held[s] <= 0)
                continue;
            unlisted++;
            left += records_of(2, (uint32_t)s) != 0;
        }
        keel_map_free(&m);
        if (unlisted > 0 && left == 0)
            break;
        tu_sleep_ms(200);
    }
    CHECK(unlisted > 0, "the map still lists n2 for every unit it took");
    CHECK(left == 0, "%d of the %d copies n2 took, which the map no longer "
                     "lists, are still there",
          left, unlisted);
    for (k = 0; k < 2; k++)
        tu_repl_load_round(&fx, cl, acked, three, 3, k, "n0 and n1 back");
    for (k = 0; k < COUNTERS; k++) {
        char id[16];
        tu_repl_counter_id(k, id, sizeof id);
        for (i = 0; i < 3; i++)
            CHECK(tu_repl_get(&fx, i, id) == acked[k],
                  "%s lost acknowledged increments (through n%d)", id, i);
    }
    listed_agree(3);
    for (k = 0; k < 3; k++)
        if (cl[k] != NULL)
            keel_client_close(cl[k]);
}
END_TEST

/* The rank of node n<i> among n0..n3 in the placement of unit ("", s):
 * 0 for the best. */
static int rank_of(int i, uint32_t s)
{
    char me[8], other[8];
    uint64_t mine;
    int j, rank = 0;

    snprintf(me, sizeof me, "n%d", i);
    mine = keel_rendezvous_score(me, "", s);
    for (j = 0; j < 4; j++) {
        snprintf(other, sizeof other, "n%d", j);
        if (j != i && keel_rendezvous_score(other, "", s) > mine)
            rank++;
    }
    return rank;
}

/* Polls the map (at most 10 s) until unit ("", s) has primary n<p> and,
 * when t >= 0, target n<t> (else none): 1, or 0. */
static int wait_unit(uint32_t s, int p, int t)
{
    char pn[8], tn[8];
    int tries, ok = 0;

    snprintf(pn, sizeof pn, "n%d", p);
    snprintf(tn, sizeof tn, "n%d", t);
    for (tries = 0; tries < 500 && !ok; tries++) {
        keel_shard_map m;
        if (tu_map_read(&fx, &m) == 0) {
            const keel_map_unit *u = tu_map_unit(&m, "", s);
            int ci = keel_map_cap_index(&m, "");
            const char *pr =
                ci >= 0 ? keel_map_primary(&m, (uint32_t)ci, s) : NULL;
            ok = u != NULL && pr != NULL && strcmp(pr, pn) == 0 &&
                 (t < 0 ? u->target == KEEL_MAP_NO_NODE
                        : u->target != KEEL_MAP_NO_NODE &&
                              strcmp(m.nodes[u->target], tn) == 0);
            keel_map_free(&m);
        }
        if (!ok)
            tu_sleep_ms(20);
    }
    return ok;
}

/* Polls the map (at most 20 s) until unit ("", s) has exactly the
 * replicas n<p> (primary) and n<q>, both in sync, and no target: 1, or 0.
 * A wait for the map to be settled may end on the map from before a
 * change the controller has not seen yet (a node just started): this
 * one waits for the change itself. */
static int wait_pair(uint32_t s, int p, int q)
{
    char pn[8], qn[8];
    int tries, ok = 0;

    snprintf(pn, sizeof pn, "n%d", p);
    snprintf(qn, sizeof qn, "n%d", q);
    for (tries = 0; tries < 1000 && !ok; tries++) {
        keel_shard_map m;
        if (tu_map_read(&fx, &m) == 0) {
            const keel_map_unit *u = tu_map_unit(&m, "", s);
            ok = u != NULL && u->nreplicas == 2 && u->insync == 3 &&
                 u->target == KEEL_MAP_NO_NODE &&
                 strcmp(m.nodes[u->replicas[0]], pn) == 0 &&
                 strcmp(m.nodes[u->replicas[1]], qn) == 0;
            keel_map_free(&m);
        }
        if (!ok)
            tu_sleep_ms(20);
    }
    return ok;
}

/* A unit given without its records (its primary b and in-sync backup x
 * dead, b forgotten: shard_epoch + 2) to a node a that holds an older copy
 * of it (a backup placement dropped when x came back, within the dead
 * time), and moved on to d before a acquired it (a paused meanwhile, then
 * drained: the map a reads when it runs again has a primary at the new
 * epoch and d as the target), starts empty at d, as at a: a hands it on
 * without that copy. Handed on with it, d answered the count a's copy
 * had. */
START_TEST(a_unit_given_without_its_records_is_handed_on_empty)
{
    static const char *const opts[] = {"--repl-lag-ms", "1000", NULL};
    keel_client *cl = NULL;
    char id[16] = "", name[4][8], *out = NULL, *err = NULL, *log;
    uint32_t s = 0;
    int a = -1, b = -1, x = -1, d = -1, i, j, k, tries, port;
    double gone, paused;
    tu_zk suite;

    /* A ZooKeeper whose tick (2 s) allows sessions of up to 40 s: a's is
     * longer than the others', below. */
    CHECK(tu_cluster_own_zk(&fx, &suite, 4000) == 0,
          "ZooKeeper (tickTime 2 s) did not start");
    tu_cluster_start_together(&fx, 4, 2, opts, NULL);
    for (tries = 0; tries < 100 && d < 0; tries++)
        if ((d = tu_repl_controller(&fx, 0, 4)) < 0)
            tu_sleep_ms(100);
    CHECK(d >= 0, "n0 names no controller");
    for (j = 0; j < 64 && id[0] == '\0'; j++) {
        char cand[16];
        tu_repl_counter_id(j, cand, sizeof cand);
        s = tu_repl_shard_of(cand);
        if (rank_of(d, s) == 3)
            snprintf(id, sizeof id, "%s", cand);
    }
    CHECK(id[0] != '\0', "no counter whose unit ranks n%d last", d);
    for (i = 0; i < 4; i++) {
        int r = rank_of(i, s);
        snprintf(name[i], sizeof name[i], "n%d", i);
        if (r == 0)
            b = i;
        else if (r == 1)
            x = i;
        else if (r == 2)
            a = i;
    }
    /* a is paused below for as long as the controller takes to move the
     * unit twice, on a busy machine more than the 4 s session the others
     * have: it starts again with a session of 15 s, so that the pause
     * tests the handing on, not an expiry. */
    port = fx.nodes[a].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[a], SIGTERM), 0);
    tu_keeld_free(&fx.nodes[a]);
    ck_assert_int_eq(tu_cluster_start_node(&fx, a, port, "--replicas", "2",
                                           "--repl-lag-ms", "1000",
                                           "--zk-session-timeout", "15000",
                                           NULL),
                     0);
    CHECK(tu_map_wait_settled(&fx, 2) || tu_map_wait_settled(&fx, 2),
          "%s back: the units did not get 2 replicas in sync", name[a]);
    /* x leaves: a backs the unit up in sync, and takes its writes. */
    port = fx.nodes[x].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[x], SIGTERM), 0);
    tu_keeld_free(&fx.nodes[x]);
    CHECK(tu_map_wait_settled(&fx, 2) || tu_map_wait_settled(&fx, 2),
          "%s left: the units did not get 2 replicas in sync", name[x]);
    CHECK(wait_pair(s, b, a), "%s left: %s's unit is not with %s and %s, "
                              "in sync",
          name[x], id, name[b], name[a]);
    for (k = 0; k < 3; k++)
        CHECK(tu_repl_incr(&fx, &cl, d, id) == k + 1, "%s: increment %d",
              id, k + 1);
    /* x back: placement drops a, which keeps its copy (count 3). */
    ck_assert_int_eq(tu_cluster_start_node(&fx, x, port, "--replicas", "2",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    CHECK(wait_pair(s, b, x), "%s back: %s's unit is not with %s and %s, "
                              "in sync",
          name[x], id, name[b], name[x]);
    CHECK(tu_map_wait_settled(&fx, 2) || tu_map_wait_settled(&fx, 2),
          "%s back: the units did not get 2 replicas in sync", name[x]);
    CHECK(records_of(a, s) > 0, "%s holds no copy of shard %u", name[a],
          s);
    for (k = 3; k < 5; k++)
        CHECK(tu_repl_incr(&fx, &cl, d, id) == k + 1, "%s: increment %d",
              id, k + 1);
    keel_client_close(cl);
    cl = NULL;
    /* b and x die; once b's death is past its grace, b is forgotten
     * while a is paused: the unit goes to a at shard_epoch + 2, then, a
     * drained, towards d, before a has seen either. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[b], SIGKILL), 128 + SIGKILL);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[x], SIGKILL), 128 + SIGKILL);
    for (tries = 0; tries < 150; tries++) {
        if (tu_cluster_member_exists(&fx, name[b]) == 0 &&
            tu_cluster_member_exists(&fx, name[x]) == 0)
            break;
        tu_sleep_ms(100);
    }
    CHECK(tries < 150, "%s and %s are still members", name[b], name[x]);
    gone = tu_now_s();
    /* The controller moves a forgotten node's units T + T/4 after it saw
     * it go (4 s sessions): a forget issued later moves them at once. */
    while (tu_now_s() - gone < 6.0)
        tu_sleep_ms(100);
    /* The unit's primary is b, or x when the controller saw b's session
     * end before x's (on a loaded machine their expiries may come apart)
     * and promoted x, dead too but not known so yet: forgetting that one
     * gives the unit away without its records either way. */
    {
        keel_shard_map m;
        const char *pr = NULL;
        if (tu_map_read(&fx, &m) == 0) {
            int ci = keel_map_cap_index(&m, "");
            pr = ci >= 0 ? keel_map_primary(&m, (uint32_t)ci, s) : NULL;
            if (pr != NULL && strcmp(pr, name[x]) == 0)
                b = x;
            keel_map_free(&m);
        }
    }
    CHECK(kill(fx.nodes[a].pid, SIGSTOP) == 0, "SIGSTOP %s", name[a]);
    paused = tu_now_s();
    k = tu_cluster_forget(&fx, d, name[b], 0, 0, &out);
    free(out);
    out = NULL;
    CHECK(k == 0, "forget %s refused", name[b]);
    k = wait_unit(s, a, -1);
    if (k) {
        k = tu_keel(fx.nodes[d].addr, &out, &err, "node", "drain", name[a],
                    NULL) == 0;
        free(out);
        free(err);
        out = err = NULL;
    }
    k = k && wait_unit(s, a, d);
    CHECK(kill(fx.nodes[a].pid, SIGCONT) == 0, "SIGCONT %s", name[a]);
    paused = tu_now_s() - paused;
    CHECK(k, "the map did not move %s's unit to %s, then towards %s",
          id, name[a], name[d]);
    CHECK(wait_unit(s, d, -1), "%s's unit did not reach %s", id, name[d]);
    k = (int)tu_repl_get(&fx, d, id);
    CHECK(k == 0, "%s answers %d at %s: the records of a copy older than "
                  "the state given up",
          id, k, name[d]);
    log = tu_keeld_log(&fx.nodes[a]);
    CHECK(log != NULL && strstr(log, "session expired") == NULL &&
              strstr(log, "without its records") != NULL,
          "%s did not hand the unit on unacquired (its session expired "
          "while it was paused for %.1f s?)",
          name[a], paused);
    free(log);
    tu_cluster_own_zk_end(&fx, &suite);
}
END_TEST

/* The primary of a unit of about 5 MiB stopped in order (SIGTERM) hands
 * it to an in-sync backup, keeping its copy, and is started again on its
 * data within the dead time: its copy is found the same. Placement then
 * gives the unit back to it, onto it as an in-sync backup, and the
 * primary in between, which kept its copy too, is found the same in
 * turn. None of the unit's records goes anywhere again. */
START_TEST(a_unit_handed_over_and_back_moves_no_records)
{
    char owner[32] = "", now[32] = "";
    long bytes, same;
    int k, v, port, tries;

    tu_cluster_start_together(&fx, 3, 3,
                              (const char *const[]){"--repl-lag-ms", "1000",
                                                    NULL},
                              NULL);
    for (k = 0; k < 6; k++)
        big_put(k % 3, "big", k, 900 << 10);
    big_agree("big", "before the stop");
    v = big_primary(owner, sizeof owner);
    /* The stopped node's counters start again from 0. */
    bytes = stat_others(v, "repl_catchup_bytes");
    same = stat_others(v, "repl_catchup_same");
    port = fx.nodes[v].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[v], SIGTERM), 0);
    tu_keeld_free(&fx.nodes[v]);
    ck_assert_int_eq(tu_cluster_start_node(&fx, v, port, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "the old primary back on its data");
    /* Placement gives the unit back to it once it is in sync. */
    for (tries = 0; tries < 100; tries++) {
        tu_cluster_owner_of(&fx, 0, "kv", "big", now, sizeof now);
        if (strcmp(now, owner) == 0)
            break;
        tu_sleep_ms(200);
    }
    CHECK(strcmp(now, owner) == 0, "kv big is with %s, not back with %s",
          now, owner);
    tu_repl_wait_all_in_sync(&fx, "the unit back with its old primary");
    big_agree("big", "the unit back with its old primary");
    bytes = stat_others(-1, "repl_catchup_bytes") - bytes;
    same = stat_others(-1, "repl_catchup_same") - same;
    CHECK(tu_keel_stat(fx.nodes[v].addr, "repl_catchup_same") > 0,
          "n%d found no old primary's copy the same", v);
    CHECK(same > 1, "only %ld catch-ups found a copy the same", same);
    CHECK(bytes < 1L << 20,
          "%ld bytes of snapshots went out though every copy was kept",
          bytes);
}
END_TEST

/* A node that joins a cluster with replicas after its units were first
 * placed is appended to their replica lists out of sync and catches up:
 * then every unit has its replicas in sync, equal. */
START_TEST(a_later_node_catches_up)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0};
    const int all[3] = {0, 1, 2}, two[2] = {0, 1};
    int round;

    tu_cluster_start_together(&fx, 2, 3,
                              (const char *const[]){"--repl-lag-ms", "1000",
                                                    NULL},
                              NULL);
    for (round = 0; round < 3; round++)
        tu_repl_load_round(&fx, cl, acked, two, 2, round, "two nodes");
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, 0, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "n2 joined");
    tu_repl_load_round(&fx, cl, acked, all, 3, 0, "n2 joined");
    tu_repl_check_agree(&fx, acked, all, 3, "n2 joined");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
}
END_TEST

/* A value of KEEL_MAX_VALUE_LEN bytes, the largest an actor may store,
 * goes to the backups with its key and framing (one record must fit in a
 * node-to-node frame whatever --max-frame says): the three replicas stay
 * in sync. A backup back on an empty data directory is sent it in a
 * snapshot part of its own, and joins the in-sync set again. Frames
 * between nodes once stopped at 64 MiB, framing included: the write was
 * acknowledged once its backups were dropped, and their catch-up failed
 * every 30 s for ever. */
START_TEST(the_largest_value_is_replicated_and_caught_up)
{
    const char *common[] = {"--repl-lag-ms", "2000", "--http", "127.0.0.1:0",
                            "--max-frame", "68000000", NULL};
    char owner[64], dir[600];
    int i, port;

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    tu_repl_wait_all_in_sync(&fx, "three nodes started");
    tu_cluster_owner_of(&fx, 0, "kv", "huge", owner, sizeof owner);
    CHECK(sscanf(owner, "n%d", &i) == 1 && i >= 0 && i < 3,
          "kv huge has no owner ('%s')", owner);
    big_put(i, "huge", 0, KEEL_MAX_VALUE_LEN);
    tu_repl_wait_all_in_sync(&fx, "a value of KEEL_MAX_VALUE_LEN bytes");
    big_agree("huge", "a value of KEEL_MAX_VALUE_LEN bytes");
    /* A backup of it on an empty disk: caught up from a snapshot. */
    i = (i + 1) % 3;
    port = fx.nodes[i].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[i], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[i]);
    snprintf(dir, sizeof dir, "%s/n%d", fx.dir, i);
    tu_rmrf(dir);
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, port, "--replicas", "3",
                                           "--repl-lag-ms", "2000", "--http",
                                           "127.0.0.1:0", "--max-frame",
                                           "68000000", NULL),
                     0);
    tu_repl_wait_all_in_sync(&fx, "a backup of it back on an empty disk");
    big_agree("huge", "a backup of it back on an empty disk");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_repl_catchup");
    TCase *tc = tcase_create("cluster_repl_catchup");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_restarted_backup_catches_up);
    tcase_add_test(tc, a_wiped_backup_catches_up_under_its_new_store);
    tcase_add_test(tc, a_later_node_catches_up);
    tcase_add_test(tc, a_rate_limited_catch_up_completes);
    tcase_add_test(tc, a_returning_copy_is_checked_not_sent);
    suite_add_tcase(s, tc);
    /* Cases of their own, so that CK_RUN_CASE runs one alone; ctest runs
     * those tagged "split" as a second test (CMakeLists.txt). */
    tc = tcase_create("kept_copies");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_unit_handed_over_and_back_moves_no_records);
    tcase_add_test(tc, a_copy_no_list_names_is_deleted);
    tcase_add_test(tc, a_copy_taken_in_a_handoff_goes_once_unlisted);
    suite_add_tcase(s, tc);
    tc = tcase_create("handed_on_empty");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_unit_given_without_its_records_is_handed_on_empty);
    suite_add_tcase(s, tc);
    tc = tcase_create("resent_check");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_resent_check_is_answered_as_the_first);
    suite_add_tcase(s, tc);
    tc = tcase_create("largest_value");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, the_largest_value_is_replicated_and_caught_up);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
