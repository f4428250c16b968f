/* Synchronous replication (stage 1), end to end with a real ZooKeeper and
 * real keeld processes started with --replicas (docs/cluster.md,
 * "Replication stream"). Checked:
 *  - three nodes, three replicas per unit: under a counter load through
 *    every node, every counter answers its acknowledged count through
 *    every node, and `keel digest` of every unit touched is the same on
 *    the three (the backups hold exactly what the primary holds);
 *    `keel shards --digest` through one node shows those digests and
 *    finds every unit's replicas in agreement, and, with a node killed,
 *    shows its replicas as not asked (`?`);
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
 *  - such a primary with many units (256 shards) makes their backups
 *    suspect at once: its log names one a second and counts the rest,
 *    and the lines add up to its repl_suspects;
 *  - such a primary answers a read only once the map shows its suspect
 *    backups out (they may lack writes the read shows).
 * Backups that catch up are checked in test_cluster_repl_catchup.c, units
 * that move (a drain, failovers, killed controllers) in
 * test_cluster_repl_move.c; the three share tests/support/replfix.h.
 * The map is read straight from ZooKeeper. Every wait is bounded; the
 * checks are about order (what the map shows when a reply comes), not
 * durations. On a failure the nodes' logs are printed. */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
#define ROUNDS 8

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_repl_setup(&fx, "clrepl", "rp");
}

static void teardown(void)
{
    tu_repl_teardown(&fx);
}

/* Where "\nunit ..." (line) starts in out, its first line included. */
static char *unit_line_of(char *out, const char *line)
{
    return strncmp(out, line + 1, strlen(line + 1)) == 0 ? out
                                                         : strstr(out, line);
}

static int get_send(int i, const char *path);
static void state_get_recv(int fd, char *out, size_t cap);

/* The value of gauge `name` in node i's /metrics; -1 when absent. */
static long metric_of(int i, const char *name)
{
    static char text[1 << 18];
    char want[96], *p;

    state_get_recv(get_send(i, "/metrics"), text, sizeof text);
    snprintf(want, sizeof want, "\n%s ", name);
    p = strstr(text, want);
    return p != NULL ? strtol(p + strlen(want), NULL, 10) : -1;
}

/* Node i's /metrics show the cluster as wanted: `members` live, no unit
 * unavailable, and at least `out` replicas out of sync (exactly 0 when
 * `out` is 0); asked again for at most 30 s. */
static int health_is(int i, long members, long out, char *got, size_t cap)
{
    long m = -1, u = -1, o = -1;
    int tries;

    for (tries = 0; tries < 300; tries++) {
        m = metric_of(i, "keel_cluster_members");
        u = metric_of(i, "keel_cluster_units_unavailable");
        o = metric_of(i, "keel_cluster_replicas_out_of_sync");
        if (m == members && u == 0 && (out == 0 ? o == 0 : o >= out))
            return 1;
        tu_sleep_ms(100);
    }
    snprintf(got, cap, "members %ld, units unavailable %ld, replicas out of "
             "sync %ld", m, u, o);
    return 0;
}

