/* Cluster mode: the node's published state, nodes/<node>/state (what it
 * holds, and its requests to drop or add a backup), written as the units
 * change; add requests batched one per map, and withdrawn ones settled by
 * a map read. See cluster_int.h. */
#include <stdint.h>
#include <stdlib.h>

#include "common/log.h"
#include "coordinator/cluster_int.h"
#include "coordinator/layout.h"
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "keel.h"

static void adds_written(keel_cluster *c);

static void state_written(keel_zk *zk, int rc, const keel_zk_stat *st,
                          void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    (void)st;
    c->state_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        c->state_dirty = 1;
        c->state_stalled = 1;
        return;
    }
    if (rc == KEEL_ESESSION)
        return;
    if (rc == KEEL_ENOTFOUND) {
        c->state_missing = 1; /* deleted: create it next time */
        c->state_dirty = 1;
    } else if (rc == KEEL_EEXIST) {
        c->state_missing = 0; /* recreated meanwhile: set it */
        c->state_dirty = 1;
    } else if (rc != 0) {
        keel_error("cluster: cannot publish the state of %s: %s%s", c->node,
                   keel_strerror(rc),
                   c->map_started ? ""
                                  : " (it reads no map, and holds no unit, "
                                    "until it can)");
        return;
    }
    if (rc == 0)
        c->state_landed = c->state_flight;
    if (rc == 0 && !c->map_started) {
        /* The state znode outlives sessions, and an earlier session's
         * (or process's) add requests with it, dropped here, no longer
         * counted: a controller honouring one must not go unnoticed. Its
         * map write checks the state's version, so it landed before this
         * write or fails; the first map this session reads, read now,
         * shows it, before the node holds any unit. */
        int mrc;
        c->map_started = 1;
        if ((mrc = keel__cluster_map_read(c)) == KEEL_ECONNLOSS)
            c->map_stalled = 1;
        else if (mrc != 0 && mrc != KEEL_ESESSION)
            keel_error("cluster: cannot read the map: %s",
                       keel_strerror(mrc));
    }
    if (rc == 0)
        adds_written(c);
    if (c->state_dirty)
        keel__cluster_publish(c);
}

static void state_created(keel_zk *zk, int rc, const char *path,
                          const keel_zk_stat *st, void *arg)
{
    keel_cluster *c = arg;

    (void)path;
    if (rc == 0)
        c->state_missing = 0;
    state_written(zk, rc, st, arg);
}

static int build_state(keel_cluster *c, keel_node_state *st, size_t *nadds)
{
    size_t i;
    uint32_t s;
    int rc;

    keel_node_state_init(st);
    st->map_epoch = c->have_map ? c->map.map_epoch : 0;
    st->incarnation = c->members.incarnation;
    for (i = 0; i < c->nlcaps; i++)
        for (s = 0; s < c->shard_count; s++) {
            const local_unit *lu = &c->lcaps[i].units[s];
            if (lu->phase == U_PRIMARY)
                rc = keel_node_state_put(st, c->lcaps[i].name, s,
                                         KEEL_ROLE_PRIMARY, lu->epoch, NULL);
            else if (lu->phase == U_RELEASED)
                rc = keel_node_state_put(st, c->lcaps[i].name, s,
                                         KEEL_ROLE_RELEASED, lu->epoch,
                                         c->names[lu->to]);
            else
                continue;
            if (rc != 0) {
                keel_node_state_free(st);
                return rc;
            }
        }
    for (i = 0; i < c->ndrops; i++) {
        const drop_req *d = &c->drops[i];
        const local_cap *lc = keel__cluster_lcap(c, d->cap, 0);
        const local_unit *lu = lc != NULL ? &lc->units[d->shard] : NULL;
        if (lu == NULL || lu->epoch != d->epoch ||
            (lu->phase != U_PRIMARY && lu->phase != U_RELEASING))
            continue;
        /* A unit being handed off is still the map's primary and may
         * still be waiting on a backup: published as PRIMARY (its fence
         * is at that epoch) to carry the request. */
        if (keel_node_state_find(st, d->cap, d->shard) == NULL &&
            (rc = keel_node_state_put(st, d->cap, d->shard,
                                      KEEL_ROLE_PRIMARY, d->epoch, NULL)))
            goto fail;
        rc = keel_node_state_put_drop(st, d->cap, d->shard, d->backup);
        if (rc != 0 && rc != KEEL_EOVERLOAD)
            goto fail;
    }
    for (i = 0; i < c->nadds; i++) {
        const add_req *a = &c->adds[i];
        const local_cap *lc = keel__cluster_lcap(c, a->cap, 0);
        const local_unit *lu = lc != NULL ? &lc->units[a->shard] : NULL;
        if (a->withdrawn || lu == NULL || lu->epoch != a->epoch ||
            (lu->phase != U_PRIMARY && lu->phase != U_RELEASING))
            continue;
        /* As for drops: a unit being handed off is published as PRIMARY
         * to carry the request. */
        if (keel_node_state_find(st, a->cap, a->shard) == NULL &&
            (rc = keel_node_state_put(st, a->cap, a->shard,
                                      KEEL_ROLE_PRIMARY, a->epoch, NULL)))
            goto fail;
        rc = keel_node_state_put_add(st, a->cap, a->shard, a->backup,
                                     a->store);
        if (rc != 0 && rc != KEEL_EOVERLOAD)
            goto fail;
        (*nadds)++;
    }
    return 0;
fail:
    keel_node_state_free(st);
    return rc;
}

