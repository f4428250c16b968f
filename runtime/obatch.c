/* Outbox messages to another node in batches (see obatch.h). */
#include "runtime/obatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "runtime/outbox.h"

/* A node that refused a batch frame gets single CASTs this long, then is
 * tried again: it may have been upgraded meanwhile. Each try costs the
 * link to it (an older node closes the connection after the error). */
#define OBATCH_LEGACY_S 300.0
/* The most of a message's reply or error text a result carries: casts
 * reply nothing, and error texts are for the sender's log. */
#define OBATCH_TEXT_MAX 256u

/* A queued message: its bytes are items[i].len at off in its peer's
 * buffer, an item already encoded. */
struct ob_item {
    keel_peer_cb cb;
    void *arg;
    uint64_t deadline_ns;
    size_t off, len;
};

struct ob_peer {
    struct ob_peer *next;
    char addr[256];
    double legacy_until; /* ev_now before which it takes no batches */
    uint8_t *buf;
    size_t blen, bcap;
    struct ob_item *items;
    size_t nitems, icap;
};

struct keel_obatch {
    keel_node *n;
    keel_peers *peers;
    struct ob_peer *list;
    size_t queued;
    int flushing;
    /* The end of the round, before the loop waits: what was queued in it
     * leaves together. What is queued after that watcher ran (by another
     * one of the same phase) leaves on the timer, due at once, which
     * also keeps the loop from waiting meanwhile. */
    ev_prepare flush;
    ev_timer flush_late;
};

/* A frame that left: whose callbacks its answer goes to. */
struct ob_frame {
    struct ob_peer *pr;
    unsigned count;
    struct ob_call {
        keel_peer_cb cb;
        void *arg;
    } calls[];
};

static struct ob_peer *peer_find(keel_obatch *ob, const char *addr, int make)
{
    struct ob_peer *pr;

    for (pr = ob->list; pr != NULL; pr = pr->next)
        if (strcmp(pr->addr, addr) == 0)
            return pr;
    if (!make || strlen(addr) >= sizeof pr->addr)
        return NULL;
    pr = calloc(1, sizeof *pr);
    if (pr == NULL)
        return NULL;
    memcpy(pr->addr, addr, strlen(addr) + 1);
    pr->next = ob->list;
    ob->list = pr;
    return pr;
}

/* The frame's room for items: the whole frame within the max frame size,
 * and the answer too, each result with up to OBATCH_TEXT_MAX bytes. */
static size_t frame_room(const keel_obatch *ob)
{
    size_t m = ob->n->opts.max_frame;
    size_t fixed = KEEL_FRAME_HEADER + KEEL_DEADLINE_LEN + KEEL_OBATCH_HEAD;

    return m > fixed ? m - fixed : 0;
}

static unsigned frame_max_items(const keel_obatch *ob)
{
    size_t m = ob->n->opts.max_frame, k;

    if (m <= KEEL_FRAME_HEADER + 2)
        return 0;
    k = (m - KEEL_FRAME_HEADER - 2) / (KEEL_OBATCH_RESULT_HDR +
                                       OBATCH_TEXT_MAX);
    return k < KEEL_OBATCH_MAX ? (unsigned)k : KEEL_OBATCH_MAX;
}

static void answer_all(keel_node *n, struct ob_call *calls, unsigned count,
                       int status, const char *text)
{
    unsigned i;

    for (i = 0; i < count; i++)
        calls[i].cb(n, status, (const uint8_t *)text, strlen(text),
                    calls[i].arg);
}

static void frame_cb(keel_node *n, int status, const uint8_t *body,
                     size_t len, void *arg)
{
    struct ob_frame *fr = arg;
    const uint8_t *p = body;
    size_t left = len;
    unsigned count, i;

    if (status == KEEL_EMALFORMED || status == KEEL_ETOOBIG) {
        /* Refused as a whole before any of it ran: a node that does not
         * know the kind, or takes smaller frames than this one. Its
         * messages go back to be routed again, as CASTs of their own. */
        if (fr->pr != NULL) {
            fr->pr->legacy_until = ev_now(n->loop) + OBATCH_LEGACY_S;
            keel_warn("outbox: node at %s refused a batch of %u message(s) "
                      "(%s: %.*s); it gets them one frame each for %.0f s",
                      fr->pr->addr, fr->count, keel_err_name(status),
                      (int)len, (const char *)body, OBATCH_LEGACY_S);
        }
        answer_all(n, fr->calls, fr->count, KEEL_PEER_UNSENT,
                   "batch refused by the receiving node; not run");
    } else if (status != 0) {
        /* The frame's fate is each message's (not sent, deadline, link
         * lost after it left, receiver stopping or not a member). */
        for (i = 0; i < fr->count; i++)
            fr->calls[i].cb(n, status, body, len, fr->calls[i].arg);
    } else if (keel_obatch_results_parse(&p, &left, &count) != 0 ||
               count != fr->count) {
        keel_warn("outbox: a batch's answer does not match it");
        answer_all(n, fr->calls, fr->count, KEEL_ECONN,
                   "unreadable answer to an outbox batch; it may have run");
    } else {
        for (i = 0; i < count; i++) {
            const uint8_t *d;
            size_t dl;
            int st;
            if (keel_obatch_result_next(&p, &left, &st, &d, &dl) != 0) {
                answer_all(n, fr->calls + i, count - i, KEEL_ECONN,
                           "unreadable answer to an outbox batch; it may "
                           "have run");
                break;
            }
            fr->calls[i].cb(n, st, d, dl, fr->calls[i].arg);
        }
    }
    free(fr);
}

