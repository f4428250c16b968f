/* Moving a unit's primary onto an in-sync backup (coordinator/promote.h,
 * docs/cluster.md "A move onto an in-sync backup"): the check as pure
 * logic, then whole agents on the in-memory ZooKeeper whose release hook
 * does what the runtime does: by the map the releasing node applied, a
 * recipient in the unit's in-sync set keeps its own copy (no stream), any
 * other is streamed the unit.
 *
 * A model follows every unit's content: a write reaches the primary and
 * the backups its applied map has in sync; a stream copies the sender's
 * content to the recipient; a release empties the sender (its purge). A
 * kept copy must already be the sender's, and an acquire must find the
 * unit's latest content on the acquiring node: a failure of either means
 * a move lost acknowledged writes. After every step the map is checked:
 * every unit's primary is in its in-sync set, and no two nodes publish
 * PRIMARY for a unit at one shard_epoch. Deterministic: events are
 * delivered only when told (in order, or shuffled with a seed), on the
 * fake's clock. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/layout.h"
#include "coordinator/nodestate.h"
#include "coordinator/promote.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk_fake.h"
#include "fakeclu.h"
#include "keel.h"
#include "testutil.h"

#define SHARDS 24
#define TIMEOUT 3000
#define MAXN 4
#define FORMATION 3000

/* ------------------------------------------------------- the pure check */

/* A map of one capability "" with 2 shards over nodes a, b, c, d:
 * shard 0 primary a at epoch 5, backups b (in sync) and c (out of
 * sync), target `target`; shard 1 never owned. */
static void map_of(keel_shard_map *m, const char *target, int b_store)
{
    keel_map_unit *u;

    memset(m, 0, sizeof *m);
    ck_assert_int_eq(keel_map_init(m, 2), 0);
    ck_assert_int_ge(keel_map_add_cap(m, ""), 0);
    ck_assert_int_ge(keel_map_add_node(m, "a"), 0);
    ck_assert_int_ge(keel_map_add_node(m, "b"), 0);
    ck_assert_int_ge(keel_map_add_node(m, "c"), 0);
    ck_assert_int_ge(keel_map_add_node(m, "d"), 0);
    ck_assert_int_eq(keel_map_set_store(m, (uint32_t)keel_map_node_index(m, "a"),
                                        "000000000000000000000000000000a1"),
                     0);
    if (b_store)
        ck_assert_int_eq(
            keel_map_set_store(m, (uint32_t)keel_map_node_index(m, "b"),
                               "000000000000000000000000000000b1"),
            0);
    u = keel_map_unit_at(m, 0, 0);
    u->shard_epoch = 5;
    u->replicas[0] = (uint16_t)keel_map_node_index(m, "a");
    u->replicas[1] = (uint16_t)keel_map_node_index(m, "b");
    u->replicas[2] = (uint16_t)keel_map_node_index(m, "c");
    u->nreplicas = 3;
    u->insync = 1 | 2;
    u->target = target != NULL ? (uint16_t)keel_map_node_index(m, target)
                               : KEEL_MAP_NO_NODE;
}

START_TEST(test_promote_check)
{
    keel_shard_map m;

    map_of(&m, "b", 1);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "a", "b"),
                     KEEL_PROMOTE_OK);
    /* the map must say all of it, at that very epoch */
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 4, "a", "b"),
                     KEEL_PROMOTE_NOT_PRIMARY);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 6, "a", "b"),
                     KEEL_PROMOTE_NOT_PRIMARY);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "b", "b"),
                     KEEL_PROMOTE_NOT_PRIMARY);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "a", "c"),
                     KEEL_PROMOTE_NOT_TARGET);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "a", "zz"),
                     KEEL_PROMOTE_NOT_TARGET);
    ck_assert_int_eq(keel_promote_check(&m, "", 1, 0, "a", "b"),
                     KEEL_PROMOTE_NOT_PRIMARY);
    ck_assert_int_eq(keel_promote_check(&m, "gpu", 0, 5, "a", "b"),
                     KEEL_PROMOTE_NO_UNIT);
    ck_assert_int_eq(keel_promote_check(&m, "", 2, 5, "a", "b"),
                     KEEL_PROMOTE_NO_UNIT);
    ck_assert_int_eq(keel_promote_check(NULL, "", 0, 5, "a", "b"),
                     KEEL_PROMOTE_NO_UNIT);
    keel_map_free(&m);

    /* c is listed out of sync; d is not listed */
    map_of(&m, "c", 1);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "a", "c"),
                     KEEL_PROMOTE_OUT_OF_SYNC);
    keel_map_free(&m);
    map_of(&m, "d", 1);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "a", "d"),
                     KEEL_PROMOTE_NOT_LISTED);
    keel_map_free(&m);
    /* no move under way: nothing to hand over */
    map_of(&m, NULL, 1);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "a", "b"),
                     KEEL_PROMOTE_NOT_TARGET);
    keel_map_free(&m);
    /* in sync without a recorded store (never written so by the
     * controller): streamed all the same */
    map_of(&m, "b", 0);
    ck_assert_int_eq(keel_promote_check(&m, "", 0, 5, "a", "b"),
                     KEEL_PROMOTE_NO_STORE);
    keel_map_free(&m);
    ck_assert_str_eq(keel_promote_why_name(KEEL_PROMOTE_OUT_OF_SYNC),
                     "out of sync");
    ck_assert_str_eq(keel_promote_why_name(99), "unknown");
}
END_TEST

