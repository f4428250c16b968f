/* Following an actor: the registry of subscriptions and the delivery of
 * committed changes (follow.h).
 *
 * The registry maps an actor (type, id) to the subscriptions on it; an
 * actor nobody follows costs a turn one test of a counter. A turn that
 * set the state of a followed actor keeps a copy of the new state with
 * its request (keel__follow_turn); the copy goes to the subscribers when
 * the request's reply is released as a success (keel__follow_release),
 * which node_commit.c does only once the turn's writes are durable and, with
 * replicas, acknowledged. A failed or doubtful reply drops it: no
 * subscriber ever sees a state a failover or a failed commit could take
 * back.
 *
 * A turn may also choose an event payload (keel_turn_event). Its bytes
 * are kept in the registry while the turn runs, and only when the actor
 * is followed; a committed turn copies them with the change, and a
 * subscriber that takes payloads gets them instead of the state. Nothing
 * of a payload is stored: it lives as long as its change does.
 *
 * A new subscription is answered from a state read (keel__read_state,
 * a turn of its own ordered behind the actor's earlier messages). It is
 * in the registry from the start, so that no change released while the
 * read is in flight is missed: such changes wait with it (bounded) and
 * follow its answer, if newer than what it showed.
 *
 * Cluster mode: subscriptions are taken only on the owner of the actor's
 * unit; a timer ends them (KEEL_EUNAVAIL) once the unit is no longer
 * served here (moved, fenced), and the client subscribes again wherever
 * it is now. */
#include "runtime/follow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "coordinator/layout.h"
#include "runtime/cluster_rt_int.h"
#include "runtime/proto.h"

/* Changes kept for a subscription whose first answer is not out yet;
 * more means the subscriber is far behind already: it is ended. */
#define PEND_MAX 256
/* How often, in cluster mode, subscriptions are checked against the
 * placement of their actor's unit. */
#define CHECK_EVERY_S 0.1

/* An actor somebody follows. */
struct fkey {
    uint64_t hash;
    struct keel_type_entry *te;
    keel_sub *subs; /* its subscriptions, knext-linked */
    uint32_t shard;
    uint16_t idlen;
    uint8_t id[];
};

/* A change waiting for a subscription's first answer: the state, or
 * (payload) the event payload that goes to this subscriber instead. */
struct pend {
    struct pend *next;
    uint64_t version;
    int payload;
    size_t len;
    uint8_t data[];
};

struct keel_sub {
    struct keel_follow *f;
    keel_follow_sink *sink; /* NULL once orphaned (see sub_end) */
    keel_sub *snext;        /* the sink's list */
    struct fkey *key;       /* NULL once out of the registry */
    keel_sub *knext;
    keel_sub *all_prev, *all_next; /* every sub alive, for destroy */
    uint64_t tag;
    uint64_t since; /* the version the subscriber said it saw */
    uint64_t last;  /* the last version sent on it */
    unsigned flags; /* KEEL_FOLLOW_PAYLOADS or 0 */
    int pending;    /* its first answer (a state read) is in flight */
    unsigned npend;
    struct pend *pend_head, *pend_tail;
};

/* A committed change kept with its request until release: the new
 * state (has_state), the turn's event payload (has_payload), or both. */
struct keel_follow_ev {
    uint64_t hash;
    struct keel_type_entry *te;
    uint64_t version;
    size_t len;  /* the state's */
    size_t plen; /* the payload's */
    uint16_t idlen;
    uint8_t has_state, has_payload;
    uint8_t data[]; /* id, then the state, then the payload */
};

struct keel_follow {
    keel_node *n;
    keel_hmap keys;
    keel_sub *all;
    uint64_t nsubs; /* subscriptions in the registry */
    ev_timer check;
    /* The event payload of the turn running now, when its actor is
     * followed (keel_turn_event; struct keel_fl_turn says how long). */
    uint8_t *pay;
    size_t pay_cap;
};

struct key_ref {
    struct keel_type_entry *te;
    const void *id;
    size_t idlen;
};

