/* The durable outbox: keel_turn_send, delivery and its dedup (outbox.h
 * has the storage layout and the protocol between sender and receiver). */
#include "runtime/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/be.h"
#include "common/log.h"
#include "runtime/cluster_rt.h"
#include "runtime/deadletters.h"

#define OB_HDR "\0keel.ob"
#define OB_HDR_LEN 8
#define OB_REC "\0keel.ob/"
#define OB_REC_LEN 9
#define OB_IN "\0keel.in/"
#define OB_IN_LEN 9
#define OB_H_LEN 16
#define IDX_TYPE_LEN 24 /* "\x01outbox." + 16 hex digits */
/* A sender's numbers start at the wall clock's ms shifted this much. */
#define OB_FRESH_SHIFT 20

/* A retiring turn's message: seq be64 | code be16 | attempts be16, then
 * (a dead letter) the last error's text. */
#define OP_HDR 12
/* Redelivery waits this long after a failure, doubling up to the most. */
#define RETRY_MIN_MS 20
#define RETRY_MAX_MS 2000
/* A message its receiver refused goes again after at least this long. */
#define REFUSED_RETRY_MS 1000
/* Looks at a unit that is not served here (while a take settles) before
 * its sender is forgotten, unless this node still holds the unit; the
 * node that serves it delivers. */
#define NOT_LOCAL_MAX 40

/* A sender with messages this node delivers. Lives while it has messages
 * waiting, one out, or retiring turns unanswered. */
struct ob_sender {
    uint64_t hash;
    keel_node *n;
    struct keel_type_entry *te;
    uint32_t shard;
    uint64_t released; /* messages up to this one may go */
    uint64_t done;     /* messages up to this one are retired (or going) */
    uint64_t inflight; /* the message out now; 0: none */
    /* A message kept as a dead letter whose retiring turn is not
     * answered yet; 0: none. The next message waits for it: the receiver
     * never applied this one, so if that turn does not commit, it must be
     * sent (and refused) again, not passed over. */
    uint64_t dead_seq;
    unsigned acking;   /* retiring turns not answered yet */
    unsigned backoff_ms;
    /* The pause before a message whose retiring turn failed goes again
     * (redo below), doubling while they keep failing (a disk that stays
     * full); 0 once one commits. */
    unsigned redo_ms;
    unsigned not_local;
    /* The message out now was refused this many times in a row, the last
     * time with fail_code (deadletters.h). */
    unsigned fails;
    int fail_code;
    /* The message wait_seq has waited for a deploy (wait_deploy) since
     * wait_since (the loop's clock), sent wait_tries times meanwhile. */
    uint64_t wait_seq;
    ev_tstamp wait_since;
    unsigned wait_tries;
    /* Messages up to unsure_upto may have been applied by their receiver
     * already: an attempt of theirs ended without an answer that says
     * (the link or the lease lost, EINDOUBT), or they were found in the
     * store (at a start or a take), where an earlier process or node may
     * have sent them. A receiver refusing one with ENOTYPE or ESTATEVER
     * has not looked at what it applied, so such a message is never
     * given up by the deploy wait: kept as a dead letter and retried, it
     * would go under a new number and be applied twice. It waits for
     * the deploy, however long (said once: wait_told). */
    uint64_t unsure_upto;
    int wait_told;
    /* A turn that queued messages was answered with an error although
     * its writes may stand (the lease lapsed before the reply left):
     * what the store holds may go once the unit is served here again. */
    int doubt;
    /* A turn retiring a delivered message failed: its record is still
     * held, below done. The sender goes back to the store's count and
     * delivers from there again (its receiver drops the message, applied
     * already, and it is retired again). */
    int redo;
    /* Cluster mode: messages up to settle_upto, found in the store (at a
     * take, or after a doubt) rather than released by their turn's
     * reply, go once a settling turn of the sender succeeds (settle);
     * settling: the number that turn covers, 0 when none is out. */
    uint64_t settle_upto, settling;
    /* What the operator sees of the message tried last (keel outbox):
     * last_seq failed tries times since tried_ms (wall clock), the last
     * time with last_code and the text last_why. */
    uint64_t last_seq;
    unsigned tries;
    int last_code;
    uint64_t tried_ms;
    char last_why[KEEL_OB_WHY_MAX];
    /* An operator gave up this message (keel outbox give-up): it becomes
     * a dead letter when it is next to go, unless it is delivered
     * before; 0: none. */
    uint64_t give_up;
    ev_timer retry;
    uint16_t idlen;
    uint8_t id[];
};

struct keel_outbox {
    keel_hmap senders;
};

static void pump(struct ob_sender *s);

/* A sender's name in receivers' records and in the index. */
static void sender_h(const char *type, size_t tlen, const void *id,
                     size_t idlen, uint8_t out[OB_H_LEN])
{
    uint8_t buf[1 + KEEL_MAX_TYPE_LEN + KEEL_MAX_ID_LEN];
    XXH128_canonical_t c;

    buf[0] = (uint8_t)tlen;
    memcpy(buf + 1, type, tlen);
    if (idlen > 0)
        memcpy(buf + 1 + tlen, id, idlen);
    XXH128_canonicalFromHash(&c, XXH3_128bits(buf, 1 + tlen + idlen));
    memcpy(out, c.digest, OB_H_LEN);
}

/* Takes a waiting message's record (outbox.h) of len bytes at p apart:
 * 0, or KEEL_ECORRUPT. r->seq is the caller's. */
static int ob_rec_parse(const uint8_t *p, size_t len, struct keel_ob_rec *r)
{
    size_t tlen = len > 0 ? p[0] : 0;

    if (tlen == 0 || len < 1 + tlen + 2)
        return KEEL_ECORRUPT;
    r->idlen = (size_t)p[1 + tlen] << 8 | p[2 + tlen];
    if (len - (1 + tlen + 2) < r->idlen || r->idlen > KEEL_MAX_ID_LEN)
        return KEEL_ECORRUPT;
    r->type = (const char *)p + 1;
    r->tlen = tlen;
    r->id = p + 3 + tlen;
    r->msg = r->id + r->idlen;
    r->msg_len = len - (3 + tlen + r->idlen);
    return 0;
}

/* The index's record type for a capability (not NUL-terminated). */
static void index_type(const char *cap, char out[IDX_TYPE_LEN + 1])
{
    snprintf(out, IDX_TYPE_LEN + 1, "\x01outbox.%016llx",
             (unsigned long long)XXH3_64bits(cap, strlen(cap)));
}

/* ------------------------------------------------------------ turns */

