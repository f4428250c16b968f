/* What a handler sees of its turn (keel_turn_*, keel.h) and what the
 * runtime reads and writes through it.
 *
 * A turn's writes are staged (n->stage) and become the actor's only when
 * the turn succeeds (keel__turn_apply): its state blob in the actor, its
 * entries in the actor's overlay, a table of the entries written since
 * the last durable commit, which stays until the store holds them
 * (keel__ovl_prune). A read looks at the stage, then the overlay, then
 * the store, so a turn sees every earlier turn's writes, committed or
 * not, and its own. Memory handed to the handler (values read, listings)
 * lives until the turn ends.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/error.h"
#include "runtime/node_int.h"

#define TMP_BLOCK 65536

/* ------------------------------------------------------------ overlay */

void keel__ovl_free(keel_hmap *ovl)
{
    size_t pos = 0;
    void *item;

    if (ovl == NULL)
        return;
    while (keel_hmap_next(ovl, &pos, &item))
        free(item);
    keel_hmap_free(ovl);
    free(ovl);
}

static int ovl_eq(const void *item, const void *key)
{
    const keel_ovl_entry *e = item;
    const uint8_t *k = key; /* be32 length | bytes */
    uint32_t klen = ((uint32_t)k[0] << 24) | ((uint32_t)k[1] << 16) |
                    ((uint32_t)k[2] << 8) | k[3];

    return e->klen == klen && memcmp(e->data, k + 4, klen) == 0;
}

static keel_ovl_entry *ovl_find(keel_actor *a, const void *key, size_t klen)
{
    uint8_t k[4 + KEEL_MAX_ENTRY_KEY_LEN];

    if (a->ovl == NULL)
        return NULL;
    k[0] = (uint8_t)(klen >> 24);
    k[1] = (uint8_t)(klen >> 16);
    k[2] = (uint8_t)(klen >> 8);
    k[3] = (uint8_t)klen;
    memcpy(k + 4, key, klen);
    return keel_hmap_get(a->ovl, XXH3_64bits(key, klen), k, ovl_eq);
}

static keel_ovl_entry *ovl_entry_new(uint64_t seq, const void *key,
                                     size_t klen, const void *val,
                                     size_t vlen, int deleted)
{
    keel_ovl_entry *e = malloc(sizeof *e + klen + vlen);

    if (e == NULL)
        return NULL;
    e->hash = XXH3_64bits(key, klen);
    e->seq = seq;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    e->deleted = (uint8_t)deleted;
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, val, vlen);
    return e;
}

/* Puts e in the overlay, replacing an entry with the same key. Cannot
 * fail: the caller reserved room (keel_hmap_reserve), and a replacement
 * frees a slot before taking one. */
static void ovl_install(keel_actor *a, keel_ovl_entry *e)
{
    keel_ovl_entry *old = ovl_find(a, e->data, e->klen);

    if (old != NULL) {
        keel_hmap_remove(a->ovl, old->hash, old);
        free(old);
    }
    keel_hmap_put(a->ovl, e->hash, e);
}

void keel__ovl_prune(keel_actor *a, uint64_t durable)
{
    size_t pos = 0, cap, i;
    void *item;
    keel_ovl_entry **drop;
    size_t ndrop = 0;

    if (a->ovl == NULL)
        return;
    cap = a->ovl->count;
    drop = malloc(cap * sizeof *drop);
    if (drop == NULL)
        return; /* keeping them is harmless: they match the store */
    while (keel_hmap_next(a->ovl, &pos, &item)) {
        keel_ovl_entry *e = item;
        if (e->seq <= durable)
            drop[ndrop++] = e;
    }
    for (i = 0; i < ndrop; i++) {
        keel_hmap_remove(a->ovl, drop[i]->hash, drop[i]);
        free(drop[i]);
    }
    free(drop);
    if (a->ovl->count == 0) {
        keel__ovl_free(a->ovl);
        a->ovl = NULL;
    }
}

/* ---------------------------------------------------------- the turn */

