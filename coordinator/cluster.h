/* Cluster mode: one node's coordination agent. It runs on the loop thread,
 * owns the node's ZooKeeper session, and
 *  - bootstraps /keel/<cluster> and refuses another shard count,
 *  - joins as members/<node> (a new incarnation per session),
 *  - stands in the controller election and, when elected, runs the
 *    controller (controller.h),
 *  - publishes what it holds in nodes/<node>/state and, once the
 *    session's first state write has completed, watches `map` and applies
 *    it (a controller honouring an add request an earlier session left in
 *    that persistent znode does so before that write, or fails: the first
 *    map read shows it before the node holds anything),
 *  - holds a lease renewed by its own heartbeats (syncs answered through
 *    the ZooKeeper leader, lease.h) and fences itself when it lapses,
 *    half the session timeout after the last answered one left; on
 *    session expiry it drops everything and rejoins.
 *
 * The runtime sees it as a keel_coord (placement per message) and plugs in
 * through hooks: release a unit (stop admitting, finish turns, stream it to
 * the new owner), acquire one (record the fence), drop one. A hook left
 * NULL means the node holds no data for it, so the step completes at once.
 *
 * Time: with a libev loop the agent arms its own timer; without one (unit
 * tests on the fake ZooKeeper) the caller drives keel_cluster_tick(). */
#ifndef KEEL_COORDINATOR_CLUSTER_H
#define KEEL_COORDINATOR_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/coord.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk.h"

struct ev_loop;
struct keel_shard_map;
struct keel_controller;

typedef struct keel_cluster keel_cluster;

typedef struct keel_cluster_hooks {
    void *data;
    /* Stop admitting messages for the unit, let running turns finish,
     * persist, stream the unit's records to `to`; then call
     * keel_cluster_released() with the node that stored them.
     * Placement answers UNAVAILABLE meanwhile. Called again while the
     * release is under way when the map changes course: with another
     * `to` (stream there instead), or with to == NULL (the move was
     * called off: keep the unit, then call keel_cluster_kept()). Either
     * is honoured only while no recipient has stored the unit: once one
     * has, the release finishes there and keel_cluster_released() names
     * it. */
    void (*release)(keel_cluster *c, const char *cap, uint32_t shard,
                    uint64_t shard_epoch, const char *to, void *data);
    /* Record shard_epoch in the unit's fence before activating anything;
     * then call keel_cluster_acquired(). */
    void (*acquire)(keel_cluster *c, const char *cap, uint32_t shard,
                    uint64_t shard_epoch, void *data);
    /* Ownership was lost without a handoff: drop the unit's actors now. */
    void (*drop)(keel_cluster *c, const char *cap, uint32_t shard,
                 void *data);
    /* Self-fencing changed: fenced != 0 means stop serving every unit. */
    void (*fenced)(keel_cluster *c, int fenced, void *data);
    /* The session expired: every unit is dropped (no drop() per unit);
     * the node rejoins as a new incarnation. */
    void (*expired)(keel_cluster *c, void *data);
    /* A new map was applied. */
    void (*map_applied)(keel_cluster *c, uint64_t map_epoch, void *data);
    /* This node joined again after the operator forgot it (keel node
     * forget): delete the local records of every unit the applied map
     * (keel_cluster_map) does not give it, before it could own one of
     * them again; the unit's shard_epoch there is the fence to write.
     * Once those deletions are durable (or have failed), call
     * keel_cluster_forgotten_done(): forgotten/<node> is removed only
     * after that, so that a crash before the purge is durable finds the
     * mark again and purges again. */
    void (*forgotten)(keel_cluster *c, void *data);
    /* The node cannot take part in the cluster, for good (phase
     * KEEL_CLUSTER_FAILED, rc as keel_cluster_error(): another shard
     * count, credentials of another identity, a session timeout the
     * servers shorten too much...); the reason was logged. Nothing will
     * change that while the node runs: stop it. */
    void (*failed)(keel_cluster *c, int rc, void *data);
    /* The view of the members changed (keel_cluster_view): one joined,
     * left, or changed its data. */
    void (*members)(keel_cluster *c, void *data);
    /* Whether this node's link to node `name` failed and was not made
     * again since (a hint that it is down); NULL: no hint. The controller
     * prefers other in-sync backups in a failover (failover.h). */
    int (*peer_down)(keel_cluster *c, const char *name, void *data);
} keel_cluster_hooks;

