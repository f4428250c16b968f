/* Synchronous replication (stage 1), end to end with a real ZooKeeper and
 * real keeld processes started with --replicas (docs/cluster.md,
 * "Replication stream"). Checked:
 *  - three nodes, three replicas per unit: under a counter load through
 *    every node, every counter answers its acknowledged count through
 *    every node, and `keel digest` of every unit touched is the same on
 *    the three (the backups hold exactly what the primary holds);
 *  - a backup killed with SIGKILL: the writes to units it backs up keep
 *    being acknowledged, and every unit that acknowledged a write since
 *    then has it out of its in-sync set in the map (the controller
 *    dropped it first); no acknowledged increment is lost, and the two
 *    live replicas still agree;
 *  - a reply waits for its backups: with the backup of a unit paused
 *    (SIGSTOP), an increment of the unit is not answered while the map
 *    shows that backup in sync; it is answered, successfully, once the
 *    map shows it out; a read of the counter's state over HTTP sent
 *    after it waits as long, and then shows it; after SIGCONT the
 *    counter holds every acknowledged increment;
 *  - a primary killed and restarted on its data (same epoch, seqs from 1
 *    again) keeps its backups in sync, and they hold what it holds;
 *  - a node drained under load hands its units off with their backups
 *    in sync and equal to the new primaries; nothing acknowledged lost;
 *  - catch-up (docs/cluster.md, "Catch-up"): a backup killed and started
 *    again on its data, one started on an empty data directory (under a
 *    new store id, which the map records; one of its units, of about
 *    10 MiB, is sent in parts and written to meanwhile, and ends equal
 *    on the three nodes), and a node that joins after
 *    the first placement are sent snapshots and added back: every unit
 *    has its three replicas in sync again, with the same digest, nothing
 *    acknowledged lost; and a unit fails over twice, the second time to
 *    a replica that caught up after the first;
 *  - the controller killed while it leads units, then the next one
 *    killed while a returning node is caught up: each following
 *    controller finishes the failovers and the catch-up from the map and
 *    the nodes' states.
 * The map is read straight from ZooKeeper. Every wait is bounded; the
 * checks are about order (what the map shows when a reply comes), not
 * durations. On a failure the nodes' logs are printed. */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "clmap.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "rawconn.h"
#include "runtime/proto.h"
#include "testutil.h"
#include "zk.h"

#define SHARDS 16
#define SHARDS_S "16"
#define COUNTERS 24
#define ROUNDS 8
#define CLIENT_MS 20000

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "clrepl", "rp");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    char path[512], *text;

    /* A test that failed while ZooKeeper was paused (start_cluster) must
     * not leave it paused for the next one. */
    snprintf(path, sizeof path, "%s/zk.pid", fx.zk.dir);
    if ((text = tu_read_file(path)) != NULL && atol(text) > 0)
        kill((pid_t)atol(text), SIGCONT);
    free(text);
    tu_cluster_teardown(&fx, SIGKILL);
}

/* Nodes n0..n<nodes-1> of a new cluster, every one in every unit's
 * first placement (stage 1 brings no backup into the in-sync set later):
 * tests/support/clmap.h. */
static void start_cluster(int nodes, int replicas, const char *lag_ms)
{
    const char *common[] = {"--repl-lag-ms", lag_ms, "--http", "127.0.0.1:0",
                            NULL};

    tu_cluster_start_together(&fx, nodes, replicas, common, NULL);
}

/* ------------------------------------------------------------ calls */

static keel_client *connect_to(int i)
{
    keel_client *c = NULL;

    CHECK(keel_client_connect(fx.nodes[i].addr, CLIENT_MS, &c) == 0,
          "cannot connect to n%d", i);
    return c;
}

/* `incr` of counter id through node i with a request key, sent again
 * (same key: it runs at most once) after any failure, for at most 30 s.
 * Returns the value it answered, or -1 when it never succeeded. *c is
 * reconnected as needed. */
