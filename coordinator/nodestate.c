/* nodes/<node>/state: builder and codec. */
#include "coordinator/nodestate.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "coordinator/codec.h"
#include "coordinator/shardmap.h"
#include "keel.h"

static const uint8_t state_magic[4] = {'K', 'N', 'S', 'T'};
/* Written: 3 (add lists). Read: 1 to 3. */
#define STATE_FORMAT 3
#define STATE_FORMAT_V2 2
#define STATE_FORMAT_V1 1
#define ROLE_DROPS 0x80u
#define ROLE_ADDS 0x40u
#define STATE_MAX_ENTRIES ((size_t)KEEL_MAP_MAX_CAPS * KEEL_MAP_MAX_SHARDS)

void keel_node_state_init(keel_node_state *st)
{
    memset(st, 0, sizeof *st);
}

void keel_node_state_free(keel_node_state *st)
{
    if (st == NULL)
        return;
    keel_names_free(st->caps, st->ncaps);
    keel_names_free(st->names, st->nnames);
    free(st->entries);
    memset(st, 0, sizeof *st);
}

/* Inserts s into a sorted table; renumbers `field` of entries. Returns the
 * index or a negative code. */
static int intern(keel_node_state *st, char ***tab, uint32_t *n,
                  const char *s, int is_cap)
{
    int pos = keel_names_find(*tab, *n, s);
    char **v, *copy;
    size_t i;

    if (pos >= 0)
        return pos;
    pos = -pos - 1;
    if (*n >= (is_cap ? KEEL_MAP_MAX_CAPS : KEEL_MAP_MAX_NODES))
        return KEEL_EINVAL;
    copy = strdup(s);
    v = realloc(*tab, (*n + 1) * sizeof *v);
    if (v != NULL)
        *tab = v;
    if (copy == NULL || v == NULL) {
        free(copy);
        return KEEL_ENOMEM;
    }
    memmove(&v[pos + 1], &v[pos], (*n - (uint32_t)pos) * sizeof *v);
    v[pos] = copy;
    (*n)++;
    for (i = 0; i < st->n; i++) {
        keel_state_entry *e = &st->entries[i];
        int d;
        if (is_cap && e->cap >= pos)
            e->cap++;
        if (!is_cap && e->role == KEEL_ROLE_RELEASED && e->to >= pos)
            e->to++;
        /* +1 for those at or past pos keeps the lists ascending */
        for (d = 0; !is_cap && d < e->ndrop; d++)
            if (e->drop[d] >= pos)
                e->drop[d]++;
        for (d = 0; !is_cap && d < e->nadd; d++)
            if (e->add[d] >= pos)
                e->add[d]++;
    }
    return pos;
}

static int entry_cmp(const keel_state_entry *e, uint16_t cap, uint32_t shard)
{
    if (e->cap != cap)
        return e->cap < cap ? -1 : 1;
    if (e->shard != shard)
        return e->shard < shard ? -1 : 1;
    return 0;
}

/* Position of (cap, shard) among the sorted entries, or -(pos+1). */
static long entry_pos(const keel_node_state *st, uint16_t cap, uint32_t shard)
{
    long lo = 0, hi = (long)st->n - 1;

    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        int c = entry_cmp(&st->entries[mid], cap, shard);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -(lo + 1);
}

int keel_node_state_put(keel_node_state *st, const char *cap, uint32_t shard,
                        int role, uint64_t shard_epoch, const char *to)
{
    keel_state_entry *v;
    long pos;
    int ci, ti = 0;

    if (!keel_name_valid(cap, 1) || shard >= KEEL_MAP_MAX_SHARDS ||
        (role != KEEL_ROLE_PRIMARY && role != KEEL_ROLE_RELEASED) ||
        (role == KEEL_ROLE_RELEASED && !keel_name_valid(to, 0)))
        return KEEL_EINVAL;
    if ((ci = intern(st, &st->caps, &st->ncaps, cap, 1)) < 0)
        return ci;
    if (role == KEEL_ROLE_RELEASED &&
        (ti = intern(st, &st->names, &st->nnames, to, 0)) < 0)
        return ti;
    pos = entry_pos(st, (uint16_t)ci, shard);
    if (pos < 0) {
        pos = -pos - 1;
        v = realloc(st->entries, (st->n + 1) * sizeof *v);
        if (v == NULL)
            return KEEL_ENOMEM;
        st->entries = v;
        memmove(&v[pos + 1], &v[pos], (st->n - (size_t)pos) * sizeof *v);
        st->n++;
    }
    v = &st->entries[pos];
    v->cap = (uint16_t)ci;
    v->shard = shard;
    v->role = (uint8_t)role;
    v->shard_epoch = shard_epoch;
    v->to = role == KEEL_ROLE_RELEASED ? (uint16_t)ti : 0;
    v->ndrop = 0;
    v->nadd = 0;
    return 0;
}