START_TEST(replicas_agree_and_a_dead_backup_is_dropped)
{
    keel_client *cl[3];
    long acked[COUNTERS] = {0};
    int touched[SHARDS] = {0}, live_insync[COUNTERS] = {0};
    int i, j, round, live = 0, victim = 2, sweep_rc;
    keel_shard_map m;
    char id[16], want[128], *sweep = NULL, *sweep_err = NULL;

    tu_repl_start(&fx, 3, 3, "2000");
    for (i = 0; i < 3; i++)
        cl[i] = tu_repl_connect(&fx, i);

    /* The load: each counter through each node in turn. */
    for (round = 0; round < ROUNDS; round++)
        for (j = 0; j < COUNTERS; j++) {
            long v;
            i = (j + round) % 3;
            tu_repl_counter_id(j, id, sizeof id);
            v = tu_repl_incr(&fx, &cl[i], i, id);
            CHECK(v == acked[j] + 1, "%s answered %ld after %ld increments",
                  id, v, acked[j]);
            acked[j] = v;
            touched[tu_repl_shard_of(id)] = 1;
        }
    for (j = 0; j < COUNTERS; j++)
        for (i = 0; i < 3; i++) {
            long v;
            tu_repl_counter_id(j, id, sizeof id);
            v = tu_repl_get(&fx, i, id);
            CHECK(v == acked[j], "%s is %ld through n%d, %ld acknowledged", id,
                  v, i, acked[j]);
        }
    /* Every unit touched holds the same records on its replicas in
     * sync: all three, unless one lagged past the bound under the load
     * (then the map shows it dropped, and it is left out). `keel shards
     * --digest` through n0 says so for every unit, with the digests each
     * node gives itself. */
    sweep_rc = tu_keel(fx.nodes[0].addr, &sweep, &sweep_err, "shards",
                       "--digest", NULL);
    CHECK(sweep_rc == 0 && sweep != NULL, "shards --digest exited %d: %s",
          sweep_rc, sweep_err ? sweep_err : "");
    snprintf(want, sizeof want, "digests: %d units, %d agree, 0 differ, 0 "
             "incomplete\n", SHARDS, SHARDS);
    CHECK(strstr(sweep, want) != NULL, "shards --digest: no '%s' in:\n%s",
          want, sweep);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)j);
        char d[3][128], names[3][4], line[64], *at, *eol;
        int first = -1, insync = 0;
        if (!touched[j])
            continue;
        snprintf(line, sizeof line, "\nunit (default) %d owner ", j);
        at = unit_line_of(sweep, line);
        CHECK(at != NULL, "shards --digest names no shard %d", j);
        eol = strchr(at + 1, '\n');
        CHECK(eol != NULL && strncmp(eol - 6, " agree", 6) == 0,
              "shards --digest: shard %d does not agree", j);
        for (i = 0; i < 3; i++) {
            char hex[32], mine[64];
            unsigned long long recs;
            snprintf(names[i], sizeof names[i], "n%d", i);
            if (!tu_map_in_sync(&m, u, names[i]))
                continue;
            insync++;
            tu_cluster_digest(&fx, i, (uint32_t)j, d[i], sizeof d[i]);
            CHECK(sscanf(d[i], "digest %31s records %llu", hex, &recs) == 2 &&
                      recs > 0,
                  "digest of shard %d on n%d: '%s'", j, i, d[i]);
            snprintf(mine, sizeof mine, "n%d=%s:%llu", i, hex, recs);
            at = strstr(at, mine);
            CHECK(at != NULL && at < eol,
                  "shards --digest: shard %d lacks '%s'", j, mine);
            at = unit_line_of(sweep, line);
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
    free(sweep);
    free(sweep_err);
    sweep = sweep_err = NULL;

    /* The victim dies; the counters it does not own go on. */
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < COUNTERS; j++) {
        const char *p;
        tu_repl_counter_id(j, id, sizeof id);
        p = keel_map_primary(&m, (uint32_t)keel_map_cap_index(&m, ""),
                             tu_repl_shard_of(id));
        if (p != NULL && strcmp(p, "n2") != 0)
            live++;
        else
            acked[j] = -1; /* not written any more */
    }
    keel_map_free(&m);
    CHECK(live > 0, "n2 owns every counter");
    {
        /* The cluster's health on /metrics, for an operator's alerts:
         * three members, every unit served, every replica in sync. */
        char got[160];
        CHECK(health_is(0, 3, 0, got, sizeof got),
              "n0's /metrics before n2 dies: %s", got);
    }
    keel_client_close(cl[victim]);
    cl[victim] = NULL;
    tu_keeld_stop(&fx.nodes[victim], SIGKILL);
    /* A replica that cannot be asked is shown as such, and only units
     * that count it in sync are incomplete (exit 3 when there are). */
    sweep_rc = tu_keel(fx.nodes[0].addr, &sweep, &sweep_err, "shards",
                       "--digest", NULL);
    CHECK(sweep != NULL && strstr(sweep, "n2=?") != NULL &&
              strstr(sweep, "n2=?") == strstr(sweep, "n2=") &&
              (sweep_rc == 3) == (strstr(sweep, " incomplete\n") != NULL) &&
              (sweep_rc == 0 || sweep_rc == 3) &&
              strstr(sweep, " DIFFER\n") == NULL,
          "shards --digest with n2 dead exited %d:\n%s%s", sweep_rc,
          sweep ? sweep : "", sweep_err ? sweep_err : "");
    free(sweep);
    free(sweep_err);
    for (round = 0; round < 3; round++)
        for (j = 0; j < COUNTERS; j++) {
            long v;
            if (acked[j] < 0)
                continue;
            i = (j + round) % 2;
            tu_repl_counter_id(j, id, sizeof id);
            v = tu_repl_incr(&fx, &cl[i], i, id);
            CHECK(v == acked[j] + 1,
                  "%s answered %ld after %ld increments, n2 dead", id, v,
                  acked[j]);
            acked[j] = v;
        }
    {
        /* Once n2 is not a member, `keel shards` says it is down, with how
         * many units list it (a dead backup stays in the in-sync set of a
         * unit no write has touched: the unit lines alone would show it
         * in sync), and `keel where` of a counter it backs up says so. */
        char *out = NULL, id2[32] = "";
        const char *p;
        int gone = 0;
        for (i = 0; i < 100 && !gone; i++) {
            gone = tu_keel(fx.nodes[0].addr, &out, NULL, "nodes", NULL) ==
                       0 &&
                   out != NULL && strstr(out, "n2 ") == NULL;
            free(out);
            out = NULL;
            if (!gone)
                tu_sleep_ms(100);
        }
        CHECK(gone, "n2 is still a member 10 s after its death");
        CHECK(tu_keel(fx.nodes[0].addr, &out, NULL, "shards", NULL) == 0 &&
                  out != NULL,
              "keel shards failed");
        p = strstr(out, "\ndown backup n2: listed for ");
        CHECK(p != NULL && strstr(p, "), not a live member\n") != NULL,
              "keel shards does not say n2 is down:\n%s", out);
        CHECK(strstr(out, "down backup n0") == NULL &&
                  strstr(out, "down backup n1") == NULL,
              "a live node is said down:\n%s", out);
        free(out);
        out = NULL;
        for (j = 0; j < COUNTERS && id2[0] == '\0'; j++) {
            tu_repl_counter_id(j, id, sizeof id);
            CHECK(tu_keel(fx.nodes[0].addr, &out, NULL, "where", "counter",
                          id, NULL) == 0 &&
                      out != NULL,
                  "keel where %s failed", id);
            if (strstr(out, "\nbackups ") != NULL &&
                strstr(strstr(out, "\nbackups "), "n2") != NULL) {
                snprintf(id2, sizeof id2, "%s", id);
                CHECK(strstr(out, "\ndown n2\n") != NULL,
                      "keel where %s does not say n2 is down:\n%s", id, out);
            }
            free(out);
            out = NULL;
        }
        CHECK(id2[0] != '\0', "no counter lists n2 as a backup");
    }
    /* Every unit that acknowledged a write since n2 died had n2 out of
     * its in-sync set by then (the map only ever drops it). */
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (j = 0; j < COUNTERS; j++) {
        const keel_map_unit *u;
        if (acked[j] < 0)
            continue;
        tu_repl_counter_id(j, id, sizeof id);
        u = tu_map_unit(&m, "", tu_repl_shard_of(id));
        CHECK(!tu_map_in_sync(&m, u, "n2"),
              "%s (shard %u) acknowledged writes with dead n2 in sync", id,
              tu_repl_shard_of(id));
        CHECK(tu_map_in_sync(&m, u,
                             keel_map_primary(
                                 &m, (uint32_t)keel_map_cap_index(&m, ""),
                                 tu_repl_shard_of(id))),
              "%s (shard %u): its primary is not in sync", id,
              tu_repl_shard_of(id));
        live_insync[j] =
            tu_map_in_sync(&m, u, "n0") && tu_map_in_sync(&m, u, "n1");
    }
    keel_map_free(&m);
    for (j = 0; j < COUNTERS; j++) {
        char d0[128], d1[128];
        long v;
        if (acked[j] < 0)
            continue;
        tu_repl_counter_id(j, id, sizeof id);
        for (i = 0; i < 2; i++) {
            v = tu_repl_get(&fx, i, id);
            CHECK(v == acked[j], "%s is %ld through n%d, %ld acknowledged",
                  id, v, i, acked[j]);
        }
        if (!live_insync[j])
            continue; /* a live backup lagged and was dropped too */
        tu_cluster_digest(&fx, 0, tu_repl_shard_of(id), d0, sizeof d0);
        tu_cluster_digest(&fx, 1, tu_repl_shard_of(id), d1, sizeof d1);
        CHECK(d0[0] != '\0' && strcmp(d0, d1) == 0,
              "shard %u differs between n0 '%s' and n1 '%s'",
              tu_repl_shard_of(id), d0, d1);
    }
    {
        /* n2 gone: two members, its units failed over, and its copies
         * out of sync on every unit that lists it. */
        char got[160];
        CHECK(health_is(0, 2, 1, got, sizeof got),
              "n0's /metrics with n2 dead: %s", got);
    }
    for (i = 0; i < 2; i++)
        if (cl[i] != NULL)
            keel_client_close(cl[i]);
}
END_TEST