int keel_turn_send(keel_turn *t, const char *type, const void *id,
                   size_t idlen, const void *msg, size_t len)
{
    keel_node *n;
    size_t tlen, rl;
    uint8_t *rec;
    int rc;

    if (t == NULL || type == NULL || (id == NULL && idlen > 0) ||
        (msg == NULL && len > 0))
        return KEEL_EINVAL;
    if (id == NULL)
        id = ""; /* the empty id */
    if (!keel__turn_writable(t))
        return KEEL_EINVAL; /* on_passivate */
    tlen = strlen(type);
    if (tlen == 0)
        return KEEL_EINVAL;
    if (tlen > KEEL_MAX_TYPE_LEN || idlen > KEEL_MAX_ID_LEN)
        return KEEL_ELIMIT;
    n = keel_turn_node(t);
    if (len > n->opts.max_frame)
        return KEEL_ETOOBIG; /* it travels as a call */
    if (keel__type_find(n, type, tlen) == NULL) {
        /* A handler that returns this code as it is would otherwise
         * answer its caller a bare "unknown actor type", which reads as
         * if the caller's own type were unknown. */
        if (!keel__turn_has_error(t))
            keel_turn_error(t, "keel_turn_send: no actor type '%s' is "
                               "registered on this node", type);
        return KEEL_ENOTYPE;
    }
    rl = 1 + tlen + 2 + idlen + len;
    rec = malloc(rl);
    if (rec == NULL)
        return KEEL_ENOMEM;
    rec[0] = (uint8_t)tlen;
    memcpy(rec + 1, type, tlen);
    rec[1 + tlen] = (uint8_t)(idlen >> 8);
    rec[2 + tlen] = (uint8_t)idlen;
    if (idlen > 0)
        memcpy(rec + 3 + tlen, id, idlen);
    if (len > 0)
        memcpy(rec + 3 + tlen + idlen, msg, len);
    rc = keel__outbox_queue(t, rec, rl);
    free(rec);
    return rc;
}

int keel__outbox_queue(keel_turn *t, const void *rec, size_t rl)
{
    struct keel_ob_turn *ob;
    const void *v;
    size_t vl;
    uint64_t next = 0, done = 0;
    uint8_t key[OB_REC_LEN + 8], hdr[16];
    int rc;

    rc = keel__turn_rt_get(t, OB_HDR, OB_HDR_LEN, &v, &vl);
    if (rc == 0 && vl != 16) {
        keel_turn_error(t, "the actor's outbox record is %zu bytes, not 16",
                        vl);
        return KEEL_ECORRUPT;
    }
    if (rc == 0) {
        next = keel_get_be64(v);
        done = keel_get_be64((const uint8_t *)v + 8);
    } else if (rc != KEEL_ENOTFOUND) {
        return rc;
    } else {
        /* A sender's first message, or its first since its records were
         * lost (its unit came without its data: a forgotten node's).
         * Receivers may remember higher numbers from it than any it
         * would count up to from 1, and would drop its new messages as
         * applied: its numbers start from the wall clock (ms, shifted
         * to leave room for 2^20 messages a ms), above any it gave out
         * before. */
        next = done = keel__wall_ms() << OB_FRESH_SHIFT;
    }
    memcpy(key, OB_REC, OB_REC_LEN);
    keel_put_be64(key + OB_REC_LEN, next + 1);
    rc = keel__turn_rt_put(t, key, sizeof key, rec, rl);
    if (rc != 0)
        return rc;
    keel_put_be64(hdr, next + 1);
    keel_put_be64(hdr + 8, done);
    rc = keel__turn_rt_put(t, OB_HDR, OB_HDR_LEN, hdr, sizeof hdr);
    if (rc != 0)
        return rc;
    ob = keel__turn_ob(t);
    ob->hi = next + 1;
    if (next == done)
        ob->index = KEEL_OB_INDEX_PUT; /* the first one waiting */
    return 0;
}

static void in_key(const keel_req *req, uint8_t key[OB_IN_LEN + OB_H_LEN])
{
    memcpy(key, OB_IN, OB_IN_LEN);
    sender_h(req->from->type, req->from->tlen, req->from->id,
             req->from->idlen, key + OB_IN_LEN);
}

