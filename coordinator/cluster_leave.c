/* Cluster mode: a node leaving the cluster (see cluster.h; docs/cluster.md,
 * "Graceful leave" and "Forgetting a dead node").
 *
 * Graceful leave: an operator's drain marks a member leaving in its
 * members/<node> znode, and the controller moves its units to the others;
 * what a node holds, and whether another member could take it.
 *
 * Forget: an operator's forget records forgotten/<node> for a node that
 * is gone for good, so that its units move from empty; such a node that
 * joins again purges its stale copies before the mark is removed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/cluster_int.h"
#include "coordinator/layout.h"
#include "coordinator/membership.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk.h"
#include "keel.h"

/* ------------------------------------------------------- graceful leave */

static int drain_get(keel_cluster *c);

static void drain_set_done(keel_zk *zk, int rc, const keel_zk_stat *st,
                           void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    (void)st;
    c->drain_busy = 0;
    if (rc == KEEL_EBADVERSION && ++c->drain_tries < 5 &&
        drain_get(c) == 0)
        return; /* changed meanwhile: read it again */
    if (rc == 0)
        keel_info("cluster: node %s marked leaving", c->drain_name);
    else
        keel_warn("cluster: marking node %s leaving failed: %s",
                  c->drain_name, keel_strerror(rc));
}

static void drain_got(keel_zk *zk, int rc, const void *data, size_t len,
                      const keel_zk_stat *st, void *arg)
{
    keel_cluster *c = arg;
    char p[KEEL_ZK_PATH_MAX];
    char *out = NULL;
    size_t out_len = 0;

    (void)zk;
    c->drain_busy = 0;
    if (rc == 0)
        rc = keel_member_mark_leaving(data, len, &out, &out_len);
    if (rc == KEEL_EEXIST)
        return; /* already leaving */
    if (rc == 0) {
        keel_layout_path(&c->layout, p, "members", c->drain_name, NULL);
        rc = keel_zk_set(c->zk, p, out, out_len, st->version, drain_set_done,
                         c);
        free(out);
        if (rc == 0) {
            c->drain_busy = 1;
            return;
        }
    }
    keel_warn("cluster: marking node %s leaving failed: %s", c->drain_name,
              keel_strerror(rc));
}

static int drain_get(keel_cluster *c)
{
    char p[KEEL_ZK_PATH_MAX];
    int rc;

    keel_layout_path(&c->layout, p, "members", c->drain_name, NULL);
    rc = keel_zk_get(c->zk, p, NULL, NULL, drain_got, c);
    if (rc == 0)
        c->drain_busy = 1;
    return rc;
}

static int can_take_but(const keel_cluster *c, const char *cap,
                        const char *but);

const char *keel_cluster_drain_stranded(const keel_cluster *c,
                                        const char *name)
{
    uint32_t ci, s;
    int idx;

    if (!c->have_map || (idx = keel_map_node_index(&c->map, name)) < 0)
        return NULL;
    for (ci = 0; ci < c->map.ncaps; ci++) {
        int leads = 0;
        for (s = 0; s < c->map.shard_count && !leads; s++) {
            const keel_map_unit *u = keel_map_unit_at(&c->map, ci, s);
            leads = u->nreplicas > 0 && u->replicas[0] == idx;
        }
        if (leads && !can_take_but(c, c->map.caps[ci], name))
            return c->map.caps[ci];
    }
    return NULL;
}

int keel_cluster_drain(keel_cluster *c, const char *name)
{
    const keel_member *m;

    if (c == NULL || name == NULL || !keel_name_valid(name, 0))
        return KEEL_EINVAL;
    if (c->phase != KEEL_CLUSTER_RUNNING)
        return KEEL_ESESSION; /* not a member in this session (yet) */
    if ((m = keel_membership_find(&c->members, name)) == NULL)
        return KEEL_ENOTFOUND;
    if (m->leaving)
        return 0;
    if (c->drain_busy)
        return KEEL_EOVERLOAD;
    snprintf(c->drain_name, sizeof c->drain_name, "%s", name);
    c->drain_tries = 0;
    return drain_get(c);
}