/* Sends a GET of path to node i's HTTP port on a connection of its
 * own: the socket, to read the answer from. */
static int get_send(int i, const char *path)
{
    char req[256];
    int fd, port = tu_keeld_http_port(&fx.nodes[i]);

    CHECK(port > 0, "n%d names no http port", i);
    fd = tu_raw_connect_bare(port); /* HTTP: no keel hello */
    CHECK(fd >= 0, "cannot connect to n%d's http port", i);
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Connection: close\r\n\r\n",
             path);
    CHECK(tu_send_all(fd, req, strlen(req)) == 0, "GET not sent");
    return fd;
}

/* A GET of the counter's state (get_send). */
static int state_get_send(int i, const char *id)
{
    char path[128];

    snprintf(path, sizeof path, "/v1/actors/counter/%s", id);
    return get_send(i, path);
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

static void state_get_recv(int fd, char *out, size_t cap);

/* Node i's replication lag for backup b, in seconds, as its /metrics
 * (*metrics_s) and its /v1/cluster (*json_s) give it; -1 where absent. */
static void lag_read(int i, const char *b, double *metrics_s, double *json_s)
{
    static char text[1 << 18];
    char want[96], *p;

    *metrics_s = *json_s = -1;
    state_get_recv(get_send(i, "/metrics"), text, sizeof text);
    snprintf(want, sizeof want, "\nkeel_repl_lag_seconds{backup=\"%s\"} ", b);
    if ((p = strstr(text, want)) != NULL)
        *metrics_s = strtod(p + strlen(want), NULL);
    state_get_recv(get_send(i, "/v1/cluster"), text, sizeof text);
    snprintf(want, sizeof want, "{\"name\": \"%s\", \"lag_ms\": ", b);
    if ((p = strstr(text, want)) != NULL)
        *json_s = strtod(p + strlen(want), NULL) / 1000;
}

START_TEST(reply_waits_for_a_paused_backup)
{
    keel_client *c, *q;
    keel_shard_map m;
    char id[16] = "", http[4096], want[64];
    int j, tries, rc, polls = 0, answered = 0, read_answered = 0, hfd;
    long v, acked = 0, before;
    double lag_m = -1, lag_j = -1, most_m = 0, most_j = 0;
    keel_frame f;
    double sent;
    uint32_t shard = 0;

    tu_repl_start(&fx, 2, 2, "1500");
    tu_repl_counter_led_by(&fx, 0, "n0", id, sizeof id);
    CHECK(id[0] != '\0', "no counter owned by n0");
    shard = tu_repl_shard_of(id);
    c = tu_repl_connect(&fx, 0);
    for (j = 0; j < 3; j++) {
        v = tu_repl_incr(&fx, &c, 0, id);
        CHECK(v == acked + 1, "%s answered %ld", id, v);
        acked = v;
    }

    /* n1 pauses: it neither acknowledges nor closes its connections. */
    before = acked;
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGSTOP), 0);
    q = tu_repl_connect(&fx, 0);
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
        /* Meanwhile n0 shows n1's lag growing. */
        if (!answered && polls % 4 == 0) {
            lag_read(0, "n1", &lag_m, &lag_j);
            most_m = lag_m > most_m ? lag_m : most_m;
            most_j = lag_j > most_j ? lag_j : most_j;
        }
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
            "once n1 was out of the in-sync set; n1's lag was seen at "
            "%.3f s (/metrics), %.3f s (/v1/cluster)\n",
            tu_now_s() - sent, most_m, most_j);
    CHECK(most_m > 0.2 && most_j > 0.2,
          "n0 never showed paused n1's lag over 0.2 s: /metrics %.3f s, "
          "/v1/cluster %.3f s",
          most_m, most_j);
    keel_client_close(q);

    /* Writes go on without n1; it resumes, out of sync, and nothing
     * acknowledged is lost. */
    v = tu_repl_incr(&fx, &c, 0, id);
    CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
    acked = v;
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGCONT), 0);
    for (tries = 0; tries < 3; tries++) {
        v = tu_repl_incr(&fx, &c, 0, id);
        CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
        acked = v;
    }
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    CHECK(!tu_map_in_sync(&m, tu_map_unit(&m, "", shard), "n1"),
          "n1 came back in sync (stage 1 has no catch-up)");
    keel_map_free(&m);
    /* Nothing waits on n1 any more: its lag is back to 0. */
    for (tries = 0; tries < 100; tries++) {
        lag_read(0, "n1", &lag_m, &lag_j);
        if (lag_m == 0 && lag_j == 0)
            break;
        tu_sleep_ms(50);
    }
    CHECK(lag_m == 0 && lag_j == 0, "n1's lag stays at %.3f s (/metrics), "
          "%.3f s (/v1/cluster)", lag_m, lag_j);
    for (j = 0; j < 2; j++) {
        v = tu_repl_get(&fx, j, id);
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
    char id[16], d[3][128];
    int j, i, port, failed_over;
    long v, acked = 0;
    uint32_t shard;
    uint64_t epoch;

    tu_repl_start(&fx, 3, 3, "2000");
    tu_repl_counter_led_by(&fx, 1, "n0", id, sizeof id);
    CHECK(id[0] != '\0', "no counter owned by n0");
    shard = tu_repl_shard_of(id);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    epoch = tu_map_unit(&m, "", shard)->shard_epoch;
    keel_map_free(&m);
    for (j = 0; j < 5; j++) {
        v = tu_repl_incr(&fx, &c, 0, id);
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
        v = tu_repl_incr(&fx, &c, 1, id);
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
        v = tu_repl_get(&fx, i, id);
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

/* A backup killed and started again while its units are idle is still
 * listed in sync when it is back, and remembers none of their streams:
 * it refuses the next piece its primary sends (EPROTO, nothing of the
 * stream taken). The primary waited the lag (--repl-lag-ms, 60 s here)
 * before it asked the controller to drop it, and every write of the unit
 * waited with it, once per unit. Now that answer makes the backup suspect
 * and its drop is asked at once: the first write after the restart is
 * answered well within the keyed call's 40 s, the write is on every
 * replica in sync, and the backup catches up. */
START_TEST(a_restarted_backup_is_dropped_at_its_first_refusal)
{
    keel_client *c = NULL;
    keel_shard_map m;
    char id[16], *log;
    int j, port;
    long v, acked = 0;
    uint32_t shard;

    tu_repl_start(&fx, 3, 3, "60000");
    tu_repl_counter_led_by(&fx, 1, "n0", id, sizeof id);
    CHECK(id[0] != '\0', "no counter owned by n0");
    shard = tu_repl_shard_of(id);
    for (j = 0; j < 3; j++) {
        v = tu_repl_incr(&fx, &c, 0, id);
        CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
        acked = v;
    }
    port = fx.nodes[2].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[2]);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, port, "--replicas", "3",
                                           "--repl-lag-ms", "60000", NULL),
                     0);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    CHECK(tu_map_in_sync(&m, tu_map_unit(&m, "", shard), "n2"),
          "n2 is not in the in-sync set of shard %u after its restart",
          shard);
    keel_map_free(&m);
    v = tu_repl_incr(&fx, &c, 0, id);
    CHECK(v == acked + 1, "%s answered %ld after %ld once n2 restarted "
                          "(the write waited for the lag, 60 s?)",
          id, v, acked);
    acked = v;
    keel_client_close(c);
    log = tu_keeld_log(&fx.nodes[0]);
    CHECK(log != NULL && strstr(log, "it restarted") != NULL,
          "n0 did not make n2 suspect for its refusal");
    free(log);
    CHECK(tu_map_wait_settled(&fx, 3), "n2 did not catch up on shard %u",
          shard);
    for (j = 0; j < 3; j++) {
        v = tu_repl_get(&fx, j, id);
        CHECK(v == acked, "%s is %ld through n%d, %ld acknowledged", id, v,
              j, acked);
    }
}
END_TEST

