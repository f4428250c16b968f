/* Routing and holding (docs/cluster.md, "The runtime in cluster mode").
 *
 * keel__submit asks keel__cluster_route for every message: a LOCAL unit
 * runs here; a REMOTE one is forwarded to its owner over a peer
 * connection (peer.c) and the owner's answer releases the request; an
 * UNAVAILABLE one (moving, fenced, owner dead) is held until the unit is
 * LOCAL or REMOTE again, or until the call's deadline (then
 * KEEL_EUNAVAIL).
 *
 * Order. Every message gets a sequence number when it is admitted here,
 * and each unit keeps its held messages and its forwarded, unanswered
 * ones in that order (struct rt_unit). A forward that comes back unsent
 * (the connection failed before the frame left, or the owner answered
 * ESTOPPING) goes back into the queue at its own place, so that once
 * routed again the unit's messages leave in the order they came. A
 * message that entered the cluster here does not overtake an older one
 * of its unit that is still held, nor one that is in flight to another
 * node than where it would go (that one may come back unsent, or be held
 * and forwarded there later). Messages that other nodes forwarded here
 * keep their own order among themselves but do not wait for in-flight
 * forwards: one of them may be this node's own forward coming back, and
 * waiting for it would wait for itself.
 *
 * Hops. A message is forwarded at most MAX_HOPS times on the map each
 * node has; past that it waits for this node's map to change, or a short
 * while, and is then routed again from this node's placement.
 *
 * Deadlines. A call gets its deadline where it enters the cluster (the
 * hold bound from then); forwards carry what is left of it (peer.c
 * writes the budget into the frame as it leaves), so every hop works
 * against the same end.
 *
 * Sweeping. Resident actors whose unit is no longer LOCAL (released,
 * dropped, self-fenced, session expired) run no more turns: their queued
 * messages go back to the front of their unit's queue (they are older
 * than any message held for it), the actor leaves the run queue, and it
 * is passivated as soon as its writes are durable, fenced or not. */
#include "runtime/cluster_rt_int.h"
#include "runtime/obatch.h"
#include "runtime/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/log.h"

#include "coordinator/layout.h"
#include "coordinator/shardmap.h"

/* --------------------------------------------------------------- units */

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
    const rt_unit *u = item;
    const struct unit_key *k = key;

    return u->shard == k->shard && strcmp(u->cap, k->cap) == 0;
}

static rt_unit *unit_find(keel_cluster_rt *rt, const char *cap,
                          uint32_t shard)
{
    struct unit_key k = {cap, shard};

    if (rt->units.count == 0)
        return NULL;
    return keel_hmap_get(&rt->units, unit_hash(cap, shard), &k, unit_eq);
}

/* cap must live as long as the node (a type entry's copy). */
static rt_unit *unit_get(keel_cluster_rt *rt, const char *cap,
                         uint32_t shard)
{
    rt_unit *u = unit_find(rt, cap, shard);

    if (u != NULL)
        return u;
    u = calloc(1, sizeof *u);
    if (u == NULL)
        return NULL;
    u->hash = unit_hash(cap, shard);
    u->cap = cap;
    u->shard = shard;
    u->min_deadline = UINT64_MAX;
    if (keel_hmap_put(&rt->units, u->hash, u) != 0) {
        free(u);
        return NULL;
    }
    return u;
}

static void unwait(keel_cluster_rt *rt, rt_unit *u)
{
    if (!u->waiting)
        return;
    if (u->wprev != NULL)
        u->wprev->wnext = u->wnext;
    else
        rt->waiting = u->wnext;
    if (u->wnext != NULL)
        u->wnext->wprev = u->wprev;
    u->wnext = u->wprev = NULL;
    u->waiting = 0;
}

/* Frees u once nothing of it is left here. */
static void unit_maybe_free(keel_cluster_rt *rt, rt_unit *u)
{
    if (u->nheld > 0 || u->nfly > 0 || u->resident > 0)
        return;
    unwait(rt, u);
    keel_hmap_remove(&rt->units, u->hash, u);
    free(u);
}

/* ------------------------------------------------------------- holding */