static uint64_t key_hash(const struct keel_type_entry *te, const void *id,
                         size_t idlen)
{
    return XXH3_64bits_withSeed(id, idlen, te->index);
}

static int key_eq(const void *item, const void *key)
{
    const struct fkey *k = item;
    const struct key_ref *r = key;

    return k->te == r->te && k->idlen == r->idlen &&
           (r->idlen == 0 || memcmp(k->id, r->id, r->idlen) == 0);
}

static struct fkey *key_find(struct keel_follow *f, uint64_t hash,
                             struct keel_type_entry *te, const void *id,
                             size_t idlen)
{
    struct key_ref r = {te, id, idlen};

    return keel_hmap_get(&f->keys, hash, &r, key_eq);
}

static void stats_update(struct keel_follow *f)
{
    STAT_SET(f->n, subscribers, f->nsubs);
}

static void pend_free(keel_sub *s)
{
    while (s->pend_head != NULL) {
        struct pend *p = s->pend_head;
        s->pend_head = p->next;
        free(p);
    }
    s->pend_tail = NULL;
    s->npend = 0;
}

static void sub_free(struct keel_follow *f, keel_sub *s)
{
    pend_free(s);
    if (s->all_prev != NULL)
        s->all_prev->all_next = s->all_next;
    else
        f->all = s->all_next;
    if (s->all_next != NULL)
        s->all_next->all_prev = s->all_prev;
    free(s);
}

/* Takes s out of its actor's list, and the actor out of the registry
 * when s was its last follower. */
static void key_unlink(struct keel_follow *f, keel_sub *s)
{
    struct fkey *k = s->key;
    keel_sub **pp;

    if (k == NULL)
        return;
    for (pp = &k->subs; *pp != NULL; pp = &(*pp)->knext) {
        if (*pp == s) {
            *pp = s->knext;
            break;
        }
    }
    s->key = NULL;
    s->knext = NULL;
    f->nsubs--;
    stats_update(f);
    if (k->subs == NULL) {
        keel_hmap_remove(&f->keys, k->hash, k);
        free(k);
    }
    if (f->nsubs == 0)
        ev_timer_stop(f->n->loop, &f->check);
}

static void sink_unlink(keel_sub *s)
{
    keel_sub **pp;

    if (s->sink == NULL)
        return;
    for (pp = &s->sink->subs; *pp != NULL; pp = &(*pp)->snext) {
        if (*pp == s) {
            *pp = s->snext;
            break;
        }
    }
    s->sink = NULL;
    s->snext = NULL;
}

/* Ends s: with code (nonzero), the sink is told (an error answer while
 * its first answer is due, an END after); with 0, silently. A sub whose
 * state read is in flight stays allocated, orphaned, until the read
 * comes back (read_cb frees it). */
static void sub_end(struct keel_follow *f, keel_sub *s, int code,
                    const char *reason)
{
    keel_follow_sink *k = s->sink;

    key_unlink(f, s);
    sink_unlink(s);
    pend_free(s);
    if (k != NULL && code != 0) {
        if (s->pending)
            k->ops->answer(k, s->tag, code, NULL, reason, strlen(reason));
        else
            k->ops->end(k, s->tag, s->last, code, reason);
    }
    if (!s->pending)
        sub_free(f, s);
}

static const char slow_msg[] =
    "subscriber too slow: its connection holds more unsent events than "
    "the node keeps; subscribe again with the last version seen (changes "
    "in between are not replayed)";

static const char big_msg[] =
    "the actor's state is larger than the maximum frame size; it cannot "
    "be followed here";

static const char big_pay_msg[] =
    "an event payload of the actor does not fit this subscriber's frames; "
    "subscribe again (without payloads to get states)";

/* Sends a change (the state, or with payload the event payload) to an
 * answered subscription, or ends it when its sink is too far behind. */