static long incr_keyed(keel_client **c, int i, const char *id)
{
    uint8_t key[KEEL_REQUEST_KEY_LEN];
    double deadline = tu_now_s() + 30;
    long v = -1;

    ck_assert_int_eq(keel_client_new_key(key), 0);
    while (v < 0 && tu_now_s() < deadline) {
        char *reply = NULL;
        int rc;
        if (*c == NULL &&
            keel_client_connect(fx.nodes[i].addr, CLIENT_MS, c) != 0) {
            *c = NULL;
            tu_sleep_ms(100);
            continue;
        }
        rc = keel_client_call_keyed(*c, KEEL_FRAME_CALL, key, "counter", id,
                                    strlen(id), "incr", 4, &reply, NULL);
        if (rc == 0) {
            v = atol(reply);
        } else {
            if (rc == KEEL_ECONN || rc == KEEL_ENOTSENT ||
                rc == KEEL_ETIMEDOUT) {
                keel_client_close(*c);
                *c = NULL;
            }
            tu_sleep_ms(100);
        }
        free(reply);
    }
    return v;
}

/* The counter's value through node i, or -1. */
static long get_via(int i, const char *id)
{
    keel_client *c = connect_to(i);
    char *reply = NULL;
    long v = -1;
    int tries;

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

static void counter_id(int j, char *id, size_t cap)
{
    snprintf(id, cap, "r%d", j);
}

static uint32_t shard_of(const char *id)
{
    return keel_shard_of("counter", id, strlen(id), SHARDS);
}

/* ------------------------------------------------------------ tests */

START_TEST(replicas_agree_and_a_dead_backup_is_dropped)
{
    keel_client *cl[3];
    long acked[COUNTERS] = {0};
    int touched[SHARDS] = {0}, live_insync[COUNTERS] = {0};
    int i, j, round, live = 0, victim = 2;
    keel_shard_map m;
    char id[16];

    start_cluster(3, 3, "2000");
    for (i = 0; i < 3; i++)
        cl[i] = connect_to(i);

    /* The load: each counter through each node in turn. */
    for (round = 0; round < ROUNDS; round++)
        for (j = 0; j < COUNTERS; j++) {
            long v;
            i = (j + round) % 3;
            counter_id(j, id, sizeof id);
            v = incr_keyed(&cl[i], i, id);
            CHECK(v == acked[j] + 1, "%s answered %ld after %ld increments",
                  id, v, acked[j]);
            acked[j] = v;
            touched[shard_of(id)] = 1;
        }
    for (j = 0; j < COUNTERS; j++)
        for (i = 0; i < 3; i++) {
            long v;
            counter_id(j, id, sizeof id);
            v = get_via(i, id);
            CHECK(v == acked[j], "%s is %ld through n%d, %ld acknowledged", id,
                  v, i, acked[j]);
        }
    /* Every unit touched holds the same records on its replicas in
     * sync: all three, unless one lagged past the bound under the load
     * (then the map shows it dropped, and it is left out). */
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)j);
        char d[3][128], names[3][4];
        int first = -1, insync = 0;
        if (!touched[j])
            continue;
        for (i = 0; i < 3; i++) {
            snprintf(names[i], sizeof names[i], "n%d", i);
            if (!tu_map_in_sync(&m, u, names[i]))
                continue;
            insync++;
            tu_cluster_digest(&fx, i, (uint32_t)j, d[i], sizeof d[i]);
            CHECK(strncmp(d[i], "digest ", 7) == 0 &&
                      strstr(d[i], " records 0\n") == NULL,
                  "digest of shard %d on n%d: '%s'", j, i, d[i]);
            if (first < 0)
                first = i;
            CHECK(strcmp(d[first], d[i]) == 0,
                  "shard %d differs between replicas in sync: n%d '%s', "
                  "n%d '%s'",
                  j, first, d[first], i, d[i]);
        }
        if (insync < 3)
            fprintf(stderr, "repl: shard %d has %d replicas in sync after "
                            "the load\n", j, insync);
        CHECK(insync >= 1 && u->shard_epoch > 0, "shard %d: no replica in "
              "sync", j);
    }
    keel_map_free(&m);

    /* The victim dies; the counters it does not own go on. */
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < COUNTERS; j++) {
        const char *p;
        counter_id(j, id, sizeof id);
        p = keel_map_primary(&m, (uint32_t)keel_map_cap_index(&m, ""),
                             shard_of(id));
        if (p != NULL && strcmp(p, "n2") != 0)
            live++;
        else
            acked[j] = -1; /* not written any more */
    }
    keel_map_free(&m);
    CHECK(live > 0, "n2 owns every counter");
    keel_client_close(cl[victim]);
    cl[victim] = NULL;
    tu_keeld_stop(&fx.nodes[victim], SIGKILL);
    for (round = 0; round < 3; round++)
        for (j = 0; j < COUNTERS; j++) {
            long v;
            if (acked[j] < 0)
                continue;
            i = (j + round) % 2;
            counter_id(j, id, sizeof id);
            v = incr_keyed(&cl[i], i, id);
            CHECK(v == acked[j] + 1,
                  "%s answered %ld after %ld increments, n2 dead", id, v,
                  acked[j]);
            acked[j] = v;
        }
    /* Every unit that acknowledged a write since n2 died had n2 out of
     * its in-sync set by then (the map only ever drops it). */
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < COUNTERS; j++) {
        const keel_map_unit *u;
        if (acked[j] < 0)
            continue;
        counter_id(j, id, sizeof id);
        u = tu_map_unit(&m, "", shard_of(id));
        CHECK(!tu_map_in_sync(&m, u, "n2"),
              "%s (shard %u) acknowledged writes with dead n2 in sync", id,
              shard_of(id));
        CHECK(tu_map_in_sync(&m, u, keel_map_primary(&m, (uint32_t)keel_map_cap_index(
                                                       &m, ""),
                                                shard_of(id))),
              "%s (shard %u): its primary is not in sync", id, shard_of(id));
        live_insync[j] = tu_map_in_sync(&m, u, "n0") && tu_map_in_sync(&m, u, "n1");
    }
    keel_map_free(&m);
    for (j = 0; j < COUNTERS; j++) {
        char d0[128], d1[128];
        long v;
        if (acked[j] < 0)
            continue;
        counter_id(j, id, sizeof id);
        for (i = 0; i < 2; i++) {
            v = get_via(i, id);
            CHECK(v == acked[j], "%s is %ld through n%d, %ld acknowledged",
                  id, v, i, acked[j]);
        }
        if (!live_insync[j])
            continue; /* a live backup lagged and was dropped too */
        tu_cluster_digest(&fx, 0, shard_of(id), d0, sizeof d0);
        tu_cluster_digest(&fx, 1, shard_of(id), d1, sizeof d1);
        CHECK(d0[0] != '\0' && strcmp(d0, d1) == 0,
              "shard %u differs between n0 '%s' and n1 '%s'", shard_of(id),
              d0, d1);
    }
    for (i = 0; i < 2; i++)
        if (cl[i] != NULL)
            keel_client_close(cl[i]);
}
END_TEST