/* How many times what occurs in log. */
static int log_count(const char *log, const char *what)
{
    int n = 0;

    for (const char *p = strstr(log, what); p != NULL; p = strstr(p + 1, what))
        n++;
    return n;
}

/* The sum of the counts the summary lines ("N more backups made suspect
 * ...") give. */
static long summary_total(const char *log)
{
    const char *what = " more backups made suspect", *p, *q;
    long sum = 0;

    for (p = strstr(log, what); p != NULL; p = strstr(p + 1, what)) {
        for (q = p; q > log && q[-1] >= '0' && q[-1] <= '9'; q--)
            ;
        sum += atol(q);
    }
    return sum;
}

/* A primary killed with many units resumes them all at their epoch at
 * once, each backup of each made suspect: the log names one a second and
 * counts the others in a line of its own, and those lines add up to the
 * node's repl_suspects. (All of them failed over instead, which the
 * node's return within its session makes rare: nothing to count.) */
START_TEST(a_restarted_primary_logs_its_suspects_once_a_second)
{
    keel_client *c = NULL;
    char *log = NULL, id[16] = "";
    long suspects = -1, summed = 0;
    int port, named = 0, summaries = 0, tries;
    double t0, secs;

    fx.shards = 256;
    tu_repl_start(&fx, 3, 3, "2000");
    CHECK(tu_map_wait_settled(&fx, 3), "the cluster did not settle");
    tu_repl_counter_led_by(&fx, 1, "n0", id, sizeof id);
    CHECK(id[0] != '\0', "no counter owned by n0");
    port = fx.nodes[0].port;
    t0 = tu_now_s();
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, port, "--replicas", "3",
                                           "--repl-lag-ms", "2000", NULL),
                     0);
    /* Served again: by n0, resumed, or by a backup promoted. */
    CHECK(tu_repl_incr(&fx, &c, 1, id) == 1,
          "%s not served after n0 restarted", id);
    keel_client_close(c);
    CHECK(tu_map_wait_settled(&fx, 3),
          "the backups were not caught up after n0 restarted");
    /* The last summary comes a second after the line before it at most:
     * wait (bounded) until the lines account for every suspect. */
    for (tries = 0; tries < 40; tries++) {
        suspects = tu_keel_stat(fx.nodes[0].addr, "repl_suspects");
        free(log);
        log = tu_keeld_log(&fx.nodes[0]);
        CHECK(log != NULL, "no log of n0");
        named = log_count(log, "may not hold what this node holds");
        summaries = log_count(log, " more backups made suspect");
        summed = summary_total(log);
        if (suspects >= 0 && named + summed == suspects)
            break;
        usleep(250 * 1000);
    }
    secs = tu_now_s() - t0;
    fprintf(stderr,
            "repl: n0 made %ld backups suspect: %d named, %ld counted in %d "
            "lines, in %.1f s\n",
            suspects, named, summed, summaries, secs);
    CHECK(suspects >= 0, "no repl_suspects from n0");
    CHECK(named + summed == suspects,
          "n0's lines account for %d + %ld suspects of %ld", named, summed,
          suspects);
    CHECK(named <= 1 + (int)secs,
          "n0 named %d suspect backups in %.1f s: more than one a second",
          named, secs);
    CHECK(summaries <= 1 + (int)secs,
          "n0 logged %d summaries in %.1f s: more than one a second",
          summaries, secs);
    free(log);
}
END_TEST

