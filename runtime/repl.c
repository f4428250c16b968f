/* Replication: see runtime/repl.h and docs/cluster.md, "Replication
 * stream".
 *
 * Primary side. Each unit this node has sent writes of (repl_unit) counts
 * its pieces: a piece is one unit's whole groups (an actor's writes are
 * never split) of one settled batch, at most REPL_PIECE_MAX bytes unless
 * one group is larger, numbered by seq from 1 at each shard_epoch. Every
 * piece goes to every in-sync backup of the unit, in the REPL frame this
 * settle builds for that backup node (repl_link). A wait entry
 * (repl_wait) per unit and settle holds the replies of the unit's actors
 * from that settle on, with the backups that must acknowledge its last
 * seq; entries leave in order, so a reply never overtakes an earlier one
 * of its actor.
 *
 * A frame stays on its link until each of its units is acknowledged by
 * the backup, or the backup is out of the unit's in-sync set in the map
 * this node applied, or the unit is no longer this node's at that epoch.
 * A refusal or a failed link sends every listed frame of the link again,
 * in order, once none of its sends is unanswered: the backup takes a
 * unit's pieces only in seq order and once each, so a resend that
 * reaches it twice changes nothing.
 *
 * The backup side is runtime/repl_backup.c. */
#include "runtime/repl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/failpoint.h"
#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/shardmap.h"
#include "runtime/cluster_rt_int.h"

#include "runtime/repl_int.h"

static const char doubt_msg[] =
    "outcome unknown: the write is durable on this node, but a backup of "
    "its unit could not confirm it (this node may no longer own the unit)";

static int suspect_find(const repl_unit *u, const repl_link *l,
                        uint64_t epoch);
static void suspect_restarted(keel_repl *r, repl_unit *u, uint64_t epoch,
                              repl_link *l);
static int lag_unit(keel_repl *r, repl_unit *u, uint64_t epoch,
                    repl_link *l, int suspect);

static int punit_eq(const void *item, const void *key)
{
    const repl_unit *u = item;
    const struct repl_ukey *k = key;

    return u->shard == k->shard && strcmp(u->cap, k->cap) == 0;
}

repl_unit *repl_unit_find(keel_repl *r, const char *cap, uint32_t shard)
{
    struct repl_ukey k = {cap, shard};

    if (r->units.count == 0)
        return NULL;
    return keel_hmap_get(&r->units, repl_unit_hash(cap, shard), &k, punit_eq);
}

/* Units are kept as long as the module: frames and entries point at
 * them, and their seqs must go on at the same epoch. There is one per unit
 * this node sent writes of, at most. */
repl_unit *repl_unit_get(keel_repl *r, const char *cap, uint32_t shard)
{
    repl_unit *u = repl_unit_find(r, cap, shard);
    size_t clen = strlen(cap);

    if (u != NULL)
        return u;
    u = calloc(1, sizeof *u + clen + 1);
    if (u == NULL)
        return NULL;
    memcpy(u->cap, cap, clen + 1);
    u->shard = shard;
    u->hash = repl_unit_hash(cap, shard);
    if (keel_hmap_put(&r->units, u->hash, u) != 0) {
        free(u);
        return NULL;
    }
    return u;
}

void repl_busy_update(keel_repl *r, repl_unit *u)
{
    int want = u->head != NULL;

    if (want == u->busy)
        return;
    if (want) {
        u->bprev = NULL;
        u->bnext = r->busy;
        if (r->busy != NULL)
            r->busy->bprev = u;
        r->busy = u;
        r->n->repl_busy++;
    } else {
        if (u->bprev != NULL)
            u->bprev->bnext = u->bnext;
        else
            r->busy = u->bnext;
        if (u->bnext != NULL)
            u->bnext->bprev = u->bprev;
        u->bnext = u->bprev = NULL;
        r->n->repl_busy--;
    }
    u->busy = want;
}

void repl_arm(keel_repl *r, double after)
{
    ev_tstamp due = ev_now(r->n->loop) + after - REPL_TICK_S;

    if (!r->started)
        return;
    if (ev_is_active(&r->tick)) {
        if (after > 0)
            return;
        ev_timer_stop(r->n->loop, &r->tick);
        /* Brought forward: a stall seen since the last tick still counts
         * at the next one. */
        if (r->tick_seen > due)
            r->tick_seen = due;
    } else {
        /* A tick set to fire later (a catch-up's pause) is no stall of
         * the loop when it does. */
        r->tick_seen = due;
    }
    ev_timer_set(&r->tick, after, REPL_TICK_S);
    ev_timer_start(r->n->loop, &r->tick);
}

/* ----------------------------------------------------- the applied map */

/* Whether the applied map has this node as the unit's primary at epoch. */
/* The unit in the applied map, its capability's index into *ci; NULL
 * when the map has none. */
static const keel_map_unit *map_unit(keel_repl *r, const char *cap,
                                     uint32_t shard, int *ci)
{
    const keel_shard_map *m = keel_cluster_map(repl_cl(r));

    if (m == NULL || shard >= m->shard_count ||
        (*ci = keel_map_cap_index(m, cap)) < 0)
        return NULL;
    return keel_map_unit_at(m, (uint32_t)*ci, shard);
}

int repl_unit_ours(keel_repl *r, const char *cap, uint32_t shard,
                   uint64_t epoch)
{
    int ci;
    const keel_map_unit *mu = map_unit(r, cap, shard, &ci);
    const char *p;

    if (mu == NULL || mu->shard_epoch != epoch)
        return 0;
    p = keel_map_primary(keel_cluster_map(repl_cl(r)), (uint32_t)ci, shard);
    return p != NULL && strcmp(p, keel_cluster_node_name(repl_cl(r))) == 0;
}

/* The unit's in-sync backups at epoch into r->refs; their count. */
static size_t insync(keel_repl *r, const repl_unit *u, uint64_t epoch)
{
    return keel_cluster_insync_backups(repl_cl(r), u->cap, u->shard, epoch,
                                       r->refs, REPL_MAX_BACKUPS);
}

