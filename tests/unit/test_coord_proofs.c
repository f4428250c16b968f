/* The proof of absence that goes with a promotion (coordinator/
 * controller.c, write_map): a map write that gives away the units of an
 * owner without its release (a failover, a dead owner's units) also
 * creates and deletes that owner's member znode, so that it fails if the
 * owner is a member again by then. Here 17 owners are gone in one
 * listing (a write used to prove at most 16 absent, and gave the units
 * of the others away unproven): whichever of them is back when the write
 * is made, the write does not land. Fake ZooKeeper, deterministic. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/controller.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk_fake.h"
#include "fakeclu.h"
#include "keel.h"
#include "testutil.h"

#define SHARDS 1024
#define TIMEOUT 3000
#define MAXN 20
#define FORMATION 3000

static keel_zk_fake *F;
static keel_cluster *C[MAXN];
static char name_of_[MAXN][16];
static char store_of_[MAXN][KEEL_MAP_STORE_HEX + 1];

static void mk(int i, int replicas)
{
    keel_cluster_options o;
    char addr[32];
    keel_zk *zk;

    snprintf(name_of_[i], sizeof name_of_[i], "node-%02d", i);
    snprintf(store_of_[i], sizeof store_of_[i], "%032x", 0xa0 + i);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", 7000 + i);
    keel_cluster_options_init(&o);
    o.cluster = "test";
    o.node = name_of_[i];
    o.address = addr;
    o.shard_count = SHARDS;
    o.session_timeout_ms = TIMEOUT;
    o.replicas = replicas;
    o.store_id = store_of_[i];
    ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
    ck_assert_int_eq(keel_cluster_create(NULL, &o, zk, &C[i]), 0);
    ck_assert_int_eq(keel_cluster_start(C[i]), 0);
}

static keel_cluster *cluster_at(size_t i)
{
    return C[i];
}

static void tick_all(void)
{
    size_t i;

    for (i = 0; i < MAXN; i++)
        if (C[i] != NULL)
            keel_cluster_tick(C[i], keel_zk_fake_now(F));
}

static void settle(void)
{
    tu_fake_settle(F, cluster_at, MAXN, 100000);
}

static void advance(uint64_t ms)
{
    tu_fake_advance(F, ms, cluster_at, MAXN, 100000);
}

static void setup(void)
{
    F = keel_zk_fake_create();
    memset(C, 0, sizeof C);
}

static void teardown(void)
{
    int i;

    for (i = 0; i < MAXN; i++)
        if (C[i] != NULL) {
            keel_cluster_destroy(C[i]);
            C[i] = NULL;
        }
    keel_zk_fake_destroy(F);
}

static keel_shard_map zk_map(void)
{
    return tu_fake_map(F, "/keel/test/map");
}

/* The 17th distinct gone primary, in unit order, of a unit with a live
 * in-sync backup: the order in which the controller collects the owners
 * to prove absent, of which a write once proved only the first 16. */
static int seventeenth_owner(const keel_shard_map *m, int nlive)
{
    const char *seen[MAXN];
    size_t n = 0, k;
    uint32_t s;
    int r, i;

    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = keel_map_unit_at(m, 0, s);
        const char *p;
        int ok = 0;
        if (u->nreplicas < 2)
            continue;
        p = m->nodes[u->replicas[0]];
        for (i = 0; i < nlive; i++)
            if (strcmp(p, name_of_[i]) == 0)
                break;
        if (i < nlive)
            continue; /* live: nothing moves */
        for (r = 1; r < u->nreplicas; r++)
            for (i = 0; i < nlive; i++)
                if (keel_map_insync(u, r) &&
                    strcmp(m->nodes[u->replicas[r]], name_of_[i]) == 0)
                    ok = 1;
        if (!ok)
            continue;
        for (k = 0; k < n && strcmp(seen[k], p) != 0; k++)
            ;
        if (k < n)
            continue;
        seen[n++] = p;
        if (n == 17) {
            for (i = 0; i < MAXN; i++)
                if (strcmp(name_of_[i], p) == 0)
                    return i;
        }
    }
    return -1;
}

/* Whether the units of `owner` in `before` have another primary in
 * `after` (failed over). */