static void deliver(struct keel_follow *f, keel_sub *s, uint64_t version,
                    int payload, const uint8_t *data, size_t len)
{
    keel_follow_sink *k = s->sink;

    /* Shown already: its first answer was newer. An event payload at the
     * version shown is not: a turn that changes no state leaves the
     * version as it is (and it may be about the very turn whose state
     * the answer showed). */
    if (payload ? version < s->last : version <= s->last)
        return;
    if (k->ops->backlog(k) > KEEL_FOLLOW_BACKLOG_MAX) {
        sub_end(f, s, KEEL_EOVERLOAD, slow_msg);
        return;
    }
    if (k->ops->change(k, s->tag, version, payload, data, len) != 0) {
        sub_end(f, s, KEEL_ETOOBIG, payload ? big_pay_msg : big_msg);
        return;
    }
    s->last = version;
    STAT_ADD(f->n, events_sent, 1);
}

/* ---------------------------------------------------------- subscribing */

static void read_cb(int status, const void *reply, size_t len, void *data)
{
    keel_sub *s = data;
    struct keel_follow *f = s->f;
    keel_follow_sink *k = s->sink;
    keel_state_read st;
    struct pend *p;
    int rc = status;

    s->pending = 0;
    if (k == NULL) {
        sub_free(f, s); /* ended or its sink closed meanwhile */
        return;
    }
    if (rc == KEEL_ENOTFOUND) {
        /* Never written: version 0, nothing to show yet. */
        memset(&st, 0, sizeof st);
        rc = 0;
    } else if (rc == 0) {
        rc = keel_state_read_parse(reply, len, &st);
    }
    if (rc != 0) {
        const char *msg = status != 0 ? reply : "malformed state read";
        size_t ml = status != 0 ? len : strlen(msg);
        key_unlink(f, s);
        sink_unlink(s);
        k->ops->answer(k, s->tag, rc, NULL, msg, ml);
        sub_free(f, s);
        return;
    }
    /* A new subscriber always gets the state; one that gave a version
     * only when the actor is at another one now. */
    if (s->since == 0 || st.version != s->since) {
        if (k->ops->answer(k, s->tag, 0, &st, NULL, 0) != 0) {
            key_unlink(f, s);
            sink_unlink(s);
            k->ops->answer(k, s->tag, KEEL_ETOOBIG, NULL, big_msg,
                           strlen(big_msg));
            sub_free(f, s);
            return;
        }
        s->last = st.version;
    } else {
        k->ops->answer(k, s->tag, 0, NULL, NULL, 0);
        s->last = s->since;
    }
    /* Changes released while the read was in flight, oldest first. */
    while ((p = s->pend_head) != NULL && s->sink != NULL) {
        s->pend_head = p->next;
        s->npend--;
        deliver(f, s, p->version, p->payload, p->data, p->len);
        free(p);
    }
    if (s->pend_head == NULL)
        s->pend_tail = NULL;
}

/* Cluster mode: 1 when this node serves the unit of te/shard now; else
 * 0 with msg saying where it is. */
static int served_here(keel_node *n, struct keel_type_entry *te,
                       uint32_t shard, char *msg, size_t msglen)
{
    keel_placement pl;
    char addr[KEEL_ADDR_MAX + 1];

    if (n->cluster == NULL)
        return 1;
    if (!keel__cluster_rt_serving(n)) {
        snprintf(msg, msglen, "this node does not serve now (fenced: "
                              "lease lapsed or no session); subscribe "
                              "through another node");
        return 0;
    }
    keel_coord_placement(n->coord, te->capability, shard, &pl);
    if (pl.state == KEEL_PLACEMENT_LOCAL)
        return 1;
    if (pl.state == KEEL_PLACEMENT_REMOTE &&
        keel_cluster_owner(n->cluster->c, te->capability, shard, NULL, 0,
                           addr, sizeof addr) == 0)
        snprintf(msg, msglen, "owner %s: the actor's unit is served there; "
                              "subscribe there", addr);
    else
        snprintf(msg, msglen, "the actor's unit has no serving owner now "
                              "(it is moving or its owner is down); "
                              "subscribe again shortly");
    return 0;
}

/* Ends the subscriptions to actors whose unit this node no longer
 * serves (cluster mode). */