typedef struct keel_cluster_options {
    const char *zk_hosts;    /* "host:port,..." for the real client */
    /* Credentials of the real client, "user:password" (copied;
     * keel_zk_real_set_auth): its znodes then belong to that identity.
     * NULL: none, open znodes. Ignored with a given zk. */
    const char *zk_auth;
    const char *cluster;     /* cluster name: /keel/<cluster> */
    const char *node;        /* this node's name (unique in the cluster) */
    const char *address;     /* where other nodes reach it, "host:port" */
    /* The identity of its store (32 hex digits), published in its member
     * znode; NULL: none. */
    const char *store_id;
    /* Its store's run (keel_store_run), checked against runs/<node>
     * before joining (storecheck.h); 0: not checked. store_dir: its data
     * directory, named in the refusal; NULL: unknown. */
    uint64_t store_run;
    const char *store_dir;
    /* keel_store_stale of its store: refused as an older copy before. */
    uint64_t store_stale;
    const char *const *caps; /* capabilities it declares */
    size_t ncaps;
    uint32_t shard_count;    /* must match the cluster's */
    uint32_t session_timeout_ms; /* 0: 10000 */
    /* Replicas per unit (1..KEEL_MAP_MAX_REPLICAS) a cluster this node
     * creates keeps, written into its config; 0: replicas_default. An
     * existing cluster's config wins (a different explicit count is
     * warned about): keel_cluster_replicas() says what the cluster uses. */
    int replicas;
    /* The count of a cluster this node creates without an explicit one
     * (0: 1); never warned about. */
    int replicas_default;
    /* Whether a dead owner's units go to others (losing what only the
     * dead node had) once its member znode has been gone for
     * dead_owner_grace_ms, never less than the dead node's negotiated
     * session timeout and a quarter (the default, with 0). Default 0:
     * they stay unavailable until it returns. */
    int reassign_dead_owner;
    uint32_t dead_owner_grace_ms;
    /* With backups: how long a replica whose member znode is gone keeps
     * its place in the replica lists before a live node replaces it and
     * catches up (docs/cluster.md, rule 2); 0: 300000 (5 minutes). What
     * counts is the value of the node that is the controller. */
    uint32_t replica_dead_ms;
    /* Bytes the placement may take in the map znode before capabilities
     * new to the map are left out (keel_controller_options.map_budget);
     * 0: the default. Tests scale it down. */
    size_t map_budget;
    /* The node runs without credentials: its member znode says so
     * ("insecure 1"), for the others' status pages. */
    int insecure;
    keel_cluster_hooks hooks;
    void *reserved[4];
} keel_cluster_options;

void keel_cluster_options_init(keel_cluster_options *o);

/* Creates the agent. zk: the client to use (ownership passes to the
 * agent, and its data field is the agent's from then on); NULL makes a
 * real client on o->zk_hosts driven by loop. loop may
 * be NULL only with a given zk (time then comes from keel_cluster_tick).
 * Strings are copied. Returns 0, KEEL_EINVAL (KEEL_EINVAL for malformed
 * zk_auth too) or KEEL_ENOMEM. */
int keel_cluster_create(struct ev_loop *loop, const keel_cluster_options *o,
                        keel_zk *zk, keel_cluster **out);
/* Connects and joins; everything after happens on events. */
int keel_cluster_start(keel_cluster *c);
/* Leaves (closing the session removes our member and election nodes at
 * once) and frees everything. */
void keel_cluster_destroy(keel_cluster *c);
/* Manual time (no loop): ms on one clock that never goes back. */
void keel_cluster_tick(keel_cluster *c, uint64_t now_ms);

/* Placement of a unit for the runtime; cheap (binary search in the map's
 * capability table, array lookups). REMOTE comes with the owner's address
 * through keel_cluster_owner(). */
void keel_cluster_placement(keel_cluster *c, const char *cap, uint32_t shard,
                            keel_placement *out);
