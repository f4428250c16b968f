/* Failover, end to end with a real ZooKeeper and real keeld processes
 * started with --replicas 3 (docs/cluster.md, "Failover"). Checked:
 *  - a primary killed with SIGKILL under a counter load through every
 *    node: once its session has expired, its units are served again by
 *    an in-sync backup promoted at shard_epoch + 1; every successful
 *    increment answers a value between the acknowledged count + 1 and
 *    that plus the increments whose fate was unknown (so none
 *    acknowledged is lost, before or after the failover), and so does
 *    every final count, read through every live node; the merged
 *    activation logs show no actor active on two nodes at once; the map
 *    never names a primary outside the in-sync set; the promoted
 *    primary's digest does not change under the reads that check the
 *    counts. The unavailability of each unit of the dead node is printed
 *    (first failing call to first success, and the longest call);
 *  - a primary stopped (SIGSTOP) past its session timeout: its units
 *    fail over, writes go on through the new primary; when it resumes it
 *    answers nothing from its old state: the calls that waited in its
 *    sockets, and new ones, either fail (EUNAVAIL, EINDOUBT, ...) or are
 *    answered with the new primary's counts.
 * Every wait is bounded; the checks are about order and outcomes, not
 * durations. On a failure the nodes' logs are printed. */
#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actlog.h"
#include "clmap.h"
#include "cluster.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define SHARDS 16
#define COUNTERS 24
#define CLIENT_MS 20000
#define NODES 3

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "clfail", "fo");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    /* a test that failed while ZooKeeper was paused must not leave it
     * paused for the next one */
    kill((pid_t)tu_cluster_zk_pid(&fx), SIGCONT);
    tu_cluster_teardown(&fx, SIGKILL);
}

static void actlog_path(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/n%d.act", fx.dir, i);
}

/* Nodes n0..n<nodes-1>, every unit on min(replicas, nodes) replicas in
 * sync, activation logs on. */
static void start_n(int nodes, int replicas)
{
    static char act[NODES][512];
    static const char *common[] = {"--repl-lag-ms", "1000", NULL};
    const char *per[NODES][3];
    const char *const *extra[NODES];
    int i;

    for (i = 0; i < nodes; i++) {
        actlog_path(i, act[i], sizeof act[i]);
        per[i][0] = "--activation-log";
        per[i][1] = act[i];
        per[i][2] = NULL;
        extra[i] = per[i];
    }
    tu_cluster_start_together(&fx, nodes, replicas, common, extra);
}

static void start3(void)
{
    start_n(NODES, 3);
}

static void counter_id(int j, char *id, size_t cap)
{
    snprintf(id, cap, "f%d", j);
}

static uint32_t shard_of(const char *id)
{
    return keel_shard_of("counter", id, strlen(id), SHARDS);
}

static const char *primary_of(const keel_shard_map *m, uint32_t s)
{
    return keel_map_primary(m, (uint32_t)keel_map_cap_index(m, ""), s);
}

/* The map as ZooKeeper holds it, checked: every unit with a primary has
 * it in its in-sync set. */
static void map_checked(keel_shard_map *m)
{
    uint32_t s;

    CHECK(tu_map_read(&fx, m) == 0, "no map");
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = tu_map_unit(m, "", s);
        CHECK(u != NULL && u->shard_epoch > 0 && u->nreplicas > 0 &&
                  keel_map_insync(u, 0),
              "shard %u: primary missing or outside the in-sync set", s);
    }
}

/* Whether a failed call may have run (its fate is unknown). */
static int in_doubt(int rc)
{
    return rc == KEEL_ECONN || rc == KEEL_ETIMEDOUT || rc == KEEL_EINDOUBT;
}

/* The counter's value through node i (retried for at most 20 s), or -1. */
static long get_via(int i, const char *id)
{
    keel_client *c = NULL;
    long v = -1;
    int tries;

    for (tries = 0; tries < 200 && v < 0; tries++) {
        char *reply = NULL;
        if (c == NULL &&
            keel_client_connect(fx.nodes[i].addr, CLIENT_MS, &c) != 0) {
            c = NULL;
            tu_sleep_ms(100);
            continue;
        }
        if (keel_client_call(c, KEEL_FRAME_CALL, "counter", id, strlen(id),
                             "get", 3, &reply, NULL) == 0)
            v = atol(reply);
        else
            tu_sleep_ms(100);
        free(reply);
    }
    if (c != NULL)
        keel_client_close(c);
    return v;
}