int keel_node_state_put_drop(keel_node_state *st, const char *cap,
                             uint32_t shard, const char *name)
{
    keel_state_entry *e;
    long pos;
    int ci, ni, d;

    if (!keel_name_valid(name, 0))
        return KEEL_EINVAL;
    ci = keel_names_find(st->caps, st->ncaps, cap);
    if (ci < 0 || (pos = entry_pos(st, (uint16_t)ci, shard)) < 0 ||
        st->entries[pos].role != KEEL_ROLE_PRIMARY)
        return KEEL_ENOTFOUND;
    e = &st->entries[pos];
    ni = keel_names_find(st->names, st->nnames, name);
    if (ni >= 0)
        for (d = 0; d < e->ndrop; d++)
            if (e->drop[d] == ni)
                return 0;
    if (e->ndrop >= KEEL_STATE_MAX_DROPS)
        return KEEL_EOVERLOAD;
    if ((ni = intern(st, &st->names, &st->nnames, name, 0)) < 0)
        return ni;
    /* intern may renumber, never reorder: insert keeping it ascending */
    for (d = e->ndrop; d > 0 && e->drop[d - 1] > ni; d--)
        e->drop[d] = e->drop[d - 1];
    e->drop[d] = (uint16_t)ni;
    e->ndrop++;
    return 0;
}

/* A store id as an add list carries it: 32 lowercase hex digits, not all
 * zero (that is how the map writes "unknown"). */
static int add_store_valid(const char *store)
{
    return keel_map_store_valid(store) &&
           strspn(store, "0") != KEEL_MAP_STORE_HEX;
}

int keel_node_state_put_add(keel_node_state *st, const char *cap,
                            uint32_t shard, const char *name,
                            const char *store)
{
    keel_state_entry *e;
    long pos;
    int ci, ni, d;

    if (!keel_name_valid(name, 0) || !add_store_valid(store))
        return KEEL_EINVAL;
    ci = keel_names_find(st->caps, st->ncaps, cap);
    if (ci < 0 || (pos = entry_pos(st, (uint16_t)ci, shard)) < 0 ||
        st->entries[pos].role != KEEL_ROLE_PRIMARY)
        return KEEL_ENOTFOUND;
    e = &st->entries[pos];
    ni = keel_names_find(st->names, st->nnames, name);
    if (ni >= 0)
        for (d = 0; d < e->nadd; d++)
            if (e->add[d] == ni) {
                memcpy(e->add_store[d], store, KEEL_MAP_STORE_HEX + 1);
                return 0;
            }
    if (e->nadd >= KEEL_STATE_MAX_ADDS)
        return KEEL_EOVERLOAD;
    if ((ni = intern(st, &st->names, &st->nnames, name, 0)) < 0)
        return ni;
    /* intern may renumber, never reorder: insert keeping it ascending */
    for (d = e->nadd; d > 0 && e->add[d - 1] > ni; d--) {
        e->add[d] = e->add[d - 1];
        memcpy(e->add_store[d], e->add_store[d - 1], KEEL_MAP_STORE_HEX + 1);
    }
    e->add[d] = (uint16_t)ni;
    memcpy(e->add_store[d], store, KEEL_MAP_STORE_HEX + 1);
    e->nadd++;
    return 0;
}

void keel_node_state_remove(keel_node_state *st, const char *cap,
                            uint32_t shard)
{
    int ci = keel_names_find(st->caps, st->ncaps, cap);
    long pos;

    if (ci < 0)
        return;
    pos = entry_pos(st, (uint16_t)ci, shard);
    if (pos < 0)
        return;
    memmove(&st->entries[pos], &st->entries[pos + 1],
            (st->n - (size_t)pos - 1) * sizeof *st->entries);
    st->n--;
}