static void req_answer(keel_req *req, int status, const void *body,
                       size_t len)
{
    req->status = status;
    if (keel__req_set(req, body, len) != 0) {
        req->status = status ? status : KEEL_ENOMEM;
        req->len = 0;
    }
}

void rt_req_finish(keel_node *n, keel_req *req, int status,
                       const void *body, size_t len)
{
    req_answer(req, status, body, len);
    keel__req_release(n, req);
}

void rt_peer_answer(keel_node *n, keel_req *req, int status)
{
    const char *text = status != 0 ? keel_strerror(status) : "";

    req_answer(req, status, text, strlen(text));
    keel__net_complete(n, req); /* frees req */
}

void rt_msg_fail(keel_cluster_rt *rt, rt_msg *m, int status,
                     const char *text)
{
    rt_req_finish(rt->n, m->req, status, text, strlen(text));
    free(m);
}

/* Puts m into its unit's held queue at the place its seq gives it. Those
 * coming back are older than most held ones: the walk starts at the
 * front. */
static void hold_insert(keel_cluster_rt *rt, rt_msg *m)
{
    rt_unit *u = m->u;
    rt_msg *at = u->head;

    while (at != NULL && at->seq < m->seq)
        at = at->next;
    m->next = at;
    m->prev = at != NULL ? at->prev : u->tail;
    if (m->prev != NULL)
        m->prev->next = m;
    else
        u->head = m;
    if (at != NULL)
        at->prev = m;
    else
        u->tail = m;
    u->nheld++;
    u->nheld_entry += m->entry;
    rt->nheld++;
    if (m->req->deadline_ns < u->min_deadline)
        u->min_deadline = m->req->deadline_ns;
    if (!u->waiting) {
        u->waiting = 1;
        u->wprev = NULL;
        u->wnext = rt->waiting;
        if (rt->waiting != NULL)
            rt->waiting->wprev = u;
        rt->waiting = u;
    }
}

static void hold_unlink(keel_cluster_rt *rt, rt_msg *m)
{
    rt_unit *u = m->u;

    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        u->head = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    else
        u->tail = m->prev;
    m->next = m->prev = NULL;
    u->nheld--;
    u->nheld_entry -= m->entry;
    rt->nheld--;
}

static void fly_insert(rt_msg *m, uint64_t dest)
{
    rt_unit *u = m->u;
    rt_msg *at = u->fly_tail;

    /* Usually the newest: the walk starts at the back. */
    while (at != NULL && at->seq > m->seq)
        at = at->prev;
    m->prev = at;
    m->next = at != NULL ? at->next : u->fly_head;
    if (m->next != NULL)
        m->next->prev = m;
    else
        u->fly_tail = m;
    if (at != NULL)
        at->next = m;
    else
        u->fly_head = m;
    m->flying = 1;
    m->dest = dest;
    u->nfly++;
    if (m->entry) {
        if (u->nfly_entry == 0) {
            u->fly_dest = dest;
            u->fly_mixed = 0;
        } else if (dest != u->fly_dest) {
            u->fly_mixed = 1;
        }
        u->nfly_entry++;
    }
}

static void fly_unlink(rt_msg *m)
{
    rt_unit *u = m->u;

    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        u->fly_head = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    else
        u->fly_tail = m->prev;
    m->next = m->prev = NULL;
    m->flying = 0;
    u->nfly--;
    if (m->entry && --u->nfly_entry == 0)
        u->fly_mixed = 0;
}

/* Whether m may go to dest (0: run here) without overtaking an older
 * message of its unit in flight elsewhere. */
static int order_ok(const rt_unit *u, uint64_t seq, int entry,
                    uint64_t dest)
{
    const rt_msg *y;

    if (!entry || u == NULL || u->nfly_entry == 0)
        return 1;
    if (!u->fly_mixed && u->fly_dest == dest && dest != 0)
        return 1;
    for (y = u->fly_head; y != NULL && y->seq < seq; y = y->next)
        if (y->entry && y->dest != dest)
            return 0;
    return 1;
}

/* Sequence numbers: those admitted count up from SEQ_BASE, those taken
 * back from mailboxes count down from it (rt->low_seq). */
#define SEQ_BASE (1ull << 62)

