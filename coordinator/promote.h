/* Moving a unit's primary onto one of its in-sync backups without a
 * stream (docs/cluster.md, "Handoff of a unit from A to B", "A move onto
 * an in-sync backup").
 *
 * An in-sync backup B holds every write its primary A acknowledged; once
 * A has stopped the unit and every in-sync backup has acknowledged all of
 * A's writes (the wait the release already makes before streaming), B
 * holds exactly A's content. Streaming it to B again is wasted: A only
 * has to tell B that the unit is coming to it with what it holds. The
 * handoff keeps every other step (target, release, primary B at
 * shard_epoch + 1, B's fence before it serves), so a controller, a change
 * of course or a lost answer is handled as for any handoff.
 *
 * Pure logic on a map: whether A, by the map it applied, may hand the
 * unit to `to` that way. B's own check (its copy's digest equals A's, its
 * map moves the unit to it) is the runtime's (runtime/unit_promote.c). */
#ifndef KEEL_COORDINATOR_PROMOTE_H
#define KEEL_COORDINATOR_PROMOTE_H

#include <stdint.h>

#include "coordinator/shardmap.h"

/* Why a move may not go without a stream (keel_promote_check). */
enum keel_promote_why {
    KEEL_PROMOTE_OK = 0,
    KEEL_PROMOTE_NO_UNIT,     /* no such capability or shard in the map */
    KEEL_PROMOTE_NOT_PRIMARY, /* `self` is not the primary at that epoch */
    KEEL_PROMOTE_NOT_TARGET,  /* the map does not move the unit to `to` */
    KEEL_PROMOTE_NOT_LISTED,  /* `to` is not one of the unit's backups */
    KEEL_PROMOTE_OUT_OF_SYNC, /* `to` is listed, out of sync */
    KEEL_PROMOTE_NO_STORE     /* the map records no store for `to` */
};

/* Whether, by map m, the primary `self` of unit (cap, shard) at
 * shard_epoch may release it to `to` without streaming it: the map has
 * `self` primary at that epoch, the unit moving to `to`, and `to` a
 * backup in the unit's in-sync set under a known store. Returns
 * KEEL_PROMOTE_OK or the first reason it may not. */
int keel_promote_check(const keel_shard_map *m, const char *cap,
                       uint32_t shard, uint64_t shard_epoch,
                       const char *self, const char *to);

/* A reason as a short phrase for the log. */
const char *keel_promote_why_name(int why);

#endif
