/* What operators see of an actor's outbox, and the one thing they may do
 * to it (keel outbox): the messages still waiting, each with what it
 * waits for, and giving up the one that holds the rest (a receiver type
 * retired for good, a capability no node declares any more). Runs in a
 * turn of the sender, on the node that serves its unit, which is the
 * node that delivers its messages (runtime/outbox.c). */
#include "runtime/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/be.h"
#include "runtime/deadletters.h"
#include "runtime/proto.h"

/* The text of an entry: what message r waits for, as v tells. */
static size_t waits_for(const struct keel_ob_view *v,
                        const struct keel_ob_rec *r, uint64_t head, char *out,
                        size_t cap)
{
    const char *state;
    int l;

    if (!v->known)
        state = "waits for this node to deliver the actor's messages";
    else if (r->seq <= v->done)
        state = "delivered or kept as a dead letter; its record goes with "
                "a turn of the actor under way";
    else if (r->seq == v->give_up && r->seq == v->inflight)
        state = "given up: a dead letter once its attempt out now fails";
    else if (r->seq == v->give_up)
        state = "given up: a dead letter next";
    else if (r->seq > v->released)
        state = "waits for the turn that queued it to be answered";
    else if (r->seq == v->inflight)
        state = "an attempt is out now";
    else if (r->seq == v->wait_seq)
        state = "waits for a deploy (every node to run the same types)";
    else if (r->seq == head)
        state = "next to go";
    else
        state = "waits for the messages before it";
    l = snprintf(out, cap, "%s%s%s%s", state,
                 r->seq <= v->unsure_upto
                     ? "; its receiver may have applied it"
                     : "",
                 r->seq == v->last_seq && v->tries > 0 ? "; last: " : "",
                 r->seq == v->last_seq && v->tries > 0 ? v->last_why : "");
    return l < 0 ? 0 : (size_t)l < cap ? (size_t)l : cap - 1;
}

/* One walk of the actor's waiting messages: the head (the next to go)
 * and how many wait, whether message `want` is among them, and, when
 * paging, the entries numbered above `after` that fit the page. */
struct waiting_acc {
    struct keel_ob_view v;
    uint64_t head, held, want, after;
    int found, paging, full;
    struct keel_dl_page pg;
};

static int entry_add(struct waiting_acc *w, const struct keel_ob_rec *r)
{
    char why[KEEL_DL_WHY_MAX];
    keel_dead_entry e;
    int tried = r->seq == w->v.last_seq && w->v.tries > 0;

    memset(&e, 0, sizeof e);
    e.number = r->seq;
    e.kind = KEEL_DL_OUTBOX;
    e.code = tried ? w->v.last_code : 0;
    e.attempts = tried ? (w->v.tries > 0xffff ? 0xffff : w->v.tries) : 0;
    e.at_ms = tried ? w->v.tried_ms : 0;
    e.why = why;
    e.why_len = waits_for(&w->v, r, w->head, why, sizeof why);
    e.a = r->type;
    e.a_len = r->tlen;
    e.b = (const char *)r->id;
    e.b_len = r->idlen;
    e.msg_len = r->msg_len > UINT32_MAX ? UINT32_MAX : (uint32_t)r->msg_len;
    e.shown = r->msg;
    e.shown_len = r->msg_len < KEEL_DEAD_SHOWN_MAX ? r->msg_len
                                                   : KEEL_DEAD_SHOWN_MAX;
    return keel__dl_page_add(&w->pg, &e);
}

/* Records come in order: the head is the first above what is retired. */
static int walk_cb(const struct keel_ob_rec *r, void *data)
{
    struct waiting_acc *w = data;

    if (w->head == 0 && r->seq > w->v.done)
        w->head = r->seq;
    w->held++;
    w->found |= r->seq == w->want;
    if (w->paging && !w->full && r->seq > w->after)
        w->full = entry_add(w, r) != 0;
    return w->paging && w->pg.err != 0; /* on counting past a full page */
}

/* The view of t's actor, then one walk of its waiting messages. */
static int waiting_walk(keel_turn *t, struct waiting_acc *w)
{
    keel__outbox_view(keel_turn_node(t), keel__turn_actor(t), &w->v);
    return keel__outbox_records(t, walk_cb, w);
}

int keel__outbox_list(keel_turn *t, uint64_t after, uint8_t **reply,
                      size_t *rlen)
{
    struct waiting_acc w;
    int rc;

    memset(&w, 0, sizeof w);
    w.paging = 1;
    w.after = after;
    rc = keel__dl_page_init(&w.pg, keel_turn_node(t), 0);
    if (rc != 0)
        return rc;
    rc = waiting_walk(t, &w);
    keel_put_be64(w.pg.buf, w.held); /* known once the walk is over */
    return keel__dl_page_end(&w.pg, t, rc, "a waiting outbox message",
                             reply, rlen);
}

int keel__outbox_give_up_request(keel_turn *t, uint64_t seq,
                                 uint8_t **reply, size_t *rlen)
{
    struct waiting_acc w;
    char text[160];
    int rc, l;

    *reply = NULL;
    *rlen = 0;
    memset(&w, 0, sizeof w);
    w.want = seq;
    rc = waiting_walk(t, &w);
    if (rc != 0) {
        if (rc == KEEL_ECORRUPT)
            keel_turn_error(t, "a waiting outbox message of the actor is "
                               "unreadable");
        return rc;
    }
    if (seq == 0 || !w.found || (w.v.known && seq <= w.v.done)) {
        keel_turn_error(t, "the actor has no waiting outbox message %llu",
                        (unsigned long long)seq);
        return KEEL_ENOTFOUND;
    }
    if (seq != w.head) {
        keel_turn_error(t, "message %llu is not the next to go: %llu is "
                           "(a sender's messages go in order; give that "
                           "one up first)",
                        (unsigned long long)seq,
                        (unsigned long long)w.head);
        return KEEL_EINVAL;
    }
    rc = keel__outbox_give_up(keel_turn_node(t), keel__turn_actor(t), seq);
    if (rc == KEEL_EUNAVAIL)
        keel_turn_error(t, "%s; try again in a moment",
                        w.v.dead_seq != 0
                            ? "the message before it is being kept as a "
                              "dead letter"
                            : "this node is not delivering it yet (its "
                              "turn's answer, or this node's take of the "
                              "actor's unit, is not settled)");
    if (rc != 0)
        return rc;
    l = snprintf(text, sizeof text,
                 w.v.inflight == seq
                     ? "message %llu is given up if the attempt out now "
                       "fails (keel dead-letters shows it then)"
                     : "message %llu given up: it becomes a dead letter",
                 (unsigned long long)seq);
    *reply = malloc((size_t)l);
    if (*reply == NULL)
        return KEEL_ENOMEM;
    memcpy(*reply, text, (size_t)l);
    *rlen = (size_t)l;
    return 0;
}