/* A primary killed and restarted on its data may hold writes its
 * backups lack (its commit landed, their copies of the pieces did not):
 * they are suspect, and until the map shows them out one of them could
 * be promoted without those writes. So a read it answers, which may show
 * them, waits for that map as its writes' replies do (docs/cluster.md,
 * "Suspect backups"). The drop is asked 3 s late here (failpoint
 * SUSPECT_DROP_DELAY_MS): a read answered before n0 asked it was
 * confirmed by the suspects alone. */
START_TEST(a_restarted_primary_answers_reads_once_its_suspects_are_out)
{
    keel_client *c = NULL;
    char id[16] = "";
    long v, acked = 0, suspects, drops;
    int j, port;

    tu_repl_start(&fx, 3, 3, "2000");
    CHECK(tu_map_wait_settled(&fx, 3), "the cluster did not settle");
    tu_repl_counter_led_by(&fx, 1, "n0", id, sizeof id);
    CHECK(id[0] != '\0', "no counter owned by n0");
    for (j = 0; j < 3; j++) {
        v = tu_repl_incr(&fx, &c, 0, id);
        CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
        acked = v;
    }
    keel_client_close(c);
    port = fx.nodes[0].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    ck_assert_int_eq(setenv("KEEL_FAILPOINT_SUSPECT_DROP_DELAY_MS", "3000",
                            1),
                     0);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, port, "--replicas", "3",
                                           "--repl-lag-ms", "2000", NULL),
                     0);
    unsetenv("KEEL_FAILPOINT_SUSPECT_DROP_DELAY_MS");
    v = tu_repl_get(&fx, 0, id);
    drops = tu_keel_stat(fx.nodes[0].addr, "repl_drop_requests");
    suspects = tu_keel_stat(fx.nodes[0].addr, "repl_suspects");
    fprintf(stderr,
            "repl: n0 restarted: %s read %ld, n0 made %ld backups suspect "
            "and asked %ld drops by then\n",
            id, v, suspects, drops);
    CHECK(v == acked, "%s read %ld through n0, %ld acknowledged", id, v,
          acked);
    /* Failed over instead (n0 came back after its session ended): its
     * units are not its own at their epoch, nothing is suspect. */
    if (suspects > 0)
        CHECK(drops > 0,
              "n0 answered a read of %s before it asked the drop of any "
              "of its %ld suspect backups",
              id, suspects);
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
    tcase_add_test(tc, a_restarted_backup_is_dropped_at_its_first_refusal);
    tcase_add_test(tc, a_restarted_primary_logs_its_suspects_once_a_second);
    tcase_add_test(tc,
                   a_restarted_primary_answers_reads_once_its_suspects_are_out);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
