/* Moving a primary onto an in-sync backup: may the release skip the
 * stream? */
#include "coordinator/promote.h"

#include <stddef.h>
#include <string.h>

int keel_promote_check(const keel_shard_map *m, const char *cap,
                       uint32_t shard, uint64_t shard_epoch,
                       const char *self, const char *to)
{
    const keel_map_unit *u;
    int ci, me, ti, pos;

    if (m == NULL || cap == NULL || self == NULL || to == NULL ||
        shard >= m->shard_count || (ci = keel_map_cap_index(m, cap)) < 0)
        return KEEL_PROMOTE_NO_UNIT;
    u = keel_map_unit_at(m, (uint32_t)ci, shard);
    me = keel_map_node_index(m, self);
    if (me < 0 || u->nreplicas == 0 || u->replicas[0] != (uint16_t)me ||
        u->shard_epoch != shard_epoch || shard_epoch == 0)
        return KEEL_PROMOTE_NOT_PRIMARY;
    ti = keel_map_node_index(m, to);
    if (ti < 0 || ti == me || u->target != (uint16_t)ti)
        return KEEL_PROMOTE_NOT_TARGET;
    pos = keel_map_replica_pos(u, (uint16_t)ti);
    if (pos < 1)
        return KEEL_PROMOTE_NOT_LISTED;
    if (!keel_map_insync(u, pos))
        return KEEL_PROMOTE_OUT_OF_SYNC;
    /* A node without a recorded store is never put in sync (rule 1);
     * checked all the same, since the recipient proves it holds the
     * content by its own store's digest. */
    if (m->store_ids == NULL || m->store_ids[ti][0] == '\0')
        return KEEL_PROMOTE_NO_STORE;
    return KEEL_PROMOTE_OK;
}

const char *keel_promote_why_name(int why)
{
    switch (why) {
    case KEEL_PROMOTE_OK:
        return "an in-sync backup";
    case KEEL_PROMOTE_NO_UNIT:
        return "no such unit in the map";
    case KEEL_PROMOTE_NOT_PRIMARY:
        return "not its primary at that epoch";
    case KEEL_PROMOTE_NOT_TARGET:
        return "not the unit's target";
    case KEEL_PROMOTE_NOT_LISTED:
        return "not one of its backups";
    case KEEL_PROMOTE_OUT_OF_SYNC:
        return "out of sync";
    case KEEL_PROMOTE_NO_STORE:
        return "no store recorded";
    default:
        return "unknown";
    }
}