static rt_msg *msg_new(rt_unit *u, struct keel_type_entry *te,
                       const void *id, size_t idlen, keel_req *req,
                       uint64_t seq)
{
    rt_msg *m = calloc(1, sizeof *m);

    if (m == NULL)
        return NULL;
    m->u = u;
    m->te = te;
    m->req = req;
    m->seq = seq;
    m->entry = req->hops == 0;
    m->idlen = (uint8_t)idlen;
    memcpy(m->id, id, idlen);
    return m;
}

static uint64_t now_ns(void)
{
    return keel__now_ns();
}

static uint64_t map_epoch(keel_cluster_rt *rt)
{
    const keel_shard_map *map = keel_cluster_map(rt->c);

    return map != NULL ? map->map_epoch : 0;
}

/* Whether the cluster refuses this node for its store: another node runs
 * with its id, or its data directory is not the one it served from. It
 * checks again every few seconds and an operator may let it in (`keel
 * node forget`), but that takes longer than a caller should wait: calls
 * that entered here are answered at once (on the next tick), so that
 * their callers try another member, rather than held to their deadline. */
static int refused(keel_cluster_rt *rt)
{
    int phase = keel_cluster_phase(rt->c);

    return (phase == KEEL_CLUSTER_BOOTSTRAP ||
            phase == KEEL_CLUSTER_JOINING) &&
           keel_cluster_error(rt->c) == KEEL_EMISMATCH;
}

static void fail_expired(keel_cluster_rt *rt, rt_msg *m)
{
    char text[512];
    int phase = keel_cluster_phase(rt->c);

    if (refused(rt))
        snprintf(text, sizeof text,
                 "shard %u unavailable: cluster %s refuses this node: its "
                 "data directory is not the one it served from, or another "
                 "node runs with its id (its log says more); try another "
                 "member",
                 m->u->shard, keel_cluster_name(rt->c));
    else if (phase == KEEL_CLUSTER_CONNECTING ||
             phase == KEEL_CLUSTER_BOOTSTRAP || phase == KEEL_CLUSTER_JOINING)
        snprintf(text, sizeof text,
                 "shard %u unavailable: this node has not joined cluster %s "
                 "(%s) within the call's deadline (hold bound %u ms); try "
                 "another member",
                 m->u->shard, keel_cluster_name(rt->c),
                 phase == KEEL_CLUSTER_CONNECTING
                     ? "it cannot reach ZooKeeper yet"
                     : "it is joining",
                 rt_hold_ms(rt));
    else
        snprintf(text, sizeof text,
                 "shard %u unavailable: not served within the call's "
                 "deadline (hold bound %u ms)",
                 m->u->shard, rt_hold_ms(rt));
    STAT_ADD(rt->n, held_expired, 1);
    rt_msg_fail(rt, m, KEEL_EUNAVAIL, text);
}

static void fwd_cb(keel_node *n, int status, const uint8_t *body, size_t len,
                   void *arg)
{
    keel_cluster_rt *rt = n->cluster;
    rt_msg *m = arg;
    rt_unit *u = m->u;

    fly_unlink(m);
    if (status == KEEL_PEER_UNSENT || status == KEEL_ENOTMEMBER ||
        (status == KEEL_ESTOPPING && !n->stopping)) {
        /* Never reached the owner, reached a node that is stopping, or
         * one whose view does not show this node as a member yet (it
         * joined a moment ago) or any more (it left, and its own map
         * will say so): none of them ran it. Back to its place in the
         * queue, routed again before the unit's younger messages, until
         * the call's deadline. */
        if (rt->started && now_ns() < m->req->deadline_ns) {
            hold_insert(rt, m);
            return;
        }
        fail_expired(rt, m);
    } else {
        rt_req_finish(n, m->req, status, body, len);
        free(m);
    }
    unit_maybe_free(rt, u);
}

/* Forwards m (in no queue) to addr. Returns 0, or -1 when nothing could be
 * queued for the peer (m is untouched: the caller keeps it held). */