/* Sends a GET of the counter's state to node i's HTTP port on a
 * connection of its own: the socket, to read the answer from. */
static int state_get_send(int i, const char *id)
{
    char req[256];
    int fd, port = tu_keeld_http_port(&fx.nodes[i]);

    CHECK(port > 0, "n%d names no http port", i);
    fd = tu_raw_connect_bare(port); /* HTTP: no keel hello */
    CHECK(fd >= 0, "cannot connect to n%d's http port", i);
    snprintf(req, sizeof req,
             "GET /v1/actors/counter/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Connection: close\r\n\r\n",
             id);
    CHECK(tu_send_all(fd, req, strlen(req)) == 0, "GET not sent");
    return fd;
}

/* The whole answer on fd (the server closes it), within 5 s. */
static void state_get_recv(int fd, char *out, size_t cap)
{
    size_t len = 0;

    while (len + 1 < cap && tu_wait_readable(fd, 5000)) {
        ssize_t r = read(fd, out + len, cap - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    out[len] = '\0';
    close(fd);
}

START_TEST(reply_waits_for_a_paused_backup)
{
    keel_client *c, *q;
    keel_shard_map m;
    char id[16] = "", owner[64], http[4096], want[64];
    int j, tries, rc, polls = 0, answered = 0, read_answered = 0, hfd;
    long v, acked = 0, before;
    keel_frame f;
    double sent;
    uint32_t shard = 0;

    start_cluster(2, 2, "1500");
    for (j = 0; j < 64 && id[0] == '\0'; j++) {
        char cand[16];
        counter_id(j, cand, sizeof cand);
        tu_cluster_owner_of(&fx, 0, "counter", cand, owner, sizeof owner);
        if (strcmp(owner, "n0") == 0)
            snprintf(id, sizeof id, "%s", cand);
    }
    CHECK(id[0] != '\0', "no counter owned by n0");
    shard = shard_of(id);
    c = connect_to(0);
    for (j = 0; j < 3; j++) {
        v = incr_keyed(&c, 0, id);
        CHECK(v == acked + 1, "%s answered %ld", id, v);
        acked = v;
    }

    /* n1 pauses: it neither acknowledges nor closes its connections. */
    before = acked;
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGSTOP), 0);
    q = connect_to(0);
    /* The hellos first: then the socket turns readable for the answer. */
    CHECK(keel_client_hello(q, NULL, 0) == 0, "no hello from n0");
    ck_assert_int_eq(keel_client_queue(q, KEEL_FRAME_CALL, 1, "counter", id,
                                       strlen(id), "incr", 4),
                     0);
    ck_assert_int_eq(keel_client_flush(q), 0);
    sent = tu_now_s();
    /* A read of the state sent after the increment is ordered after it:
     * it must not show the increment before the increment's reply could
     * leave. */
    tu_sleep_ms(100);
    hfd = state_get_send(0, id);
    /* Each round: has the answer come? Then what does the map say? An
     * answer seen while a map read after it still shows n1 in sync left
     * before the drop landed: the promise broken. */
    for (polls = 0; polls < 600 && !(answered && read_answered); polls++) {
        struct pollfd p[2] = {{keel_client_fd(q), POLLIN, 0},
                              {hfd, POLLIN, 0}};
        const keel_map_unit *u;
        int ready, hready;
        if (poll(p, 2, 50) < 0)
            p[0].revents = p[1].revents = 0;
        ready = !answered &&
                (keel_client_pending(q) || (p[0].revents & POLLIN));
        hready = !read_answered && (p[1].revents & (POLLIN | POLLHUP));
        CHECK(tu_map_read(&fx, &m) == 0, "no map");
        u = tu_map_unit(&m, "", shard);
        if (hready) {
            int early = tu_map_in_sync(&m, u, "n1");
            read_answered = 1;
            state_get_recv(hfd, http, sizeof http);
            hfd = -1;
            CHECK(!early,
                  "a state read was answered while the map showed the "
                  "paused backup n1 in sync (after %.2f s): %s",
                  tu_now_s() - sent, http);
            /* The increment ran before it: acked + 1 as its version (one
             * per increment) once it was answered. */
            snprintf(want, sizeof want, "\"version\": %ld,", before + 1);
            CHECK(strncmp(http, "HTTP/1.1 200", 12) == 0 &&
                      strstr(http, want) != NULL,
                  "state read: %s", http);
        }
        if (ready) {
            rc = keel_client_recv(q, &f);
            CHECK(rc == 0, "receiving the answer: %s", keel_strerror(rc));
            answered = 1;
            CHECK(!tu_map_in_sync(&m, u, "n1"),
                  "the increment was answered while the map showed the "
                  "paused backup n1 in sync (after %.2f s)",
                  tu_now_s() - sent);
            CHECK(f.kind == KEEL_FRAME_REPLY,
                  "the increment failed (kind %d) once n1 was dropped",
                  f.kind);
            v = strtol((const char *)f.body, NULL, 10);
            CHECK(v == acked + 1, "answered %ld after %ld", v, acked);
            acked = v;
        }
        keel_map_free(&m);
    }
    CHECK(answered && read_answered,
          "no answer (call %d, read %d) within %d polls while n1 is paused",
          answered, read_answered, polls);
    fprintf(stderr,
            "repl: the increment was answered %.2f s after it was sent, "
            "once n1 was out of the in-sync set\n",
            tu_now_s() - sent);
    keel_client_close(q);

    /* Writes go on without n1; it resumes, out of sync, and nothing
     * acknowledged is lost. */
    v = incr_keyed(&c, 0, id);
    CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
    acked = v;
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGCONT), 0);
    for (tries = 0; tries < 3; tries++) {
        v = incr_keyed(&c, 0, id);
        CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
        acked = v;
    }
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    CHECK(!tu_map_in_sync(&m, tu_map_unit(&m, "", shard), "n1"),
          "n1 came back in sync (stage 1 has no catch-up)");
    keel_map_free(&m);
    for (j = 0; j < 2; j++) {
        v = get_via(j, id);
        CHECK(v == acked, "%s is %ld through n%d, %ld acknowledged", id, v, j,
              acked);
    }
    keel_client_close(c);
}
END_TEST

