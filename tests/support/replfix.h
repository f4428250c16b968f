/* The fixture of the replication tests (test_cluster_repl*.c): a cluster
 * of keeld nodes started with --replicas on TU_REPL_SHARDS shards, a load
 * of TU_REPL_COUNTERS counters "r0".."r<COUNTERS-1>" incremented with
 * request keys, and the checks that nothing acknowledged is lost and that
 * the replicas in sync hold the same records. Every wait is bounded; a
 * failed check prints the nodes' logs (TU_CLUSTER_CHECK) and fails the
 * test. */
#ifndef KEEL_TEST_REPLFIX_H
#define KEEL_TEST_REPLFIX_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "runtime/client.h"

#define TU_REPL_SHARDS 16
#define TU_REPL_COUNTERS 24

/* Per-test setup: tu_cluster_setup(c, tag, prefix) with TU_REPL_SHARDS
 * shards and a 4 s ZooKeeper session. */
void tu_repl_setup(tu_cluster *c, const char *tag, const char *prefix);

/* Per-test teardown: ZooKeeper resumed (a test that failed while
 * tu_cluster_start_together had it paused must not leave it so for the
 * next one), then tu_cluster_teardown(c, SIGKILL). */
void tu_repl_teardown(tu_cluster *c);

/* Nodes n0..n<nodes-1> of a new cluster with --replicas `replicas`,
 * --repl-lag-ms lag_ms and an HTTP port each, every one in every unit's
 * first placement (tests/support/clmap.h). */
void tu_repl_start(tu_cluster *c, int nodes, int replicas,
                   const char *lag_ms);

/* A client connected to node i (the test fails otherwise). */
keel_client *tu_repl_connect(const tu_cluster *c, int i);

/* `incr` of counter id through node i with a request key, sent again
 * (same key: it runs at most once) after any failure, for at most 40 s.
 * Returns the value it answered, or -1 when it never succeeded. *cl is
 * (re)connected as needed and left open for the caller to close. */
long tu_repl_incr(const tu_cluster *c, keel_client **cl, int i,
                  const char *id);

/* The counter's value through node i (at most 100 tries 100 ms apart),
 * or -1. */
long tu_repl_get(const tu_cluster *c, int i, const char *id);

/* The name of counter j: "r<j>" into id (cap bytes). */
void tu_repl_counter_id(int j, char *id, size_t cap);

/* The shard of counter id among TU_REPL_SHARDS. */
uint32_t tu_repl_shard_of(const char *id);

/* One round of increments of every counter, counter j through node
 * nodes[(j + round) % nn] on cl[that node]; each must answer acked[j] + 1,
 * which then becomes acked[j]. `when` names the step in a failure. */
void tu_repl_load_round(const tu_cluster *c, keel_client **cl, long *acked,
                        const int *nodes, int nn, int round,
                        const char *when);

/* Waits (at most 40 s) until every unit has its 3 replicas in sync and
 * no move under way: the backups out of sync caught up. */
void tu_repl_wait_all_in_sync(const tu_cluster *c, const char *what);

/* Every counter answers its acknowledged count through each live node
 * (live[0..nl-1]), and every unit's replicas in sync print the same
 * digest, with every live node in sync (so the digests of all of them
 * are compared). */
void tu_repl_check_agree(const tu_cluster *c, const long *acked,
                         const int *live, int nl, const char *when);

/* Whether node leads every unit of the default group (every = 1), or
 * none while each has a primary (every = 0), in the map read now. */
int tu_repl_leads(const tu_cluster *c, const char *node, int every);

/* The controller named by node via's `keel nodes`, as the index of a
 * node named n0..n<nodes-1>; -1 when it names none of them. */
int tu_repl_controller(const tu_cluster *c, int via, int nodes);

/* The first of the counters tu_repl_counter_id names (of the first 64)
 * whose primary, as node via answers `where`, is node: into id (cap
 * bytes); "" when none is. */
void tu_repl_counter_led_by(const tu_cluster *c, int via, const char *node,
                            char *id, size_t cap);

/* An increment of counter/id sent to addr on a connection of its own,
 * from a thread of its own: for tests whose increment is answered only
 * once something they do next has happened (a node fenced, say). */
typedef struct tu_repl_bg_incr {
    const char *addr;
    char id[32];
    pthread_t t;
    int rc; /* its status once joined: 0 or a KEEL_E* code */
} tu_repl_bg_incr;

/* Starts b's thread (the test fails if it cannot): it connects within
 * 20 s, then waits as long for the call's answer. */
void tu_repl_bg_incr_start(tu_repl_bg_incr *b, const char *addr,
                           const char *id);
/* Waits for b's thread; returns b->rc. */
int tu_repl_bg_incr_join(tu_repl_bg_incr *b);

#endif
