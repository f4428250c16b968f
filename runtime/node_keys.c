/* Request keys inside the node (dedup.h has the records and their
 * layout): a keyed request whose turn succeeded records its key and
 * reply with the turn's writes (alone, when it wrote nothing), in
 * reserved entries of the actor; one its handler refused records the
 * error, alone, in a turn of its own that follows; a retry with the key
 * within the retention is answered with the first outcome without
 * running again. The turn (node.c) looks the key up before its handler
 * runs and stages the record with the handler's writes. */
#include <string.h>
#include <xxhash.h>

#include "common/be.h"
#include "common/log.h"
#include "runtime/dedup.h"
#include "runtime/node.h"
#include "runtime/node_int.h"

#define REC_KEY_LEN (KEEL_DEDUP_REC_PREFIX_LEN + KEEL_DEDUP_KEY_LEN)
#define Q_KEY_LEN (KEEL_DEDUP_Q_PREFIX_LEN + 8)

/* What a retry must repeat: the kind and the message. */
static uint64_t request_hash(const keel_req *req)
{
    return XXH3_64bits_withSeed(req->buf, req->len, req->is_cast ? 2 : 1);
}

static void rec_key(uint8_t *out, const uint8_t *key)
{
    memcpy(out, KEEL_DEDUP_REC_PREFIX, KEEL_DEDUP_REC_PREFIX_LEN);
    memcpy(out + KEEL_DEDUP_REC_PREFIX_LEN, key, KEEL_DEDUP_KEY_LEN);
}

static void q_key(uint8_t *out, uint64_t seq)
{
    memcpy(out, KEEL_DEDUP_Q_PREFIX, KEEL_DEDUP_Q_PREFIX_LEN);
    keel_put_be64(out + KEEL_DEDUP_Q_PREFIX_LEN, seq);
}

static uint64_t retention_ms(keel_turn *t)
{
    keel_node *n = keel_turn_node(t);

    return n->opts.request_key_retention_ms != 0
               ? n->opts.request_key_retention_ms
               : KEEL_DEDUP_RETENTION_MS;
}

/* Whether a record written at time_ms is forgotten at now_ms. A time
 * ahead of this node's clock (written on a node whose clock is ahead)
 * counts as now: clocks decide when a record goes, never whether a retry
 * inside the retention finds it. */
static int expired(uint64_t time_ms, uint64_t now_ms, uint64_t ret_ms)
{
    return now_ms > time_ms && now_ms - time_ms > ret_ms;
}

/* The key's record, if any and not expired: 1 (rec's reply valid until
 * the turn ends), 0, or an error. */
static int rec_get(keel_turn *t, const uint8_t *key, uint64_t now_ms,
                   keel_dedup_rec *rec)
{
    uint8_t ek[REC_KEY_LEN];
    const void *v;
    size_t vl;
    int rc;

    rec_key(ek, key);
    rc = keel__turn_rt_get(t, ek, sizeof ek, &v, &vl);
    if (rc == KEEL_ENOTFOUND)
        return 0;
    if (rc == 0)
        rc = keel_dedup_rec_decode(v, vl, rec);
    if (rc != 0)
        return rc;
    return !expired(rec->time_ms, now_ms, retention_ms(t));
}

int keel__dedup_lookup(keel_turn *t, const keel_req *req, int *dup,
                       const uint8_t **reply, size_t *rlen, int *err)
{
    keel_dedup_rec rec;
    const void *tab;
    size_t len;
    int rc;

    rc = rec_get(t, req->rkey, keel__wall_ms(), &rec);
    if (rc == 0) {
        /* An actor that still has the count window's table: its records
         * hold until its next keyed write moves them. */
        rc = keel__turn_rt_get(t, KEEL_DEDUP_ENTRY, KEEL_DEDUP_ENTRY_LEN,
                               &tab, &len);
        if (rc == KEEL_ENOTFOUND)
            return 0;
        if (rc == 0)
            rc = keel_dedup_table_find(tab, len, req->rkey, &rec);
    }
    if (rc == KEEL_ECORRUPT) {
        /* Which key it holds, or whether this one ran, cannot be told:
         * refused rather than run again. */
        keel_turn_error(t, "this actor's record of request keys is "
                           "unreadable: whether this request ran cannot be "
                           "told, so it is not run");
        return rc;
    }
    if (rc < 0)
        return rc;
    if (rc == 0)
        return 0;
    if (rec.hash != request_hash(req)) {
        keel_turn_error(t, "request key reused for another request: a key "
                           "may only be sent again with the same message");
        return KEEL_EINVAL;
    }
    *dup = rec.err != 0 ? DUP_REFUSED : rec.kept ? DUP_KEPT : DUP_NOT_KEPT;
    *err = rec.err;
    *reply = rec.reply;
    *rlen = rec.rlen;
    return 0;
}

