/* The cluster's map read straight from ZooKeeper, for the integration
 * tests of replication and failover (a session of the test's own per
 * read), and a start of several nodes that puts them all in a unit's
 * first placement. Every wait is bounded. */
#ifndef KEEL_TEST_CLMAP_H
#define KEEL_TEST_CLMAP_H

#include <stdint.h>

#include "cluster.h"
#include "coordinator/shardmap.h"

/* c's map as ZooKeeper holds it now: 0, or -1 when there is none (yet),
 * it does not decode, or ZooKeeper did not answer within 15 s. */
int tu_map_read(const tu_cluster *c, keel_shard_map *m);

/* Whether members/<node> of c's cluster exists now: 1 or 0, -1 when
 * ZooKeeper did not answer within 15 s. */
int tu_cluster_member_exists(const tu_cluster *c, const char *node);

/* The unit (cap, shard) of m, or NULL when m has no such capability. */
const keel_map_unit *tu_map_unit(const keel_shard_map *m, const char *cap,
                                 uint32_t shard);

/* Whether node `name` is a replica of u in its in-sync set. */
int tu_map_in_sync(const keel_shard_map *m, const keel_map_unit *u,
                   const char *name);

/* Waits (at most 20 s) until every unit of the default group has a
 * primary, `want` replicas all in sync, and no move under way. 1 when it
 * has, else 0 (the last map printed on stderr). */
int tu_map_wait_settled(const tu_cluster *c, int want);

/* Starts nodes n0..n<nodes-1> with the extra arguments (NULL-terminated;
 * extra[i], for node i, may add up to 2 more arguments: NULL or a
 * NULL-terminated array) while ZooKeeper is paused (SIGSTOP), so that
 * their joins reach it together and every node is in every unit's first
 * placement (R = min(replicas, nodes)); a cluster that came up otherwise
 * is stopped and started again, at most 4 times. Fails the test if none
 * did. */
void tu_cluster_start_together(tu_cluster *c, int nodes, int replicas,
                               const char *const *common,
                               const char *const *const *extra);

/* The suite's ZooKeeper server process. */
int tu_cluster_zk_pid(const tu_cluster *c);

#endif
