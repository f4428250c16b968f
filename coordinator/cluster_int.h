/* Internals of the cluster agent shared by its files (loop thread):
 *   cluster.c        the session, bootstrap and joining, the lease, the
 *                    units this node holds, reading and applying the map,
 *                    events, the timer, lifecycle;
 *   cluster_state.c  the node's published state (nodes/<node>/state):
 *                    writing it, add requests batched one per map, and
 *                    the settling of withdrawn ones;
 *   cluster_repl.c   replication as this node sees it in the map: in-sync
 *                    and catching-up backups, the requests to drop or add
 *                    a backup, and whether a primary may replicate here;
 *   cluster_leave.c  graceful leave (marking a member leaving, what it
 *                    holds and whether others can take it) and forget
 *                    (an operator's forget, and the purge of a forgotten
 *                    node that joins again).
 * Not part of any API: coordinator/cluster.h is the runtime's view. */
#ifndef KEEL_COORDINATOR_CLUSTER_INT_H
#define KEEL_COORDINATOR_CLUSTER_INT_H

#include <ev.h>
#include <stdint.h>

#include "coordinator/bootstrap.h"
#include "coordinator/cluster.h"
#include "coordinator/controller.h"
#include "coordinator/election.h"
#include "coordinator/layout.h"
#include "coordinator/lease.h"
#include "coordinator/membership.h"
#include "coordinator/shardmap.h"
#include "coordinator/storecheck.h"
#include "coordinator/zk.h"
#include "keel.h"

/* What this node does with one unit. */
enum {
    U_NONE = 0,  /* holds nothing */
    U_ACQUIRING, /* recording the fence at `epoch` */
    U_PRIMARY,   /* fenced at `epoch`, serving */
    U_RELEASING, /* handing over to `to` */
    U_RELEASED   /* handed over to `to` at `epoch` */
};

typedef struct local_unit {
    uint8_t phase;
    uint8_t release_wanted; /* release as soon as the acquire is done */
    /* U_RELEASING: the map called the move off and the hook was told
     * (to == NULL); kept() or released() ends it. */
    uint8_t calling_off;
    uint16_t to;            /* index into c->names */
    uint64_t epoch;
    /* A unit promoted with fallbacks (keel_map_unit.fallback) serves only
     * once state write number `announce` (or a later one), the first one
     * issued after its acquire began, has landed: the controller
     * promotes a fallback over it only while its state is unchanged
     * since the promotion. 0: no such wait. */
    uint64_t announce;
} local_unit;

typedef struct local_cap {
    char name[KEEL_NAME_MAX + 1];
    local_unit *units; /* shard_count */
} local_cap;

/* A primary's request that the controller drop a backup from a unit's
 * in-sync set (keel_cluster_request_drop). Rare: kept in a plain list. */
typedef struct drop_req {
    char cap[KEEL_NAME_MAX + 1];
    uint32_t shard;
    uint64_t epoch;
    char backup[KEEL_NAME_MAX + 1];
} drop_req;

/* A primary's request that the controller add a backup it caught up to a
 * unit's in-sync set (keel_cluster_request_add). Once withdrawn it stays
 * here, unpublished, until the runtime may stop counting the backup: the
 * first state write that leaves it out has completed, and then a map read
 * issued after that completion has been applied (a controller that read
 * the request earlier either wrote its map before that write, and the
 * read shows it, or fails the CHECK of nodes/<node>/state that every map
 * write honouring an add carries). Rare: kept in a plain list. */
typedef struct add_req {
    char cap[KEEL_NAME_MAX + 1];
    uint32_t shard;
    uint64_t epoch;
    char backup[KEEL_NAME_MAX + 1];
    char store[KEEL_MAP_STORE_HEX + 1];
    uint8_t withdrawn;
    uint8_t written; /* withdrawn: a state write without it completed */
    uint8_t reading; /* written: the settle read in flight was issued
                      * after that */
    uint64_t write_from; /* withdrawn: the number of the first state write
                          * that leaves it out */
} add_req;

/* Setup after joining: nodes/<node>, then nodes/<node>/state. */
enum { SETUP_NONE = 0, SETUP_NODE, SETUP_STATE, SETUP_DONE };

struct keel_cluster {
    keel_coord coord;
    struct ev_loop *loop;
    ev_timer timer;
    keel_zk *zk;
    keel_layout layout;

    char node[KEEL_NAME_MAX + 1];
    char *address;
    char *store_dir; /* the data directory, for messages; NULL: unknown */
    char *zk_hosts; /* for the log; NULL with a given client */
    /* While connecting: since when (agent clock, ms), and when to say
     * again that ZooKeeper has not answered (0: said nothing yet). */
    uint64_t connect_since, connect_warn_at;
    int connect_warned;
    /* Whether, and since when, the node has been connected to ZooKeeper
     * without having joined: a join that has not ended long after is
     * started over (cluster.c, join_watchdog). */
    int joining;
    uint64_t joining_since;
    char **caps;
    size_t ncaps;
    uint32_t shard_count;
    int replicas;              /* the cluster's (config), 1 before read */
    uint32_t timeout_ms;       /* requested; the negotiated one is the
                                * client's (keel_zk_session_timeout) */
    uint32_t warned_timeout;   /* the negotiated one last warned about */
    keel_cluster_hooks hooks;

