/* Failover: when a unit's primary is gone, which backup takes its place
 * (docs/cluster.md, "Failover").
 *
 * Pure logic, as the replica rules are (coordinator/replicaset.h): the
 * controller says what it knows of the unit and of the nodes, and gets
 * back the position of the backup to promote, or none. It then writes
 * that backup primary at shard_epoch + 1, alone in the in-sync set
 * (keel_rs_promote), in one guarded map write that also proves the old
 * primary is not a member.
 *
 * A backup is promoted only
 *  - when the primary's member znode is gone: its session expired on the
 *    servers, so its lease lapsed before (it stopped serving at 2/3 of
 *    the timeout at the latest) and it can no longer gather the acks of
 *    its in-sync backups, which a reply needs, once one of them has
 *    recorded the new epoch;
 *  - from the in-sync set: those hold every write acknowledged to a
 *    client. Never a backup out of sync, never a node not listed;
 *  - if it is a live member publishing its store's identity (a live
 *    member on another store than the map's table records is out of sync
 *    already: the controller clears it first);
 *  - unless the primary released the unit at its epoch: the recipient of
 *    its stream has the data, and the handoff finishes there.
 * With no such backup, a primary that was itself promoted at the unit's
 * epoch and is gone without having written its state since (it served
 * nothing there: u->stand_in, decided by the controller) is replaced by
 * one of its fallbacks, the backups in sync before its promotion
 * (keel_rs_stand_in), chosen the same way.
 * Among the candidates the first in list order that placement could give
 * units to (not leaving, reachable), that declares the unit's capability
 * and that is not suspect (this node's link to it failed: it may be
 * dying too, its session not expired yet) wins; failing that, the first
 * such one that is suspect; failing that, the first one. Any candidate
 * holds every acknowledged write: the preference only keeps a unit from
 * going, alone in sync, to a node about to be gone as well, where it
 * would wait for that node's return, or to one that no longer declares
 * the capability (restarted without it), which holds the unit without
 * serving it until the unit has moved on by a stream. */
#ifndef KEEL_COORDINATOR_FAILOVER_H
#define KEEL_COORDINATOR_FAILOVER_H

#include "coordinator/replicaset.h"

typedef struct keel_failover_unit {
    const keel_rs *rs;  /* the unit's replicas, primary first */
    int primary_gone;   /* the primary is missing from a completed
                         * member listing */
    int released;       /* the primary published RELEASED at the unit's
                         * shard_epoch (or the move saw it): its stream's
                         * recipient has the data */
    int stand_in;       /* the primary was promoted at the unit's epoch and
                         * has not written its state since: it answered
                         * nothing there, and its fallbacks (rs->fallback)
                         * hold every acknowledged write */
} keel_failover_unit;

/* The position (1..n-1) in u->rs of the backup to promote now, or 0 when
 * the unit does not fail over. An in-sync backup if there is one; else,
 * with u->stand_in, a fallback, chosen the same way (the caller tells
 * them apart by rs->insync). env->live and env->has_store must be set;
 * env->placeable may be NULL (every live member counts as placeable). */
int keel_failover_pick(const keel_rs_env *env, const keel_failover_unit *u);

#endif