/* ------------------------------------------------------------- agents */

typedef struct prel {
    uint32_t shard;
    uint64_t epoch;
    char to[KEEL_NAME_MAX + 1];
} prel;

typedef struct tnode {
    keel_cluster *c;
    char name[16];
    char store[KEEL_MAP_STORE_HEX + 1];
    int delay;       /* releases wait for release_pending() */
    prel pending[SHARDS];
    size_t npending;
} tnode;

static keel_zk_fake *F;
static tnode N[MAXN];

/* The model: content versions per node and unit (-1: nothing), and the
 * unit's latest acknowledged content. */
static long ver[MAXN][SHARDS];
static long truth[SHARDS];
static int keeps, streams, errors;

static int idx_of(const char *name)
{
    int i;

    for (i = 0; i < MAXN; i++)
        if (N[i].c != NULL && strcmp(N[i].name, name) == 0)
            return i;
    return -1;
}

/* What the runtime does once the unit is quiet: keep or stream, decided
 * by the map this node applied now; then the purge and the report. */
static void finish(tnode *n, uint32_t shard, uint64_t epoch, const char *to)
{
    int from = (int)(n - N), t = idx_of(to);
    const char *self = n->name;

    if (keel_promote_check(keel_cluster_map(n->c), "", shard, epoch, self,
                           to) == KEEL_PROMOTE_OK) {
        keeps++;
        if (t < 0 || ver[t][shard] != ver[from][shard])
            errors++; /* kept a copy that is not the sender's */
    } else {
        streams++;
        if (t >= 0)
            ver[t][shard] = ver[from][shard];
    }
    ver[from][shard] = -1;
    ck_assert_int_eq(keel_cluster_released(n->c, "", shard, epoch, to), 0);
}

static void on_release(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, const char *to, void *data)
{
    tnode *n = data;
    size_t i;

    (void)c;
    ck_assert_str_eq(cap, "");
    for (i = 0; i < n->npending; i++)
        if (n->pending[i].shard == shard)
            break;
    if (i < n->npending) {
        if (to == NULL) {
            n->pending[i] = n->pending[--n->npending];
            ck_assert_int_eq(keel_cluster_kept(n->c, cap, shard, epoch), 0);
        } else {
            snprintf(n->pending[i].to, sizeof n->pending[i].to, "%s", to);
            n->pending[i].epoch = epoch;
        }
        return;
    }
    if (to == NULL) {
        ck_assert_int_eq(keel_cluster_kept(n->c, cap, shard, epoch), 0);
        return;
    }
    if (!n->delay) {
        finish(n, shard, epoch, to);
        return;
    }
    ck_assert_uint_lt(n->npending, SHARDS);
    n->pending[n->npending].shard = shard;
    n->pending[n->npending].epoch = epoch;
    snprintf(n->pending[n->npending].to, sizeof n->pending[0].to, "%s", to);
    n->npending++;
}

static void on_acquire(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, void *data)
{
    tnode *n = data;

    if (ver[n - N][shard] != truth[shard])
        errors++; /* serving without the unit's latest content */
    ck_assert_int_eq(keel_cluster_acquired(c, cap, shard, epoch), 0);
}

