/* Cluster mode end to end on the in-memory ZooKeeper: bootstrap and the
 * shard-count check, membership and incarnations, election and controller
 * epochs, map publication and convergence through handoffs, self-fencing,
 * session expiry and rejoining, dead owners, a controller deposed in the
 * middle of a move, and a map write whose outcome was lost. Deterministic:
 * the fake delivers events only when told, and time is the fake's. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/controller.h"
#include "coordinator/layout.h"
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk_fake.h"
#include "fakeclu.h"
#include "keel.h"
#include "testutil.h"

#define SHARDS 64
#define TIMEOUT 3000

typedef struct rel {
    char cap[KEEL_NAME_MAX + 1];
    uint32_t shard;
    uint64_t epoch;
    char to[KEEL_NAME_MAX + 1]; /* the destination last given */
    int stored;                 /* `to` stored the stream: no way back */
} rel;

typedef struct tnode {
    keel_cluster *c;
    char name[16];
    int fenced_calls, last_fenced, expired_calls;
    int delay_release;
    int release_calls, drop_calls;
    int members_calls;  /* the members hook: how often */
    size_t members_seen; /* and the view's size at the last call */
    rel pending[1024 * 4];
    size_t npending;
} tnode;

static keel_zk_fake *F;
static tnode N[6];

/* A model of where each unit's data is (default capability), for the
 * tests of moves that change course: a completed release moves it to its
 * recipient, and an acquire (hook mode 2) must find it on the acquiring
 * node. A node's "store" survives its restarts: what it handed over,
 * recorded with the purge, and the fence that purge raised. */
static int track_data;
static char holder[SHARDS][16];
static struct {
    uint64_t epoch; /* 0: nothing handed over */
    char to[16];
} handed[6][SHARDS];
static int data_errors;

static int node_index(const char *name)
{
    return name[0] == 'n' && strlen(name) == 6 ? name[5] - 'a' : -1;
}

/* The runtime's end of a release: the recipient stored the unit, this
 * node purged it (recording where it went), and reports it. */
static int finish_release(tnode *n, const char *cap, uint32_t shard,
                          uint64_t epoch, const char *to)
{
    int rc = keel_cluster_released(n->c, cap, shard, epoch, to);

    if (track_data && cap[0] == '\0' && shard < SHARDS) {
        handed[n - N][shard].epoch = epoch;
        if (snprintf(handed[n - N][shard].to, sizeof handed[0][0].to, "%s",
                     to) >= (int)sizeof handed[0][0].to)
            data_errors++; /* a name longer than the table holds */
        if (strcmp(holder[shard], n->name) != 0)
            data_errors++; /* streamed what it did not have */
        if (snprintf(holder[shard], sizeof holder[0], "%s", to) >=
            (int)sizeof holder[0])
            data_errors++;
    }
    return rc;
}

static rel *pending_find(tnode *n, const char *cap, uint32_t shard)
{
    size_t i;

    for (i = 0; i < n->npending; i++)
        if (n->pending[i].shard == shard && strcmp(n->pending[i].cap, cap) == 0)
            return &n->pending[i];
    return NULL;
}

/* The runtime's side, as far as the coordinator sees it: a delayed
 * release has not streamed yet, so it follows a new destination, and a
 * call-off keeps the unit. */
static void on_release(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, const char *to, void *data)
{
    tnode *n = data;
    rel *p = pending_find(n, cap, shard);

    n->release_calls++;
    if (p != NULL) {
        ck_assert_uint_eq(p->epoch, epoch);
        if (p->stored)
            return; /* finishes to where the data went */
        if (to != NULL) {
            snprintf(p->to, sizeof p->to, "%s", to);
            return;
        }
        *p = n->pending[--n->npending];
        ck_assert_int_eq(keel_cluster_kept(c, cap, shard, epoch), 0);
        return;
    }
    ck_assert_ptr_nonnull(to);
    if (track_data && cap[0] == '\0' && shard < SHARDS &&
        handed[n - N][shard].epoch == epoch) {
        /* purged before a restart: report where it went */
        ck_assert_int_eq(keel_cluster_released(c, cap, shard, epoch,
                                               handed[n - N][shard].to),
                         0);
        return;
    }
    if (!n->delay_release) {
        ck_assert_int_eq(finish_release(n, cap, shard, epoch, to), 0);
        return;
    }
    ck_assert_uint_lt(n->npending, 1024 * 4);
    snprintf(n->pending[n->npending].to, sizeof n->pending[0].to, "%s", to);
    snprintf(n->pending[n->npending].cap, sizeof n->pending[0].cap, "%s", cap);
    n->pending[n->npending].shard = shard;
    n->pending[n->npending].epoch = epoch;
    n->npending++;
}

static rel acquires[SHARDS];
static size_t nacquires;

static int auto_acquire;

static void on_acquire(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, void *data)
{
    tnode *n = data;

    if (auto_acquire) {
        int i = (int)(n - N);
        ck_assert(cap[0] == '\0' && shard < SHARDS);
        if (handed[i][shard].epoch == epoch) {
            /* handed over before a restart (the store says so) */
            ck_assert_int_eq(keel_cluster_released(c, cap, shard, epoch,
                                                   handed[i][shard].to),
                             0);
            return;
        }
        if (handed[i][shard].epoch >= epoch)
            return; /* the purge's fence refuses this epoch: stuck */
        if (holder[shard][0] == '\0')
            snprintf(holder[shard], sizeof holder[0], "%s", n->name);
        else if (strcmp(holder[shard], n->name) != 0)
            data_errors++; /* serving a unit whose data is elsewhere */
        ck_assert_int_eq(keel_cluster_acquired(c, cap, shard, epoch), 0);
        return;
    }
    ck_assert_uint_lt(nacquires, SHARDS);
    snprintf(acquires[nacquires].cap, sizeof acquires[0].cap, "%s", cap);
    acquires[nacquires].shard = shard;
    acquires[nacquires].epoch = epoch;
    nacquires++;
}

static void on_fenced(keel_cluster *c, int fenced, void *data)
{
    tnode *n = data;

    (void)c;
    n->fenced_calls++;
    n->last_fenced = fenced;
}

static void on_expired(keel_cluster *c, void *data)
{
    tnode *n = data;

    (void)c;
    n->expired_calls++;
    n->npending = 0; /* everything was dropped */
}

static void on_drop(keel_cluster *c, const char *cap, uint32_t shard,
                    void *data)
{
    tnode *n = data;

    (void)c;
    (void)cap;
    (void)shard;
    n->drop_calls++;
}

static int forgotten_calls[6];

static void on_members(keel_cluster *c, void *data)
{
    tnode *n = data;

    n->members_calls++;
    (void)keel_cluster_view(c, &n->members_seen);
}

static void on_forgotten(keel_cluster *c, void *data)
{
    tnode *n = data;

    (void)c;
    forgotten_calls[n - N]++;
}

typedef struct mkopt {
    uint32_t shards;
    int reassign;
    uint32_t grace;
    const char *const *caps;
    size_t ncaps;
    int acquire_hook;
    uint32_t timeout; /* 0: TIMEOUT */
    const char *store; /* store id, 32 hex digits, or NULL */
} mkopt;

/* The nodes mk() makes from now on run without credentials. */
static int mk_insecure;
/* ... and with this map budget (keel_cluster_options.map_budget). */
static size_t map_budget;

static tnode *mk(int i, const mkopt *mo)
{
    keel_cluster_options o;
    tnode *n = &N[i];
    char addr[32];
    keel_zk *zk;

    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "node-%c", 'a' + i);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", 7000 + i);
    keel_cluster_options_init(&o);
    o.cluster = "test";
    o.node = n->name;
    o.address = addr;
    o.shard_count = mo && mo->shards ? mo->shards : SHARDS;
    o.session_timeout_ms = mo && mo->timeout ? mo->timeout : TIMEOUT;
    o.reassign_dead_owner = mo ? mo->reassign : 0;
    o.dead_owner_grace_ms = mo ? mo->grace : 0;
    o.caps = mo ? mo->caps : NULL;
    o.ncaps = mo ? mo->ncaps : 0;
    o.hooks.data = n;
    o.hooks.release = on_release;
    o.hooks.fenced = on_fenced;
    o.hooks.expired = on_expired;
    o.hooks.forgotten = on_forgotten;
    o.hooks.drop = on_drop;
    o.hooks.members = on_members;
    o.insecure = mk_insecure;
    o.map_budget = map_budget;
    if (mo && mo->acquire_hook)
        o.hooks.acquire = on_acquire;
    o.store_id = mo ? mo->store : NULL;
    ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
    ck_assert_int_eq(keel_cluster_create(NULL, &o, zk, &n->c), 0);
    ck_assert_int_eq(keel_cluster_start(n->c), 0);
    return n;
}

static void kill_node(int i)
{
    keel_cluster_destroy(N[i].c);
    N[i].c = NULL;
}

/* Runs the fake until nothing is left to deliver, ticking every agent
 * with the fake's time. */
static keel_cluster *cluster_at(size_t i)
{
    return N[i].c;
}

static void settle(void)
{
    tu_fake_settle(F, cluster_at, 6, 10000);
}

static void advance(uint64_t ms)
{
    tu_fake_advance(F, ms, cluster_at, 6, 10000);
}

static void setup(void)
{
    F = keel_zk_fake_create();
    memset(N, 0, sizeof N);
    memset(forgotten_calls, 0, sizeof forgotten_calls);
    track_data = auto_acquire = data_errors = 0;
    memset(holder, 0, sizeof holder);
    memset(handed, 0, sizeof handed);
}

static void teardown(void)
{
    int i;

    for (i = 0; i < 6; i++)
        if (N[i].c != NULL)
            kill_node(i);
    keel_zk_fake_destroy(F);
}

static int controllers(int *which)
{
    int i, n = 0;

    for (i = 0; i < 6; i++)
        if (N[i].c != NULL && keel_cluster_is_controller(N[i].c)) {
            n++;
            if (which)
                *which = i;
        }
    return n;
}

static uint64_t zk_epoch(void)
{
    char buf[32];
    size_t len = sizeof buf - 1;
    uint64_t e = 0;

    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/controller_epoch", buf, &len, NULL), 0);
    ck_assert_int_eq(keel_epoch_parse(buf, len, &e), 0);
    return e;
}

/* The map in ZooKeeper (caller frees). */
static keel_shard_map zk_map(void)
{
    return tu_fake_map(F, "/keel/test/map");
}

static size_t owned_by(const keel_shard_map *m, const char *name)
{
    uint32_t c, s;
    size_t n = 0;

    for (c = 0; c < m->ncaps; c++)
        for (s = 0; s < m->shard_count; s++) {
            const char *p = keel_map_primary(m, c, s);
            if (p != NULL && strcmp(p, name) == 0)
                n++;
        }
    return n;
}

static int targets(const keel_shard_map *m)
{
    size_t i, n = (size_t)m->ncaps * m->shard_count;
    int t = 0;

    for (i = 0; i < n; i++)
        if (m->units[i].target != KEEL_MAP_NO_NODE)
            t++;
    return t;
}

/* The map is the rendezvous placement over `names` and every live node
 * has applied it and serves exactly its own units. */
