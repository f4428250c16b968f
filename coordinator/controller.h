/* The controller: the one elected node that computes and writes the shard
 * map. On election it bumps controller_epoch by compare-and-set (with a
 * check that its election node still exists); from then on every write it
 * makes is a multi whose first op checks controller_epoch's version, so
 * once another controller has bumped the epoch, this one's writes fail as
 * a whole (KEEL_EDEPOSED) and it stops.
 *
 * It reconciles the map with the members it sees: units nobody ever owned
 * go straight to their rendezvous owner (shard_epoch 1); units whose owner
 * should change move through the handoff state machine (handoff.h), one
 * machine per moving unit, fed from the members' `nodes/<node>/state`.
 * With R > 1 each unit also has backups and an in-sync set, kept by the
 * rules of replicaset.h, by the node table's store ids (a node back on
 * another store leaves every in-sync set it was in) and by its primary's
 * drop and add requests (published in its node state). A write that
 * honours an add request also checks that the primary's state znode is
 * at the version the request was read from (rule 7).
 * A replica whose node is gone keeps its place in the replica lists
 * for replica_dead_ms (replicaset.h, rule 2), counted from when this
 * node first saw its member znode missing: every node's controller
 * watches the members, elected or not, so a successor that was a member
 * then counts from the same moment (one that joined later counts from
 * its first listing: later, never earlier).
 * A unit whose owner is gone stays with it (unavailable) unless the
 * operator allowed reassigning dead owners' units, or forgot the owner
 * (forgotten/<node>, `keel node forget`): either way the new owner gets
 * shard_epoch + 1, and not before the owner's member znode has been gone
 * for the dead node's session timeout and a quarter more, as this
 * controller measures from when it first saw the znode missing (a node
 * may still hold a lease while the leader expires its session: its
 * server can be cut off from the leader; see keel_controller_grace()).
 *
 * One request in flight; reads and writes are serialised in pump(). */
#ifndef KEEL_COORDINATOR_CONTROLLER_H
#define KEEL_COORDINATOR_CONTROLLER_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/handoff.h"
#include "coordinator/layout.h"
#include "coordinator/membership.h"
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk.h"

typedef struct keel_controller keel_controller;

enum keel_controller_event {
    KEEL_CONTROLLER_ACTIVE = 1,      /* epoch bumped: ctl->epoch */
    KEEL_CONTROLLER_MAP_WRITTEN = 2, /* ctl->map is what ZooKeeper holds */
    KEEL_CONTROLLER_DEPOSED = 3,     /* another controller took over */
    KEEL_CONTROLLER_FAILED = 4,      /* gave up: ctl->error */
    KEEL_CONTROLLER_TIMER = 5,       /* keel_controller_deadline() changed:
                                      * re-arm the timer */
    KEEL_CONTROLLER_MEMBERS_BEHIND = 6 /* a member the view lacks exists:
                                        * list members/ again
                                        * (keel_membership_refresh) */
};

/* keel_controller_options.replica_dead_ms by default: 5 minutes, as
 * operators of other replicated stores expect (a restart, a reboot, a
 * short maintenance do not move data). */
#define KEEL_CONTROLLER_REPLICA_DEAD_MS 300000u
/* Room the placement may take in the map znode by default: the rest of
 * ZooKeeper's limit is kept for what a write adds to it (targets of
 * moves, promoted units, the store table) and for the other operations
 * of the write. */
#define KEEL_CONTROLLER_MAP_BUDGET (KEEL_ZK_MAX_DATA / 4 * 3)

typedef void (*keel_controller_cb)(keel_controller *ctl, int event,
                                   void *arg);