const keel_state_entry *keel_node_state_find(const keel_node_state *st,
                                             const char *cap, uint32_t shard)
{
    int ci = keel_names_find(st->caps, st->ncaps, cap);
    long pos;

    if (ci < 0)
        return NULL;
    pos = entry_pos(st, (uint16_t)ci, shard);
    return pos >= 0 ? &st->entries[pos] : NULL;
}

int keel_node_state_encode(const keel_node_state *st, uint8_t **out,
                           size_t *len)
{
    keel_wbuf w = {0};
    size_t i;
    uint32_t j;

    keel_wbuf_put(&w, state_magic, 4);
    keel_wbuf_u8(&w, STATE_FORMAT);
    keel_wbuf_u8(&w, 0);
    keel_wbuf_be(&w, st->map_epoch, 8);
    keel_wbuf_be(&w, (uint64_t)st->incarnation, 8);
    keel_wbuf_be(&w, st->ncaps, 2);
    keel_wbuf_be(&w, st->nnames, 2);
    for (j = 0; j < st->ncaps; j++)
        keel_wbuf_str8(&w, st->caps[j]);
    for (j = 0; j < st->nnames; j++)
        keel_wbuf_str8(&w, st->names[j]);
    keel_wbuf_varint(&w, st->n);
    for (i = 0; i < st->n; i++) {
        const keel_state_entry *e = &st->entries[i];
        int d, drops = e->role == KEEL_ROLE_PRIMARY && e->ndrop > 0;
        int adds = e->role == KEEL_ROLE_PRIMARY && e->nadd > 0;
        keel_wbuf_varint(&w, e->cap);
        keel_wbuf_varint(&w, e->shard);
        keel_wbuf_u8(&w, e->role | (drops ? ROLE_DROPS : 0) |
                             (adds ? ROLE_ADDS : 0));
        keel_wbuf_varint(&w, e->shard_epoch);
        if (e->role == KEEL_ROLE_RELEASED)
            keel_wbuf_varint(&w, e->to);
        if (drops) {
            keel_wbuf_varint(&w, e->ndrop);
            for (d = 0; d < e->ndrop; d++)
                keel_wbuf_varint(&w, e->drop[d]);
        }
        if (adds) {
            keel_wbuf_varint(&w, e->nadd);
            for (d = 0; d < e->nadd; d++) {
                keel_wbuf_varint(&w, e->add[d]);
                keel_wbuf_store(&w, e->add_store[d]);
            }
        }
    }
    return keel_wbuf_seal(&w, out, len);
}

