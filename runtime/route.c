/* Routing and holding (docs/cluster.md, "The runtime in cluster mode").
 *
 * keel__submit asks keel__cluster_route for every message: a LOCAL unit
 * runs here; a REMOTE one is forwarded to its owner over a peer
 * connection (peer.c) and the owner's answer releases the request; an
 * UNAVAILABLE one (moving, fenced, owner dead) is held, in arrival order,
 * until the unit is LOCAL or REMOTE again, or until the hold timeout has
 * passed (then KEEL_EUNAVAIL). A message is forwarded at most MAX_HOPS
 * times; past that it is held, so two nodes with different maps cannot
 * bounce it.
 *
 * Sweeping. Resident actors whose unit is no longer LOCAL (released,
 * dropped, self-fenced, session expired) run no more turns: their queued
 * messages go back to the hold list (in front: they are older than any
 * message held for their unit), and each actor is passivated as soon as
 * its writes are durable. */
#include "runtime/cluster_rt_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#include "coordinator/layout.h"

/* ------------------------------------------------------------- holding */

void rt_req_finish(keel_node *n, keel_req *req, int status,
                       const void *body, size_t len)
{
    req->status = status;
    if (keel__req_set(req, body, len) != 0) {
        req->status = status ? status : KEEL_ENOMEM;
        req->len = 0;
    }
    keel__req_release(n, req);
}

void rt_msg_fail(keel_cluster_rt *rt, rt_msg *m, int status,
                     const char *text)
{
    rt_req_finish(rt->n, m->req, status, text, strlen(text));
    free(m);
}

static int unit_held(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_msg *m;

    for (m = rt->held; m != NULL; m = m->next)
        if (m->shard == shard && strcmp(m->te->capability, cap) == 0)
            return 1;
    return 0;
}

static void hold_append(keel_cluster_rt *rt, rt_msg *m)
{
    m->next = NULL;
    if (rt->held_tail != NULL)
        rt->held_tail->next = m;
    else
        rt->held = m;
    rt->held_tail = m;
    rt->nheld++;
}

rt_msg *rt_msg_new(keel_cluster_rt *rt, struct keel_type_entry *te,
                       const void *id, size_t idlen, uint32_t shard,
                       keel_req *req)
{
    rt_msg *m = malloc(sizeof *m);

    if (m == NULL)
        return NULL;
    m->next = NULL;
    m->te = te;
    m->req = req;
    m->deadline = rt_now(rt) + rt_hold_ms(rt) / 1000.0;
    m->shard = shard;
    m->idlen = (uint8_t)idlen;
    memcpy(m->id, id, idlen);
    return m;
}

static void forward(keel_cluster_rt *rt, rt_msg *m);

static void fwd_cb(keel_node *n, int status, const uint8_t *body, size_t len,
                   void *arg)
{
    keel_cluster_rt *rt = n->cluster;
    rt_msg *m = arg;

    if (status == KEEL_PEER_UNSENT ||
        (status == KEEL_ESTOPPING && !n->stopping)) {
        /* Never reached the owner, or reached a node that is stopping and
         * did not run it: route it again (bounded by its deadline). */
        if (rt->started && rt_now(rt) < m->deadline) {
            hold_append(rt, m);
            return;
        }
        {
            char text[128];
            snprintf(text, sizeof text,
                     "shard %u unavailable: its owner was unreachable for "
                     "%u ms",
                     m->shard, rt_hold_ms(rt));
            STAT_ADD(n, held_expired, 1);
            rt_msg_fail(rt, m, KEEL_EUNAVAIL, text);
        }
        return;
    }
    rt_req_finish(n, m->req, status, body, len);
    free(m);
}

static void forward(keel_cluster_rt *rt, rt_msg *m)
{
    char addr[KEEL_ADDR_MAX + 1];
    keel_req *req = m->req;
    size_t tlen = strlen(m->te->name), blen;
    uint8_t *body;

    if (keel_cluster_owner(rt->c, m->te->capability, m->shard, NULL, 0, addr,
                           sizeof addr) != 0) {
        hold_append(rt, m);
        return;
    }
    blen = keel_call_body_size(tlen, m->idlen, req->len);
    if (req->keyed)
        blen += KEEL_REQUEST_KEY_LEN;
    body = keel__peer_frame(rt->peers, addr,
                            req->is_cast ? KEEL_FRAME_CAST : KEEL_FRAME_CALL,
                            (uint8_t)((req->hops + 1) |
                                      (req->keyed ? KEEL_FLAG_KEYED : 0)),
                            blen, fwd_cb, m);
    if (body == NULL) {
        hold_append(rt, m); /* retried on the next tick */
        return;
    }
    if (req->keyed) {
        memcpy(body, req->rkey, KEEL_REQUEST_KEY_LEN);
        body += KEEL_REQUEST_KEY_LEN;
    }
    keel_call_body_encode(body, m->te->name, tlen, m->id, m->idlen, req->buf,
                          req->len);
    STAT_ADD(rt->n, forwarded, 1);
}

