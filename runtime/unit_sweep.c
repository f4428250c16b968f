/* Copies no replica list names (docs/cluster.md, "Copies the map no
 * longer lists"): a node dropped from a unit's replica list (placement
 * moved the unit's replicas, a node that hands a unit over without
 * staying its backup) still holds the records it had of the unit. They
 * are never served, and no catch-up needs them once the maps this node
 * applies have listed it neither as a replica nor as the target of the
 * unit for the dead time (--replica-dead-ms, 5 minutes by default: a
 * node that restarts or leaves for a moment is listed again by then, and
 * its copy, if nobody wrote the unit meanwhile, passes a catch-up's check
 * without a record sent). Then the records go (keel__repl_drop_copy),
 * through the writer that applies
 * what primaries send, so in order with it: a piece of the unit taken
 * before is deleted with the rest, and a catch-up that lists this node
 * again finds the copy gone (its check differs) and sends the records.
 * While a node is not listed, no primary's piece of the unit is taken
 * here, and no stream of it either unless it is the unit's target.
 *
 * Each map applied carries over, by capability and shard, since when
 * each unit has not listed this node (with the first map of a process:
 * from then on, which covers copies left while it was down). A unit this
 * node is still releasing, or receiving, starts its time again. A unit
 * whose time is up costs one seek when the store holds nothing of it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/controller.h"
#include "coordinator/shardmap.h"
#include "runtime/cluster_rt_int.h"
#include "runtime/repl.h"

/* Whether node me (an index of m, or -1) is a replica or the target of
 * unit u. */
static int listed(const keel_map_unit *u, int me)
{
    return me >= 0 && (keel_map_replica_pos(u, (uint16_t)me) >= 0 ||
                       u->target == (uint16_t)me);
}

/* The index of capability cap among the map before's, or -1. */
static long cap_before(const keel_cluster_rt *rt, const char *cap)
{
    size_t ci;

    for (ci = 0; ci < rt->sw_ncaps; ci++)
        if (strcmp(rt->sw_caps[ci], cap) == 0)
            return (long)ci;
    return -1;
}

/* sw_since: the unit's copy was looked at (deleted, or none held). */
#define SW_DONE (-1.0)

static void sweep_free_map(keel_cluster_rt *rt)
{
    size_t ci;

    for (ci = 0; ci < rt->sw_ncaps; ci++)
        free(rt->sw_caps[ci]);
    free(rt->sw_caps);
    free(rt->sw_since);
    rt->sw_caps = NULL;
    rt->sw_since = NULL;
    rt->sw_ncaps = 0;
    rt->sw_shards = 0;
}

static int any_record(const uint8_t *key, size_t klen, const keel_record *rec,
                      void *data)
{
    (void)key;
    (void)klen;
    (void)rec;
    (void)data;
    return 1; /* one is enough */
}

/* Whether this node's store holds a record of unit (cap, shard). */
static int holds(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    keel_store_read *rd;
    int rc;

    if (keel_store_read_begin(rt->n->store, &rd) != 0)
        return 0;
    rc = keel_store_unit_scan(rd, cap, (uint16_t)shard, any_record, NULL);
    keel_store_read_end(rd);
    return rc == 1;
}

static int same_unit(const char *cap1, uint32_t s1, const char *cap2,
                     uint32_t s2)
{
    return s1 == s2 && strcmp(cap1, cap2) == 0;
}

static int job_inbound(const rt_job *j, const char *cap, uint32_t shard)
{
    for (; j != NULL; j = j->next)
        if ((j->kind == JOB_XFER_IN || j->kind == JOB_KEEP) &&
            same_unit(j->cap, j->shard, cap, shard))
            return 1;
    return 0;
}

/* Whether a stream or keep frame of (cap, shard) is being received or
 * stored here, or was stored and the map (which has the unit at epoch)
 * has not moved past it yet: its release may still finish to this node,
 * whatever the map says now. A receipt the map has moved past is
 * settled (someone owns the unit past it); it stays for the leniency
 * towards a repeated stream (rt_receipt_has), but does not count here,
 * or a unit this node once took would count as coming here for as long
 * as the process runs. */
static int inbound(const keel_cluster_rt *rt, const char *cap,
                   uint32_t shard, uint64_t epoch)
{
    const rt_rcvd *d;
    const rt_xin *x;

    for (d = rt->rcvd; d != NULL; d = d->next)
        if (same_unit(d->cap, d->shard, cap, shard) && d->epoch >= epoch)
            return 1;
    for (x = rt->xins; x != NULL; x = x->next)
        if (same_unit(x->cap, x->shard, cap, shard))
            return 1;
    return job_inbound(rt->jobs, cap, shard) ||
           job_inbound(rt->inflight, cap, shard) ||
           job_inbound(rt->later, cap, shard) ||
           job_inbound(rt->acq, cap, shard);
}

int rt_sweep_pending(const keel_cluster_rt *rt, const char *cap,
                     uint32_t shard)
{
    const rt_rcvd *d;

    for (d = rt->sw_drops; d != NULL; d = d->next)
        if (same_unit(d->cap, d->shard, cap, shard))
            return 1;
    return 0;
}