static void *turn_alloc(keel_turn *t, size_t size)
{
    struct tmp_block *b = t->tmp;
    void *p;

    size = (size + 15) & ~(size_t)15;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = size > TMP_BLOCK ? size : TMP_BLOCK;
        b = malloc(sizeof *b + cap);
        if (b == NULL)
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = t->tmp;
        t->tmp = b;
    }
    p = b->data + b->used;
    b->used += size;
    return p;
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    size_t c = *cap ? *cap : 256;
    uint8_t *p;

    if (need <= *cap)
        return 0;
    while (c < need)
        c *= 2;
    p = realloc(*buf, c);
    if (p == NULL)
        return KEEL_ENOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

void keel_turn_state(keel_turn *t, const void **data, size_t *len)
{
    if (t->state_set) {
        *data = t->n->scratch_state;
        *len = t->state_len;
    } else {
        *data = actor_state(t->a);
        *len = t->a->state_len;
    }
}

int keel_turn_set_state(keel_turn *t, const void *data, size_t len)
{
    int rc;

    if (t == NULL || (data == NULL && len > 0))
        return KEEL_EINVAL;
    if (t->no_writes)
        return KEEL_EINVAL;
    if (len > KEEL_MAX_VALUE_LEN)
        return KEEL_ETOOBIG;
    rc = grow(&t->n->scratch_state, &t->n->scratch_state_cap, len);
    if (rc != 0)
        return rc;
    if (len)
        memmove(t->n->scratch_state, data, len);
    t->state_len = len;
    t->state_set = 1;
    return 0;
}

int keel_turn_reply(keel_turn *t, const void *data, size_t len)
{
    int rc;

    if (t == NULL || (data == NULL && len > 0))
        return KEEL_EINVAL;
    rc = grow(&t->n->scratch_reply, &t->n->scratch_reply_cap, len);
    if (rc != 0)
        return rc;
    if (len)
        memmove(t->n->scratch_reply, data, len);
    t->reply_len = len;
    return 0;
}

uint8_t *keel__turn_reply_room(keel_turn *t, size_t len)
{
    if (grow(&t->n->scratch_reply, &t->n->scratch_reply_cap,
             len ? len : 1) != 0)
        return NULL;
    t->reply_len = len;
    return t->n->scratch_reply;
}

int keel_turn_replyf(keel_turn *t, const char *fmt, ...)
{
    va_list ap;
    int len;
    int rc;

    if (t == NULL || fmt == NULL)
        return KEEL_EINVAL;
    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        return KEEL_EINVAL;
    rc = grow(&t->n->scratch_reply, &t->n->scratch_reply_cap,
              (size_t)len + 1);
    if (rc != 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)t->n->scratch_reply, (size_t)len + 1, fmt, ap);
    va_end(ap);
    t->reply_len = (size_t)len;
    return 0;
}

void keel_turn_error(keel_turn *t, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(t->err, sizeof t->err, fmt, ap);
    va_end(ap);
    t->err_set = 1;
}

/* Staged writes of the running turn, in t->n->stage:
 *   op u8 (1 put, 2 del) | klen u32 | vlen u32 | key | value          */
#define STAGE_PUT 1
#define STAGE_DEL 2
#define STAGE_HDR 9

static int stage_add(keel_turn *t, int op, const void *key, size_t klen,
                     const void *val, size_t vlen)
{
    keel_node *n = t->n;
    uint8_t *p;
    uint32_t k32 = (uint32_t)klen, v32 = (uint32_t)vlen;
    int rc = grow(&n->stage, &n->stage_cap,
                  n->stage_len + STAGE_HDR + klen + vlen);

    if (rc != 0)
        return rc;
    p = n->stage + n->stage_len;
    p[0] = (uint8_t)op;
    memcpy(p + 1, &k32, 4);
    memcpy(p + 5, &v32, 4);
    memcpy(p + STAGE_HDR, key, klen);
    if (vlen)
        memcpy(p + STAGE_HDR + klen, val, vlen);
    n->stage_len += STAGE_HDR + klen + vlen;
    return 0;
}

