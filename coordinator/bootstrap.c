/* Cluster bootstrap: a fixed list of idempotent steps. */
#include "coordinator/bootstrap.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "keel.h"

enum {
    STEP_KEEL,      /* /keel */
    STEP_ROOT,      /* /keel/<cluster> */
    STEP_CONFIG,    /* create config (may exist) */
    STEP_READ,      /* read config and compare */
    STEP_ELECTION,
    STEP_MEMBERS,
    STEP_NODES,
    STEP_FORGOTTEN, /* forgotten/: nodes whose data the operator gave up */
    STEP_RUNS,      /* runs/: the store and run each node was last seen on */
    STEP_EPOCH,     /* controller_epoch = 0 (may exist) */
    STEP_DONE
};

static int run(keel_bootstrap *b);

static void finish(keel_bootstrap *b, int rc, uint32_t found)
{
    b->done = rc == 0;
    b->cb(b, rc, found, b->arg);
}

/* A request failed with rc: connection loss stalls until resume(); other
 * errors end the bootstrap. */
static void failed(keel_bootstrap *b, int rc)
{
    if (rc == KEEL_ECONNLOSS) {
        b->stalled = 1;
        return;
    }
    /* Creating an existing znode is refused for want of the permission
     * before it is found to exist: a node of another identity (or of
     * none) fails here, at the first znode under the cluster's root. */
    if (rc == KEEL_EDENIED)
        keel_error("ZooKeeper refused this node's credentials for %s: the "
                   "cluster's znodes belong to another identity; check "
                   "--zk-auth",
                   b->layout->root);
    finish(b, rc, 0);
}

static void next(keel_bootstrap *b)
{
    int rc;

    b->step++;
    if (b->step == STEP_DONE) {
        finish(b, 0, b->shards);
        return;
    }
    if ((rc = run(b)) != 0)
        failed(b, rc);
}

static void created(keel_zk *zk, int rc, const char *path,
                    const keel_zk_stat *st, void *arg)
{
    keel_bootstrap *b = arg;

    (void)zk;
    (void)path;
    (void)st;
    b->busy = 0;
    if (rc != 0 && rc != KEEL_EEXIST) {
        failed(b, rc);
        return;
    }
    next(b);
}

static void config_read(keel_zk *zk, int rc, const void *data, size_t len,
                        const keel_zk_stat *st, void *arg)
{
    keel_bootstrap *b = arg;
    uint32_t found = 0;
    int replicas = 1;

    (void)zk;
    (void)st;
    b->busy = 0;
    if (rc != 0) {
        failed(b, rc);
        return;
    }
    if ((rc = keel_config_parse(data, len, &found, &replicas)) != 0) {
        keel_error("cluster config in %s is unreadable", b->layout->root);
        finish(b, rc, 0);
        return;
    }
    if (found != b->shards) {
        keel_error("cluster %s has %u shards, this node %u: refusing to "
                   "join (start it with --shards %u, on a new data "
                   "directory: this one was made for %u shards)",
                   b->layout->root, found, b->shards, found, b->shards);
        finish(b, KEEL_ECONFIG, found);
        return;
    }
    if (b->replicas_explicit && b->replicas != replicas &&
        b->cluster_replicas != replicas)
        keel_warn("cluster %s keeps %d replica(s) of each unit; this node "
                  "was started with --replicas %d and follows the cluster",
                  b->layout->root, replicas, b->replicas);
    b->cluster_replicas = replicas;
    next(b);
}

static int run(keel_bootstrap *b)
{
    char path[KEEL_ZK_PATH_MAX], buf[64];
    const char *leaf = NULL, *data = NULL;
    size_t len = 0;
    int rc, flags = 0;

    switch (b->step) {
    case STEP_KEEL:
        /* Shared by every cluster, whatever its identity: with
         * credentials, anyone may create a cluster root in it. */
        snprintf(path, sizeof path, "/keel");
        flags = KEEL_ZK_SHARED;
        break;
    case STEP_ROOT:
        snprintf(path, sizeof path, "%s", b->layout->root);
        break;
    case STEP_CONFIG:
        leaf = "config";
        len = keel_config_format(buf, sizeof buf, b->shards,
                                 b->replicas > 0 ? b->replicas : 1);
        data = buf;
        break;
    case STEP_READ:
        keel_layout_path(b->layout, path, "config", NULL, NULL);
        rc = keel_zk_get(b->zk, path, NULL, NULL, config_read, b);
        b->busy = rc == 0;
        return rc;
    case STEP_ELECTION:
        leaf = "election";
        break;
    case STEP_MEMBERS:
        leaf = "members";
        break;
    case STEP_NODES:
        leaf = "nodes";
        break;
    case STEP_FORGOTTEN:
        leaf = "forgotten";
        break;
    case STEP_RUNS:
        leaf = "runs";
        break;
    case STEP_EPOCH:
        leaf = "controller_epoch";
        len = keel_epoch_format(buf, sizeof buf, 0);
        data = buf;
        break;
    default:
        return KEEL_EINVAL;
    }
    if (leaf != NULL)
        keel_layout_path(b->layout, path, leaf, NULL, NULL);
    rc = keel_zk_create(b->zk, path, data, len, flags, created, b);
    b->busy = rc == 0;
    return rc;
}

void keel_bootstrap_init(keel_bootstrap *b, keel_zk *zk,
                         const keel_layout *layout, uint32_t shards,
                         keel_bootstrap_cb cb, void *arg)
{
    memset(b, 0, sizeof *b);
    b->zk = zk;
    b->layout = layout;
    b->shards = shards;
    b->cb = cb;
    b->arg = arg;
}

int keel_bootstrap_start(keel_bootstrap *b)
{
    if (b->shards == 0 || b->shards > KEEL_MAP_MAX_SHARDS)
        return KEEL_EINVAL;
    b->step = STEP_KEEL;
    b->busy = 0;
    b->stalled = 0;
    b->done = 0;
    return run(b);
}

void keel_bootstrap_resume(keel_bootstrap *b)
{
    int rc;

    if (!b->stalled || b->busy || b->done)
        return;
    b->stalled = 0;
    if ((rc = run(b)) != 0)
        failed(b, rc);
}