static void mk(int i)
{
    keel_cluster_options o;
    tnode *n = &N[i];
    char addr[32];
    keel_zk *zk;

    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "node-%c", 'a' + i);
    snprintf(n->store, sizeof n->store, "%032x", 0xb0 + i);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", 7100 + i);
    keel_cluster_options_init(&o);
    o.cluster = "test";
    o.node = n->name;
    o.address = addr;
    o.shard_count = SHARDS;
    o.session_timeout_ms = TIMEOUT;
    o.replicas = 3;
    o.store_id = n->store;
    o.hooks.data = n;
    o.hooks.release = on_release;
    o.hooks.acquire = on_acquire;
    ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
    ck_assert_int_eq(keel_cluster_create(NULL, &o, zk, &n->c), 0);
    ck_assert_int_eq(keel_cluster_start(n->c), 0);
}

static void kill_node(int i)
{
    keel_cluster_destroy(N[i].c);
    N[i].c = NULL;
}

static keel_cluster *cluster_at(size_t i)
{
    return N[i].c;
}

static void settle(void)
{
    tu_fake_settle(F, cluster_at, MAXN, 10000);
}

static void advance(uint64_t ms)
{
    tu_fake_advance(F, ms, cluster_at, MAXN, 10000);
}

static void release_pending(int i)
{
    tnode *n = &N[i];

    while (n->npending > 0) {
        prel p = n->pending[--n->npending];
        finish(n, p.shard, p.epoch, p.to);
    }
}

static void setup(void)
{
    F = keel_zk_fake_create();
    memset(N, 0, sizeof N);
    memset(ver, 0, sizeof ver);
    memset(truth, 0, sizeof truth);
    keeps = streams = errors = 0;
}

static void teardown(void)
{
    int i;

    for (i = 0; i < MAXN; i++)
        if (N[i].c != NULL)
            kill_node(i);
    keel_zk_fake_destroy(F);
}

static keel_shard_map zk_map(void)
{
    return tu_fake_map(F, "/keel/test/map");
}

static const keel_map_unit *unit(const keel_shard_map *m, uint32_t s)
{
    int ci = keel_map_cap_index(m, "");

    ck_assert_int_ge(ci, 0);
    return keel_map_unit_at(m, (uint32_t)ci, s);
}

static int insync(const keel_shard_map *m, uint32_t s, const char *name)
{
    int idx = keel_map_node_index(m, name);

    return idx >= 0 &&
           keel_map_insync(unit(m, s), keel_map_replica_pos(unit(m, s),
                                                            (uint16_t)idx));
}

static const char *primary(const keel_shard_map *m, uint32_t s)
{
    const keel_map_unit *u = unit(m, s);

    return u->nreplicas > 0 ? m->nodes[u->replicas[0]] : "";
}

/* The map's invariants, and no two live nodes publishing PRIMARY for one
 * unit at one shard_epoch. */
static keel_shard_map checked_map(void)
{
    keel_shard_map m = zk_map();
    uint32_t s;
    int i, j;

    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, s);
        if (u->shard_epoch > 0)
            ck_assert(keel_map_insync(u, 0));
    }
    for (i = 0; i < MAXN; i++)
        for (j = i + 1; j < MAXN; j++) {
            char pi[128], pj[128];
            static uint8_t bi[1 << 16], bj[1 << 16];
            size_t li = sizeof bi, lj = sizeof bj;
            keel_node_state si, sj;
            size_t k;
            if (N[i].c == NULL || N[j].c == NULL)
                continue;
            snprintf(pi, sizeof pi, "/keel/test/nodes/%s/state", N[i].name);
            snprintf(pj, sizeof pj, "/keel/test/nodes/%s/state", N[j].name);
            if (keel_zk_fake_get(F, pi, bi, &li, NULL) != 0 ||
                keel_zk_fake_get(F, pj, bj, &lj, NULL) != 0)
                continue;
            ck_assert_int_eq(keel_node_state_decode(bi, li, &si), 0);
            ck_assert_int_eq(keel_node_state_decode(bj, lj, &sj), 0);
            for (k = 0; k < si.n; k++) {
                const keel_state_entry *a = &si.entries[k];
                const keel_state_entry *b =
                    keel_node_state_find(&sj, si.caps[a->cap], a->shard);
                if (b != NULL && a->role == KEEL_ROLE_PRIMARY &&
                    b->role == KEEL_ROLE_PRIMARY)
                    ck_assert_uint_ne(a->shard_epoch, b->shard_epoch);
            }
            keel_node_state_free(&si);
            keel_node_state_free(&sj);
        }
    return m;
}

