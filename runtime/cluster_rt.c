/* Cluster mode in the runtime (see cluster_rt.h and docs/cluster.md).
 *
 * Routing. keel__submit asks keel__cluster_route for every message: a
 * LOCAL unit runs here; a REMOTE one is forwarded to its owner over a
 * peer connection (peer.c) and the owner's answer releases the request; an
 * UNAVAILABLE one (moving, fenced, owner dead) is held, in arrival order,
 * until the unit is LOCAL or REMOTE again, or until the hold timeout has passed
 * (then KEEL_EUNAVAIL). A message is forwarded at most MAX_HOPS times; past
 * that it is held, so two nodes with different maps cannot bounce it.
 *
 * Sweeping. Resident actors whose unit is no longer LOCAL (released,
 * dropped, self-fenced, session expired) run no more turns: their queued
 * messages go back to the hold list (in front: they are older than any
 * message held for their unit), and each actor is passivated as soon as its
 * writes are durable.
 *
 * Handoff, old owner (hook release): the unit is UNAVAILABLE, so nothing
 * new is admitted; once the sweep has passivated every actor of the unit
 * (all writes committed), its records are read from the store and streamed
 * to the new owner in XFER frames; when the new owner has stored them, the
 * unit's records are deleted here and keel_cluster_released() publishes the
 * release. Handoff, new owner (hook acquire): the new shard_epoch is written
 * to the store's fence, then keel_cluster_acquired().
 *
 * Writes of this module (fences, received units, purges) go through a
 * writer thread of their own on the node's store, one batch at a time, so
 * they never mix with the node's group commit of actor state; the store
 * serializes commits.
 *
 * XFER body (all integers big-endian):
 *   len(cap) u8 | cap | shard be16 | shard_epoch be64 | seq be32
 *   | flags u8 (bit 0: last frame of the unit)
 *   | records: klen be16 | key | version be64 | vlen be32 | value
 * Frames of one unit travel in order on one connection, seq from 0. The
 * receiver replaces everything it holds of the unit with the records of the
 * whole stream, in one transaction, when the last frame arrives. */
#include "runtime/cluster_rt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/layout.h"
#include "coordinator/shardmap.h"
#include "persistence/store.h"
#include "runtime/peer.h"

#define HOLD_MS_DEFAULT 5000
#define MAX_HELD 65536
#define MAX_HOPS 3
#define TICK_S 0.02
#define XFER_CHUNK (256u << 10)
#define RETRY_S 0.5

/* A message waiting for its unit, or forwarded and waiting for the
 * owner's answer. */
typedef struct rt_msg {
    struct rt_msg *next;
    struct keel_type_entry *te;
    keel_req *req;
    ev_tstamp deadline;
    uint32_t shard;
    uint8_t idlen;
    uint8_t id[KEEL_MAX_ID_LEN];
} rt_msg;

enum { JOB_FENCE = 1, JOB_XFER_IN, JOB_PURGE, JOB_WIPE };

typedef struct rt_job {
    struct rt_job *next;
    int kind;
    char cap[256];
    uint32_t shard;
    uint64_t epoch;
    keel_req *req;       /* JOB_XFER_IN: the last frame's reply */
    uint8_t *recs;       /* JOB_XFER_IN: records, XFER encoding */
    size_t recs_len;
} rt_job;

enum { REL_DRAIN = 1, REL_SENDING, REL_PURGING };

typedef struct rt_rel {
    struct rt_rel *next;
    char cap[256];
    uint32_t shard;
    uint64_t epoch;
    char to[KEEL_NAME_MAX + 1];
    int stage;
    int failed;   /* a frame of the current stream was refused */
    int redo;     /* the target changed while streaming */
    ev_tstamp not_before;
} rt_rel;

/* An incoming unit stream being collected. */
typedef struct rt_xin {
    struct rt_xin *next;
    char cap[256];
    uint32_t shard;
    uint64_t epoch;
    uint32_t next_seq;
    uint8_t *recs;
    size_t len, cap_bytes;
} rt_xin;

struct keel_cluster_rt {
    keel_node *n;
    keel_cluster *c;
    keel_peers *peers;
    char **caps;
    size_t ncaps;
    char address[300];

    rt_msg *held, *held_tail;
    size_t nheld;
    rt_rel *rels;
    /* Units whose fence is recorded but which still have actors resident
     * from an earlier ownership: acquired once the sweep has them gone. */
    rt_job *acq;
    rt_xin *xins;
    int sweep;

    /* The module's own commits. */
    keel_writer *writer;
    keel_batch *batch;
    rt_job *jobs, *jobs_tail; /* waiting for a batch */
    rt_job *inflight;         /* in the batch with the writer */
    int busy;
    pthread_mutex_t mu;
    int done;                 /* written by the writer thread under mu */
    int done_status;
    ev_async wake;
    ev_timer tick;
    /* The lease, checked first thing in every loop iteration (see
     * lease_cb). */
    ev_check lease;
    int started;

    /* Graceful leave: 0 none, 1 handing off, 2 done (the stop goes on). */
    int leave;
    ev_tstamp leave_deadline, leave_report;
    ev_tstamp stop_since; /* when the stop first waited for quiet */
};

/* How long a leaving node waits for its units to be handed off, unless
 * leave_timeout_ms says otherwise. */
#define LEAVE_MS_DEFAULT 30000
/* A stopping node exits once no other node has forwarded it a call for
 * STOP_QUIET_S (they have applied the map that sends them elsewhere) and
 * nothing it forwarded or holds is unanswered; at most STOP_QUIET_MAX_S. */
#define STOP_QUIET_S 0.3
#define STOP_QUIET_MAX_S 5.0

static uint32_t hold_ms(const keel_cluster_rt *rt)
{
    uint32_t v = rt->n->opts.hold_timeout_ms;
    return v != 0 ? v : HOLD_MS_DEFAULT;
}