static int units_moved(const keel_shard_map *before,
                       const keel_shard_map *after, const char *owner)
{
    uint32_t s;

    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = keel_map_unit_at(before, 0, s);
        const keel_map_unit *ua = keel_map_unit_at(after, 0, s);
        if (ub->nreplicas > 0 && ua->nreplicas > 0 &&
            strcmp(before->nodes[ub->replicas[0]], owner) == 0 &&
            strcmp(after->nodes[ua->replicas[0]], owner) != 0)
            return 1;
    }
    return 0;
}

/* One run of the scenario below: x's member znode comes back once the
 * controller has submitted k requests after the deaths. Returns whether
 * a map that gave x's units away landed while x's znode was there. */
static int back_after(uint64_t k, int *created_out)
{
    static uint8_t mdata[4096];
    char mpath[128];
    size_t mlen = sizeof mdata, steps;
    keel_shard_map prev, m;
    uint64_t req0;
    int i, x, created = 0, moved_while_member = 0;

    mk(0, 2);
    settle();
    ck_assert(keel_cluster_is_controller(C[0]));
    for (i = 1; i < MAXN; i++)
        mk(i, 2);
    settle();
    advance(FORMATION);
    advance(1000);
    prev = zk_map();
    x = seventeenth_owner(&prev, 3);
    ck_assert_int_ge(x, 3);
    snprintf(mpath, sizeof mpath, "/keel/test/members/%s", name_of_[x]);
    ck_assert_int_eq(keel_zk_fake_get(F, mpath, mdata, &mlen, NULL), 0);
    /* the controller hears nothing while 17 nodes die */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    for (i = 3; i < MAXN; i++) {
        keel_cluster_destroy(C[i]);
        C[i] = NULL;
    }
    keel_zk_fake_advance(F, TIMEOUT * 2);
    settle();
    ck_assert_int_ne(keel_zk_fake_get(F, mpath, NULL, NULL, NULL), 0);
    req0 = keel_zk_fake_requests(keel_cluster_zk(C[0]));
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    for (steps = 0; steps < 1000000 && !moved_while_member; steps++) {
        if (!keel_zk_fake_step(F)) {
            tick_all();
            if (!keel_zk_fake_step(F))
                break;
        }
        /* a write made in this step was made before x's return below */
        m = zk_map();
        if (m.map_epoch != prev.map_epoch) {
            if (created && units_moved(&prev, &m, name_of_[x]))
                moved_while_member = 1;
            keel_map_free(&prev);
            prev = m;
        } else {
            keel_map_free(&m);
        }
        if (!created &&
            keel_zk_fake_requests(keel_cluster_zk(C[0])) >= req0 + k) {
            /* x is back (its znode as it published it) */
            ck_assert_int_eq(keel_zk_fake_mkdirs(F, mpath, mdata, mlen), 0);
            created = 1;
        }
    }
    keel_map_free(&prev);
    if (moved_while_member)
        fprintf(stderr, "%s back after %llu controller requests: its units "
                        "were given away by a write made while it was a "
                        "member\n",
                name_of_[x], (unsigned long long)k);
    *created_out = created;
    return moved_while_member;
}

/* Seventeen of twenty nodes (R = 2) die while the controller hears
 * nothing; the 17th owner is a member again (its member znode back)
 * when the write that gives its units away is made. With a proof that
 * write fails (EEXIST) and is decided again with the owner live; without
 * one it lands, and the owner, which may have read the map that still
 * gives it the units, serves them beside their new primaries. Its return
 * is tried at every point of the controller's decision (after each of
 * its first requests after the deaths). */
START_TEST(test_owner_back_before_the_write_keeps_its_units)
{
    uint64_t k;
    int created, bad = 0;

    for (k = 1; k <= 12 && !bad; k++) {
        if (k > 1) {
            teardown();
            setup();
        }
        bad = back_after(k, &created);
        ck_assert(created);
    }
    ck_assert_msg(!bad, "a write gave away the units of an owner that was "
                        "a member again: it carried no proof of its "
                        "absence");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_proofs");
    TCase *tc = tcase_create("agents");

    keel_log_set_level(KEEL_LOG_ERROR);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_owner_back_before_the_write_keeps_its_units);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
