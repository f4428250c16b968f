/* Replica sets: the controller's rules for backups and in-sync sets. */
#include "coordinator/replicaset.h"

#include <string.h>

int keel_rs_find(const keel_rs *rs, const char *name)
{
    int i;

    for (i = 0; i < rs->n; i++)
        if (strcmp(rs->names[i], name) == 0)
            return i;
    return -1;
}

/* Appends a replica, in sync or not, a fallback or not; a full list
 * takes no more (see build()). */
static void push(keel_rs *rs, const char *name, int insync, int fallback)
{
    if (rs->n >= KEEL_MAP_MAX_REPLICAS)
        return;
    if (insync)
        rs->insync |= (uint8_t)(1u << rs->n);
    if (fallback && rs->n > 0)
        rs->fallback |= (uint8_t)(1u << rs->n);
    rs->names[rs->n++] = name;
}

/* The backups placement wants beside `primary`: the first `slots` of
 * the desired members other than it. */
static size_t wanted(const keel_rs_env *env, const char *primary,
                     size_t slots, const char **out)
{
    size_t i, n = 0;

    for (i = 0; i < env->ndesired && n < slots &&
                n < KEEL_MAP_MAX_REPLICAS - 1;
         i++)
        if (strcmp(env->desired[i], primary) != 0)
            out[n++] = env->desired[i];
    return n;
}

static int listed(const char *const *v, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(v[i], name) == 0)
            return 1;
    return 0;
}

/* Whether a listed backup that is gone still holds its place. */
static int waiting(const keel_rs_env *env, const char *name)
{
    return env->waiting != NULL && !env->live(name, env->arg) &&
           !env->forgotten(name, env->arg) && env->waiting(name, env->arg);
}

/* The set with `primary` (in sync) and, of the candidates (names[i], in
 * sync per ins[i], fallbacks per fb[i], in their order), those placement
 * wants, the gone ones still within their dead time (each takes one of
 * the R - 1 backup places from placement) and, while there is room, the
 * others still in sync (displaced by placement, or gone past their dead
 * time) and the fallbacks not forgotten; then placement's other choices,
 * out of sync. Those kept in sync without a place of their own leave once
 * their replacements caught up: a live one once the rest are all in
 * sync, a gone one once the rest are R, all in sync. Until then the unit
 * keeps every complete copy it had. */
static void build(const keel_rs_env *env, const char *primary,
                  const char *const *names, const int *ins, const int *fb,
                  size_t n, keel_rs *out)
{
    const char *want[KEEL_MAP_MAX_REPLICAS], *wait[KEEL_MAP_MAX_REPLICAS];
    size_t nwant, nwait = 0, nkept = 1, room, ncore, i;
    /* bit r: out->names[r] is kept in sync without a place: gone past
     * its time (gone), or live and displaced (moved) */
    uint8_t gone = 0, moved = 0, core_out = 0;
    keel_rs all;

    for (i = 0; i < n; i++)
        if (strcmp(names[i], primary) != 0 && nwait + 1 < env->replicas &&
            nwait < KEEL_MAP_MAX_REPLICAS - 1 && waiting(env, names[i]))
            wait[nwait++] = names[i];
    nwant = wanted(env, primary,
                   env->replicas > nwait + 1 ? env->replicas - 1 - nwait : 0,
                   want);
    /* Room left for in-sync backups without a place once the primary, the
     * kept backups and placement's new choices are in: a replacement
     * never waits for one of them to be dropped. */
    nkept += nwait + nwant;
    room = nkept < KEEL_MAP_MAX_REPLICAS ? KEEL_MAP_MAX_REPLICAS - nkept : 0;
    memset(out, 0, sizeof *out);
    push(out, primary, 1, 0);
    for (i = 0; i < n; i++) {
        if (strcmp(names[i], primary) == 0)
            continue;
        /* A fallback the operator forgot has given its data up. */
        int keep_fb = fb[i] && !env->forgotten(names[i], env->arg);
        if (listed(want, nwant, names[i]) || listed(wait, nwait, names[i])) {
            push(out, names[i], ins[i], keep_fb);
        } else if (ins[i] && room > 0 &&
                   !env->forgotten(names[i], env->arg) &&
                   !(env->leaving != NULL && env->live(names[i], env->arg) &&
                     env->leaving(names[i], env->arg))) {
            /* (A leaving node is not kept: it stops once it leads
             * nothing, without waiting for its replacements, and gone it
             * would take a place back from them as a backup within its
             * dead time.) */
            if (env->live(names[i], env->arg))
                moved |= (uint8_t)(1u << out->n);
            else
                gone |= (uint8_t)(1u << out->n);
            push(out, names[i], 1, keep_fb);
            room--;
        } else if (keep_fb && room > 0) {
            /* It may have to take the unit (keel_rs_stand_in): its copy
             * stays until the primary has shown it served. */
            push(out, names[i], ins[i], 1);
            room--;
        }
    }
    for (i = 0; i < nwant; i++)
        if (keel_rs_find(out, want[i]) < 0)
            push(out, want[i], 0, 0);
    if ((gone | moved) == 0)
        return;
    /* The others (the core): are they all in sync, and how many? */
    ncore = 0;
    for (i = 0; i < out->n; i++) {
        if (((gone | moved) >> i) & 1)
            continue;
        ncore++;
        if (!((out->insync >> i) & 1))
            core_out = 1;
    }
    if (core_out)
        return;
    if (ncore < env->replicas)
        gone = 0; /* still needed: not R without them */
    if ((gone | moved) == 0)
        return;
    all = *out;
    memset(out, 0, sizeof *out);
    for (i = 0; i < all.n; i++)
        if (!(((gone | moved) >> i) & 1))
            push(out, all.names[i], (all.insync >> i) & 1,
                 (all.fallback >> i) & 1);
}