static int forward(keel_cluster_rt *rt, rt_msg *m, const char *addr)
{
    keel_req *req = m->req;
    size_t tlen = strlen(m->te->name), blen;
    unsigned hops = req->hops < MAX_HOPS ? req->hops + 1u : MAX_HOPS;
    uint8_t *body;

    if (req->ob_op != 0 || req->rm != NULL)
        return -1; /* the runtime's own turns run where the unit is, or not */
    /* An outbox message goes in a batch with others bound for the same
     * node this round (obatch.h): it is in flight from now on. */
    if (req->from != NULL &&
        keel__obatch_add(rt->obatch, addr, hops, req, m->te->name, tlen,
                         m->id, m->idlen, fwd_cb, m) == 0) {
        fly_insert(m, XXH3_64bits(addr, strlen(addr)));
        m->hop_wait = 0;
        STAT_ADD(rt->n, forwarded, 1);
        return 0;
    }
    blen = KEEL_DEADLINE_LEN + keel_call_body_size(tlen, m->idlen, req->len);
    if (req->keyed)
        blen += KEEL_REQUEST_KEY_LEN;
    if (req->from != NULL)
        blen += keel_from_size(req->from->tlen, req->from->idlen);
    body = keel__peer_frame_by(
        rt->peers, addr, req->is_cast ? KEEL_FRAME_CAST : KEEL_FRAME_CALL,
        (uint8_t)(hops | KEEL_FLAG_DEADLINE |
                  (req->keyed ? KEEL_FLAG_KEYED : 0) |
                  (req->from != NULL ? KEEL_FLAG_FROM : 0) |
                  (req->read_state ? KEEL_FLAG_READ : 0)),
        blen, req->deadline_ns, fwd_cb, m);
    if (body == NULL)
        return -1;
    /* The budget itself is written by peer.c as the frame leaves. */
    keel_deadline_put(body, 0);
    body += KEEL_DEADLINE_LEN;
    if (req->keyed) {
        memcpy(body, req->rkey, KEEL_REQUEST_KEY_LEN);
        body += KEEL_REQUEST_KEY_LEN;
    }
    if (req->from != NULL)
        body += keel_from_encode(body, req->from->seq, req->from->type,
                                 req->from->tlen, req->from->id,
                                 req->from->idlen);
    keel_call_body_encode(body, m->te->name, tlen, m->id, m->idlen, req->buf,
                          req->len);
    fly_insert(m, XXH3_64bits(addr, strlen(addr)));
    m->hop_wait = 0;
    STAT_ADD(rt->n, forwarded, 1);
    if (req->from != NULL)
        STAT_ADD(rt->n, outbox_frames, 1);
    return 0;
}

/* Where a message of the unit goes now: 1 with *dest 0 (run here) or the
 * owner's address hash and addr; 0 when it must stay held. */
static int destination(keel_cluster_rt *rt, struct keel_type_entry *te,
                       uint32_t shard, char *addr, size_t addr_cap,
                       uint64_t *dest)
{
    keel_placement pl;

    keel_coord_placement(rt->n->coord, te->capability, shard, &pl);
    if (pl.state == KEEL_PLACEMENT_LOCAL) {
        *dest = 0;
        return 1;
    }
    if (pl.state != KEEL_PLACEMENT_REMOTE ||
        keel_cluster_owner(rt->c, te->capability, shard, NULL, 0, addr,
                           addr_cap) != 0)
        return 0;
    *dest = XXH3_64bits(addr, strlen(addr));
    return 1;
}

/* A message whose hops are used up goes on only once this node's map has
 * changed since it arrived, or after HOP_RETRY_NS: the maps that sent it
 * here were stale, and this node's may be too. */
static int hop_ready(keel_cluster_rt *rt, rt_msg *m, uint64_t t)
{
    if (m->req->hops < MAX_HOPS)
        return 1;
    if (!m->hop_wait) {
        m->hop_wait = 1;
        m->hop_map = map_epoch(rt);
        m->hop_retry = t + HOP_RETRY_NS;
        return 0;
    }
    return map_epoch(rt) != m->hop_map || t >= m->hop_retry;
}