/* Finds the latest staged write of key. Returns its op or 0. */
static int stage_find(keel_turn *t, const void *key, size_t klen,
                      const uint8_t **val, size_t *vlen)
{
    keel_node *n = t->n;
    size_t off = 0;
    int found = 0;

    while (off < n->stage_len) {
        const uint8_t *p = n->stage + off;
        uint32_t k32, v32;
        memcpy(&k32, p + 1, 4);
        memcpy(&v32, p + 5, 4);
        if (k32 == klen && memcmp(p + STAGE_HDR, key, klen) == 0) {
            found = p[0];
            *val = p + STAGE_HDR + k32;
            *vlen = v32;
        }
        off += STAGE_HDR + k32 + v32;
    }
    return found;
}

/* Entry keys from handlers: keys that begin with a NUL byte are the
 * runtime's own (dedup.h). */
static int check_entry_key(const void *key, size_t klen)
{
    if (key == NULL || klen == 0)
        return KEEL_EINVAL;
    if (klen > KEEL_MAX_ENTRY_KEY_LEN)
        return KEEL_ELIMIT;
    if (((const uint8_t *)key)[0] == 0)
        return KEEL_EINVAL;
    return 0;
}

/* keel_turn_get without the check of the key, for the runtime's own
 * entries too. */
static int turn_get(keel_turn *t, const void *key, size_t klen,
                    const void **val, size_t *vlen)
{
    const uint8_t *sv = NULL;
    size_t sl = 0;
    keel_ovl_entry *e;
    keel_store_read *r;
    keel_record rec;
    uint8_t kbuf[KEEL_KEY_MAX];
    int rc, op, kl;
    void *copy;

    op = stage_find(t, key, klen, &sv, &sl);
    if (op == STAGE_DEL)
        return KEEL_ENOTFOUND;
    if (op == STAGE_PUT) {
        /* The stage may move on the next write: hand out a stable copy. */
        copy = turn_alloc(t, sl ? sl : 1);
        if (copy == NULL)
            return KEEL_ENOMEM;
        memcpy(copy, sv, sl);
        *val = copy;
        *vlen = sl;
        return 0;
    }
    e = ovl_find(t->a, key, klen);
    if (e != NULL) {
        if (e->deleted)
            return KEEL_ENOTFOUND;
        *val = e->data + e->klen; /* stable: the overlay changes only
                                   * between turns */
        *vlen = e->vlen;
        return 0;
    }
    kl = encode_key(t->a, key, klen, kbuf);
    if (kl < 0)
        return kl;
    rc = keel_store_read_begin(t->n->store, &r);
    if (rc != 0)
        return rc;
    rc = keel_store_get(r, kbuf, (size_t)kl, &rec);
    if (rc == 0) {
        copy = turn_alloc(t, rec.len ? rec.len : 1);
        if (copy == NULL) {
            rc = KEEL_ENOMEM;
        } else {
            memcpy(copy, rec.data, rec.len);
            *val = copy;
            *vlen = rec.len;
        }
    }
    keel_store_read_end(r);
    return rc;
}

int keel_turn_get(keel_turn *t, const void *key, size_t klen,
                  const void **val, size_t *vlen)
{
    int rc = check_entry_key(key, klen);

    if (rc != 0)
        return rc;
    if (val == NULL || vlen == NULL)
        return KEEL_EINVAL;
    return turn_get(t, key, klen, val, vlen);
}

int keel_turn_put(keel_turn *t, const void *key, size_t klen,
                  const void *val, size_t vlen)
{
    int rc = check_entry_key(key, klen);

    if (rc != 0)
        return rc;
    if (t->no_writes || (val == NULL && vlen > 0))
        return KEEL_EINVAL;
    if (vlen > KEEL_MAX_VALUE_LEN)
        return KEEL_ETOOBIG;
    return stage_add(t, STAGE_PUT, key, klen, val, vlen);
}

