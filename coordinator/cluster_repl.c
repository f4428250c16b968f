/* Cluster mode: replication as this node's agent sees it (see cluster.h;
 * docs/cluster.md, "Replicas and the in-sync set"). From the applied map:
 * the in-sync and the catching-up backups of the units this node is
 * primary of; the requests a primary publishes in its state for the
 * controller, to drop a backup from a unit's in-sync set or to add one it
 * caught up, and their end once a map settles them (a withdrawn add is
 * settled by a map read, cluster.c); and whether a primary may replicate
 * a unit here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/cluster_int.h"
#include "coordinator/controller.h"
#include "coordinator/membership.h"
#include "coordinator/shardmap.h"
#include "keel.h"

/* The unit (cap, shard) of the applied map if this node is its primary
 * at epoch, else NULL. */
static const keel_map_unit *my_unit(const keel_cluster *c, const char *cap,
                                    uint32_t shard, uint64_t epoch)
{
    const keel_map_unit *u;
    int ci;

    if (!c->have_map || c->my_idx < 0 || cap == NULL ||
        shard >= c->map.shard_count ||
        (ci = keel_map_cap_index(&c->map, cap)) < 0)
        return NULL;
    u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
    if (u->nreplicas == 0 || u->replicas[0] != c->my_idx ||
        u->shard_epoch != epoch)
        return NULL;
    return u;
}

/* Where the applied map has node `name` in a unit this node is primary of
 * at epoch: B_INSYNC, B_OUT (listed, out of sync), B_NONE (not a backup
 * of it), or B_NOT_MINE when the unit is not this node's at that epoch. */
enum { B_NOT_MINE = -1, B_NONE = 0, B_OUT = 1, B_INSYNC = 2 };

static int backup_state(const keel_cluster *c, const char *cap,
                        uint32_t shard, uint64_t epoch, const char *name)
{
    const keel_map_unit *u = my_unit(c, cap, shard, epoch);
    int idx, pos;

    if (u == NULL)
        return B_NOT_MINE;
    idx = keel_map_node_index(&c->map, name);
    if (idx < 0 || idx == c->my_idx ||
        (pos = keel_map_replica_pos(u, (uint16_t)idx)) < 1)
        return B_NONE;
    return keel_map_insync(u, pos) ? B_INSYNC : B_OUT;
}

/* Whether the applied map has node `name` in the in-sync set of a unit
 * this node is primary of at epoch (1, or 0), or -1 when the unit is not
 * this node's at that epoch. */
static int backup_insync(const keel_cluster *c, const char *cap,
                         uint32_t shard, uint64_t epoch, const char *name)
{
    int b = backup_state(c, cap, shard, epoch, name);

    return b == B_NOT_MINE ? -1 : b == B_INSYNC;
}

/* Withdraws the drop requests the applied map settled. */
void keel__cluster_prune_drops(keel_cluster *c)
{
    size_t i = 0;

    while (i < c->ndrops) {
        const drop_req *d = &c->drops[i];
        if (backup_insync(c, d->cap, d->shard, d->epoch, d->backup) == 1) {
            i++;
            continue;
        }
        c->drops[i] = c->drops[--c->ndrops];
    }
}

/* Ends the add requests the applied map settled: the backup is in sync
 * (keel_cluster_insync_backups lists it now), or the unit is no longer
 * this node's at that epoch. Withdrawn or not. */
void keel__cluster_prune_adds(keel_cluster *c)
{
    size_t i = 0;

    while (i < c->nadds) {
        const add_req *a = &c->adds[i];
        int b = backup_state(c, a->cap, a->shard, a->epoch, a->backup);
        if (b != B_NOT_MINE && b != B_INSYNC) {
            i++;
            continue;
        }
        if (b == B_INSYNC)
            keel_info("cluster: %s/%u: %s is in the in-sync set at epoch "
                      "%llu",
                      keel_cap_name(a->cap), a->shard, a->backup,
                      (unsigned long long)a->epoch);
        c->adds[i] = c->adds[--c->nadds];
    }
}

/* ---------------------------------------------------------- replication */

int keel_cluster_replicas(const keel_cluster *c)
{
    return c->replicas;
}