int keel__cluster_route(keel_node *n, struct keel_type_entry *te,
                        const void *id, size_t idlen, keel_req *req)
{
    keel_cluster_rt *rt = n->cluster;
    uint32_t shard;
    rt_unit *u;
    rt_msg *m;
    int entry = req->hops == 0, go = 0;
    uint64_t dest = 0, seq, t;
    char addr[KEEL_ADDR_MAX + 1];

    if (rt->admit) {
        /* A held message the map of this session places here. */
        req->session = keel_cluster_session(rt->c);
        return 1;
    }
    shard = keel_shard_of(te->name, id, idlen, n->opts.shard_count);
    t = now_ns();
    if (req->deadline_ns == 0 ||
        (entry && req->deadline_ns > t + (uint64_t)rt_hold_ms(rt) * 1000000u))
        req->deadline_ns = t + (uint64_t)rt_hold_ms(rt) * 1000000u;
    seq = SEQ_BASE + rt->next_seq++;
    u = unit_find(rt, te->capability, shard);
    /* Behind held messages of its kind it waits its turn. */
    if (u == NULL || (entry ? u->nheld_entry : u->nheld - u->nheld_entry) == 0)
        go = destination(rt, te, shard, addr, sizeof addr, &dest) &&
             order_ok(u, seq, entry, dest) &&
             (dest == 0 || req->hops < MAX_HOPS);
    if (go && dest == 0) {
        req->session = keel_cluster_session(rt->c);
        return 1;
    }
    if (rt->nheld >= MAX_HELD)
        return KEEL_EUNAVAIL;
    if (u == NULL && (u = unit_get(rt, te->capability, shard)) == NULL)
        return KEEL_ENOMEM;
    m = msg_new(u, te, id, idlen, req, seq);
    if (m == NULL) {
        unit_maybe_free(rt, u);
        return KEEL_ENOMEM;
    }
    if (!go || forward(rt, m, addr) != 0)
        hold_insert(rt, m);
    return 0;
}

/* Fails the held messages of u past their deadline, and those that
 * entered here while the cluster refuses this node. */
static void unit_expire(keel_cluster_rt *rt, rt_unit *u, uint64_t t)
{
    rt_msg *m, *next;
    uint64_t min = UINT64_MAX;
    int gone = refused(rt);

    for (m = u->head; m != NULL; m = next) {
        next = m->next;
        if (t >= m->req->deadline_ns || (gone && m->entry)) {
            hold_unlink(rt, m);
            fail_expired(rt, m);
        } else if (m->req->deadline_ns < min) {
            min = m->req->deadline_ns;
        }
    }
    u->min_deadline = min;
}

/* Routes u's held messages, oldest first; a message that must stay keeps
 * the younger ones of its kind (entered here, or forwarded here) behind
 * it. */
static void unit_retry(keel_cluster_rt *rt, rt_unit *u, uint64_t t)
{
    char addr[KEEL_ADDR_MAX + 1];
    uint64_t dest;
    int blocked[2] = {0, 0};
    rt_msg *m, *next;

    if (t >= u->min_deadline || (u->nheld_entry > 0 && refused(rt)))
        unit_expire(rt, u, t);
    if (u->head == NULL ||
        !destination(rt, u->head->te, u->shard, addr, sizeof addr, &dest))
        return;
    for (m = u->head; m != NULL && !(blocked[0] && blocked[1]); m = next) {
        next = m->next;
        if (blocked[m->entry])
            continue;
        if (!order_ok(u, m->seq, m->entry, dest) ||
            (dest != 0 && !hop_ready(rt, m, t))) {
            blocked[m->entry] = 1;
            continue;
        }
        if (dest == 0) {
            int rc;
            hold_unlink(rt, m);
            rt->admit = 1;
            rc = keel__submit(rt->n, m->te, m->id, m->idlen, m->req);
            rt->admit = 0;
            if (rc != 0)
                rt_msg_fail(rt, m, rc, keel_strerror(rc));
            else
                free(m);
            continue;
        }
        hold_unlink(rt, m);
        if (forward(rt, m, addr) != 0) {
            hold_insert(rt, m);
            blocked[m->entry] = 1;
        }
    }
}

void rt_retry_held(keel_cluster_rt *rt)
{
    rt_unit *u = rt->waiting, *next;
    uint64_t t = now_ns();

    while (u != NULL) {
        next = u->wnext;
        unit_retry(rt, u, t);
        if (u->nheld == 0) {
            unwait(rt, u);
            unit_maybe_free(rt, u);
        }
        u = next;
    }
}