/* The queue as a record is staged: its header, read once per write. */
struct queue {
    keel_turn *t;
    uint64_t first, next;
    uint64_t now_ms;
};

/* Stages rec (its seq is given here) for key at the queue's end. */
static int append(struct queue *q, const uint8_t *key, keel_dedup_rec *rec)
{
    uint8_t ek[REC_KEY_LEN], qk[Q_KEY_LEN], qv[KEEL_DEDUP_Q_LEN];
    uint8_t v[KEEL_DEDUP_REC_MAX];
    size_t vl;
    int rc;

    rec->seq = q->next;
    rec->time_ms = q->now_ms;
    vl = keel_dedup_rec_encode(v, rec);
    rec_key(ek, key);
    rc = keel__turn_rt_put(q->t, ek, sizeof ek, v, vl);
    if (rc != 0)
        return rc;
    q_key(qk, q->next);
    keel_dedup_q_encode(qv, q->now_ms, key);
    rc = keel__turn_rt_put(q->t, qk, sizeof qk, qv, sizeof qv);
    if (rc == 0)
        q->next++;
    return rc;
}

/* Forgets expired records from the queue's front, at most
 * KEEL_DEDUP_PRUNE_MAX: each write adds one, so the queue never lags by
 * more than what one retention's writes put in it. A record written again
 * since its queue entry (its key ran again after it expired) has a newer
 * entry of its own, and stays. */
static int prune(struct queue *q)
{
    uint64_t ret = retention_ms(q->t), time_ms;
    uint8_t qk[Q_KEY_LEN], ek[REC_KEY_LEN];
    const uint8_t *key;
    const void *v;
    size_t vl;
    keel_dedup_rec rec;
    int i, rc;

    for (i = 0; i < KEEL_DEDUP_PRUNE_MAX && q->first < q->next; i++) {
        q_key(qk, q->first);
        rc = keel__turn_rt_get(q->t, qk, sizeof qk, &v, &vl);
        if (rc == KEEL_ENOTFOUND) {
            q->first++;
            continue;
        }
        if (rc != 0)
            return rc;
        if (keel_dedup_q_decode(v, vl, &time_ms, &key) != 0) {
            /* Its record, if any, cannot be found from it: it stays
             * until its key is written again. Failing instead would
             * fail every keyed write of the actor, for ever. */
            keel_warn("%s: request-key queue entry %llu unreadable, "
                      "dropped",
                      keel_turn_type_name(q->t),
                      (unsigned long long)q->first);
            rc = keel__turn_rt_del(q->t, qk, sizeof qk);
            if (rc != 0)
                return rc;
            q->first++;
            continue;
        }
        if (!expired(time_ms, q->now_ms, ret))
            break;
        rec_key(ek, key);
        rc = keel__turn_rt_get(q->t, ek, sizeof ek, &v, &vl);
        if (rc == 0 && keel_dedup_rec_decode(v, vl, &rec) == 0 &&
            rec.seq == q->first)
            rc = keel__turn_rt_del(q->t, ek, sizeof ek);
        else if (rc == KEEL_ENOTFOUND || rc == 0)
            rc = 0;
        if (rc == 0)
            rc = keel__turn_rt_del(q->t, qk, sizeof qk);
        if (rc != 0)
            return rc;
        q->first++;
    }
    return 0;
}