/* ------------------------------------------------------------- the load */

/* One counter as the load sees it. Its calls are sequential (one worker
 * owns it), and a call whose fate is unknown is decided before the next
 * one leaves (a forwarded call never starts past its deadline, which is
 * when its caller hears ETIMEDOUT): a success answering v means that
 * v - base - 1 of the pending ones took effect. */
struct ctr {
    long base;      /* the value the last success answered */
    long pend;      /* unknown fates since then */
    long acked;     /* successes */
    int bad;        /* a success outside [base + 1, base + 1 + pend] */
    long bad_v, bad_base, bad_pend;
    /* After the kill: the first failure, the first success of a call
     * sent after it, the longest call that ended after it. */
    double first_fail, recovered, longest;
    long fails[8];  /* after the kill: in doubt, EUNAVAIL, EDEADLINE,
                     * ENOTSENT, ESTOPPING, other */
};

static struct ctr ctrs[COUNTERS];
static volatile int stop_load;
static volatile int dead = -1;      /* the killed node, once killed */
static volatile double kill_at;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int fail_slot(int rc)
{
    switch (rc) {
    case KEEL_ECONN:
    case KEEL_ETIMEDOUT:
    case KEEL_EINDOUBT:
        return 0;
    case KEEL_EUNAVAIL:
        return 1;
    case KEEL_EDEADLINE:
        return 2;
    case KEEL_ENOTSENT:
        return 3;
    case KEEL_ESTOPPING:
        return 4;
    default:
        return 5;
    }
}

/* The load of counter j: one call at a time, through each live node in
 * turn. */
static void *worker(void *arg)
{
    int j = (int)(intptr_t)arg, round = 0, i;
    keel_client *cl[NODES] = {NULL};
    struct ctr *c = &ctrs[j];
    char id[16];

    counter_id(j, id, sizeof id);
    for (; !stop_load; round++) {
        uint8_t key[KEEL_REQUEST_KEY_LEN];
        char *reply = NULL;
        double sent, now;
        int rc;
        i = (j + round) % NODES;
        if (i == dead)
            i = (i + 1) % NODES;
        if (cl[i] == NULL &&
            keel_client_connect(fx.nodes[i].addr, CLIENT_MS, &cl[i]) != 0) {
            cl[i] = NULL;
            tu_sleep_ms(50);
            continue;
        }
        if (keel_client_new_key(key) != 0)
            abort();
        sent = tu_now_s();
        rc = keel_client_call_keyed(cl[i], KEEL_FRAME_CALL, key, "counter",
                                    id, strlen(id), "incr", 4, &reply, NULL);
        now = tu_now_s();
        pthread_mutex_lock(&mu);
        if (rc == 0) {
            long v = atol(reply);
            if (v < c->base + 1 || v > c->base + 1 + c->pend) {
                if (!c->bad) {
                    c->bad_v = v;
                    c->bad_base = c->base;
                    c->bad_pend = c->pend;
                }
                c->bad = 1;
            }
            c->base = v;
            c->pend = 0;
            c->acked++;
            if (kill_at > 0 && now - sent > c->longest)
                c->longest = now - sent;
            if (kill_at > 0 && sent >= kill_at && c->recovered == 0)
                c->recovered = now;
        } else {
            if (in_doubt(rc))
                c->pend++;
            if (kill_at > 0) {
                c->fails[fail_slot(rc)]++;
                if (c->first_fail == 0)
                    c->first_fail = now;
            }
            if (rc == KEEL_ECONN || rc == KEEL_ETIMEDOUT ||
                rc == KEEL_ENOTSENT) {
                keel_client_close(cl[i]);
                cl[i] = NULL;
            }
        }
        pthread_mutex_unlock(&mu);
        free(reply);
        if (rc != 0)
            tu_sleep_ms(20);
    }
    for (i = 0; i < NODES; i++)
        if (cl[i] != NULL)
            keel_client_close(cl[i]);
    return NULL;
}

static int sort_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ tests */