/* Sends items [from, to) of pr in one frame; on failure they come back
 * unsent. */
static void frame_send(keel_obatch *ob, struct ob_peer *pr, size_t from,
                       size_t to)
{
    keel_node *n = ob->n;
    unsigned count = (unsigned)(to - from), i;
    size_t blen = KEEL_DEADLINE_LEN + KEEL_OBATCH_HEAD;
    uint64_t deadline = UINT64_MAX;
    struct ob_frame *fr;
    uint8_t *body;

    fr = malloc(sizeof *fr + count * sizeof fr->calls[0]);
    if (fr == NULL) {
        for (i = 0; i < count; i++) {
            struct ob_item *it = &pr->items[from + i];
            it->cb(n, KEEL_PEER_UNSENT, (const uint8_t *)"out of memory", 13,
                   it->arg);
        }
        return;
    }
    fr->pr = pr;
    fr->count = count;
    for (i = 0; i < count; i++) {
        struct ob_item *it = &pr->items[from + i];
        fr->calls[i].cb = it->cb;
        fr->calls[i].arg = it->arg;
        blen += it->len;
        if (it->deadline_ns != 0 && it->deadline_ns < deadline)
            deadline = it->deadline_ns;
    }
    if (deadline == UINT64_MAX)
        deadline = 0;
    /* Held to the earliest deadline of its messages: a later one may end
     * up answered early (EDEADLINE, ETIMEDOUT), which its sender takes as
     * any failed delivery and sends again. */
    body = keel__peer_frame_by(ob->peers, pr->addr, KEEL_FRAME_OBATCH,
                               KEEL_FLAG_DEADLINE, blen, deadline, frame_cb,
                               fr);
    if (body == NULL) {
        answer_all(n, fr->calls, count, KEEL_PEER_UNSENT,
                   "no link to the owner now; not sent");
        free(fr);
        return;
    }
    keel_deadline_put(body, 0); /* peer.c writes it as the frame leaves */
    body += KEEL_DEADLINE_LEN;
    keel_obatch_results_count(body, count); /* the same be16 count */
    body += KEEL_OBATCH_HEAD;
    for (i = 0; i < count; i++) {
        struct ob_item *it = &pr->items[from + i];
        memcpy(body, pr->buf + it->off, it->len);
        body += it->len;
    }
    STAT_ADD(n, outbox_frames, 1);
}

/* Sends what each peer has queued, in frames that fit. Nothing is queued
 * meanwhile (keel__obatch_add refuses while ob->flushing): a message
 * that comes back unsent is held by route.c, not sent again at once. */
static void flush_all(keel_obatch *ob)
{
    size_t room = frame_room(ob);
    unsigned maxn = frame_max_items(ob);
    struct ob_peer *pr;

    ob->flushing = 1;
    for (pr = ob->list; pr != NULL; pr = pr->next) {
        size_t i, start = 0, used = 0;

        if (pr->nitems == 0)
            continue;
        for (i = 0; i < pr->nitems; i++) {
            if (i > start &&
                (used + pr->items[i].len > room || i - start >= maxn)) {
                frame_send(ob, pr, start, i);
                start = i;
                used = 0;
            }
            used += pr->items[i].len;
        }
        frame_send(ob, pr, start, pr->nitems);
        ob->queued -= pr->nitems;
        pr->nitems = 0;
        pr->blen = 0;
    }
    ob->flushing = 0;
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    keel_obatch *ob = w->data;

    (void)revents;
    ev_prepare_stop(loop, &ob->flush);
    ev_timer_stop(loop, &ob->flush_late);
    flush_all(ob);
}

static void flush_late_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_obatch *ob = w->data;

    (void)revents;
    ev_prepare_stop(loop, &ob->flush);
    flush_all(ob);
}