/* The lease (lease.h): reads the clock and, if the lease has lapsed,
 * fences the node at once (hook fenced) rather than when the agent's timer
 * comes round. Cheap while serving: one clock read, one comparison. For
 * the runtime, before it reads requests or runs turns. Returns 1 when the
 * node is fenced. */
int keel_cluster_check_lease(keel_cluster *c);
/* The shard_epoch at which this node holds a unit: serving it, or handing
 * it over; 0 when it holds it at no epoch (dropped, expired, never
 * acquired). Writes of the unit's actors carry it, so that the store
 * refuses those of a node that lost the unit once a newer epoch's fence is
 * recorded there. */
uint64_t keel_cluster_write_epoch(keel_cluster *c, const char *cap,
                                  uint32_t shard);
/* The primary's name and address (copied into the buffers) of a unit, or
 * KEEL_EUNAVAIL when it has none, it is not a live member, or its address
 * is not HOST:PORT (unreachable). */
int keel_cluster_owner(keel_cluster *c, const char *cap, uint32_t shard,
                       char *name, size_t name_cap, char *addr,
                       size_t addr_cap);

/* The address of a live member by name (for streaming a unit to the
 * `to` of the release hook). KEEL_ENOTFOUND when it is not a member,
 * KEEL_EADDR when its address is not HOST:PORT (unreachable). */
int keel_cluster_member_addr(keel_cluster *c, const char *name, char *addr,
                             size_t addr_cap);

/* Completions of the release and acquire hooks. KEEL_ENOTFOUND when the
 * unit was not being released / acquired at that epoch (the map moved on
 * meanwhile; nothing to do).
 *
 * released(): the unit's records at shard_epoch are with node `to` (NULL:
 * the destination the release hook last gave) and gone from here. It is
 * published as RELEASED to `to`, whatever the map says now: the
 * controller then gives the unit to `to`, the only node with its data.
 * Also accepted while the unit is being acquired at that epoch: the
 * store may show that this node handed it over before a restart.
 *
 * kept(): a release called off (hook release with to == NULL) ended with
 * nothing handed over; the unit's data is still here, and the node takes
 * it up again as the map says. */
int keel_cluster_released(keel_cluster *c, const char *cap, uint32_t shard,
                          uint64_t shard_epoch, const char *to);
int keel_cluster_kept(keel_cluster *c, const char *cap, uint32_t shard,
                      uint64_t shard_epoch);
int keel_cluster_acquired(keel_cluster *c, const char *cap, uint32_t shard,
                          uint64_t shard_epoch);
/* Completion of the forgotten hook: 0 when every deletion it made is
 * durable, then forgotten/<node> is removed; otherwise the mark stays and
 * the hook runs again with the next map applied. Ignored when no purge is
 * awaited (a session ended meanwhile). */
void keel_cluster_forgotten_done(keel_cluster *c, int status);
/* Whether the unit is being acquired at shard_epoch (its fence is still
 * wanted). */
int keel_cluster_acquiring(keel_cluster *c, const char *cap, uint32_t shard,
                           uint64_t shard_epoch);
/* Whether this node may store a unit streamed to it now (XFER) by node
 * `from` (NULL: not checked): it is joined, not fenced, not leaving, has
 * applied a map in this session, and that map moves the unit to it at
 * shard_epoch (primary another node at that epoch, target this node), the
 * primary being `from`, and its table names the store this node runs on.
 * 0, or KEEL_EFENCED (fenced or not joined), KEEL_ESTOPPING (leaving),
 * KEEL_ENOTTARGET (the applied map does not move the unit here at that
 * epoch: the sender's map may be newer, so it tries again; or the move
 * was called off; or the map records another store for this node, until
 * the controller records this one), KEEL_EDENIED (the unit's primary at
 * that epoch is another node than `from`: only the primary streams it). */
int keel_cluster_may_receive(keel_cluster *c, const char *cap, uint32_t shard,
                             uint64_t shard_epoch, const char *from);

/* ------------------------------------------------------------ replication
 * (docs/cluster.md, "Replicas and the in-sync set"). Every unit has a
 * replica list in the map, primary first, and an in-sync set; only the
 * controller changes either. */

typedef struct keel_replica_ref {
    char name[KEEL_NAME_MAX + 1];
    char addr[300]; /* "" when not a live member, or unreachable */
} keel_replica_ref;