/* The queue's bounds from its entries (keys sort by seq), for an actor
 * whose header is missing or unreadable: a header lost while entries
 * stay would otherwise give their places to new records, and the
 * records those entries name would never be forgotten. */
static int bounds_cb(const void *key, size_t klen, const void *val,
                     size_t vlen, void *data)
{
    struct queue *q = data;
    uint64_t seq;

    (void)val;
    (void)vlen;
    if (klen != Q_KEY_LEN)
        return 0;
    seq = keel_get_be64((const uint8_t *)key + KEEL_DEDUP_Q_PREFIX_LEN);
    if (q->first == q->next)
        q->first = seq; /* the first listed is the lowest */
    q->next = seq + 1;
    return 0;
}

static int queue_bounds(struct queue *q)
{
    q->first = q->next = 0;
    return keel__turn_rt_entries(q->t, KEEL_DEDUP_Q_PREFIX,
                                 KEEL_DEDUP_Q_PREFIX_LEN, bounds_cb, q);
}

/* The count window's table's records move to entries of their own, as if
 * written now (they hold for a retention from here), unless their key has
 * a record already; then the table goes. */
static int migrate_cb(const uint8_t *key, const keel_dedup_rec *old,
                      void *data)
{
    struct queue *q = data;
    keel_dedup_rec rec = *old, cur;
    int rc = rec_get(q->t, key, q->now_ms, &cur);

    if (rc != 0)
        return rc < 0 ? rc : 0;
    return append(q, key, &rec);
}

static int migrate(struct queue *q)
{
    const void *tab;
    size_t len;
    int rc;

    rc = keel__turn_rt_get(q->t, KEEL_DEDUP_ENTRY, KEEL_DEDUP_ENTRY_LEN, &tab,
                           &len);
    if (rc == KEEL_ENOTFOUND)
        return 0;
    if (rc == 0)
        rc = keel_dedup_table_each(tab, len, migrate_cb, q);
    if (rc == 0)
        rc = keel__turn_rt_del(q->t, KEEL_DEDUP_ENTRY, KEEL_DEDUP_ENTRY_LEN);
    return rc;
}

int keel__dedup_record(keel_turn *t, const keel_req *req, int err,
                       const void *reply, size_t rlen)
{
    struct queue q = {.t = t, .now_ms = keel__wall_ms()};
    uint8_t hdr[KEEL_DEDUP_Q_HDR_SIZE];
    keel_dedup_rec rec;
    const void *v;
    size_t vl;
    int rc;

    /* The header only says what to forget: one missing (an actor's
     * first keyed write) or unreadable is made again from the queue. */
    rc = keel__turn_rt_get(t, KEEL_DEDUP_Q_HDR, KEEL_DEDUP_Q_HDR_LEN, &v, &vl);
    if (rc == 0 && keel_dedup_hdr_decode(v, vl, &q.first, &q.next) != 0) {
        keel_warn("%s: request-key queue header unreadable, made again",
                  keel_turn_type_name(t));
        rc = KEEL_ENOTFOUND;
    }
    if (rc == KEEL_ENOTFOUND)
        rc = queue_bounds(&q);
    if (rc == 0)
        rc = prune(&q);
    if (rc == 0)
        rc = migrate(&q);
    if (rc != 0)
        return rc;
    memset(&rec, 0, sizeof rec);
    rec.hash = request_hash(req);
    rec.err = err;
    if (err != 0 && rlen > KEEL_DEDUP_ERR_TEXT_MAX)
        rlen = KEEL_DEDUP_ERR_TEXT_MAX; /* its beginning says enough */
    rec.kept = err != 0 || rlen <= KEEL_DEDUP_REPLY_MAX;
    rec.reply = reply;
    rec.rlen = rec.kept ? rlen : 0;
    rc = append(&q, req->rkey, &rec);
    if (rc != 0)
        return rc;
    keel_dedup_hdr_encode(hdr, q.first, q.next);
    return keel__turn_rt_put(t, KEEL_DEDUP_Q_HDR, KEEL_DEDUP_Q_HDR_LEN, hdr,
                             sizeof hdr);
}