START_TEST(killed_primary_fails_over_under_load)
{
    pthread_t t[COUNTERS];
    keel_shard_map before, after;
    int owned[NODES] = {0}, victim = 0, i, j, survivors[2], ns = 0;
    int on_victim[COUNTERS] = {0}, touched[SHARDS] = {0};
    unsigned long long kill_ns;
    double unavail[COUNTERS], longest[COUNTERS];
    size_t nun = 0;
    char id[16];
    tu_actlog acts;

    start3();
    map_checked(&before);
    for (j = 0; j < COUNTERS; j++) {
        const char *p;
        counter_id(j, id, sizeof id);
        p = primary_of(&before, shard_of(id));
        touched[shard_of(id)] = 1;
        CHECK(p != NULL && p[0] == 'n', "shard of %s has no primary", id);
        owned[atoi(p + 1)]++;
    }
    for (i = 1; i < NODES; i++)
        if (owned[i] > owned[victim])
            victim = i;
    for (j = 0; j < COUNTERS; j++) {
        counter_id(j, id, sizeof id);
        on_victim[j] = atoi(primary_of(&before, shard_of(id)) + 1) == victim;
    }
    for (i = 0; i < NODES; i++)
        if (i != victim)
            survivors[ns++] = i;

    memset(ctrs, 0, sizeof ctrs);
    stop_load = 0;
    dead = -1;
    kill_at = 0;
    for (j = 0; j < COUNTERS; j++)
        ck_assert_int_eq(
            pthread_create(&t[j], NULL, worker, (void *)(intptr_t)j), 0);
    tu_sleep_ms(2000);

    /* n<victim> dies with the units it leads */
    pthread_mutex_lock(&mu);
    kill_at = tu_now_s();
    dead = victim;
    pthread_mutex_unlock(&mu);
    kill_ns = tu_realtime_ns();
    tu_keeld_stop(&fx.nodes[victim], SIGKILL);
    fprintf(stderr, "failover: killed n%d, primary of %d of %d counters\n",
            victim, owned[victim], COUNTERS);

    /* the load goes on until every counter of the dead node answered
     * again (at most 40 s), then 2 s more */
    for (i = 0; i < 400; i++) {
        int all = 1;
        pthread_mutex_lock(&mu);
        for (j = 0; j < COUNTERS; j++)
            if (on_victim[j] && ctrs[j].recovered == 0)
                all = 0;
        pthread_mutex_unlock(&mu);
        if (all)
            break;
        tu_sleep_ms(100);
    }
    tu_sleep_ms(2000);
    stop_load = 1;
    for (j = 0; j < COUNTERS; j++)
        pthread_join(t[j], NULL);

    for (j = 0; j < COUNTERS; j++) {
        struct ctr *c = &ctrs[j];
        counter_id(j, id, sizeof id);
        CHECK(!c->bad,
              "%s answered %ld after a success answering %ld and %ld "
              "increments of unknown fate: an acknowledged increment was "
              "lost, or one counted twice",
              id, c->bad_v, c->bad_base, c->bad_pend);
        CHECK(c->recovered > 0, "%s (on n%d: %d) never answered after the "
              "kill", id, victim, on_victim[j]);
        if (on_victim[j]) {
            unavail[nun] = c->recovered - kill_at;
            longest[nun] = c->longest;
            nun++;
            fprintf(stderr,
                    "failover: %s (shard %u): kill to first success %.2f "
                    "s, first failure to first success %.2f s, longest "
                    "call %.2f s; failures after the kill: in doubt %ld, "
                    "EUNAVAIL %ld, EDEADLINE %ld, ENOTSENT %ld, ESTOPPING "
                    "%ld, other %ld\n",
                    id, shard_of(id), c->recovered - kill_at,
                    c->first_fail > 0 ? c->recovered - c->first_fail : 0.0,
                    c->longest, c->fails[0], c->fails[1], c->fails[2],
                    c->fails[3], c->fails[4], c->fails[5]);
        }
    }
    if (nun > 0) {
        qsort(unavail, nun, sizeof unavail[0], sort_double);
        qsort(longest, nun, sizeof longest[0], sort_double);
        fprintf(stderr,
                "failover: %zu counters on the killed node, session "
                "timeout %d ms: unavailable (kill to first success) min "
                "%.2f median %.2f max %.2f s; longest call min %.2f "
                "median %.2f max %.2f s\n",
                nun, fx.session_ms, unavail[0], unavail[nun / 2],
                unavail[nun - 1], longest[0], longest[nun / 2],
                longest[nun - 1]);
    }

    /* the map: the dead node's units promoted from their in-sync sets */
    map_checked(&after);
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *ub = tu_map_unit(&before, "", (uint32_t)j);
        const keel_map_unit *ua = tu_map_unit(&after, "", (uint32_t)j);
        const char *pb = primary_of(&before, (uint32_t)j);
        const char *pa = primary_of(&after, (uint32_t)j);
        if (atoi(pb + 1) != victim)
            continue;
        CHECK(atoi(pa + 1) != victim, "shard %d still led by dead n%d", j,
              victim);
        CHECK(tu_map_in_sync(&before, ub, pa),
              "shard %d: %s was not in sync when promoted", j, pa);
        CHECK(ua->shard_epoch == ub->shard_epoch + 1 && ua->promoted,
              "shard %d: epoch %llu -> %llu, promoted %d", j,
              (unsigned long long)ub->shard_epoch,
              (unsigned long long)ua->shard_epoch, ua->promoted);
        CHECK(!tu_map_in_sync(&after, ua, pb),
              "shard %d: dead n%d still in sync", j, victim);
    }

    /* every final count, through every live node, within its bounds; the
     * promoted primaries' digests unchanged by those reads */
    {
        char d0[SHARDS][128];
        for (j = 0; j < SHARDS; j++) {
            d0[j][0] = '\0';
            if (touched[j] &&
                atoi(primary_of(&before, (uint32_t)j) + 1) == victim)
                tu_cluster_digest(&fx,
                                  atoi(primary_of(&after, (uint32_t)j) + 1),
                                  (uint32_t)j, d0[j], sizeof d0[j]);
        }
        for (j = 0; j < COUNTERS; j++)
            for (i = 0; i < ns; i++) {
                struct ctr *c = &ctrs[j];
                long v;
                counter_id(j, id, sizeof id);
                v = get_via(survivors[i], id);
                CHECK(v >= c->base && v <= c->base + c->pend,
                      "%s is %ld through n%d: the last success answered "
                      "%ld, %ld increments after it of unknown fate",
                      id, v, survivors[i], c->base, c->pend);
            }
        for (j = 0; j < SHARDS; j++) {
            char d1[128];
            if (d0[j][0] == '\0')
                continue;
            tu_cluster_digest(&fx, atoi(primary_of(&after, (uint32_t)j) + 1),
                              (uint32_t)j, d1, sizeof d1);
            CHECK(strncmp(d0[j], "digest ", 7) == 0 && strcmp(d0[j], d1) == 0,
                  "shard %d on its promoted primary: '%s' then '%s'", j,
                  d0[j], d1);
            fprintf(stderr, "failover: shard %d on %s: %s\n", j,
                    primary_of(&after, (uint32_t)j), d0[j]);
        }
    }
    keel_map_free(&before);
    keel_map_free(&after);

    /* no actor active on two nodes at once */
    tu_actlog_init(&acts);
    for (i = 0; i < NODES; i++) {
        char path[512];
        actlog_path(i, path, sizeof path);
        tu_actlog_parse(&acts, path, i, 0, 0, i == victim ? kill_ns : 0);
    }
    fprintf(stderr, "failover: %zu activations, %zu moves between nodes\n",
            acts.n, tu_actlog_check(&acts));
    tu_actlog_free(&acts);
}
END_TEST