size_t keel_cluster_insync_backups(keel_cluster *c, const char *cap,
                                   uint32_t shard, uint64_t shard_epoch,
                                   keel_replica_ref *out, size_t max)
{
    const keel_map_unit *u;
    size_t n = 0;
    int ci, r;

    if (!c->have_map || c->my_idx < 0 || shard >= c->map.shard_count ||
        (ci = keel_map_cap_index(&c->map, cap)) < 0)
        return 0;
    u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
    if (u->nreplicas < 2 || u->replicas[0] != c->my_idx ||
        u->shard_epoch != shard_epoch)
        return 0;
    for (r = 1; r < u->nreplicas && n < max; r++) {
        const char *name = c->map.nodes[u->replicas[r]];
        const keel_member *m;
        if (!keel_map_insync(u, r))
            continue;
        m = keel_membership_find(&c->members, name);
        snprintf(out[n].name, sizeof out[n].name, "%s", name);
        snprintf(out[n].addr, sizeof out[n].addr, "%s",
                 m != NULL && !m->addr_bad ? m->addr : "");
        n++;
    }
    return n;
}

int keel_cluster_promoted(keel_cluster *c, const char *cap, uint32_t shard,
                          uint64_t shard_epoch)
{
    const keel_map_unit *u;
    int ci;

    if (!c->have_map || c->my_idx < 0 || cap == NULL ||
        shard >= c->map.shard_count ||
        (ci = keel_map_cap_index(&c->map, cap)) < 0)
        return 0;
    u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
    return u->nreplicas > 0 && u->replicas[0] == c->my_idx &&
           u->shard_epoch == shard_epoch && u->promoted;
}

int keel_cluster_request_drop(keel_cluster *c, const char *cap,
                              uint32_t shard, uint64_t shard_epoch,
                              const char *backup)
{
    drop_req *v, *d;
    size_t i;

    if (cap == NULL || backup == NULL || !keel_name_valid(cap, 1) ||
        !keel_name_valid(backup, 0) ||
        backup_insync(c, cap, shard, shard_epoch, backup) != 1)
        return KEEL_ENOTFOUND;
    for (i = 0; i < c->ndrops; i++)
        if (c->drops[i].shard == shard && c->drops[i].epoch == shard_epoch &&
            strcmp(c->drops[i].cap, cap) == 0 &&
            strcmp(c->drops[i].backup, backup) == 0)
            return 0;
    v = realloc(c->drops, (c->ndrops + 1) * sizeof *v);
    if (v == NULL)
        return KEEL_ENOMEM;
    c->drops = v;
    d = &v[c->ndrops++];
    snprintf(d->cap, sizeof d->cap, "%s", cap);
    d->shard = shard;
    d->epoch = shard_epoch;
    snprintf(d->backup, sizeof d->backup, "%s", backup);
    keel_info("cluster: %s asks to drop %s from the in-sync set of %s/%u at "
              "epoch %llu",
              c->node, backup, keel_cap_name(cap), shard,
              (unsigned long long)shard_epoch);
    keel__cluster_publish(c);
    return 0;
}

size_t keel_cluster_catchup_backups(keel_cluster *c, const char *cap,
                                    uint32_t shard, uint64_t shard_epoch,
                                    keel_replica_ref *out,
                                    char (*stores)[KEEL_MAP_STORE_HEX + 1],
                                    size_t max)
{
    const keel_map_unit *u = my_unit(c, cap, shard, shard_epoch);
    size_t n = 0;
    int r;

    if (u == NULL || out == NULL)
        return 0;
    for (r = 1; r < u->nreplicas && n < max; r++) {
        const char *name = c->map.nodes[u->replicas[r]];
        const char *recorded = c->map.store_ids[u->replicas[r]];
        const keel_member *m;
        if (keel_map_insync(u, r) || recorded[0] == '\0')
            continue;
        /* Caught up on another store than the one the map records, the
         * controller would not add it (rule 7): not worth a stream. */
        m = keel_membership_find(&c->members, name);
        if (m == NULL || m->leaving || strcmp(m->store, recorded) != 0)
            continue;
        snprintf(out[n].name, sizeof out[n].name, "%s", name);
        snprintf(out[n].addr, sizeof out[n].addr, "%s",
                 m->addr_bad ? "" : m->addr);
        if (stores != NULL)
            memcpy(stores[n], recorded, KEEL_MAP_STORE_HEX + 1);
        n++;
    }
    return n;
}

static add_req *find_add(keel_cluster *c, const char *cap, uint32_t shard,
                         uint64_t shard_epoch, const char *backup)
{
    size_t i;

    if (cap == NULL || backup == NULL)
        return NULL;
    for (i = 0; i < c->nadds; i++)
        if (c->adds[i].shard == shard && c->adds[i].epoch == shard_epoch &&
            strcmp(c->adds[i].cap, cap) == 0 &&
            strcmp(c->adds[i].backup, backup) == 0)
            return &c->adds[i];
    return NULL;
}