/* A primary killed and restarted on its data may have lost writes that
 * had left for its backups before its own commit: it serves its unit at
 * the same epoch again only once the map shows those backups out of the
 * in-sync set, and they come back by catching up, holding what it holds.
 * Unless its unit failed over meanwhile (its old session expired before
 * it joined again, and the controller promoted a backup first): then the
 * promoted backup serves it, and every replica in sync holds the same. */
START_TEST(a_restarted_primary_has_its_backups_caught_up)
{
    keel_client *c = NULL;
    keel_shard_map m;
    char id[16] = "", owner[64], d[3][128];
    int j, i, port, failed_over;
    long v, acked = 0;
    uint32_t shard;
    uint64_t epoch;

    start_cluster(3, 3, "2000");
    for (j = 0; j < 64 && id[0] == '\0'; j++) {
        char cand[16];
        counter_id(j, cand, sizeof cand);
        tu_cluster_owner_of(&fx, 1, "counter", cand, owner, sizeof owner);
        if (strcmp(owner, "n0") == 0)
            snprintf(id, sizeof id, "%s", cand);
    }
    CHECK(id[0] != '\0', "no counter owned by n0");
    shard = shard_of(id);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    epoch = tu_map_unit(&m, "", shard)->shard_epoch;
    keel_map_free(&m);
    for (j = 0; j < 5; j++) {
        v = incr_keyed(&c, 0, id);
        CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
        acked = v;
    }
    keel_client_close(c);
    c = NULL;
    port = fx.nodes[0].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, port, "--replicas", "3",
                                           "--repl-lag-ms", "2000", NULL),
                     0);
    /* Its unit waits for it, or fails over, then goes on. */
    for (j = 0; j < 5; j++) {
        v = incr_keyed(&c, 1, id);
        CHECK(v == acked + 1, "%s answered %ld after %ld, n0 restarted", id,
              v, acked);
        acked = v;
    }
    keel_client_close(c);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    failed_over = tu_map_unit(&m, "", shard)->shard_epoch != epoch;
    fprintf(stderr, "repl: after n0's restart shard %u is %s\n", shard,
            failed_over ? "promoted to a backup" : "n0's again, same epoch");
    if (failed_over) {
        const char *p = keel_map_primary(
            &m, (uint32_t)keel_map_cap_index(&m, ""), shard);
        CHECK(tu_map_unit(&m, "", shard)->promoted && strcmp(p, "n0") != 0,
              "shard %u moved on from epoch %llu without a failover", shard,
              (unsigned long long)epoch);
    }
    if (!failed_over) {
        /* Its backups were dropped before its first answer, then caught
         * up: all three in sync again, at the same epoch. */
        keel_map_free(&m);
        CHECK(tu_map_wait_settled(&fx, 3), "the backups of shard %u were "
              "not caught up after n0 restarted", shard);
        CHECK(tu_map_read(&fx, &m) == 0, "no map");
        CHECK(tu_map_unit(&m, "", shard)->shard_epoch == epoch,
              "shard %u moved on from epoch %llu", shard,
              (unsigned long long)epoch);
        for (i = 0; i < 3; i++) {
            char name[4];
            snprintf(name, sizeof name, "n%d", i);
            CHECK(tu_map_in_sync(&m, tu_map_unit(&m, "", shard), name),
                  "%s is not back in the in-sync set of shard %u", name,
                  shard);
        }
    }
    for (i = 0; i < 3; i++) {
        char name[4];
        v = get_via(i, id);
        CHECK(v == acked, "%s is %ld through n%d, %ld acknowledged", id, v, i,
              acked);
        snprintf(name, sizeof name, "n%d", i);
        d[i][0] = '\0';
        if (tu_map_in_sync(&m, tu_map_unit(&m, "", shard), name))
            tu_cluster_digest(&fx, i, shard, d[i], sizeof d[i]);
    }
    for (i = 0; i < 3; i++)
        for (j = 0; j < 3; j++)
            CHECK(d[i][0] == '\0' || d[j][0] == '\0' ||
                      strcmp(d[i], d[j]) == 0,
                  "shard %u differs between replicas in sync: n%d '%s', "
                  "n%d '%s'",
                  shard, i, d[i], j, d[j]);
    keel_map_free(&m);
}
END_TEST

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

    start_cluster(3, 3, "2000");
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
            counter_id(j, id, sizeof id);
            v = incr_keyed(&c, 1, id);
            CHECK(v == acked[j] + 1, "%s answered %ld after %ld increments",
                  id, v, acked[j]);
            acked[j] = v;
            touched[shard_of(id)] = 1;
        }
    }
    keel_client_close(c);
    code = tu_keeld_stop(&fx.nodes[0], SIGTERM);
    CHECK(code == 0, "drained n0 exited with %d", code);
    for (j = 0; j < COUNTERS; j++)
        for (i = 1; i < 3; i++) {
            long v;
            counter_id(j, id, sizeof id);
            v = get_via(i, id);
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
        CHECK(!tu_map_in_sync(&m, u, "n0"), "drained n0 in sync for shard %d", j);
        if (!touched[j] || !tu_map_in_sync(&m, u, "n1") || !tu_map_in_sync(&m, u, "n2"))
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

/* ------------------------------------------------------------ catch-up */

/* Waits (at most 40 s) until every unit has its 3 replicas in sync and
 * no move under way: the backups out of sync caught up. */
static void wait_all_in_sync(const char *what)
{
    int ok = tu_map_wait_settled(&fx, 3) || tu_map_wait_settled(&fx, 3);

    CHECK(ok, "%s: the units did not get 3 replicas in sync again", what);
}

/* One round of increments of every counter, counter j through node
 * nodes[(j + round) % nn]. */
static void load_round(keel_client **cl, long *acked, const int *nodes,
                       int nn, int round, const char *when)
{
    char id[16];
    int j;

    for (j = 0; j < COUNTERS; j++) {
        int i = nodes[(j + round) % nn];
        long v;
        counter_id(j, id, sizeof id);
        v = incr_keyed(&cl[i], i, id);
        CHECK(v == acked[j] + 1, "%s answered %ld after %ld increments (%s)",
              id, v, acked[j], when);
        acked[j] = v;
    }
}

/* Every counter answers its acknowledged count through each live node,
 * and every unit's replicas in sync print the same digest, with every
 * live node in sync (so the digests of all of them are compared). */
static void check_agree(const long *acked, const int *live, int nl,
                        const char *when)
{
    keel_shard_map m;
    char id[16];
    int j, k;

    for (j = 0; j < COUNTERS; j++)
        for (k = 0; k < nl; k++) {
            long v;
            counter_id(j, id, sizeof id);
            v = get_via(live[k], id);
            CHECK(v == acked[j], "%s is %ld through n%d, %ld acknowledged "
                  "(%s)", id, v, live[k], acked[j], when);
        }
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)j);
        char d[TU_CLUSTER_MAX][128];
        for (k = 0; k < nl; k++) {
            char name[8];
            snprintf(name, sizeof name, "n%d", live[k]);
            CHECK(tu_map_in_sync(&m, u, name),
                  "shard %d: %s is not in sync (%s)", j, name, when);
            tu_cluster_digest(&fx, live[k], (uint32_t)j, d[k], sizeof d[k]);
            CHECK(strncmp(d[k], "digest ", 7) == 0 && strcmp(d[k], d[0]) == 0,
                  "shard %d differs between n%d '%s' and n%d '%s' (%s)", j,
                  live[0], d[0], live[k], d[k], when);
        }
    }
    keel_map_free(&m);
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

    start_cluster(3, 3, "1000");
    for (round = 0; round < 3; round++)
        load_round(cl, acked, all, 3, round, "three nodes");
    port = fx.nodes[2].port;
    keel_client_close(cl[2]);
    cl[2] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    for (round = 0; round < 3; round++)
        load_round(cl, acked, two, 2, round, "n2 dead");
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, port, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    wait_all_in_sync("n2 back on its data");
    for (round = 0; round < 2; round++)
        load_round(cl, acked, all, 3, round, "n2 caught up");
    check_agree(acked, all, 3, "n2 caught up");
    CHECK(tu_keel_stat(fx.nodes[0].addr, "repl_catchups") +
                  tu_keel_stat(fx.nodes[1].addr, "repl_catchups") >
              0,
          "no snapshot was sent");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
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

    start_cluster(3, 3, "1000");
    for (round = 0; round < 2; round++)
        load_round(cl, acked, all, 3, round, "three nodes");
    counter_id(0, id, sizeof id);
    shard = shard_of(id);
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
        load_round(cl, acked, rest, 2, round, "first primary dead");
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    CHECK(tu_map_unit(&m, "", shard)->shard_epoch > epoch,
          "shard %u did not fail over", shard);
    epoch = tu_map_unit(&m, "", shard)->shard_epoch;
    keel_map_free(&m);
    ck_assert_int_eq(tu_cluster_start_node(&fx, first_victim, port,
                                           "--replicas", "3", "--repl-lag-ms",
                                           "1000", NULL),
                     0);
    wait_all_in_sync("after the first failover");
    load_round(cl, acked, all, 3, 0, "after the first failover");
    check_agree(acked, all, 3, "after the first failover");

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
        load_round(cl, acked, rest, 2, round, "second primary dead");
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
                counter_id(j, id, sizeof id);
                v = get_via(live[kk], id);
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