int keel_turn_del(keel_turn *t, const void *key, size_t klen)
{
    int rc = check_entry_key(key, klen);

    if (rc != 0)
        return rc;
    if (t->no_writes)
        return KEEL_EINVAL;
    return stage_add(t, STAGE_DEL, key, klen, NULL, 0);
}

int keel__turn_writable(keel_turn *t)
{
    return !t->no_writes;
}

int keel__turn_has_error(keel_turn *t)
{
    return t->err_set;
}

/* A code no client knows would reach the caller as "unknown error" (over
 * the wire, a positive one even passes for another code), and a
 * positive one reads as success to a caller testing rc < 0. */
int keel__turn_hook_rc(keel_turn *t, const char *hook, int rc)
{
    if (keel__err_known(rc))
        return rc;
    if (!t->err_set)
        keel_turn_error(t, "the %s of actor type '%s' returned %d, which "
                           "is not 0 or a KEEL_E* code",
                        hook, t->a->type->name, rc);
    return KEEL_EHANDLER;
}

int keel__turn_rt_get(keel_turn *t, const void *key, size_t klen,
                      const void **val, size_t *vlen)
{
    return turn_get(t, key, klen, val, vlen);
}

int keel__turn_rt_put(keel_turn *t, const void *key, size_t klen,
                      const void *val, size_t vlen)
{
    return stage_add(t, STAGE_PUT, key, klen, val, vlen);
}

int keel__turn_rt_del(keel_turn *t, const void *key, size_t klen)
{
    return stage_add(t, STAGE_DEL, key, klen, NULL, 0);
}

struct keel_ob_turn *keel__turn_ob(keel_turn *t)
{
    return &t->ob;
}

struct keel_rm_turn *keel__turn_rm(keel_turn *t)
{
    return &t->rm;
}

struct keel_fl_turn *keel__turn_fl(keel_turn *t)
{
    return &t->fl;
}

keel_actor *keel__turn_actor(keel_turn *t)
{
    return t->a;
}

/* ------------------------------------------------------------ listings */

/* keel_turn_entries merges three layers (store, overlay, this turn's stage)
 * into one sorted list. It is meant for listings, not the hot path. */
struct ent {
    const uint8_t *key;
    size_t klen;
    const uint8_t *val;
    size_t vlen;
    size_t pos; /* order of arrival: later layers win */
    int deleted;
};

struct ent_list {
    keel_turn *t;
    struct ent *v;
    size_t n, cap;
    size_t prefix_len;
    int rt; /* the kind listed (turn_entries) */
    int err;
};

static int ent_add(struct ent_list *l, const void *key, size_t klen,
                   const void *val, size_t vlen, int deleted)
{
    struct ent *e;
    uint8_t *kc, *vc;

    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct ent *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return KEEL_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    kc = turn_alloc(l->t, klen + vlen + 1);
    if (kc == NULL)
        return KEEL_ENOMEM;
    memcpy(kc, key, klen);
    vc = kc + klen;
    if (vlen)
        memcpy(vc, val, vlen);
    e = &l->v[l->n++];
    e->key = kc;
    e->klen = klen;
    e->val = vc;
    e->vlen = vlen;
    e->pos = l->n - 1;
    e->deleted = deleted;
    return 0;
}

static int ent_scan_cb(const uint8_t *key, size_t klen,
                       const keel_record *rec, void *data)
{
    struct ent_list *l = data;

    if (klen == l->prefix_len)
        return 0; /* the state blob, not an entry */
    if ((key[l->prefix_len] == 0) != l->rt)
        return 0; /* not of the kind asked for: an actor may hold many
                   * request-key records (dedup.h) */
    l->err = ent_add(l, key + l->prefix_len, klen - l->prefix_len, rec->data,
                     rec->len, 0);
    return l->err != 0;
}

static int ent_cmp(const void *x, const void *y)
{
    const struct ent *a = x, *b = y;
    size_t m = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, m);

    if (c != 0)
        return c;
    return (a->klen > b->klen) - (a->klen < b->klen);
}

