/* The cluster runtime's own store writes: a unit's fence on acquire, a
 * received unit (replacing what this node held of it), the fence of a
 * unit kept as an in-sync backup (unit_promote.c), the purge after a
 * unit was streamed out, the wipe of a forgotten node's stale copies.
 * They go through a writer thread of their own on the node's store, one
 * batch at a time, so they never mix with the node's group commit of
 * actor state; the store serializes commits. */
#include "runtime/cluster_rt_int.h"
#include "runtime/outbox.h"
#include "runtime/reminders.h"
#include "runtime/repl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#include "coordinator/layout.h"

/* ------------------------------------------------------ unit records */

/* Which unit a record belongs to is the store's to say (its type table),
 * not this node's type registry: a node without some plugin must neither
 * send nor delete that plugin's records as if they were the default
 * group's. */
static int unit_scan_cb(const uint8_t *key, size_t klen,
                        const keel_record *rec, void *data)
{
    struct scan_ctx *s = data;
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
    rt_put_be(p, klen, 2);
    memcpy(p + 2, key, klen);
    rt_put_be(p + 2 + klen, rec->version, 8);
    rt_put_be(p + 10 + klen, rec->len, 4);
    if (rec->len)
        memcpy(p + 14 + klen, rec->data, rec->len);
    s->len = need;
    return 0;
}

/* Collects the unit's records into s->out. KEEL_ECAPUNKNOWN when the
 * shard holds records of a type whose capability the store does not know
 * (the caller must not stream: it cannot tell what belongs to the unit). */
int rt_unit_scan(keel_node *n, const char *cap, uint32_t shard,
                 struct scan_ctx *s)
{
    keel_store_read *r;
    int rc;

    s->n = n;
    s->cap = cap;
    rc = keel_store_read_begin(n->store, &r);
    if (rc != 0)
        return rc;
    rc = keel_store_unit_scan(r, cap, (uint16_t)shard, unit_scan_cb, s);
    keel_store_read_end(r);
    if (s->err != 0)
        return s->err;
    return rc < 0 ? rc : 0;
}

/* Parses the next record of an XFER record area. */
int rt_rec_next(const uint8_t *p, size_t len, size_t *off,
                    const uint8_t **key, size_t *klen, uint64_t *version,
                    const uint8_t **val, size_t *vlen)
{
    size_t o = *off;

    if (len - o < 2)
        return KEEL_EMALFORMED;
    *klen = (size_t)rt_get_be(p + o, 2);
    if (*klen == 0 || *klen > KEEL_KEY_MAX || len - o - 2 < *klen + 12)
        return KEEL_EMALFORMED;
    *key = p + o + 2;
    *version = rt_get_be(p + o + 2 + *klen, 8);
    *vlen = (size_t)rt_get_be(p + o + 10 + *klen, 4);
    if (len - o - 14 - *klen < *vlen)
        return KEEL_EMALFORMED;
    *val = p + o + 14 + *klen;
    *off = o + 14 + *klen + *vlen;
    return 0;
}

/* ------------------------------------------------------------- commits */

void rt_job_free(rt_job *j)
{
    free(j->recs);
    free(j);
}

void rt_kick_writer(keel_cluster_rt *rt);

void rt_job_push(keel_cluster_rt *rt, rt_job *j)
{
    j->next = NULL;
    if (rt->jobs_tail != NULL)
        rt->jobs_tail->next = j;
    else
        rt->jobs = j;
    rt->jobs_tail = j;
    rt_kick_writer(rt);
}

int rt_job_build(keel_cluster_rt *rt, keel_batch *b, rt_job *j)
{
    int rc = keel_batch_begin_group(b, j->cap, (uint16_t)j->shard, j->epoch,
                                    j);

    (void)rt;
    if (rc != 0)
        return rc;
    switch (j->kind) {
    case JOB_FENCE:
        if (j->wipe)
            return keel_batch_del_unit(b, j->epoch);
        return keel_batch_fence_only(b);
    case JOB_WIPE:
        /* forgotten/<node> goes once the wipes are durable, whatever the
         * node's durability mode. */
        keel_batch_require_sync(b);
        /* A forgotten node's stale copy is what it wrote before the unit
         * moved on at j->epoch. Records at j->epoch or later came from the
         * unit's current owner, streamed here by a handoff that may have
         * started before this wipe was queued, possibly in this very
         * batch: they stay. The store chooses the records inside the
         * transaction, so it sees them. */
        return keel_batch_del_unit(b, j->epoch);
    case JOB_PURGE:
        /* The unit went to j->to: the store keeps where it went, in the
         * same transaction (a node restarting before it published the
         * release still knows), and the group raises the fence. The
         * records go, unless kept (rel_purge). */
        rc = j->keep_records ? 0 : keel_batch_del_unit(b, 0);
        if (rc == 0)
            rc = keel_batch_handoff(b, j->epoch - 1, j->to);
        return rc;
    case JOB_KEEP:
        /* This node's copy is the unit's from now on, at that epoch: its
         * fence records it before the answer lets the sender purge, so
         * that the acquire at the next epoch keeps the records. Durable,
         * whatever this node's durability, like a received stream. */
        keel_batch_require_sync(b);
        return keel_batch_fence_only(b);
    case JOB_XFER_IN:
        break;
    default:
        return KEEL_EINVAL;
    }
    /* The stream replaces what this node held of the unit. Its sender
     * deletes its copy once it has the answer, so the answer waits until
     * the records are on the disk, whatever this node's durability. */
    rc = keel_batch_del_unit(b, 0);
    keel_batch_require_sync(b);
    {
        size_t off = 0;
        while (rc == 0 && off < j->recs_len) {
            const uint8_t *key, *val;
            size_t klen, vlen;
            uint64_t version;
            rc = rt_rec_next(j->recs, j->recs_len, &off, &key, &klen,
                             &version, &val, &vlen);
            if (rc == 0)
                rc = keel_batch_put(b, key, klen, version, val, vlen);
        }
    }
    return rc;
}