static void check_units(struct keel_follow *f)
{
    struct fkey **gone = NULL;
    size_t ngone = 0, cap = 0, pos = 0, i;
    void *item;
    char msg[256];

    /* First the actors no longer served here, then their ends: ending
     * changes the table being walked. */
    while (keel_hmap_next(&f->keys, &pos, &item)) {
        struct fkey *k = item;
        if (served_here(f->n, k->te, k->shard, msg, sizeof msg))
            continue;
        if (ngone == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct fkey **g = realloc(gone, nc * sizeof *g);
            if (g == NULL)
                break; /* the rest next time */
            gone = g;
            cap = nc;
        }
        gone[ngone++] = k;
    }
    for (i = 0; i < ngone; i++) {
        struct fkey *k = gone[i];
        char reason[320];
        served_here(f->n, k->te, k->shard, msg, sizeof msg);
        snprintf(reason, sizeof reason,
                 "the actor is no longer served by this node: %s", msg);
        /* The last sub's end frees k. */
        while (k->subs->knext != NULL)
            sub_end(f, k->subs, KEEL_EUNAVAIL, reason);
        sub_end(f, k->subs, KEEL_EUNAVAIL, reason);
    }
    free(gone);
}

static void check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    check_units(w->data);
}

int keel__follow_create(keel_node *n)
{
    struct keel_follow *f = calloc(1, sizeof *f);

    if (f == NULL)
        return KEEL_ENOMEM;
    f->n = n;
    keel_hmap_init(&f->keys);
    ev_timer_init(&f->check, check_cb, CHECK_EVERY_S, CHECK_EVERY_S);
    f->check.data = f;
    n->follow = f;
    return 0;
}

void keel__follow_destroy(keel_node *n)
{
    struct keel_follow *f = n->follow;
    size_t pos = 0;
    void *item;

    if (f == NULL)
        return;
    if (n->loop != NULL)
        ev_timer_stop(n->loop, &f->check);
    while (f->all != NULL)
        sub_free(f, f->all);
    while (keel_hmap_next(&f->keys, &pos, &item))
        free(item);
    keel_hmap_free(&f->keys);
    free(f->pay);
    free(f);
    n->follow = NULL;
}

int keel__follow_subscribe(keel_node *n, keel_follow_sink *k, uint64_t tag,
                           struct keel_type_entry *te, const void *id,
                           size_t idlen, uint64_t since, unsigned flags,
                           char *errbuf, size_t errlen)
{
    struct keel_follow *f = n->follow;
    uint64_t hash = key_hash(te, id, idlen);
    uint32_t shard = keel_shard_of(te->name, id, idlen, n->opts.shard_count);
    struct fkey *key;
    keel_sub *s;
    unsigned held = 0;
    int rc, fresh = 0;

    if (n->stopping) {
        snprintf(errbuf, errlen, "node is stopping; subscribe through "
                                 "another node");
        return KEEL_ESTOPPING;
    }
    for (s = k->subs; s != NULL; s = s->snext, held++) {
        if (s->tag == tag) {
            snprintf(errbuf, errlen, "a subscription with this request id "
                                     "is open on the connection");
            return KEEL_EEXIST;
        }
    }
    if (held >= KEEL_FOLLOW_PER_SINK_MAX) {
        snprintf(errbuf, errlen, "at most %d subscriptions are open on one "
                                 "connection",
                 KEEL_FOLLOW_PER_SINK_MAX);
        return KEEL_ELIMIT;
    }
    if (!served_here(n, te, shard, errbuf, errlen))
        return KEEL_EUNAVAIL;
    key = key_find(f, hash, te, id, idlen);
    if (key == NULL) {
        key = calloc(1, sizeof *key + idlen);
        if (key == NULL || keel_hmap_put(&f->keys, hash, key) != 0) {
            free(key);
            snprintf(errbuf, errlen, "out of memory");
            return KEEL_ENOMEM;
        }
        key->hash = hash;
        key->te = te;
        key->shard = shard;
        key->idlen = (uint16_t)idlen;
        if (idlen > 0)
            memcpy(key->id, id, idlen);
        fresh = 1;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        if (fresh) {
            keel_hmap_remove(&f->keys, hash, key);
            free(key);
        }
        snprintf(errbuf, errlen, "out of memory");
        return KEEL_ENOMEM;
    }
    s->f = f;
    s->sink = k;
    s->tag = tag;
    s->since = since;
    s->flags = flags & KEEL_FOLLOW_PAYLOADS;
    s->pending = 1;
    s->key = key;
    s->knext = key->subs;
    key->subs = s;
    s->snext = k->subs;
    k->subs = s;
    s->all_next = f->all;
    if (f->all != NULL)
        f->all->all_prev = s;
    f->all = s;
    f->nsubs++;
    stats_update(f);
    if (n->cluster != NULL && !ev_is_active(&f->check))
        ev_timer_start(n->loop, &f->check);

    rc = keel__read_state(n, te->name, id, idlen, read_cb, s);
    if (rc != 0) {
        s->pending = 0;
        sub_end(f, s, 0, NULL);
        snprintf(errbuf, errlen, "%s", keel_strerror(rc));
        return rc;
    }
    return 0;
}