keel_obatch *keel__obatch_create(keel_node *n, keel_peers *peers)
{
    keel_obatch *ob = calloc(1, sizeof *ob);

    if (ob == NULL)
        return NULL;
    ob->n = n;
    ob->peers = peers;
    ev_prepare_init(&ob->flush, flush_cb);
    ob->flush.data = ob;
    ev_timer_init(&ob->flush_late, flush_late_cb, 0, 0);
    ob->flush_late.data = ob;
    return ob;
}

int keel__obatch_add(keel_obatch *ob, const char *addr, unsigned hops,
                     const keel_req *req, const char *type, size_t tlen,
                     const void *id, size_t idlen, keel_peer_cb cb,
                     void *arg)
{
    const struct keel_ob_from *f = req->from;
    struct ob_peer *pr;
    struct ob_item *it;
    size_t len;

    if (ob == NULL || ob->peers == NULL || ob->flushing || f == NULL ||
        !req->is_cast || req->keyed || req->read_state)
        return -1;
    /* Only to a node that said it takes batches: an older one would
     * close the link (and fail what else is in flight on it) on the
     * unknown kind. */
    if (!keel__peer_takes(ob->peers, addr, KEEL_HELLO_OBATCH))
        return -1;
    pr = peer_find(ob, addr, 1);
    if (pr == NULL || ev_now(ob->n->loop) < pr->legacy_until)
        return -1;
    len = keel_obatch_item_size(f->tlen, f->idlen, tlen, idlen, req->len);
    if (len > frame_room(ob) || frame_max_items(ob) == 0)
        return -1; /* a frame of its own, as before */
    if (pr->nitems == pr->icap) {
        size_t cap = pr->icap ? pr->icap * 2 : 16;
        struct ob_item *v = realloc(pr->items, cap * sizeof *v);
        if (v == NULL)
            return -1;
        pr->items = v;
        pr->icap = cap;
    }
    if (pr->blen + len > pr->bcap) {
        size_t cap = pr->bcap ? pr->bcap : 4096;
        uint8_t *q;
        while (cap < pr->blen + len)
            cap *= 2;
        q = realloc(pr->buf, cap);
        if (q == NULL)
            return -1;
        pr->buf = q;
        pr->bcap = cap;
    }
    keel_obatch_item_encode(pr->buf + pr->blen, hops, f->seq, f->type,
                            f->tlen, f->id, f->idlen, type, tlen, id, idlen,
                            req->buf, req->len);
    it = &pr->items[pr->nitems++];
    it->cb = cb;
    it->arg = arg;
    it->deadline_ns = req->deadline_ns;
    it->off = pr->blen;
    it->len = len;
    pr->blen += len;
    ob->queued++;
    if (!ev_is_active(&ob->flush)) {
        ev_prepare_start(ob->n->loop, &ob->flush);
        ev_timer_start(ob->n->loop, &ob->flush_late);
    }
    return 0;
}

size_t keel__obatch_queued(const keel_obatch *ob)
{
    return ob != NULL ? ob->queued : 0;
}

void keel__obatch_stop(keel_obatch *ob, int status)
{
    struct ob_peer *pr;
    const char *text = keel_strerror(status);

    if (ob == NULL)
        return;
    ev_prepare_stop(ob->n->loop, &ob->flush);
    ev_timer_stop(ob->n->loop, &ob->flush_late);
    ob->peers = NULL; /* nothing is queued from now on */
    for (pr = ob->list; pr != NULL; pr = pr->next) {
        size_t i;
        for (i = 0; i < pr->nitems; i++)
            pr->items[i].cb(ob->n, status, (const uint8_t *)text,
                            strlen(text), pr->items[i].arg);
        pr->nitems = 0;
        pr->blen = 0;
    }
    ob->queued = 0;
}

void keel__obatch_destroy(keel_obatch *ob)
{
    struct ob_peer *pr;

    if (ob == NULL)
        return;
    ev_prepare_stop(ob->n->loop, &ob->flush);
    ev_timer_stop(ob->n->loop, &ob->flush_late);
    while ((pr = ob->list) != NULL) {
        ob->list = pr->next;
        free(pr->items);
        free(pr->buf);
        free(pr);
    }
    free(ob);
}

/* ------------------------------------------------------------ receiver */

struct ob_result {
    keel_obatch_in *in;
    int status;
    uint8_t *data; /* malloc'd, or NULL */
    size_t len;
};

struct keel_obatch_in {
    keel_node *n;
    keel_req *reply;
    unsigned count;
    unsigned left; /* outcomes to come, and one while items are handed out */
    struct ob_result res[];
};

/* Every outcome is in: one REPLY with them all, each text cut so that
 * the whole fits the max frame size (a result with no text is 6 bytes,
 * less than any item it answers). */