void keel_rs_fresh(const keel_rs_env *env, keel_rs *out)
{
    size_t i;

    memset(out, 0, sizeof *out);
    for (i = 0; i < env->ndesired && i < env->replicas; i++)
        push(out, env->desired[i],
             i == 0 || env->has_store(env->desired[i], env->arg), 0);
}

void keel_rs_follow(const keel_rs_env *env, const keel_rs *old, keel_rs *out)
{
    int ins[KEEL_MAP_MAX_REPLICAS], fb[KEEL_MAP_MAX_REPLICAS];
    int i;

    for (i = 0; i < old->n; i++) {
        ins[i] = (old->insync >> i) & 1;
        fb[i] = (old->fallback >> i) & 1;
    }
    build(env, old->names[0], old->names + 1, ins + 1, fb + 1,
          old->n > 0 ? (size_t)old->n - 1 : 0, out);
}

void keel_rs_move(const keel_rs_env *env, const keel_rs *old, const char *to,
                  int with_data, keel_rs *out)
{
    int ins[KEEL_MAP_MAX_REPLICAS], fb[KEEL_MAP_MAX_REPLICAS] = {0};
    int i;

    /* The old primary (i == 0) is out: what it wrote after the stream is
     * nowhere, and it deletes its copy once the stream is stored. The
     * backups that were in sync have all that A acknowledged, which the
     * stream gave B too; without the stream, B starts from nothing and
     * no one else agrees with it. */
    for (i = 0; i < old->n; i++)
        ins[i] = with_data && i > 0 && ((old->insync >> i) & 1);
    build(env, to, old->names, ins, fb, old->n, out);
}

/* names[pos] primary alone in sync; the replicas of `mask` other than it
 * and the old primary its fallbacks. */
static void promote(const keel_rs_env *env, const keel_rs *old, int pos,
                    unsigned mask, keel_rs *out)
{
    int ins[KEEL_MAP_MAX_REPLICAS] = {0}, fb[KEEL_MAP_MAX_REPLICAS] = {0};
    int i;

    for (i = 1; i < old->n; i++)
        fb[i] = i != pos && ((mask >> i) & 1);
    build(env, old->names[pos], old->names, ins, fb, old->n, out);
}

void keel_rs_promote(const keel_rs_env *env, const keel_rs *old, int pos,
                     keel_rs *out)
{
    promote(env, old, pos, old->insync, out);
}

void keel_rs_stand_in(const keel_rs_env *env, const keel_rs *old, int pos,
                      keel_rs *out)
{
    promote(env, old, pos, old->fallback, out);
}

int keel_rs_drop(keel_rs *rs, const char *name)
{
    int pos = keel_rs_find(rs, name);

    if (pos < 1 || !((rs->insync >> pos) & 1))
        return 0;
    rs->insync &= (uint8_t)~(1u << pos);
    return 1;
}

int keel_rs_add(const keel_rs_env *env, keel_rs *rs, uint64_t shard_epoch,
                const keel_rs_add_req *req, const char *recorded)
{
    const char *published;
    int pos;

    if (rs->n == 0 || req->from == NULL || req->backup == NULL ||
        req->store == NULL || req->store[0] == '\0' ||
        strcmp(rs->names[0], req->from) != 0 ||
        req->shard_epoch != shard_epoch || req->drop_too)
        return 0;
    pos = keel_rs_find(rs, req->backup);
    if (pos < 1 || ((rs->insync >> pos) & 1))
        return 0;
    /* The same store everywhere: the one the primary streamed to, the one
     * the backup runs on now, and the one the map records (what keeps a
     * node back on another disk out of every in-sync set, rule 4). */
    if (recorded == NULL || strcmp(recorded, req->store) != 0)
        return 0;
    published = env->store(req->backup, env->arg);
    if (published == NULL || strcmp(published, req->store) != 0 ||
        env->leaving(req->backup, env->arg))
        return 0;
    rs->insync |= (uint8_t)(1u << pos);
    return 1;
}
