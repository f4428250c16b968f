/* keel-chaos run: a whole chaos run (docs/chaos.md, "keel-chaos run").
 *
 * Starts a ZooKeeper server (or an ensemble of three) and a cluster of
 * keeld nodes under DIR,
 * drives concurrent clients over the wire protocol while faults happen
 * on a seeded schedule, heals everything, waits for the cluster to
 * settle, reads every actor once more, and then checks the record
 * (chaos/checkdir.h) and writes the report (chaos/report.h). What it
 * leaves in DIR:
 *
 *   history.jsonl      every invocation and completion
 *   actlogs/NODE.log   the nodes' activation logs, with end lines
 *   faults.jsonl       the schedule as executed, one fault a line
 *   events.jsonl       what was done to which process, when
 *   run.json           the run's options and clocks
 *   nodes/NODE.log     each node's own log
 *   cluster.txt        members and units as a node saw them at the end
 *   run.log            what the harness did, for people
 *   check.txt          the verdicts, as keel-chaos check prints them
 *   report.html        the report
 *   zk/                ZooKeeper's logs (its data, like the nodes', is
 *                      removed unless --keep-data) */
#ifndef KEEL_CHAOS_RUN_H
#define KEEL_CHAOS_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "chaos/workload.h"

/* The run itself could not be made (no ZooKeeper, a node that never
 * started, a directory that cannot be written): nothing was checked. */
#define CHAOS_EXIT_NO_RUN 4

/* --node-arg: at most this many. */
#define CHAOS_NODE_ARGS_MAX 6

typedef struct chaos_run_opts {
    int nodes;           /* keeld nodes at the start */
    int replicas;        /* keeld --replicas of every node; 1: none */
    int clients;
    int actors;
    int64_t seconds;     /* how long the clients run */
    chaos_workload workload;
    unsigned faults;     /* bit (1 << chaos_fault_kind) per kind */
    uint64_t seed;
    int rate;            /* operations per second, all clients; 0: none */
    int shards;
    int session_ms;      /* the nodes' ZooKeeper session timeout */
    int replica_dead_ms; /* keeld --replica-dead-ms of every node; 0: its
                          * default (5 minutes) */
    /* More keeld arguments of every node (--node-arg), as given. */
    const char *node_args[CHAOS_NODE_ARGS_MAX];
    int nnode_args;
    int client_timeout_ms;
    int keyed;           /* every operation with a request key, sent again
                          * up to this many times after an outcome that
                          * is unknown or says it did not run; 0: once,
                          * without a key */
    int refusals;        /* percent of counter increments the counter may
                          * refuse (chaos_wl.refusals); 0: none */
    int zk_servers;      /* ZooKeeper servers: 1, or 3 (an ensemble) */
    unsigned shapes;     /* partition shapes to draw from, bit (1 <<
                          * chaos_part_shape) each; 0: all that apply */
    int keep_data;
    uint64_t max_states; /* the check's, per actor; 0: no bound */
    const char *out;     /* the run directory (created) */
    const char *keeld;
    const char *zk_conf;
    const char *load;    /* a plugin every node loads, PATH.so[:ARGS] as
                          * keeld --load takes it, or NULL */
    const char *workload_type; /* the actor type of the workload, when not
                                * the built-in one (chaos/workload.h) */
} chaos_run_opts;

void chaos_run_opts_init(chaos_run_opts *o);

/* Runs it. Progress and verdicts go to out, problems to err. Returns the
 * check's exit status (CHAOS_EXIT_* of chaos/checkdir.h), or
 * CHAOS_EXIT_NO_RUN. */
int chaos_run(const chaos_run_opts *o, FILE *out, FILE *err);

#endif