/* Writes nodes/<node>/state from the local units; coalesces: one write in
 * flight, another after it if anything changed meanwhile. Only this node
 * writes its state, hence no version check. */
void keel__cluster_publish(keel_cluster *c)
{
    char path[KEEL_ZK_PATH_MAX];
    keel_node_state st;
    uint8_t *buf;
    size_t len, nadds = 0;
    int rc;

    c->state_dirty = 1;
    if (c->setup != SETUP_DONE || c->state_busy || c->state_stalled)
        return;
    if ((rc = build_state(c, &st, &nadds)) != 0) {
        keel_error("cluster: cannot build the state of %s: %s", c->node,
                   keel_strerror(rc));
        return;
    }
    rc = keel_node_state_encode(&st, &buf, &len);
    keel_node_state_free(&st);
    if (rc != 0) {
        keel_error("cluster: cannot encode the state of %s: %s", c->node,
                   keel_strerror(rc));
        return;
    }
    keel_layout_path(&c->layout, path, "nodes", c->node, "state");
    if (c->state_missing)
        rc = keel_zk_create(c->zk, path, buf, len, 0, state_created, c);
    else
        rc = keel_zk_set(c->zk, path, buf, len, KEEL_ZK_ANY_VERSION,
                         state_written, c);
    free(buf);
    if (rc == 0) {
        c->state_busy = 1;
        c->state_dirty = 0;
        c->state_flight = ++c->state_sent;
        /* Every add request asked so far is in it. */
        c->adds_held = 0;
        if (nadds > 0)
            c->adds_out = 1;
    }
}

/* A primary that catches up many units asks many adds, each as a state
 * write of its own if nothing held them; and a map write that honours
 * one carries a check of the state it read (reconcile.c, rule 7), which
 * a later state write makes fail. With a large map the controller's
 * decision takes longer than the gap between those writes, and it would
 * decide again and again without ever writing a map (a livelock: no
 * add, no move, no failover). So once a state write carrying adds went
 * out, the next requests wait for the next map applied here, which
 * publishes the state anyway and carries them all: one batch per map.
 * A controller that writes no map (it honours none of them yet) gets
 * them after ADD_HOLD_MS, then twice that, up to ADD_HOLD_MAX_MS. */
#define ADD_HOLD_MS 500u
#define ADD_HOLD_MAX_MS 8000u

void keel__cluster_publish_add(keel_cluster *c)
{
    if (!c->adds_out) {
        keel__cluster_publish(c);
        return;
    }
    if (c->adds_held)
        return;
    if (c->adds_hold_ms == 0)
        c->adds_hold_ms = ADD_HOLD_MS;
    c->adds_held = 1;
    c->adds_due = keel__cluster_now_ms(c) + c->adds_hold_ms;
    keel__cluster_schedule(c);
}