static double leave_s(const keel_cluster_rt *rt)
{
    uint32_t v = rt->n->opts.leave_timeout_ms;
    return (v != 0 ? v : LEAVE_MS_DEFAULT) / 1000.0;
}

static ev_tstamp now(keel_cluster_rt *rt)
{
    return ev_now(rt->n->loop);
}

static void req_finish(keel_node *n, keel_req *req, int status,
                       const void *body, size_t len)
{
    req->status = status;
    if (keel__req_set(req, body, len) != 0) {
        req->status = status ? status : KEEL_ENOMEM;
        req->len = 0;
    }
    keel__req_release(n, req);
}

static void msg_fail(keel_cluster_rt *rt, rt_msg *m, int status,
                     const char *text)
{
    req_finish(rt->n, m->req, status, text, strlen(text));
    free(m);
}

/* ------------------------------------------------------------- holding */

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

static rt_msg *msg_new(keel_cluster_rt *rt, struct keel_type_entry *te,
                       const void *id, size_t idlen, uint32_t shard,
                       keel_req *req)
{
    rt_msg *m = malloc(sizeof *m);

    if (m == NULL)
        return NULL;
    m->next = NULL;
    m->te = te;
    m->req = req;
    m->deadline = now(rt) + hold_ms(rt) / 1000.0;
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
        if (rt->started && now(rt) < m->deadline) {
            hold_append(rt, m);
            return;
        }
        {
            char text[128];
            snprintf(text, sizeof text,
                     "shard %u unavailable: its owner was unreachable for "
                     "%u ms",
                     m->shard, hold_ms(rt));
            STAT_ADD(n, held_expired, 1);
            msg_fail(rt, m, KEEL_EUNAVAIL, text);
        }
        return;
    }
    req_finish(n, m->req, status, body, len);
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
    body = keel__peer_frame(rt->peers, addr,
                            req->is_cast ? KEEL_FRAME_CAST : KEEL_FRAME_CALL,
                            (uint8_t)(req->hops + 1), blen, fwd_cb, m);
    if (body == NULL) {
        hold_append(rt, m); /* retried on the next tick */
        return;
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
    m = msg_new(rt, te, id, idlen, shard, req);
    if (m == NULL)
        return KEEL_ENOMEM;
    if (pl.state == KEEL_PLACEMENT_REMOTE && req->hops < MAX_HOPS)
        forward(rt, m);
    else
        hold_append(rt, m);
    return 0;
}

/* Routes the held messages again, in order. */
static void retry_held(keel_cluster_rt *rt)
{
    rt_msg *list = rt->held, *m;
    ev_tstamp t = now(rt);

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
                     "%u ms", m->shard, hold_ms(rt));
            STAT_ADD(rt->n, held_expired, 1);
            msg_fail(rt, m, KEEL_EUNAVAIL, text);
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
                msg_fail(rt, m, rc, keel_strerror(rc));
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

/* Takes the queued messages of actors whose unit is not LOCAL back into
 * the hold list and passivates those whose writes are durable. Returns
 * how many such actors stay resident. */