static void check_converged(const char *const *names, size_t n)
{
    keel_map_member mm[6];
    keel_shard_map m = zk_map(), want;
    uint32_t c, s;
    size_t i;
    int k;

    memset(mm, 0, sizeof mm);
    for (i = 0; i < n; i++)
        mm[i].name = names[i];
    ck_assert_int_eq(keel_map_compute(mm, n, NULL, 0, m.shard_count, 1, &want),
                     0);
    ck_assert_int_eq(targets(&m), 0);
    for (s = 0; s < m.shard_count; s++)
        ck_assert_str_eq(keel_map_primary(&m, 0, s),
                         keel_map_primary(&want, 0, s));
    for (k = 0; k < 6; k++) {
        const keel_shard_map *applied;
        if (N[k].c == NULL)
            continue;
        applied = keel_cluster_map(N[k].c);
        ck_assert_ptr_nonnull(applied);
        ck_assert_uint_eq(applied->map_epoch, m.map_epoch);
        for (c = 0; c < m.ncaps; c++)
            for (s = 0; s < m.shard_count; s++) {
                keel_placement p;
                const char *owner = keel_map_primary(&m, c, s);
                keel_cluster_placement(N[k].c, m.caps[c], s, &p);
                ck_assert_uint_eq(p.epoch, keel_map_unit_at(&m, c, s)->shard_epoch);
                if (strcmp(owner, N[k].name) == 0)
                    ck_assert_int_eq(p.state, KEEL_PLACEMENT_LOCAL);
                else
                    ck_assert_int_eq(p.state, KEEL_PLACEMENT_REMOTE);
            }
    }
    keel_map_free(&m);
    keel_map_free(&want);
}

static const char *abc[] = {"node-a", "node-b", "node-c"};

static void start3(const mkopt *mo)
{
    mk(0, mo);
    settle();
    mk(1, mo);
    mk(2, mo);
    settle();
}

/* -------------------------------------------------------------- tests */

START_TEST(test_bootstrap_and_shard_mismatch)
{
    mkopt other = {128, 0, 0, NULL, 0, 0, 0, NULL};
    char buf[64];
    size_t len = sizeof buf - 1;

    mk(0, NULL);
    settle();
    ck_assert_int_eq(keel_cluster_phase(N[0].c), KEEL_CLUSTER_RUNNING);
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/config", buf, &len, NULL), 0);
    buf[len] = '\0';
    ck_assert_str_eq(buf, "keel-cluster 1\nshards 64\n");
    mk(1, &other);
    settle();
    ck_assert_int_eq(keel_cluster_phase(N[1].c), KEEL_CLUSTER_FAILED);
    ck_assert_int_eq(keel_cluster_error(N[1].c), KEEL_ECONFIG);
    ck_assert_int_eq(keel_zk_fake_num_children(F, "/keel/test/members"), 1);
    /* the refused node never serves */
    {
        keel_placement p;
        keel_cluster_placement(N[1].c, "", 0, &p);
        ck_assert_int_ne(p.state, KEEL_PLACEMENT_LOCAL);
    }
}
END_TEST

START_TEST(test_three_nodes_converge)
{
    keel_zk_stat st;
    keel_shard_map m;
    int who = -1, i;

    start3(NULL);
    ck_assert_int_eq(controllers(&who), 1);
    ck_assert_int_eq(who, 0); /* the first candidate leads */
    ck_assert_uint_eq(zk_epoch(), 1);
    check_converged(abc, 3);
    m = zk_map();
    for (i = 0; i < 3; i++) {
        char path[64];
        static uint8_t buf[1 << 16];
        size_t len = sizeof buf;
        keel_node_state ns;
        ck_assert_uint_gt(owned_by(&m, N[i].name), SHARDS / 6);
        /* the incarnation is the member znode's czxid */
        snprintf(path, sizeof path, "/keel/test/members/%s", N[i].name);
        ck_assert_int_eq(keel_zk_fake_get(F, path, NULL, NULL, &st), 0);
        ck_assert_int_eq(keel_cluster_incarnation(N[i].c), st.czxid);
        /* nodes/<node>/state lists what it holds */
        snprintf(path, sizeof path, "/keel/test/nodes/%s/state", N[i].name);
        ck_assert_int_eq(keel_zk_fake_get(F, path, buf, &len, NULL), 0);
        ck_assert_int_eq(keel_node_state_decode(buf, len, &ns), 0);
        ck_assert_uint_eq(ns.n, owned_by(&m, N[i].name));
        ck_assert_uint_eq(ns.map_epoch, m.map_epoch);
        ck_assert_int_eq(ns.incarnation, st.czxid);
        keel_node_state_free(&ns);
    }
    keel_map_free(&m);
}
END_TEST