/* The held requests' wait ran out without a map. */
void keel__cluster_adds_due(keel_cluster *c)
{
    if (!c->adds_held || c->now < c->adds_due)
        return;
    c->adds_hold_ms = c->adds_hold_ms < ADD_HOLD_MAX_MS / 2
                          ? 2 * c->adds_hold_ms
                          : ADD_HOLD_MAX_MS;
    keel__cluster_publish(c);
    c->adds_held = 0; /* if no write could go out yet, the next carries them */
}

/* ------------------------------------------------ withdrawn add requests */

/* A state write completed: the withdrawn requests it left out (every
 * write numbered from their write_from on does) now wait for a map read
 * issued after this moment. */
static void adds_written(keel_cluster *c)
{
    size_t i;
    int any = 0;

    for (i = 0; i < c->nadds; i++) {
        add_req *a = &c->adds[i];
        if (a->withdrawn && !a->written && a->write_from <= c->state_flight) {
            a->written = 1;
            any = 1;
        }
    }
    if (any)
        keel__cluster_settle_kick(c);
}

static void settle_unmark(keel_cluster *c)
{
    size_t i;

    for (i = 0; i < c->nadds; i++)
        c->adds[i].reading = 0;
}

static void settle_got(keel_zk *zk, int rc, const void *data, size_t len,
                       const keel_zk_stat *st, void *arg)
{
    keel_cluster *c = arg;
    keel_shard_map m;
    size_t i;
    int newer;

    (void)zk;
    (void)st;
    if (rc == KEEL_ESESSION)
        return; /* expired() dropped every request */
    c->settle_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        settle_unmark(c);
        c->settle_stalled = 1;
        return;
    }
    if (rc == 0 && (rc = keel_map_decode(data, len, &m)) == 0 &&
        m.shard_count != c->shard_count) {
        keel_map_free(&m);
        rc = KEEL_ECONFIG; /* the watched read fails the node */
    }
    if (rc != 0) {
        /* Still counted; the next map read through the watch tries
         * again. */
        keel_error("cluster: cannot read the map to settle withdrawn add "
                   "requests: %s",
                   keel_strerror(rc));
        settle_unmark(c);
        return;
    }
    /* Within a session reads never go back: a map older than the applied
     * one cannot come, an equal one is the applied one. */
    newer = !c->have_map || m.map_epoch > c->map.map_epoch;
    if (newer) {
        keel_map_free(&c->map);
        c->map = m;
        c->have_map = 1;
    } else {
        keel_map_free(&m);
    }
    i = 0;
    while (i < c->nadds) {
        const add_req *a = &c->adds[i];
        if (!a->withdrawn || !a->reading) {
            i++;
            continue;
        }
        keel_info("cluster: %s/%u: the withdrawn request to add %s at epoch "
                  "%llu is settled",
                  keel_cap_name(a->cap), a->shard, a->backup,
                  (unsigned long long)a->epoch);
        c->adds[i] = c->adds[--c->nadds];
    }
    if (newer)
        keel__cluster_apply_map(c); /* calls the hook */
    else if (c->hooks.map_applied != NULL)
        c->hooks.map_applied(c, c->map.map_epoch, c->hooks.data);
    keel__cluster_settle_kick(c);
}

/* Issues the settle read for the withdrawn requests whose write
 * completed, unless one is in flight (its answer kicks again). */
void keel__cluster_settle_kick(keel_cluster *c)
{
    char path[KEEL_ZK_PATH_MAX];
    size_t i;
    int any = 0, rc;

    if (c->settle_busy || c->settle_stalled ||
        c->phase != KEEL_CLUSTER_RUNNING)
        return;
    for (i = 0; i < c->nadds; i++) {
        add_req *a = &c->adds[i];
        if (a->withdrawn && a->written && !a->reading) {
            a->reading = 1;
            any = 1;
        }
    }
    if (!any)
        return;
    keel_layout_path(&c->layout, path, "map", NULL, NULL);
    rc = keel_zk_get(c->zk, path, NULL, NULL, settle_got, c);
    if (rc == 0) {
        c->settle_busy = 1;
        return;
    }
    settle_unmark(c);
    if (rc == KEEL_ECONNLOSS)
        c->settle_stalled = 1;
    else if (rc != KEEL_ESESSION)
        keel_error("cluster: cannot read the map to settle withdrawn add "
                   "requests: %s",
                   keel_strerror(rc));
}