/* The cluster's replica count (its config), 1 before the config was
 * read. A unit has fewer when fewer members declare its capability. */
int keel_cluster_replicas(const keel_cluster *c);

/* The in-sync backups (replicas[1..] with their in-sync flag) of a unit
 * this node is primary of at shard_epoch in the applied map, in map
 * order, into out (at most max). Returns how many were written: 0 when
 * there are none, or the unit is not this node's at that epoch. Cheap:
 * array lookups and a binary search in the member view per backup. */
size_t keel_cluster_insync_backups(keel_cluster *c, const char *cap,
                                   uint32_t shard, uint64_t shard_epoch,
                                   keel_replica_ref *out, size_t max);

/* Whether the applied map has this node primary of the unit at
 * shard_epoch by failover: promoted from the unit's in-sync set, so its
 * store holds the unit's data whatever fence it recorded as a backup
 * (the acquire keeps it; docs/cluster.md, "Failover"). 1 or 0. */
int keel_cluster_promoted(keel_cluster *c, const char *cap, uint32_t shard,
                          uint64_t shard_epoch);

/* Asks the controller to drop `backup` from the unit's in-sync set,
 * published in nodes/<self>/state with the next state write (a unit
 * being handed off is published as PRIMARY to carry it). Returns 0
 * (asked, or asked already), KEEL_ENOTFOUND (the applied map does not
 * have this node as primary at that epoch, or backup is not in sync
 * there: nothing to ask) or KEEL_ENOMEM. The runtime learns the outcome
 * from the map_applied hook: keel_cluster_insync_backups() no longer
 * lists it. The request is withdrawn once an applied map shows it
 * settled (the backup out of sync, or the unit no longer this node's at
 * that epoch), and with the session. */
int keel_cluster_request_drop(keel_cluster *c, const char *cap,
                              uint32_t shard, uint64_t shard_epoch,
                              const char *backup);

/* Catch-up (docs/cluster.md, "Replicas and the in-sync set", rule 7).
 *
 * The backups of a unit this node is primary of at shard_epoch in the
 * applied map that may catch up: listed in the unit's replicas, NOT in
 * its in-sync set, live members (member znode present) publishing the
 * store id that the map's node table records for them, not leaving. In
 * map order into out[] (name, addr; addr "" when unreachable) and
 * stores[] (that recorded store id, 32 hex + NUL; stores may be NULL), at
 * most max. Returns how many. 0 when this node is not the unit's primary
 * at shard_epoch in the applied map. */
size_t keel_cluster_catchup_backups(keel_cluster *c, const char *cap,
                                    uint32_t shard, uint64_t shard_epoch,
                                    keel_replica_ref *out,
                                    char (*stores)[KEEL_MAP_STORE_HEX + 1],
                                    size_t max);

/* Asks the controller to add `backup` (which holds the unit's content
 * under store id `store`) to the unit's in-sync set at shard_epoch: an
 * add request in nodes/<self>/state with the next state write (a unit
 * being handed off is published as PRIMARY to carry it). From this call
 * on, keel_cluster_add_pending() is 1: the runtime counts the backup as
 * in sync. Returns 0 (also when asked already; asking again after a
 * withdrawal makes the request active again, asking under another store
 * replaces it), KEEL_ENOTFOUND when the applied map does not have this
 * node primary at shard_epoch with backup listed out of sync, KEEL_EINVAL
 * for a bad store id (not 32 lowercase hex digits, or all zero),
 * KEEL_ENOMEM. The outcome shows in an applied map: the backup in sync
 * (keel_cluster_insync_backups lists it, and the request leaves the state
 * with the next state write). Dropped with the session. */
int keel_cluster_request_add(keel_cluster *c, const char *cap, uint32_t shard,
                             uint64_t shard_epoch, const char *backup,
                             const char *store);

/* Withdraws an add request (the backup stopped answering, or left the
 * list): the next state write leaves it out. Returns 0 (also when
 * withdrawn already), or KEEL_ENOTFOUND when none is pending. The runtime
 * keeps counting the backup while keel_cluster_add_pending() says 1. */