void rt_sweep_settled(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_rcvd **pp, *d;

    for (pp = &rt->sw_drops; (d = *pp) != NULL; pp = &d->next)
        if (same_unit(d->cap, d->shard, cap, shard)) {
            *pp = d->next;
            free(d);
            return;
        }
}

/* Queues the deletion of this node's copy of (cap, shard) at epoch:
 * 0, or -1 (nothing queued). */
static int drop(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                uint64_t epoch)
{
    rt_rcvd *d = calloc(1, sizeof *d);

    if (d == NULL)
        return -1;
    snprintf(d->cap, sizeof d->cap, "%s", cap);
    d->shard = shard;
    if (keel__repl_drop_copy(rt->n, cap, shard, epoch) != 0) {
        free(d);
        return -1;
    }
    d->next = rt->sw_drops;
    rt->sw_drops = d;
    return 0;
}

/* Notes, on a new map, since when each unit has not listed this node
 * (the value the map before had, or now); 0 for a unit it lists. 0, or
 * -1 out of memory (nothing changed). */
static int sweep_remap(keel_cluster_rt *rt, const keel_shard_map *m,
                       int me, double now)
{
    size_t n = (size_t)m->ncaps * m->shard_count, ci;
    double *since = calloc(n ? n : 1, sizeof *since);
    char **caps = calloc(m->ncaps ? m->ncaps : 1, sizeof *caps);
    uint32_t s;

    if (since == NULL || caps == NULL) {
        free(since);
        free(caps);
        return -1;
    }
    for (ci = 0; ci < m->ncaps; ci++)
        if ((caps[ci] = strdup(m->caps[ci])) == NULL) {
            while (ci-- > 0)
                free(caps[ci]);
            free(caps);
            free(since);
            return -1;
        }
    for (ci = 0; ci < m->ncaps; ci++) {
        /* The map before had that capability, of as many shards: its
         * values carry over; else every unit starts now. */
        long oi = rt->sw_shards == m->shard_count ? cap_before(rt, caps[ci])
                                                  : -1;
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, (uint32_t)ci, s);
            double was =
                oi >= 0 ? rt->sw_since[(size_t)oi * m->shard_count + s] : 0;
            if (!listed(u, me) && u->shard_epoch > 0)
                since[ci * m->shard_count + s] = was != 0 ? was : now;
        }
    }
    sweep_free_map(rt);
    rt->sw_since = since;
    rt->sw_caps = caps;
    rt->sw_ncaps = m->ncaps;
    rt->sw_shards = m->shard_count;
    return 0;
}

void rt_sweep_copies(keel_cluster_rt *rt, int map_applied)
{
    const keel_shard_map *m = keel_cluster_map(rt->c);
    uint32_t ms = rt->n->opts.replica_dead_ms;
    double dead = (ms != 0 ? ms : KEEL_CONTROLLER_REPLICA_DEAD_MS) / 1000.0;
    double now = rt_now(rt), next = 0;
    size_t ci, queued = 0;
    uint32_t s;
    int me;

    if (m == NULL || m->shard_count == 0 ||
        (!map_applied && (rt->sw_since == NULL || now < rt->sw_next)))
        return;
    me = keel_map_node_index(m, keel_cluster_node_name(rt->c));
    if (map_applied && sweep_remap(rt, m, me, now) != 0)
        return; /* the next map looks again */
    if (rt->sw_ncaps != m->ncaps || rt->sw_shards != m->shard_count)
        return;
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            double *since = &rt->sw_since[ci * m->shard_count + s];
            const keel_map_unit *u = keel_map_unit_at(m, (uint32_t)ci, s);
            if (*since <= 0)
                continue; /* listed, or looked at already */
            if (now - *since >= dead) {
                if (rt_rel_find(rt, m->caps[ci], s) ||
                    inbound(rt, m->caps[ci], s, u->shard_epoch) ||
                    rt_sweep_pending(rt, m->caps[ci], s)) {
                    /* Still being released, coming here, or being
                     * deleted already: its time starts again. */
                    *since = now;
                } else if (!holds(rt, m->caps[ci], s)) {
                    *since = SW_DONE;
                    continue;
                } else if (drop(rt, m->caps[ci], s, u->shard_epoch) == 0) {
                    *since = SW_DONE;
                    queued++;
                    continue;
                } else {
                    *since = now; /* tried again after the dead time */
                }
            }
            if (next == 0 || *since + dead < next)
                next = *since + dead;
        }
    rt->sw_next = next != 0 ? next : now + dead;
    if (queued > 0)
        keel_info("cluster: deleting this node's copy of %zu unit(s) the "
                  "map has not listed it for in %.0f s",
                  queued, dead);
}

void rt_sweep_free(keel_cluster_rt *rt)
{
    sweep_free_map(rt);
    while (rt->sw_drops != NULL) {
        rt_rcvd *d = rt->sw_drops;
        rt->sw_drops = d->next;
        free(d);
    }
}
