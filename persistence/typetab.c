/* The store's type table and its in-memory copy (typetab.h). */
#include "persistence/typetab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static struct tt_entry *tt_find(const keel_typetab *t, const uint8_t *type,
                                size_t tlen, uint64_t h)
{
    size_t i;

    if (t->slots == NULL)
        return NULL;
    for (i = h & t->mask; t->slots[i].used; i = (i + 1) & t->mask) {
        struct tt_entry *e = &t->slots[i];
        if (e->hash == h && e->tlen == tlen &&
            memcmp(e->type, type, tlen) == 0)
            return e;
    }
    return NULL;
}

/* A slot for a type known to be absent from the table (entries are never
 * removed: an undone addition stays as TT_ABSENT). */
static struct tt_entry *tt_add(keel_typetab *t, const uint8_t *type,
                               size_t tlen, uint64_t h)
{
    struct tt_entry *e;
    size_t i;

    if (t->slots == NULL || (t->count + 1) * 2 > t->mask + 1) {
        size_t cap = t->slots ? (t->mask + 1) * 2 : 64, j;
        struct tt_entry *ns = calloc(cap, sizeof *ns);

        if (ns == NULL)
            return NULL;
        for (j = 0; t->slots != NULL && j <= t->mask; j++) {
            if (!t->slots[j].used)
                continue;
            for (i = t->slots[j].hash & (cap - 1); ns[i].used;
                 i = (i + 1) & (cap - 1))
                ;
            ns[i] = t->slots[j];
        }
        free(t->slots);
        t->slots = ns;
        t->mask = cap - 1;
    }
    for (i = h & t->mask; t->slots[i].used; i = (i + 1) & t->mask)
        ;
    e = &t->slots[i];
    memset(e, 0, sizeof *e);
    e->used = 1;
    e->hash = h;
    e->tlen = (uint8_t)tlen;
    memcpy(e->type, type, tlen);
    t->count++;
    return e;
}

/* Sets the cached entry without touching the database or the undo log. */
static int tt_put(keel_typetab *t, const uint8_t *type, size_t tlen,
                  int state, const char *cap, size_t clen)
{
    uint64_t h = XXH3_64bits(type, tlen);
    struct tt_entry *e = tt_find(t, type, tlen, h);

    if (e == NULL && (e = tt_add(t, type, tlen, h)) == NULL)
        return ENOMEM;
    e->state = (uint8_t)state;
    e->clen = (uint8_t)clen;
    if (clen > 0)
        memcpy(e->cap, cap, clen);
    return 0;
}

int keel_typetab_load(keel_typetab *t, MDB_txn *txn, MDB_dbi dbi)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        const uint8_t *val = v.mv_data;
        int unknown = v.mv_size == 1 && val[0] == TT_UNKNOWN_MARK;

        if (k.mv_size == 0 || k.mv_size > 64 || v.mv_size > 255) {
            rc = MDB_CORRUPTED;
            break;
        }
        rc = tt_put(t, k.mv_data, k.mv_size, unknown ? TT_UNKNOWN : TT_KNOWN,
                    v.mv_data, unknown ? 0 : v.mv_size);
        if (rc != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

void keel_typetab_free(keel_typetab *t)
{
    free(t->slots);
    free(t->undo);
    memset(t, 0, sizeof *t);
}

int keel_typetab_get(const keel_typetab *t, const uint8_t *type, size_t tlen,
                     const char **cap, size_t *clen)
{
    const struct tt_entry *e;

    if (tlen == 0 || tlen > 64)
        return TT_ABSENT;
    e = tt_find(t, type, tlen, XXH3_64bits(type, tlen));
    if (e == NULL || e->state == TT_ABSENT)
        return TT_ABSENT;
    if (e->state == TT_KNOWN) {
        *cap = e->cap;
        *clen = e->clen;
    }
    return e->state;
}

int keel_typetab_set(keel_typetab *t, MDB_txn *txn, MDB_dbi dbi,
                     const uint8_t *type, size_t tlen, const char *cap,
                     size_t clen)
{
    uint8_t mark = TT_UNKNOWN_MARK;
    MDB_val k = {tlen, (void *)type};
    MDB_val v = {cap ? clen : 1, cap ? (void *)cap : &mark};
    const struct tt_entry *e;
    struct tt_undo *u;
    int rc;

    if (tlen == 0 || tlen > 64 || clen > 255)
        return EINVAL;
    if (t->nundo == t->undo_cap) {
        size_t n = t->undo_cap ? t->undo_cap * 2 : 8;
        struct tt_undo *nu = realloc(t->undo, n * sizeof *nu);

        if (nu == NULL)
            return ENOMEM;
        t->undo = nu;
        t->undo_cap = n;
    }
    rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc != 0)
        return rc;
    u = &t->undo[t->nundo];
    e = tt_find(t, type, tlen, XXH3_64bits(type, tlen));
    if (e != NULL)
        u->old = *e;
    else
        memset(&u->old, 0, sizeof u->old);
    memcpy(u->type, type, tlen);
    u->tlen = (uint8_t)tlen;
    rc = tt_put(t, type, tlen, cap ? TT_KNOWN : TT_UNKNOWN, cap,
                cap ? clen : 0);
    if (rc != 0)
        return rc; /* the transaction is abandoned: nothing to undo */
    t->nundo++;
    return 0;
}

void keel_typetab_settle(keel_typetab *t, int ok)
{
    /* Undone newest first, so a type changed twice gets its first old
     * value back. An undo cannot fail for memory: every type in the log
     * has its slot already. */
    while (!ok && t->nundo > 0) {
        const struct tt_undo *u = &t->undo[--t->nundo];

        if (u->old.used)
            (void)tt_put(t, u->type, u->tlen, u->old.state, u->old.cap,
                         u->old.clen);
        else
            (void)tt_put(t, u->type, u->tlen, TT_ABSENT, NULL, 0);
    }
    t->nundo = 0;
}