/* A call sent to the stopped node before it stopped answering, on a
 * connection of its own, by a thread of its own. */
struct pending {
    pthread_t t;
    keel_client *c;
    const char *id, *op;
    int rc;
    long v;
    double done_at;
};

static void *pending_main(void *arg)
{
    struct pending *p = arg;
    char *reply = NULL;

    p->rc = keel_client_call(p->c, KEEL_FRAME_CALL, "counter", p->id,
                             strlen(p->id), p->op, strlen(p->op), &reply,
                             NULL);
    p->v = p->rc == 0 ? atol(reply) : -1;
    p->done_at = tu_now_s();
    free(reply);
    return NULL;
}

START_TEST(paused_primary_answers_nothing_stale)
{
    keel_shard_map before, after;
    struct pending pend[2];
    int victim, other, i, k, promoted = 0;
    long base = 0, v;
    char id[16] = "";
    double promoted_at = 0, stopped_at;

    start3();
    map_checked(&before);
    /* a counter, and the node that leads its unit */
    snprintf(id, sizeof id, "p0");
    victim = atoi(primary_of(&before, shard_of(id)) + 1);
    other = (victim + 1) % NODES;
    for (k = 0; k < 5; k++) {
        v = tu_cluster_counter(&fx, other, id, "incr");
        CHECK(v == base + 1, "%s answered %ld after %ld", id, v, base);
        base = v;
    }

    /* the primary stops; a read and a write wait in its sockets */
    for (k = 0; k < 2; k++) {
        memset(&pend[k], 0, sizeof pend[k]);
        CHECK(keel_client_connect(fx.nodes[victim].addr, 60000,
                                  &pend[k].c) == 0,
              "cannot connect to n%d", victim);
        pend[k].id = id;
        pend[k].op = k == 0 ? "get" : "incr";
    }
    CHECK(kill(fx.nodes[victim].pid, SIGSTOP) == 0, "SIGSTOP");
    stopped_at = tu_now_s();
    for (k = 0; k < 2; k++)
        ck_assert_int_eq(
            pthread_create(&pend[k].t, NULL, pending_main, &pend[k]), 0);

    /* its unit fails over (at most 30 s) */
    for (i = 0; i < 300 && !promoted; i++) {
        if (tu_map_read(&fx, &after) == 0) {
            const char *p = primary_of(&after, shard_of(id));
            promoted = p != NULL && atoi(p + 1) != victim;
            if (promoted) {
                const keel_map_unit *ub =
                    tu_map_unit(&before, "", shard_of(id));
                CHECK(tu_map_in_sync(&before, ub, p),
                      "%s promoted from outside the in-sync set", p);
                promoted_at = tu_now_s();
            }
            keel_map_free(&after);
        }
        if (!promoted)
            tu_sleep_ms(100);
    }
    CHECK(promoted, "the unit of %s never failed over from stopped n%d", id,
          victim);
    for (k = 0; k < 2; k++)
        CHECK(pend[k].done_at == 0, "the stopped node answered %s",
              pend[k].op);

    /* writes go on through the new primary */
    for (k = 0; k < 5; k++) {
        v = -1;
        for (i = 0; i < 100 && v < 0; i++) {
            v = tu_cluster_counter(&fx, other, id, "incr");
            if (v < 0)
                tu_sleep_ms(100);
        }
        CHECK(v == base + 1, "%s answered %ld after %ld, n%d stopped", id, v,
              base, victim);
        base = v;
    }

    /* it resumes: what it answers is the new primary's, or a failure */
    CHECK(kill(fx.nodes[victim].pid, SIGCONT) == 0, "SIGCONT");
    for (k = 0; k < 2; k++)
        pthread_join(pend[k].t, NULL);
    fprintf(stderr,
            "failover: stopped n%d, promoted after %.2f s; its waiting get "
            "ended %d (%ld), incr %d (%ld)\n",
            victim, promoted_at - stopped_at, pend[0].rc,
            pend[0].v, pend[1].rc, pend[1].v);
    CHECK(pend[0].rc != 0 || pend[0].v >= base,
          "the stopped primary answered a read with %ld, the count is %ld "
          "since the failover",
          pend[0].v, base);
    CHECK(pend[1].rc != 0 || pend[1].v >= base + 1,
          "the stopped primary answered an increment with %ld, the count "
          "is %ld since the failover",
          pend[1].v, base);
    if (pend[1].rc == 0)
        base = pend[1].v;
    for (k = 0; k < 2; k++)
        keel_client_close(pend[k].c);
    /* new calls to it, right after it resumed */
    for (k = 0; k < 5; k++) {
        v = tu_cluster_counter(&fx, victim, id, "get");
        CHECK(v < 0 || v >= base, "resumed n%d read %ld, the count is %ld",
              victim, v, base);
        tu_sleep_ms(100);
    }
    /* and through every node at the end: the count, or one more if the
     * increment that waited in the stopped node took effect unseen */
    for (i = 0; i < NODES; i++) {
        long want_max = base + (pend[1].rc != 0 && in_doubt(pend[1].rc));
        v = -1;
        for (k = 0; k < 200 && v < 0; k++) {
            fx.quiet = 1;
            v = tu_cluster_counter(&fx, i, id, "get");
            fx.quiet = 0;
            if (v < 0)
                tu_sleep_ms(100);
        }
        CHECK(v >= base && v <= want_max, "%s is %ld through n%d, want %ld..%ld",
              id, v, i, base, want_max);
    }
    map_checked(&after);
    keel_map_free(&after);
    keel_map_free(&before);
}
END_TEST