/* One acknowledged write to every unit: on its primary and on the
 * backups the primary's applied map has in sync (what the commit rule
 * waits for). */
static void write_all(void)
{
    keel_shard_map m = zk_map();
    uint32_t s;

    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, s);
        keel_replica_ref refs[KEEL_MAP_MAX_REPLICAS];
        size_t k, nb;
        int p = idx_of(primary(&m, s));
        if (p < 0 || u->target != KEEL_MAP_NO_NODE)
            continue;
        truth[s]++;
        ver[p][s] = truth[s];
        nb = keel_cluster_insync_backups(N[p].c, "", s, u->shard_epoch, refs,
                                         KEEL_MAP_MAX_REPLICAS);
        for (k = 0; k < nb; k++) {
            int b = idx_of(refs[k].name);
            if (b >= 0)
                ver[b][s] = truth[s];
        }
    }
    keel_map_free(&m);
}

/* Three nodes, every unit on the three in sync, and a write to each. */
static void start3(void)
{
    mk(0);
    settle();
    mk(1);
    mk(2);
    settle();
    advance(FORMATION);
    write_all();
}

/* The units node `name` leads in m. */
static int led_by(const keel_shard_map *m, const char *name, int *led)
{
    uint32_t s;
    int n = 0;

    for (s = 0; s < SHARDS; s++) {
        led[s] = strcmp(primary(m, s), name) == 0;
        n += led[s];
    }
    return n;
}

/* After node `gone` left: each unit it led is at the next epoch on a
 * node that was in sync before, with the in-sync backups that stay
 * listed still in sync. */
static void check_moved(const keel_shard_map *before,
                        const keel_shard_map *after, const int *led,
                        const char *gone)
{
    uint32_t s;
    int r;

    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(before, s), *ua = unit(after, s);
        const char *p = primary(after, s);
        ck_assert_str_ne(p, gone);
        ck_assert_uint_eq(ua->target, KEEL_MAP_NO_NODE);
        if (!led[s])
            continue;
        ck_assert(insync(before, s, p));
        ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch + 1);
        for (r = 1; r < ua->nreplicas; r++) {
            const char *b = after->nodes[ua->replicas[r]];
            if (strcmp(b, gone) != 0 && insync(before, s, b))
                ck_assert(keel_map_insync(ua, r));
        }
        ck_assert(!insync(after, s, gone));
    }
}

/* A drain moves each of the node's units onto an in-sync backup: kept,
 * never streamed, nothing acknowledged lost, at shard_epoch + 1 with the
 * other in-sync backup still in sync. */