int keel_cluster_withdraw_add(keel_cluster *c, const char *cap,
                              uint32_t shard, uint64_t shard_epoch,
                              const char *backup);

/* 1 while the runtime must count `backup` as if it were in the unit's
 * in-sync set because of an add request, else 0:
 *  - 1 from keel_cluster_request_add() on;
 *  - 0 once the applied map shows backup in the unit's in-sync set at
 *    shard_epoch with this node primary (keel_cluster_insync_backups now
 *    lists it);
 *  - 0 once the applied map no longer has this node primary of the unit
 *    at shard_epoch, or the session ended (everything dropped);
 *  - after keel_cluster_withdraw_add(): still 1 until (i) the state write
 *    without the request has COMPLETED and (ii) a map read ISSUED AFTER
 *    that completion has been applied; then 0 (if that map shows the
 *    backup in sync, keel_cluster_insync_backups lists it instead).
 * The agent issues that map read itself (one get after the state write
 * completes) and calls the map_applied hook after applying it even when
 * the map's content did not change. Cheap: a search of the (short) list
 * of requests. */
int keel_cluster_add_pending(keel_cluster *c, const char *cap, uint32_t shard,
                             uint64_t shard_epoch, const char *backup);

/* What this node's controller changed in the maps it wrote, counted when
 * each write landed, cumulative over its terms (0 on a node that never
 * led). Over units that keep their primary and shard_epoch across a
 * write: *expansions backups that joined an in-sync set (rule 7), *shrinks
 * backups that left one (drop requests, a store change, an in-sync backup
 * placement no longer lists); *failovers units promoted to an in-sync
 * backup (rule 6). Any pointer may be NULL. */
void keel_cluster_repl_counts(const keel_cluster *c, uint64_t *expansions,
                              uint64_t *shrinks, uint64_t *failovers);

/* Backup side: whether this node may apply replicated writes of the unit
 * at shard_epoch coming from node `from`: joined, not fenced, and the map
 * applied in this session lists this node among the unit's backups (in
 * sync or not) with primary `from` at that epoch, under this node's
 * store (the map's node table records which). 0, KEEL_EFENCED (fenced,
 * or not joined), KEEL_ENOTTARGET (the applied map does not say so: the
 * sender's map may be newer or older; it tries again). The
 * store's fence is the real guard; this keeps a node from storing units
 * that are none of its business. */
int keel_cluster_may_replicate(keel_cluster *c, const char *cap,
                               uint32_t shard, uint64_t shard_epoch,
                               const char *from);

/* Graceful leave (docs/cluster.md). Marks member `name` (this node or
 * another) leaving: "leaving 1" in its member znode. The controller then
 * places nothing on it and moves everything it owns to the others through
 * the usual handoff; the member stays live meanwhile (it releases and
 * streams). The flag lasts as long as the member's session. Returns 0
 * (submitted, or already leaving), KEEL_EINVAL, KEEL_ESESSION (not
 * joined), KEEL_ENOTFOUND (not a live member), KEEL_EOVERLOAD (another
 * mark in flight) or a submit error. The outcome is logged. Units of a
 * capability no other member has stay with the leaving member until it
 * goes: an operator's drain checks keel_cluster_drain_stranded first and
 * refuses; a node that stops (SIGTERM) leaves anyway, after handing off
 * what others can take. */
int keel_cluster_drain(keel_cluster *c, const char *name);
/* A capability ("" for the default group) of units `name` leads in the
 * applied map that no other live member that is not leaving has, or
 * NULL when every unit it leads could move. */
const char *keel_cluster_drain_stranded(const keel_cluster *c,
                                        const char *name);
/* Gives up the data of node `name`, which must not be a live member
 * (keel node forget, docs/cluster.md): creates the persistent znode
 * forgotten/<name>, atomically with a proof that members/<name> does not
 * exist; the controller then moves the node's units to live members at
 * shard_epoch + 1 without waiting for it to return (but not before its
 * session timeout and a quarter have passed since its member znode was
 * seen gone), and what they held is lost.
 * *units (may be NULL) gets how many units the applied map gives it.
 * Returns 0 (submitted; already forgotten counts as done while the map
 * still lists it), KEEL_EINVAL, KEEL_ESESSION (not joined), KEEL_EEXIST
 * (a live member: drain it instead), KEEL_ENOTFOUND (the applied map
 * lists no such node: never one of this cluster, or forgotten and
 * holding nothing any more), KEEL_EOVERLOAD (another forget in flight)
 * or a submit error.
 * The outcome is logged. */