    int phase, error;
    uint64_t now;
    keel_bootstrap boot;
    /* Before joining: the store is the one the node served from. */
    keel_storecheck store_check;
    keel_membership members;
    keel_election election;
    keel_controller ctl;
    keel_lease lease;

    /* the applied map */
    keel_shard_map map;
    int have_map;
    int my_idx;          /* our index in map.nodes, or -1 */
    uint8_t *live;       /* per map node: a member now */
    local_cap **cap_of;  /* per map capability */
    int map_busy, map_stalled, map_dirty;
    /* The map is read (and watched) in a session only once the session's
     * first state write has completed: see state_written() in
     * cluster_state.c. */
    int map_started;

    local_cap *lcaps;
    size_t nlcaps;
    char **names; /* release targets by index */
    size_t nnames;
    drop_req *drops; /* drop requests not yet settled by a map */
    size_t ndrops;
    add_req *adds; /* add requests, active or withdrawn, not settled */
    size_t nadds;
    /* State writes are numbered as they are submitted: state_sent is the
     * last number given, state_flight the one in flight. */
    uint64_t state_sent, state_flight;
    uint64_t state_landed; /* the last one that succeeded */
    /* The map read that settles withdrawn adds (one at a time). */
    int settle_busy, settle_stalled;
    /* Add requests go out in batches, one per map (docs/cluster.md,
     * "Catch-up"): adds_out says a state write carrying add requests was
     * issued and no map was applied since; a request asked meanwhile is
     * held (adds_held) until the next map, or until adds_due (ms), the
     * wait doubling (adds_hold_ms) each time it runs out. */
    int adds_out, adds_held;
    uint64_t adds_due, adds_hold_ms;

    int setup, setup_busy, setup_stalled;
    int state_busy, state_dirty, state_stalled, state_missing;

    /* Who leads, for introspection: the session id in the name of the
     * lowest election node (watched), 0 when unknown. */
    int64_t leader_session;
    int lead_busy, lead_dirty, lead_stalled, lead_started;

    /* Graceful leave: the member being marked leaving (one at a time). */
    char drain_name[KEEL_NAME_MAX + 1];
    int drain_busy, drain_tries;

    /* keel node forget: the node being forgotten (one at a time). */
    char forget_name[KEEL_NAME_MAX + 1];
    size_t forget_units; /* units it led when its forget was asked */
    int forget_busy;
    /* Joining again after being forgotten: R_* below. */
    int rejoin, rejoin_busy, rejoin_stalled;
    int map_this_session; /* a map was applied since the session began */
    /* Counts the sessions that ended (expired): what the runtime accepted
     * or read in one of them must not be answered in a later one. */
    uint64_t session_gen;
};

/* R_PURGE: forgotten, waiting for a map of this session; R_PURGING: the
 * forgotten hook runs, waiting for keel_cluster_forgotten_done(). */
enum { R_NONE = 0, R_CHECK, R_PURGE, R_PURGING, R_REMOVE };

/* --- cluster.c ----------------------------------------------------------*/

/* The agent's clock (ms); also sets c->now. */
uint64_t keel__cluster_now_ms(keel_cluster *c);
/* Arms the timer for the earliest deadline of the agent's parts. */
void keel__cluster_schedule(keel_cluster *c);
/* The units of capability `name`, made (all U_NONE) when `create` is set;
 * NULL if absent (or out of memory). */
local_cap *keel__cluster_lcap(keel_cluster *c, const char *name, int create);
/* Reads the map (and watches it); 0 or the ZooKeeper call's error. */
int keel__cluster_map_read(keel_cluster *c);
/* Brings the local units in line with c->map, just read, and tells the
 * runtime (the map_applied hook). */
void keel__cluster_apply_map(keel_cluster *c);
/* Whether the applied map's node table records another store for this
 * node than the one it runs on (a replaced or wiped disk the controller
 * has not recorded yet): the node then holds none of the data the map
 * credits it with, and acts for none of its units, as primary or backup. */
int keel__cluster_store_elsewhere(const keel_cluster *c);

/* --- cluster_state.c ----------------------------------------------------*/

/* Writes nodes/<node>/state again (what this node holds, its requests),
 * now or once the write in flight has completed. */
void keel__cluster_publish(keel_cluster *c);
/* Publishes a new add request, or holds it for the next map. */
void keel__cluster_publish_add(keel_cluster *c);
/* The held add requests go out if their wait has run out (timer). */
void keel__cluster_adds_due(keel_cluster *c);
/* Issues the map read that settles the withdrawn add requests whose
 * leaving-out state write has completed, unless one is in flight. */
void keel__cluster_settle_kick(keel_cluster *c);

/* --- cluster_repl.c -----------------------------------------------------*/

/* Withdraws the drop requests the applied map settled. */
void keel__cluster_prune_drops(keel_cluster *c);
/* Ends the add requests the applied map settled (withdrawn or not). */
void keel__cluster_prune_adds(keel_cluster *c);

/* --- cluster_leave.c ----------------------------------------------------*/

/* Issues the ZooKeeper call of the rejoin step c->rejoin names (R_CHECK:
 * is forgotten/<node> there; R_REMOVE: remove it); 0 for other steps. */
int keel__cluster_rejoin_step(keel_cluster *c);
/* A forgotten node, with a map of this session: purges its stale units
 * (the forgotten hook), then removes its mark. */
void keel__cluster_rejoin_purge(keel_cluster *c);

#endif
