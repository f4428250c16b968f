/* The replica set of a placement unit as the controller decides it: the
 * nodes holding the unit (primary first) and which of them are in its
 * in-sync set, the replicas that hold every write acknowledged to a
 * client (docs/cluster.md, "Replicas and the in-sync set").
 *
 * Pure logic over node names: the old set, what placement wants and
 * what is known of the nodes go in, the new set comes out. The controller
 * reads the old set from the map, writes the new one back, and alone
 * applies the rules that need the map's node table (a node back on
 * another store) or the nodes' published states (a primary's drop
 * requests).
 *
 * The rules, stage 1 of replication (no catch-up yet: a replica that is
 * out of sync stays so):
 *  1. A unit never owned goes to the top R placeable members, all in sync
 *     (nobody holds anything of it), except a backup that publishes no
 *     store identity, which could not be told apart from a node back on
 *     an empty disk later.
 *  2. Backups follow placement: those no longer among the top R are
 *     removed, new ones are appended out of sync. A backup that is gone
 *     (no member znode) but still in sync stays listed (its primary asks
 *     to drop it once it misses a write); once out of sync, or forgotten
 *     by the operator, it goes too. The primary position is the handoff
 *     machine's, not this module's.
 *  3. A primary move A -> B: B in sync; with A's data streamed to B
 *     (B's epoch is A's + 1) the old in-sync backups that stay listed stay
 *     in sync; without it (+ 2) B alone. A is never in sync after it.
 *  Rule 5 (drops) is keel_rs_drop(), rule 6 (failover) keel_rs_promote().
 *  The primary is always in sync. */
#ifndef KEEL_COORDINATOR_REPLICASET_H
#define KEEL_COORDINATOR_REPLICASET_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/shardmap.h"

typedef struct keel_rs {
    /* Primary first. Borrowed: the strings belong to the caller's tables
     * and must outlive the set. */
    const char *names[KEEL_MAP_MAX_REPLICAS];
    uint8_t n;
    uint8_t insync; /* bit i: names[i] is in the in-sync set */
} keel_rs;

/* What the rules know of the cluster. */
typedef struct keel_rs_env {
    size_t replicas; /* R, the cluster's replica count (1..5) */
    /* Placement's choice for the unit: at most R placeable members (live,
     * not leaving, reachable, declaring the capability), best first. */
    const char *const *desired;
    size_t ndesired;
    /* Whether node `name` is a live member (its member znode exists). */
    int (*live)(const char *name, void *arg);
    /* Whether it is a live member publishing its store's identity. */
    int (*has_store)(const char *name, void *arg);
    /* Whether the operator forgot it (its data is given up). */
    int (*forgotten)(const char *name, void *arg);
    /* Whether placement could give it units (live, not leaving,
     * reachable); NULL: every live member. Failover prefers those. */
    int (*placeable)(const char *name, void *arg);
    void *arg;
} keel_rs_env;

/* Rule 1: the set of a unit that never had a primary. */
void keel_rs_fresh(const keel_rs_env *env, keel_rs *out);
/* Rule 2: the backups of `old` (primary unchanged) made to follow
 * placement. old->n must be at least 1. */
void keel_rs_follow(const keel_rs_env *env, const keel_rs *old,
                    keel_rs *out);
/* Rule 3, then 2: the primary moves from old->names[0] to `to`, which
 * got its data (with_data) or starts without it. */
void keel_rs_move(const keel_rs_env *env, const keel_rs *old, const char *to,
                  int with_data, keel_rs *out);
/* Rule 6, failover (coordinator/failover.h): old->names[pos], an in-sync
 * backup, replaces the gone primary. It is the in-sync set alone: the
 * other backups may hold writes the old primary sent them and never got
 * acknowledged, or miss some the new primary has, and stay listed out of
 * sync (until catch-up) if placement wants them; so does the old primary
 * when it comes back. Then rule 2. */
void keel_rs_promote(const keel_rs_env *env, const keel_rs *old, int pos,
                     keel_rs *out);
/* Rule 5: takes backup `name` out of the in-sync set. Returns 1 if it was
 * in it, 0 otherwise (not listed, the primary, already out). */
int keel_rs_drop(keel_rs *rs, const char *name);
/* Position of name in the set, or -1. */
int keel_rs_find(const keel_rs *rs, const char *name);

#endif