/* The epoch gap: a unit handed off (n0 drained) keeps its in-sync backup,
 * which has recorded only the old primary's epoch; its new primary dies
 * before writing anything at its own. The backup is promoted two epochs
 * above what its store recorded, and keeps its records all the same (the
 * map says it was promoted from the in-sync set): its digest is the one
 * it had as a backup, and every counter answers its acknowledged count. */
START_TEST(promoted_backup_keeps_its_records_across_an_epoch_gap)
{
    keel_shard_map m, after;
    long acked[COUNTERS] = {0};
    char before[SHARDS][128], id[16], *out = NULL, *err = NULL;
    int j, k, code, kept = 0;

    start3();
    for (k = 0; k < 3; k++)
        for (j = 0; j < COUNTERS; j++) {
            long v;
            counter_id(j, id, sizeof id);
            v = tu_cluster_counter(&fx, 1, id, "incr");
            CHECK(v == acked[j] + 1, "%s answered %ld after %ld", id, v,
                  acked[j]);
            acked[j] = v;
        }
    CHECK(tu_keel(fx.nodes[1].addr, &out, &err, "node", "drain", "n0",
                  NULL) == 0,
          "drain n0: %s", err != NULL ? err : "");
    free(out);
    free(err);
    code = tu_keeld_stop(&fx.nodes[0], SIGTERM);
    CHECK(code == 0, "drained n0 exited with %d", code);
    /* every unit on n1 and n2 now, n2 in sync wherever n1 leads */
    map_checked(&m);
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)j);
        before[j][0] = '\0';
        if (strcmp(primary_of(&m, (uint32_t)j), "n1") != 0)
            continue;
        CHECK(tu_map_in_sync(&m, u, "n2"), "shard %d: n2 out of sync", j);
        tu_cluster_digest(&fx, 2, (uint32_t)j, before[j], sizeof before[j]);
        CHECK(strncmp(before[j], "digest ", 7) == 0, "digest: '%s'",
              before[j]);
    }
    tu_keeld_stop(&fx.nodes[1], SIGKILL);
    /* n2 alone: every unit it backed up fails over to it (at most 30 s) */
    for (k = 0; k < 300; k++) {
        int done = 1;
        CHECK(tu_map_read(&fx, &after) == 0, "no map");
        for (j = 0; j < SHARDS; j++)
            if (strcmp(primary_of(&after, (uint32_t)j), "n2") != 0)
                done = 0;
        if (done)
            break;
        keel_map_free(&after);
        tu_sleep_ms(100);
    }
    CHECK(k < 300, "n2 did not take every unit over");
    for (j = 0; j < SHARDS; j++) {
        const keel_map_unit *ub = tu_map_unit(&m, "", (uint32_t)j);
        const keel_map_unit *ua = tu_map_unit(&after, "", (uint32_t)j);
        char now[128];
        if (before[j][0] == '\0')
            continue;
        CHECK(ua->shard_epoch == ub->shard_epoch + 1 && ua->promoted,
              "shard %d: epoch %llu -> %llu, promoted %d", j,
              (unsigned long long)ub->shard_epoch,
              (unsigned long long)ua->shard_epoch, ua->promoted);
        for (k = 0; k < 100; k++) { /* its acquire may be under way */
            tu_cluster_digest(&fx, 2, (uint32_t)j, now, sizeof now);
            if (strcmp(now, before[j]) == 0)
                break;
            tu_sleep_ms(100);
        }
        CHECK(strcmp(now, before[j]) == 0,
              "shard %d on n2: '%s' as a backup, '%s' promoted", j,
              before[j], now);
        kept++;
    }
    CHECK(kept > 0, "n1 led no unit");
    for (j = 0; j < COUNTERS; j++) {
        long v;
        counter_id(j, id, sizeof id);
        v = get_via(2, id);
        CHECK(v == acked[j], "%s is %ld on n2, %ld acknowledged", id, v,
              acked[j]);
    }
    fprintf(stderr, "failover: %d units promoted across an epoch gap kept "
                    "their records\n", kept);
    keel_map_free(&m);
    keel_map_free(&after);
}
END_TEST