typedef struct keel_controller_options {
    uint32_t shard_count;
    /* R: primary + R-1 backups per unit (1..KEEL_MAP_MAX_REPLICAS);
     * the cluster's config says, keel_controller_set_replicas() */
    int replicas;
    /* With R > 1: how long units never owned wait to be placed while
     * fewer than R members could hold them, from when this controller
     * first saw a member for their capability (0: 3000 ms), so that the
     * nodes of a cluster started together are all in sync (a backup
     * appended later is out of sync until catch-up exists). */
    uint32_t formation_ms;
    int reassign_dead_owner;  /* 0: a dead owner's units wait for it */
    /* after its member znode is gone: never less than
     * keel_controller_grace() */
    uint32_t dead_owner_grace_ms;
    /* How long a replica whose member znode is gone keeps its place in
     * the replica lists before placement's next live choice replaces it
     * (replicaset.h, rule 2), from when this node first saw the znode
     * missing; 0: KEEL_CONTROLLER_REPLICA_DEAD_MS. */
    uint32_t replica_dead_ms;
    /* Bytes the placement alone may take in the map znode: past them the
     * capabilities new to the map are left out (their units unplaced)
     * rather than the map grown past what ZooKeeper can hold, which would
     * stop every write of it; 0: KEEL_CONTROLLER_MAP_BUDGET. */
    size_t map_budget;
    /* Current time in ms, read whenever the controller acts on events;
     * NULL: the time last given to start/tick/members_changed. */
    uint64_t (*clock)(void *clock_arg);
    void *clock_arg;
    /* Whether this node's link to node `name` failed and was not made
     * again since: a hint that it is down, which failover weighs when it
     * picks among in-sync backups (failover.h); NULL: no hint. */
    int (*peer_down)(const char *name, void *peer_down_arg);
    void *peer_down_arg;
} keel_controller_options;

/* What the controller knows of one node (ids are indexes, stable). */
typedef struct keel_ctl_node {
    char name[KEEL_NAME_MAX + 1];
    keel_node_state state; /* as last read */
    int have_state;
    int32_t state_version; /* of the znode, as last read */
    int64_t state_mzxid;   /* its last change, as last read; 0: none */
    /* When this controller promoted it with fallbacks last (or first saw
     * such a unit of it); 0: never, or its state changed since. */
    uint64_t fallback_at;
    int dirty;   /* must be (re)read */
    int watched; /* a watch is armed */
    int arming;  /* the read in flight leaves a watch */
    uint32_t session_timeout_ms; /* as it last published it; 0: unknown */
    int gone;           /* missing from a member listing */
    /* A write's proof found its member znode although the view lacks it:
     * taken for live until a listing begun after that ends (the view's
     * list_done reaches it); 0: no such finding. */
    uint64_t present_until;
    uint64_t gone_at;   /* when this controller first saw that */
    int dead_logged;    /* its dead time's end was logged (rule 2) */
    /* A live member on another store than the map's table records while
     * it is the primary of units (set by each reconciliation): their data
     * is not where it runs. */
    int store_lost;
    int store_lost_logged;
} keel_ctl_node;

/* Handoff machines of one capability, per shard. */
typedef struct keel_ctl_cap {
    char name[KEEL_NAME_MAX + 1];
    keel_handoff *moves;
} keel_ctl_cap;

struct keel_controller {
    keel_zk *zk;
    const keel_layout *layout;
    const keel_membership *members;
    keel_controller_options opt;
    keel_controller_cb cb;
    void *arg;

    int state;
    int error;
    int busy, stalled;
    size_t reading; /* node whose state is being read */
    int bump_tries;
    char candidate[KEEL_ZK_PATH_MAX];
    uint64_t epoch;        /* our controller epoch once active */
    int32_t epoch_version; /* controller_epoch's version after our bump */
    uint64_t now;

    keel_shard_map map; /* as in ZooKeeper, once read */
    int have_map, map_exists, map_dirty;
    int32_t map_version;
    keel_shard_map pending; /* being written */
    int pending_valid;

    keel_ctl_node *nodes;
    size_t nnodes;
    keel_ctl_cap *caps;
    size_t ncaps;

    /* Nodes the operator forgot (forgotten/<node>, watched): their data
     * is given up, so their units move as soon as they are not members. */
    char (*forgotten)[KEEL_NAME_MAX + 1];
    size_t nforgotten;