int keel_cluster_forget(keel_cluster *c, const char *name, size_t *units);
/* Whether the view shows member `name` leaving. */
int keel_cluster_member_leaving(const keel_cluster *c, const char *name);
/* Units the applied map gives this node (*held), and among them those some
 * other live member that is not leaving could take (*movable). */
void keel_cluster_held(const keel_cluster *c, size_t *held, size_t *movable);

/* State, for tests and the runtime's status pages. */
enum keel_cluster_phase {
    KEEL_CLUSTER_IDLE = 0,
    KEEL_CLUSTER_CONNECTING,
    KEEL_CLUSTER_BOOTSTRAP,
    KEEL_CLUSTER_JOINING,
    KEEL_CLUSTER_RUNNING,
    KEEL_CLUSTER_FAILED /* keel_cluster_error() says why (KEEL_ECONFIG...) */
};
int keel_cluster_phase(const keel_cluster *c);
int keel_cluster_error(const keel_cluster *c);
int keel_cluster_fenced(const keel_cluster *c);
/* Until when the lease lets this node serve (ms on the agent's clock:
 * CLOCK_BOOTTIME, or keel_cluster_tick's time); 0 without a lease. */
uint64_t keel_cluster_lease_until(const keel_cluster *c);
/* The session timeout the lease runs on (ms): the one ZooKeeper granted
 * once connected (its servers pull a request into 2 to 20 ticks), the one
 * asked for before. */
uint32_t keel_cluster_session_timeout(const keel_cluster *c);
/* While fenced: how long ago (ns, on the agent's clock read now) the node
 * stopped being allowed to serve, the lease's end for a node that noticed
 * late (resumed after SIGSTOP, starved). 0 when not fenced. */
int64_t keel_cluster_fenced_ago_ns(keel_cluster *c);
int keel_cluster_is_controller(const keel_cluster *c);
int64_t keel_cluster_incarnation(const keel_cluster *c);
/* The session this agent is in: a number that grows by one each time a
 * session expires (before the hooks run), 0 for the first. A request the
 * runtime accepted to run here in one session must not be answered as a
 * success in a later one: the unit may have been served elsewhere
 * meanwhile, and what it read or wrote belongs to a superseded map. */
uint64_t keel_cluster_session(const keel_cluster *c);
/* The applied map (NULL before the first); valid until the next event. */
const struct keel_shard_map *keel_cluster_map(const keel_cluster *c);
/* The controller part (active or not), for tests and diagnostics. */
struct keel_controller *keel_cluster_controller(keel_cluster *c);
keel_zk *keel_cluster_zk(keel_cluster *c);
/* Number of live members in the view. */
size_t keel_cluster_members(const keel_cluster *c);
/* The view itself, sorted by name; valid until the next event. */
struct keel_member;
const struct keel_member *keel_cluster_view(const keel_cluster *c, size_t *n);
/* The member that leads the controller election as this node last saw it
 * (the one whose session made the lowest election node), or NULL when
 * unknown; valid until the next event. */
const char *keel_cluster_controller_name(const keel_cluster *c);
/* This node's name, and the cluster's. */
const char *keel_cluster_node_name(const keel_cluster *c);
const char *keel_cluster_name(const keel_cluster *c);

/* The runtime's view: a keel_coord whose placement() is
 * keel_cluster_placement and whose destroy() destroys the agent. */
int keel_cluster_coord(keel_cluster *c, keel_coord **out);
keel_cluster *keel_coord_to_cluster(keel_coord *coord);

/* In one call: an agent with the real client on o->zk_hosts, driven by
 * loop, started, as a keel_coord (keel_coord_destroy() ends it). The
 * agent behind it: keel_coord_to_cluster(). Returns 0, KEEL_EINVAL,
 * KEEL_ENOMEM or KEEL_EADDR. */
int keel_coord_cluster_create(struct ev_loop *loop,
                              const keel_cluster_options *o,
                              keel_coord **out);

#endif
