/* Cluster bootstrap: makes sure the cluster's znodes exist under
 * /keel/<cluster> and that the cluster's shard count is this node's. The
 * first node to get there creates `config` (with its shard count and
 * replica count); every later node reads it and refuses to join with
 * another shard count (KEEL_ECONFIG), since a shard number means nothing
 * across shard counts. The replica count is the cluster's: a node asking
 * for another one is told (a warning) and follows the config.
 *
 * Asynchronous, one request in flight; idempotent, so a step that lost its
 * connection is simply redone by keel_bootstrap_resume(). */
#ifndef KEEL_COORDINATOR_BOOTSTRAP_H
#define KEEL_COORDINATOR_BOOTSTRAP_H

#include <stdint.h>

#include "coordinator/layout.h"
#include "coordinator/zk.h"

typedef struct keel_bootstrap keel_bootstrap;

/* rc: 0 (ready), KEEL_ECONFIG (other shard count; *found holds it),
 * KEEL_ECORRUPT (unreadable config), KEEL_EDENIED (the cluster's znodes
 * belong to another ZooKeeper identity: logged), or another ZooKeeper
 * error that is not worth retrying (KEEL_ESESSION, KEEL_EINVAL). Connection losses are
 * not reported: the bootstrap waits for resume(). */
typedef void (*keel_bootstrap_cb)(keel_bootstrap *b, int rc, uint32_t found,
                                  void *arg);

struct keel_bootstrap {
    keel_zk *zk;
    const keel_layout *layout;
    uint32_t shards;
    /* What this node would create the cluster with (0: 1), and whether it
     * was asked for explicitly (then another count is warned about).
     * Set after init. */
    int replicas;
    int replicas_explicit;
    /* The cluster's replica count, once config was read (0 before). */
    int cluster_replicas;
    keel_bootstrap_cb cb;
    void *arg;
    int step;
    int busy;    /* a request is in flight */
    int stalled; /* the last request lost its connection */
    int done;
};

void keel_bootstrap_init(keel_bootstrap *b, keel_zk *zk,
                         const keel_layout *layout, uint32_t shards,
                         keel_bootstrap_cb cb, void *arg);
/* Starts from the first step (also after a new session). Returns 0 or the
 * submit error. */
int keel_bootstrap_start(keel_bootstrap *b);
/* Redoes a step that lost its connection; no-op otherwise. */
void keel_bootstrap_resume(keel_bootstrap *b);

#endif
