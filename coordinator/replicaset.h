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
 * requests); for a primary's add requests (rule 7) it says what it read
 * there and keel_rs_add() decides.
 *
 * The rules (a replica out of sync comes back only through its primary's
 * add request, rule 7):
 *  1. A unit never owned goes to the top R placeable members, all in sync
 *     (nobody holds anything of it), except a backup that publishes no
 *     store identity, which could not be told apart from a node back on
 *     an empty disk later.
 *  2. Backups follow placement: new ones are appended out of sync; those
 *     no longer among the top R are removed, at once if out of sync;
 *     in sync, live and not leaving, they stay listed in sync (while
 *     there is room) until the backups placement wants are all in sync:
 *     a join never takes a complete copy away before its replacement
 *     has one (a leaving one goes at once: it stops without waiting for
 *     its replacement). A backup that is gone
 *     (no member znode) keeps its place, in sync or not, for the dead
 *     time (env->waiting): placement fills only the places left, so a
 *     node that restarts soon catches up where it was rather than a
 *     new node being given a copy. Past the dead time it is replaced:
 *     placement's next live choice is appended out of sync (and catches
 *     up); the gone backup goes at once if out of sync, and if in sync
 *     it stays listed (its primary asks to drop it once it misses a
 *     write) until the others are R, all in sync, or there is no room
 *     for it. Forgotten by the operator, it goes at once. The primary
 *     position is the handoff machine's, not this module's.
 *  3. A primary move A -> B: B in sync; with A's data streamed to B
 *     (B's epoch is A's + 1) the old in-sync backups that stay listed stay
 *     in sync; without it (+ 2) B alone. A is never in sync after it.
 *  Rule 5 (drops) is keel_rs_drop(), rule 6 (failover) keel_rs_promote(),
 *  rule 7 (adds of backups caught up) keel_rs_add().
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
    /* bit i (i >= 1): names[i] was in the in-sync set before the failover
     * that made names[0] primary (keel_rs_promote), and may stand in for
     * it (keel_rs_stand_in) if it is gone before it served */
    uint8_t fallback;
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
    /* Whether node `name`, not a live member, still holds its places as
     * a backup (gone for less than the dead time, not forgotten); NULL:
     * none does (rule 2 replaces gone backups at once). */
    int (*waiting)(const char *name, void *arg);
    /* Whether it is a live member publishing its store's identity. */
    int (*has_store)(const char *name, void *arg);
    /* Whether the operator forgot it (its data is given up). */
    int (*forgotten)(const char *name, void *arg);
    /* Whether placement could give it units (live, not leaving,
     * reachable); NULL: every live member. Failover prefers those. */
    int (*placeable)(const char *name, void *arg);
    /* Whether this node's link to it failed and was not made again (a
     * hint that it is down, though its session has not expired yet);
     * NULL: none is. Failover prefers the others. */
    int (*suspect)(const char *name, void *arg);
    /* Whether it declares the unit's capability `cap`; NULL: every node
     * does. Failover prefers those: a primary that does not declare it
     * holds the unit without serving it until the unit moves on. */
    int (*declares)(const char *name, const char *cap, void *arg);
    const char *cap;
    /* Rule 7 only. The store id a live member publishes, as the map keeps
     * them ("" when none), or NULL when `name` is not a live member; and
     * whether it is leaving (drained). */
    const char *(*store)(const char *name, void *arg);
    int (*leaving)(const char *name, void *arg);
    void *arg;
} keel_rs_env;

/* An add request (rule 7), as a node publishes it in its state. */
typedef struct keel_rs_add_req {
    const char *from;     /* the node asking */
    uint64_t shard_epoch; /* the unit's epoch it asks at */
    const char *backup;
    const char *store;    /* the store id it caught backup up under */
    int drop_too;         /* it also asks to drop backup (rule 5) */
} keel_rs_add_req;

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
 * when it comes back. The other in-sync backups become its fallbacks
 * (they hold every acknowledged write as long as it has answered
 * nothing), listed while there is room even if placement does not want
 * them. Then rule 2. */
void keel_rs_promote(const keel_rs_env *env, const keel_rs *old, int pos,
                     keel_rs *out);
/* Rule 6 for a promoted primary gone before it served: old->names[pos],
 * one of its fallbacks, replaces it, alone in sync, with the other
 * fallbacks as its own. Then rule 2. */
void keel_rs_stand_in(const keel_rs_env *env, const keel_rs *old, int pos,
                      keel_rs *out);
/* Rule 5: takes backup `name` out of the in-sync set. Returns 1 if it was
 * in it, 0 otherwise (not listed, the primary, already out). */
int keel_rs_drop(keel_rs *rs, const char *name);
/* Rule 7: honours a request to add a backup the primary caught up: it
 * gets its in-sync bit only when the request comes from the unit's
 * primary (rs->names[0]) at the unit's shard_epoch, the backup is listed
 * and out of sync, it is a live member not leaving that publishes the
 * store id the request names, `recorded` (the store id the map's node
 * table records for it; NULL or "" unknown) is that one too, and the
 * primary does not also ask to drop it (a drop wins). env->store and
 * env->leaving must be set. Returns 1 if the backup was added, 0 if the
 * request is stale or refused (rs unchanged). */
int keel_rs_add(const keel_rs_env *env, keel_rs *rs, uint64_t shard_epoch,
                const keel_rs_add_req *req, const char *recorded);
/* Position of name in the set, or -1. */
int keel_rs_find(const keel_rs *rs, const char *name);

#endif