int keel__outbox_check(keel_turn *t, const keel_req *req, int *dup)
{
    uint8_t key[OB_IN_LEN + OB_H_LEN];
    const void *v;
    size_t vl;
    int rc;

    *dup = 0;
    in_key(req, key);
    rc = keel__turn_rt_get(t, key, sizeof key, &v, &vl);
    if (rc == KEEL_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (vl != 8) {
        keel_turn_error(t, "the actor's record of a sender is %zu bytes, "
                           "not 8",
                        vl);
        return KEEL_ECORRUPT;
    }
    *dup = keel_get_be64(v) >= req->from->seq;
    return 0;
}

int keel__outbox_applied(keel_turn *t, const keel_req *req)
{
    uint8_t key[OB_IN_LEN + OB_H_LEN], val[8];

    in_key(req, key);
    keel_put_be64(val, req->from->seq);
    return keel__turn_rt_put(t, key, sizeof key, val, sizeof val);
}

static int lowest_cb(const void *key, size_t klen, const void *val,
                     size_t vlen, void *data)
{
    uint64_t *seq = data;

    (void)val;
    (void)vlen;
    if (klen != OB_REC_LEN + 8)
        return 0;
    *seq = keel_get_be64((const uint8_t *)key + OB_REC_LEN);
    return 1;
}

/* The sender's count of retired messages once seq, the lowest one held,
 * is retired in turn t: one below its next message still held, or next
 * when none is. The messages right after seq are looked up one by one
 * (those retired out of order are few: the sender pauses while one of
 * its retiring turns fails); past PROBE_MAX of them, the records are
 * walked. */
#define PROBE_MAX 64
static int count_past(keel_turn *t, uint64_t seq, uint64_t next,
                      uint64_t *done)
{
    uint8_t key[OB_REC_LEN + 8];
    const void *v;
    size_t vl;
    uint64_t q, low = 0;
    int rc;

    memcpy(key, OB_REC, OB_REC_LEN);
    for (q = seq + 1; q <= next && q <= seq + PROBE_MAX; q++) {
        keel_put_be64(key + OB_REC_LEN, q);
        rc = keel__turn_rt_get(t, key, sizeof key, &v, &vl);
        if (rc == 0) {
            *done = q - 1;
            return 0;
        }
        if (rc != KEEL_ENOTFOUND)
            return rc;
    }
    if (q > next) {
        *done = next;
        return 0;
    }
    /* Every record below seq is gone, and seq's is deleted by t. */
    rc = keel__turn_rt_entries(t, OB_REC, OB_REC_LEN, lowest_cb, &low);
    if (rc == 0)
        *done = low != 0 && low <= next ? low - 1 : next;
    return rc;
}

int keel__outbox_op(keel_turn *t, const keel_req *req)
{
    uint8_t key[OB_REC_LEN + 8], hdr[16];
    const void *v, *rv;
    size_t vl, rvl;
    uint64_t seq, next, done;
    unsigned attempts = 0;
    int code, rc;

    if (req->len < OP_HDR ||
        (req->ob_op != KEEL_OB_OP_DEAD && req->len != OP_HDR))
        return KEEL_EINVAL;
    if (req->ob_op == KEEL_OB_OP_SETTLE) {
        /* The header again, as it stands: a write of the unit, so that
         * its reply leaves only once everything before it stands. */
        rc = keel__turn_rt_get(t, OB_HDR, OB_HDR_LEN, &v, &vl);
        if (rc == KEEL_ENOTFOUND)
            return 0; /* nothing was ever queued: nothing to settle */
        if (rc != 0)
            return rc;
        if (vl != 16)
            return KEEL_ECORRUPT;
        memcpy(hdr, v, sizeof hdr);
        return keel__turn_rt_put(t, OB_HDR, OB_HDR_LEN, hdr, sizeof hdr);
    }
    seq = keel_get_be64(req->buf);
    code = -(int)keel_get_be16(req->buf + 8);
    attempts = keel_get_be16(req->buf + 10);
    rc = keel__turn_rt_get(t, OB_HDR, OB_HDR_LEN, &v, &vl);
    if (rc == KEEL_ENOTFOUND)
        return 0; /* nothing was ever queued: nothing to retire */
    if (rc != 0)
        return rc;
    if (vl != 16)
        return KEEL_ECORRUPT;
    next = keel_get_be64(v);
    done = keel_get_be64((const uint8_t *)v + 8);
    if (seq <= done || seq > next)
        return 0; /* retired already (a redelivery's answer) */
    memcpy(key, OB_REC, OB_REC_LEN);
    keel_put_be64(key + OB_REC_LEN, seq);
    if (req->ob_op == KEEL_OB_OP_DEAD) {
        rc = keel__turn_rt_get(t, key, OB_REC_LEN + 8, &rv, &rvl);
        if (rc == 0) {
            /* A copy: the dead letter's writes may move what rv
             * points into. */
            uint8_t *d = malloc(rvl ? rvl : 1);
            if (d == NULL)
                return KEEL_ENOMEM;
            memcpy(d, rv, rvl);
            rc = keel__dl_add(t, KEEL_DL_OUTBOX, code, attempts,
                              (const char *)req->buf + OP_HDR,
                              req->len - OP_HDR, d, rvl);
            free(d);
        }
        if (rc != 0 && rc != KEEL_ENOTFOUND)
            return rc;
    }
    rc = keel__turn_rt_del(t, key, OB_REC_LEN + 8);
    if (rc != 0)
        return rc;
    if (seq != done + 1) {
        /* Retired out of order: an earlier message's retiring turn failed
         * (a full disk, a lapsed lease) while this one's commits. The
         * record goes, the count stays until the earlier one is retired
         * again (its sender delivers it again: redo_later). */
        keel_debug("outbox: message %llu retired before %llu",
                   (unsigned long long)seq, (unsigned long long)done + 1);
        return 0;
    }
    /* The count moves past the messages retired out of order after this
     * one, whose records are gone already. */
    rc = count_past(t, seq, next, &done);
    if (rc != 0)
        return rc;
    keel_put_be64(hdr, next);
    keel_put_be64(hdr + 8, done);
    rc = keel__turn_rt_put(t, OB_HDR, OB_HDR_LEN, hdr, sizeof hdr);
    if (rc == 0 && done == next)
        keel__turn_ob(t)->index = KEEL_OB_INDEX_DEL; /* none waits now */
    return rc;
}

int keel__outbox_flush(keel_node *n, keel_batch *b, keel_actor *a)
{
    char it[IDX_TYPE_LEN + 1];
    uint8_t h[OB_H_LEN], key[KEEL_KEY_MAX];
    uint8_t val[1 + KEEL_MAX_TYPE_LEN + KEEL_MAX_ID_LEN];
    size_t tlen = strlen(a->type->name);
    int kl;

    (void)n;
    index_type(a->type->capability, it);
    sender_h(a->type->name, tlen, a->id, a->idlen, h);
    kl = keel_key_encode(key, (uint16_t)a->shard, it, IDX_TYPE_LEN, h,
                         sizeof h, NULL, 0);
    if (kl < 0)
        return kl;
    if (a->ob_index == KEEL_OB_INDEX_DEL)
        return keel_batch_del(b, key, (size_t)kl);
    val[0] = (uint8_t)tlen;
    memcpy(val + 1, a->type->name, tlen);
    memcpy(val + 1 + tlen, a->id, a->idlen);
    return keel_batch_put(b, key, (size_t)kl, 1, val, 1 + tlen + a->idlen);
}

/* ---------------------------------------------------------- senders */

static uint64_t sender_hash(const struct keel_type_entry *te, const void *id,
                            size_t idlen)
{
    return XXH3_64bits_withSeed(id, idlen, (uint64_t)te->index + 1);
}

struct sender_key {
    const struct keel_type_entry *te;
    const void *id;
    size_t idlen;
};

static int sender_eq(const void *item, const void *key)
{
    const struct ob_sender *s = item;
    const struct sender_key *k = key;

    return s->te == k->te && s->idlen == k->idlen &&
           memcmp(s->id, k->id, k->idlen) == 0;
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    pump(w->data);
}

/* Reads what the store holds of a sender's outbox: its next and done. */
static int header_read(keel_node *n, const struct ob_sender *s,
                       uint64_t *next, uint64_t *done)
{
    keel_store_read *r;
    keel_record rec;
    uint8_t key[KEEL_KEY_MAX];
    int kl, rc;

    *next = *done = 0;
    kl = keel_key_encode(key, (uint16_t)s->shard, s->te->name,
                         strlen(s->te->name), s->id, s->idlen, OB_HDR,
                         OB_HDR_LEN);
    if (kl < 0)
        return kl;
    rc = keel_store_read_begin(n->store, &r);
    if (rc != 0)
        return rc;
    rc = keel_store_get(r, key, (size_t)kl, &rec);
    if (rc == 0 && rec.len == 16) {
        *next = keel_get_be64(rec.data);
        *done = keel_get_be64((const uint8_t *)rec.data + 8);
    } else if (rc == 0) {
        rc = KEEL_ECORRUPT;
    }
    keel_store_read_end(r);
    return rc == KEEL_ENOTFOUND ? 0 : rc;
}

/* The sender this node delivers for, or NULL. */
static struct ob_sender *sender_find(keel_node *n,
                                     const struct keel_type_entry *te,
                                     const void *id, size_t idlen)
{
    struct sender_key k = {te, id, idlen};

    return keel_hmap_get(&n->outbox->senders, sender_hash(te, id, idlen), &k,
                         sender_eq);
}

/* Messages of s up to this one may go, or will once settled. */
static uint64_t may_go_upto(const struct ob_sender *s)
{
    return s->released > s->settle_upto ? s->released : s->settle_upto;
}

static struct ob_sender *sender_get(keel_node *n, struct keel_type_entry *te,
                                    const void *id, size_t idlen,
                                    uint32_t shard)
{
    uint64_t h, next, done;
    struct ob_sender *s = sender_find(n, te, id, idlen);

    if (s != NULL)
        return s;
    h = sender_hash(te, id, idlen);
    s = calloc(1, sizeof *s + idlen);
    if (s == NULL)
        return NULL;
    s->hash = h;
    s->n = n;
    s->te = te;
    s->shard = shard;
    s->idlen = (uint16_t)idlen;
    if (idlen > 0)
        memcpy(s->id, id, idlen);
    ev_timer_init(&s->retry, retry_cb, 0, 0);
    s->retry.data = s;
    if (header_read(n, s, &next, &done) == 0)
        s->done = done;
    if (keel_hmap_put(&n->outbox->senders, h, s) != 0) {
        free(s);
        return NULL;
    }
    STAT_ADD(n, outbox_senders, 1);
    return s;
}

/* Forgets a sender with nothing going on: the index finds it again. */
static void sender_drop_idle(struct ob_sender *s)
{
    keel_node *n = s->n;

    if (s->inflight != 0 || s->acking != 0 || ev_is_active(&s->retry))
        return;
    keel_hmap_remove(&n->outbox->senders, s->hash, s);
    STAT_SUB(n, outbox_senders, 1);
    free(s);
}

/* The next pause after one of ms: RETRY_MIN_MS, doubling up to
 * RETRY_MAX_MS. */
static unsigned doubled(unsigned ms)
{
    ms = ms == 0 ? RETRY_MIN_MS : ms * 2;
    return ms > RETRY_MAX_MS ? RETRY_MAX_MS : ms;
}

static void pause_ms(struct ob_sender *s, unsigned ms)
{
    ev_timer_set(&s->retry, ms / 1000.0, 0);
    ev_timer_start(s->n->loop, &s->retry);
}

static void retry_later(struct ob_sender *s)
{
    s->backoff_ms = doubled(s->backoff_ms);
    pause_ms(s, s->backoff_ms);
}

/* A message of s delivered but not retired (its retiring turn failed, or
 * could not be submitted): the sender goes back to the store's count after
 * a pause, and delivers from there again (redo, in pump). */
static void redo_later(struct ob_sender *s)
{
    s->redo = 1;
    s->redo_ms = doubled(s->redo_ms);
    if (!s->n->stopping && !ev_is_active(&s->retry))
        pause_ms(s, s->redo_ms);
}

static void ack_cb(int status, const void *reply, size_t len, void *data)
{
    struct ob_sender *s = data;

    (void)reply;
    (void)len;
    s->acking--;
    if (status != 0) {
        keel_debug("outbox: retiring a message of %s failed: %s; "
                   "delivering it again",
                   s->te->name, keel_strerror(status));
        redo_later(s);
        return;
    }
    s->redo_ms = 0;
    pump(s);
}

/* A dead letter not kept: the message is the next to go again (its
 * receiver refuses it again, and it is kept then). */
static void dead_undo(struct ob_sender *s, uint64_t seq)
{
    s->dead_seq = 0;
    if (s->done == seq)
        s->done = seq - 1;
    s->fails = 0;
    if (!s->n->stopping && !ev_is_active(&s->retry))
        retry_later(s);
}

static void dead_ack_cb(int status, const void *reply, size_t len,
                        void *data)
{
    struct ob_sender *s = data;
    uint64_t seq = s->dead_seq;

    (void)reply;
    (void)len;
    s->acking--;
    if (status != 0) {
        /* Its turn may not have committed (EINDOUBT: it may have; then
         * the retiring turn of the next attempt finds it retired). */
        keel_debug("outbox: keeping message %llu of %s as a dead letter "
                   "failed: %s; sending it again",
                   (unsigned long long)seq, s->te->name,
                   keel_strerror(status));
        dead_undo(s, seq);
        return;
    }
    s->dead_seq = 0;
    pump(s);
}

/* Submits req, a runtime turn of s (op, answered to cb): counted in
 * s->acking until cb runs. Returns 0, or the submit's code (req freed,
 * cb never called). */
static int op_submit(struct ob_sender *s, keel_req *req, int op,
                     keel_call_cb cb)
{
    int rc;

    req->origin = REQ_LOCAL;
    req->is_cast = 1;
    req->ob_op = (uint8_t)op;
    req->u.local.cb = cb;
    req->u.local.data = s;
    s->acking++;
    rc = keel__submit(s->n, s->te, s->id, s->idlen, req);
    if (rc != 0) {
        s->acking--;
        keel__req_free(s->n, req);
    }
    return rc;
}

/* ------------------------------------------------------------ settle */

/* Messages a node finds in its store, rather than released by the reply
 * of the turn that queued them, may come from a commit no in-sync backup
 * holds: a primary that restarted after a crash and took its units back
 * at the same epoch (its backups are dropped before any reply of the
 * unit leaves, but that takes a map write), or a turn answered in doubt
 * whose batch the backups never acknowledged. Delivered, and the primary
 * lost before its backups had the batch, the receiver would have applied
 * a message of a turn that no longer exists, and would take the sender's
 * next real message, which gets the same number, for one it applied
 * (docs/design.md, "Delivery"). So in cluster mode such messages go once
 * a write of the sender succeeds: a reply leaves only once every backup
 * in sync holds the unit's writes before it (or was dropped). */

static void settle_cb(int status, const void *reply, size_t len,
                      void *data)
{
    struct ob_sender *s = data;
    uint64_t upto = s->settling;

    (void)reply;
    (void)len;
    s->acking--;
    s->settling = 0;
    if (status != 0) {
        keel_debug("outbox: settling the messages of %s failed: %s; "
                   "trying again",
                   s->te->name, keel_strerror(status));
        if (!s->n->stopping && !ev_is_active(&s->retry))
            retry_later(s);
        return;
    }
    if (upto > s->released)
        s->released = upto;
    s->backoff_ms = 0;
    pump(s);
}

/* Sends the settling turn of s for the messages up to s->settle_upto.
 * Returns 0, or nonzero when it could not go (tried again later). */
static int settle(struct ob_sender *s)
{
    keel_req *req = keel__req_alloc(s->n, OP_HDR);
    int rc;

    if (req == NULL)
        return KEEL_ENOMEM;
    memset(req->buf, 0, OP_HDR);
    req->len = OP_HDR;
    s->settling = s->settle_upto;
    rc = op_submit(s, req, KEEL_OB_OP_SETTLE, settle_cb);
    if (rc != 0)
        s->settling = 0;
    return rc;
}

/* Messages up to next, found in the store, may go: at once standalone
 * (no other copy can be promoted over this one), in cluster mode once
 * settled. */
static void store_holds(struct ob_sender *s, uint64_t next)
{
    if (next > s->unsure_upto)
        s->unsure_upto = next;
    if (s->n->cluster == NULL) {
        if (next > s->released)
            s->released = next;
    } else if (next > s->settle_upto) {
        s->settle_upto = next;
    }
}

/* Retires message seq of s: a runtime turn of the sender deletes it (and
 * keeps it as a dead letter with code, after attempts refusals, the last
 * one saying why, when op is KEEL_OB_OP_DEAD). */
static void retire(struct ob_sender *s, uint64_t seq, int op, int code,
                   unsigned attempts, const char *why, size_t why_len)
{
    keel_req *req;
    int rc;

    if (why_len > KEEL_DL_WHY_MAX)
        why_len = KEEL_DL_WHY_MAX;
    req = keel__req_alloc(s->n, OP_HDR + why_len);
    s->done = seq;
    s->fails = 0;
    if (op == KEEL_OB_OP_DEAD)
        s->dead_seq = seq;
    if (req == NULL) {
        if (op == KEEL_OB_OP_DEAD)
            dead_undo(s, seq);
        else
            redo_later(s); /* delivered again: the receiver drops it */
        return;
    }
    keel_put_be64(req->buf, seq);
    keel_put_be16(req->buf + 8, (uint16_t)-code);
    keel_put_be16(req->buf + 10,
                  (uint16_t)(attempts > 0xffff ? 0xffff : attempts));
    if (why_len > 0)
        memcpy(req->buf + OP_HDR, why, why_len);
    req->len = (uint32_t)(OP_HDR + why_len);
    rc = op_submit(s, req, op, op == KEEL_OB_OP_DEAD ? dead_ack_cb : ack_cb);
    if (rc != 0 && op == KEEL_OB_OP_DEAD)
        dead_undo(s, seq);
    else if (rc != 0)
        redo_later(s);
}

static void dead_letter(struct ob_sender *s, uint64_t seq, int status,
                        unsigned attempts, const char *why, size_t why_len)
{
    keel_warn("outbox: message %llu of %s '%.*s' kept as a dead letter "
              "after %u attempt%s: %s: %.*s",
              (unsigned long long)seq, s->te->name, (int)s->idlen,
              (const char *)s->id, attempts, attempts == 1 ? "" : "s",
              keel_err_name(status), (int)why_len, why);
    STAT_ADD(s->n, outbox_dead, 1);
    retire(s, seq, KEEL_OB_OP_DEAD, status, attempts, why, why_len);
}

/* Message seq of s cannot be taken before the nodes run the same types
 * (a deploy under way, or a rollback): what says why, until what it
 * waits for. It goes again after a pause and counts no attempt; a line
 * says so once for each kind of wait. Returns 1 when it has waited
 * longer than the deploy wait (keel_node_options.deploy_wait_ms): then
 * it is the caller's to keep as a dead letter, with the text *why (of
 * *why_len bytes) says, and nothing is scheduled. */
static int wait_deploy(struct ob_sender *s, uint64_t seq, int status,
                       const char *what, const char *until,
                       const char *text, size_t tlen, char *why,
                       size_t why_size, size_t *why_len)
{
    ev_tstamp now = ev_now(s->n->loop);
    double bound = keel__deploy_wait_ms(s->n) / 1000.0;

    if (s->wait_seq != seq) {
        s->wait_seq = seq;
        s->wait_since = now;
        s->wait_tries = 0;
        s->wait_told = 0;
    }
    s->wait_tries++;
    if (now - s->wait_since >= bound && seq <= s->unsure_upto &&
        !s->wait_told) {
        s->wait_told = 1;
        keel_warn("outbox: message %llu of %s '%.*s' has waited %.0f s, "
                  "the deploy wait, but it is not kept as a dead letter: "
                  "its receiver may have applied it already (an earlier "
                  "attempt's outcome is unknown), and a retry would apply "
                  "it again; it waits until its receiver's node %s (or "
                  "an operator gives it up: keel outbox give-up)",
                  (unsigned long long)seq, s->te->name, (int)s->idlen,
                  (const char *)s->id, now - s->wait_since, until);
    }
    if (now - s->wait_since >= bound && seq > s->unsure_upto) {
        int wl = snprintf(why, why_size,
                          "%s (%.*s) for %.0f s, the deploy wait "
                          "(--deploy-wait-ms)",
                          what, (int)tlen, text, now - s->wait_since);
        *why_len = wl < 0 ? 0 : (size_t)wl < why_size ? (size_t)wl
                                                        : why_size - 1;
        s->wait_seq = 0;
        s->fail_code = 0;
        s->backoff_ms = 0;
        return 1;
    }
    if (s->fail_code != status)
        keel_warn("outbox: message %llu of %s '%.*s': %s (%.*s); sending "
                  "it again until it %s (every node must run the same "
                  "types)",
                  (unsigned long long)seq, s->te->name, (int)s->idlen,
                  (const char *)s->id, what, (int)tlen, text, until);
    s->fail_code = status;
    s->fails = 0;
    if (s->backoff_ms < REFUSED_RETRY_MS / 2)
        s->backoff_ms = REFUSED_RETRY_MS / 2;
    if (!s->n->stopping)
        retry_later(s);
    return 0;
}

/* Message seq of s failed with status (and text, len bytes): kept for
 * the operator's view. */
static void tried(struct ob_sender *s, uint64_t seq, int status,
                  const void *text, size_t len)
{
    if (s->last_seq != seq) {
        s->last_seq = seq;
        s->tries = 0;
        s->tried_ms = keel__wall_ms();
    }
    s->tries++;
    s->last_code = status;
    if (text == NULL)
        len = 0;
    if (len >= sizeof s->last_why)
        len = sizeof s->last_why - 1;
    if (len > 0)
        memcpy(s->last_why, text, len);
    s->last_why[len] = '\0';
}

static void deliver_cb(int status, const void *reply, size_t len, void *data)
{
    struct ob_sender *s = data;
    uint64_t seq = s->inflight;

    s->inflight = 0;
    if (status == 0) {
        s->backoff_ms = 0;
        if (s->give_up == seq)
            s->give_up = 0; /* delivered: delivered again by a redo, never
                             * a dead letter */
        retire(s, seq, KEEL_OB_OP_DONE, 0, 0, NULL, 0);
        pump(s);
        return;
    }
    tried(s, seq, status, reply, len);
    if (keel__dl_transient(status)) {
        keel_debug("outbox: message %llu of %s: %s; sending it again",
                   (unsigned long long)seq, s->te->name,
                   keel_strerror(status));
        if (!keel__dl_not_run(status) && seq > s->unsure_upto)
            s->unsure_upto = seq;
        if (!s->n->stopping)
            retry_later(s);
        return;
    }
    if (status == KEEL_ESTATEVER ||
        (status == KEEL_ENOTYPE && s->n->cluster != NULL)) {
        /* Not a verdict on the message: a deploy under way (or a
         * rollback). ENOTYPE: the type is registered here (this node
         * queued the message and routes it), so the node that owns the
         * receiver does not load it (a node started without a plugin).
         * ESTATEVER: the receiver's state was written by a version of its
         * type the code of its node cannot read. That passes once every
         * node runs the same types; until then the message waits, as for
         * a unit moving, and counts no attempt. */
        char why[KEEL_DL_WHY_MAX];
        size_t wl;

        if (wait_deploy(s, seq, status,
                        status == KEEL_ENOTYPE
                            ? "the receiver's node does not register its "
                              "type"
                            : "the receiver's state is of a version its "
                              "node's code cannot read",
                        status == KEEL_ENOTYPE ? "does" : "can",
                        reply != NULL ? (const char *)reply : "",
                        reply != NULL ? len : 0, why, sizeof why, &wl)) {
            dead_letter(s, seq, status, s->wait_tries, why, wl);
            pump(s);
        }
        return;
    }
    /* The receiver's answer to this message. Refused the same way often
     * enough (or its type is unknown there: no attempt can change that),
     * it is a dead letter; otherwise it goes again after a pause, which
     * lets a receiver that refused for a passing reason of its own (an
     * error its handler returns while something it needs is missing)
     * take it. */
    if (status != s->fail_code)
        s->fails = 0;
    s->fail_code = status;
    s->fails++;
    if (status != KEEL_ENOTYPE && s->fails < keel__dl_after(s->n)) {
        keel_debug("outbox: message %llu of %s refused (%u of %u): %s",
                   (unsigned long long)seq, s->te->name, s->fails,
                   keel__dl_after(s->n), keel_strerror(status));
        /* A second at least, so that what the handler waits for has
         * time to come. */
        if (s->backoff_ms < REFUSED_RETRY_MS / 2)
            s->backoff_ms = REFUSED_RETRY_MS / 2;
        if (!s->n->stopping)
            retry_later(s);
        return;
    }
    s->backoff_ms = 0;
    dead_letter(s, seq, status, s->fails, reply, len);
    pump(s);
}

/* Message seq, which an operator gave up (keel__outbox_give_up), is the
 * next to go: it is kept as a dead letter, saying whether its receiver
 * may have applied it. */
static void given_up(struct ob_sender *s, uint64_t seq)
{
    char why[KEEL_DL_WHY_MAX];
    int had = s->last_seq == seq && s->last_code != 0;
    int wl = snprintf(why, sizeof why,
                      "given up by an operator after %u failed attempt%s%s%s"
                      "; its receiver %s",
                      had ? s->tries : 0, had && s->tries == 1 ? "" : "s",
                      had ? ", the last " : "",
                      had ? keel_err_name(s->last_code) : "",
                      seq <= s->unsure_upto
                          ? "may have applied it (an attempt's outcome is "
                            "unknown): a retry may apply it twice"
                          : "has not applied it");

    keel_warn("outbox: message %llu of %s '%.*s' given up by an operator",
              (unsigned long long)seq, s->te->name, (int)s->idlen,
              (const char *)s->id);
    s->backoff_ms = 0;
    s->wait_seq = 0;
    s->fail_code = 0;
    dead_letter(s, seq, had ? s->last_code : KEEL_EUNAVAIL,
                had ? s->tries : 0, why,
                wl < 0 ? 0 : (size_t)wl < sizeof why ? (size_t)wl
                                                     : sizeof why - 1);
}

struct next_find {
    size_t plen;
    uint64_t after, upto, seq;
    uint8_t *val;
    size_t vlen;
    int err;
};

static int next_cb(const uint8_t *key, size_t klen, const keel_record *rec,
                   void *data)
{
    struct next_find *f = data;
    uint64_t seq;

    if (klen != f->plen + 8)
        return 0;
    seq = keel_get_be64(key + f->plen);
    if (seq <= f->after)
        return 0; /* retired; its deletion is on its way */
    if (seq > f->upto)
        return 1;
    f->val = malloc(rec->len ? rec->len : 1);
    if (f->val == NULL) {
        f->err = KEEL_ENOMEM;
        return 1;
    }
    memcpy(f->val, rec->data, rec->len);
    f->vlen = rec->len;
    f->seq = seq;
    return 1;
}

/* The sender's lowest message that may go: *f filled, f->val NULL when
 * there is none. */
static int next_find(keel_node *n, struct ob_sender *s, struct next_find *f)
{
    uint8_t prefix[KEEL_KEY_MAX];
    keel_store_read *r;
    int pl, rc;

    memset(f, 0, sizeof *f);
    pl = keel_key_encode(prefix, (uint16_t)s->shard, s->te->name,
                         strlen(s->te->name), s->id, s->idlen, OB_REC,
                         OB_REC_LEN);
    if (pl < 0)
        return pl;
    f->plen = (size_t)pl;
    f->after = s->done;
    f->upto = s->released;
    rc = keel_store_read_begin(n->store, &r);
    if (rc != 0)
        return rc;
    rc = keel_store_scan(r, prefix, (size_t)pl, next_cb, f);
    keel_store_read_end(r);
    if (f->err != 0)
        rc = f->err;
    else if (rc > 0)
        rc = 0;
    if (rc != 0) {
        free(f->val);
        f->val = NULL;
    }
    return rc;
}

/* Sends the sender's next message, if one may go. */
static void pump(struct ob_sender *s)
{
    keel_node *n = s->n;

    while (!n->stopping && s->inflight == 0 && s->dead_seq == 0 &&
           !ev_is_active(&s->retry)) {
        keel_placement pl;
        struct next_find f;
        struct keel_type_entry *te;
        struct keel_ob_from *from;
        keel_req *req;
        struct keel_ob_rec rec;
        int rc;

        keel_coord_placement(n->coord, s->te->capability, s->shard, &pl);
        if (pl.state != KEEL_PLACEMENT_LOCAL ||
            (n->cluster != NULL && !keel__cluster_rt_serving(n))) {
            /* Not forgotten while this node still holds the unit
             * (fenced with its session alive, a release that may be
             * called off): nobody else delivers these, and nothing finds
             * them again when the unit is served here once more. */
            s->not_local++;
            if (pl.state == KEEL_PLACEMENT_REMOTE ||
                (s->not_local > NOT_LOCAL_MAX &&
                 !keel__cluster_rt_holds(n, s->te->capability, s->shard)))
                sender_drop_idle(s);
            else
                retry_later(s);
            return;
        }
        s->not_local = 0;
        if (s->doubt) {
            uint64_t next, done;
            if (header_read(n, s, &next, &done) == 0)
                store_holds(s, next);
            s->doubt = 0;
        }
        if (s->redo) {
            /* Messages whose retiring turns are still out are found
             * too, and delivered again: their receivers drop them. */
            uint64_t next, done;
            if (header_read(n, s, &next, &done) != 0) {
                retry_later(s);
                return;
            }
            /* Delivered already, some of them applied: a refusal
             * now would not say they were not. */
            if (s->done > s->unsure_upto)
                s->unsure_upto = s->done;
            if (done < s->done)
                s->done = done;
            s->redo = 0;
        }
        if (s->settle_upto > s->released && s->settling == 0 &&
            settle(s) != 0) {
            retry_later(s);
            return;
        }
        rc = next_find(n, s, &f);
        if (rc != 0) {
            keel_warn("outbox: reading the outbox of %s: %s", s->te->name,
                      keel_strerror(rc));
            retry_later(s);
            return;
        }
        if (f.val == NULL) {
            if (s->settling == 0)
                sender_drop_idle(s);
            return;
        }
        if (s->give_up != 0 && f.seq > s->give_up)
            s->give_up = 0; /* past it: delivered, or its dead letter kept */
        if (s->give_up != 0 && f.seq == s->give_up) {
            /* Kept until its dead letter commits: if that fails
             * (dead_undo), it is given up again. */
            free(f.val);
            given_up(s, f.seq);
            continue;
        }
        if (ob_rec_parse(f.val, f.vlen, &rec) != 0) {
            free(f.val);
            dead_letter(s, f.seq, KEEL_ECORRUPT, 0, "unreadable record", 17);
            continue;
        }
        te = keel__type_find(n, rec.type, rec.tlen);
        if (te == NULL) {
            char why[KEEL_MAX_TYPE_LEN + 32];
            int wl = snprintf(why, sizeof why, "unknown actor type '%.*s'",
                              (int)rec.tlen, rec.type);
            if (wl < 0 || (size_t)wl >= sizeof why)
                wl = wl < 0 ? 0 : (int)sizeof why - 1; /* a corrupt record */
            free(f.val);
            tried(s, f.seq, KEEL_ENOTYPE, why, (size_t)wl);
            if (n->cluster != NULL || f.seq <= s->unsure_upto) {
                /* The node that queued it had the type: this one, which
                 * serves the sender's unit now, runs other code (a
                 * deploy under way, a rollback). The message waits for
                 * the types to agree, or for the unit to move. So does,
                 * standalone, one the receiver may have applied (found
                 * in the store: the node started again without the
                 * type), which a dead letter retried would apply
                 * twice. */
                char dwhy[KEEL_DL_WHY_MAX];
                size_t dl;

                if (wait_deploy(s, f.seq, KEEL_ENOTYPE,
                                "this node does not register the "
                                "receiver's type",
                                "does", why, (size_t)wl, dwhy, sizeof dwhy,
                                &dl)) {
                    dead_letter(s, f.seq, KEEL_ENOTYPE, s->wait_tries, dwhy,
                                dl);
                    continue;
                }
                return;
            }
            dead_letter(s, f.seq, KEEL_ENOTYPE, 0, why, (size_t)wl);
            continue;
        }
        req = keel__req_alloc(n, rec.msg_len);
        from = malloc(sizeof *from);
        if (req == NULL || from == NULL) {
            if (req != NULL)
                keel__req_free(n, req);
            free(from);
            free(f.val);
            retry_later(s);
            return;
        }
        keel__req_set(req, rec.msg, rec.msg_len);
        from->seq = f.seq;
        from->tlen = (uint8_t)strlen(s->te->name);
        memcpy(from->type, s->te->name, from->tlen + 1u);
        from->idlen = s->idlen;
        memcpy(from->id, s->id, s->idlen);
        req->from = from;
        req->origin = REQ_LOCAL;
        req->is_cast = 1;
        req->u.local.cb = deliver_cb;
        req->u.local.data = s;
        s->inflight = f.seq;
        rc = keel__submit(n, te, rec.id, rec.idlen, req);
        free(f.val);
        if (rc != 0) {
            keel__req_free(n, req);
            s->inflight = 0;
            if (keel__dl_transient(rc)) {
                retry_later(s);
                return;
            }
            dead_letter(s, f.seq, rc, 0, keel_strerror(rc),
                        strlen(keel_strerror(rc)));
            continue;
        }
        STAT_ADD(n, outbox_sent, 1);
        return;
    }
}

void keel__outbox_released(keel_node *n, const keel_req *req)
{
    keel_actor *a = req->actor;
    struct ob_sender *s = sender_get(n, a->type, a->id, a->idlen, a->shard);

    if (s == NULL) {
        keel_warn("outbox: out of memory; %s's messages wait for the next "
                  "start",
                  a->type->name);
        return;
    }
    if (req->ob_hi > s->released)
        s->released = req->ob_hi;
    pump(s);
}

void keel__outbox_doubt(keel_node *n, const keel_req *req)
{
    keel_actor *a = req->actor;
    struct ob_sender *s = sender_get(n, a->type, a->id, a->idlen, a->shard);

    if (s == NULL)
        return; /* found at the unit's next take */
    s->doubt = 1;
    /* Looked at after a pause: the lapse that failed the reply is
     * likely still on now. */
    if (s->inflight == 0 && !ev_is_active(&s->retry)) {
        ev_timer_set(&s->retry, 1.0, 0);
        ev_timer_start(n->loop, &s->retry);
    }
}

/* ------------------------------------------------------------ operators */

void keel__outbox_view(keel_node *n, const keel_actor *a,
                       struct keel_ob_view *v)
{
    struct ob_sender *s;

    memset(v, 0, sizeof *v);
    if (n->outbox == NULL ||
        (s = sender_find(n, a->type, a->id, a->idlen)) == NULL)
        return;
    v->known = 1;
    v->done = s->done;
    v->released = may_go_upto(s);
    v->inflight = s->inflight;
    v->unsure_upto = s->unsure_upto;
    v->wait_seq = s->wait_seq;
    v->give_up = s->give_up;
    v->dead_seq = s->dead_seq;
    v->last_seq = s->last_seq;
    v->tries = s->tries;
    v->last_code = s->last_code;
    v->tried_ms = s->tried_ms;
    v->last_why = s->last_why;
}

int keel__outbox_give_up(keel_node *n, keel_actor *a, uint64_t seq)
{
    struct ob_sender *s;

    if (n->outbox == NULL ||
        (s = sender_find(n, a->type, a->id, a->idlen)) == NULL ||
        s->dead_seq != 0 || seq > may_go_upto(s))
        return KEEL_EUNAVAIL;
    s->give_up = seq;
    /* Looked at once this turn is over, unless an attempt or a retiring
     * turn is out: their answers look at it. */
    if (s->inflight == 0 && s->dead_seq == 0) {
        ev_timer_stop(n->loop, &s->retry);
        s->backoff_ms = 0;
        pause_ms(s, 0);
    }
    return 0;
}

struct rec_walk {
    keel_ob_rec_fn fn;
    void *data;
    int err;
};

static int rec_walk_cb(const void *key, size_t klen, const void *val,
                       size_t vlen, void *data)
{
    struct rec_walk *w = data;
    struct keel_ob_rec r;

    if (klen != OB_REC_LEN + 8 || memcmp(key, OB_REC, OB_REC_LEN) != 0)
        return 0;
    r.seq = keel_get_be64((const uint8_t *)key + OB_REC_LEN);
    if (ob_rec_parse(val, vlen, &r) != 0) {
        w->err = KEEL_ECORRUPT;
        return 1;
    }
    return w->fn(&r, w->data);
}

int keel__outbox_records(keel_turn *t, keel_ob_rec_fn fn, void *data)
{
    struct rec_walk w = {fn, data, 0};
    int rc = keel__turn_rt_entries(t, OB_REC, OB_REC_LEN, rec_walk_cb, &w);

    if (rc == 0)
        rc = w.err;
    return rc;
}

/* ------------------------------------------------------------- units */

struct idx_list {
    struct idx_item {
        uint8_t v[1 + KEEL_MAX_TYPE_LEN + KEEL_MAX_ID_LEN];
        size_t len;
    } *items;
    size_t n, cap;
    int err;
};

static int idx_cb(const uint8_t *key, size_t klen, const keel_record *rec,
                  void *data)
{
    struct idx_list *l = data;

    (void)key;
    (void)klen;
    if (rec->len < 2 || rec->len > sizeof l->items[0].v)
        return 0; /* not one of ours */
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct idx_item *v = realloc(l->items, cap * sizeof *v);
        if (v == NULL) {
            l->err = KEEL_ENOMEM;
            return 1;
        }
        l->items = v;
        l->cap = cap;
    }
    memcpy(l->items[l->n].v, rec->data, rec->len);
    l->items[l->n].len = rec->len;
    l->n++;
    return 0;
}

