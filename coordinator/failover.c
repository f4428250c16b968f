/* Failover: the choice of the backup that replaces a dead primary. */
#include "coordinator/failover.h"

#include <stddef.h>

/* The best of the replicas in mask, or 0. */
static int pick(const keel_rs_env *env, const keel_rs *rs, unsigned mask)
{
    int i, best = 0, best_rank = 3;

    for (i = 1; i < rs->n; i++) {
        const char *name = rs->names[i];
        int rank;
        if (!((mask >> i) & 1) || !env->live(name, env->arg) ||
            !env->has_store(name, env->arg))
            continue;
        /* 0: placeable, declaring the capability, not suspect; 1: the
         * same but suspect; 2: the others. */
        rank = (env->placeable == NULL || env->placeable(name, env->arg)) &&
                       (env->declares == NULL ||
                        env->declares(name, env->cap, env->arg))
                   ? (env->suspect != NULL && env->suspect(name, env->arg))
                   : 2;
        if (rank < best_rank) {
            best = i;
            best_rank = rank;
        }
    }
    return best;
}

int keel_failover_pick(const keel_rs_env *env, const keel_failover_unit *u)
{
    int pos;

    if (u->rs->n < 2 || !u->primary_gone || u->released)
        return 0;
    if ((pos = pick(env, u->rs, u->rs->insync)) != 0 || !u->stand_in)
        return pos;
    return pick(env, u->rs, u->rs->fallback);
}