static int in_refs(const keel_repl *r, size_t nrefs, const char *name)
{
    size_t i;

    for (i = 0; i < nrefs; i++)
        if (strcmp(r->refs[i].name, name) == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------ links */

repl_link *repl_link_get(keel_repl *r, const keel_replica_ref *ref)
{
    repl_link *l;

    for (l = r->links; l != NULL; l = l->next)
        if (strcmp(l->name, ref->name) == 0)
            break;
    if (l == NULL) {
        l = calloc(1, sizeof *l);
        if (l == NULL)
            return NULL;
        snprintf(l->name, sizeof l->name, "%s", ref->name);
        l->next = r->links;
        r->links = l;
    }
    if (ref->addr[0] != '\0' && strcmp(l->addr, ref->addr) != 0) {
        /* A new address (the backup restarted elsewhere): what it has not
         * acknowledged goes there. */
        if (l->addr[0] != '\0' && l->head != NULL) {
            l->retry = 1;
            l->retry_at = 0;
        }
        snprintf(l->addr, sizeof l->addr, "%s", ref->addr);
    }
    return l;
}

static void frame_unref(repl_frame *f)
{
    if (--f->refs > 0)
        return;
    free(f->body);
    free(f->units);
    free(f);
}

static void frame_unlist(keel_repl *r, repl_frame *f)
{
    repl_link *l = f->l;
    repl_frame **pp;

    for (pp = &l->head; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f)
            break;
    if (*pp == NULL)
        return;
    *pp = f->next;
    if (l->tail == f) {
        repl_frame *t = l->head;
        while (t != NULL && t->next != NULL)
            t = t->next;
        l->tail = t;
    }
    f->next = NULL;
    f->listed = 0;
    l->nframes--;
    r->nframes--;
    frame_unref(f);
}

/* x, a unit of f, needs no answer any more: acknowledged, refused for
 * good, or forgotten. */
static void piece_done(repl_frame *f, struct rf_unit *x)
{
    x->done = 1;
    f->nleft--;
    if (x->seq != 0 && x->u->unacked > 0)
        x->u->unacked--;
}

static void link_retry(keel_repl *r, repl_link *l, double pause)
{
    ev_tstamp at = ev_now(r->n->loop) + pause;

    if (!l->retry || at < l->retry_at)
        l->retry_at = at;
    l->retry = 1;
    repl_arm(r, 0.001);
}

static void frame_cb(keel_node *n, int status, const uint8_t *body,
                     size_t len, void *arg);

/* Sends f (listed on its link). On failure the link retries later; no
 * callback ever sends (peer.h: a failing link completes its frames from
 * inside its own teardown). */
static void frame_send(keel_repl *r, repl_frame *f)
{
    repl_link *l = f->l;
    uint8_t *body;

    if (r->rt->peers == NULL || l->addr[0] == '\0') {
        link_retry(r, l, 0.2);
        return;
    }
    body = keel__peer_frame(r->rt->peers, l->addr, KEEL_FRAME_REPL, 0, f->len,
                            frame_cb, f);
    if (body == NULL) {
        link_retry(r, l, 0.2);
        return;
    }
    memcpy(body, f->body, f->len);
    f->refs++;
    l->inflight++;
    STAT_ADD(r->n, repl_frames_sent, 1);
    STAT_ADD(r->n, repl_bytes_sent, f->len);
}

/* ---------------------------------------------------- releasing replies */

/* Answers w's requests: released, or failed in doubt. */
static void wait_answer(keel_repl *r, repl_wait *w, int doubt)
{
    keel_req *req;

    if (doubt && !w->confirm)
        r->doubted = 1;
    while ((req = w->reqs.head) != NULL) {
        w->reqs.head = req->next;
        req->next = NULL;
        STAT_SUB(r->n, repl_waiting, 1);
        if (req->failed_hold) {
            /* A failure held until no backup that may have its write
             * can be promoted: then it is true as it stands. */
            req->failed_hold = 0;
            if (doubt)
                keel__req_doubt(r->n, req, doubt_msg);
            else
                keel__req_release(r->n, req);
        } else if (doubt) {
            keel__req_doubt(r->n, req, doubt_msg);
        } else {
            keel__req_settle(r->n, req);
        }
    }
    w->reqs.tail = NULL;
    w->nreqs = 0;
}

static void wait_free(keel_repl *r, repl_wait *w)
{
    wait_answer(r, w, w->doubt);
    free(w);
}

/* Queues req on w: it leaves when w does. */
static void wait_add(keel_node *n, repl_wait *w, keel_req *req)
{
    req->next = NULL;
    if (w->reqs.tail != NULL)
        w->reqs.tail->next = req;
    else
        w->reqs.head = req;
    w->reqs.tail = req;
    w->nreqs++;
    STAT_ADD(n, repl_waiting, 1);
}

static int wait_complete(const repl_wait *w)
{
    unsigned i;

    if (w->doubt)
        return 1;
    for (i = 0; i < w->nb; i++)
        if (!w->b[i].done)
            return 0;
    return 1;
}

/* Releases the unit's complete entries, oldest first, up to the first
 * that still waits. */
void repl_unit_progress(keel_repl *r, repl_unit *u)
{
    repl_wait *w;

    while ((w = u->head) != NULL && wait_complete(w)) {
        u->head = w->next;
        if (u->head == NULL)
            u->tail = NULL;
        if (u->conf == w)
            u->conf = NULL; /* failed before it was sent */
        wait_free(r, w);
    }
    repl_busy_update(r, u);
}

/* The backup acknowledged the unit up to seq at epoch. */
static void unit_acked(repl_unit *u, uint64_t epoch, const repl_link *l,
                       uint64_t seq)
{
    repl_wait *w;
    unsigned i;

    for (w = u->head; w != NULL; w = w->next) {
        if (w->confirm || w->epoch != epoch || w->seq > seq)
            continue;
        for (i = 0; i < w->nb; i++)
            if (w->b[i].l == l && !w->b[i].drop_only)
                w->b[i].done = 1;
    }
}

/* The highest seq l acknowledged of a piece of u at epoch; 0 when none
 * is known. */
static uint64_t acked_seq(const repl_unit *u, const repl_link *l,
                          uint64_t epoch)
{
    unsigned i;

    for (i = 0; i < REPL_MAX_BACKUPS; i++)
        if (u->acked[i].l == l && u->acked[i].epoch == epoch)
            return u->acked[i].seq;
    return 0;
}

/* l acknowledged pieces of u at epoch up to seq. A slot of an older epoch
 * is taken first; without one, another backup's is: it then only loses
 * its early drop (suspect_restarted), not an ack. */
static void acked_note(repl_unit *u, repl_link *l, uint64_t epoch,
                       uint64_t seq)
{
    unsigned i, slot = REPL_MAX_BACKUPS;

    for (i = 0; i < REPL_MAX_BACKUPS; i++) {
        if (u->acked[i].l == l && u->acked[i].epoch == epoch) {
            if (seq > u->acked[i].seq)
                u->acked[i].seq = seq;
            return;
        }
        if (slot == REPL_MAX_BACKUPS &&
            (u->acked[i].l == NULL || u->acked[i].epoch < epoch))
            slot = i;
    }
    if (slot == REPL_MAX_BACKUPS)
        slot = 0;
    u->acked[slot].l = l;
    u->acked[slot].epoch = epoch;
    u->acked[slot].seq = seq;
}

/* The backup confirmed round cid of the unit at epoch: it holds no newer
 * epoch than that, at a moment after the round's turns ran. */
static void unit_confirmed(repl_unit *u, uint64_t epoch, uint64_t cid,
                           const repl_link *l)
{
    repl_wait *w;
    unsigned i;

    for (w = u->head; w != NULL; w = w->next) {
        if (!w->confirm || w->cid != cid || w->epoch != epoch)
            continue;
        for (i = 0; i < w->nb; i++)
            if (w->b[i].l == l && !w->b[i].drop_only)
                w->b[i].done = 1;
    }
}

/* Nothing more is waited for from l on (u, epoch): it acknowledged, left
 * the in-sync set, or cannot be heard from; doubt fails what waited on it
 * rather than releasing it. */
void repl_forget_link(keel_repl *r, repl_unit *u, uint64_t epoch,
                             repl_link *l, int doubt)
{
    repl_wait *w;
    repl_frame *f, *next;
    unsigned i;
    uint16_t k;

    for (w = u->head; w != NULL; w = w->next) {
        if (w->epoch != epoch)
            continue;
        for (i = 0; i < w->nb; i++) {
            if (w->b[i].l != l || w->b[i].done)
                continue;
            w->b[i].done = 1;
            if (doubt)
                w->doubt = 1;
        }
    }
    for (f = l->head; f != NULL; f = next) {
        next = f->next;
        for (k = 0; k < f->nunits; k++) {
            struct rf_unit *x = &f->units[k];
            if (x->done || x->u != u || x->epoch != epoch)
                continue;
            piece_done(f, x);
        }
        if (f->nleft == 0)
            frame_unlist(r, f);
    }
}

/* A backup holds a newer epoch of the unit than `epoch`: this node is
 * not its primary there any more, whatever its map says yet. Every reply
 * waiting on the unit at that epoch fails in doubt, and later writes at
 * that epoch are not sent. */
static void unit_stale(keel_repl *r, repl_unit *u, uint64_t epoch,
                       const repl_link *l)
{
    repl_wait *w;

    if (u->stale < epoch) {
        keel_warn("unit (%s, %u): backup %s holds a newer epoch than %llu: "
                  "this node is not its primary any more; its waiting "
                  "replies fail in doubt",
                  keel_cap_name(u->cap), u->shard, l->name,
                  (unsigned long long)epoch);
        u->stale = epoch;
    }
    for (w = u->head; w != NULL; w = w->next)
        if (w->epoch <= epoch)
            w->doubt = 1;
    STAT_ADD(r->n, fence_refusals, 1);
}

/* --------------------------------------------------- a frame's answer */

static void frame_cb(keel_node *n, int status, const uint8_t *body,
                     size_t len, void *arg)
{
    repl_frame *f = arg;
    repl_link *l = f->l;
    keel_repl *r = n->repl;
    const uint8_t *p = body;
    size_t rest = len;
    uint16_t cnt = 0, k;
    int again = 0, why = status;

    l->inflight--;
    if (r == NULL || !f->listed) {
        frame_unref(f);
        return;
    }
    if (status == 0 && (keel_repl_acks_parse(&p, &rest, &cnt) != 0 ||
                        cnt != f->nunits)) {
        status = why = KEEL_EPROTO;
    }
    for (k = 0; status == 0 && k < cnt; k++) {
        struct rf_unit *x = &f->units[k];
        keel_repl_ack a;
        if (keel_repl_ack_next(&p, &rest, &a) != 0 ||
            a.clen != strlen(x->u->cap) ||
            memcmp(a.cap, x->u->cap, a.clen) != 0 || a.shard != x->u->shard) {
            why = KEEL_EPROTO;
            again = 1;
            break;
        }
        if (x->done)
            continue;
        if ((a.status == 0 || a.status == KEEL_EDIFFERS) &&
            a.seq >= x->seq) {
            /* EDIFFERS: a check piece taken, and the backup's copy was
             * another (it deleted it): the records follow. */
            STAT_ADD(n, repl_acks, 1);
            unit_acked(x->u, x->epoch, l, a.seq);
            if (x->seq > 0)
                acked_note(x->u, l, x->epoch, a.seq);
            if (x->u->ncu > 0 && a.status == KEEL_EDIFFERS)
                repl_catchup_differs(r, x->u, x->epoch, l, x->seq);
            if (x->u->ncu > 0)
                repl_catchup_acked(r, x->u, x->epoch, l, a.seq);
            if (x->seq == 0)
                unit_confirmed(x->u, x->epoch, x->cid, l);
            piece_done(f, x);
            repl_unit_progress(r, x->u);
        } else if (a.status == KEEL_EFENCED) {
            unit_stale(r, x->u, x->epoch, l);
            repl_unit_progress(r, x->u);
            piece_done(f, x);
        } else {
            /* Not taken yet: its map lags (ENOTTARGET), a piece before
             * it is missing there (EPROTO), its store failed... */
            if (a.status == KEEL_EPROTO && x->seq > 1 &&
                x->seq == acked_seq(x->u, l, x->epoch) + 1)
                suspect_restarted(r, x->u, x->epoch, l);
            if (!again)
                why = a.status != 0 ? a.status : KEEL_EPROTO;
            again = 1;
        }
    }
    if (status != 0)
        again = 1;
    if (again && ev_now(n->loop) - l->warned_at >= 1.0) {
        l->warned_at = ev_now(n->loop);
        keel_debug("replication to %s: %s; sending again", l->name,
                   why == KEEL_PEER_UNSENT ? "not sent" : keel_strerror(why));
    }
    if (f->nleft == 0)
        frame_unlist(r, f);
    else if (again)
        link_retry(r, l, REPL_RETRY_S);
    frame_unref(f);
}

/* ------------------------------------------------- building the frames */

int repl_reserve(uint8_t **buf, size_t *cap, size_t len, size_t more)
{
    size_t c = *cap ? *cap : 4096;
    uint8_t *q;

    if (more <= *cap - len && *buf != NULL)
        return 0;
    if (more > SIZE_MAX / 4 - len)
        return KEEL_ENOMEM;
    while (c - len < more)
        c *= 2;
    q = realloc(*buf, c);
    if (q == NULL)
        return KEEL_ENOMEM;
    *buf = q;
    *cap = c;
    return 0;
}

static int piece_op(int kind, const uint8_t *key, size_t klen,
                    uint64_t version, const void *data, size_t dlen,
                    void *arg)
{
    keel_repl *r = arg;
    size_t need;
    int k;

    switch (kind) {
    case KEEL_BATCH_OP_PUT:
        k = KEEL_REPL_PUT;
        break;
    case KEEL_BATCH_OP_DEL:
        k = KEEL_REPL_DEL;
        break;
    case KEEL_BATCH_OP_DEL_PREFIX:
        k = KEEL_REPL_DEL_PREFIX;
        break;
    case KEEL_BATCH_OP_FENCE_ONLY:
        return 0; /* the unit's head carries the epoch */
    default:
        /* Unit deletions and handovers are the cluster runtime's own
         * writes, never in a batch of actor turns. */
        return KEEL_EINVAL;
    }
    need = keel_repl_op_size(k, klen, dlen);
    if (need > REPL_SEND_MAX || repl_reserve(&r->piece, &r->pcap, r->plen, need))
        return KEEL_ETOOBIG;
    r->plen += keel_repl_op_encode(r->piece + r->plen, k, key, klen, version,
                                   data, dlen);
    r->pops++;
    return 0;
}

static repl_frame *frame_new(keel_repl *r, repl_link *l)
{
    repl_frame *f = calloc(1, sizeof *f);
    const char *me = keel_cluster_node_name(repl_cl(r));
    size_t flen = strlen(me);

    if (f == NULL)
        return NULL;
    f->l = l;
    f->refs = 1;
    if (repl_reserve(&f->body, &f->cap, 0, KEEL_REPL_HEAD_SIZE(flen)) != 0) {
        free(f);
        return NULL;
    }
    f->len = keel_repl_head_encode(f->body, me, flen, r->stream, 0);
    return f;
}

/* Lists and sends the frame built for l in this settle. */
void repl_frame_finish(keel_repl *r, repl_link *l)
{
    repl_frame *f = l->build;
    const char *me = keel_cluster_node_name(repl_cl(r));
    uint16_t k;

    l->build = NULL;
    if (f == NULL)
        return;
    if (f->nunits == 0) {
        frame_unref(f);
        return;
    }
    keel_repl_head_encode(f->body, me, strlen(me), r->stream, f->nunits);
    f->born = ev_now(r->n->loop);
    f->forgiven = 0;
    f->nleft = f->nunits;
    f->listed = 1;
    for (k = 0; k < f->nunits; k++)
        if (f->units[k].seq != 0)
            f->units[k].u->unacked++;
    if (l->tail != NULL)
        l->tail->next = f;
    else
        l->head = f;
    l->tail = f;
    l->nframes++;
    r->nframes++;
    if (!l->retry)
        frame_send(r, f);
}

/* Appends the piece in r->piece (unit u, seq) to l's frame of this
 * settle, starting another when it is full. A piece that cannot be added
 * is not sent: the backup then refuses what follows it (a gap in seqs)
 * and is dropped after the lag. */
int repl_frame_add_piece(keel_repl *r, repl_link *l, repl_unit *u,
                           uint64_t epoch, uint64_t seq)
{
    size_t clen = strlen(u->cap), need = KEEL_REPL_UNIT_SIZE(clen) + r->plen;
    repl_frame *f = l->build;

    if (f != NULL && (f->nunits == UINT16_MAX ||
                      (f->nunits > 0 && f->len + need > REPL_FRAME_MAX))) {
        repl_frame_finish(r, l);
        f = NULL;
    }
    if (f == NULL && (f = l->build = frame_new(r, l)) == NULL)
        goto fail;
    if (f->len + need > REPL_SEND_MAX ||
        repl_reserve(&f->body, &f->cap, f->len, need) != 0)
        goto fail;
    if (f->nunits == f->ucap) {
        size_t c = f->ucap ? f->ucap * 2 : 8;
        struct rf_unit *nu = realloc(f->units, c * sizeof *nu);
        if (nu == NULL)
            goto fail;
        f->units = nu;
        f->ucap = c;
    }
    f->len += keel_repl_unit_encode(f->body + f->len, u->cap, clen, u->shard,
                                    epoch, seq, r->pops);
    if (r->plen > 0)
        memcpy(f->body + f->len, r->piece, r->plen);
    f->len += r->plen;
    f->units[f->nunits].u = u;
    f->units[f->nunits].epoch = epoch;
    f->units[f->nunits].seq = seq;
    f->units[f->nunits].cid = 0;
    f->units[f->nunits].done = 0;
    f->nunits++;
    return 0;
fail:
    keel_error("unit (%s, %u): cannot send %zu bytes of writes to backup %s; "
               "it will be dropped from the in-sync set",
               keel_cap_name(u->cap), u->shard, r->plen, l->name);
    return KEEL_ENOMEM;
}

/* Numbers the piece in r->piece and hands it to every backup of u. */
static void piece_emit(keel_repl *r, repl_unit *u, uint64_t epoch)
{
    unsigned i;

    u->seq++;
    for (i = 0; i < u->snb; i++)
        repl_frame_add_piece(r, u->sl[i], u, epoch, u->seq);
    r->plen = 0;
    r->pops = 0;
}

/* Decides, once per settle, whether and where the writes of u at epoch
 * go. */
static void unit_decide(keel_repl *r, repl_unit *u, uint64_t epoch)
{
    size_t i, nrefs;

    u->settle = r->settle_no;
    u->settle_epoch = epoch;
    u->snb = 0;
    u->sns = 0;
    u->sdoubt = 0;
    u->smode = SM_SEND;
    u->fail_doubt = 0;
    if (epoch < u->epoch || u->stale >= epoch) {
        /* Written at an epoch this node has left (its backups hold a
         * newer one): whatever waits on it is in doubt. */
        u->sdoubt = 1;
        return;
    }
    nrefs = insync(r, u, epoch);
    for (i = 0; i < nrefs; i++) {
        repl_link *l = repl_link_get(r, &r->refs[i]);
        if (l != NULL && suspect_find(u, l, epoch) >= 0) {
            u->ss[u->sns++] = l; /* waited on until dropped, sent nothing */
        } else if (l != NULL) {
            u->sw[u->snb] = 1;
            u->sl[u->snb++] = l;
        } else {
            u->sdoubt = 1; /* out of memory: cannot be confirmed */
        }
    }
    if (u->ncu > 0)
        repl_catchup_decide(r, u, epoch);
    if (u->snb > 0 && epoch > u->epoch) {
        u->epoch = epoch;
        u->seq = r->lossy ? 1 : 0;
    }
    if (nrefs == 0 && !repl_unit_ours(r, u->cap, u->shard, epoch))
        u->sdoubt = 1; /* not this node's there: nobody confirms it */
}

/* Out of memory before anything of b was sent: its replies fail in
 * doubt, and the backups of its units must see a gap in seqs. */
static void repl_lost(keel_repl *r, keel_batch *b, uint64_t no)
{
    size_t i, ng = keel_batch_group_count(b);

    keel_error("replication: out of memory; the writes of %zu actors are "
               "not sent to backups, which will be dropped",
               ng);
    r->sfail = r->sfail_all = no;
    r->lossy = 1;
    for (i = 0; i < ng; i++) {
        const char *cap;
        uint16_t shard;
        uint64_t epoch;
        repl_unit *u;
        if (keel_batch_group_unit(b, i, &cap, &shard, &epoch) == 0 &&
            (u = repl_unit_find(r, cap, shard)) != NULL &&
            u->settle != r->settle_no) {
            u->settle = r->settle_no;
            u->seq++;
        }
    }
}

static int gref_cmp(const void *a, const void *b)
{
    const struct gref *x = a, *y = b;

    if (x->u != y->u)
        return x->u < y->u ? -1 : 1;
    return x->g < y->g ? -1 : x->g > y->g;
}

/* Whether the unit's writes flushed now may leave before their commit
 * here: not while a backup catches up (its snapshot and parts are read
 * from this store and must hold every piece numbered before them), nor
 * while pieces of an earlier flush still wait for their batch to settle
 * (they would be numbered after these). */
static int early_ok(keel_repl *r, const repl_unit *u)
{
    if (r->commits_failing || u->ncu > 0 || u->late_to > r->settled_no)
        return 0;
    return u->cu_want_at == 0 || ev_now(r->n->loop) - u->cu_want_at > 1.0;
}

/* Sends writes of the units of b that have in-sync backups and makes a
 * wait entry per such unit, tagged `no`. From a flush (hi 0), before the
 * commit here: the units whose writes may leave early; the others are
 * marked late. From a settle of the flushes lo..hi (b durable here): the
 * units marked late in one of them, with every group of theirs in b (a
 * group that went early already goes again: the backup applies the
 * same writes in the same order, which changes nothing). */
static void repl_send(keel_repl *r, keel_batch *b, uint64_t no, uint64_t lo,
                      uint64_t hi)
{
    size_t ng = keel_batch_group_count(b), nv = 0, i, j;
    repl_link *l;

    if (ng == 0)
        return;
    r->settle_no++;
    if (r->gcap < ng) {
        struct gref *v = realloc(r->gv, ng * sizeof *v);
        if (v == NULL) {
            repl_lost(r, b, no);
            return;
        }
        r->gv = v;
        r->gcap = ng;
    }
    for (i = 0; i < ng; i++) {
        const char *cap;
        uint16_t shard;
        uint64_t epoch;
        int gst;
        repl_unit *u;

        keel_batch_group(b, i, &gst);
        if (gst != 0 || keel_batch_group_unit(b, i, &cap, &shard, &epoch))
            continue;
        u = repl_unit_find(r, cap, shard);
        if (u == NULL || u->settle != r->settle_no) {
            if (u == NULL && (u = repl_unit_get(r, cap, shard)) == NULL) {
                keel_error("unit (%s, %u): out of memory; writes not sent to "
                           "its backups",
                           keel_cap_name(cap), shard);
                continue;
            }
            if (hi == 0 && early_ok(r, u)) {
                unit_decide(r, u, epoch);
                u->early_no = no;
            } else if (hi == 0) {
                /* Late: sent by the settle of its batch. */
                if (u->late_from <= u->early_no)
                    u->late_from = no;
                u->late_to = no;
                u->settle = r->settle_no;
                u->smode = SM_SKIP;
            } else if (u->late_from != 0 && u->late_from > u->early_no &&
                       u->late_from <= hi && u->late_to >= lo) {
                unit_decide(r, u, epoch);
            } else {
                u->settle = r->settle_no;
                u->smode = SM_SKIP;
            }
        }
        if (u->smode != SM_SEND)
            continue;
        if (u->settle_epoch != epoch)
            u->sdoubt = 1; /* two epochs in one batch: never confirmed */
        if (u->snb == 0 && u->sns == 0 && !u->sdoubt)
            continue;
        r->gv[nv].u = u;
        r->gv[nv].g = i;
        nv++;
    }
    if (nv == 0)
        return;
    qsort(r->gv, nv, sizeof *r->gv, gref_cmp);
    for (i = 0; i < nv; i = j) {
        repl_unit *u = r->gv[i].u;
        uint64_t epoch = u->settle_epoch;
        repl_wait *w;
        unsigned k;

        if (u->sdoubt && u->snb > 0)
            u->seq++; /* sent nowhere: its backups must see the gap */
        for (j = i; j < nv && r->gv[j].u == u; j++) {
            if (u->sdoubt)
                continue;
            if (keel_batch_group_ops(b, r->gv[j].g, piece_op, r) != 0) {
                /* Nothing of this group is sent; the seq it would have
                 * had is skipped, so the backups refuse the rest. */
                keel_error("unit (%s, %u): a write cannot be sent to its "
                           "backups",
                           keel_cap_name(u->cap), u->shard);
                r->plen = 0;
                r->pops = 0;
                u->seq++;
                continue;
            }
            if (r->plen >= REPL_PIECE_MAX && j + 1 < nv &&
                r->gv[j + 1].u == u)
                piece_emit(r, u, epoch);
        }
        if (!u->sdoubt)
            piece_emit(r, u, epoch); /* perhaps empty: it still has a seq */
        w = calloc(1, sizeof *w);
        if (w == NULL) {
            /* Its replies must not go unconfirmed: they fail in doubt. */
            keel_error("unit (%s, %u): out of memory waiting on backups",
                       keel_cap_name(u->cap), u->shard);
            u->sfail = r->sfail = no;
            if (u->tail != NULL)
                u->tail->doubt = 1;
            continue;
        }
        w->epoch = epoch;
        w->seq = u->seq;
        w->no = no;
        w->born = ev_now(r->n->loop);
        w->forgiven = 0;
        w->doubt = u->sdoubt;
        for (k = 0; k < u->snb; k++)
            if (u->sw[k])
                w->b[w->nb++].l = u->sl[k];
        for (k = 0; k < u->sns && w->nb < REPL_MAX_BACKUPS; k++) {
            w->b[w->nb].l = u->ss[k];
            w->b[w->nb++].drop_only = 1;
        }
        if (u->tail != NULL)
            u->tail->next = w;
        else
            u->head = w;
        u->tail = w;
        repl_busy_update(r, u);
    }
    for (l = r->links; l != NULL; l = l->next)
        repl_frame_finish(r, l);
    repl_arm(r, 0);
}

/* ------------------------------------------------------ suspect backups */

static int suspect_find(const repl_unit *u, const repl_link *l,
                        uint64_t epoch)
{
    unsigned i;

    for (i = 0; i < u->nsuspect; i++)
        if (u->suspect[i].l == l && u->suspect[i].epoch == epoch)
            return (int)i;
    return -1;
}

static void suspect_remove(keel_repl *r, repl_unit *u, unsigned i)
{
    u->suspect[i] = u->suspect[--u->nsuspect];
    if (u->nsuspect == 0 && r->nsuspect > 0)
        r->nsuspect--;
}

/* Between two lines on suspect backups (keel_repl's suspect_*). */
#define SUSPECT_WARN_S 1.0

/* Backup l of u at epoch is suspect: none of its acks is waited on any
 * more, only the map showing it out (its drop is asked at once, by the
 * tick). 1 when it was made so now. */
static int suspect_add(keel_repl *r, repl_unit *u, uint64_t epoch,
                       repl_link *l, const char *why)
{
    if (suspect_find(u, l, epoch) >= 0 || u->nsuspect == REPL_MAX_BACKUPS)
        return 0;
    if (u->nsuspect == 0)
        r->nsuspect++;
    u->suspect[u->nsuspect].l = l;
    u->suspect[u->nsuspect].since = ev_now(r->n->loop);
    u->suspect[u->nsuspect++].epoch = epoch;
    STAT_ADD(r->n, repl_suspects, 1);
    if (ev_now(r->n->loop) - r->suspect_warned_at < SUSPECT_WARN_S) {
        r->suspect_unlogged++;
        r->suspect_why = why;
        return 1;
    }
    r->suspect_warned_at = ev_now(r->n->loop);
    keel_warn("unit (%s, %u): backup %s may not hold what this node "
              "holds (%s); asking the controller to drop it from the "
              "in-sync set, it then catches up",
              keel_cap_name(u->cap), u->shard, l->name, why);
    return 1;
}

/* Every in-sync backup of u at epoch may hold writes this node does not
 * (suspect_add). */
static void suspect_all(keel_repl *r, repl_unit *u, uint64_t epoch,
                        const char *why)
{
    size_t nrefs, i;

    if (!repl_unit_ours(r, u->cap, u->shard, epoch))
        return;
    nrefs = insync(r, u, epoch);
    for (i = 0; i < nrefs; i++) {
        repl_link *l = repl_link_get(r, &r->refs[i]);
        if (l != NULL)
            suspect_add(r, u, epoch, l, why);
    }
    if (u->nsuspect > 0)
        repl_arm(r, 0);
}

/* Backup l refused, for a gap (EPROTO), the piece of u right after the
 * last it acknowledged at that epoch: it has no memory of the stream, as
 * after a restart, and takes no piece of it again until a catch-up sends
 * it a snapshot. (A gap refusal of a later piece is a piece before it
 * refused for another reason, a fence or a failed commit, which the
 * resend from the head mends; a backup that acknowledged nothing yet at
 * the epoch may only lag the map.) Waiting the lag for it would hold
 * every reply of u that long for nothing: an in-sync backup is made
 * suspect, so that its drop is asked at once. */
static void suspect_restarted(keel_repl *r, repl_unit *u, uint64_t epoch,
                              repl_link *l)
{
    if (!repl_unit_ours(r, u->cap, u->shard, epoch) ||
        !in_refs(r, insync(r, u, epoch), l->name))
        return;
    if (suspect_add(r, u, epoch, l,
                    "it took none of this stream's pieces: it restarted"))
        repl_arm(r, 0);
}

/* The tick: asks the drop of every suspect backup (once per backup and
 * epoch, lag_unit remembers), and forgets those the map shows out. */
static void suspect_tick(keel_repl *r)
{
    ev_tstamp now = ev_now(r->n->loop);
    double held = keel_failpoint(KEEL_FP_SUSPECT_DROP_DELAY_MS) / 1000.0;
    size_t pos = 0;
    void *item;

    if (r->suspect_unlogged > 0 &&
        now - r->suspect_warned_at >= SUSPECT_WARN_S) {
        keel_warn("%llu more backups made suspect since the last such line "
                  "(the last: %s); each is dropped from its unit's in-sync "
                  "set and catches up",
                  (unsigned long long)r->suspect_unlogged, r->suspect_why);
        r->suspect_unlogged = 0;
        r->suspect_warned_at = now;
    }
    if (r->nsuspect == 0)
        return;
    while (keel_hmap_next(&r->units, &pos, &item)) {
        repl_unit *u = item;
        unsigned i = 0;
        while (i < u->nsuspect) {
            repl_link *l = u->suspect[i].l;
            uint64_t epoch = u->suspect[i].epoch;
            int what;
            if (held > 0 && now - u->suspect[i].since < held) {
                i++; /* a test build's failpoint */
                continue;
            }
            what = lag_unit(r, u, epoch, l, 1);
            if (what == LAG_WAIT) {
                i++;
                continue;
            }
            suspect_remove(r, u, i);
            repl_forget_link(r, u, epoch, l, what == LAG_GIVE_UP);
            repl_unit_progress(r, u);
        }
    }
}

/* --------------------------------------------------------- the hooks */

uint64_t keel__repl_flushed(keel_node *n, keel_batch *b)
{
    keel_repl *r = n->repl;

    if (r == NULL || keel_cluster_replicas(repl_cl(r)) < 2)
        return 0;
    r->flush_no++;
    repl_send(r, b, r->flush_no, 0, 0);
    /* The commit that follows may block the loop (inline): the frames go
     * out first, so that the backups' flushes run beside it. */
    keel__peers_push(r->rt->peers);
    return r->flush_no;
}

void keel__repl_flush_lost(keel_node *n, keel_batch *b, uint64_t no)
{
    keel_repl *r = n->repl;
    size_t i, ng = keel_batch_group_count(b);

    if (r == NULL || no == 0)
        return;
    r->commits_failing = 1;
    for (i = 0; i < ng; i++) {
        const char *cap;
        uint16_t shard;
        uint64_t epoch;
        repl_unit *u;
        if (keel_batch_group_unit(b, i, &cap, &shard, &epoch) == 0 &&
            (u = repl_unit_find(r, cap, shard)) != NULL &&
            u->early_no == no)
            suspect_all(r, u, epoch, "writes sent were never committed");
    }
}

int keel__repl_settled(keel_node *n, keel_batch *b, int status, uint64_t lo,
                       uint64_t hi)
{
    keel_repl *r = n->repl;
    size_t i, ng;
    int suspects = 0;

    if (r == NULL)
        return 0;
    if (hi > r->settled_no)
        r->settled_no = hi;
    if (status != 0 && !r->commits_failing) {
        r->commits_failing = 1;
        keel_warn("replication: a commit here failed (%s); writes go to "
                  "the backups only once committed here, until a commit "
                  "succeeds",
                  keel_strerror(status));
    } else if (status == 0 && r->commits_failing) {
        r->commits_failing = 0;
        keel_info("replication: commits succeed again; writes go to the "
                  "backups beside their commit here");
    }
    ng = hi != 0 ? keel_batch_group_count(b) : 0;
    for (i = 0; i < ng; i++) {
        /* A group that did not commit here but may have left early: its
         * unit's backups may hold it. */
        const char *cap;
        uint16_t shard;
        uint64_t epoch;
        int gst;
        repl_unit *u;
        keel_batch_group(b, i, &gst);
        if ((status == 0 && gst == 0) ||
            keel_batch_group_unit(b, i, &cap, &shard, &epoch) != 0 ||
            (u = repl_unit_find(r, cap, shard)) == NULL || u->early_no < lo)
            continue;
        if (!repl_unit_ours(r, cap, shard, epoch))
            u->fail_doubt = 1; /* cleared by the unit's next send */
        else if (keel_store_broken(n->store))
            continue; /* this node stops; its writes were in doubt, and
                         the backups, in sync, take the unit as they are
                         (keel__cluster_rt_store_check) */
        else
            suspect_all(r, u, epoch, "a commit here failed after its "
                                     "writes left");
        suspects |= u->nsuspect > 0 || u->fail_doubt;
    }
    /* After the suspects: what goes late now goes to none of them. */
    if (hi != 0 && status == 0)
        repl_send(r, b, hi, lo, hi);
    return n->repl_busy > 0 || suspects ||
           (r->sfail != 0 && r->sfail >= lo && r->sfail <= hi);
}

int keel__repl_hold(keel_node *n, keel_req *req, uint64_t lo, uint64_t hi)
{
    keel_repl *r = n->repl;
    keel_actor *a = req->actor;
    repl_unit *u;
    repl_wait *w, *at = NULL;

    if (r == NULL || a == NULL)
        return 0;
    if (r->sfail != 0 && r->sfail >= lo && r->sfail <= hi) {
        u = repl_unit_find(r, a->type->capability, a->shard);
        if (r->sfail_all == r->sfail ||
            (u != NULL && u->sfail == r->sfail)) {
            keel__req_doubt(n, req, doubt_msg);
            return 1;
        }
    }
    if (n->repl_busy == 0)
        return 0;
    u = repl_unit_find(r, a->type->capability, a->shard);
    if (u == NULL)
        return 0;
    /* The last entry made by a flush of this batch or before it, in list
     * order (an entry made at a settle, for writes that went late, can
     * follow one made at a later flush): those after it hold later
     * writes only. None left: its own went (entries leave in order), and
     * what remains came later. While backups of the unit are suspect,
     * the last entry: every reply waits until they are out. */
    if (u->nsuspect > 0) {
        at = u->tail;
    } else {
        for (w = u->head; w != NULL; w = w->next)
            if (w->no <= hi)
                at = w;
    }
    if ((w = at) == NULL)
        return 0;
    wait_add(n, w, req);
    if (w->doubt || w->nb == 0)
        repl_arm(r, 0); /* released at once, after the replies before it */
    return 1;
}

int keel__repl_hold_failed(keel_node *n, keel_req *req)
{
    keel_repl *r = n->repl;
    keel_actor *a = req->actor;
    repl_unit *u;
    repl_wait *w;
    uint64_t epoch = 0;
    unsigned i;

    if (r == NULL || a == NULL ||
        (u = repl_unit_find(r, a->type->capability, a->shard)) == NULL)
        return 0;
    if (u->fail_doubt) {
        /* Its writes left before the commit here failed, and the unit is
         * not this node's any more: the new primary may hold them. */
        keel__req_doubt(n, req, doubt_msg);
        return 1;
    }
    if (u->nsuspect == 0)
        return 0;
    for (i = 0; i < u->nsuspect; i++)
        if (u->suspect[i].epoch > epoch)
            epoch = u->suspect[i].epoch;
    w = u->tail;
    if (w == NULL || w->seq != UINT64_MAX || w->epoch != epoch) {
        if ((w = calloc(1, sizeof *w)) == NULL) {
            /* Out of memory: a suspect backup may hold the write. */
            keel__req_doubt(n, req, doubt_msg);
            return 1;
        }
        w->epoch = epoch;
        w->seq = UINT64_MAX; /* no ack completes it */
        w->no = 0;           /* holds no writes */
        w->born = ev_now(n->loop);
        w->forgiven = 0;
        for (i = 0; i < u->nsuspect; i++)
            if (u->suspect[i].epoch == epoch) {
                w->b[w->nb].l = u->suspect[i].l;
                w->b[w->nb++].drop_only = 1;
            }
        if (u->tail != NULL)
            u->tail->next = w;
        else
            u->head = w;
        u->tail = w;
        repl_busy_update(r, u);
    }
    req->failed_hold = 1;
    wait_add(n, w, req);
    repl_arm(r, 0);
    return 1;
}

static void forgot_remove(keel_repl *r, repl_unit *u, unsigned i)
{
    u->forgot[i] = u->forgot[--u->nforgot];
    r->nforgot--;
}

void repl_forgot_note(keel_repl *r, repl_unit *u, repl_link *l,
                      uint64_t epoch)
{
    unsigned i;

    for (i = 0; i < u->nforgot; i++)
        if (u->forgot[i].l == l) {
            if (epoch > u->forgot[i].epoch)
                u->forgot[i].epoch = epoch;
            return;
        }
    if (u->nforgot == REPL_MAX_BACKUPS) {
        /* Full (backups of older epochs the map has not moved past
         * yet): the oldest goes. */
        unsigned old = 0;
        for (i = 1; i < u->nforgot; i++)
            if (u->forgot[i].epoch < u->forgot[old].epoch)
                old = i;
        forgot_remove(r, u, old);
    }
    u->forgot[u->nforgot].l = l;
    u->forgot[u->nforgot++].epoch = epoch;
    r->nforgot++;
}

void repl_forgot_clear(keel_repl *r, repl_unit *u, const repl_link *l,
                       uint64_t epoch)
{
    unsigned i;

    for (i = 0; i < u->nforgot; i++)
        if (u->forgot[i].l == l && u->forgot[i].epoch <= epoch) {
            forgot_remove(r, u, i);
            return;
        }
}

/* A backup whose counted catch-up this node forgot (repl_forgot_note) and
 * that the map has in sync at that epoch, this node the primary there,
 * got there by the add that catch-up asked, honoured after this node
 * stopped counting it: it may lack pieces that writes answered since
 * (in doubt, or by this node at the same epoch after its session came
 * back) were sent it. It is made suspect: its acks stop counting, and
 * its drop is asked at once. Entries of an epoch the map has moved past
 * go: no add asked at it can be honoured any more. */
static void repl_forgot_check(keel_repl *r, repl_unit *u)
{
    const keel_map_unit *mu;
    uint64_t now_epoch = 0;
    unsigned i = 0;
    int ci;

    if (u->nforgot > 0 && (mu = map_unit(r, u->cap, u->shard, &ci)) != NULL)
        now_epoch = mu->shard_epoch;

    while (i < u->nforgot) {
        repl_link *l = u->forgot[i].l;
        uint64_t e = u->forgot[i].epoch;
        if (now_epoch > e) {
            forgot_remove(r, u, i);
            continue;
        }
        if (!repl_unit_ours(r, u->cap, u->shard, e) ||
            !in_refs(r, insync(r, u, e), l->name)) {
            i++; /* not in sync there (yet) */
            continue;
        }
        if (suspect_add(r, u, e, l,
                        "its catch-up was forgotten here before the add "
                        "it asked was honoured"))
            repl_arm(r, 0);
        else if (suspect_find(u, l, e) < 0) {
            i++; /* no room among the suspects yet: looked at again */
            continue;
        }
        forgot_remove(r, u, i);
    }
}

void keel__repl_resumed(keel_node *n, const char *cap, uint32_t shard,
                        uint64_t epoch)
{
    keel_repl *r = n->repl;
    repl_unit *u;

    if (r == NULL || keel_cluster_replicas(repl_cl(r)) < 2 ||
        keel_cluster_insync_backups(repl_cl(r), cap, shard, epoch, r->refs,
                                    REPL_MAX_BACKUPS) == 0 ||
        (u = repl_unit_get(r, cap, shard)) == NULL)
        return;
    repl_forgot_check(r, u);
    if (r->clean_start || u->epoch == epoch || u->resumed_epoch == epoch)
        return; /* this process sent its pieces there, or was here
                 * already: nothing was lost since */
    u->resumed_epoch = epoch;
    suspect_all(r, u, epoch, "this node served the unit at this epoch "
                             "before, and may have lost writes it had sent");
}

/* Whether an entry of u still holds replies or writes not yet answered
 * (those answered at a fence only stand before later reads). */
static int unit_holds(const repl_unit *u)
{
    const repl_wait *w;

    for (w = u->head; w != NULL; w = w->next)
        if (!w->answered)
            return 1;
    return 0;
}

int keel__repl_unit_busy(keel_node *n, const char *cap, uint32_t shard)
{
    repl_unit *u;

    if (n->repl == NULL || n->repl_busy == 0)
        return 0;
    u = repl_unit_find(n->repl, cap, shard);
    return u != NULL && unit_holds(u);
}

int keel__repl_unit_pending(keel_node *n, const char *cap, uint32_t shard)
{
    repl_unit *u;

    if (n->repl == NULL || n->repl_busy == 0)
        return 0;
    u = repl_unit_find(n->repl, cap, shard);
    return u != NULL && u->head != NULL;
}

int keel__repl_unit_unacked(keel_node *n, const char *cap, uint32_t shard,
                            uint64_t epoch)
{
    keel_repl *r = n->repl;
    const repl_link *l;
    const repl_unit *u;

    if (r == NULL || r->nframes == 0 ||
        (u = repl_unit_find(r, cap, shard)) == NULL || u->unacked == 0)
        return 0;
    for (l = r->links; l != NULL; l = l->next) {
        const repl_frame *f;
        for (f = l->head; f != NULL; f = f->next) {
            uint16_t k;
            for (k = 0; k < f->nunits; k++) {
                const struct rf_unit *x = &f->units[k];
                /* seq 0: a confirm round, no writes */
                if (!x->done && x->u == u && x->epoch == epoch && x->seq != 0)
                    return 1;
            }
        }
    }
    return 0;
}

int keel__repl_busy(keel_node *n)
{
    return n->repl != NULL && n->repl_busy > 0;
}

int keel__repl_stop_busy(keel_node *n)
{
    const repl_unit *u;

    if (!keel__repl_busy(n))
        return 0;
    if (keel__cluster_rt_serving(n))
        return 1;
    /* Fenced: the entries whose replies were answered in doubt (tick_cb)
     * stand only before reads this node might serve if its lease came
     * back; it leaves instead. */
    for (u = n->repl->busy; u != NULL; u = u->bnext)
        if (unit_holds(u))
            return 1;
    return 0;
}

void keel__repl_map_applied(keel_node *n)
{
    keel_repl *r = n->repl;
    repl_unit *u, *unext;
    repl_link *l;

    if (r == NULL)
        return;
    {
        /* The controller's in-sync set changes, counted on this thread
         * when its map write landed; the map follows it here. */
        uint64_t e, s, f;
        keel_cluster_repl_counts(repl_cl(r), &e, &s, &f);
        STAT_SET(n, isr_expansions, e);
        STAT_SET(n, isr_shrinks, s);
        STAT_SET(n, failovers, f);
    }
    repl_catchup_map_applied(r);
    if (r->nforgot > 0) {
        size_t pos = 0;
        void *item;
        while (keel_hmap_next(&r->units, &pos, &item))
            repl_forgot_check(r, item);
    }
    if (r->nsuspect > 0) {
        /* A suspect backup the map shows out of the in-sync set (or a
         * unit no longer this node's there) is suspect no more: it
         * catches up, or is another primary's concern. */
        size_t pos = 0;
        void *item;
        while (keel_hmap_next(&r->units, &pos, &item)) {
            repl_unit *su = item;
            unsigned i = 0;
            while (i < su->nsuspect) {
                uint64_t e = su->suspect[i].epoch;
                repl_link *sl = su->suspect[i].l;
                if (repl_unit_ours(r, su->cap, su->shard, e) &&
                    in_refs(r, insync(r, su, e), sl->name)) {
                    i++;
                    continue;
                }
                suspect_remove(r, su, i);
                repl_forget_link(r, su, e, sl,
                                 !repl_unit_ours(r, su->cap, su->shard, e));
                repl_unit_progress(r, su);
            }
        }
    }
    /* Entries: a backup the map shows out of the unit's in-sync set at
     * the entry's epoch (this node still its primary there) is not waited
     * for any more. */
    for (u = r->busy; u != NULL; u = unext) {
        uint64_t e = 0;
        size_t nrefs = 0;
        repl_wait *w;
        unext = u->bnext;
        for (w = u->head; w != NULL; w = w->next) {
            unsigned i;
            if (w->epoch != e) {
                e = w->epoch;
                nrefs = repl_unit_ours(r, u->cap, u->shard, e)
                            ? repl_catchup_counted(r, u, e, insync(r, u, e))
                            : SIZE_MAX;
            }
            if (nrefs == SIZE_MAX)
                continue; /* not ours there: the lag decides */
            for (i = 0; i < w->nb; i++)
                if (!w->b[i].done && !in_refs(r, nrefs, w->b[i].l->name))
                    repl_forget_link(r, u, e, w->b[i].l, 0);
        }
        repl_unit_progress(r, u);
    }
    /* Frames (their units may have no entry left). */
    for (l = r->links; l != NULL; l = l->next) {
        repl_frame *f, *next;
        for (f = l->head; f != NULL; f = next) {
            uint16_t k;
            next = f->next;
            for (k = 0; k < f->nunits && f->listed; k++) {
                struct rf_unit *x = &f->units[k];
                size_t nrefs;
                if (x->done ||
                    !repl_unit_ours(r, x->u->cap, x->u->shard, x->epoch))
                    continue;
                nrefs = insync(r, x->u, x->epoch);
                if (!in_refs(r, nrefs, l->name) &&
                    !repl_catchup_has(x->u, x->epoch, l)) {
                    /* May unlist and free f, and frames after it of l:
                     * x goes with f, so the unit is kept aside; the walk
                     * of l starts again. */
                    repl_unit *xu = x->u;
                    repl_forget_link(r, xu, x->epoch, l, 0);
                    repl_unit_progress(r, xu);
                    next = l->head;
                    break;
                }
            }
        }
    }
}

/* ------------------------------------------------------- the read rule */

/* The unit's confirm round w, not sent yet, has writes listed behind it
 * since it was made (a batch settled, or an inline commit, between two
 * reads of this loop iteration). A read that joins it now may have read
 * those writes, and entries leave in list order: joined where it is, the
 * read would leave without waiting for them, and a backup that confirms
 * the round but never takes one of them (a restart, a failed commit)
 * could be promoted without a write this read showed. So the round moves
 * behind them; the reads in it already wait a little longer, which no
 * rule forbids. Its lag counts from now: nothing of it was sent yet. */
static void conf_to_tail(keel_node *n, repl_unit *u, repl_wait *w)
{
    repl_wait *p;

    if (u->head == w) {
        u->head = w->next;
    } else {
        for (p = u->head; p != NULL && p->next != w; p = p->next)
            ;
        if (p == NULL)
            return; /* not listed: cannot happen (progress clears conf) */
        p->next = w->next;
    }
    w->next = NULL;
    u->tail->next = w;
    u->tail = w;
    w->born = ev_now(n->loop);
}

/* A reply of a turn that wrote nothing is as dangerous as a write's: if
 * a backup was promoted over this node (this node lost its session
 * without knowing, its lease judged wrongly), the state it read may be
 * stale. So it leaves only once every in-sync backup of its unit, as the
 * applied map shows them, has confirmed after the turn ran that it holds
 * no newer epoch of the unit: an empty piece of seq 0 at the unit's
 * epoch, one frame per backup node for all the units with reads in one
 * loop iteration (flush_cb). A promotion needs an in-sync backup, which
 * records the new epoch before the new primary serves; one that answered
 * the round had not, so whatever the new primary acknowledged came after
 * the read. A unit without in-sync backups needs no round: nobody can be
 * promoted over this node. */
int keel__repl_read(keel_node *n, keel_req *req)
{
    keel_repl *r = n->repl;
    keel_actor *a = req->actor;
    const char *cap;
    repl_unit *u;
    repl_wait *w;
    uint64_t epoch;
    size_t nrefs, i;

    if (r == NULL || a == NULL)
        return 0;
    if (keel_cluster_replicas(repl_cl(r)) < 2)
        return n->repl_busy > 0 && keel__repl_hold(n, req, 0, UINT64_MAX);
    cap = a->type->capability;
    epoch = keel_cluster_write_epoch(repl_cl(r), cap, a->shard);
    nrefs = epoch > 0 ? keel_cluster_insync_backups(repl_cl(r), cap, a->shard,
                                                    epoch, r->refs,
                                                    REPL_MAX_BACKUPS)
                      : 0;
    u = repl_unit_find(r, cap, a->shard);
    if (u != NULL && u->ncu > 0 && epoch > 0)
        nrefs = repl_catchup_counted(r, u, epoch, nrefs);
    if (nrefs == 0)
        return n->repl_busy > 0 && keel__repl_hold(n, req, 0, UINT64_MAX);
    if (u == NULL && (u = repl_unit_get(r, cap, a->shard)) == NULL) {
        keel__req_doubt(n, req, doubt_msg); /* a read: not served */
        return 1;
    }
    if (u->stale >= epoch) {
        keel__req_doubt(n, req, doubt_msg);
        return 1;
    }
    if ((w = u->conf) != NULL && w->epoch == epoch && w != u->tail)
        conf_to_tail(n, u, w);
    if ((w = u->conf) == NULL || w->epoch != epoch) {
        if ((w = calloc(1, sizeof *w)) == NULL) {
            keel__req_doubt(n, req, doubt_msg);
            return 1;
        }
        w->confirm = 1;
        w->cid = ++u->cid;
        w->epoch = epoch;
        w->born = ev_now(n->loop);
        w->forgiven = 0;
        for (i = 0; i < nrefs; i++) {
            repl_link *l = repl_link_get(r, &r->refs[i]);
            if (l == NULL) {
                w->doubt = 1; /* out of memory: cannot be confirmed */
                continue;
            }
            /* A suspect may lack what this node holds (a restart): the
             * read may show writes it has not, and it could be promoted
             * until the map shows it out. So its round is not asked for,
             * and the read waits for that map, as the unit's writes do. */
            w->b[w->nb].drop_only = suspect_find(u, l, epoch) >= 0;
            w->b[w->nb++].l = l;
        }
        if (u->tail != NULL)
            u->tail->next = w;
        else
            u->head = w;
        u->tail = w;
        repl_busy_update(r, u);
        if (u->conf == NULL) {
            u->cnext = r->cpend;
            r->cpend = u;
        }
        u->conf = w;
        if (r->started && !ev_is_active(&r->flush))
            ev_prepare_start(n->loop, &r->flush);
    }
    wait_add(n, w, req);
    return 1;
}

/* Sends the confirm rounds of this loop iteration: one frame per backup
 * node. */
static void confirm_flush(keel_repl *r)
{
    repl_unit *u;
    repl_link *l;

    while ((u = r->cpend) != NULL) {
        repl_wait *w = u->conf;
        unsigned i;
        r->cpend = u->cnext;
        u->cnext = NULL;
        u->conf = NULL;
        if (w == NULL || w->doubt)
            continue; /* failed meanwhile */
        r->plen = 0;
        r->pops = 0;
        for (i = 0; i < w->nb; i++) {
            repl_frame *f;
            if (w->b[i].drop_only)
                continue; /* a suspect: the map's drop completes it */
            if (repl_frame_add_piece(r, w->b[i].l, u, w->epoch, 0) != 0) {
                w->doubt = 1;
                continue;
            }
            f = w->b[i].l->build;
            f->units[f->nunits - 1].cid = w->cid;
        }
        STAT_ADD(r->n, repl_confirms, 1);
        if (w->doubt)
            repl_unit_progress(r, u);
    }
    for (l = r->links; l != NULL; l = l->next)
        repl_frame_finish(r, l);
    repl_arm(r, 0);
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    keel_repl *r = w->data;

    (void)revents;
    ev_prepare_stop(loop, w);
    confirm_flush(r);
}

/* Whether the applied map has the unit at a newer epoch than `epoch`:
 * another node is (or is being made) its primary there, and a piece or a
 * confirm round at `epoch` comes from a primary that was replaced. */
/* ---------------------------------------------------------- the tick */


/* Backup l has not acknowledged (u, epoch) within the lag bound, or is
 * suspect (it may hold writes this node lacks). */
static int lag_unit(keel_repl *r, repl_unit *u, uint64_t epoch,
                    repl_link *l, int suspect)
{
    unsigned i, free_slot = REPL_MAX_BACKUPS;
    int rc;

    if (!repl_unit_ours(r, u->cap, u->shard, epoch))
        return LAG_GIVE_UP; /* cannot be dropped by this node: in doubt */
    if (u->ncu > 0 && (rc = repl_catchup_lag(r, u, epoch, l)) >= 0)
        return rc;
    if (!in_refs(r, insync(r, u, epoch), l->name))
        return LAG_OUT;
    /* Asked again at every look: the coordinator keeps one request per
     * backup and epoch, but forgets them all with an expired session
     * (the unit may come back here at the same epoch). What is
     * remembered here only keeps the log and the count to one. */
    rc = keel_cluster_request_drop(repl_cl(r), u->cap, u->shard, epoch,
                                   l->name);
    for (i = 0; i < REPL_MAX_BACKUPS; i++) {
        if (u->asked[i].l == l && u->asked[i].epoch == epoch)
            return LAG_WAIT; /* asked before: logged then */
        if (free_slot == REPL_MAX_BACKUPS &&
            (u->asked[i].l == NULL || u->asked[i].epoch < epoch))
            free_slot = i;
    }
    if (rc != 0) {
        if (rc != KEEL_ENOTFOUND)
            keel_warn("unit (%s, %u): cannot ask to drop backup %s: %s",
                      keel_cap_name(u->cap), u->shard, l->name,
                      keel_strerror(rc));
        return LAG_WAIT; /* the next tick looks again */
    }
    if (!suspect)
        keel_warn("unit (%s, %u): backup %s has not acknowledged its writes "
                  "for %.0f ms: asking the controller to drop it from the "
                  "in-sync set",
                  keel_cap_name(u->cap), u->shard, l->name, r->lag_s * 1000);
    STAT_ADD(r->n, repl_drop_requests, 1);
    if (free_slot == REPL_MAX_BACKUPS)
        free_slot = 0;
    u->asked[free_slot].l = l;
    u->asked[free_slot].epoch = epoch;
    return LAG_WAIT;
}

static void lag_check(keel_repl *r, ev_tstamp now)
{
    repl_unit *u, *unext;
    repl_link *l;

    for (u = r->busy; u != NULL; u = unext) {
        repl_wait *w;
        unext = u->bnext;
        for (w = u->head; w != NULL && now - w->born >= r->lag_s;
             w = w->next) {
            unsigned i;
            for (i = 0; i < w->nb; i++) {
                int what;
                if (w->b[i].done)
                    continue;
                what = lag_unit(r, u, w->epoch, w->b[i].l, 0);
                if (what != LAG_WAIT)
                    repl_forget_link(r, u, w->epoch, w->b[i].l,
                                     what == LAG_GIVE_UP);
            }
        }
        repl_unit_progress(r, u);
    }
    for (l = r->links; l != NULL; l = l->next) {
        repl_frame *f, *next;
        for (f = l->head; f != NULL && now - f->born >= r->lag_s; f = next) {
            uint16_t k;
            next = f->next;
            for (k = 0; k < f->nunits && f->listed; k++) {
                struct rf_unit *x = &f->units[k];
                int what;
                if (x->done)
                    continue;
                what = lag_unit(r, x->u, x->epoch, l, 0);
                if (what != LAG_WAIT) {
                    repl_unit *xu = x->u; /* x may go with f */
                    repl_forget_link(r, xu, x->epoch, l,
                                     what == LAG_GIVE_UP);
                    repl_unit_progress(r, xu);
                    next = l->head;
                    break;
                }
            }
        }
    }
}

/* Publishes each link's lag (its oldest unacknowledged frame's age) for
 * keel__repl_lag and the largest in the statistics. The ticks stop once
 * nothing waits: the last one publishes zeros. */
static void lag_publish(keel_repl *r, ev_tstamp now)
{
    repl_link *l;
    size_t k = 0, nl = 0;
    double worst = 0;

    for (l = r->links; l != NULL; l = l->next)
        nl++;
    pthread_mutex_lock(&r->lag_mu);
    if (nl > r->lagcap) {
        keel_repl_lag *v = realloc(r->lagv, nl * sizeof *v);
        if (v == NULL) { /* the next tick tries again */
            pthread_mutex_unlock(&r->lag_mu);
            return;
        }
        r->lagv = v;
        r->lagcap = nl;
    }
    for (l = r->links; l != NULL; l = l->next, k++) {
        keel_repl_lag *x = &r->lagv[k];
        snprintf(x->backup, sizeof x->backup, "%s", l->name);
        x->lag_s = l->head != NULL && now > l->head->born
                       ? now - l->head->born
                       : 0;
        x->frames = l->nframes;
        if (x->lag_s > worst)
            worst = x->lag_s;
    }
    r->nlag = k;
    pthread_mutex_unlock(&r->lag_mu);
    STAT_SET(r->n, repl_lag_ms, (uint64_t)(worst * 1000));
}

/* What stall_forgive may still move a start time forward by, of d: at
 * most cap in all, for each wait and frame. */
static ev_tstamp forgive_by(ev_tstamp cap, ev_tstamp *forgiven, ev_tstamp d)
{
    ev_tstamp room = cap - *forgiven;

    if (room <= 0)
        return 0;
    if (d > room)
        d = room;
    *forgiven += d;
    return d;
}

/* The loop was held up for d seconds: what waits for backups, and the
 * frames on their way, count their age from d later. Acks that came
 * meanwhile wait unread in the sockets (this timer runs before their
 * reads): judged now, backups that answered in time would be asked out of
 * the in-sync set for this node's own stall. Each wait and frame is
 * forgiven at most the lease's hold bound (or the lag bound, if longer)
 * in all: any one stall the lease survives is forgiven whole (a longer
 * one fences the node, and its replies go by the lease rules), while a
 * loop held a little at every turn, which would otherwise forgive a
 * backup that is really silent nearly all the time that passes, finds it
 * within the lag bound plus that. */
static void stall_forgive(keel_repl *r, ev_tstamp d)
{
    ev_tstamp cap = keel__cluster_rt_turn_max_ms(r->n) / 1000.0;
    repl_unit *u;
    repl_wait *w;
    repl_link *l;
    repl_frame *f;

    if (cap < r->lag_s)
        cap = r->lag_s;
    for (u = r->busy; u != NULL; u = u->bnext)
        for (w = u->head; w != NULL; w = w->next)
            w->born += forgive_by(cap, &w->forgiven, d);
    for (l = r->links; l != NULL; l = l->next)
        for (f = l->head; f != NULL; f = f->next)
            f->born += forgive_by(cap, &f->forgiven, d);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    keel_repl *r = t->data;
    keel_node *n = r->n;
    ev_tstamp now = ev_now(loop);
    repl_unit *u, *unext;
    repl_link *l;

    (void)revents;
    if (r->tick_seen > 0 && now - r->tick_seen > REPL_STALL_S)
        stall_forgive(r, now - r->tick_seen - REPL_TICK_S);
    r->tick_seen = now;
    if (n->repl_busy > 0 && !keel__cluster_rt_serving(n)) {
        /* Fenced: no reply may leave as a success. What waits is answered
         * now, by the lease rules (in doubt). A write's entry stays,
         * though, until its backups have it or are out of the in-sync
         * set, as it would have: if the lease comes back (the session
         * lived), a read served then waits behind it, as behind any
         * write not yet on every backup. Without it, the read's confirm
         * round could pass a backup that refused the write, show the
         * write, and that backup, still in sync, be promoted without it.
         * A confirm round's entry goes as before (its turns wrote
         * nothing), once no write's is ahead of it. */
        for (u = r->busy; u != NULL; u = unext) {
            repl_wait *w;
            unext = u->bnext;
            for (w = u->head; w != NULL; w = w->next) {
                unsigned i;
                if (w->reqs.head != NULL)
                    wait_answer(r, w, 1);
                if (!w->confirm) {
                    w->answered = 1;
                    continue;
                }
                /* Nothing more to wait for from its backups: the lag
                 * must not take them for silent while it stands behind
                 * a write. */
                w->doubt = 1;
                for (i = 0; i < w->nb; i++)
                    w->b[i].done = 1;
            }
            repl_unit_progress(r, u);
        }
    }
    for (u = r->busy; u != NULL; u = unext) {
        unext = u->bnext;
        repl_unit_progress(r, u);
    }
    lag_check(r, now);
    suspect_tick(r);
    for (l = r->links; l != NULL; l = l->next) {
        repl_frame *f;
        if (!l->retry || now < l->retry_at || l->inflight > 0)
            continue;
        l->retry = 0;
        for (f = l->head; f != NULL && !l->retry; f = f->next)
            frame_send(r, f);
    }
    repl_catchup_tick(r);
    lag_publish(r, now);
    if (r->busy == NULL && r->nframes == 0 && r->cuhead == NULL &&
        !r->rescan && r->nsuspect == 0 && r->suspect_unlogged == 0)
        ev_timer_stop(loop, t);
}

keel_repl_lag *keel__repl_lag(keel_node *n, size_t *count)
{
    keel_repl *r = n->repl;
    keel_repl_lag *v = NULL;

    *count = 0;
    if (r == NULL)
        return NULL;
    pthread_mutex_lock(&r->lag_mu);
    if (r->nlag > 0 && (v = malloc(r->nlag * sizeof *v)) != NULL) {
        memcpy(v, r->lagv, r->nlag * sizeof *v);
        *count = r->nlag;
    }
    pthread_mutex_unlock(&r->lag_mu);
    return v;
}

/* ---------------------------------------------------------- lifecycle */

static uint64_t stream_now(void)
{
    struct timespec ts;
    uint64_t v;

    /* Larger for each start of the process, as long as the clock does not
     * go back across a restart; if it does, the backups refuse the new
     * stream and are dropped from the in-sync set: never a silent loss. */
    clock_gettime(CLOCK_REALTIME, &ts);
    v = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return v != 0 ? v : 1;
}

int keel__repl_create(keel_node *n)
{
    keel_repl *r;

    if (n->cluster == NULL)
        return 0;
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return KEEL_ENOMEM;
    r->n = n;
    r->rt = n->cluster;
    r->stream = stream_now();
    r->lag_s = (n->opts.repl_lag_ms != 0 ? n->opts.repl_lag_ms
                                         : REPL_LAG_MS_DEFAULT) /
               1000.0;
    repl_catchup_rate(r, n->opts.catchup_mib_s);
    keel_hmap_init(&r->units);
    keel_hmap_init(&r->bunits);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->lag_mu, NULL);
    ev_timer_init(&r->tick, tick_cb, REPL_TICK_S, REPL_TICK_S);
    r->tick.data = r;
    ev_async_init(&r->wake, repl_backup_wake_cb);
    r->wake.data = r;
    ev_prepare_init(&r->flush, flush_cb);
    r->flush.data = r;
    repl_catchup_init(r);
    n->repl = r;
    return 0;
}

/* The clean-stop marker: a file in the data directory, written by an
 * orderly stop once every write this node sent is durable in its store,
 * no backup was left suspect and no write was answered in doubt, and
 * taken (removed, durably) at the next start. Present at a start, the
 * store holds every write its last run sent to backups, and its backups
 * in sync every write the store holds: units it gets back at the same
 * epoch need no suspicion. Absent (a crash, a failed removal, a write in
 * doubt), they do. */
#define CLEAN_FILE "clean-stop"
#define CLEAN_TEXT "clean\n"

static int dir_sync(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

static int clean_take(const char *dir)
{
    char path[4096], buf[16];
    ssize_t got;
    int fd, clean;

    if (snprintf(path, sizeof path, "%s/%s", dir, CLEAN_FILE) >=
        (int)sizeof path)
        return 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;
    got = read(fd, buf, sizeof buf);
    close(fd);
    clean = got == (ssize_t)strlen(CLEAN_TEXT) &&
            memcmp(buf, CLEAN_TEXT, strlen(CLEAN_TEXT)) == 0;
    /* Gone for good before anything is served, or not trusted: a crash
     * of this run must not find it. */
    if (unlink(path) != 0 || dir_sync(dir) != 0) {
        keel_warn("cannot remove %s: %s; units this node gets back count "
                  "as after a crash",
                  path, strerror(errno));
        return 0;
    }
    return clean;
}

void keel__repl_stopped_clean(keel_node *n)
{
    keel_repl *r = n->repl;
    char path[4096];
    int fd, ok;

    if (r == NULL || keel_cluster_replicas(repl_cl(r)) < 2 ||
        r->nsuspect > 0 || r->lossy || n->wb_first != n->wb_next)
        return;
    if (r->doubted) {
        keel_info("a write of this run was answered in doubt: no clean-stop "
                  "marker, the units this node gets back at the same epoch "
                  "will have their backups caught up");
        return;
    }
    if (keel_store_sync(n->store) != 0)
        return;
    if (snprintf(path, sizeof path, "%s/%s", n->data_dir, CLEAN_FILE) >=
        (int)sizeof path)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    ok = write(fd, CLEAN_TEXT, strlen(CLEAN_TEXT)) ==
             (ssize_t)strlen(CLEAN_TEXT) &&
         fsync(fd) == 0;
    close(fd);
    if (!ok || dir_sync(n->data_dir) != 0)
        unlink(path);
}

void keel__repl_start(keel_node *n)
{
    keel_repl *r = n->repl;

    if (r == NULL)
        return;
    r->clean_start = clean_take(n->data_dir);
    if (r->clean_start)
        keel_info("the last run of this node stopped in order: units it "
                  "gets back keep their backups in sync");
    ev_async_start(n->loop, &r->wake);
    r->started = 1;
    repl_catchup_start(r);
    if (r->busy != NULL || r->nframes > 0)
        repl_arm(r, 0);
    if (r->cpend != NULL)
        ev_prepare_start(n->loop, &r->flush);
}

void keel__repl_stop(keel_node *n)
{
    keel_repl *r = n->repl;
    repl_unit *u;

    if (r == NULL)
        return;
    r->started = 0;
    repl_catchup_stop(r);
    ev_timer_stop(n->loop, &r->tick);
    ev_async_stop(n->loop, &r->wake);
    ev_prepare_stop(n->loop, &r->flush);
    if (r->writer != NULL) {
        keel_writer_stop(r->writer); /* commits and reports what it has */
        r->writer = NULL;
        r->fp_delay_set = 0;
    }
    repl_bjobs_reap(r);
    /* An orderly stop waited for these; a stop that could not (the
     * store failed, say) leaves them in doubt. */
    while ((u = r->busy) != NULL) {
        repl_wait *w;
        for (w = u->head; w != NULL; w = w->next)
            w->doubt = 1;
        repl_unit_progress(r, u);
    }
    while ((u = r->cpend) != NULL) { /* their rounds failed above */
        r->cpend = u->cnext;
        u->cnext = NULL;
        u->conf = NULL;
    }
}

void keel__repl_destroy(keel_node *n)
{
    keel_repl *r = n->repl;
    size_t pos = 0;
    void *item;

    if (r == NULL)
        return;
    keel__repl_stop(n);
    while (r->jobs != NULL) {
        bjob *j = r->jobs;
        r->jobs = j->next;
        repl_bjob_finish(r, j, KEEL_ESTOPPING);
    }
    while (r->links != NULL) {
        repl_link *l = r->links;
        r->links = l->next;
        if (l->build != NULL)
            frame_unref(l->build);
        while (l->head != NULL)
            frame_unlist(r, l->head);
        free(l);
    }
    while (keel_hmap_next(&r->units, &pos, &item)) {
        repl_unit *u = item;
        unsigned i;
        for (i = 0; i < REPL_MAX_BACKUPS; i++)
            free(u->cu[i].resume); /* a snapshot still in parts */
        free(item);
    }
    keel_hmap_free(&r->units);
    pos = 0;
    while (keel_hmap_next(&r->bunits, &pos, &item))
        free(item);
    keel_hmap_free(&r->bunits);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->lag_mu);
    free(r->lagv);
    free(r->gv);
    free(r->piece);
    free(r);
    n->repl = NULL;
}