/* The actor's entries as the turn sees them: the handler's (rt 0) or the
 * runtime's own, whose keys begin with a NUL byte (rt 1), and of those
 * only the ones whose key begins with ep[0, eplen) (eplen 0: all). */
static int turn_entries(keel_turn *t, int rt, const void *ep, size_t eplen,
                        keel_entry_fn fn, void *data)
{
    struct ent_list l;
    keel_store_read *r;
    uint8_t prefix[KEEL_KEY_MAX];
    size_t pos = 0, i, j, off;
    void *item;
    int rc, plen, slen;

    memset(&l, 0, sizeof l);
    l.t = t;
    l.rt = rt;
    plen = encode_key(t->a, NULL, 0, prefix);
    if (plen < 0)
        return plen;
    l.prefix_len = (size_t)plen;
    /* The store's records are scanned from the entry prefix on; the
     * overlay's and the stage's are few, and filtered below. */
    slen = encode_key(t->a, ep, eplen, prefix);
    if (slen < 0)
        return slen;
    rc = keel_store_read_begin(t->n->store, &r);
    if (rc != 0)
        return rc;
    if (!rt && eplen == 0 && (size_t)plen + 2 <= sizeof prefix) {
        /* The handler's entries only: from past the runtime's, whose
         * names begin with a NUL byte and then "keel." (never 0xff),
         * so that an actor's many request-key records are not walked
         * over. */
        uint8_t after[KEEL_KEY_MAX];
        memcpy(after, prefix, (size_t)plen);
        after[plen] = 0x00;
        after[plen + 1] = 0xff;
        rc = keel_store_scan_after(r, prefix, (size_t)plen, after,
                                   (size_t)plen + 2, ent_scan_cb, &l);
    } else {
        rc = keel_store_scan(r, prefix, (size_t)slen, ent_scan_cb, &l);
    }
    keel_store_read_end(r);
    if (l.err != 0)
        rc = l.err;
    else if (rc > 0)
        rc = 0;
    /* Later layers override earlier ones: append overlay then stage, then
     * a stable sort keeps the last write of each key last. */
    if (rc == 0 && t->a->ovl != NULL) {
        while (rc == 0 && keel_hmap_next(t->a->ovl, &pos, &item)) {
            keel_ovl_entry *e = item;
            rc = ent_add(&l, e->data, e->klen, e->data + e->klen, e->vlen,
                         e->deleted);
        }
    }
    for (off = 0; rc == 0 && off < t->n->stage_len;) {
        const uint8_t *p = t->n->stage + off;
        uint32_t k32, v32;
        memcpy(&k32, p + 1, 4);
        memcpy(&v32, p + 5, 4);
        rc = ent_add(&l, p + STAGE_HDR, k32, p + STAGE_HDR + k32, v32,
                     p[0] == STAGE_DEL);
        off += STAGE_HDR + k32 + v32;
    }
    if (rc == 0 && l.n > 0) {
        qsort(l.v, l.n, sizeof *l.v, ent_cmp);
        for (i = 0; i < l.n; i = j) {
            size_t last = i;
            /* qsort is not stable: among equal keys the latest layer's
             * write is the one with the highest arrival position. */
            for (j = i + 1; j < l.n && ent_cmp(&l.v[i], &l.v[j]) == 0; j++)
                if (l.v[j].pos > l.v[last].pos)
                    last = j;
            if (l.v[last].deleted || (l.v[last].key[0] == 0) != rt ||
                l.v[last].klen < eplen ||
                (eplen > 0 && memcmp(l.v[last].key, ep, eplen) != 0))
                continue; /* gone, or not of the kind asked for */
            if (fn(l.v[last].key, l.v[last].klen, l.v[last].val,
                   l.v[last].vlen, data) != 0)
                break;
        }
    }
    free(l.v);
    return rc;
}

int keel_turn_entries(keel_turn *t, keel_entry_fn fn, void *data)
{
    if (t == NULL || fn == NULL)
        return KEEL_EINVAL;
    return turn_entries(t, 0, NULL, 0, fn, data);
}

