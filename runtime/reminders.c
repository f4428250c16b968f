/* Durable reminders: keel_turn_remind / keel_turn_unremind, the per-unit
 * due-time index and the node's timer that fires them (reminders.h has
 * the storage layout and the firing rule). */
#include "runtime/reminders.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/be.h"
#include "common/log.h"
#include "runtime/cluster_rt.h"
#include "runtime/deadletters.h"
#include "runtime/proto.h"

#define RM_REC "\0keel.rm/"
#define RM_REC_LEN 9
#define RM_HDR 16        /* due be64 | period be64 */
#define IDX_ID_LEN 24    /* due be64 | h */
#define IDX_TYPE_LEN 24  /* "\x01remind." + 16 hex digits */
/* Due times and periods beyond this (about 34 years) are refused: they
 * would overflow a sum with the clock. */
#define RM_MAX_MS (1ull << 40)
/* Index entries fired per unit per timer run; the rest wait for the
 * answers of these. */
#define FIRE_BATCH 256
/* A unit whose firing failed (the handler refused, the store did) is
 * looked at again after this long; after this many looks 100 ms apart
 * while not served here it is forgotten (its new owner fires its
 * reminders) unless this node still holds it: then it is looked at every
 * RETRY_MS. */
#define RETRY_MS 1000
#define NOT_LOCAL_MAX 40

/* A firing its handler refused (deadletters.h): count times in a row,
 * the last time with code. Kept in memory only: after a restart the
 * count starts again. */
struct rm_fail {
    struct rm_fail *next;
    uint64_t key, due;
    int code;
    unsigned count;
    size_t why_len;
    char why[KEEL_DL_WHY_MAX];
};

/* A unit this node serves with reminders in its index. */
struct rm_unit {
    uint64_t hash;
    keel_node *n;
    const char *cap; /* a type's capability string (lives with the node) */
    uint32_t shard;
    uint64_t next_due; /* earliest due in its index; UINT64_MAX: none */
    unsigned busy;     /* firings not answered yet */
    unsigned not_local;
    int failed;        /* a firing of the current round failed */
    struct rm_fail *fails;
};

struct keel_reminders {
    keel_hmap units;
    ev_timer timer;
    uint64_t armed; /* due time the timer is set for; 0: stopped */
};

static void arm(keel_node *n);
static void arm_at(keel_node *n, uint64_t due);

static void index_type(const char *cap, char out[IDX_TYPE_LEN + 1])
{
    snprintf(out, IDX_TYPE_LEN + 1, "\x01remind.%016llx",
             (unsigned long long)XXH3_64bits(cap, strlen(cap)));
}

/* The index value of the actor's reminder name; its length. */
static size_t index_val(const keel_actor *a, const void *name, size_t nlen,
                        uint8_t *out)
{
    size_t tlen = strlen(a->type->name);

    out[0] = (uint8_t)tlen;
    memcpy(out + 1, a->type->name, tlen);
    out[1 + tlen] = a->idlen;
    memcpy(out + 2 + tlen, a->id, a->idlen);
    memcpy(out + 2 + tlen + a->idlen, name, nlen);
    return 2 + tlen + a->idlen + nlen;
}

#define IDX_VAL_MAX \
    (2 + KEEL_MAX_TYPE_LEN + KEEL_MAX_ID_LEN + KEEL_MAX_REMINDER_NAME_LEN)

/* Stages an index write of the turn's actor for reminder name at due. */
static int index_stage(keel_turn *t, int del, uint64_t due, const void *name,
                       size_t nlen)
{
    struct keel_rm_turn *rt = keel__turn_rm(t);
    keel_actor *a = keel__turn_actor(t);
    uint8_t val[IDX_VAL_MAX];
    size_t vl = index_val(a, name, nlen, val);
    struct keel_rm_idx *x = malloc(sizeof *x + (del ? 0 : vl));
    XXH128_canonical_t c;

    if (x == NULL)
        return KEEL_ENOMEM;
    x->next = NULL;
    x->del = (uint8_t)del;
    keel_put_be64(x->id, due);
    XXH128_canonicalFromHash(&c, XXH3_128bits(val, vl));
    memcpy(x->id + 8, c.digest, 16);
    x->vlen = del ? 0 : (uint16_t)vl;
    if (!del)
        memcpy(x->val, val, vl);
    if (rt->tail == NULL)
        rt->tail = &rt->idx;
    *rt->tail = x;
    rt->tail = &x->next;
    if (!del && (rt->min_due == 0 || due < rt->min_due))
        rt->min_due = due;
    return 0;
}