    /* Per capability, when this controller first saw a member able to
     * hold its units (the formation wait starts there), and the end of
     * the wait still pending, 0 when none. */
    struct keel_ctl_seen {
        char name[KEEL_NAME_MAX + 1];
        uint64_t at;
    } *seen;
    size_t nseen;
    uint64_t formation_deadline;
    /* The earliest end of a dead time that keeps a gone replica listed,
     * as the last reconciliation found it; 0 when none. */
    uint64_t dead_deadline;
    /* The earliest time a silent live primary's fallbacks stop counting
     * (settle_fallbacks); 0 when none. */
    uint64_t fallback_deadline;
    int forgot_dirty, forgot_watched, forgot_arming;

    uint64_t writes;   /* map writes acknowledged */
    /* What those writes changed (keel_cluster_repl_counts), cumulative:
     * over units keeping primary and shard_epoch, backups that joined an
     * in-sync set and backups that left one; units failed over. */
    uint64_t expansions, shrinks, failovers;
    /* The nodes whose states the map being built honours add requests
     * of, with the version read: the write checks each is unchanged. */
    struct keel_ctl_check {
        size_t node;
        int32_t version;
    } *checks;
    size_t nchecks, checks_cap;
    size_t pending_checks; /* index of the first CHECK in the write in
                            * flight */
    /* The owners the write in flight proves absent, in op order: every
     * owner whose units it gives away without a release. */
    size_t *proof_owner;
    size_t nproofs, proofs_cap;
    uint64_t deadline; /* as last reported with KEEL_CONTROLLER_TIMER */
    /* The capabilities members declare that the last reconciliation left
     * unplaced, the map being full ("a, b"; "" when none). */
    char left_out[512];
};

void keel_controller_init(keel_controller *ctl, keel_zk *zk,
                          const keel_layout *layout,
                          const keel_membership *members,
                          const keel_controller_options *opt,
                          keel_controller_cb cb, void *arg);
void keel_controller_free(keel_controller *ctl);

/* Takes over as controller: `candidate` is our election node (it must
 * still exist when the epoch is bumped). Returns 0 or a submit error. */
int keel_controller_start(keel_controller *ctl, const char *candidate,
                          uint64_t now);
/* Stops acting (session lost or shutting down). Requests in flight are
 * ignored when they complete. */
void keel_controller_stop(keel_controller *ctl);
int keel_controller_active(const keel_controller *ctl);

/* The cluster's replica count, as its config says (read before the
 * controller starts); clamped to 1..KEEL_MAP_MAX_REPLICAS. */
void keel_controller_set_replicas(keel_controller *ctl, int replicas);

/* Inputs: the member view changed; time passed; the connection is back. */
void keel_controller_members_changed(keel_controller *ctl, uint64_t now);
void keel_controller_tick(keel_controller *ctl, uint64_t now);
void keel_controller_resume(keel_controller *ctl);
/* When tick() must next run (a grace period ends), or 0. */
uint64_t keel_controller_deadline(const keel_controller *ctl);

/* Writes the current map again under the next map_epoch, so that every
 * node re-applies it (an operator's nudge). Returns 0 when submitted (the
 * outcome comes as an event), KEEL_EOVERLOAD while another request is in
 * flight, KEEL_EDEPOSED when not active, or the submit error
 * (KEEL_ESESSION once the session is gone). */
int keel_controller_republish(keel_controller *ctl);

/* The machine of a unit, or NULL (tests, diagnostics). */
const keel_handoff *keel_controller_move(const keel_controller *ctl,
                                         const char *cap, uint32_t shard);
/* The least wait (ms), after node `name`'s member znode was seen gone,
 * before its units may go to others without its release: its session's
 * timeout T as it published it in its member znode, plus T/4. Unknown
 * (never seen live by this controller, or a node of an earlier version):
 * ten times this controller's own negotiated timeout, which is at least
 * 2 ticks, against a maximum of 20 ticks a server grants by default. */
uint32_t keel_controller_grace(keel_controller *ctl, const char *name);
/* Whether the controller's last read of forgotten/ lists name. */
int keel_controller_forgotten(const keel_controller *ctl, const char *name);
/* Node id of a name known to the controller, or -1. */
int keel_controller_node_id(const keel_controller *ctl, const char *name);

#endif