/* A node back on an empty data directory (its disk replaced) comes back
 * under another store id: it is never taken for an in-sync replica of
 * what it held before; it catches up like any backup out of sync, and
 * the map records its new store. */
/* Puts entry `key` of kv actor `id` through node i: a value of `len`
 * bytes of one letter. */
static void big_put(int i, const char *id, int key, size_t len)
{
    keel_client *c = connect_to(i);
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

START_TEST(a_wiped_backup_catches_up_under_its_new_store)
{
    keel_client *cl[3] = {NULL, NULL, NULL};
    long acked[COUNTERS] = {0};
    const int all[3] = {0, 1, 2}, two[2] = {0, 1};
    keel_shard_map m;
    char dir[600], old_store[KEEL_MAP_STORE_HEX + 1];
    int round, port, tries, idx, gone = 0;
    uint32_t s;

    start_cluster(3, 3, "1000");
    for (round = 0; round < 2; round++)
        load_round(cl, acked, all, 3, round, "three nodes");
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
        load_round(cl, acked, two, 2, round, "n2 dead");
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
    wait_all_in_sync("n2 back on an empty disk");
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
    load_round(cl, acked, all, 3, 0, "n2 caught up");
    check_agree(acked, all, 3, "n2 caught up from an empty disk");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
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
        load_round(cl, acked, two, 2, round, "two nodes");
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, 0, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    wait_all_in_sync("n2 joined");
    load_round(cl, acked, all, 3, 0, "n2 joined");
    check_agree(acked, all, 3, "n2 joined");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
}
END_TEST

/* The controller named by node i's `keel nodes`: its index, or -1. */
static int controller_via(int i)
{
    char *o = NULL, *e = NULL, name[32];
    const char *p;
    int idx = -1;

    if (tu_keel(fx.nodes[i].addr, &o, &e, "nodes", NULL) == 0 && o != NULL &&
        (p = strstr(o, "\ncontroller ")) != NULL &&
        sscanf(p, "\ncontroller %31s", name) == 1 && name[0] == 'n' &&
        name[1] >= '0' && name[1] <= '2' && name[2] == '\0')
        idx = name[1] - '0';
    free(o);
    free(e);
    return idx;
}

/* Waits (bounded) until some node other than `not` names a controller
 * other than `not`: its index, or -1. */
static int wait_new_controller(int not)
{
    int tries, i, c;

    for (tries = 0; tries < 150; tries++) {
        for (i = 0; i < 3; i++) {
            if (i == not || fx.nodes[i].pid <= 0)
                continue;
            c = controller_via(i);
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

    start_cluster(3, 3, "1000");
    for (round = 0; round < 2; round++)
        load_round(cl, acked, all, 3, round, "three nodes");
    c1 = controller_via(0);
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
        load_round(cl, acked, rest, 2, round, "the controller dead");
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
        load_round(cl, acked, rest, 2, round, "two controllers killed");
    check_agree(acked, rest, 2, "two controllers killed");

    /* And the second comes back: all three agree. */
    ck_assert_int_eq(tu_cluster_start_node(&fx, c2, port2, "--replicas", "3",
                                           "--repl-lag-ms", "1000", NULL),
                     0);
    wait_all_in_sync("both controllers back");
    load_round(cl, acked, all, 3, 0, "both controllers back");
    check_agree(acked, all, 3, "both controllers back");
    for (round = 0; round < 3; round++)
        if (cl[round] != NULL)
            keel_client_close(cl[round]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_repl");
    TCase *tc = tcase_create("cluster_repl");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, replicas_agree_and_a_dead_backup_is_dropped);
    tcase_add_test(tc, reply_waits_for_a_paused_backup);
    tcase_add_test(tc, a_restarted_primary_has_its_backups_caught_up);
    tcase_add_test(tc, a_drained_primary_hands_off_with_its_backups);
    tcase_add_test(tc, a_restarted_backup_catches_up);
    tcase_add_test(tc, a_unit_fails_over_twice);
    tcase_add_test(tc, a_wiped_backup_catches_up_under_its_new_store);
    tcase_add_test(tc, a_later_node_catches_up);
    tcase_add_test(tc, a_killed_controller_s_work_is_finished_by_the_next);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