int keel__cluster_route(keel_node *n, struct keel_type_entry *te,
                        const void *id, size_t idlen, keel_req *req)
{
    keel_cluster_rt *rt = n->cluster;
    uint32_t shard = keel_shard_of(te->name, id, idlen, n->opts.shard_count);
    keel_placement pl;
    rt_msg *m;

    if (rt->nheld == 0 || !unit_held(rt, te->capability, shard)) {
        keel_coord_placement(n->coord, te->capability, shard, &pl);
        if (pl.state == KEEL_PLACEMENT_LOCAL)
            return 1;
    } else {
        pl.state = KEEL_PLACEMENT_UNAVAILABLE;
    }
    if (rt->nheld >= MAX_HELD)
        return KEEL_EUNAVAIL;
    m = rt_msg_new(rt, te, id, idlen, shard, req);
    if (m == NULL)
        return KEEL_ENOMEM;
    if (pl.state == KEEL_PLACEMENT_REMOTE && req->hops < MAX_HOPS)
        forward(rt, m);
    else
        hold_append(rt, m);
    return 0;
}

/* Routes the held messages again, in order. */
void rt_retry_held(keel_cluster_rt *rt)
{
    rt_msg *list = rt->held, *m;
    ev_tstamp t = rt_now(rt);

    rt->held = rt->held_tail = NULL;
    rt->nheld = 0;
    while ((m = list) != NULL) {
        keel_placement pl;
        list = m->next;
        m->next = NULL;
        if (t >= m->deadline) {
            char text[128];
            snprintf(text, sizeof text,
                     "shard %u unavailable: its owner did not answer in "
                     "%u ms", m->shard, rt_hold_ms(rt));
            STAT_ADD(rt->n, held_expired, 1);
            rt_msg_fail(rt, m, KEEL_EUNAVAIL, text);
            continue;
        }
        if (rt->nheld > 0 && unit_held(rt, m->te->capability, m->shard)) {
            hold_append(rt, m);
            continue;
        }
        keel_coord_placement(rt->n->coord, m->te->capability, m->shard, &pl);
        if (pl.state == KEEL_PLACEMENT_LOCAL) {
            int rc = keel__submit(rt->n, m->te, m->id, m->idlen, m->req);
            if (rc != 0)
                rt_msg_fail(rt, m, rc, keel_strerror(rc));
            else
                free(m);
        } else if (pl.state == KEEL_PLACEMENT_REMOTE &&
                   m->req->hops < MAX_HOPS) {
            forward(rt, m);
        } else {
            hold_append(rt, m);
        }
    }
}

/* ------------------------------------------------------------ sweeping */

size_t rt_sweep(keel_cluster_rt *rt)
{
    keel_node *n = rt->n;
    keel_actor **v;
    size_t pos = 0, cnt = 0, i, left = 0;
    void *item;
    rt_msg *front = NULL, *front_tail = NULL;

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
        keel_req *req;
        while ((req = a->mb_head) != NULL) {
            rt_msg *m;
            a->mb_head = req->next;
            req->next = NULL;
            m = rt_msg_new(rt, a->type, a->id, a->idlen, a->shard, req);
            if (m == NULL) {
                rt_req_finish(n, req, KEEL_ENOMEM, "out of memory", 13);
                continue;
            }
            if (front_tail != NULL)
                front_tail->next = m;
            else
                front = m;
            front_tail = m;
            rt->nheld++;
        }
        a->mb_tail = NULL;
        a->mb_len = 0;
        if (keel__actor_idle(n, a))
            keel__actor_passivate(n, a);
        else
            left++;
    }
    free(v);
    if (front != NULL) {
        front_tail->next = rt->held;
        if (rt->held == NULL)
            rt->held_tail = front_tail;
        rt->held = front;
    }
    return left;
}

int rt_unit_resident(keel_cluster_rt *rt, const char *cap,
                         uint32_t shard)
{
    size_t pos = 0;
    void *item;

    while (keel_hmap_next(&rt->n->actors, &pos, &item)) {
        keel_actor *a = item;
        if (a->shard == shard && strcmp(a->type->capability, cap) == 0)
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------ unit records */
