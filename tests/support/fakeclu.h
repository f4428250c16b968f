/* Driving clusters on the deterministic fake ZooKeeper in unit tests:
 * run what the fake has pending and tick every cluster until nothing is
 * left. */
#ifndef KEEL_TEST_FAKECLU_H
#define KEEL_TEST_FAKECLU_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/cluster.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk_fake.h"

/* The clusters of a test: c[i] for i < n, NULL where none runs. */
typedef keel_cluster *(*tu_fake_cluster_at)(size_t i);

/* Runs the fake's events and ticks the n clusters at(i) until a round
 * finds nothing to run; fails the test ("the cluster did not settle")
 * after `rounds`. */
void tu_fake_settle(keel_zk_fake *f, tu_fake_cluster_at at, size_t n,
                    int rounds);

/* Moves the fake's clock on by ms, then settles. */
void tu_fake_advance(keel_zk_fake *f, uint64_t ms, tu_fake_cluster_at at,
                     size_t n, int rounds);

/* The map znode path's map on the fake (the test fails if it is absent
 * or does not decode); the caller frees it (keel_map_free). */
keel_shard_map tu_fake_map(keel_zk_fake *f, const char *path);

#endif