START_TEST(test_drain_keeps_in_sync_copies)
{
    keel_shard_map before, after;
    int led[SHARDS], nled;

    start3();
    before = checked_map();
    nled = led_by(&before, "node-c", led);
    ck_assert_int_gt(nled, 0);
    ck_assert_int_eq(keel_cluster_drain(N[0].c, "node-c"), 0);
    settle();
    after = checked_map();
    check_moved(&before, &after, led, "node-c");
    ck_assert_int_eq(keeps, nled);
    ck_assert_int_eq(streams, 0);
    ck_assert_int_eq(errors, 0);
    /* the new primaries' backups are in sync: writes reach them */
    write_all();
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A recipient out of sync is streamed the unit, and only the in-sync
 * backups (none here) stay in sync after the move. */
START_TEST(test_out_of_sync_recipient_is_streamed)
{
    keel_shard_map before, after;
    int led[SHARDS], nled;
    uint32_t s;

    start3();
    before = checked_map();
    nled = led_by(&before, "node-c", led);
    ck_assert_int_gt(nled, 0);
    /* node-c drops both its backups from the units it leads... */
    for (s = 0; s < SHARDS; s++)
        if (led[s]) {
            ck_assert_int_eq(keel_cluster_request_drop(
                                 N[2].c, "", s, unit(&before, s)->shard_epoch,
                                 "node-a"),
                             0);
            ck_assert_int_eq(keel_cluster_request_drop(
                                 N[2].c, "", s, unit(&before, s)->shard_epoch,
                                 "node-b"),
                             0);
        }
    settle();
    keel_map_free(&before);
    before = checked_map();
    for (s = 0; s < SHARDS; s++)
        if (led[s])
            ck_assert(!insync(&before, s, "node-a") &&
                      !insync(&before, s, "node-b"));
    write_all(); /* ...and writes without them */
    ck_assert_int_eq(keel_cluster_drain(N[0].c, "node-c"), 0);
    settle();
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ua = unit(&after, s);
        if (!led[s])
            continue;
        ck_assert_uint_eq(ua->shard_epoch, unit(&before, s)->shard_epoch + 1);
        /* the recipient alone is in sync */
        ck_assert(keel_map_insync(ua, 0));
        ck_assert_uint_eq(ua->insync, 1);
    }
    ck_assert_int_eq(keeps, 0);
    ck_assert_int_eq(streams, nled);
    ck_assert_int_eq(errors, 0);
    write_all();
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* The same drain with every delivery shuffled (five seeds) and the
 * releases made late, in one go, after the targets were seen: the map
 * the release decides on may be older or newer than the controller's;
 * still no write is lost, and every move ends on an in-sync backup. */
START_TEST(test_drain_reordered)
{
    uint64_t seed;

    for (seed = 1; seed <= 5; seed++) {
        keel_shard_map before, after;
        int led[SHARDS], nled;
        if (seed > 1) {
            teardown();
            setup();
        }
        start3();
        before = checked_map();
        nled = led_by(&before, "node-c", led);
        ck_assert_int_gt(nled, 0);
        N[2].delay = 1;
        keel_zk_fake_shuffle(F, seed);
        ck_assert_int_eq(keel_cluster_drain(N[(int)seed % 2].c, "node-c"),
                         0);
        settle();
        release_pending(2);
        settle();
        keel_zk_fake_shuffle(F, 0);
        settle();
        after = checked_map();
        check_moved(&before, &after, led, "node-c");
        ck_assert_int_eq(keeps, nled);
        ck_assert_int_eq(streams, 0);
        ck_assert_int_eq(errors, 0);
        write_all();
        keel_map_free(&before);
        keel_map_free(&after);
    }
}
END_TEST

/* The controller dies while node-c's releases are still to come (the
 * targets are in the map): the next controller finishes every move from
 * the map and the nodes' states, onto the in-sync backup that is left,
 * without a stream. */
START_TEST(test_drain_new_controller)
{
    keel_shard_map before, mid, after;
    int led[SHARDS], nled, ctl = -1, other = -1, i;
    uint32_t s;

    start3();
    for (i = 0; i < 2; i++)
        if (keel_cluster_is_controller(N[i].c))
            ctl = i;
    ck_assert_int_ge(ctl, 0); /* node-a, the first */
    other = 1 - ctl;
    before = checked_map();
    nled = led_by(&before, "node-c", led);
    ck_assert_int_gt(nled, 0);
    N[2].delay = 1;
    ck_assert_int_eq(keel_cluster_drain(N[other].c, "node-c"), 0);
    settle();
    mid = checked_map();
    for (s = 0; s < SHARDS; s++)
        if (led[s])
            ck_assert_uint_ne(unit(&mid, s)->target, KEEL_MAP_NO_NODE);
    ck_assert_uint_gt(N[2].npending, 0);
    kill_node(ctl);
    advance(TIMEOUT * 2);
    ck_assert(keel_cluster_is_controller(N[other].c));
    release_pending(2);
    settle();
    advance(1000);
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ua = unit(&after, s);
        if (!led[s])
            continue;
        /* the one node left that is not leaving */
        ck_assert_str_eq(primary(&after, s), N[other].name);
        ck_assert_uint_eq(ua->shard_epoch, unit(&before, s)->shard_epoch + 1);
        ck_assert_uint_eq(ua->target, KEEL_MAP_NO_NODE);
    }
    ck_assert_int_eq(keeps, nled);
    ck_assert_int_eq(streams, 0);
    ck_assert_int_eq(errors, 0);
    keel_map_free(&before);
    keel_map_free(&mid);
    keel_map_free(&after);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("coord_promote");
    TCase *tc = tcase_create("promote");

    tcase_add_test(tc, test_promote_check);
    suite_add_tcase(s, tc);
    tc = tcase_create("agents");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_drain_keeps_in_sync_copies);
    tcase_add_test(tc, test_out_of_sync_recipient_is_streamed);
    tcase_add_test(tc, test_drain_reordered);
    tcase_add_test(tc, test_drain_new_controller);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    keel_log_set_level(KEEL_LOG_WARN);
    return tu_run_suite(suite());
}