int keel_cluster_member_leaving(const keel_cluster *c, const char *name)
{
    const keel_member *m = keel_membership_find(&c->members, name);

    return m != NULL && m->leaving;
}

/* Whether a live member other than `but`, not leaving, has cap. */
static int can_take_but(const keel_cluster *c, const char *cap,
                        const char *but)
{
    size_t i, j;

    for (i = 0; i < c->members.nview; i++) {
        const keel_member *m = &c->members.view[i];
        if (m->leaving || m->addr_bad || strcmp(m->name, but) == 0)
            continue;
        if (cap[0] == '\0')
            return 1;
        for (j = 0; j < m->ncaps; j++)
            if (strcmp(m->caps[j], cap) == 0)
                return 1;
    }
    return 0;
}

static int can_take(const keel_cluster *c, const char *cap)
{
    return can_take_but(c, cap, c->node);
}

void keel_cluster_held(const keel_cluster *c, size_t *held, size_t *movable)
{
    uint32_t ci, s;

    *held = *movable = 0;
    if (!c->have_map || c->my_idx < 0)
        return;
    for (ci = 0; ci < c->map.ncaps; ci++) {
        int any = can_take(c, c->map.caps[ci]);
        for (s = 0; s < c->map.shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(&c->map, ci, s);
            if (u->nreplicas > 0 && u->replicas[0] == c->my_idx) {
                (*held)++;
                if (any)
                    (*movable)++;
            }
        }
    }
}

/* ------------------------------------------------------------- forget */

static void forget_done(keel_zk *zk, int rc, size_t failed,
                        const keel_zk_op_result *res, size_t n, void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    (void)res;
    (void)n;
    c->forget_busy = 0;
    if (rc == 0 && c->forget_units == 0)
        keel_warn("cluster: node %s forgotten: it led no unit, so no state "
                  "is lost; copies it kept as a backup are deleted if it "
                  "comes back",
                  c->forget_name);
    else if (rc == 0)
        keel_warn("cluster: node %s forgotten: its %zu units move to live "
                  "members; the state they held is lost",
                  c->forget_name, c->forget_units);
    else if (rc == KEEL_EEXIST && failed == 0)
        keel_warn("cluster: not forgetting node %s: it is a live member",
                  c->forget_name);
    else if (rc == KEEL_EEXIST && failed == 2)
        keel_info("cluster: node %s was already forgotten", c->forget_name);
    else
        keel_warn("cluster: forgetting node %s failed: %s", c->forget_name,
                  keel_strerror(rc));
}

int keel_cluster_forget(keel_cluster *c, const char *name, size_t *units)
{
    char mpath[KEEL_ZK_PATH_MAX], fpath[KEEL_ZK_PATH_MAX];
    keel_zk_op ops[3];
    size_t count = 0;
    int rc, idx;

    if (units != NULL)
        *units = 0;
    if (c == NULL || name == NULL || !keel_name_valid(name, 0))
        return KEEL_EINVAL;
    if (c->phase != KEEL_CLUSTER_RUNNING)
        return KEEL_ESESSION; /* not a member in this session (yet) */
    /* Two incarnations must never serve a unit at once: a live member
     * still serves its units, so it is drained, not forgotten. */
    if (keel_membership_find(&c->members, name) != NULL)
        return KEEL_EEXIST;
    if (c->forget_busy)
        return KEEL_EOVERLOAD;
    /* A name the map does not list either was never a node of this
     * cluster (a typo), or was forgotten and holds nothing any more. */
    if (!c->have_map || keel_map_node_index(&c->map, name) < 0)
        return KEEL_ENOTFOUND;
    if ((idx = keel_map_node_index(&c->map, name)) >= 0)
        count = keel_map_units_led(&c->map, (uint32_t)idx);
    /* Creating and deleting members/<name> in the same transaction proves
     * it absent when forgotten/<name> is created (no join in between). */
    memset(ops, 0, sizeof ops);
    keel_layout_path(&c->layout, mpath, "members", name, NULL);
    keel_layout_path(&c->layout, fpath, "forgotten", name, NULL);
    ops[0].type = KEEL_ZK_OP_CREATE;
    ops[0].path = mpath;
    ops[1].type = KEEL_ZK_OP_DELETE;
    ops[1].path = mpath;
    ops[1].version = KEEL_ZK_ANY_VERSION;
    ops[2].type = KEEL_ZK_OP_CREATE;
    ops[2].path = fpath;
    snprintf(c->forget_name, sizeof c->forget_name, "%s", name);
    c->forget_units = count;
    rc = keel_zk_multi(c->zk, ops, 3, forget_done, c);
    if (rc != 0)
        return rc;
    c->forget_busy = 1;
    if (units != NULL)
        *units = count;
    return 0;
}