int keel_node_state_decode(const void *buf, size_t len, keel_node_state *out)
{
    keel_rbuf r = {buf, len, 0, 0};
    keel_node_state st;
    const uint8_t *magic;
    uint64_t sum, count;
    uint32_t ncaps, nnames;
    unsigned format;
    size_t i;
    int rc;

    keel_node_state_init(&st);
    if (buf == NULL || len < 4 + 2 + 8 + 8 + 2 + 2 + 1 + 8)
        return KEEL_ECORRUPT;
    {
        keel_rbuf t = {(const uint8_t *)buf + len - 8, 8, 0, 0};
        sum = keel_rbuf_be(&t, 8);
    }
    if (sum != XXH3_64bits(buf, len - 8))
        return KEEL_ECORRUPT;
    r.len = len - 8;
    magic = keel_rbuf_take(&r, 4);
    if (magic == NULL || memcmp(magic, state_magic, 4) != 0)
        return KEEL_ECORRUPT;
    format = keel_rbuf_u8(&r);
    if (format < STATE_FORMAT_V1 || format > STATE_FORMAT ||
        keel_rbuf_u8(&r) != 0)
        return KEEL_ECORRUPT;
    st.map_epoch = keel_rbuf_be(&r, 8);
    st.incarnation = (int64_t)keel_rbuf_be(&r, 8);
    ncaps = (uint32_t)keel_rbuf_be(&r, 2);
    nnames = (uint32_t)keel_rbuf_be(&r, 2);
    if (r.bad || ncaps > KEEL_MAP_MAX_CAPS || nnames > KEEL_MAP_MAX_NODES)
        return KEEL_ECORRUPT;
    if ((rc = keel_rbuf_names(&r, ncaps, 1, &st.caps)) != 0)
        return rc;
    st.ncaps = ncaps;
    if ((rc = keel_rbuf_names(&r, nnames, 0, &st.names)) != 0)
        goto fail;
    st.nnames = nnames;
    count = keel_rbuf_varint(&r);
    /* An entry takes at least 4 bytes. */
    if (r.bad || count > STATE_MAX_ENTRIES || count * 4 > r.len - r.off) {
        rc = KEEL_ECORRUPT;
        goto fail;
    }
    st.entries = malloc(count ? count * sizeof *st.entries : 1);
    if (st.entries == NULL) {
        rc = KEEL_ENOMEM;
        goto fail;
    }
    for (i = 0; i < count; i++) {
        keel_state_entry *e = &st.entries[i];
        uint64_t cap = keel_rbuf_varint(&r), shard = keel_rbuf_varint(&r);
        unsigned role = keel_rbuf_u8(&r), drops = role & ROLE_DROPS;
        unsigned adds = role & ROLE_ADDS;
        memset(e, 0, sizeof *e);
        e->role = (uint8_t)(role & ~(ROLE_DROPS | ROLE_ADDS));
        e->shard_epoch = keel_rbuf_varint(&r);
        if (r.bad || cap >= ncaps || shard >= KEEL_MAP_MAX_SHARDS ||
            (e->role != KEEL_ROLE_PRIMARY && e->role != KEEL_ROLE_RELEASED) ||
            (drops && (format == STATE_FORMAT_V1 ||
                       e->role != KEEL_ROLE_PRIMARY)) ||
            (adds && (format < STATE_FORMAT ||
                      e->role != KEEL_ROLE_PRIMARY))) {
            rc = KEEL_ECORRUPT;
            goto fail;
        }
        e->cap = (uint16_t)cap;
        e->shard = (uint32_t)shard;
        if (e->role == KEEL_ROLE_RELEASED) {
            uint64_t to = keel_rbuf_varint(&r);
            if (r.bad || to >= nnames) {
                rc = KEEL_ECORRUPT;
                goto fail;
            }
            e->to = (uint16_t)to;
        }
        if (drops) {
            uint64_t nd = keel_rbuf_varint(&r), d;
            if (r.bad || nd == 0 || nd > KEEL_STATE_MAX_DROPS) {
                rc = KEEL_ECORRUPT;
                goto fail;
            }
            for (d = 0; d < nd; d++) {
                uint64_t x = keel_rbuf_varint(&r);
                if (r.bad || x >= nnames || (d > 0 && x <= e->drop[d - 1])) {
                    rc = KEEL_ECORRUPT;
                    goto fail;
                }
                e->drop[d] = (uint16_t)x;
            }
            e->ndrop = (uint8_t)nd;
        }
        if (adds) {
            uint64_t na = keel_rbuf_varint(&r), a;
            if (r.bad || na == 0 || na > KEEL_STATE_MAX_ADDS) {
                rc = KEEL_ECORRUPT;
                goto fail;
            }
            for (a = 0; a < na; a++) {
                uint64_t x = keel_rbuf_varint(&r);
                keel_rbuf_store(&r, e->add_store[a]);
                if (r.bad || x >= nnames || (a > 0 && x <= e->add[a - 1]) ||
                    e->add_store[a][0] == '\0') {
                    rc = KEEL_ECORRUPT;
                    goto fail;
                }
                e->add[a] = (uint16_t)x;
            }
            e->nadd = (uint8_t)na;
        }
        if (i > 0 && entry_cmp(&st.entries[i - 1], e->cap, e->shard) >= 0) {
            rc = KEEL_ECORRUPT;
            goto fail;
        }
        st.n = i + 1;
    }
    if (r.off != r.len) {
        rc = KEEL_ECORRUPT;
        goto fail;
    }
    st.n = (size_t)count;
    *out = st;
    return 0;
fail:
    keel_node_state_free(&st);
    return rc;
}