static void in_finish(keel_obatch_in *in)
{
    keel_node *n = in->n;
    size_t m = n->opts.max_frame, fixed, cap = OBATCH_TEXT_MAX, total;
    uint8_t *body, *p;
    unsigned i;

    fixed = KEEL_FRAME_HEADER + 2 + (size_t)in->count *
                                        KEEL_OBATCH_RESULT_HDR;
    if (m > fixed && (m - fixed) / in->count < cap)
        cap = (m - fixed) / in->count;
    else if (m <= fixed)
        cap = 0;
    total = 2;
    for (i = 0; i < in->count; i++)
        total += KEEL_OBATCH_RESULT_HDR +
                 (in->res[i].len < cap ? in->res[i].len : cap);
    body = malloc(total);
    if (body == NULL) {
        in->reply->status = KEEL_ENOMEM;
        (void)keel__req_set(in->reply, "out of memory", 13);
    } else {
        p = body;
        keel_obatch_results_count(p, in->count);
        p += 2;
        for (i = 0; i < in->count; i++) {
            struct ob_result *r = &in->res[i];
            p += keel_obatch_result_encode(p, r->status, r->data,
                                           r->len < cap ? r->len : cap);
        }
        in->reply->status = 0;
        if (keel__req_set(in->reply, body, total) != 0) {
            in->reply->status = KEEL_ENOMEM;
            in->reply->len = 0;
        }
        free(body);
    }
    for (i = 0; i < in->count; i++)
        free(in->res[i].data);
    keel__net_complete(n, in->reply); /* frees it */
    free(in);
}

static void in_unref(keel_obatch_in *in)
{
    if (--in->left == 0)
        in_finish(in);
}

static void in_record(struct ob_result *r, int status, const void *data,
                      size_t len)
{
    if (len > OBATCH_TEXT_MAX)
        len = OBATCH_TEXT_MAX;
    r->status = status;
    r->data = NULL;
    r->len = 0;
    if (len > 0 && (r->data = malloc(len)) != NULL) {
        memcpy(r->data, data, len);
        r->len = len;
    }
}

static void in_cb(int status, const void *reply, size_t len, void *data)
{
    struct ob_result *r = data;

    in_record(r, status, reply, len);
    in_unref(r->in);
}

keel_obatch_in *keel__obatch_in_create(keel_node *n, keel_req *reply,
                                       unsigned count)
{
    keel_obatch_in *in;
    unsigned i;

    if (count == 0)
        return NULL;
    in = calloc(1, sizeof *in + count * sizeof in->res[0]);
    if (in == NULL)
        return NULL;
    in->n = n;
    in->reply = reply;
    in->count = count;
    in->left = count + 1;
    for (i = 0; i < count; i++)
        in->res[i].in = in;
    return in;
}

void keel__obatch_in_answer(keel_obatch_in *in, unsigned i, int status,
                            const char *text, size_t len)
{
    in_record(&in->res[i], status, text, len);
    in_unref(in);
}

void keel__obatch_in_submit(keel_obatch_in *in, unsigned i,
                            struct keel_type_entry *te,
                            const keel_obatch_item *it, uint64_t deadline_ns)
{
    keel_node *n = in->n;
    keel_req *req = keel__req_alloc(n, it->call.msglen);
    struct keel_ob_from *from = malloc(sizeof *from);
    const char *why;
    int rc;

    if (req == NULL || from == NULL) {
        if (req != NULL)
            keel__req_free(n, req);
        free(from);
        keel__obatch_in_answer(in, i, KEEL_ENOMEM, "out of memory", 13);
        return;
    }
    keel__req_set(req, it->call.msg, it->call.msglen);
    from->seq = it->from.seq;
    from->tlen = (uint8_t)it->from.tlen;
    memcpy(from->type, it->from.type, it->from.tlen);
    from->type[it->from.tlen] = '\0';
    from->idlen = (uint16_t)it->from.idlen;
    memcpy(from->id, it->from.id, it->from.idlen);
    req->from = from;
    req->origin = REQ_LOCAL;
    req->is_cast = 1;
    req->hops = (uint8_t)it->hops;
    req->deadline_ns = deadline_ns;
    req->wire_deadline = deadline_ns != 0;
    req->u.local.cb = in_cb;
    req->u.local.data = &in->res[i];
    if (req->hops > 0)
        n->last_forward_in = ev_now(n->loop);
    rc = keel__submit(n, te, it->call.id, it->call.idlen, req);
    if (rc != 0) {
        keel__req_free(n, req);
        why = keel_strerror(rc);
        keel__obatch_in_answer(in, i, rc, why, strlen(why));
    }
}

void keel__obatch_in_end(keel_obatch_in *in)
{
    in_unref(in);
}