static size_t sweep(keel_cluster_rt *rt)
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
            m = msg_new(rt, a->type, a->id, a->idlen, a->shard, req);
            if (m == NULL) {
                req_finish(n, req, KEEL_ENOMEM, "out of memory", 13);
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

static int unit_resident(keel_cluster_rt *rt, const char *cap,
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

/* The capability of a stored key's actor type ("" for types this node
 * does not know). */
static const char *key_cap(keel_node *n, const uint8_t *key, size_t klen)
{
    keel_key_parts kp;
    struct keel_type_entry *te;

    if (keel_key_decode(key, klen, &kp) != 0)
        return NULL;
    te = keel__type_find(n, kp.type, kp.tlen);
    return te ? te->capability : "";
}

struct scan_ctx {
    keel_node *n;
    const char *cap;
    keel_batch *del;    /* purge: delete each record */
    uint64_t below;     /* with del: only records written at an epoch
                         * below this one (0: every record) */
    uint8_t *out;       /* collect: XFER record encoding */
    size_t len, cap_bytes;
    int err;
};

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    int i;

    for (i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

static int unit_scan_cb(const uint8_t *key, size_t klen,
                        const keel_record *rec, void *data)
{
    struct scan_ctx *s = data;
    const char *cap = key_cap(s->n, key, klen);

    if (cap == NULL || strcmp(cap, s->cap) != 0)
        return 0;
    if (s->del != NULL) {
        if (s->below != 0 && rec->epoch >= s->below)
            return 0;
        s->err = keel_batch_del(s->del, key, klen);
        return s->err != 0;
    }
    {
        size_t need = s->len + 2 + klen + 8 + 4 + rec->len;
        uint8_t *p;
        if (need > s->cap_bytes) {
            size_t c = s->cap_bytes ? s->cap_bytes : 4096;
            while (c < need)
                c *= 2;
            p = realloc(s->out, c);
            if (p == NULL) {
                s->err = KEEL_ENOMEM;
                return 1;
            }
            s->out = p;
            s->cap_bytes = c;
        }
        p = s->out + s->len;
        put_be(p, klen, 2);
        memcpy(p + 2, key, klen);
        put_be(p + 2 + klen, rec->version, 8);
        put_be(p + 10 + klen, rec->len, 4);
        if (rec->len)
            memcpy(p + 14 + klen, rec->data, rec->len);
        s->len = need;
    }
    return 0;
}

/* Scans the unit's records: into s->del as deletes, or into s->out. */
static int unit_scan(keel_node *n, const char *cap, uint32_t shard,
                     struct scan_ctx *s)
{
    keel_store_read *r;
    uint8_t prefix[2];
    int rc;

    s->n = n;
    s->cap = cap;
    put_be(prefix, shard, 2);
    rc = keel_store_read_begin(n->store, &r);
    if (rc != 0)
        return rc;
    rc = keel_store_scan(r, prefix, sizeof prefix, unit_scan_cb, s);
    keel_store_read_end(r);
    if (s->err != 0)
        return s->err;
    return rc < 0 ? rc : 0;
}

/* Parses the next record of an XFER record area. */
static int rec_next(const uint8_t *p, size_t len, size_t *off,
                    const uint8_t **key, size_t *klen, uint64_t *version,
                    const uint8_t **val, size_t *vlen)
{
    size_t o = *off;

    if (len - o < 2)
        return KEEL_EMALFORMED;
    *klen = (size_t)get_be(p + o, 2);
    if (*klen == 0 || *klen > KEEL_KEY_MAX || len - o - 2 < *klen + 12)
        return KEEL_EMALFORMED;
    *key = p + o + 2;
    *version = get_be(p + o + 2 + *klen, 8);
    *vlen = (size_t)get_be(p + o + 10 + *klen, 4);
    if (len - o - 14 - *klen < *vlen)
        return KEEL_EMALFORMED;
    *val = p + o + 14 + *klen;
    *off = o + 14 + *klen + *vlen;
    return 0;
}

/* ------------------------------------------------------------- commits */

static void job_free(rt_job *j)
{
    free(j->recs);
    free(j);
}

static void kick_writer(keel_cluster_rt *rt);

static void job_push(keel_cluster_rt *rt, rt_job *j)
{
    j->next = NULL;
    if (rt->jobs_tail != NULL)
        rt->jobs_tail->next = j;
    else
        rt->jobs = j;
    rt->jobs_tail = j;
    kick_writer(rt);
}

static int job_build(keel_cluster_rt *rt, keel_batch *b, rt_job *j)
{
    int rc = keel_batch_begin_group(b, j->cap, (uint16_t)j->shard, j->epoch,
                                    j);

    if (rc != 0)
        return rc;
    if (j->kind == JOB_FENCE)
        return keel_batch_fence_only(b);
    {
        struct scan_ctx s;
        memset(&s, 0, sizeof s);
        s.del = b;
        /* A forgotten node's stale copy is what it wrote before the unit
         * moved on at j->epoch. Records at j->epoch or later came from the
         * unit's current owner, streamed here by a handoff that may have
         * started before this wipe was queued: they stay. */
        if (j->kind == JOB_WIPE)
            s.below = j->epoch;
        rc = unit_scan(rt->n, j->cap, j->shard, &s);
        if (rc != 0)
            return rc;
    }
    if (j->kind == JOB_XFER_IN) {
        size_t off = 0;
        while (off < j->recs_len) {
            const uint8_t *key, *val;
            size_t klen, vlen;
            uint64_t version;
            rc = rec_next(j->recs, j->recs_len, &off, &key, &klen, &version,
                          &val, &vlen);
            if (rc == 0)
                rc = keel_batch_put(b, key, klen, version, val, vlen);
            if (rc != 0)
                return rc;
        }
    }
    if (keel_batch_op_count(b) == 0)
        return keel_batch_fence_only(b);
    return 0;
}

static void job_done(keel_cluster_rt *rt, rt_job *j, int status)
{
    keel_node *n = rt->n;
    int rc;

    switch (j->kind) {
    case JOB_FENCE:
        if (status != 0) {
            keel_error("unit (%s, %u): recording shard epoch %llu failed: %s",
                       j->cap, j->shard, (unsigned long long)j->epoch,
                       keel_strerror(status));
            break;
        }
        /* Actors of this unit still resident from an earlier ownership
         * (a session that expired, a unit that left and came back before
         * the sweep came round) must not serve with what they hold: the
         * unit stays not LOCAL until the sweep has them gone (their
         * writes settled), see acquire_pending(). */
        if (unit_resident(rt, j->cap, j->shard)) {
            rt_job *later = calloc(1, sizeof *later);
            if (later == NULL) {
                keel_error("out of memory acquiring (%s, %u)", j->cap,
                           j->shard);
                break;
            }
            later->kind = JOB_FENCE;
            memcpy(later->cap, j->cap, sizeof later->cap);
            later->shard = j->shard;
            later->epoch = j->epoch;
            later->next = rt->acq;
            rt->acq = later;
            rt->sweep = 1;
            break;
        }
        rc = keel_cluster_acquired(rt->c, j->cap, j->shard, j->epoch);
        if (rc == 0)
            STAT_ADD(n, units_acquired, 1);
        keel_debug("unit (%s, %u) acquired at epoch %llu: %s", j->cap,
                   j->shard, (unsigned long long)j->epoch, keel_strerror(rc));
        rt->sweep = 1;
        break;
    case JOB_XFER_IN:
        if (status != 0) {
            req_finish(n, j->req, status, keel_strerror(status),
                       strlen(keel_strerror(status)));
        } else {
            STAT_ADD(n, handoff_bytes_in, j->recs_len);
            req_finish(n, j->req, 0, NULL, 0);
        }
        j->req = NULL;
        break;
    case JOB_WIPE:
        if (status != 0 && status != KEEL_EFENCED)
            keel_error("unit (%s, %u): deleting the stale local copy failed: "
                       "%s",
                       j->cap, j->shard, keel_strerror(status));
        break;
    case JOB_PURGE: {
        rt_rel **pp, *r;
        for (pp = &rt->rels; (r = *pp) != NULL; pp = &r->next)
            if (r->shard == j->shard && strcmp(r->cap, j->cap) == 0)
                break;
        if (r == NULL || r->stage != REL_PURGING)
            break;
        if (status != 0) {
            r->stage = REL_DRAIN;
            r->not_before = now(rt) + RETRY_S;
            break;
        }
        *pp = r->next;
        rc = keel_cluster_released(rt->c, r->cap, r->shard, r->epoch);
        STAT_ADD(n, units_handed_off, 1);
        keel_info("unit (%s, %u) handed to %s at epoch %llu%s", r->cap,
                  r->shard, r->to, (unsigned long long)r->epoch,
                  rc == 0 ? "" : " (the map moved on meanwhile)");
        free(r);
        break;
    }
    }
}

static void writer_done(keel_batch *b, int status, void *data)
{
    keel_cluster_rt *rt = data;

    (void)b;
    pthread_mutex_lock(&rt->mu);
    rt->done = 1;
    rt->done_status = status;
    pthread_mutex_unlock(&rt->mu);
    ev_async_send(rt->n->loop, &rt->wake);
}

/* reported: the writer handed the batch back (it was not refused at the
 * door). */
static void settle(keel_cluster_rt *rt, int status, int reported)
{
    size_t i, ng = keel_batch_group_count(rt->batch);
    rt_job *j;
    int failed = status != 0;

    for (i = 0; i < ng; i++) {
        int gst;
        j = keel_batch_group(rt->batch, i, &gst);
        if (gst != 0)
            failed = 1;
        job_done(rt, j, status != 0 ? status : gst);
    }
    /* The next batch is built knowing of this failure (store.h). */
    if (failed && reported && rt->writer != NULL)
        keel_writer_ack_failure(rt->writer);
    while ((j = rt->inflight) != NULL) {
        rt->inflight = j->next;
        job_free(j);
    }
    rt->busy = 0;
}

static void kick_writer(keel_cluster_rt *rt)
{
    keel_batch *b = rt->batch;
    rt_job *j, *failed = NULL;
    int rc;

    if (rt->busy || rt->jobs == NULL || rt->writer == NULL)
        return;
    keel_batch_reset(b);
    rt->inflight = rt->jobs;
    rt->jobs = rt->jobs_tail = NULL;
    for (j = rt->inflight; j != NULL; j = j->next) {
        size_t before = keel_batch_group_count(b);
        rc = job_build(rt, b, j);
        if (rc != 0) {
            /* Cannot build this one: the whole batch is redone without
             * it on the next kick. */
            failed = j;
            (void)before;
            break;
        }
    }
    if (failed != NULL) {
        rt_job **pp;
        keel_error("unit (%s, %u): cannot build a write: %s", failed->cap,
                   failed->shard, keel_strerror(rc));
        for (pp = &rt->inflight; *pp != failed; pp = &(*pp)->next)
            ;
        *pp = failed->next;
        failed->next = NULL;
        rt->jobs = rt->inflight;
        rt->inflight = NULL;
        for (rt->jobs_tail = rt->jobs;
             rt->jobs_tail != NULL && rt->jobs_tail->next != NULL;
             rt->jobs_tail = rt->jobs_tail->next)
            ;
        keel_batch_reset(b);
        job_done(rt, failed, rc);
        job_free(failed);
        kick_writer(rt);
        return;
    }
    rt->busy = 1;
    rc = keel_writer_submit(rt->writer, b);
    if (rc != 0)
        settle(rt, rc, 0);
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    keel_cluster_rt *rt = w->data;
    int done, status;

    (void)loop;
    (void)revents;
    pthread_mutex_lock(&rt->mu);
    done = rt->done;
    status = rt->done_status;
    rt->done = 0;
    pthread_mutex_unlock(&rt->mu);
    if (done) {
        settle(rt, status, 1);
        kick_writer(rt);
    }
}

/* -------------------------------------------------- streaming a unit out */

static rt_rel *rel_find(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_rel *r;

    for (r = rt->rels; r != NULL; r = r->next)
        if (r->shard == shard && strcmp(r->cap, cap) == 0)
            return r;
    return NULL;
}

static void xfer_out_cb(keel_node *n, int status, const uint8_t *body,
                        size_t len, void *arg);

/* Callback arguments of the frames of one stream: the rel is looked up by
 * unit, since it may be gone when the answer comes. */
typedef struct xfer_ref {
    char cap[256];
    uint32_t shard;
    int last;
} xfer_ref;

static int xfer_send(keel_cluster_rt *rt, rt_rel *r)
{
    char addr[KEEL_ADDR_MAX + 1];
    struct scan_ctx s;
    size_t off = 0, clen = strlen(r->cap);
    size_t chunk = rt->n->opts.max_frame / 2;
    uint32_t seq = 0;
    int rc;

    if (keel_cluster_member_addr(rt->c, r->to, addr, sizeof addr) != 0)
        return KEEL_EUNAVAIL;
    if (chunk > XFER_CHUNK)
        chunk = XFER_CHUNK;
    memset(&s, 0, sizeof s);
    rc = unit_scan(rt->n, r->cap, r->shard, &s);
    if (rc != 0) {
        free(s.out);
        return rc;
    }
    do {
        /* Whole records, at least one, up to chunk bytes. */
        size_t end = off, hdr = 1 + clen + 2 + 8 + 4 + 1;
        uint8_t *body;
        xfer_ref *ref;
        int last;
        while (end < s.len) {
            const uint8_t *key, *val;
            size_t klen, vlen, o = end;
            uint64_t version;
            rec_next(s.out, s.len, &o, &key, &klen, &version, &val, &vlen);
            if (end > off && o - off > chunk)
                break;
            end = o;
        }
        last = end >= s.len;
        ref = malloc(sizeof *ref);
        if (ref == NULL) {
            rc = KEEL_ENOMEM;
            break;
        }
        snprintf(ref->cap, sizeof ref->cap, "%s", r->cap);
        ref->shard = r->shard;
        ref->last = last;
        body = keel__peer_frame(rt->peers, addr, KEEL_FRAME_XFER, 0,
                                hdr + (end - off), xfer_out_cb, ref);
        if (body == NULL) {
            free(ref);
            rc = KEEL_ECONN;
            break;
        }
        body[0] = (uint8_t)clen;
        memcpy(body + 1, r->cap, clen);
        put_be(body + 1 + clen, r->shard, 2);
        put_be(body + 3 + clen, r->epoch, 8);
        put_be(body + 11 + clen, seq++, 4);
        body[15 + clen] = (uint8_t)last;
        if (end > off)
            memcpy(body + hdr, s.out + off, end - off);
        STAT_ADD(rt->n, handoff_bytes_out, end - off);
        off = end;
        if (last)
            break;
    } while (1);
    free(s.out);
    return rc;
}

static void xfer_out_cb(keel_node *n, int status, const uint8_t *body,
                        size_t len, void *arg)
{
    keel_cluster_rt *rt = n->cluster;
    xfer_ref *ref = arg;
    rt_rel *r = rel_find(rt, ref->cap, ref->shard);

    if (r != NULL && r->stage == REL_SENDING) {
        if (status != 0) {
            if (status == KEEL_PEER_UNSENT)
                keel_warn("unit (%s, %u): %s is unreachable", r->cap,
                          r->shard, r->to);
            else
                keel_warn("unit (%s, %u): streaming to %s failed: %.*s",
                          r->cap, r->shard, r->to, (int)len,
                          (const char *)body);
            r->failed = 1;
        }
        if (ref->last) {
            if (r->failed || r->redo || !rt->started) {
                r->stage = REL_DRAIN;
                r->not_before = now(rt) + (r->redo ? 0 : RETRY_S);
                r->failed = r->redo = 0;
            } else {
                rt_job *j = calloc(1, sizeof *j);
                if (j == NULL) {
                    r->stage = REL_DRAIN;
                    r->not_before = now(rt) + RETRY_S;
                } else {
                    /* The purge raises the fence one past the epoch
                     * of the release: this node's stragglers at that
                     * epoch are refused, and after a restart the fence
                     * says the unit was handed off already
                     * (handed_off_before). The new owner's epoch is
                     * that one, so records it streams here later pass. */
                    r->stage = REL_PURGING;
                    j->kind = JOB_PURGE;
                    snprintf(j->cap, sizeof j->cap, "%s", r->cap);
                    j->shard = r->shard;
                    j->epoch = r->epoch + 1;
                    job_push(rt, j);
                }
            }
        }
    }
    free(ref);
}

static void rel_unlink(keel_cluster_rt *rt, rt_rel *r)
{
    rt_rel **pp;

    for (pp = &rt->rels; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

/* Whether this node handed the unit off at r->epoch already: its purge
 * left the unit's fence at r->epoch + 1 (see JOB_PURGE). That happens
 * when the node restarted after its purge and before the release reached
 * the controller: the unit's records are with r->to, and streaming this
 * node's (none) would replace them. Any other fence means the records
 * here are the unit's: they are sent. */
static int handed_off_before(keel_cluster_rt *rt, rt_rel *r)
{
    keel_store_read *rd;
    uint64_t fence = 0;
    int rc;

    rc = keel_store_read_begin(rt->n->store, &rd);
    if (rc != 0)
        return 0;
    rc = keel_store_fence_get(rd, r->cap, (uint16_t)r->shard, &fence);
    keel_store_read_end(rd);
    return rc == 0 && fence > r->epoch;
}

static void progress_rels(keel_cluster_rt *rt)
{
    rt_rel *r;

    for (r = rt->rels; r != NULL;) {
        rt_rel *next = r->next;
        int rc;
        if (r->stage != REL_DRAIN || now(rt) < r->not_before ||
            unit_resident(rt, r->cap, r->shard)) {
            r = next;
            continue;
        }
        if (handed_off_before(rt, r)) {
            rel_unlink(rt, r);
            rc = keel_cluster_released(rt->c, r->cap, r->shard, r->epoch);
            STAT_ADD(rt->n, units_handed_off, 1);
            keel_info("unit (%s, %u) was handed to %s at epoch %llu before "
                      "a restart%s",
                      r->cap, r->shard, r->to, (unsigned long long)r->epoch,
                      rc == 0 ? "" : " (the map moved on meanwhile)");
            free(r);
            r = next;
            continue;
        }
        r->stage = REL_SENDING;
        r->failed = r->redo = 0;
        rc = xfer_send(rt, r);
        if (rc != 0) {
            /* Frames already queued fail or finish; the last one's answer
             * decides. When none was queued, retry later. */
            r->failed = 1;
            if (rc == KEEL_EUNAVAIL || rc == KEEL_ENOMEM) {
                r->stage = REL_DRAIN;
                r->not_before = now(rt) + RETRY_S;
            }
        }
        r = next;
    }
}

/* ---------------------------------------------------- a unit coming in */

int keel__cluster_xfer_frame(keel_node *n, const keel_frame *f,
                             keel_req *req)
{
    keel_cluster_rt *rt = n->cluster;
    const uint8_t *p = f->body;
    size_t len = f->body_len, clen, off;
    char cap[256];
    uint32_t shard, seq;
    uint64_t epoch;
    int last;
    rt_xin *x, **pp;

    if (rt == NULL)
        return KEEL_EPROTO;
    if (len < 1 || len < 1 + (size_t)p[0] + 15)
        return KEEL_EMALFORMED;
    clen = p[0];
    memcpy(cap, p + 1, clen);
    cap[clen] = '\0';
    shard = (uint32_t)get_be(p + 1 + clen, 2);
    epoch = get_be(p + 3 + clen, 8);
    seq = (uint32_t)get_be(p + 11 + clen, 4);
    last = p[15 + clen] & 1;
    off = 16 + clen;
    if (shard >= n->opts.shard_count)
        return KEEL_EMALFORMED;
    for (pp = &rt->xins; (x = *pp) != NULL; pp = &x->next)
        if (x->shard == shard && strcmp(x->cap, cap) == 0)
            break;
    if (seq == 0) {
        if (x == NULL) {
            x = calloc(1, sizeof *x);
            if (x == NULL)
                return KEEL_ENOMEM;
            snprintf(x->cap, sizeof x->cap, "%s", cap);
            x->shard = shard;
            x->next = rt->xins;
            rt->xins = x;
            pp = &rt->xins;
        }
        x->len = 0;
        x->next_seq = 0;
        x->epoch = epoch;
    }
    if (x == NULL || seq != x->next_seq || epoch != x->epoch)
        return KEEL_EPROTO;
    {
        /* Validate the records now, so that a bad stream is refused
         * before anything is written. */
        size_t o = off;
        while (o < len) {
            const uint8_t *key, *val;
            size_t klen, vlen;
            uint64_t version;
            if (rec_next(p, len, &o, &key, &klen, &version, &val, &vlen) != 0)
                return KEEL_EMALFORMED;
        }
    }
    if (x->len + (len - off) > x->cap_bytes) {
        size_t c = x->cap_bytes ? x->cap_bytes : 4096;
        uint8_t *q;
        while (c < x->len + (len - off))
            c *= 2;
        q = realloc(x->recs, c);
        if (q == NULL)
            return KEEL_ENOMEM;
        x->recs = q;
        x->cap_bytes = c;
    }
    if (len > off) {
        memcpy(x->recs + x->len, p + off, len - off);
        x->len += len - off;
    }
    x->next_seq++;
    if (!last)
        return 1;
    {
        rt_job *j = calloc(1, sizeof *j);
        if (j == NULL)
            return KEEL_ENOMEM;
        j->kind = JOB_XFER_IN;
        snprintf(j->cap, sizeof j->cap, "%s", cap);
        j->shard = shard;
        j->epoch = epoch;
        j->req = req;
        j->recs = x->recs;
        j->recs_len = x->len;
        *pp = x->next;
        free(x);
        keel_info("unit (%s, %u): received %zu bytes of records", cap, shard,
                  j->recs_len);
        job_push(rt, j);
    }
    return 0;
}

/* --------------------------------------------------------------- hooks */

static void on_release(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, const char *to, void *data)
{
    keel_cluster_rt *rt = data;
    rt_rel *r = rel_find(rt, cap, shard);

    (void)c;
    keel_debug("release (%s, %u) at %llu to %s", cap, shard,
               (unsigned long long)epoch, to);
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL) {
            keel_error("out of memory releasing (%s, %u)", cap, shard);
            return;
        }
        snprintf(r->cap, sizeof r->cap, "%s", cap);
        r->shard = shard;
        r->stage = REL_DRAIN;
        r->next = rt->rels;
        rt->rels = r;
    } else if (r->stage == REL_SENDING) {
        r->redo = 1;
    }
    r->epoch = epoch;
    snprintf(r->to, sizeof r->to, "%s", to);
    rt->sweep = 1;
}

static void on_acquire(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, void *data)
{
    keel_cluster_rt *rt = data;
    rt_job *j = calloc(1, sizeof *j);

    (void)c;
    if (j == NULL) {
        keel_error("out of memory acquiring (%s, %u)", cap, shard);
        return;
    }
    j->kind = JOB_FENCE;
    snprintf(j->cap, sizeof j->cap, "%s", cap);
    j->shard = shard;
    j->epoch = epoch;
    job_push(rt, j);
}

static void drop_rel(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_rel **pp, *r;

    for (pp = &rt->rels; (r = *pp) != NULL;) {
        if (cap == NULL || (r->shard == shard && strcmp(r->cap, cap) == 0)) {
            if (r->stage == REL_PURGING) {
                pp = &r->next; /* its job finds it and lets it go */
                continue;
            }
            *pp = r->next;
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

static void on_drop(keel_cluster *c, const char *cap, uint32_t shard,
                    void *data)
{
    keel_cluster_rt *rt = data;

    (void)c;
    STAT_ADD(rt->n, units_dropped, 1);
    drop_rel(rt, cap, shard);
    rt->sweep = 1;
}

static void on_fenced(keel_cluster *c, int fenced, void *data)
{
    keel_cluster_rt *rt = data;

    (void)c;
    keel_warn("cluster: %s", fenced ? "fenced: not serving any unit"
                                     : "fence lifted: serving again");
    if (fenced)
        STAT_ADD(rt->n, fenced, 1);
    rt->sweep = 1;
    if (!fenced)
        keel__run_resume(rt->n); /* turns left queued when it came up */
}

static void on_expired(keel_cluster *c, void *data)
{
    keel_cluster_rt *rt = data;

    (void)c;
    keel_warn("cluster: session expired: dropping every unit");
    STAT_ADD(rt->n, session_expirations, 1);
    drop_rel(rt, NULL, 0);
    rt->sweep = 1;
}

/* This node was forgotten (keel node forget) and joined again: what it
 * still stores of units others own now is stale (they restarted from
 * nothing), so it goes, before this node could own one of them again.
 * Each unit's purge is fenced at the unit's current shard_epoch. */
static void on_forgotten(keel_cluster *c, void *data)
{
    keel_cluster_rt *rt = data;
    const keel_shard_map *m = keel_cluster_map(c);
    const char *me = keel_cluster_node_name(c);
    uint32_t ci, s;
    size_t queued = 0;

    if (m == NULL)
        return;
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, ci, s);
            const char *owner = keel_map_primary(m, ci, s);
            rt_job *j;
            if (owner != NULL && strcmp(owner, me) == 0)
                continue;
            if ((j = calloc(1, sizeof *j)) == NULL) {
                keel_error("out of memory purging stale units");
                return;
            }
            j->kind = JOB_WIPE;
            snprintf(j->cap, sizeof j->cap, "%s", m->caps[ci]);
            j->shard = s;
            j->epoch = u->shard_epoch;
            job_push(rt, j);
            queued++;
        }
    keel_warn("cluster: this node was forgotten: deleting its stale copy "
              "of %zu units it does not own",
              queued);
}

static void on_map(keel_cluster *c, uint64_t map_epoch, void *data)
{
    keel_cluster_rt *rt = data;

    (void)c;
    keel_debug("cluster: map %llu applied", (unsigned long long)map_epoch);
    rt->sweep = 1;
}

/* Graceful leave. Marked leaving by someone else (`keel node drain`): stop
 * like on SIGTERM, which hands off first. Handing off: done once this node
 * holds nothing another member could take and no release is under way, or
 * at the deadline. */
static void leave_tick(keel_cluster_rt *rt)
{
    keel_node *n = rt->n;
    size_t held, movable;

    if (rt->leave == 0) {
        if (keel_cluster_phase(rt->c) == KEEL_CLUSTER_RUNNING &&
            keel_cluster_member_leaving(rt->c,
                                        keel_cluster_node_name(rt->c)) &&
            !atomic_load(&n->stop_requested)) {
            keel_info("cluster: this node is being drained: handing its "
                      "units off, then stopping");
            keel_node_stop(n);
        }
        return;
    }
    if (rt->leave != 1)
        return;
    keel_cluster_held(rt->c, &held, &movable);
    if (movable == 0 && rt->rels == NULL) {
        if (held > 0)
            keel_warn("cluster: leaving with %zu unit(s) no other member can "
                      "take; they stay unavailable until this node returns",
                      held);
        else
            keel_info("cluster: every unit handed off");
    } else if (now(rt) >= rt->leave_deadline) {
        keel_warn("cluster: leave timed out with %zu unit(s) not handed off "
                  "(%zu could move); they stay unavailable until this node "
                  "returns",
                  held, movable);
    } else {
        if (now(rt) >= rt->leave_report) {
            keel_info("cluster: leaving: %zu unit(s) still to hand off",
                      movable);
            rt->leave_report = now(rt) + 1.0;
        }
        return;
    }
    rt->leave = 2;
    keel_node_stop(n); /* wakes the loop: the stop goes on */
}

int keel__cluster_rt_leave(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    int rc;

    if (rt == NULL || !rt->started || rt->leave == 2)
        return 0;
    if (rt->leave == 1)
        return 1;
    if (keel_cluster_phase(rt->c) != KEEL_CLUSTER_RUNNING ||
        keel_cluster_fenced(rt->c)) {
        keel_warn("cluster: not joined or fenced: stopping without handing "
                  "units off");
        rt->leave = 2;
        return 0;
    }
    rc = keel_cluster_drain(rt->c, keel_cluster_node_name(rt->c));
    if (rc != 0) {
        keel_warn("cluster: cannot mark this node leaving (%s): stopping "
                  "without handing units off",
                  keel_strerror(rc));
        rt->leave = 2;
        return 0;
    }
    keel_info("cluster: leaving: handing every unit off (at most %.0f s)",
              leave_s(rt));
    rt->leave = 1;
    rt->leave_deadline = now(rt) + leave_s(rt);
    rt->leave_report = now(rt) + 1.0;
    return 1;
}

/* Runs at EV_MAXPRI among the check watchers, which libev queues right
 * after the poll: after a pause (SIGSTOP, a starved process) this is the
 * first thing the loop does, before it reads a request from a socket or
 * runs a turn, so a node whose lease lapsed meanwhile is fenced before it
 * could serve a unit that another node may own by now. One clock read and
 * one comparison while the lease holds; the clock is the agent's own
 * (CLOCK_BOOTTIME, which counts a suspension too), not ev_now(), which
 * follows the wall clock. */
static void lease_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    keel_cluster_rt *rt = w->data;

    (void)loop;
    (void)revents;
    keel_cluster_check_lease(rt->c);
}

int keel__cluster_rt_serving(keel_node *n)
{
    return !keel_cluster_check_lease(n->cluster->c);
}

uint64_t keel__cluster_write_epoch(keel_node *n, const char *cap,
                                   uint32_t shard)
{
    return keel_cluster_write_epoch(n->cluster->c, cap, shard);
}

/* Reports the units of rt->acq acquired once none of their actors is
 * resident any more (the sweep passivates them as their writes settle). */
static void acquire_pending(keel_cluster_rt *rt)
{
    rt_job **pp = &rt->acq, *j;

    while ((j = *pp) != NULL) {
        if (unit_resident(rt, j->cap, j->shard)) {
            rt->sweep = 1;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (keel_cluster_acquired(rt->c, j->cap, j->shard, j->epoch) == 0)
            STAT_ADD(rt->n, units_acquired, 1);
        job_free(j);
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_cluster_rt *rt = w->data;

    (void)loop;
    (void)revents;
    if (rt->sweep)
        rt->sweep = sweep(rt) > 0;
    if (rt->acq != NULL)
        acquire_pending(rt);
    if (rt->rels != NULL)
        progress_rels(rt);
    if (rt->held != NULL)
        retry_held(rt);
    leave_tick(rt);
    if (rt->n->stopping)
        keel__node_stop_check(rt->n);
}

int keel__cluster_rt_busy(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    ev_tstamp t;

    if (rt == NULL || !rt->started)
        return 0;
    t = now(rt);
    if (rt->stop_since == 0)
        rt->stop_since = t;
    if (t - rt->stop_since >= STOP_QUIET_MAX_S) {
        if (rt->held != NULL || keel__peers_pending(rt->peers) > 0)
            keel_warn("cluster: stopping with %zu held and %zu forwarded "
                      "call(s) unanswered",
                      rt->nheld, keel__peers_pending(rt->peers));
        return 0;
    }
    return rt->held != NULL || keel__peers_pending(rt->peers) > 0 ||
           t - n->last_forward_in < STOP_QUIET_S;
}

/* ----------------------------------------------------------- lifecycle */

static int split_caps(keel_cluster_rt *rt, const char *list)
{
    const char *p = list;

    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char **v;
        if (len > 0) {
            v = realloc(rt->caps, (rt->ncaps + 1) * sizeof *v);
            if (v == NULL)
                return KEEL_ENOMEM;
            rt->caps = v;
            v[rt->ncaps] = strndup(p, len);
            if (v[rt->ncaps] == NULL)
                return KEEL_ENOMEM;
            rt->ncaps++;
        }
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static void rt_free(keel_cluster_rt *rt)
{
    size_t i;
    rt_job *j;

    while ((j = rt->acq) != NULL) {
        rt->acq = j->next;
        job_free(j);
    }
    for (i = 0; i < rt->ncaps; i++)
        free(rt->caps[i]);
    free(rt->caps);
    keel_batch_destroy(rt->batch);
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

int keel__cluster_rt_create(keel_node *n, char *errbuf, size_t errlen)
{
    const keel_node_options *o = &n->opts;
    keel_cluster_options co;
    keel_cluster_rt *rt;
    keel_coord *coord = NULL;
    int rc;

    if (o->cluster == NULL || o->node_id == NULL) {
        snprintf(errbuf, errlen,
                 "cluster mode needs a cluster name and a node id");
        return KEEL_EINVAL;
    }
    rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return KEEL_ENOMEM;
    rt->n = n;
    pthread_mutex_init(&rt->mu, NULL);
    rt->batch = keel_batch_create();
    if (rt->batch == NULL || split_caps(rt, o->capabilities) != 0) {
        rt_free(rt);
        return KEEL_ENOMEM;
    }
    if (o->advertise != NULL) {
        snprintf(rt->address, sizeof rt->address, "%s", o->advertise);
    } else if (o->listen != NULL) {
        const char *colon = strrchr(o->listen, ':');
        int hl = colon ? (int)(colon - o->listen) : 0;
        snprintf(rt->address, sizeof rt->address, "%.*s:%d", hl, o->listen,
                 n->port);
    } else {
        snprintf(errbuf, errlen, "cluster mode needs a listen address");
        rt_free(rt);
        return KEEL_EINVAL;
    }
    rt->peers = keel__peers_create(n);
    if (rt->peers == NULL) {
        rt_free(rt);
        return KEEL_ENOMEM;
    }
    keel_cluster_options_init(&co);
    co.zk_hosts = o->zk_hosts;
    co.cluster = o->cluster;
    co.node = o->node_id;
    co.address = rt->address;
    co.caps = (const char *const *)rt->caps;
    co.ncaps = rt->ncaps;
    co.shard_count = o->shard_count;
    co.session_timeout_ms =
        o->zk_session_timeout_ms ? o->zk_session_timeout_ms : 4000;
    co.hooks.data = rt;
    co.hooks.release = on_release;
    co.hooks.acquire = on_acquire;
    co.hooks.drop = on_drop;
    co.hooks.fenced = on_fenced;
    co.hooks.expired = on_expired;
    co.hooks.map_applied = on_map;
    co.hooks.forgotten = on_forgotten;
    rc = keel_coord_cluster_create(n->loop, &co, &coord);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot join cluster %s as %s: %s",
                 o->cluster, o->node_id, keel_strerror(rc));
        keel__peers_destroy(rt->peers);
        rt_free(rt);
        return rc;
    }
    rt->c = keel_coord_to_cluster(coord);
    keel_coord_destroy(n->coord);
    n->coord = coord;
    n->cluster = rt;
    ev_async_init(&rt->wake, wake_cb);
    rt->wake.data = rt;
    ev_timer_init(&rt->tick, tick_cb, TICK_S, TICK_S);
    rt->tick.data = rt;
    ev_check_init(&rt->lease, lease_cb);
    ev_set_priority(&rt->lease, EV_MAXPRI);
    rt->lease.data = rt;
    keel_info("cluster %s: node %s at %s, zookeeper %s", o->cluster,
              o->node_id, rt->address, o->zk_hosts);
    return 0;
}

int keel__cluster_rt_start(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    int rc;

    if (rt == NULL)
        return 0;
    rc = keel_writer_start(n->store, writer_done, rt, &rt->writer);
    if (rc != 0)
        return rc;
    ev_async_start(n->loop, &rt->wake);
    ev_timer_start(n->loop, &rt->tick);
    ev_check_start(n->loop, &rt->lease);
    rt->started = 1;
    kick_writer(rt);
    return 0;
}

void keel__cluster_rt_stop(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    rt_msg *m;
    rt_job *j;

    if (rt == NULL || !rt->started)
        return;
    rt->started = 0;
    ev_timer_stop(n->loop, &rt->tick);
    ev_check_stop(n->loop, &rt->lease);
    ev_async_stop(n->loop, &rt->wake);
    keel_writer_stop(rt->writer); /* commits what it has, then returns */
    rt->writer = NULL;
    if (rt->busy)
        settle(rt, rt->done ? rt->done_status : KEEL_ESTOPPING, 0);
    while ((j = rt->jobs) != NULL) {
        rt->jobs = j->next;
        if (j->req != NULL)
            req_finish(n, j->req, KEEL_ESTOPPING,
                       keel_strerror(KEEL_ESTOPPING),
                       strlen(keel_strerror(KEEL_ESTOPPING)));
        job_free(j);
    }
    rt->jobs_tail = NULL;
    while ((m = rt->held) != NULL) {
        rt->held = m->next;
        msg_fail(rt, m, KEEL_ESTOPPING, keel_strerror(KEEL_ESTOPPING));
    }
    rt->held_tail = NULL;
    rt->nheld = 0;
    /* Forwarded requests that left fail with KEEL_ECONN (they may have
     * run), the others with KEEL_ESTOPPING. */
    keel__peers_destroy(rt->peers);
    rt->peers = NULL;
}

void keel__cluster_rt_destroy(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    rt_msg *m;

    if (rt == NULL)
        return;
    keel__cluster_rt_stop(n);
    keel_coord_destroy(n->coord);
    n->coord = NULL;
    while ((m = rt->held) != NULL) {
        rt->held = m->next;
        msg_fail(rt, m, KEEL_ESTOPPING, keel_strerror(KEEL_ESTOPPING));
    }
    keel__peers_destroy(rt->peers);
    drop_rel(rt, NULL, 0);
    while (rt->rels != NULL) {
        rt_rel *r = rt->rels;
        rt->rels = r->next;
        free(r);
    }
    while (rt->xins != NULL) {
        rt_xin *x = rt->xins;
        rt->xins = x->next;
        free(x->recs);
        free(x);
    }
    n->cluster = NULL;
    rt_free(rt);
}