void rt_fail_held(keel_cluster_rt *rt, int status)
{
    char why[160];
    const char *text = status == KEEL_ESTOPPING
                           ? keel__cluster_rt_stop_text(rt->n, why,
                                                        sizeof why)
                           : keel_strerror(status);
    rt_unit *u;
    rt_msg *m;

    while ((u = rt->waiting) != NULL) {
        while ((m = u->head) != NULL) {
            hold_unlink(rt, m);
            rt_msg_fail(rt, m, status, text);
        }
        unwait(rt, u);
        unit_maybe_free(rt, u);
    }
}

void rt_units_free(keel_cluster_rt *rt)
{
    size_t pos = 0;
    void *item;

    rt_fail_held(rt, KEEL_ESTOPPING);
    while (keel_hmap_next(&rt->units, &pos, &item))
        free(item);
    keel_hmap_free(&rt->units);
    keel_hmap_init(&rt->units);
}

/* ------------------------------------------------------------ sweeping */

size_t rt_sweep(keel_cluster_rt *rt)
{
    keel_node *n = rt->n;
    keel_actor **v;
    size_t pos = 0, cnt = 0, i, left = 0;
    void *item;

    if (n->actors.count == 0)
        return 0;
    v = malloc(n->actors.count * sizeof *v);
    if (v == NULL)
        return 1;
    while (keel_hmap_next(&n->actors, &pos, &item)) {
        keel_actor *a = item;
        keel_placement pl;
        keel_coord_placement(n->coord, a->type->capability, a->shard, &pl);
        if (pl.state != KEEL_PLACEMENT_LOCAL)
            v[cnt++] = a;
    }
    for (i = 0; i < cnt; i++) {
        keel_actor *a = v[i];
        rt_unit *u = unit_get(rt, a->type->capability, a->shard);
        keel_req *req, *rev = NULL;
        uint64_t k = 0, seq;
        /* Older than everything held for the unit, and in mailbox order:
         * numbered below every seq given so far, and inserted youngest
         * first so that each lands at the front. */
        while ((req = a->mb_head) != NULL) {
            a->mb_head = req->next;
            req->next = rev;
            rev = req;
            k++;
        }
        rt->low_seq += k;
        seq = SEQ_BASE - rt->low_seq + k;
        while ((req = rev) != NULL) {
            rt_msg *m = u != NULL ? msg_new(u, a->type, a->id, a->idlen, req,
                                            --seq)
                                  : NULL;
            rev = req->next;
            req->next = NULL;
            if (m == NULL) {
                rt_req_finish(n, req, KEEL_ENOMEM, "out of memory", 13);
                continue;
            }
            if (req->deadline_ns == 0)
                req->deadline_ns = now_ns() + rt_hold_ms(rt) * 1000000ull;
            hold_insert(rt, m);
        }
        a->mb_tail = NULL;
        a->mb_len = 0;
    }
    /* Their mailboxes are empty now: off the run queue with them, or none
     * of those queued would count as idle, and a fenced node (its run
     * stopped) would keep them activated until it serves again. */
    if (cnt > 0)
        keel__run_prune(n);
    for (i = 0; i < cnt; i++) {
        keel_actor *a = v[i];
        if (keel__actor_idle(n, a))
            keel__actor_passivate(n, a); /* may free its unit */
        else
            left++;
    }
    free(v);
    return left;
}

/* ------------------------------------------------- resident actor counts */

int rt_unit_resident(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_unit *u = unit_find(rt, cap, shard);

    return u != NULL && u->resident > 0;
}

int keel__cluster_actor_in(keel_node *n, struct keel_type_entry *te,
                           uint32_t shard)
{
    rt_unit *u = unit_get(n->cluster, te->capability, shard);

    if (u == NULL)
        return KEEL_ENOMEM;
    u->resident++;
    return 0;
}

void keel__cluster_actor_out(keel_node *n, struct keel_type_entry *te,
                             uint32_t shard)
{
    rt_unit *u = unit_find(n->cluster, te->capability, shard);

    if (u != NULL && u->resident > 0) {
        u->resident--;
        unit_maybe_free(n->cluster, u);
    }
}