START_TEST(test_join_moves_a_fraction)
{
    const char *abcd[] = {"node-a", "node-b", "node-c", "node-d"};
    mkopt big = {1024, 0, 0, NULL, 0, 0, 0, NULL};
    keel_shard_map before, after;
    uint32_t s;
    size_t moved = 0;

    start3(&big);
    before = zk_map();
    mk(3, &big);
    settle();
    check_converged(abcd, 4);
    after = zk_map();
    ck_assert_uint_gt(after.map_epoch, before.map_epoch);
    for (s = 0; s < 1024; s++) {
        const char *pb = keel_map_primary(&before, 0, s);
        const char *pa = keel_map_primary(&after, 0, s);
        uint64_t eb = keel_map_unit_at(&before, 0, s)->shard_epoch;
        uint64_t ea = keel_map_unit_at(&after, 0, s)->shard_epoch;
        if (strcmp(pb, pa) != 0) {
            moved++;
            ck_assert_str_eq(pa, "node-d");
            ck_assert_uint_eq(ea, eb + 1); /* one epoch per move */
        } else {
            ck_assert_uint_eq(ea, eb);
        }
    }
    /* about a quarter of 1024 */
    ck_assert_uint_gt(moved, 1024 / 4 * 7 / 10);
    ck_assert_uint_lt(moved, 1024 / 4 * 13 / 10);
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* Graceful leave: node-b marks node-c leaving; the controller moves every
 * unit node-c owns to the others through the handoff (one epoch each)
 * while node-c stays a live member, and places nothing back on it. */
START_TEST(test_drain_moves_everything_off)
{
    const char *ab[] = {"node-a", "node-b"};
    keel_shard_map before, after;
    size_t held, movable;
    uint32_t s;

    start3(NULL);
    before = zk_map();
    ck_assert_uint_gt(owned_by(&before, "node-c"), 0);
    ck_assert_int_eq(keel_cluster_drain(N[1].c, "node-x"), KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_drain(N[1].c, "node-c"), 0);
    settle();
    for (s = 0; s < 3; s++)
        ck_assert(keel_cluster_member_leaving(N[s].c, "node-c"));
    ck_assert(!keel_cluster_member_leaving(N[0].c, "node-a"));
    ck_assert_uint_eq(keel_cluster_members(N[0].c), 3);
    after = zk_map();
    ck_assert_uint_eq(owned_by(&after, "node-c"), 0);
    ck_assert_int_eq(targets(&after), 0);
    for (s = 0; s < SHARDS; s++) {
        const char *pb = keel_map_primary(&before, 0, s);
        uint64_t eb = keel_map_unit_at(&before, 0, s)->shard_epoch;
        uint64_t ea = keel_map_unit_at(&after, 0, s)->shard_epoch;
        ck_assert_uint_eq(ea, strcmp(pb, "node-c") == 0 ? eb + 1 : eb);
    }
    keel_cluster_held(N[2].c, &held, &movable);
    ck_assert_uint_eq(held, 0);
    keel_cluster_held(N[0].c, &held, &movable);
    ck_assert_uint_gt(held, 0);
    ck_assert_uint_eq(movable, held); /* node-b could take them */
    /* Marking again is a no-op; node-c then leaves for good. */
    ck_assert_int_eq(keel_cluster_drain(N[0].c, "node-c"), 0);
    kill_node(2);
    settle();
    check_converged(ab, 2);
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A member znode's optional "leaving 1" line. */
START_TEST(test_member_leaving_format)
{
    const char *caps[] = {"gpu"};
    keel_member m;
    char *data, *marked, *again;
    size_t len, mlen, alen;

    memset(&m, 0, sizeof m);
    ck_assert_int_eq(keel_member_format("h:1", caps, 1, 3000, &data, &len),
                     0);
    ck_assert_int_eq(keel_member_parse(data, len, &m), 0);
    ck_assert_int_eq(m.leaving, 0);
    ck_assert_int_eq(keel_member_mark_leaving(data, len, &marked, &mlen), 0);
    ck_assert_int_eq(keel_member_parse(marked, mlen, &m), 0);
    ck_assert_int_eq(m.leaving, 1);
    ck_assert_uint_eq(m.session_timeout_ms, 3000);
    ck_assert_str_eq(m.caps[0], "gpu");
    ck_assert_int_eq(keel_member_mark_leaving(marked, mlen, &again, &alen),
                     KEEL_EEXIST);
    ck_assert_int_eq(keel_member_parse("addr h:1\ncaps \nleaving 2\n", 24,
                                       &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr h:1\ncaps \nleaving 1\nx", 26,
                                       &m),
                     KEEL_ECORRUPT);
    keel_member_clear(&m);
    free(data);
    free(marked);
}
END_TEST

/* The members hook follows the view (the runtime judges peers by it),
 * and a node without credentials says so in its member znode, for the
 * others' status pages. */
START_TEST(test_members_hook_and_insecure)
{
    const keel_member *v;
    char buf[256];
    size_t nv = 0, len;
    int calls;

    mk(0, NULL);
    mk_insecure = 1;
    mk(1, NULL);
    mk_insecure = 0;
    settle();
    advance(1000);
    ck_assert_int_gt(N[0].members_calls, 0);
    ck_assert_uint_eq(N[0].members_seen, 2);
    v = keel_cluster_view(N[0].c, &nv);
    ck_assert_uint_eq(nv, 2);
    ck_assert_str_eq(v[0].name, "node-a");
    ck_assert_int_eq(v[0].insecure, 0);
    ck_assert_str_eq(v[1].name, "node-b");
    ck_assert_int_eq(v[1].insecure, 1);
    len = sizeof buf - 1;
    ck_assert_int_eq(keel_zk_fake_get(F, "/keel/test/members/node-b", buf,
                                      &len, NULL),
                     0);
    buf[len] = '\0';
    ck_assert_ptr_nonnull(strstr(buf, "\ninsecure 1\n"));
    len = sizeof buf - 1;
    ck_assert_int_eq(keel_zk_fake_get(F, "/keel/test/members/node-a", buf,
                                      &len, NULL),
                     0);
    buf[len] = '\0';
    ck_assert_ptr_null(strstr(buf, "insecure"));
    /* node-b leaves: node-a's hook hears of it. */
    calls = N[0].members_calls;
    kill_node(1);
    settle();
    advance(1000);
    ck_assert_int_gt(N[0].members_calls, calls);
    ck_assert_uint_eq(N[0].members_seen, 1);
}
END_TEST

START_TEST(test_capabilities)
{
    static const char *game[] = {"game"};
    mkopt g = {0, 0, 0, game, 1, 0, 0, NULL};
    keel_shard_map m;
    int gi;
    uint32_t s;

    mk(0, NULL);
    settle();
    mk(1, &g);
    mk(2, NULL);
    settle();
    m = zk_map();
    gi = keel_map_cap_index(&m, "game");
    ck_assert_int_ge(gi, 0);
    for (s = 0; s < SHARDS; s++)
        ck_assert_str_eq(keel_map_primary(&m, (uint32_t)gi, s), "node-b");
    {
        keel_placement p;
        keel_cluster_placement(N[1].c, "game", 5, &p);
        ck_assert_int_eq(p.state, KEEL_PLACEMENT_LOCAL);
        keel_cluster_placement(N[0].c, "game", 5, &p);
        ck_assert_int_eq(p.state, KEEL_PLACEMENT_REMOTE);
        keel_cluster_placement(N[0].c, "chat", 5, &p); /* nobody has it */
        ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
    }
    {
        char name[32], addr[64];
        ck_assert_int_eq(
            keel_cluster_owner(N[0].c, "game", 5, name, sizeof name, addr,
                               sizeof addr),
            0);
        ck_assert_str_eq(name, "node-b");
        ck_assert_str_eq(addr, "127.0.0.1:7001");
    }
    keel_map_free(&m);
}
END_TEST

/* Capabilities whose units would make the map too large for a znode are
 * left unplaced (the last declared first), and named; the rest is placed.
 * Writing the whole map fails for good: the controller gave up, and no
 * map was ever written. */
START_TEST(test_capabilities_past_the_map_limit)
{
    static const char *many[] = {"a", "b", "c", "d"};
    mkopt o = {0, 0, 0, many, 4, 0, 0, NULL};
    keel_controller *ctl;
    keel_shard_map m;
    uint32_t s;

    /* A budget that "" and "a" fit (a unit takes 3 bytes here), as
     * 65,536 shards would fit ZooKeeper's own limit. */
    map_budget = 100 + 2 * 3 * SHARDS + 50;
    mk(0, &o);
    settle();
    m = zk_map();
    ck_assert_int_ge(keel_map_cap_index(&m, ""), 0);
    ck_assert_int_ge(keel_map_cap_index(&m, "a"), 0);
    ck_assert_int_lt(keel_map_cap_index(&m, "d"), 0);
    ck_assert_uint_lt(m.ncaps, 5);
    for (s = 0; s < m.shard_count; s += 997)
        ck_assert_str_eq(keel_map_primary(&m, 0, s), "node-a");
    ctl = keel_cluster_controller(N[0].c);
    ck_assert_ptr_nonnull(ctl);
    ck_assert_msg(strstr(ctl->left_out, "d") != NULL, "left out: \"%s\"",
                  ctl->left_out);
    ck_assert_msg(keel_controller_active(ctl), "the controller gave up");
    keel_map_free(&m);
    map_budget = 0;
}
END_TEST

START_TEST(test_controller_failover)
{
    int who = -1, who2 = -1;
    int64_t inc;
    uint64_t e1;

    start3(NULL);
    ck_assert_int_eq(controllers(&who), 1);
    e1 = zk_epoch();
    inc = keel_cluster_incarnation(N[who].c);
    keel_zk_fake_expire(keel_cluster_zk(N[who].c));
    settle();
    ck_assert_int_eq(controllers(&who2), 1);
    ck_assert_int_ne(who2, who);
    ck_assert_uint_gt(zk_epoch(), e1);
    ck_assert_int_eq(N[who].expired_calls, 1);
    /* the old controller rejoined as a new incarnation */
    ck_assert_int_eq(keel_cluster_phase(N[who].c), KEEL_CLUSTER_RUNNING);
    ck_assert_int_gt(keel_cluster_incarnation(N[who].c), inc);
    check_converged(abc, 3);
}
END_TEST

START_TEST(test_dead_owner_waits)
{
    keel_shard_map m;
    uint32_t s;
    size_t had;

    start3(NULL);
    m = zk_map();
    had = owned_by(&m, "node-c");
    keel_map_free(&m);
    kill_node(2);
    settle();
    advance(100000);
    m = zk_map();
    /* consistency over availability: node-c's units wait for it */
    ck_assert_uint_eq(owned_by(&m, "node-c"), had);
    ck_assert_int_eq(targets(&m), 0);
    for (s = 0; s < SHARDS; s++) {
        keel_placement p;
        keel_cluster_placement(N[0].c, "", s, &p);
        if (strcmp(keel_map_primary(&m, 0, s), "node-c") == 0)
            ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
        else
            ck_assert_int_ne(p.state, KEEL_PLACEMENT_UNAVAILABLE);
    }
    keel_map_free(&m);
    /* it comes back: same name, new incarnation, its units again */
    mk(2, NULL);
    settle();
    check_converged(abc, 3);
}
END_TEST

START_TEST(test_dead_owner_reassigned_after_grace)
{
    const char *ab[] = {"node-a", "node-b"};
    mkopt r = {0, 1, 5000, NULL, 0, 0, 0, NULL};
    keel_shard_map before, m;
    uint32_t s;

    start3(&r);
    before = zk_map();
    kill_node(2);
    settle();
    advance(4999);
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-c"), owned_by(&before, "node-c"));
    ck_assert_int_gt(targets(&m), 0); /* moves started, waiting */
    keel_map_free(&m);
    advance(1);
    check_converged(ab, 2);
    m = zk_map();
    for (s = 0; s < SHARDS; s++)
        if (strcmp(keel_map_primary(&before, 0, s), "node-c") == 0)
            ck_assert_uint_eq(keel_map_unit_at(&m, 0, s)->shard_epoch,
                              keel_map_unit_at(&before, 0, s)->shard_epoch + 2);
    keel_map_free(&m);
    keel_map_free(&before);
}
END_TEST

START_TEST(test_forget_dead_node)
{
    const char *ab[] = {"node-a", "node-b"};
    keel_shard_map before, m;
    char buf[8];
    size_t len, units = 99;
    uint32_t s;

    start3(NULL);
    before = zk_map();
    ck_assert_uint_gt(owned_by(&before, "node-c"), 0);
    /* a live member cannot be forgotten: it still serves its units */
    ck_assert_int_eq(keel_cluster_forget(N[0].c, "node-c", &units),
                     KEEL_EEXIST);
    ck_assert_int_eq(keel_cluster_forget(N[1].c, "node-a", NULL),
                     KEEL_EEXIST);
    ck_assert_int_eq(keel_cluster_forget(N[0].c, "no/such", NULL),
                     KEEL_EINVAL);
    kill_node(2);
    settle();
    advance(100000);
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-c"), owned_by(&before, "node-c"));
    keel_map_free(&m);
    /* the operator gives its data up, through any node */
    ck_assert_int_eq(keel_cluster_forget(N[1].c, "node-c", &units), 0);
    ck_assert_uint_eq(units, owned_by(&before, "node-c"));
    settle();
    len = sizeof buf;
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/forgotten/node-c", buf, &len, NULL),
        0);
    check_converged(ab, 2);
    m = zk_map();
    for (s = 0; s < SHARDS; s++)
        if (strcmp(keel_map_primary(&before, 0, s), "node-c") == 0)
            ck_assert_uint_eq(keel_map_unit_at(&m, 0, s)->shard_epoch,
                              keel_map_unit_at(&before, 0, s)->shard_epoch + 2);
        else
            ck_assert_uint_eq(keel_map_unit_at(&m, 0, s)->shard_epoch,
                              keel_map_unit_at(&before, 0, s)->shard_epoch);
    keel_map_free(&m);
    /* forgetting it again does nothing: the map lists it no more, like
     * a name the cluster never had */
    ck_assert_int_eq(keel_cluster_forget(N[0].c, "node-c", &units),
                     KEEL_ENOTFOUND);
    ck_assert_uint_eq(units, 0);
    ck_assert_int_eq(keel_cluster_forget(N[0].c, "node-z", &units),
                     KEEL_ENOTFOUND);
    settle();
    /* it comes back: it purges its stale units, the mark goes, and it
     * gets units again through the usual handoffs */
    mk(2, NULL);
    settle();
    ck_assert_int_eq(forgotten_calls[2], 1);
    ck_assert_int_eq(forgotten_calls[0] + forgotten_calls[1], 0);
    /* the mark stays until the purge is durable */
    len = sizeof buf;
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/forgotten/node-c", buf, &len, NULL),
        0);
    keel_cluster_forgotten_done(N[2].c, 0);
    settle();
    len = sizeof buf;
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/forgotten/node-c", buf, &len, NULL),
        KEEL_ENOTFOUND);
    check_converged(abc, 3);
    /* a later return is an ordinary one */
    kill_node(2);
    settle();
    forgotten_calls[2] = 0;
    mk(2, NULL);
    settle();
    ck_assert_int_eq(forgotten_calls[2], 0);
    check_converged(abc, 3);
    keel_map_free(&before);
}
END_TEST

/* Forgetting a node whose member znode has just gone: its units move
 * only once its own session timeout (6 s, longer than the others') and a
 * quarter more have passed since the controller saw the znode go. A node
 * cut off with a ZooKeeper follower may hold a lease until its session
 * expires on the leader, so the forget alone proves nothing. */
START_TEST(test_forget_waits_for_session)
{
    const char *ab[] = {"node-a", "node-b"};
    mkopt longer = {0};
    keel_shard_map before, m;
    uint64_t gone, wait = 6000 + 6000 / 4;
    size_t had, units;
    uint32_t s;

    longer.timeout = 6000;
    mk(0, NULL);
    settle();
    mk(1, NULL);
    mk(2, &longer);
    settle();
    before = zk_map();
    had = owned_by(&before, "node-c");
    ck_assert_uint_gt(had, 0);
    kill_node(2); /* its session closes: the member znode goes at once */
    settle();
    gone = keel_zk_fake_now(F);
    ck_assert_int_eq(keel_cluster_forget(N[1].c, "node-c", &units), 0);
    ck_assert_uint_eq(units, had);
    settle();
    while (keel_zk_fake_now(F) < gone + wait - 1) {
        uint64_t left = gone + wait - 1 - keel_zk_fake_now(F);
        advance(left < 250 ? left : 250);
        m = zk_map();
        ck_assert_msg(owned_by(&m, "node-c") == had,
                      "node-c's units moved %llu ms after its znode went",
                      (unsigned long long)(keel_zk_fake_now(F) - gone));
        keel_map_free(&m);
    }
    advance(1);
    check_converged(ab, 2);
    m = zk_map();
    for (s = 0; s < SHARDS; s++)
        if (strcmp(keel_map_primary(&before, 0, s), "node-c") == 0)
            ck_assert_uint_eq(keel_map_unit_at(&m, 0, s)->shard_epoch,
                              keel_map_unit_at(&before, 0, s)->shard_epoch + 2);
    keel_map_free(&m);
    keel_map_free(&before);
}
END_TEST

/* The dead-owner grace counts from the negotiated session timeout, not
 * the requested one: the servers raised 3000 to 4000, so nothing moves
 * before 5000 ms. */
START_TEST(test_dead_owner_grace_negotiated)
{
    const char *ab[] = {"node-a", "node-b"};
    mkopt r = {0, 1, 0, NULL, 0, 0, 0, NULL};
    keel_shard_map before, m;

    keel_zk_fake_timeout_bounds(F, 4000, 0);
    start3(&r);
    before = zk_map();
    kill_node(2);
    settle();
    advance(4999);
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-c"), owned_by(&before, "node-c"));
    keel_map_free(&m);
    advance(1);
    check_converged(ab, 2);
    keel_map_free(&before);
}
END_TEST

/* A controller elected after a member went still waits that member's own
 * timeout (which it saw published while the member lived), counted from
 * when it saw the member go, not a blind bound. */
START_TEST(test_new_controller_knows_dead_timeout)
{
    mkopt longer = {0};
    keel_shard_map m;
    uint64_t wait = 6000 + 6000 / 4;
    size_t had_a, had_c;
    int ctl = -1;

    longer.timeout = 6000;
    mk(0, NULL);
    settle();
    mk(1, NULL);
    mk(2, &longer);
    settle();
    ck_assert_int_eq(controllers(&ctl), 1);
    ck_assert_int_eq(ctl, 0);
    m = zk_map();
    had_a = owned_by(&m, "node-a");
    had_c = owned_by(&m, "node-c");
    keel_map_free(&m);
    kill_node(2);
    settle();
    kill_node(0); /* the controller goes too: node-b takes over */
    settle();
    ck_assert_int_eq(controllers(&ctl), 1);
    ck_assert_int_eq(ctl, 1);
    ck_assert_int_eq(keel_cluster_forget(N[1].c, "node-c", NULL), 0);
    settle();
    advance(wait - 1);
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-c"), had_c);
    keel_map_free(&m);
    advance(1);
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-c"), 0);
    ck_assert_uint_eq(owned_by(&m, "node-a"), had_a); /* not forgotten */
    ck_assert_uint_eq(owned_by(&m, "node-b"), SHARDS - had_a);
    keel_map_free(&m);
}
END_TEST

