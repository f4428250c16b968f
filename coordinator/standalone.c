/* Standalone mode: the node is the cluster's only member and the primary
 * of every (capability, shard) at shard epoch 1. The same runtime paths run
 * as in cluster mode, so the fence is recorded and checked all the same: a
 * data directory that once served a shard at a higher epoch refuses this
 * node's writes for it. */
#include <stdlib.h>

#include "coordinator/coord.h"
#include "keel.h"

static void standalone_placement(keel_coord *c, const char *cap,
                                 uint32_t shard, keel_placement *out)
{
    (void)c;
    (void)cap;
    (void)shard;
    out->state = KEEL_PLACEMENT_LOCAL;
    out->epoch = 1;
}

static const char *standalone_mode(keel_coord *c)
{
    (void)c;
    return "standalone";
}

static void standalone_destroy(keel_coord *c)
{
    free(c);
}

static const struct keel_coord_ops standalone_ops = {
    1, standalone_placement, standalone_mode, standalone_destroy};

int keel_coord_standalone_create(uint32_t shard_count, keel_coord **out)
{
    keel_coord *c = calloc(1, sizeof *c);

    if (c == NULL)
        return KEEL_ENOMEM;
    c->ops = &standalone_ops;
    c->shard_count = shard_count;
    *out = c;
    return 0;
}