/* The read rule: a read of a unit leaves only once each in-sync backup
 * confirmed the primary's epoch after the read ran. With the backup
 * paused (SIGSTOP), a `get` through the primary is not answered while the
 * map shows the backup in sync; it is answered, with the acknowledged
 * count, once the primary had it dropped. */
START_TEST(read_waits_for_a_paused_backup)
{
    keel_client *q;
    keel_shard_map m;
    char id[16] = "", owner[64], *out = NULL, *err = NULL;
    int j, rc, polls, answered = 0;
    long v, acked = 0;
    keel_frame f;
    double sent;
    uint32_t shard;

    start_n(2, 2);
    for (j = 0; j < 64 && id[0] == '\0'; j++) {
        char cand[16];
        snprintf(cand, sizeof cand, "q%d", j);
        tu_cluster_owner_of(&fx, 0, "counter", cand, owner, sizeof owner);
        if (strcmp(owner, "n0") == 0)
            snprintf(id, sizeof id, "%s", cand);
    }
    CHECK(id[0] != '\0', "no counter owned by n0");
    shard = shard_of(id);
    for (j = 0; j < 3; j++) {
        v = tu_cluster_counter(&fx, 0, id, "incr");
        CHECK(v == acked + 1, "%s answered %ld after %ld", id, v, acked);
        acked = v;
    }
    v = tu_cluster_counter(&fx, 0, id, "get");
    CHECK(v == acked, "%s read %ld, %ld acknowledged", id, v, acked);

    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGSTOP), 0);
    CHECK(keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &q) == 0,
          "cannot connect to n0");
    /* The hellos first: then the socket turns readable for the answer. */
    CHECK(keel_client_hello(q, NULL, 0) == 0, "no hello from n0");
    ck_assert_int_eq(keel_client_queue(q, KEEL_FRAME_CALL, 1, "counter", id,
                                       strlen(id), "get", 3),
                     0);
    ck_assert_int_eq(keel_client_flush(q), 0);
    sent = tu_now_s();
    for (polls = 0; polls < 600 && !answered; polls++) {
        struct pollfd p = {keel_client_fd(q), POLLIN, 0};
        const keel_map_unit *u;
        int ready = keel_client_pending(q) || poll(&p, 1, 50) > 0;
        CHECK(tu_map_read(&fx, &m) == 0, "no map");
        u = tu_map_unit(&m, "", shard);
        if (ready) {
            rc = keel_client_recv(q, &f);
            CHECK(rc == 0, "receiving the answer: %s", keel_strerror(rc));
            answered = 1;
            CHECK(!tu_map_in_sync(&m, u, "n1"),
                  "the read was answered while the map showed the paused "
                  "backup n1 in sync (after %.2f s)",
                  tu_now_s() - sent);
            CHECK(f.kind == KEEL_FRAME_REPLY,
                  "the read failed (kind %d) once n1 was dropped", f.kind);
            v = strtol((const char *)f.body, NULL, 10);
            CHECK(v == acked, "read %ld, %ld acknowledged", v, acked);
        }
        keel_map_free(&m);
    }
    CHECK(answered, "no answer within %d polls while n1 is paused", polls);
    fprintf(stderr, "failover: a read waited %.2f s for the paused backup "
                    "to leave the in-sync set\n",
            tu_now_s() - sent);
    keel_client_close(q);
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGCONT), 0);
    /* reads of a unit alone in sync need no round */
    v = tu_cluster_counter(&fx, 0, id, "get");
    CHECK(v == acked, "%s read %ld, %ld acknowledged", id, v, acked);
    CHECK(tu_keel(fx.nodes[0].addr, &out, &err, "stat", NULL) == 0 &&
              out != NULL && strstr(out, "repl_confirms ") != NULL &&
              strstr(out, "repl_confirms 0\n") == NULL,
          "keel stat shows no confirm round: %s", out ? out : "");
    free(out);
    free(err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_failover");
    TCase *tc = tcase_create("cluster_failover");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, killed_primary_fails_over_under_load);
    tcase_add_test(tc, paused_primary_answers_nothing_stale);
    tcase_add_test(tc, promoted_backup_keeps_its_records_across_an_epoch_gap);
    tcase_add_test(tc, read_waits_for_a_paused_backup);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