static void job_done(keel_cluster_rt *rt, rt_job *j, int status)
{
    keel_node *n = rt->n;
    int rc;

    switch (j->kind) {
    case JOB_FENCE:
        if (status == KEEL_EFENCED) {
            /* A higher epoch is recorded: the unit moved on past this one
             * (the map will say so); retrying cannot succeed. */
            keel_error("unit (%s, %u): shard epoch %llu refused by a newer "
                       "fence",
                       keel_cap_name(j->cap), j->shard,
                       (unsigned long long)j->epoch);
            break;
        }
        if (status != 0) {
            rt_job *again;
            keel_error("unit (%s, %u): recording shard epoch %llu failed: "
                       "%s; retrying",
                       keel_cap_name(j->cap), j->shard,
                       (unsigned long long)j->epoch,
                       keel_strerror(status));
            /* Without the fence the unit is never served here: the
             * write is retried for as long as the acquire is wanted. */
            if (!keel_cluster_acquiring(rt->c, j->cap, j->shard, j->epoch))
                break;
            if ((again = calloc(1, sizeof *again)) == NULL)
                break; /* the next map applied asks again */
            again->kind = JOB_FENCE;
            memcpy(again->cap, j->cap, sizeof again->cap);
            again->shard = j->shard;
            again->epoch = j->epoch;
            again->wipe = j->wipe; /* the stale copy still has to go */
            rt_job_later(rt, again);
            break;
        }
        /* Actors of this unit still resident from an earlier ownership
         * (a session that expired, a unit that left and came back before
         * the sweep came round) must not serve with what they hold: the
         * unit stays not LOCAL until the sweep has them gone (their
         * writes settled), see acquire_pending(). */
        if (rt_unit_resident(rt, j->cap, j->shard)) {
            rt_job *later = calloc(1, sizeof *later);
            if (later == NULL) {
                keel_error("out of memory acquiring (%s, %u)",
                           keel_cap_name(j->cap),
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
        if (rc == 0) {
            STAT_ADD(n, units_acquired, 1);
            keel__outbox_unit_taken(n, j->cap, j->shard);
            keel__reminders_unit_taken(n, j->cap, j->shard);
        }
        keel_debug("unit (%s, %u) acquired at epoch %llu: %s",
                   keel_cap_name(j->cap),
                   j->shard, (unsigned long long)j->epoch, keel_strerror(rc));
        rt->sweep = 1;
        break;
    case JOB_XFER_IN:
        if (status == 0) {
            STAT_ADD(n, handoff_bytes_in, j->recs_len);
            rt_receipt_add(rt, j->cap, j->shard, j->epoch,
                           rt_req_node(j->req));
        }
        rt_peer_answer(n, j->req, status);
        j->req = NULL;
        break;
    case JOB_WIPE:
        if (status != 0 && status != KEEL_EFENCED)
            keel_error("unit (%s, %u): deleting the stale local copy failed: "
                       "%s",
                       keel_cap_name(j->cap), j->shard, keel_strerror(status));
        rt_wipe_done(rt, j, status);
        break;
    case JOB_PURGE:
        rt_rel_purged(rt, j->cap, j->shard, status);
        break;
    case JOB_KEEP:
        rt_promote_kept(rt, j, status);
        break;
    }
}

void rt_job_later(keel_cluster_rt *rt, rt_job *j)
{
    j->not_before = rt_now(rt) + RETRY_S;
    j->next = rt->later;
    rt->later = j;
}

void rt_jobs_due(keel_cluster_rt *rt)
{
    rt_job **pp = &rt->later, *j;

    while ((j = *pp) != NULL) {
        if (rt_now(rt) < j->not_before ||
            (j->kind == JOB_XFER_IN &&
             keel__repl_unit_applying(rt->n, j->cap, j->shard))) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        rt_job_push(rt, j);
    }
}

void rt_writer_done(keel_batch *b, int status, void *data)
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
void rt_settle(keel_cluster_rt *rt, int status, int reported)
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
        rt_job_free(j);
    }
    rt->busy = 0;
}

void rt_kick_writer(keel_cluster_rt *rt)
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
        rc = rt_job_build(rt, b, j);
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
        keel_error("unit (%s, %u): cannot build a write: %s",
                   keel_cap_name(failed->cap),
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
        rt_job_free(failed);
        rt_kick_writer(rt);
        return;
    }
    rt->busy = 1;
    rc = keel_writer_submit(rt->writer, b);
    if (rc != 0)
        rt_settle(rt, rc, 0);
}

void rt_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
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
        rt_settle(rt, status, 1);
        rt_kick_writer(rt);
    }
}

/* -------------------------------------------------- streaming a unit out */