int keel__turn_rt_entries(keel_turn *t, const void *prefix, size_t plen,
                          keel_entry_fn fn, void *data)
{
    return turn_entries(t, 1, prefix, plen, fn, data);
}

const char *keel_turn_type_name(keel_turn *t)
{
    return t->a->type->name;
}

void keel_turn_id(keel_turn *t, const void **id, size_t *len)
{
    *id = t->a->id;
    *len = t->a->idlen;
}

void *keel_turn_type_data(keel_turn *t)
{
    return t->a->type->t.data;
}

void **keel_turn_actor_data(keel_turn *t)
{
    return &t->a->user;
}

keel_node *keel_turn_node(keel_turn *t)
{
    return t->n;
}

/* ------------------------------------------------------------ applying */

/* Every allocation is made before anything changes. */
int keel__turn_apply(keel_node *n, keel_actor *a, keel_turn *t)
{
    keel_ovl_entry **fresh = NULL;
    size_t off, nops = 0, i;
    int rc = 0;

    for (off = 0; off < n->stage_len; nops++) {
        uint32_t k32, v32;
        memcpy(&k32, n->stage + off + 1, 4);
        memcpy(&v32, n->stage + off + 5, 4);
        off += STAGE_HDR + k32 + v32;
    }
    if (nops > 0) {
        fresh = calloc(nops, sizeof *fresh);
        if (fresh == NULL)
            return KEEL_ENOMEM;
        if (a->ovl == NULL) {
            a->ovl = calloc(1, sizeof *a->ovl);
            if (a->ovl == NULL)
                rc = KEEL_ENOMEM;
            else
                keel_hmap_init(a->ovl);
        }
        if (rc == 0)
            rc = keel_hmap_reserve(a->ovl, nops);
        for (off = 0, i = 0; rc == 0 && i < nops; i++) {
            const uint8_t *p = n->stage + off;
            uint32_t k32, v32;
            memcpy(&k32, p + 1, 4);
            memcpy(&v32, p + 5, 4);
            fresh[i] = ovl_entry_new(n->open_seq, p + STAGE_HDR, k32,
                                     p + STAGE_HDR + k32, v32,
                                     p[0] == STAGE_DEL);
            if (fresh[i] == NULL)
                rc = KEEL_ENOMEM;
            off += STAGE_HDR + k32 + v32;
        }
    }
    if (rc == 0 && t->state_set &&
        actor_state_set(a, n->scratch_state, t->state_len) != 0)
        rc = KEEL_ENOMEM;
    if (rc != 0) {
        for (i = 0; i < nops; i++)
            free(fresh[i]);
        free(fresh);
        if (a->ovl != NULL && a->ovl->count == 0) {
            keel__ovl_free(a->ovl);
            a->ovl = NULL;
        }
        return rc;
    }
    /* From here on nothing can fail. */
    if (t->state_set) {
        a->version++;
        a->flags |= ACTOR_STATE_DIRTY | ACTOR_HAS_BLOB;
    }
    for (i = 0; i < nops; i++)
        ovl_install(a, fresh[i]);
    free(fresh);
    if (t->state_set || nops > 0) {
        if (!t->state_set && a->version == 0)
            a->version = 1; /* entries only: actor_load gives 1 too */
        a->last_write_seq = n->open_seq;
        n->open_turns++;
        if (!(a->flags & ACTOR_IN_DIRTY)) {
            a->flags |= ACTOR_IN_DIRTY;
            a->dirty_next = n->dirty_head;
            n->dirty_head = a;
            n->ndirty++;
        }
    }
    return 0;
}

void keel__turn_free_tmp(keel_turn *t)
{
    while (t->tmp != NULL) {
        struct tmp_block *b = t->tmp;
        t->tmp = b->next;
        free(b);
    }
}

void keel__turn_end(keel_turn *t)
{
    keel__turn_free_tmp(t);
    t->n->stage_len = 0;
}
