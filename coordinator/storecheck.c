/* The store check before joining (storecheck.h): a short list of steps,
 * each one request. */
#include "coordinator/storecheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "keel.h"

enum {
    S_READ,      /* nodes/<node>: the recorded store */
    S_CREATE,    /* nodes/<node> missing: create it with this store */
    S_FORGOTTEN, /* another store: was the node forgotten? */
    S_STATE,     /* ... no: the units its last published state holds */
    S_MAP,       /* ... and the units the map gives it */
    S_RECORD,    /* record this store (version-checked) */
    /* Once the store is accepted for the node: is it an older copy? */
    S_RUNS_READ,   /* runs/<node>: the store and run last seen */
    S_RUNS_CREATE, /* runs/<node> missing: create it with ours */
    S_RUNS_SET     /* record ours (version-checked) */
};

static int run(keel_storecheck *sc);

size_t keel_storecheck_format(char *buf, size_t len, const char *store)
{
    int w = snprintf(buf, len, "store %s\n", store);
    return w < 0 ? 0 : (size_t)w;
}

int keel_storecheck_parse(const void *data, size_t len, char *store)
{
    const char *p = data;
    size_t i;

    store[0] = '\0';
    if (len == 0)
        return 0;
    if (len != 6 + KEEL_STORE_ID_HEX + 1 || memcmp(p, "store ", 6) != 0 ||
        p[len - 1] != '\n')
        return KEEL_ECORRUPT;
    for (i = 0; i < KEEL_STORE_ID_HEX; i++) {
        char c = p[6 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return KEEL_ECORRUPT;
        store[i] = c;
    }
    store[KEEL_STORE_ID_HEX] = '\0';
    return 0;
}

size_t keel_storecheck_run_format(char *buf, size_t len, const char *store,
                                  uint64_t run)
{
    int w = snprintf(buf, len, "store %s run %llu\n", store,
                     (unsigned long long)run);
    return w < 0 ? 0 : (size_t)w;
}

int keel_storecheck_run_parse(const void *data, size_t len, char *store,
                              uint64_t *run)
{
    const char *p = data;
    size_t i, at = 6 + KEEL_STORE_ID_HEX + 5, n;
    uint64_t v = 0;

    store[0] = '\0';
    *run = 0;
    if (len <= at + 1 || memcmp(p, "store ", 6) != 0 ||
        memcmp(p + 6 + KEEL_STORE_ID_HEX, " run ", 5) != 0 ||
        p[len - 1] != '\n')
        return KEEL_ECORRUPT;
    for (i = 0; i < KEEL_STORE_ID_HEX; i++) {
        char c = p[6 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return KEEL_ECORRUPT;
    }
    n = len - 1 - at;
    if (n > 20 || (n > 1 && p[at] == '0'))
        return KEEL_ECORRUPT;
    for (i = 0; i < n; i++) {
        char c = p[at + i];
        unsigned d;
        if (c < '0' || c > '9')
            return KEEL_ECORRUPT;
        d = (unsigned)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return KEEL_ECORRUPT;
        v = v * 10 + d;
    }
    memcpy(store, p + 6, KEEL_STORE_ID_HEX);
    store[KEEL_STORE_ID_HEX] = '\0';
    *run = v;
    return 0;
}

static void finish(keel_storecheck *sc, int rc)
{
    sc->done = 1;
    sc->cb(sc, rc, sc->arg);
}

static void go(keel_storecheck *sc, int step);

/* The existing steps let this store serve the node: now the run record,
 * when the store has a run to compare. */
static void accepted(keel_storecheck *sc)
{
    if (sc->marked != 0) {
        /* Refused as an older copy before: raising its run since (by
         * opening it again) does not make it newer. */
        sc->stale = 1;
        sc->found_run = sc->marked;
        finish(sc, KEEL_EMISMATCH);
        return;
    }
    if (sc->run == 0) {
        finish(sc, 0);
        return;
    }
    go(sc, S_RUNS_READ);
}

static void failed(keel_storecheck *sc, int rc)
{
    if (rc == KEEL_ECONNLOSS) {
        sc->stalled = 1;
        return;
    }
    finish(sc, rc);
}

/* `expected` of a step that handles every code itself (no KEEL_E* code is
 * positive). */
#define ANY_RC 1

/* The start of every answer: 1 when the step goes on with rc (0, or the
 * `expected` error it handles itself); 0 when it is done with: an ended
 * session's answer (its successor checks anew), or an error that ends the
 * check or waits for resume(). */
static int answered(keel_storecheck *sc, int rc, int expected)
{
    if (rc == KEEL_ESESSION)
        return 0;
    sc->busy = 0;
    if (expected != ANY_RC && rc != 0 && rc != expected) {
        failed(sc, rc);
        return 0;
    }
    return 1;
}

static void go(keel_storecheck *sc, int step)
{
    int rc;

    sc->step = step;
    if ((rc = run(sc)) != 0)
        failed(sc, rc);
}

static void node_read(keel_zk *zk, int rc, const void *data, size_t len,
                      const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;

    (void)zk;
    if (!answered(sc, rc, ANY_RC))
        return;
    if (rc == KEEL_ENOTFOUND) {
        go(sc, S_CREATE);
        return;
    }
    if (rc != 0) {
        failed(sc, rc);
        return;
    }
    if (keel_storecheck_parse(data, len, sc->found) != 0) {
        keel_error("cluster: the store record of node %s is unreadable",
                   sc->node);
        finish(sc, KEEL_ECORRUPT);
        return;
    }
    sc->version = st->version;
    if (sc->found[0] == '\0') {
        go(sc, S_RECORD); /* recorded by no one yet */
        return;
    }
    if (strcmp(sc->found, sc->store) == 0) {
        accepted(sc);
        return;
    }
    go(sc, S_FORGOTTEN);
}

static void node_created(keel_zk *zk, int rc, const char *path,
                         const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;

    (void)zk;
    (void)path;
    (void)st;
    if (!answered(sc, rc, ANY_RC))
        return;
    if (rc == KEEL_EEXIST) {
        go(sc, S_READ); /* created meanwhile: read what it says */
        return;
    }
    if (rc != 0) {
        failed(sc, rc);
        return;
    }
    accepted(sc);
}

static void forgotten_checked(keel_zk *zk, int rc, const keel_zk_stat *st,
                              void *arg)
{
    keel_storecheck *sc = arg;

    (void)zk;
    (void)st;
    if (!answered(sc, rc, KEEL_ENOTFOUND))
        return;
    /* A mark says the node's data was given up: what its state published
     * before the mark is not to be protected. A mark left over after the
     * node joined again (its purge not yet done) does not cover units it
     * got back since, with their data: its state is newer than the mark. */
    sc->forgotten_at = rc == 0 ? st->czxid : 0;
    sc->units = 0;
    go(sc, S_STATE);
}

static void state_read(keel_zk *zk, int rc, const void *data, size_t len,
                       const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;
    keel_node_state ns;
    size_t i;

    (void)zk;
    if (!answered(sc, rc, KEEL_ENOTFOUND))
        return;
    if (sc->forgotten_at != 0 && (rc != 0 || st->mzxid < sc->forgotten_at)) {
        /* Forgotten, and it has published nothing since: nothing of what
         * the cluster gives it can have come back with its data. */
        go(sc, S_RECORD);
        return;
    }
    keel_storecheck_free(sc);
    if (rc == 0 && len > 0) {
        if (keel_node_state_decode(data, len, &ns) != 0) {
            /* Unreadable: it may list units, so count it as one. */
            sc->units++;
        } else {
            for (i = 0; i < ns.n; i++)
                if (ns.entries[i].role == KEEL_ROLE_PRIMARY)
                    sc->units++;
            /* Kept for the map, which tells which of them moved on. */
            if ((sc->state = malloc(sizeof *sc->state)) != NULL)
                *sc->state = ns;
            else
                keel_node_state_free(&ns);
        }
    }
    go(sc, S_MAP);
}

static void map_read(keel_zk *zk, int rc, const void *data, size_t len,
                     const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;
    keel_shard_map m;
    uint32_t ci, s;

    (void)zk;
    (void)st;
    if (!answered(sc, rc, KEEL_ENOTFOUND))
        return;
    if (rc == 0 && len > 0) {
        if (keel_map_decode(data, len, &m) != 0) {
            sc->units++;
        } else {
            size_t from_state = sc->units;
            size_t from_map = 0, i;
            int me = keel_map_node_index(&m, sc->node);
            /* The map's table names this very store for the node: the
             * units the map makes it the primary of have their data here
             * (the controller keeps a primary's store in the table while
             * it runs on another, and a node acts as primary only on the
             * store the table names: docs/cluster.md, rule 4). Its record
             * may name another store, one it joined with as a backup and
             * was promoted on before the controller saw it: the units
             * wait for this store, which must be let in. Units moving to
             * the node still count: a stream may have delivered them to
             * the store its record names. */
            int credited = me >= 0 && m.store_ids[me][0] != '\0' &&
                           strcmp(m.store_ids[me], sc->store) == 0;
            if (sc->state != NULL) {
                /* A unit its state holds at epoch e that the map has at a
                 * later epoch moved on without needing this node's copy:
                 * it was handed over with its data, promoted from another
                 * replica's, or given up (docs/cluster.md, "Failover"). */
                const keel_node_state *ns = sc->state;
                from_state = 0;
                for (i = 0; i < ns->n; i++) {
                    const keel_state_entry *e = &ns->entries[i];
                    int mc;
                    if (e->role != KEEL_ROLE_PRIMARY)
                        continue;
                    mc = e->cap < ns->ncaps
                             ? keel_map_cap_index(&m, ns->caps[e->cap])
                             : -1;
                    if (mc < 0 || e->shard >= m.shard_count ||
                        keel_map_unit_at(&m, (uint32_t)mc, e->shard)
                                ->shard_epoch <= e->shard_epoch)
                        from_state++;
                }
            }
            for (ci = 0; ci < m.ncaps; ci++)
                for (s = 0; s < m.shard_count; s++) {
                    const keel_map_unit *u = keel_map_unit_at(&m, ci, s);
                    const char *p = keel_map_primary(&m, ci, s);
                    /* Its own units, and those moving to it: a stream
                     * may have delivered their only copy here already. */
                    if ((p != NULL && strcmp(p, sc->node) == 0 &&
                         !credited) ||
                        (u->target != KEEL_MAP_NO_NODE &&
                         strcmp(m.nodes[u->target], sc->node) == 0))
                        from_map++;
                }
            keel_map_free(&m);
            keel_storecheck_free(sc);
            /* The larger count: the two name mostly the same units. */
            sc->units = from_map > from_state ? from_map : from_state;
        }
    }
    keel_storecheck_free(sc);
    if (sc->units == 0) {
        go(sc, S_RECORD); /* responsible for nothing: nothing is lost */
        return;
    }
    finish(sc, KEEL_EMISMATCH);
}

static void recorded(keel_zk *zk, int rc, const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;

    (void)zk;
    (void)st;
    if (!answered(sc, rc, ANY_RC))
        return;
    if (rc == KEEL_EBADVERSION || rc == KEEL_ENOTFOUND) {
        go(sc, S_READ); /* changed meanwhile: decide again */
        return;
    }
    if (rc != 0) {
        failed(sc, rc);
        return;
    }
    accepted(sc);
}

static void runs_read(keel_zk *zk, int rc, const void *data, size_t len,
                      const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;
    char store[KEEL_STORE_ID_HEX + 1];
    uint64_t run;

    (void)zk;
    if (!answered(sc, rc, KEEL_ENOTFOUND))
        return;
    if (rc == KEEL_ENOTFOUND) {
        go(sc, S_RUNS_CREATE);
        return;
    }
    if (keel_storecheck_run_parse(data, len, store, &run) != 0) {
        keel_error("cluster: the run record of node %s (runs/%s) is "
                   "unreadable",
                   sc->node, sc->node);
        finish(sc, KEEL_ECORRUPT);
        return;
    }
    sc->version = st->version;
    if (strcmp(store, sc->store) != 0) {
        /* Another store's: the checks before let this one in. */
        go(sc, S_RUNS_SET);
        return;
    }
    if (run == sc->run && sc->mine) {
        /* Our own record: written by this process (a check of an earlier
         * session, or a write whose answer was lost). */
        finish(sc, 0);
        return;
    }
    if (run >= sc->run) {
        /* The cluster saw this store at a run this directory has not
         * had: it is a copy from before that run. */
        sc->stale = 1;
        sc->found_run = run;
        finish(sc, KEEL_EMISMATCH);
        return;
    }
    go(sc, S_RUNS_SET);
}

static void runs_created(keel_zk *zk, int rc, const char *path,
                         const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;

    (void)zk;
    (void)path;
    (void)st;
    if (rc == KEEL_ECONNLOSS || rc == KEEL_ESESSION)
        sc->lost = 1; /* applied or not: the record may be ours */
    if (!answered(sc, rc, KEEL_EEXIST))
        return;
    if (rc == KEEL_EEXIST) {
        if (!sc->lost)
            sc->mine = 0; /* not ours */
        go(sc, S_RUNS_READ); /* created meanwhile: read what it says */
        return;
    }
    finish(sc, 0);
}

static void runs_set(keel_zk *zk, int rc, const keel_zk_stat *st, void *arg)
{
    keel_storecheck *sc = arg;

    (void)zk;
    (void)st;
    if (rc == KEEL_ECONNLOSS || rc == KEEL_ESESSION)
        sc->lost = 1; /* applied or not: the record may be ours */
    if (!answered(sc, rc, ANY_RC))
        return;
    if (rc == KEEL_EBADVERSION || rc == KEEL_ENOTFOUND) {
        if (!sc->lost)
            sc->mine = 0; /* not applied */
        go(sc, S_RUNS_READ); /* changed meanwhile: decide again */
        return;
    }
    if (rc != 0) {
        failed(sc, rc);
        return;
    }
    finish(sc, 0);
}

static int run(keel_storecheck *sc)
{
    char path[KEEL_ZK_PATH_MAX], rec[96];
    size_t len;
    int rc;

    switch (sc->step) {
    case S_READ:
        keel_layout_path(sc->layout, path, "nodes", sc->node, NULL);
        rc = keel_zk_get(sc->zk, path, NULL, NULL, node_read, sc);
        break;
    case S_CREATE:
        keel_layout_path(sc->layout, path, "nodes", sc->node, NULL);
        len = keel_storecheck_format(rec, sizeof rec, sc->store);
        rc = keel_zk_create(sc->zk, path, rec, len, 0, node_created, sc);
        break;
    case S_FORGOTTEN:
        keel_layout_path(sc->layout, path, "forgotten", sc->node, NULL);
        rc = keel_zk_exists(sc->zk, path, NULL, NULL, forgotten_checked, sc);
        break;
    case S_STATE:
        keel_layout_path(sc->layout, path, "nodes", sc->node, "state");
        rc = keel_zk_get(sc->zk, path, NULL, NULL, state_read, sc);
        break;
    case S_MAP:
        keel_layout_path(sc->layout, path, "map", NULL, NULL);
        rc = keel_zk_get(sc->zk, path, NULL, NULL, map_read, sc);
        break;
    case S_RECORD:
        keel_layout_path(sc->layout, path, "nodes", sc->node, NULL);
        len = keel_storecheck_format(rec, sizeof rec, sc->store);
        rc = keel_zk_set(sc->zk, path, rec, len, sc->version, recorded, sc);
        break;
    case S_RUNS_READ:
        keel_layout_path(sc->layout, path, "runs", sc->node, NULL);
        rc = keel_zk_get(sc->zk, path, NULL, NULL, runs_read, sc);
        break;
    case S_RUNS_CREATE:
        keel_layout_path(sc->layout, path, "runs", sc->node, NULL);
        len = keel_storecheck_run_format(rec, sizeof rec, sc->store,
                                         sc->run);
        rc = keel_zk_create(sc->zk, path, rec, len, 0, runs_created, sc);
        sc->mine |= rc == 0;
        break;
    case S_RUNS_SET:
        keel_layout_path(sc->layout, path, "runs", sc->node, NULL);
        len = keel_storecheck_run_format(rec, sizeof rec, sc->store,
                                         sc->run);
        rc = keel_zk_set(sc->zk, path, rec, len, sc->version, runs_set, sc);
        sc->mine |= rc == 0;
        break;
    default:
        return KEEL_EINVAL;
    }
    sc->busy = rc == 0;
    return rc;
}

void keel_storecheck_init(keel_storecheck *sc, keel_zk *zk,
                          const keel_layout *layout, const char *node,
                          const char *store, keel_storecheck_cb cb, void *arg)
{
    memset(sc, 0, sizeof *sc);
    sc->zk = zk;
    sc->layout = layout;
    sc->node = node;
    if (store != NULL)
        snprintf(sc->store, sizeof sc->store, "%s", store);
    sc->cb = cb;
    sc->arg = arg;
}

void keel_storecheck_set_run(keel_storecheck *sc, uint64_t run,
                             const char *dir, uint64_t marked)
{
    sc->run = run;
    sc->dir = dir;
    sc->marked = marked;
}

void keel_storecheck_free(keel_storecheck *sc)
{
    if (sc->state == NULL)
        return;
    keel_node_state_free(sc->state);
    free(sc->state);
    sc->state = NULL;
}

int keel_storecheck_start(keel_storecheck *sc)
{
    keel_storecheck_free(sc);
    sc->step = S_READ;
    sc->busy = sc->stalled = sc->done = 0;
    sc->retry_at = 0;
    sc->units = 0;
    sc->found[0] = '\0';
    sc->stale = 0;
    sc->found_run = 0;
    if (strlen(sc->store) != KEEL_STORE_ID_HEX) {
        /* No identity to compare (an embedder's store without one). */
        finish(sc, 0);
        return 0;
    }
    return run(sc);
}

void keel_storecheck_resume(keel_storecheck *sc)
{
    int rc;

    if (!sc->stalled || sc->busy || sc->done)
        return;
    sc->stalled = 0;
    if ((rc = run(sc)) != 0)
        failed(sc, rc);
}

void keel_storecheck_retry_later(keel_storecheck *sc, uint64_t now)
{
    sc->retry_at = now + KEEL_STORECHECK_RETRY_MS;
}

uint64_t keel_storecheck_deadline(const keel_storecheck *sc)
{
    return sc->retry_at;
}

int keel_storecheck_tick(keel_storecheck *sc, uint64_t now, int may_start)
{
    int rc;

    if (sc->retry_at == 0 || now < sc->retry_at)
        return 0;
    if (!may_start || sc->busy) {
        keel_storecheck_retry_later(sc, now);
        return 0;
    }
    rc = keel_storecheck_start(sc);
    if (rc != 0)
        keel_storecheck_retry_later(sc, now);
    return rc;
}

void keel_storecheck_cancel(keel_storecheck *sc)
{
    sc->retry_at = 0;
}