/* The actor's record of reminder name, as the turn sees it: *due 0 when
 * there is none. */
static int record_get(keel_turn *t, const uint8_t *key, size_t klen,
                      uint64_t *due, uint64_t *period, const uint8_t **msg,
                      size_t *mlen)
{
    const void *v;
    size_t vl;
    int rc = keel__turn_rt_get(t, key, klen, &v, &vl);

    *due = 0;
    if (rc == KEEL_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (vl < RM_HDR) {
        keel_turn_error(t, "the actor's reminder record is %zu bytes, "
                           "under %d",
                        vl, RM_HDR);
        return KEEL_ECORRUPT;
    }
    *due = keel_get_be64(v);
    if (period != NULL)
        *period = keel_get_be64((const uint8_t *)v + 8);
    if (msg != NULL) {
        *msg = (const uint8_t *)v + RM_HDR;
        *mlen = vl - RM_HDR;
    }
    return 0;
}

static int name_check(keel_turn *t, const void *name, size_t nlen)
{
    if (t == NULL || name == NULL || nlen == 0)
        return KEEL_EINVAL;
    if (nlen > KEEL_MAX_REMINDER_NAME_LEN)
        return KEEL_ELIMIT; /* a key's length, as ELIMIT says */
    if (!keel__turn_writable(t))
        return KEEL_EINVAL; /* on_passivate */
    return 0;
}

/* Sets (due 0 with del) the record of name, replacing the index entry of
 * the one before it. */
static int remind_set(keel_turn *t, const void *name, size_t nlen, int del,
                      uint64_t due, uint64_t period, const void *msg,
                      size_t len)
{
    uint8_t key[RM_REC_LEN + KEEL_MAX_REMINDER_NAME_LEN], *rec;
    uint64_t old;
    int rc;

    memcpy(key, RM_REC, RM_REC_LEN);
    memcpy(key + RM_REC_LEN, name, nlen);
    rc = record_get(t, key, RM_REC_LEN + nlen, &old, NULL, NULL, NULL);
    if (rc != 0)
        return rc;
    if (old != 0 && (rc = index_stage(t, 1, old, name, nlen)) != 0)
        return rc;
    if (del)
        return old != 0 ? keel__turn_rt_del(t, key, RM_REC_LEN + nlen) : 0;
    rec = malloc(RM_HDR + len);
    if (rec == NULL)
        return KEEL_ENOMEM;
    keel_put_be64(rec, due);
    keel_put_be64(rec + 8, period);
    if (len > 0)
        memcpy(rec + RM_HDR, msg, len);
    rc = keel__turn_rt_put(t, key, RM_REC_LEN + nlen, rec, RM_HDR + len);
    free(rec);
    if (rc == 0)
        rc = index_stage(t, 0, due, name, nlen);
    return rc;
}

int keel_turn_remind(keel_turn *t, const void *name, size_t nlen,
                     uint64_t due_ms, uint64_t period_ms, const void *msg,
                     size_t len)
{
    int rc = name_check(t, name, nlen);

    if (rc != 0)
        return rc;
    if (msg == NULL && len > 0)
        return KEEL_EINVAL;
    if (len > KEEL_MAX_REMINDER_MSG_LEN)
        return KEEL_ETOOBIG;
    /* Not ELIMIT, whose text speaks of names and keys: a negative due
     * time wraps to one of these. */
    if (due_ms >= RM_MAX_MS || period_ms >= RM_MAX_MS)
        return KEEL_EINVAL;
    return remind_set(t, name, nlen, 0, keel__wall_ms() + due_ms, period_ms, msg,
                      len);
}

int keel_turn_unremind(keel_turn *t, const void *name, size_t nlen)
{
    int rc = name_check(t, name, nlen);

    if (rc != 0)
        return rc;
    return remind_set(t, name, nlen, 1, 0, 0, NULL, 0);
}

const char *keel_turn_reminder(keel_turn *t, size_t *nlen)
{
    const struct keel_rm_fire *f;

    if (t == NULL)
        return NULL;
    f = keel__turn_rm(t)->fire;
    if (f == NULL)
        return NULL;
    if (nlen != NULL)
        *nlen = f->nlen;
    return f->name;
}

/* -------------------------------------------------------- turns */

int keel__reminders_fire(keel_turn *t, keel_req *req, int *run)
{
    struct keel_rm_fire *f = req->rm;
    uint8_t key[RM_REC_LEN + KEEL_MAX_REMINDER_NAME_LEN];
    uint64_t due, period = 0, now = keel__wall_ms();
    const uint8_t *msg = NULL;
    size_t mlen = 0, klen = RM_REC_LEN + f->nlen;
    int rc;

    *run = 0;
    memcpy(key, RM_REC, RM_REC_LEN);
    memcpy(key + RM_REC_LEN, f->name, f->nlen);
    rc = record_get(t, key, klen, &due, &period, &msg, &mlen);
    if (rc != 0)
        return rc;
    if (due != f->due) {
        /* Replaced or removed since: the entry is stale. Its deletion
         * goes with the actor's writes, so the turn writes the record
         * again as it is (or deletes it again) to have some. */
        rc = index_stage(t, 1, f->due, f->name, f->nlen);
        if (rc == 0 && due == 0) {
            rc = keel__turn_rt_del(t, key, klen);
        } else if (rc == 0) {
            uint8_t *rec = malloc(RM_HDR + mlen);
            if (rec == NULL)
                return KEEL_ENOMEM;
            keel_put_be64(rec, due);
            keel_put_be64(rec + 8, period);
            memcpy(rec + RM_HDR, msg, mlen);
            rc = keel__turn_rt_put(t, key, klen, rec, RM_HDR + mlen);
            free(rec);
        }
        return rc;
    }
    if (due > now)
        return 0; /* the clock went back: its time has not come */
    /* The message goes into the req before the record changes under it. */
    rc = keel__req_set(req, msg, mlen);
    if (rc != 0)
        return rc;
    rc = index_stage(t, 1, due, f->name, f->nlen);
    if (rc != 0)
        return rc;
    if (period == 0) {
        rc = keel__turn_rt_del(t, key, klen);
    } else {
        /* From now, not from the missed due time: a unit that was not
         * served for many periods fires once, not once per period. */
        uint8_t *rec = malloc(RM_HDR + mlen);
        if (rec == NULL)
            return KEEL_ENOMEM;
        keel_put_be64(rec, now + period);
        keel_put_be64(rec + 8, period);
        memcpy(rec + RM_HDR, req->buf, mlen);
        rc = keel__turn_rt_put(t, key, klen, rec, RM_HDR + mlen);
        free(rec);
        if (rc == 0)
            rc = index_stage(t, 0, now + period, f->name, f->nlen);
    }
    if (rc != 0)
        return rc;
    if (f->dead) {
        /* Refused too often: the actor keeps the message as a dead
         * letter, and the reminder goes on as if this firing ran. */
        uint8_t *body = malloc(1 + f->nlen + mlen);
        if (body == NULL)
            return KEEL_ENOMEM;
        body[0] = f->nlen;
        memcpy(body + 1, f->name, f->nlen);
        if (mlen > 0)
            memcpy(body + 1 + f->nlen, req->buf, mlen);
        rc = keel__dl_add(t, KEEL_DL_REMINDER, f->code, f->attempts, f->why,
                          f->why_len, body, 1 + f->nlen + mlen);
        free(body);
        if (rc == 0) {
            /* Named as the outbox names its senders, so that the operator
             * knows which actor's dead letters to list. */
            const void *id;
            size_t idlen;

            keel_turn_id(t, &id, &idlen);
            keel_warn("reminders: a firing of reminder '%.*s' of %s '%.*s' "
                      "kept as a dead letter after %u refusals: %s: %.*s",
                      (int)f->nlen, f->name, keel_turn_type_name(t),
                      (int)idlen, (const char *)id, f->attempts,
                      keel_err_name(f->code), (int)f->why_len, f->why);
        }
        return rc;
    }
    keel__turn_rm(t)->fire = f;
    *run = 1;
    return 0;
}

static void idx_free(struct keel_rm_idx *x)
{
    while (x != NULL) {
        struct keel_rm_idx *next = x->next;
        free(x);
        x = next;
    }
}

void keel__reminders_turn_end(keel_turn *t, keel_actor *a, keel_req *req,
                              int ok)
{
    struct keel_rm_turn *rt = keel__turn_rm(t);
    struct keel_rm_idx **pp;

    if (rt->fire != NULL && ok && req->rm != NULL)
        req->rm->ran = 1;
    if (rt->idx == NULL)
        return;
    if (!ok) {
        idx_free(rt->idx);
    } else {
        for (pp = &a->rm_idx; *pp != NULL; pp = &(*pp)->next)
            ;
        *pp = rt->idx;
        if (rt->min_due != 0)
            req->rm_due = rt->min_due;
    }
    rt->idx = NULL;
    rt->tail = NULL;
}

int keel__reminders_flush(keel_node *n, keel_batch *b, keel_actor *a)
{
    char it[IDX_TYPE_LEN + 1];
    uint8_t key[KEEL_KEY_MAX];
    struct keel_rm_idx *x;
    int kl, rc = 0;

    (void)n;
    index_type(a->type->capability, it);
    for (x = a->rm_idx; x != NULL && rc == 0; x = x->next) {
        kl = keel_key_encode(key, (uint16_t)a->shard, it, IDX_TYPE_LEN, x->id,
                             IDX_ID_LEN, NULL, 0);
        if (kl < 0)
            rc = kl;
        else if (x->del)
            rc = keel_batch_del(b, key, (size_t)kl);
        else
            rc = keel_batch_put(b, key, (size_t)kl, 1, x->val, x->vlen);
    }
    keel__reminders_forget(a);
    return rc;
}

void keel__reminders_forget(keel_actor *a)
{
    idx_free(a->rm_idx);
    a->rm_idx = NULL;
}

/* ---------------------------------------------------------- listing */

struct list_acc {
    uint8_t *buf;
    size_t len, cap;
    uint64_t now;
    int err;
};

static int list_cb(const void *key, size_t klen, const void *val, size_t vlen,
                   void *data)
{
    struct list_acc *l = data;
    const uint8_t *v = val;
    size_t nlen = klen - RM_REC_LEN, need;
    uint64_t due;
    int64_t in;
    uint8_t *p;

    if (klen <= RM_REC_LEN || memcmp(key, RM_REC, RM_REC_LEN) != 0 ||
        vlen < RM_HDR || nlen > KEEL_MAX_REMINDER_NAME_LEN)
        return 0; /* another runtime entry */
    need = KEEL_REMINDERS_ENTRY_HDR + nlen;
    if (l->len + need > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        while (cap < l->len + need)
            cap *= 2;
        p = realloc(l->buf, cap);
        if (p == NULL) {
            l->err = KEEL_ENOMEM;
            return 1;
        }
        l->buf = p;
        l->cap = cap;
    }
    due = keel_get_be64(v);
    in = (int64_t)(due - l->now);
    keel_reminders_entry_put(l->buf + l->len, in, keel_get_be64(v + 8),
                             (uint32_t)(vlen - RM_HDR), key + RM_REC_LEN,
                             nlen);
    l->len += need;
    return 0;
}

int keel__reminders_list(keel_turn *t, uint8_t **out, size_t *len)
{
    struct list_acc l = {.now = keel__wall_ms()};
    int rc = keel__turn_rt_entries(t, RM_REC, RM_REC_LEN, list_cb, &l);

    if (rc == 0)
        rc = l.err;
    if (rc != 0) {
        free(l.buf);
        return rc;
    }
    *out = l.buf;
    *len = l.len;
    return 0;
}

/* ----------------------------------------------------------- units */

struct unit_key {
    const char *cap;
    uint32_t shard;
};

static uint64_t unit_hash(const char *cap, uint32_t shard)
{
    return XXH3_64bits_withSeed(cap, strlen(cap), shard);
}

static int unit_eq(const void *item, const void *key)
{
    const struct rm_unit *u = item;
    const struct unit_key *k = key;

    return u->shard == k->shard && strcmp(u->cap, k->cap) == 0;
}

static struct rm_unit *unit_get(keel_node *n, const char *cap, uint32_t shard)
{
    struct unit_key k = {cap, shard};
    uint64_t h = unit_hash(cap, shard);
    struct rm_unit *u = keel_hmap_get(&n->reminders->units, h, &k, unit_eq);

    if (u != NULL)
        return u;
    u = calloc(1, sizeof *u);
    if (u == NULL)
        return NULL;
    u->hash = h;
    u->n = n;
    u->cap = cap;
    u->shard = shard;
    u->next_due = UINT64_MAX;
    if (keel_hmap_put(&n->reminders->units, h, u) != 0) {
        free(u);
        return NULL;
    }
    return u;
}

static void unit_free(struct rm_unit *u)
{
    while (u->fails != NULL) {
        struct rm_fail *f = u->fails;
        u->fails = f->next;
        free(f);
    }
    free(u);
}

static void unit_drop(struct rm_unit *u)
{
    keel_hmap_remove(&u->n->reminders->units, u->hash, u);
    unit_free(u);
}

static struct rm_fail *fail_find(struct rm_unit *u, uint64_t key,
                                 uint64_t due)
{
    struct rm_fail *f;

    for (f = u->fails; f != NULL; f = f->next)
        if (f->key == key && f->due == due)
            return f;
    return NULL;
}

/* The reminder's firing went through (or became a dead letter): what
 * was counted against it goes. */
static void fail_clear(struct rm_unit *u, uint64_t key)
{
    struct rm_fail **pp = &u->fails;

    while (*pp != NULL) {
        struct rm_fail *f = *pp;
        if (f->key == key) {
            *pp = f->next;
            free(f);
        } else {
            pp = &f->next;
        }
    }
}

/* The handler refused the firing f with code: counted, restarting the
 * count when it refused differently before. */
static void fail_count(struct rm_unit *u, const struct keel_rm_fire *f,
                       int code, const void *why, size_t why_len)
{
    struct rm_fail *x = fail_find(u, f->key, f->due);

    if (x == NULL) {
        x = calloc(1, sizeof *x);
        if (x == NULL)
            return; /* not counted: fired again, counted then */
        x->key = f->key;
        x->due = f->due;
        x->next = u->fails;
        u->fails = x;
    }
    if (x->code != code)
        x->count = 0;
    x->code = code;
    x->count++;
    x->why_len = why_len < sizeof x->why ? why_len : sizeof x->why;
    if (x->why_len > 0)
        memcpy(x->why, why, x->why_len);
}

struct idx_scan {
    uint64_t upto;   /* entries due by then are collected */
    uint64_t next;   /* the first one after them; UINT64_MAX: none */
    size_t plen;
    struct idx_ent {
        uint64_t due;
        uint16_t vlen;
        uint8_t val[IDX_VAL_MAX];
    } *v;
    size_t n, max;
    int err;
};

static int scan_cb(const uint8_t *key, size_t klen, const keel_record *rec,
                   void *data)
{
    struct idx_scan *s = data;
    uint64_t due;

    if (klen != s->plen + IDX_ID_LEN || rec->len > IDX_VAL_MAX)
        return 0;
    due = keel_get_be64(key + s->plen);
    if (due > s->upto || s->n == s->max) {
        s->next = due;
        return 1;
    }
    s->v[s->n].due = due;
    s->v[s->n].vlen = (uint16_t)rec->len;
    memcpy(s->v[s->n].val, rec->data, rec->len);
    s->n++;
    return 0;
}

/* Reads the unit's index from its start: the entries due by s->upto (at
 * most s->max) and the due time of the next one. */
static int index_scan(keel_node *n, const char *cap, uint32_t shard,
                      struct idx_scan *s)
{
    char it[IDX_TYPE_LEN + 1];
    uint8_t prefix[KEEL_KEY_MAX];
    keel_store_read *r;
    int pl, rc;

    index_type(cap, it);
    pl = keel_key_encode(prefix, (uint16_t)shard, it, IDX_TYPE_LEN, NULL, 0,
                         NULL, 0);
    if (pl < 0)
        return pl;
    /* shard | len(type) | type | len(id) be16, and every id is 24 bytes */
    s->plen = (size_t)pl;
    s->next = UINT64_MAX;
    rc = keel_store_read_begin(n->store, &r);
    if (rc != 0)
        return rc;
    rc = keel_store_scan(r, prefix, (size_t)pl - 2, scan_cb, s);
    keel_store_read_end(r);
    if (s->err != 0)
        return s->err;
    return rc > 0 ? 0 : rc;
}

/* Learns the unit's earliest due time from its index, and sets the timer
 * for it if it is earlier than the timer's. */
static void unit_load(keel_node *n, const char *cap, uint32_t shard)
{
    struct idx_scan s = {.upto = 0, .max = 0};
    struct rm_unit *u;
    int rc = index_scan(n, cap, shard, &s);

    if (rc != 0) {
        keel_warn("reminders: reading the index of unit (%s, %u): %s",
                  keel_cap_name(cap),
                  shard, keel_strerror(rc));
        s.next = keel__wall_ms() + RETRY_MS; /* looked at again then */
    }
    u = keel_hmap_get(&n->reminders->units, unit_hash(cap, shard),
                      &(struct unit_key){cap, shard}, unit_eq);
    if (s.next == UINT64_MAX) {
        if (u != NULL && u->busy == 0)
            unit_drop(u);
        return;
    }
    if (u == NULL && (u = unit_get(n, cap, shard)) == NULL)
        return; /* out of memory: found at the unit's next take */
    u->next_due = s.next;
    u->not_local = 0;
    if (u->busy == 0)
        arm_at(n, u->next_due);
}

static void fire_cb(int status, const void *reply, size_t len, void *data)
{
    struct keel_rm_fire *f = data;
    struct rm_unit *u = f->u;
    keel_node *n = u->n;
    const char *cap = u->cap;
    uint32_t shard = u->shard;

    if (status == 0) {
        if (f->ran)
            STAT_ADD(n, reminders_fired, 1);
        else if (f->dead)
            STAT_ADD(n, reminders_dead, 1);
        if (u->fails != NULL)
            fail_clear(u, f->key);
    } else {
        keel_debug("reminders: '%.*s' of unit (%s, %u): %s: %.*s",
                   (int)f->nlen, f->name, keel_cap_name(cap), shard,
                   keel_err_name(status),
                   (int)len, (const char *)reply);
        if (!keel__dl_transient(status))
            fail_count(u, f, status, reply, len);
        u->failed = 1;
    }
    free(f->why);
    free(f);
    if (--u->busy > 0 || n->stopping)
        return;
    if (u->failed) {
        /* Fired again after a pause: a handler that refused may take it
         * next time, and a store that failed may have recovered. */
        u->failed = 0;
        u->next_due = keel__wall_ms() + RETRY_MS;
        arm_at(n, u->next_due);
    } else {
        unit_load(n, cap, shard); /* may drop u */
    }
}

/* Submits a firing for each index entry of u due by now. */
static void unit_fire(struct rm_unit *u, uint64_t now)
{
    keel_node *n = u->n;
    struct idx_scan s = {.upto = now, .max = FIRE_BATCH};
    keel_placement pl;
    size_t i;
    int rc;

    keel_coord_placement(n->coord, u->cap, u->shard, &pl);
    if (pl.state != KEEL_PLACEMENT_LOCAL ||
        (n->cluster != NULL && !keel__cluster_rt_serving(n))) {
        /* Lost (its new owner fires), or not served yet while a take
         * settles. A unit this node still holds (fenced while its session
         * lives, a release that may be called off) is not lost however
         * long that lasts: nobody else fires its reminders, and nothing
         * loads them again when it is served here once more. */
        u->not_local++;
        if (pl.state == KEEL_PLACEMENT_REMOTE ||
            (u->not_local > NOT_LOCAL_MAX &&
             !keel__cluster_rt_holds(n, u->cap, u->shard)))
            unit_drop(u);
        else
            u->next_due = now + (u->not_local > NOT_LOCAL_MAX ? RETRY_MS
                                                              : RETRY_MS / 10);
        return;
    }
    u->not_local = 0;
    u->failed = 0;
    s.v = malloc(FIRE_BATCH * sizeof *s.v);
    if (s.v == NULL) {
        u->next_due = now + RETRY_MS;
        return;
    }
    rc = index_scan(n, u->cap, u->shard, &s);
    if (rc != 0) {
        keel_warn("reminders: reading the index of unit (%s, %u): %s",
                  keel_cap_name(u->cap), u->shard, keel_strerror(rc));
        free(s.v);
        u->next_due = now + RETRY_MS;
        return;
    }
    u->next_due = s.next;
    u->busy++; /* held while submitting: no reload before the last one */
    for (i = 0; i < s.n; i++) {
        const uint8_t *v = s.v[i].val;
        size_t vl = s.v[i].vlen, tlen = vl > 0 ? v[0] : 0, idlen, nlen;
        struct keel_type_entry *te;
        struct keel_rm_fire *f;
        keel_req *req;

        if (tlen == 0 || vl < 2 + tlen)
            continue;
        idlen = v[1 + tlen];
        if (vl < 2 + tlen + idlen + 1 ||
            vl - (2 + tlen + idlen) > KEEL_MAX_REMINDER_NAME_LEN)
            continue;
        nlen = vl - (2 + tlen + idlen);
        te = keel__type_find(n, v + 1, tlen);
        if (te == NULL) {
            keel_warn("reminders: a reminder of an actor of type '%.*s', not "
                      "known here, is due in unit (%s, %u)",
                      (int)tlen, (const char *)v + 1, keel_cap_name(u->cap),
                      u->shard);
            u->failed = 1;
            continue;
        }
        f = calloc(1, sizeof *f);
        req = keel__req_alloc(n, 0);
        if (f == NULL || req == NULL) {
            free(f);
            if (req != NULL)
                keel__req_free(n, req);
            u->failed = 1;
            break;
        }
        f->u = u;
        f->due = s.v[i].due;
        f->key = XXH3_64bits(v, vl);
        if (u->fails != NULL) {
            struct rm_fail *x = fail_find(u, f->key, f->due);
            if (x != NULL && x->count >= keel__dl_after(n) &&
                (f->why = malloc(x->why_len ? x->why_len : 1)) != NULL) {
                f->dead = 1;
                f->code = x->code;
                f->attempts = x->count;
                f->why_len = x->why_len;
                memcpy(f->why, x->why, x->why_len);
            }
        }
        f->nlen = (uint8_t)nlen;
        memcpy(f->name, v + 2 + tlen + idlen, nlen);
        f->name[nlen] = '\0';
        req->len = 0;
        req->rm = f;
        req->origin = REQ_LOCAL;
        req->is_cast = 1;
        req->u.local.cb = fire_cb;
        req->u.local.data = f;
        u->busy++;
        rc = keel__submit(n, te, v + 2 + tlen, idlen, req);
        if (rc != 0) {
            u->busy--;
            keel__req_free(n, req);
            free(f);
            u->failed = 1;
        }
    }
    free(s.v);
    u->busy--;
    if (u->busy == 0)
        u->next_due = u->failed ? now + RETRY_MS : s.next;
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_node *n = w->data;
    uint64_t now = keel__wall_ms();
    struct rm_unit **due = NULL;
    size_t pos = 0, nd = 0, cap = 0, i;
    void *item;

    (void)loop;
    (void)revents;
    n->reminders->armed = 0;
    if (n->stopping)
        return;
    /* Collected first: firing may drop units from the map. */
    while (keel_hmap_next(&n->reminders->units, &pos, &item)) {
        struct rm_unit *u = item;
        if (u->busy > 0 || u->next_due > now)
            continue;
        if (nd == cap) {
            size_t c = cap ? cap * 2 : 16;
            struct rm_unit **p = realloc(due, c * sizeof *p);
            if (p == NULL)
                break;
            due = p;
            cap = c;
        }
        due[nd++] = u;
    }
    for (i = 0; i < nd; i++)
        unit_fire(due[i], now);
    free(due);
    arm(n);
}

/* Sets the timer for due unless it is set for that time or earlier. Every
 * change of a unit's due time outside timer_cb comes through here, and
 * timer_cb sets the timer for the earliest of all as it ends, so the timer
 * is never later than the earliest unit; this costs nothing per unit. */
static void arm_at(keel_node *n, uint64_t due)
{
    struct keel_reminders *r = n->reminders;
    uint64_t now;

    if (n->stopping || n->loop == NULL || due == UINT64_MAX)
        return;
    if (ev_is_active(&r->timer) && r->armed <= due)
        return;
    ev_timer_stop(n->loop, &r->timer);
    now = keel__wall_ms();
    ev_timer_set(&r->timer, due > now ? (double)(due - now) / 1000.0 : 0, 0);
    ev_timer_start(n->loop, &r->timer);
    r->armed = due;
}

/* Sets the timer at the earliest due time of the units not firing now
 * (a pass over them: timer_cb and start only). */
static void arm(keel_node *n)
{
    struct keel_reminders *r = n->reminders;
    uint64_t min = UINT64_MAX, now;
    size_t pos = 0;
    void *item;

    if (n->stopping || n->loop == NULL)
        return;
    while (keel_hmap_next(&r->units, &pos, &item)) {
        struct rm_unit *u = item;
        if (u->busy == 0 && u->next_due < min)
            min = u->next_due;
    }
    if (min == r->armed && ev_is_active(&r->timer))
        return;
    ev_timer_stop(n->loop, &r->timer);
    r->armed = 0;
    if (min == UINT64_MAX)
        return;
    now = keel__wall_ms();
    ev_timer_set(&r->timer, min > now ? (double)(min - now) / 1000.0 : 0, 0);
    ev_timer_start(n->loop, &r->timer);
    r->armed = min;
}

void keel__reminders_released(keel_node *n, const keel_req *req)
{
    keel_actor *a = req->actor;
    struct rm_unit *u;

    if (n->reminders == NULL || n->stopping || a == NULL)
        return;
    u = unit_get(n, a->type->capability, a->shard);
    if (u == NULL) {
        keel_warn("reminders: out of memory; a reminder of %s waits for the "
                  "next start",
                  a->type->name);
        return;
    }
    if (req->rm_due < u->next_due)
        u->next_due = req->rm_due;
    if (u->busy == 0)
        arm_at(n, u->next_due);
}

void keel__reminders_unit_taken(keel_node *n, const char *cap, uint32_t shard)
{
    unsigned i;

    if (n->reminders == NULL)
        return;
    /* The capability string of a registered type: it outlives the unit. */
    for (i = 0; i < n->ntypes; i++)
        if (strcmp(n->types[i]->capability, cap) == 0)
            break;
    if (i == n->ntypes)
        return;
    unit_load(n, n->types[i]->capability, shard);
}

void keel__reminders_start(keel_node *n)
{
    if (n->cluster != NULL)
        return; /* units are taken one by one (keel__reminders_unit_taken) */
    keel__each_unit(n, unit_load);
    arm(n);
}

int keel__reminders_init(keel_node *n)
{
    n->reminders = calloc(1, sizeof *n->reminders);
    if (n->reminders == NULL)
        return KEEL_ENOMEM;
    keel_hmap_init(&n->reminders->units);
    ev_timer_init(&n->reminders->timer, timer_cb, 0, 0);
    n->reminders->timer.data = n;
    return 0;
}

void keel__reminders_free(keel_node *n)
{
    size_t pos = 0;
    void *item;

    if (n->reminders == NULL)
        return;
    if (n->loop != NULL)
        ev_timer_stop(n->loop, &n->reminders->timer);
    while (keel_hmap_next(&n->reminders->units, &pos, &item))
        unit_free(item);
    keel_hmap_free(&n->reminders->units);
    free(n->reminders);
    n->reminders = NULL;
}
