/* Failover: the choice of the backup that replaces a dead primary. */
#include "coordinator/failover.h"

#include <stddef.h>

int keel_failover_pick(const keel_rs_env *env, const keel_failover_unit *u)
{
    const keel_rs *rs = u->rs;
    int i, fallback = 0;

    if (rs->n < 2 || !u->primary_gone || u->released)
        return 0;
    for (i = 1; i < rs->n; i++) {
        const char *name = rs->names[i];
        if (!((rs->insync >> i) & 1) || !env->live(name, env->arg) ||
            !env->has_store(name, env->arg))
            continue;
        if (env->placeable == NULL || env->placeable(name, env->arg))
            return i;
        if (fallback == 0)
            fallback = i;
    }
    return fallback;
}
