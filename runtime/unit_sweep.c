/* Copies no replica list names (docs/cluster.md, "Copies the map no
 * longer lists"): a node dropped from a unit's replica list (placement
 * moved the unit's replicas, a node that hands a unit over without
 * staying its backup) still holds the records it had of the unit. They
 * are never served, and no catch-up needs them: once a map this node
 * applies lists it neither as a replica nor as the target of the unit,
 * the records go (keel__repl_drop_copy), through the writer that applies
 * what primaries send, so in order with it: a piece of the unit taken
 * before is deleted with the rest, and a catch-up that lists this node
 * again finds the copy gone (its check differs) and sends the records.
 * While a node is not listed, no primary's piece of the unit is taken
 * here, and no stream of it either unless it is the unit's target.
 *
 * Each map applied is compared with the one before, by capability and
 * shard: only a unit this node was listed for and is not any more is
 * looked at (and, with the first map of a process, every unit it is not
 * listed for: copies left behind while it was down). A unit this node
 * is still releasing is looked at again with the next map. A unit whose
 * store holds nothing of it costs one seek. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
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

/* In the map before: whether unit (cap, shard) listed this node (1 when
 * that map had no such unit: looked at, to be safe). */
static int was_listed(const keel_cluster_rt *rt, const char *cap,
                      uint32_t shard)
{
    size_t ci;

    for (ci = 0; ci < rt->sw_ncaps; ci++)
        if (strcmp(rt->sw_caps[ci], cap) == 0)
            break;
    if (!rt->sw_have || ci == rt->sw_ncaps || shard >= rt->sw_shards)
        return 1;
    return (rt->sw_listed[(ci * rt->sw_shards + shard) / 8] >>
            ((ci * rt->sw_shards + shard) % 8)) & 1;
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
 * stored here, or was stored and the map has not moved past it yet: its
 * release may still finish to this node, whatever the map says now. */
static int inbound(const keel_cluster_rt *rt, const char *cap,
                   uint32_t shard)
{
    const rt_rcvd *d;
    const rt_xin *x;

    for (d = rt->rcvd; d != NULL; d = d->next)
        if (same_unit(d->cap, d->shard, cap, shard))
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

void rt_sweep_copies(keel_cluster_rt *rt)
{
    const keel_shard_map *m = keel_cluster_map(rt->c);
    uint8_t *now;
    char **caps;
    size_t bits, ci, queued = 0;
    uint32_t s;
    int me;

    if (m == NULL || m->shard_count == 0)
        return;
    me = keel_map_node_index(m, keel_cluster_node_name(rt->c));
    bits = (size_t)m->ncaps * m->shard_count;
    now = calloc(bits / 8 + 1, 1);
    caps = calloc(m->ncaps ? m->ncaps : 1, sizeof *caps);
    if (now == NULL || caps == NULL) {
        free(now);
        free(caps);
        return; /* the next map looks again */
    }
    for (ci = 0; ci < m->ncaps; ci++) {
        if ((caps[ci] = strdup(m->caps[ci])) == NULL) {
            while (ci-- > 0)
                free(caps[ci]);
            free(caps);
            free(now);
            return;
        }
    }
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, (uint32_t)ci, s);
            size_t bit = ci * m->shard_count + s;
            if (listed(u, me) || rt_rel_find(rt, m->caps[ci], s) ||
                inbound(rt, m->caps[ci], s) ||
                rt_sweep_pending(rt, m->caps[ci], s)) {
                /* Listed, still being released, coming here, or being
                 * deleted already: kept (looked at again with the next
                 * map). */
                now[bit / 8] |= (uint8_t)(1u << (bit % 8));
                continue;
            }
            if (u->shard_epoch == 0 || !was_listed(rt, m->caps[ci], s) ||
                !holds(rt, m->caps[ci], s))
                continue;
            if (drop(rt, m->caps[ci], s, u->shard_epoch) == 0)
                queued++;
            else
                now[bit / 8] |= (uint8_t)(1u << (bit % 8)); /* again */
        }
    for (ci = 0; ci < rt->sw_ncaps; ci++)
        free(rt->sw_caps[ci]);
    free(rt->sw_caps);
    free(rt->sw_listed);
    rt->sw_caps = caps;
    rt->sw_ncaps = m->ncaps;
    rt->sw_shards = m->shard_count;
    rt->sw_listed = now;
    rt->sw_have = 1;
    if (queued > 0)
        keel_info("cluster: deleting this node's copy of %zu unit(s) the "
                  "map no longer lists it for",
                  queued);
}

void rt_sweep_free(keel_cluster_rt *rt)
{
    size_t ci;

    for (ci = 0; ci < rt->sw_ncaps; ci++)
        free(rt->sw_caps[ci]);
    free(rt->sw_caps);
    free(rt->sw_listed);
    rt->sw_caps = NULL;
    rt->sw_listed = NULL;
    rt->sw_ncaps = 0;
    rt->sw_have = 0;
    while (rt->sw_drops != NULL) {
        rt_rcvd *d = rt->sw_drops;
        rt->sw_drops = d->next;
        free(d);
    }
}
