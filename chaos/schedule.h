/* The fault schedule of a chaos run (docs/chaos.md, "Faults"): which
 * faults happen when, against which node, for how long. It is made from
 * the seed and the run's shape alone, never from what happens during the
 * run, so the same seed with the same options gives the same schedule;
 * what a fault does when its time comes (which node is the controller
 * then, whether a partition could be made) is the runner's and goes to
 * faults.jsonl with the times it was executed at. */
#ifndef KEEL_CHAOS_SCHEDULE_H
#define KEEL_CHAOS_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

typedef enum chaos_fault_kind {
    CHAOS_F_KILL,       /* SIGKILL a node, restart it on its data */
    CHAOS_F_STOP,       /* SIGSTOP a node past its session timeout */
    CHAOS_F_ZK,         /* SIGKILL ZooKeeper, restart it on its data */
    CHAOS_F_CONTROLLER, /* SIGKILL the elected controller, restart it */
    CHAOS_F_DRAIN,      /* keel node drain, restart once it left */
    CHAOS_F_JOIN,       /* a spare node joins, then is drained */
    CHAOS_F_PARTITION,  /* network partition (namespaces), then healed */
    CHAOS_F_DISKFULL,   /* a node's file system filled, then freed */
    CHAOS_F_WIPE,       /* SIGKILL a node, restart it on an empty data
                         * directory (a new store) */
    CHAOS_F_ZKSTOP,     /* SIGSTOP ZooKeeper, about as long as a session
                         * timeout (shorter or longer), then SIGCONT */
    CHAOS_F_PAIR,       /* SIGKILL a node and, within a session timeout,
                         * SIGSTOP another past its session timeout; then
                         * SIGCONT it and restart the first */
    CHAOS_F_COUNT
} chaos_fault_kind;

/* Partition shapes (chaos_fault.variant for CHAOS_F_PARTITION). */
typedef enum chaos_part_shape {
    CHAOS_P_FROM_PEERS, /* a node cut from the other nodes, not from ZK */
    CHAOS_P_FROM_ZK,    /* a node cut from ZooKeeper, not from its peers */
    CHAOS_P_MAJORITY,   /* a minority of nodes cut from the rest and ZK */
    CHAOS_P_WITH_ZK,    /* a node and one ZooKeeper server of an ensemble
                         * cut from the other nodes and servers (only
                         * with an ensemble) */
    CHAOS_P_COUNT
} chaos_part_shape;

typedef struct chaos_fault {
    chaos_fault_kind kind;
    int64_t at_ms;  /* from the start of the workload */
    int64_t dur_ms; /* from at_ms until the fault is healed */
    int node;       /* the node it targets; -1: none or decided when it
                     * happens (zk, controller, join) */
    int variant;    /* partition: a chaos_part_shape */
    int zk;         /* with an ensemble, the ZooKeeper server that zk,
                     * zk-stop and with-zk-server partitions hit: 0..2,
                     * or -1 for the leader of the moment; 0 otherwise */
    int node2;      /* pair: the node stopped after `node` was killed
                     * (another one); else -1 */
    int64_t gap_ms; /* pair: from the kill to the stop; else 0 */
} chaos_fault;

typedef struct chaos_sched_opts {
    uint64_t seed;
    int64_t seconds;    /* the workload's length */
    int nodes;          /* nodes in the cluster at the start */
    int session_ms;     /* the nodes' ZooKeeper session timeout */
    unsigned kinds;     /* bit (1 << kind) for each fault kind wanted */
    int zk_servers;     /* 1 (also 0) or 3 */
    unsigned shapes;    /* bit (1 << shape) for each partition shape
                         * wanted; 0: every one that applies */
} chaos_sched_opts;

/* The fault names, as --faults and faults.jsonl spell them. */
const char *chaos_fault_name(chaos_fault_kind k);
const char *chaos_part_name(chaos_part_shape s);

/* Parses a --faults list: names separated by commas, "all", or "none"
 * (or ""). Returns 0 with the kinds in *kinds, or KEEL_EINVAL with err
 * naming what is not a fault. */
int chaos_faults_parse(const char *list, unsigned *kinds, char *err,
                       size_t errlen);

/* Parses a --partitions list: shape names separated by commas, or "all"
 * (0: every one that applies). Returns 0 with the shapes in *shapes, or
 * KEEL_EINVAL with err naming what is not a shape. */
int chaos_shapes_parse(const char *list, unsigned *shapes, char *err,
                       size_t errlen);

/* The fault kinds a cluster of this many nodes can take, bit (1 << kind)
 * each: all but pair below 3 nodes (two gone, none would serve). */
unsigned chaos_faults_possible(int nodes);

/* Makes the schedule: faults one after another, never two at once, each
 * followed by a pause for the cluster to recover, from about a tenth of
 * the run until a few seconds before its end, so that everything is
 * healed while the clients still run. Each round of faults has every
 * kind asked for that chaos_faults_possible() allows once, in an order
 * drawn from the seed (the others are left out: the runner says so
 * before it starts). *out is malloc'd (NULL when *n is 0). Returns 0,
 * KEEL_EINVAL (nodes < 1, seconds < 1, shapes that hold none that
 * applies) or KEEL_ENOMEM. */
int chaos_schedule_make(const chaos_sched_opts *o, chaos_fault **out,
                        size_t *n);

/* A small seeded generator (splitmix64): the schedule and the clients'
 * choices come from it, so they depend on the seed alone. */
typedef struct chaos_rng {
    uint64_t s;
} chaos_rng;

void chaos_rng_seed(chaos_rng *r, uint64_t seed);
uint64_t chaos_rng_next(chaos_rng *r);
/* Uniform in [lo, hi] (hi >= lo). */
int64_t chaos_rng_range(chaos_rng *r, int64_t lo, int64_t hi);

#endif