/* Joining again: was this node forgotten? Then its records of units it
 * does not own are stale (others own them now, from empty) and go before
 * forgotten/<node> is removed. */
static void rejoin_removed(keel_zk *zk, int rc, void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    c->rejoin_busy = 0;
    if (c->rejoin != R_REMOVE)
        return;
    if (rc == KEEL_ECONNLOSS) {
        c->rejoin_stalled = 1;
        return;
    }
    c->rejoin = R_NONE;
    if (rc == 0 || rc == KEEL_ENOTFOUND)
        keel_info("cluster: %s was forgotten: stale local units purged, "
                  "forgotten/%s removed",
                  c->node, c->node);
    else if (rc != KEEL_ESESSION)
        keel_warn("cluster: removing forgotten/%s failed: %s", c->node,
                  keel_strerror(rc));
}

static void rejoin_got(keel_zk *zk, int rc, const keel_zk_stat *st,
                       void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    (void)st;
    c->rejoin_busy = 0;
    if (c->rejoin != R_CHECK)
        return;
    if (rc == KEEL_ECONNLOSS) {
        c->rejoin_stalled = 1;
        return;
    }
    if (rc != 0) {
        if (rc != KEEL_ENOTFOUND && rc != KEEL_ESESSION)
            keel_warn("cluster: checking forgotten/%s failed: %s", c->node,
                      keel_strerror(rc));
        c->rejoin = R_NONE;
        return;
    }
    keel_warn("cluster: %s was forgotten by the operator: purging its "
              "stale units",
              c->node);
    c->rejoin = R_PURGE;
    /* A map from before the session ended may be older than the moves
     * that followed the forget: purge against a map read since. */
    if (c->have_map && c->map_this_session)
        keel__cluster_rejoin_purge(c);
}

int keel__cluster_rejoin_step(keel_cluster *c)
{
    char p[KEEL_ZK_PATH_MAX];
    int rc;

    keel_layout_path(&c->layout, p, "forgotten", c->node, NULL);
    if (c->rejoin == R_CHECK)
        rc = keel_zk_exists(c->zk, p, NULL, NULL, rejoin_got, c);
    else if (c->rejoin == R_REMOVE)
        rc = keel_zk_remove(c->zk, p, KEEL_ZK_ANY_VERSION, rejoin_removed,
                            c);
    else
        return 0;
    if (rc == 0)
        c->rejoin_busy = 1;
    return rc;
}

static void rejoin_remove(keel_cluster *c)
{
    int rc;

    c->rejoin = R_REMOVE;
    if ((rc = keel__cluster_rejoin_step(c)) != 0) {
        if (rc == KEEL_ECONNLOSS)
            c->rejoin_stalled = 1;
        else
            c->rejoin = R_NONE;
    }
}

/* The mark goes only once the purge is durable: removed earlier, a crash
 * would bring the node back with its stale copies and no mark to say so.
 * The hook may complete before it returns. */
void keel__cluster_rejoin_purge(keel_cluster *c)
{
    if (c->hooks.forgotten == NULL) {
        rejoin_remove(c);
        return;
    }
    c->rejoin = R_PURGING;
    c->hooks.forgotten(c, c->hooks.data);
}

void keel_cluster_forgotten_done(keel_cluster *c, int status)
{
    if (c == NULL || c->rejoin != R_PURGING)
        return;
    if (status != 0) {
        keel_warn("cluster: %s could not purge its stale units (%s); "
                  "forgotten/%s stays, the purge runs again with the next "
                  "map",
                  c->node, keel_strerror(status), c->node);
        c->rejoin = R_PURGE;
        return;
    }
    rejoin_remove(c);
}