int keel__follow_unsubscribe(keel_node *n, keel_follow_sink *k,
                             uint64_t tag)
{
    keel_sub *s;

    for (s = k->subs; s != NULL; s = s->snext) {
        if (s->tag == tag) {
            int due = s->pending;
            sub_end(n->follow, s, 0, NULL);
            return due;
        }
    }
    return KEEL_ENOTFOUND;
}

void keel__follow_sink_close(keel_node *n, keel_follow_sink *k)
{
    while (k->subs != NULL)
        sub_end(n->follow, k->subs, 0, NULL);
}

void keel__follow_sink_end(keel_node *n, keel_follow_sink *k, int code,
                           const char *reason)
{
    while (k->subs != NULL)
        sub_end(n->follow, k->subs, code, reason);
}

void keel__follow_end_all(keel_node *n, int code, const char *reason)
{
    struct keel_follow *f = n->follow;
    keel_sub *s, *next;

    if (f == NULL)
        return;
    /* A node that handed its units off before it stops (a drain) says
     * where they went rather than just that it stops. */
    if (n->cluster != NULL)
        check_units(f);
    for (s = f->all; s != NULL; s = next) {
        next = s->all_next; /* s may be freed; next is not touched */
        if (s->sink != NULL)
            sub_end(f, s, code, reason);
    }
}

/* ----------------------------------------------------------- node hooks */

/* Ends every subscription to actor k: its followers would silently miss
 * a version. They subscribe again and get the current state. */
static void key_end_oom(struct keel_follow *f, struct fkey *k)
{
    while (k != NULL && k->subs != NULL) {
        int last = k->subs->knext == NULL;
        sub_end(f, k->subs, KEEL_ENOMEM,
                "out of memory for a change; subscribe again");
        if (last)
            break; /* k went with its last sub */
    }
}

int keel_turn_event(keel_turn *t, const void *payload, size_t len)
{
    struct keel_fl_turn *ft;
    struct keel_follow *f;
    keel_actor *a;
    keel_node *n;
    int followed;

    if (t == NULL || (payload == NULL && len > 0))
        return KEEL_EINVAL;
    if (!keel__turn_writable(t))
        return KEEL_EINVAL; /* on_passivate */
    n = keel_turn_node(t);
    /* Checked whether or not anyone follows the actor now, so that a
     * handler behaves the same either way: an event that could never be
     * sent is the handler's error, not a subscriber's. */
    if (len > n->opts.max_frame ||
        KEEL_FRAME_HEADER + KEEL_EVENT_HDR + len > n->opts.max_frame)
        return KEEL_ETOOBIG;
    ft = keel__turn_fl(t);
    a = keel__turn_actor(t);
    f = n->follow;
    followed = f != NULL && f->nsubs > 0 &&
               key_find(f, key_hash(a->type, a->id, a->idlen), a->type,
                        a->id, a->idlen) != NULL;
    if (followed) {
        if (len > f->pay_cap) {
            uint8_t *p = realloc(f->pay, len);
            if (p == NULL)
                return KEEL_ENOMEM;
            f->pay = p;
            f->pay_cap = len;
        }
        if (len > 0)
            memcpy(f->pay, payload, len);
    }
    ft->kept = followed;
    ft->set = 1;
    ft->len = len;
    return 0;
}