/* Starts delivery for every sender the unit's index lists. What the store
 * holds when the unit is taken may all go, once settled (store_holds): it
 * was committed by an owner before this one, or by this one before it
 * restarted. */
static void unit_scan(keel_node *n, const char *cap, uint32_t shard)
{
    char it[IDX_TYPE_LEN + 1];
    uint8_t prefix[KEEL_KEY_MAX];
    struct idx_list l;
    keel_store_read *r;
    size_t i;
    int pl, rc;

    memset(&l, 0, sizeof l);
    index_type(cap, it);
    pl = keel_key_encode(prefix, (uint16_t)shard, it, IDX_TYPE_LEN, NULL, 0,
                         NULL, 0);
    if (pl < 0)
        return;
    pl = 2 + 1 + IDX_TYPE_LEN; /* shard | len(type) | type */
    rc = keel_store_read_begin(n->store, &r);
    if (rc != 0) {
        keel_warn("outbox: reading the index of unit (%s, %u): %s",
                  keel_cap_name(cap),
                  shard, keel_strerror(rc));
        return;
    }
    rc = keel_store_scan(r, prefix, (size_t)pl, idx_cb, &l);
    keel_store_read_end(r);
    if (l.err != 0)
        rc = l.err;
    if (rc < 0)
        keel_warn("outbox: reading the index of unit (%s, %u): %s",
                  keel_cap_name(cap),
                  shard, keel_strerror(rc));
    for (i = 0; i < l.n; i++) {
        const uint8_t *v = l.items[i].v;
        size_t tlen = v[0], idlen;
        struct keel_type_entry *te;
        struct ob_sender *s;
        uint64_t next, done;

        if (tlen == 0 || 1 + tlen > l.items[i].len)
            continue;
        idlen = l.items[i].len - 1 - tlen;
        te = keel__type_find(n, v + 1, tlen);
        if (te == NULL) {
            keel_warn("outbox: messages of an actor of type '%.*s', not "
                      "known here, wait in unit (%s, %u)",
                      (int)tlen, (const char *)v + 1, keel_cap_name(cap),
                      shard);
            continue;
        }
        s = sender_get(n, te, v + 1 + tlen, idlen, shard);
        if (s == NULL)
            continue;
        if (header_read(n, s, &next, &done) == 0)
            store_holds(s, next);
        s->not_local = 0;
        pump(s);
    }
    free(l.items);
}

void keel__outbox_unit_taken(keel_node *n, const char *cap, uint32_t shard)
{
    if (n->outbox != NULL)
        unit_scan(n, cap, shard);
}

void keel__outbox_start(keel_node *n)
{
    if (n->cluster != NULL)
        return; /* units are taken one by one (keel__outbox_unit_taken) */
    keel__each_unit(n, unit_scan);
}

int keel__outbox_init(keel_node *n)
{
    n->outbox = calloc(1, sizeof *n->outbox);
    if (n->outbox == NULL)
        return KEEL_ENOMEM;
    keel_hmap_init(&n->outbox->senders);
    return 0;
}

void keel__outbox_free(keel_node *n)
{
    size_t pos = 0;
    void *item;

    if (n->outbox == NULL)
        return;
    while (keel_hmap_next(&n->outbox->senders, &pos, &item)) {
        struct ob_sender *s = item;
        if (n->loop != NULL)
            ev_timer_stop(n->loop, &s->retry);
        free(s);
    }
    keel_hmap_free(&n->outbox->senders);
    STAT_SET(n, outbox_senders, 0);
    free(n->outbox);
    n->outbox = NULL;
}