/* A node back under its name on another store (a replaced disk) does not
 * join while the cluster gives it units: their data is not in that store.
 * It is not a member, so the operator can forget it; it then joins by
 * itself, purges, and serves again. On its own store it joins at once. */
START_TEST(test_replaced_store_refused)
{
    static const char *const stores[] = {
        "0000000000000000000000000000000a", "0000000000000000000000000000000b",
        "0000000000000000000000000000000c"};
    const char *fresh = "ffffffffffffffffffffffffffffffff";
    mkopt mo[3];
    keel_shard_map before, m;
    char buf[64];
    size_t len, units = 0;
    int i;

    for (i = 0; i < 3; i++) {
        memset(&mo[i], 0, sizeof mo[i]);
        mo[i].store = stores[i];
        mk(i, &mo[i]);
    }
    settle();
    advance(1000);
    check_converged(abc, 3);
    len = sizeof buf;
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/nodes/node-c", buf, &len, NULL), 0);
    ck_assert_uint_eq(len, 39);
    ck_assert_int_eq(memcmp(buf, "store 0000000000000000000000000000000c\n",
                            39),
                     0);
    before = zk_map();
    ck_assert_uint_gt(owned_by(&before, "node-c"), 0);

    /* Back on its own store: joins. */
    kill_node(2);
    settle();
    mk(2, &mo[2]);
    settle();
    advance(1000);
    check_converged(abc, 3);

    /* Back on an empty disk: refused, and stays out, retrying. */
    kill_node(2);
    settle();
    advance(100000);
    mo[2].store = fresh;
    mk(2, &mo[2]);
    settle();
    advance(12000);
    ck_assert_int_eq(keel_cluster_error(N[2].c), KEEL_EMISMATCH);
    ck_assert_int_ne(keel_cluster_phase(N[2].c), KEEL_CLUSTER_RUNNING);
    len = sizeof buf;
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/members/node-c", buf, &len, NULL),
        KEEL_ENOTFOUND);
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-c"), owned_by(&before, "node-c"));
    keel_map_free(&m);

    /* The operator accepts the loss: the node joins on its next check. */
    ck_assert_int_eq(keel_cluster_forget(N[0].c, "node-c", &units), 0);
    ck_assert_uint_eq(units, owned_by(&before, "node-c"));
    settle();
    advance(6000);
    ck_assert_int_eq(keel_cluster_error(N[2].c), 0);
    ck_assert_int_eq(forgotten_calls[2], 1);
    keel_cluster_forgotten_done(N[2].c, 0);
    settle();
    advance(1000);
    check_converged(abc, 3);
    len = sizeof buf;
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/nodes/node-c", buf, &len, NULL), 0);
    ck_assert_int_eq(memcmp(buf + 6, fresh, 32), 0);
    keel_map_free(&before);
}
END_TEST

static void start3_stores(mkopt *mo)
{
    static const char *const stores[] = {
        "0000000000000000000000000000000a", "0000000000000000000000000000000b",
        "0000000000000000000000000000000c"};
    int i;

    for (i = 0; i < 3; i++) {
        memset(&mo[i], 0, sizeof mo[i]);
        mo[i].store = stores[i];
        mk(i, &mo[i]);
    }
    settle();
    advance(1000);
    check_converged(abc, 3);
}

/* A refused node whose session expires while its next check is pending,
 * and which is forgotten meanwhile: when it is back, one check runs, and
 * it joins once (one election node of its own, not two). */
START_TEST(test_refused_store_check_across_expiry)
{
    mkopt mo[3];
    size_t units = 0;
    keel_zk *zk;
    int k, j;

    start3_stores(mo);
    kill_node(2);
    settle();
    advance(100000);
    mo[2].store = "ffffffffffffffffffffffffffffffff";
    mk(2, &mo[2]);
    settle();
    advance(1000);
    ck_assert_int_eq(keel_cluster_error(N[2].c), KEEL_EMISMATCH);
    zk = keel_cluster_zk(N[2].c);
    keel_zk_fake_disconnect(zk);
    advance(10000); /* past its session timeout and its retry time */
    ck_assert_int_eq(keel_cluster_forget(N[0].c, "node-c", &units), 0);
    advance(100);
    keel_zk_fake_reconnect(zk);
    /* One event at a time, as a network would deliver them, so that a
     * retry timer could fire in the middle of the new bootstrap. */
    for (k = 0; k < 2000; k++) {
        keel_zk_fake_step(F);
        for (j = 0; j < 3; j++)
            keel_cluster_tick(N[j].c, keel_zk_fake_now(F));
    }
    settle();
    advance(6000);
    ck_assert_int_eq(keel_cluster_phase(N[2].c), KEEL_CLUSTER_RUNNING);
    ck_assert_int_eq(keel_cluster_error(N[2].c), 0);
    ck_assert_int_eq(keel_zk_fake_num_children(F, "/keel/test/election"), 3);
    /* With the others gone, it is elected: no orphan node of its own
     * stands before it. */
    kill_node(0);
    kill_node(1);
    advance(30000);
    advance(30000);
    ck_assert_int_eq(keel_cluster_is_controller(N[2].c), 1);
}
END_TEST

/* A forgotten node that joined again got units back with their data
 * while its forgotten/ mark was still there (its purge not durable yet).
 * Restarted on an empty store then, it is refused: the leftover mark
 * does not cover what it received after the forget. */
START_TEST(test_leftover_forgotten_mark_protects)
{
    mkopt mo[3];
    keel_shard_map m;
    size_t units = 0, back;

    start3_stores(mo);
    kill_node(2);
    settle();
    advance(100000);
    ck_assert_int_eq(keel_cluster_forget(N[0].c, "node-c", &units), 0);
    settle();
    advance(10000);
    mk(2, &mo[2]); /* back on its own store; never reports its purge */
    settle();
    advance(2000);
    m = zk_map();
    back = owned_by(&m, "node-c");
    keel_map_free(&m);
    ck_assert_uint_gt(back, 0);
    ck_assert_int_eq(
        keel_zk_fake_num_children(F, "/keel/test/forgotten"), 1);
    kill_node(2);
    settle();
    advance(500);
    mo[2].store = "ffffffffffffffffffffffffffffffff";
    mk(2, &mo[2]);
    settle();
    advance(200);
    ck_assert_int_eq(keel_cluster_error(N[2].c), KEEL_EMISMATCH);
    ck_assert_int_ne(keel_cluster_phase(N[2].c), KEEL_CLUSTER_RUNNING);
}
END_TEST

START_TEST(test_self_fencing)
{
    keel_zk *zk;
    uint32_t s;
    int local = -1;

    mk(0, NULL);
    mk(1, NULL);
    settle();
    for (s = 0; s < SHARDS && local < 0; s++) {
        keel_placement p;
        keel_cluster_placement(N[0].c, "", s, &p);
        if (p.state == KEEL_PLACEMENT_LOCAL)
            local = (int)s;
    }
    ck_assert_int_ge(local, 0);
    zk = keel_cluster_zk(N[0].c);
    keel_zk_fake_disconnect(zk);
    settle();
    advance(TIMEOUT / 2 - 1);
    ck_assert(!keel_cluster_fenced(N[0].c));
    advance(1);
    ck_assert(keel_cluster_fenced(N[0].c));
    ck_assert_int_eq(N[0].last_fenced, 1);
    {
        keel_placement p;
        keel_cluster_placement(N[0].c, "", (uint32_t)local, &p);
        ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
        keel_zk_fake_reconnect(zk);
        settle();
        ck_assert(!keel_cluster_fenced(N[0].c));
        keel_cluster_placement(N[0].c, "", (uint32_t)local, &p);
        ck_assert_int_eq(p.state, KEEL_PLACEMENT_LOCAL);
    }
}
END_TEST

START_TEST(test_expiry_rejoins)
{
    const char *ab[] = {"node-a", "node-b"};
    keel_zk *zk;
    int64_t inc;

    mk(0, NULL);
    mk(1, NULL);
    settle();
    inc = keel_cluster_incarnation(N[1].c);
    zk = keel_cluster_zk(N[1].c);
    keel_zk_fake_disconnect(zk);
    settle();
    advance(TIMEOUT); /* the server expires the session */
    ck_assert(keel_cluster_fenced(N[1].c));
    ck_assert_int_eq(N[1].expired_calls, 0); /* it cannot know yet */
    keel_zk_fake_reconnect(zk);
    settle();
    ck_assert_int_eq(N[1].expired_calls, 1);
    ck_assert_int_gt(keel_cluster_incarnation(N[1].c), inc);
    ck_assert(!keel_cluster_fenced(N[1].c));
    check_converged(ab, 2);
}
END_TEST

/* ---------------------------------------------------------- the lease */

static void complete_releases(tnode *n);

/* Lets time pass in steps shorter than the heartbeat interval (T/8), as
 * it does for a running node, settling after each. */
static void walk(uint64_t ms)
{
    while (ms > 0) {
        uint64_t d = ms < 100 ? ms : 100;
        advance(d);
        ms -= d;
    }
}

/* The first unit node i serves, or -1. */
static int first_local(int i)
{
    uint32_t s;

    for (s = 0; s < SHARDS; s++) {
        keel_placement p;
        keel_cluster_placement(N[i].c, "", s, &p);
        if (p.state == KEEL_PLACEMENT_LOCAL)
            return (int)s;
    }
    return -1;
}

/* The servers stop answering node-a (its answers wait, as for a stopped
 * process; the client never reports a disconnection): node-a stops
 * serving once T/2 has passed since the last heartbeat that was answered
 * left; heartbeats keep leaving every T/8 meanwhile, and the first answer
 * that waited does not extend the lease past its own send time + T/2;
 * later ones, sent recently enough, lift the fence. */
