/* The runtime's view of the cluster: who owns a placement unit
 * (capability, shard) and at which shard epoch. The runtime asks; the
 * coordinator answers from what it has applied. In standalone mode one
 * member owns every unit at epoch 1. This module knows nothing of LMDB. */
#ifndef KEEL_COORDINATOR_COORD_H
#define KEEL_COORDINATOR_COORD_H

#include <stdint.h>

enum keel_placement_state {
    KEEL_PLACEMENT_LOCAL = 0,  /* this node is the primary: serve */
    KEEL_PLACEMENT_REMOTE = 1, /* another node is: forward */
    KEEL_PLACEMENT_UNAVAILABLE = 2 /* nobody may serve right now */
};

typedef struct keel_placement {
    int state;      /* enum keel_placement_state */
    uint64_t epoch; /* shard_epoch of the unit's current primary */
} keel_placement;

typedef struct keel_coord keel_coord;

struct keel_coord_ops {
    int version; /* 1 */
    /* cap is "" for the default group. Must be cheap: called per message. */
    void (*placement)(keel_coord *c, const char *cap, uint32_t shard,
                      keel_placement *out);
    const char *(*mode)(keel_coord *c); /* "standalone", "cluster" */
    void (*destroy)(keel_coord *c);
};

struct keel_coord {
    void *data;
    const struct keel_coord_ops *ops;
    uint32_t shard_count;
};

/* The standalone coordinator: every unit local at epoch 1. */
int keel_coord_standalone_create(uint32_t shard_count, keel_coord **out);

static inline void keel_coord_placement(keel_coord *c, const char *cap,
                                        uint32_t shard, keel_placement *out)
{
    c->ops->placement(c, cap, shard, out);
}

static inline void keel_coord_destroy(keel_coord *c)
{
    if (c != NULL)
        c->ops->destroy(c);
}

#endif