void keel__follow_turn(keel_node *n, keel_actor *a, keel_req *req,
                       int state_set, const struct keel_fl_turn *ft)
{
    struct keel_follow *f = n->follow;
    struct keel_follow_ev *ev;
    uint64_t hash;
    const uint8_t *state;
    size_t slen, plen;
    int pay = ft->set && ft->kept;

    if (f == NULL || f->nsubs == 0 || (!state_set && !pay))
        return;
    hash = key_hash(a->type, a->id, a->idlen);
    if (key_find(f, hash, a->type, a->id, a->idlen) == NULL)
        return;
    state = a->state_cap == 0 ? a->st.inl : a->st.heap;
    slen = state_set ? a->state_len : 0;
    plen = pay ? ft->len : 0;
    ev = malloc(sizeof *ev + a->idlen + slen + plen);
    if (ev == NULL) {
        key_end_oom(f, key_find(f, hash, a->type, a->id, a->idlen));
        return;
    }
    ev->hash = hash;
    ev->te = a->type;
    /* A turn that changed no state leaves the version as it was: its
     * payload is about that version. */
    ev->version = a->version;
    ev->len = slen;
    ev->plen = plen;
    ev->idlen = a->idlen;
    ev->has_state = (uint8_t)(state_set != 0);
    ev->has_payload = (uint8_t)pay;
    memcpy(ev->data, a->id, a->idlen);
    if (slen > 0)
        memcpy(ev->data + a->idlen, state, slen);
    if (plen > 0)
        memcpy(ev->data + a->idlen + slen, f->pay, plen);
    /* A second turn of the same request cannot happen; be safe. */
    free(req->fev);
    req->fev = ev;
}

void keel__follow_release(keel_node *n, keel_req *req)
{
    struct keel_follow *f = n->follow;
    struct keel_follow_ev *ev = req->fev;
    struct fkey *k;
    keel_sub *s, *next;
    const uint8_t *state, *pay;

    req->fev = NULL;
    if (ev == NULL)
        return;
    if ((req->status != 0 && !req->refusal_applied) || f == NULL ||
        f->nsubs == 0) {
        free(ev); /* not committed, or nobody to tell */
        return;
    }
    k = key_find(f, ev->hash, ev->te, ev->data, ev->idlen);
    state = ev->data + ev->idlen;
    pay = state + ev->len;
    for (s = k != NULL ? k->subs : NULL; s != NULL; s = next) {
        /* What goes to s: the payload if it takes payloads and there is
         * one, else the state if the turn changed it, else nothing. */
        int payload = ev->has_payload && (s->flags & KEEL_FOLLOW_PAYLOADS);
        const uint8_t *data = payload ? pay : state;
        size_t len = payload ? ev->plen : ev->len;

        /* Ending s may free k with it: read on before. */
        next = s->knext;
        if (!payload && !ev->has_state)
            continue;
        if (!s->pending) {
            int last = next == NULL;
            deliver(f, s, ev->version, payload, data, len);
            if (last)
                break;
            continue;
        }
        if (s->npend >= PEND_MAX) {
            sub_end(f, s, KEEL_EOVERLOAD, slow_msg);
            continue;
        }
        {
            struct pend *p = malloc(sizeof *p + len);
            if (p == NULL) {
                sub_end(f, s, KEEL_ENOMEM,
                        "out of memory for a change; subscribe again");
                continue;
            }
            p->next = NULL;
            p->version = ev->version;
            p->payload = payload;
            p->len = len;
            if (len > 0)
                memcpy(p->data, data, len);
            if (s->pend_tail != NULL)
                s->pend_tail->next = p;
            else
                s->pend_head = p;
            s->pend_tail = p;
            s->npend++;
        }
    }
    free(ev);
}

void keel__follow_req_free(keel_req *req)
{
    free(req->fev);
    req->fev = NULL;
}