START_TEST(test_lease_lapses_without_answers)
{
    keel_placement p;
    keel_zk *zk;
    uint64_t lease, held_lease;
    int local, fenced_calls, steps;

    mk(0, NULL);
    mk(1, NULL);
    settle();
    local = first_local(0);
    ck_assert_int_ge(local, 0);
    ck_assert(!keel_cluster_fenced(N[0].c));
    lease = keel_cluster_lease_until(N[0].c);
    ck_assert_uint_eq(lease, keel_zk_fake_now(F) + TIMEOUT / 2);
    fenced_calls = N[0].fenced_calls;

    zk = keel_cluster_zk(N[0].c);
    keel_zk_fake_hold(zk, 1);
    walk(lease - keel_zk_fake_now(F) - 1);
    ck_assert(!keel_cluster_fenced(N[0].c));
    ck_assert_int_eq(N[0].fenced_calls, fenced_calls);
    walk(1);
    ck_assert(keel_cluster_fenced(N[0].c));
    ck_assert_int_eq(N[0].last_fenced, 1);
    keel_cluster_placement(N[0].c, "", (uint32_t)local, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
    /* only the lease: node-b, answered all along, serves on */
    ck_assert(!keel_cluster_fenced(N[1].c));
    ck_assert_int_ge(first_local(1), 0);
    ck_assert_uint_eq(keel_cluster_lease_until(N[0].c), lease);

    /* The first heartbeat in flight left T/8 after the last answered one.
     * Its answer arrives late: the lease reaches its send time + T/2,
     * already past. */
    walk(700);
    keel_zk_fake_hold(zk, 0);
    for (steps = 0; steps < 10000; steps++) {
        ck_assert(keel_zk_fake_step(F));
        if (keel_cluster_lease_until(N[0].c) != lease)
            break;
    }
    held_lease = keel_cluster_lease_until(N[0].c);
    /* (walk() ticks every 100 ms: the heartbeat due at T/8 left at the
     * next tick) */
    ck_assert_uint_ge(held_lease, lease + TIMEOUT / 8);
    ck_assert_uint_lt(held_lease, lease + TIMEOUT / 8 + 100);
    ck_assert_uint_lt(held_lease, keel_zk_fake_now(F));
    ck_assert(keel_cluster_fenced(N[0].c));
    /* those sent during the last T/2 renew it for real */
    settle();
    ck_assert(!keel_cluster_fenced(N[0].c));
    ck_assert_int_eq(N[0].last_fenced, 0);
    ck_assert_uint_gt(keel_cluster_lease_until(N[0].c), keel_zk_fake_now(F));
    ck_assert_uint_le(keel_cluster_lease_until(N[0].c),
                      keel_zk_fake_now(F) + TIMEOUT / 2);
    keel_cluster_placement(N[0].c, "", (uint32_t)local, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_LOCAL);
    /* and it keeps moving while the answers come */
    walk(TIMEOUT * 2);
    ck_assert(!keel_cluster_fenced(N[0].c));
    ck_assert_int_eq(N[0].last_fenced, 0);
    ck_assert_uint_ge(keel_cluster_lease_until(N[0].c),
                      keel_zk_fake_now(F) + TIMEOUT / 2 - TIMEOUT / 8 - 100);
    ck_assert_uint_le(keel_cluster_lease_until(N[0].c),
                      keel_zk_fake_now(F) + TIMEOUT / 2);
}
END_TEST

/* An expired session fences whatever the lease says, and the lease goes
 * with it: the node serves again only once rejoined and holding a lease
 * of the new session. */
START_TEST(test_expiry_wins_over_lease)
{
    keel_placement p;
    keel_zk *zk;
    int local, steps;

    mk(0, NULL);
    mk(1, NULL);
    settle();
    local = first_local(1);
    ck_assert_int_ge(local, 0);
    ck_assert_uint_gt(keel_cluster_lease_until(N[1].c), keel_zk_fake_now(F));
    zk = keel_cluster_zk(N[1].c);
    keel_zk_fake_expire(zk);
    for (steps = 0; steps < 10000 && N[1].expired_calls == 0; steps++)
        ck_assert(keel_zk_fake_step(F));
    ck_assert_int_eq(N[1].expired_calls, 1);
    ck_assert(keel_cluster_fenced(N[1].c));
    ck_assert_uint_eq(keel_cluster_lease_until(N[1].c), 0);
    ck_assert_uint_eq(keel_cluster_write_epoch(N[1].c, "", (uint32_t)local),
                      0);
    keel_cluster_placement(N[1].c, "", (uint32_t)local, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
    settle();
    ck_assert(!keel_cluster_fenced(N[1].c));
    ck_assert_uint_gt(keel_cluster_lease_until(N[1].c), keel_zk_fake_now(F));
    keel_cluster_placement(N[1].c, "", (uint32_t)local, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_LOCAL);
}
END_TEST

/* node-b's server is cut off from the ZooKeeper leader and does not know
 * it yet: it still answers reads, but nothing the leader must see. The
 * leader hears nothing more of node-b's session and expires it T after
 * the cut. node-b must have stopped serving by then, and well before:
 * within T/2 of the cut, the lease counted from the send time of the last
 * heartbeat the leader answered. (Renewed from reads that the follower
 * answers on its own, the lease would run on until the follower gives up
 * on the leader, long after the session is gone.) When the follower
 * drops it, node-b learns of the expiry and rejoins. */
START_TEST(test_cut_off_follower_fences)
{
    const char *ab[] = {"node-a", "node-b"};
    keel_placement p;
    keel_zk *zk;
    uint64_t cut, fenced_at = 0, max_lease = 0;
    int local;

    mk(0, NULL);
    mk(1, NULL);
    settle();
    local = first_local(1);
    ck_assert_int_ge(local, 0);
    ck_assert(!keel_cluster_fenced(N[1].c));

    zk = keel_cluster_zk(N[1].c);
    keel_zk_fake_cut_off(zk);
    cut = keel_zk_fake_now(F);
    while (keel_zk_fake_now(F) < cut + TIMEOUT - 100) {
        uint64_t lease = keel_cluster_lease_until(N[1].c);
        if (lease > max_lease)
            max_lease = lease;
        if (fenced_at == 0 && keel_cluster_fenced(N[1].c))
            fenced_at = keel_zk_fake_now(F);
        walk(100);
    }
    fprintf(stderr,
            "cut-off follower: lease reached cut + %lld ms; fenced %s%lld "
            "ms after the cut (session expires on the leader at cut + %d)\n",
            (long long)(max_lease - cut), fenced_at ? "" : "never, > ",
            (long long)((fenced_at ? fenced_at : keel_zk_fake_now(F)) - cut),
            TIMEOUT);
    ck_assert_uint_le(max_lease, cut + TIMEOUT / 2);
    ck_assert_uint_ne(fenced_at, 0);
    ck_assert_uint_le(fenced_at, cut + TIMEOUT / 2);
    ck_assert_int_eq(N[1].last_fenced, 1);
    keel_cluster_placement(N[1].c, "", (uint32_t)local, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
    ck_assert_int_eq(N[1].expired_calls, 0); /* it cannot know yet */

    /* The leader expires the session; node-b, still cut off, serves
     * nothing meanwhile; node-a sees it gone. */
    walk(200);
    ck_assert(keel_cluster_fenced(N[1].c));
    ck_assert_uint_eq(keel_cluster_members(N[0].c), 1);
    /* The follower gives up on the leader: node-b learns and rejoins. */
    keel_zk_fake_disconnect(zk);
    settle();
    keel_zk_fake_reconnect(zk);
    settle();
    ck_assert_int_eq(N[1].expired_calls, 1);
    ck_assert(!keel_cluster_fenced(N[1].c));
    check_converged(ab, 2);
}
END_TEST

/* A session timeout too short for the lease's margin is refused when the
 * servers grant it: the node fails with KEEL_ECONFIG and serves nothing;
 * the others are unaffected. */
START_TEST(test_short_timeout_refused)
{
    mkopt shortt = {0};

    mk(0, NULL);
    settle();
    shortt.timeout = 800;
    mk(1, &shortt);
    settle();
    ck_assert_int_eq(keel_cluster_phase(N[1].c), KEEL_CLUSTER_FAILED);
    ck_assert_int_eq(keel_cluster_error(N[1].c), KEEL_ECONFIG);
    ck_assert(keel_cluster_fenced(N[1].c));
    ck_assert_int_eq(first_local(1), -1);
    ck_assert_uint_eq(keel_cluster_members(N[0].c), 1);
    ck_assert_int_eq(keel_cluster_phase(N[0].c), KEEL_CLUSTER_RUNNING);
    /* what counts is what the servers grant: asked 800, given 1000 */
    kill_node(1);
    keel_zk_fake_timeout_bounds(F, 1000, 20000);
    mk(1, &shortt);
    settle();
    ck_assert_int_eq(keel_cluster_phase(N[1].c), KEEL_CLUSTER_RUNNING);
    ck_assert_int_ge(first_local(1), 0);
}
END_TEST

/* Writes carry the epoch at which the node holds the unit: the map's
 * epoch while it serves or hands it over, 0 once it holds it no more
 * (so the store refuses a late write of a unit that moved on). */
START_TEST(test_write_epoch)
{
    keel_shard_map m;
    keel_placement p;
    uint32_t s, moving = SHARDS;

    start3(NULL);
    m = zk_map();
    for (s = 0; s < SHARDS; s++) {
        const char *owner = keel_map_primary(&m, 0, s);
        uint64_t e = keel_map_unit_at(&m, 0, s)->shard_epoch;
        ck_assert_uint_eq(keel_cluster_write_epoch(N[0].c, "", s),
                          strcmp(owner, "node-a") == 0 ? e : 0);
    }
    ck_assert_uint_eq(keel_cluster_write_epoch(N[0].c, "nocap", 0), 0);
    ck_assert_uint_eq(keel_cluster_write_epoch(N[0].c, "", SHARDS), 0);
    /* a fourth node: node-a hands some units over; until it is done they
     * are UNAVAILABLE, and their last writes still go at the old epoch */
    N[0].delay_release = 1;
    mk(3, NULL);
    settle();
    ck_assert_uint_gt(N[0].npending, 0);
    s = N[0].pending[0].shard;
    keel_cluster_placement(N[0].c, "", s, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
    ck_assert_uint_eq(keel_cluster_write_epoch(N[0].c, "", s),
                      N[0].pending[0].epoch);
    moving = s;
    N[0].delay_release = 0;
    complete_releases(&N[0]);
    settle();
    ck_assert_uint_eq(keel_cluster_write_epoch(N[0].c, "", moving), 0);
    keel_map_free(&m);
}
END_TEST

static void complete_releases(tnode *n)
{
    size_t i, k = n->npending;

    n->npending = 0;
    for (i = 0; i < k; i++)
        keel_cluster_released(n->c, n->pending[i].cap, n->pending[i].shard,
                              n->pending[i].epoch, n->pending[i].to);
}

START_TEST(test_deposed_mid_move)
{
    keel_controller *old;
    keel_shard_map m, m2;
    const keel_handoff *h;
    int who = -1, i;
    uint32_t s, moving = SHARDS;

    start3(NULL);
    ck_assert_int_eq(controllers(&who), 1);
    ck_assert_int_eq(who, 0);
    old = keel_cluster_controller(N[0].c);
    for (i = 0; i < 4; i++)
        N[i].delay_release = 1;
    mk(3, NULL);
    N[3].delay_release = 1;
    settle();
    m = zk_map();
    ck_assert_int_gt(targets(&m), 0); /* moves to node-d wait for releases */
    for (s = 0; s < SHARDS; s++)
        if (keel_map_unit_at(&m, 0, s)->target != KEEL_MAP_NO_NODE) {
            moving = s;
            break;
        }
    h = keel_controller_move(old, "", moving);
    ck_assert_int_eq(h->state, KEEL_HANDOFF_AWAIT_RELEASE);

    /* Another controller bumps the epoch behind node-a's back. */
    ck_assert_int_eq(
        keel_zk_fake_set(F, "/keel/test/controller_epoch", "41", 2), 0);
    for (i = 0; i < 3; i++)
        complete_releases(&N[i]);
    settle();
    /* node-a's primary write failed as a whole: it stepped down */
    ck_assert(!keel_cluster_is_controller(N[0].c));
    h = keel_controller_move(old, "", moving);
    ck_assert_int_eq(h->state, KEEL_HANDOFF_ABORTED);
    m2 = zk_map();
    ck_assert_uint_eq(m2.map_epoch, m.map_epoch); /* nothing written */
    ck_assert_int_eq(targets(&m2), targets(&m));
    keel_map_free(&m2);

    /* The rightful successor: node-a's session goes, node-b leads, reads
     * the targets and the releases, and finishes the moves. */
    for (i = 0; i < 4; i++)
        N[i].delay_release = 0;
    keel_zk_fake_expire(keel_cluster_zk(N[0].c));
    settle();
    ck_assert_int_eq(controllers(&who), 1);
    ck_assert_int_ne(who, 0);
    ck_assert_uint_eq(zk_epoch(), 42);
    {
        const char *abcd[] = {"node-a", "node-b", "node-c", "node-d"};
        check_converged(abcd, 4);
    }
    m2 = zk_map();
    for (s = 0; s < SHARDS; s++)
        if (keel_map_unit_at(&m, 0, s)->target != KEEL_MAP_NO_NODE)
            ck_assert_uint_eq(keel_map_unit_at(&m2, 0, s)->shard_epoch,
                              keel_map_unit_at(&m, 0, s)->shard_epoch + 1);
    keel_map_free(&m);
    keel_map_free(&m2);
}
END_TEST

/* LOCAL only once the runtime has recorded the fence; the node state
 * says PRIMARY only then too. */
START_TEST(test_acquire_hook)
{
    mkopt a = {0, 0, 0, NULL, 0, 1, 0, NULL};
    static uint8_t buf[1 << 16];
    size_t len = sizeof buf, i;
    keel_node_state ns;
    keel_placement p;

    nacquires = 0;
    mk(0, &a);
    settle();
    ck_assert_uint_eq(nacquires, SHARDS); /* the only node: everything */
    keel_cluster_placement(N[0].c, "", 3, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_UNAVAILABLE);
    ck_assert_uint_eq(acquires[3].epoch, 1);
    ck_assert_int_eq(keel_zk_fake_get(F, "/keel/test/nodes/node-a/state", buf,
                                      &len, NULL),
                     0);
    ck_assert_int_eq(keel_node_state_decode(buf, len, &ns), 0);
    ck_assert_uint_eq(ns.n, 0);
    keel_node_state_free(&ns);
    /* a stale completion is refused */
    ck_assert_int_eq(keel_cluster_acquired(N[0].c, "", 3, 7), KEEL_ENOTFOUND);
    for (i = 0; i < nacquires; i++)
        ck_assert_int_eq(keel_cluster_acquired(N[0].c, acquires[i].cap,
                                               acquires[i].shard,
                                               acquires[i].epoch),
                         0);
    settle();
    keel_cluster_placement(N[0].c, "", 3, &p);
    ck_assert_int_eq(p.state, KEEL_PLACEMENT_LOCAL);
    ck_assert_uint_eq(p.epoch, 1);
    len = sizeof buf;
    ck_assert_int_eq(keel_zk_fake_get(F, "/keel/test/nodes/node-a/state", buf,
                                      &len, NULL),
                     0);
    ck_assert_int_eq(keel_node_state_decode(buf, len, &ns), 0);
    ck_assert_uint_eq(ns.n, SHARDS);
    keel_node_state_free(&ns);
}
END_TEST

START_TEST(test_lost_write_answer)
{
    const char *abcd[] = {"node-a", "node-b", "node-c", "node-d"};
    keel_controller *ctl;
    keel_shard_map before, after;
    keel_zk *zk;
    uint32_t s;
    int who = -1, steps;

    start3(NULL);
    ck_assert_int_eq(controllers(&who), 1);
    ctl = keel_cluster_controller(N[who].c);
    zk = keel_cluster_zk(N[who].c);
    before = zk_map();
    mk(3, NULL);
    /* Step until the controller's map write is in flight, then cut its
     * connection: the server applied the write, the answer is lost. */
    for (steps = 0; steps < 100000 && !ctl->pending_valid; steps++)
        if (!keel_zk_fake_step(F))
            break;
    ck_assert(ctl->pending_valid);
    keel_zk_fake_disconnect(zk);
    settle();
    keel_zk_fake_reconnect(zk);
    settle();
    ck_assert_int_eq(controllers(NULL), 1);
    check_converged(abcd, 4);
    after = zk_map();
    for (s = 0; s < SHARDS; s++) {
        uint64_t eb = keel_map_unit_at(&before, 0, s)->shard_epoch;
        uint64_t ea = keel_map_unit_at(&after, 0, s)->shard_epoch;
        ck_assert(ea == eb || ea == eb + 1);
    }
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

START_TEST(test_shuffled_delivery)
{
    const char *abcd[] = {"node-a", "node-b", "node-c", "node-d"};
    uint64_t seed;

    for (seed = 1; seed <= 5; seed++) {
        int i;
        keel_zk_fake_shuffle(F, seed);
        start3(NULL);
        mk(3, NULL);
        settle();
        check_converged(abcd, 4);
        ck_assert_int_eq(controllers(NULL), 1);
        for (i = 0; i < 6; i++)
            if (N[i].c != NULL)
                kill_node(i);
        settle();
        keel_zk_fake_destroy(F);
        F = keel_zk_fake_create();
    }
}
END_TEST

/* ------------------------------------------- the controller's state watch */

static void raw_session(keel_zk *zk, int event, void *arg)
{
    (void)zk;
    (void)event;
    (void)arg;
}

static void raw_created(keel_zk *zk, int rc, const char *path,
                        const keel_zk_stat *st, void *arg)
{
    (void)zk;
    (void)path;
    (void)st;
    *(int *)arg = rc;
}

/* Creates members/node-x through raw, as a member at 127.0.0.1:7999
 * would; *created gets the answer once it is delivered. */
static void raw_member_x(keel_zk *raw, int *created)
{
    char *member;
    size_t len;

    *created = 1;
    ck_assert_int_eq(keel_member_format("127.0.0.1:7999", NULL, 0, 0, &member,
                                        &len),
                     0);
    ck_assert_int_eq(keel_zk_create(raw, "/keel/test/members/node-x",
                                    member, len, KEEL_ZK_EPHEMERAL,
                                    raw_created, created),
                     0);
    free(member);
}

/* Writes nodes/node-x/state: no units, map_epoch `epoch`. */
static void x_state(uint64_t epoch)
{
    keel_node_state st;
    uint8_t *buf;
    size_t len;

    keel_node_state_init(&st);
    st.map_epoch = epoch;
    ck_assert_int_eq(keel_node_state_encode(&st, &buf, &len), 0);
    ck_assert_int_eq(
        keel_zk_fake_set(F, "/keel/test/nodes/node-x/state", buf, len), 0);
    free(buf);
    keel_node_state_free(&st);
}

/* The controller reads a node's state again only when its watch fires,
 * and leaves a new watch only when none is armed. A read that left no
 * watch proves nothing about one: if the armed watch fired while that
 * read was in flight, no watch is left once it is answered, and the next
 * read must leave one. Here, node-x's state node appears between the
 * controller's get (not found) and its exists, so two watches of the
 * controller are armed on it; one change fires both, the second firing
 * asks for a read that leaves no watch, and the next change fires the
 * watch left by the read before while that read is in flight. Every
 * later change of node-x's state must still reach the controller. */
START_TEST(test_state_watch_rearmed)
{
    keel_controller *ctl;
    keel_zk *raw;
    int id = -1, steps, created = 1;

    mk(0, NULL);
    settle();
    ck_assert_int_eq(controllers(NULL), 1);
    ctl = keel_cluster_controller(N[0].c);

    /* node-x: a member whose state node does not exist yet. */
    ck_assert_int_eq(keel_zk_fake_mkdirs(F, "/keel/test/nodes/node-x", NULL,
                                         0),
                     0);
    ck_assert_int_eq(keel_zk_fake_client(F, &raw), 0);
    ck_assert_int_eq(keel_zk_connect(raw, TIMEOUT, raw_session, NULL), 0);
    settle();
    raw_member_x(raw, &created);

    /* Until the controller's first read of node-x's state is in flight
     * (answered: not found), then create the state node. */
    for (steps = 0; steps < 100000; steps++) {
        id = keel_controller_node_id(ctl, "node-x");
        if (id >= 0 && ctl->busy && ctl->reading == (size_t)id)
            break;
        ck_assert_int_ne(keel_zk_fake_step(F), 0);
    }
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(keel_zk_fake_mkdirs(F, "/keel/test/nodes/node-x/state",
                                         NULL, 0),
                     0);
    settle();
    ck_assert_int_eq(created, 0);
    ck_assert_uint_eq(keel_zk_fake_pending(F), 0);

    /* One change fires both watches; deliver the first only: the read it
     * asks for (leaving a watch) is in flight. */
    x_state(1);
    ck_assert_int_ne(keel_zk_fake_step(F), 0);
    ck_assert(ctl->busy && ctl->reading == (size_t)id);
    /* The next change fires the watch that read left; the read the second
     * firing asks for leaves none and is answered after this change's
     * event. */
    x_state(2);
    settle();
    ck_assert(ctl->nodes[id].have_state);
    ck_assert_uint_eq(ctl->nodes[id].state.map_epoch, 2);

    /* A watch is armed: the next change is seen. */
    x_state(3);
    settle();
    ck_assert(ctl->nodes[id].have_state);
    ck_assert_uint_eq(ctl->nodes[id].state.map_epoch, 3);
    x_state(4);
    settle();
    ck_assert_uint_eq(ctl->nodes[id].state.map_epoch, 4);
    keel_zk_destroy(raw);
}
END_TEST

/* ------------------------------------------ moves that change course */

static const mkopt TRACK = {0, 0, 0, NULL, 0, 1, 0, NULL};

/* node-a, node-b and node-c serve everything; node-d joins while they
 * hold their releases back: the moves to node-d wait for them. */
static void moves_to_d(void)
{
    int i;

    track_data = auto_acquire = 1;
    start3(&TRACK);
    for (i = 0; i < 3; i++)
        N[i].delay_release = 1;
    mk(3, &TRACK);
    settle();
    ck_assert_uint_gt(N[0].npending, 0);
    ck_assert_uint_gt(N[0].npending + N[1].npending + N[2].npending, 3);
}

/* Every unit has no target and its data on its primary; a live primary
 * is the one node that serves it, a dead one's unit is served by none. */
static void check_data(void)
{
    keel_shard_map m = zk_map();
    uint32_t s;
    int k;

    ck_assert_int_eq(data_errors, 0);
    for (s = 0; s < SHARDS; s++) {
        const char *p = keel_map_primary(&m, 0, s);
        int local = 0, pi = node_index(p);
        ck_assert_uint_eq(keel_map_unit_at(&m, 0, s)->target,
                          KEEL_MAP_NO_NODE);
        ck_assert_str_eq(holder[s], p);
        for (k = 0; k < 6; k++) {
            keel_placement pl;
            if (N[k].c == NULL)
                continue;
            keel_cluster_placement(N[k].c, "", s, &pl);
            if (pl.state == KEEL_PLACEMENT_LOCAL) {
                local++;
                ck_assert_str_eq(N[k].name, p);
            }
        }
        ck_assert_int_eq(local, pi >= 0 && N[pi].c != NULL ? 1 : 0);
    }
    keel_map_free(&m);
}

static rel take_pending(tnode *n, size_t i)
{
    rel r = n->pending[i];

    n->pending[i] = n->pending[--n->npending];
    return r;
}

static void complete_all(void)
{
    int i;

    for (i = 0; i < 6; i++) {
        if (N[i].c == NULL)
            continue;
        N[i].delay_release = 0;
        while (N[i].npending > 0) {
            rel r = take_pending(&N[i], 0);
            finish_release(&N[i], r.cap, r.shard, r.epoch, r.to);
        }
    }
    settle();
}

/* A move A -> D is called off (D drained) after A saw the target. Moves
 * whose stream had not started are dropped: the unit stays with its owner
 * at its epoch. One whose stream D had stored finishes to D: A publishes
 * the release to D, the controller writes D primary at epoch + 1 though
 * the map no longer shows the move, and D (leaving) hands it on. Nothing
 * is ever served where its data is not. */
START_TEST(test_cancel_after_stream)
{
    keel_shard_map m;
    rel st;
    size_t before1, before2;

    moves_to_d();
    N[0].pending[0].stored = 1;
    st = N[0].pending[0];
    ck_assert_str_eq(st.to, "node-d");
    before1 = N[1].npending;
    before2 = N[2].npending;
    ck_assert_int_eq(keel_cluster_drain(N[1].c, "node-d"), 0);
    settle();
    /* called off: every release that had not streamed is kept */
    ck_assert_uint_eq(N[0].npending, 1);
    ck_assert_uint_eq(N[1].npending, 0);
    ck_assert_uint_eq(N[2].npending, 0);
    ck_assert_uint_gt(N[1].release_calls, before1); /* told, not ignored */
    (void)before2;
    m = zk_map();
    ck_assert_uint_eq(keel_map_unit_at(&m, 0, st.shard)->target,
                      KEEL_MAP_NO_NODE);
    ck_assert_str_eq(keel_map_primary(&m, 0, st.shard), "node-a");
    keel_map_free(&m);
    /* node-d had stored it: the release ends there */
    complete_all();
    m = zk_map();
    ck_assert_str_eq(keel_map_primary(&m, 0, st.shard), "node-a");
    ck_assert_uint_eq(keel_map_unit_at(&m, 0, st.shard)->shard_epoch,
                      st.epoch + 2); /* via node-d at epoch + 1 */
    keel_map_free(&m);
    check_data();
    check_converged(abc, 3);
}
END_TEST

/* A unit's stream is taken from its primary at that epoch only: D, the
 * target of a move from A, takes A's (and an unchecked one), and refuses
 * one sent in another member's name (EDENIED): a member could otherwise
 * replace a unit it does not own, or, with a "keep", make D take over a
 * unit A still serves. */
START_TEST(test_stream_only_from_its_primary)
{
    rel st;

    moves_to_d();
    st = N[0].pending[0];
    ck_assert_str_eq(st.to, "node-d");
    ck_assert_int_eq(keel_cluster_may_receive(N[3].c, st.cap, st.shard,
                                              st.epoch, "node-a"),
                     0);
    ck_assert_int_eq(keel_cluster_may_receive(N[3].c, st.cap, st.shard,
                                              st.epoch, NULL),
                     0);
    ck_assert_int_eq(keel_cluster_may_receive(N[3].c, st.cap, st.shard,
                                              st.epoch, "node-b"),
                     KEEL_EDENIED);
    ck_assert_int_eq(keel_cluster_may_receive(N[3].c, st.cap, st.shard,
                                              st.epoch, "node-nobody"),
                     KEEL_EDENIED);
    /* At another epoch it is no move to D at all. */
    ck_assert_int_eq(keel_cluster_may_receive(N[3].c, st.cap, st.shard,
                                              st.epoch + 1, "node-a"),
                     KEEL_ENOTTARGET);
    complete_all();
}
END_TEST

/* Moves A -> D are pointed elsewhere (E joined, then D is drained) while
 * A releases. Releases not streamed yet follow the new target; one D had
 * stored finishes at D, and D hands it on. */
START_TEST(test_retarget_during_release)
{
    const char *abce[] = {"node-a", "node-b", "node-c", "node-e"};
    keel_shard_map m;
    size_t i, redirected = 0;
    int k;

    moves_to_d();
    N[0].pending[0].stored = 1;
    mk(4, &TRACK);
    settle();
    ck_assert_int_eq(keel_cluster_drain(N[1].c, "node-d"), 0);
    settle();
    m = zk_map();
    for (k = 0; k < 3; k++)
        for (i = 0; i < N[k].npending; i++) {
            const rel *p = &N[k].pending[i];
            const keel_map_unit *u = keel_map_unit_at(&m, 0, p->shard);
            if (p->stored) {
                ck_assert_str_eq(p->to, "node-d");
                continue;
            }
            /* the hook was told: it streams where the map says now */
            ck_assert_uint_ne(u->target, KEEL_MAP_NO_NODE);
            ck_assert_str_eq(p->to, m.nodes[u->target]);
            ck_assert_str_ne(p->to, "node-d");
            redirected++;
        }
    keel_map_free(&m);
    ck_assert_uint_gt(redirected, 0);
    complete_all();
    check_data();
    check_converged(abce, 4);
}
END_TEST

/* D dies while A streams to it. Releases D never stored are called off
 * and kept; one D had stored is D's: it waits for D like a dead owner's
 * unit, and D, back on its data, serves it. */
START_TEST(test_target_dies_mid_stream)
{
    const char *abcd[] = {"node-a", "node-b", "node-c", "node-d"};
    keel_shard_map m;
    keel_placement pl;
    rel st;
    int k;

    moves_to_d();
    N[0].pending[0].stored = 1;
    st = N[0].pending[0];
    kill_node(3);
    settle();
    ck_assert_uint_eq(N[0].npending, 1);
    ck_assert_uint_eq(N[1].npending, 0);
    ck_assert_uint_eq(N[2].npending, 0);
    st = take_pending(&N[0], 0);
    ck_assert_int_eq(finish_release(&N[0], st.cap, st.shard, st.epoch, st.to),
                     0);
    settle();
    advance(TIMEOUT * 4);
    m = zk_map();
    ck_assert_str_eq(keel_map_primary(&m, 0, st.shard), "node-d");
    ck_assert_uint_eq(keel_map_unit_at(&m, 0, st.shard)->shard_epoch,
                      st.epoch + 1);
    keel_map_free(&m);
    for (k = 0; k < 3; k++) {
        keel_cluster_placement(N[k].c, "", st.shard, &pl);
        ck_assert_int_eq(pl.state, KEEL_PLACEMENT_UNAVAILABLE);
    }
    check_data();
    mk(3, &TRACK);
    settle();
    complete_all();
    check_data();
    check_converged(abcd, 4);
}
END_TEST

/* A purges a unit streamed to D and restarts before it published the
 * release; meanwhile D is drained and the controller points the move at
 * another node. A, back, reports the release to D (its store recorded the
 * recipient with the purge), not to the new target, which has nothing. */
START_TEST(test_restart_between_purge_and_publication)
{
    keel_shard_map m;
    const keel_map_unit *u;
    rel st;

    moves_to_d();
    st = take_pending(&N[0], 0);
    handed[0][st.shard].epoch = st.epoch; /* the purge, then a crash */
    snprintf(handed[0][st.shard].to, sizeof handed[0][0].to, "node-d");
    snprintf(holder[st.shard], sizeof holder[0], "node-d");
    kill_node(0);
    settle();
    ck_assert_int_eq(keel_cluster_drain(N[1].c, "node-d"), 0);
    settle();
    m = zk_map();
    u = keel_map_unit_at(&m, 0, st.shard);
    ck_assert_str_eq(keel_map_primary(&m, 0, st.shard), "node-a");
    ck_assert_uint_ne(u->target, KEEL_MAP_NO_NODE);
    ck_assert_str_ne(m.nodes[u->target], "node-d");
    keel_map_free(&m);
    mk(0, &TRACK);
    settle();
    complete_all();
    check_data();
    check_converged(abc, 3);
}
END_TEST

/* A unit being acquired gets a target, then the move is called off before
 * the acquire completes: the release it was waiting for is off too. */
START_TEST(test_cancel_while_acquiring)
{
    mkopt a = {0, 0, 0, NULL, 0, 1, 0, NULL};
    size_t i;
    uint32_t s;

    nacquires = 0;
    mk(0, &a);
    settle();
    ck_assert_uint_eq(nacquires, SHARDS);
    mk(1, NULL);
    settle(); /* moves to node-b wait for node-a's acquires */
    {
        keel_shard_map m = zk_map();
        ck_assert_int_gt(targets(&m), 0);
        keel_map_free(&m);
    }
    kill_node(1);
    settle(); /* called off */
    for (i = 0; i < nacquires; i++)
        ck_assert_int_eq(keel_cluster_acquired(N[0].c, acquires[i].cap,
                                               acquires[i].shard,
                                               acquires[i].epoch),
                         0);
    settle();
    ck_assert_int_eq(N[0].release_calls, 0);
    for (s = 0; s < SHARDS; s++) {
        keel_placement p;
        keel_cluster_placement(N[0].c, "", s, &p);
        ck_assert_int_eq(p.state, KEEL_PLACEMENT_LOCAL);
        ck_assert_uint_eq(p.epoch, 1);
    }
}
END_TEST

/* node-c dies and is forgotten; it joins again while the controller, not
 * having seen it back yet, moves its units to others at epoch + 1 without
 * waiting for its release. node-c, serving from the map it read on
 * joining, would serve them next to their new owners until it reads the
 * promotion, and lose data it still has. The promotion must not land
 * while node-c is a member: the write proves its absence, else fails and
 * the moves are decided again with node-c live. node-c keeps its units;
 * none is taken from it without a handoff. */
START_TEST(test_forgotten_owner_back_mid_promotion)
{
    keel_controller *ctl;
    keel_zk *ctlzk;
    int steps, who = -1, done = 0;

    start3(NULL);
    ck_assert_int_ge(first_local(2), 0);
    ck_assert_int_eq(controllers(&who), 1);
    ck_assert_int_eq(who, 0);
    ctl = keel_cluster_controller(N[0].c);
    ctlzk = keel_cluster_zk(N[0].c);
    kill_node(2);
    settle();
    ck_assert_int_eq(keel_cluster_forget(N[1].c, "node-c", NULL), 0);
    /* The controller lists forgotten/ (node-c is there) ... */
    for (steps = 0; steps < 100000; steps++) {
        if (ctl->busy && ctl->forgot_arming && !ctl->forgot_watched)
            break;
        ck_assert(keel_zk_fake_step(F));
    }
    ck_assert(ctl->busy && ctl->forgot_arming);
    /* ... and hears nothing more until node-c is back and serves the
     * units the map it read gives it. */
    keel_zk_fake_hold(ctlzk, 1);
    mk(2, NULL);
    N[2].delay_release = 1;
    for (steps = 0; steps < 100000; steps++) {
        if (first_local(2) >= 0 &&
            keel_zk_fake_num_children(F, "/keel/test/forgotten") == 0)
            break;
        /* its purge is durable at once: the mark may go */
        if (forgotten_calls[2] > 0 && !done) {
            keel_cluster_forgotten_done(N[2].c, 0);
            done = 1;
        }
        ck_assert(keel_zk_fake_step(F));
    }
    ck_assert_int_ge(first_local(2), 0);
    keel_zk_fake_hold(ctlzk, 0);
    settle();
    ck_assert_int_eq(N[2].drop_calls, 0);
    N[2].delay_release = 0;
    complete_releases(&N[2]);
    settle();
    ck_assert_int_eq(N[2].drop_calls, 0);
    check_converged(abc, 3);
}
END_TEST

static void raw_removed(keel_zk *zk, int rc, void *arg)
{
    (void)zk;
    *(int *)arg = rc;
}

/* Every listing of members/ (a member comes or goes, one is marked
 * leaving) reads each member with a data watch. The servers keep one
 * watch per path and session, but the client keeps what it registers:
 * a listing must leave a watch only where none is armed, or the
 * registry grows by one entry per member with every listing. */
START_TEST(test_member_watches_bounded)
{
    keel_zk *raw;
    char *member;
    size_t len, after_first = 0;
    int round, rc;

    start3(NULL);
    ck_assert_int_eq(keel_zk_fake_client(F, &raw), 0);
    ck_assert_int_eq(keel_zk_connect(raw, TIMEOUT, raw_session, NULL), 0);
    settle();
    ck_assert_int_eq(keel_member_format("127.0.0.1:7999", NULL, 0, 0, &member,
                                        &len),
                     0);
    for (round = 0; round < 6; round++) {
        /* node-x comes and goes: every node lists members/ twice */
        rc = 1;
        ck_assert_int_eq(keel_zk_create(raw, "/keel/test/members/node-x",
                                        member, len, KEEL_ZK_EPHEMERAL,
                                        raw_created, &rc),
                         0);
        settle();
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(keel_cluster_members(N[0].c), 4);
        rc = 1;
        ck_assert_int_eq(keel_zk_remove(raw, "/keel/test/members/node-x",
                                        KEEL_ZK_ANY_VERSION, raw_removed,
                                        &rc),
                         0);
        settle();
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(keel_cluster_members(N[0].c), 3);
        if (round == 0)
            after_first = keel_zk_fake_num_watches(F);
        else
            ck_assert_uint_eq(keel_zk_fake_num_watches(F), after_first);
    }
    /* a data change still reaches every node */
    ck_assert_int_eq(keel_cluster_drain(N[0].c, "node-c"), 0);
    settle();
    for (round = 0; round < 3; round++)
        ck_assert(keel_cluster_member_leaving(N[round].c, "node-c"));
    free(member);
    keel_zk_destroy(raw);
}
END_TEST

/* An answer that never comes while a node joins (lost for good): the node
 * does not stay out of the cluster in silence; once the join has taken
 * far longer than it can (30 s here), it starts over with a new session,
 * and joins. */
START_TEST(test_stuck_join_starts_over)
{
    mk(0, NULL);
    settle();
    mk(1, NULL);
    keel_zk_fake_swallow_create(keel_cluster_zk(N[1].c),
                                "/keel/test/members/node-b");
    settle();
    ck_assert_int_eq(keel_cluster_phase(N[1].c), KEEL_CLUSTER_JOINING);
    advance(20000);
    ck_assert_int_eq(keel_cluster_phase(N[1].c), KEEL_CLUSTER_JOINING);
    ck_assert_uint_eq(keel_cluster_members(N[0].c), 2); /* its znode */
    advance(15000);
    ck_assert_int_eq(keel_cluster_phase(N[1].c), KEEL_CLUSTER_RUNNING);
    ck_assert_uint_eq(keel_cluster_members(N[0].c), 2);
    ck_assert_uint_eq(keel_cluster_members(N[1].c), 2);
}
END_TEST

/* Watches lost with a connection (as with a server that came back
 * without them): once reconnected, a node lists members/ again with
 * fresh watches, so a member that joins afterwards is seen. */
START_TEST(test_members_listed_again_after_reconnect)
{
    keel_zk *raw, *zk;
    int rc;

    start3(NULL);
    ck_assert_int_eq(keel_zk_fake_client(F, &raw), 0);
    ck_assert_int_eq(keel_zk_connect(raw, TIMEOUT, raw_session, NULL), 0);
    settle();
    zk = keel_cluster_zk(N[0].c);
    keel_zk_fake_disconnect(zk);
    keel_zk_fake_lose_watches(zk, "/keel/test/members");
    keel_zk_fake_reconnect(zk);
    settle();
    raw_member_x(raw, &rc);
    settle();
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(keel_cluster_members(N[0].c), 4);
    ck_assert_uint_eq(keel_cluster_members(N[1].c), 4);
    keel_zk_destroy(raw);
}
END_TEST

/* A unit streamed to node-b, then given a new target (node-c) before
 * node-b read the map that made it the owner: node-b's store holds the
 * unit's records, so node-b must release it through its release hook
 * (which sends them on), not "at once" as if it held nothing. */
START_TEST(test_chain_move_streams)
{
    keel_zk *zkb;
    keel_shard_map m;
    size_t i, chained = 0;
    uint32_t s;
    uint8_t via_b[SHARDS];

    mk(0, NULL);
    settle();
    N[0].delay_release = 1;
    mk(1, NULL);
    settle();
    ck_assert_uint_gt(N[0].npending, 0);
    zkb = keel_cluster_zk(N[1].c);
    keel_zk_fake_hold(zkb, 1); /* node-b sees no map for now */
    memset(via_b, 0, sizeof via_b);
    for (i = 0; i < N[0].npending; i++) {
        /* node-a streamed these to node-b (its release hook ran) */
        via_b[N[0].pending[i].shard] = 1;
        ck_assert_int_eq(keel_cluster_released(N[0].c, N[0].pending[i].cap,
                                               N[0].pending[i].shard,
                                               N[0].pending[i].epoch,
                                               N[0].pending[i].to), 0);
    }
    N[0].npending = 0;
    N[0].delay_release = 0;
    settle(); /* primary node-b written; node-b has not read it */
    N[1].delay_release = 1;
    mk(2, NULL);
    settle(); /* node-c joins: some of node-b's units get target node-c */
    keel_zk_fake_hold(zkb, 0);
    settle();
    m = zk_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = keel_map_unit_at(&m, 0, s);
        if (via_b[s] && ((u->target != KEEL_MAP_NO_NODE &&
                          strcmp(m.nodes[u->target], "node-c") == 0) ||
                         strcmp(keel_map_primary(&m, 0, s), "node-c") == 0))
            chained++;
    }
    keel_map_free(&m);
    ck_assert_uint_gt(chained, 0);
    /* Every one of them waits for node-b's release hook. */
    ck_assert_uint_eq(N[1].npending, chained);
}
END_TEST

/* Counts the lines of fd's file (a test's captured stderr) holding what. */
static int count_in_file(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f) != NULL)
        if (strstr(line, what) != NULL)
            n++;
    fclose(f);
    return n;
}

/* Member addresses: what a node publishes must be HOST:PORT; a member
 * whose published address is not (written by other software, or by hand)
 * stays a live member, but no node can connect to it: it is placed
 * nothing, its units move to the others, its address is not handed to the
 * runtime, and the warning about it comes once, not at every listing. */
START_TEST(test_member_bad_address)
{
    static const char *const bad[] = {":7001", "h:", "h:0", "h:65536",
                                      "h:x1", "h:1:2", "a b:1", "h",
                                      "h:+1", "h:-1", "[::1]:1", ""};
    char path[128], logpath[] = "/tmp/keel-coord-log-XXXXXX";
    const char *caps[] = {"gpu"};
    keel_shard_map m;
    keel_member mb;
    char *data, addr[64];
    size_t len, i;
    int fd, saved;

    /* The syntax, and the boundary into ZooKeeper. */
    ck_assert(keel_addr_valid("127.0.0.1:7420", 14, 0));
    ck_assert(keel_addr_valid("node-1.example_x:1", 18, 0));
    ck_assert(keel_addr_valid("h:65535", 7, 0));
    ck_assert(!keel_addr_valid("h:0", 3, 0));
    ck_assert(keel_addr_valid("h:0", 3, 1));
    ck_assert(!keel_addr_valid("h:1\0", 4, 0));
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!keel_addr_valid(bad[i], strlen(bad[i]), 0), "%s",
                      bad[i]);
        ck_assert_int_eq(keel_member_format(bad[i], caps, 1, 0, &data, &len),
                         KEEL_EINVAL);
    }
    memset(&mb, 0, sizeof mb);
    ck_assert_int_eq(keel_member_parse("addr :7001\ncaps \n", 17, &mb), 0);
    ck_assert_int_eq(mb.addr_bad, 1);
    ck_assert_str_eq(mb.addr, ":7001");
    ck_assert_int_eq(keel_member_parse("addr h:7001\ncaps \n", 18, &mb), 0);
    ck_assert_int_eq(mb.addr_bad, 0);

    /* Node-b's member data is replaced by one with a bad address. */
    fd = mkstemp(logpath);
    ck_assert_int_ge(fd, 0);
    saved = dup(2);
    ck_assert_int_eq(dup2(fd, 2), 2);
    mk(0, NULL);
    settle();
    mk(1, NULL);
    settle();
    m = zk_map();
    ck_assert_uint_gt(owned_by(&m, "node-b"), 0);
    keel_map_free(&m);
    ck_assert_int_eq(keel_cluster_member_addr(N[0].c, "node-b", addr,
                                              sizeof addr),
                     0);
    snprintf(path, sizeof path, "/keel/test/members/node-b");
    ck_assert_int_eq(keel_zk_fake_set(F, path, "addr :7001\ncaps \n", 17),
                     0);
    settle();
    ck_assert_uint_eq(keel_cluster_members(N[0].c), 2);
    ck_assert_int_eq(keel_cluster_member_addr(N[0].c, "node-b", addr,
                                              sizeof addr),
                     KEEL_EADDR);
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-b"), 0);
    ck_assert_int_eq(targets(&m), 0);
    keel_map_free(&m);
    /* More listings (a member joins, another leaves): no new warning. */
    mk(2, NULL);
    settle();
    kill_node(2);
    settle();
    m = zk_map();
    ck_assert_uint_eq(owned_by(&m, "node-b"), 0);
    keel_map_free(&m);
    fflush(stderr);
    ck_assert_int_eq(dup2(saved, 2), 2);
    close(saved);
    close(fd);
    /* Once per node that lists the members (a and b), and c, which saw
     * it once in its life. */
    ck_assert_int_eq(count_in_file(logpath, "publishes the address ':7001'"),
                     3);
    unlink(logpath);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_cluster");
    TCase *tc = tcase_create("cluster");

    keel_log_set_level(KEEL_LOG_WARN);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_bootstrap_and_shard_mismatch);
    tcase_add_test(tc, test_three_nodes_converge);
    tcase_add_test(tc, test_join_moves_a_fraction);
    tcase_add_test(tc, test_drain_moves_everything_off);
    tcase_add_test(tc, test_member_leaving_format);
    tcase_add_test(tc, test_members_hook_and_insecure);
    tcase_add_test(tc, test_capabilities);
    tcase_add_test(tc, test_capabilities_past_the_map_limit);
    tcase_add_test(tc, test_controller_failover);
    tcase_add_test(tc, test_dead_owner_waits);
    tcase_add_test(tc, test_dead_owner_reassigned_after_grace);
    tcase_add_test(tc, test_forget_dead_node);
    tcase_add_test(tc, test_replaced_store_refused);
    tcase_add_test(tc, test_refused_store_check_across_expiry);
    tcase_add_test(tc, test_leftover_forgotten_mark_protects);
    tcase_add_test(tc, test_forget_waits_for_session);
    tcase_add_test(tc, test_dead_owner_grace_negotiated);
    tcase_add_test(tc, test_new_controller_knows_dead_timeout);
    tcase_add_test(tc, test_self_fencing);
    tcase_add_test(tc, test_lease_lapses_without_answers);
    tcase_add_test(tc, test_expiry_wins_over_lease);
    tcase_add_test(tc, test_cut_off_follower_fences);
    tcase_add_test(tc, test_short_timeout_refused);
    tcase_add_test(tc, test_write_epoch);
    tcase_add_test(tc, test_expiry_rejoins);
    tcase_add_test(tc, test_deposed_mid_move);
    tcase_add_test(tc, test_acquire_hook);
    tcase_add_test(tc, test_lost_write_answer);
    tcase_add_test(tc, test_shuffled_delivery);
    tcase_add_test(tc, test_state_watch_rearmed);
    tcase_add_test(tc, test_chain_move_streams);
    tcase_add_test(tc, test_member_watches_bounded);
    tcase_add_test(tc, test_members_listed_again_after_reconnect);
    tcase_add_test(tc, test_stuck_join_starts_over);
    tcase_add_test(tc, test_cancel_after_stream);
    tcase_add_test(tc, test_stream_only_from_its_primary);
    tcase_add_test(tc, test_retarget_during_release);
    tcase_add_test(tc, test_target_dies_mid_stream);
    tcase_add_test(tc, test_restart_between_purge_and_publication);
    tcase_add_test(tc, test_cancel_while_acquiring);
    tcase_add_test(tc, test_forgotten_owner_back_mid_promotion);
    tcase_add_test(tc, test_member_bad_address);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