int keel_cluster_request_add(keel_cluster *c, const char *cap, uint32_t shard,
                             uint64_t shard_epoch, const char *backup,
                             const char *store)
{
    add_req *v, *a;
    int fresh = 0;

    if (store == NULL || !keel_map_store_valid(store) ||
        strspn(store, "0") == KEEL_MAP_STORE_HEX)
        return KEEL_EINVAL;
    if (cap == NULL || backup == NULL || !keel_name_valid(cap, 1) ||
        !keel_name_valid(backup, 0) ||
        backup_state(c, cap, shard, shard_epoch, backup) != B_OUT)
        return KEEL_ENOTFOUND;
    if ((a = find_add(c, cap, shard, shard_epoch, backup)) != NULL) {
        if (!a->withdrawn && strcmp(a->store, store) == 0)
            return 0;
        /* Asked again after a withdrawal (counted all along: the
         * settling is moot), or under another store. */
        snprintf(a->store, sizeof a->store, "%s", store);
        a->withdrawn = a->written = a->reading = 0;
    } else {
        v = realloc(c->adds, (c->nadds + 1) * sizeof *v);
        if (v == NULL)
            return KEEL_ENOMEM;
        c->adds = v;
        a = &v[c->nadds++];
        memset(a, 0, sizeof *a);
        snprintf(a->cap, sizeof a->cap, "%s", cap);
        a->shard = shard;
        a->epoch = shard_epoch;
        snprintf(a->backup, sizeof a->backup, "%s", backup);
        snprintf(a->store, sizeof a->store, "%s", store);
        fresh = 1;
    }
    keel_info("cluster: %s asks to add %s (store %s) to the in-sync set of "
              "%s/%u at epoch %llu",
              c->node, backup, store, keel_cap_name(cap), shard,
              (unsigned long long)shard_epoch);
    /* A new request may wait for the next map, with others; one that
     * changes what was published goes at once. */
    if (fresh)
        keel__cluster_publish_add(c);
    else
        keel__cluster_publish(c);
    return 0;
}

int keel_cluster_withdraw_add(keel_cluster *c, const char *cap,
                              uint32_t shard, uint64_t shard_epoch,
                              const char *backup)
{
    add_req *a = find_add(c, cap, shard, shard_epoch, backup);

    if (a == NULL)
        return KEEL_ENOTFOUND;
    if (a->withdrawn)
        return 0;
    a->withdrawn = 1;
    a->written = a->reading = 0;
    /* Writes are numbered when submitted: every one from the next on
     * leaves the request out. */
    a->write_from = c->state_sent + 1;
    keel_info("cluster: %s withdraws its request to add %s to the in-sync "
              "set of %s/%u at epoch %llu",
              c->node, backup, keel_cap_name(cap), shard,
              (unsigned long long)shard_epoch);
    keel__cluster_publish(c);
    return 0;
}

int keel_cluster_add_pending(keel_cluster *c, const char *cap, uint32_t shard,
                             uint64_t shard_epoch, const char *backup)
{
    return find_add(c, cap, shard, shard_epoch, backup) != NULL;
}

void keel_cluster_repl_counts(const keel_cluster *c, uint64_t *expansions,
                              uint64_t *shrinks, uint64_t *failovers)
{
    if (expansions != NULL)
        *expansions = c->ctl.expansions;
    if (shrinks != NULL)
        *shrinks = c->ctl.shrinks;
    if (failovers != NULL)
        *failovers = c->ctl.failovers;
}

int keel_cluster_may_replicate(keel_cluster *c, const char *cap,
                               uint32_t shard, uint64_t shard_epoch,
                               const char *from)
{
    const keel_map_unit *u;
    int ci, fi;

    if (c->phase != KEEL_CLUSTER_RUNNING || c->lease.fence.fenced)
        return KEEL_EFENCED;
    /* A map from an earlier session may list this node where it is not
     * any more: only one read in this session counts. */
    if (!c->have_map || !c->map_this_session || c->my_idx < 0 ||
        cap == NULL || from == NULL || shard >= c->shard_count ||
        (ci = keel_map_cap_index(&c->map, cap)) < 0 ||
        (fi = keel_map_node_index(&c->map, from)) < 0)
        return KEEL_ENOTTARGET;
    u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
    if (u->nreplicas < 2 || u->shard_epoch != shard_epoch ||
        u->replicas[0] != (uint16_t)fi || fi == c->my_idx ||
        keel_map_replica_pos(u, (uint16_t)c->my_idx) < 1)
        return KEEL_ENOTTARGET;
    /* The map may count this node in sync on the store it had: on
     * another one (a replaced disk), it must not answer for that replica
     * until the controller has recorded the change, which takes it out of
     * every in-sync set. */
    if (keel__cluster_store_elsewhere(c))
        return KEEL_ENOTTARGET;
    return 0;
}
