/* Replication, the backup side: see runtime/repl.h and docs/cluster.md,
 * "Replication stream".
 *
 * Per unit (repl_bunit) the stream, epoch and seqs taken
 * (accepted: queued for the writer; durable: reported committed). The
 * writer is one of this module's own, started with the first REPL frame:
 * one batch per frame, or per run of frames that queued while the writer
 * was busy (the later ones join the batch still waiting), reported in
 * order, so a frame of duplicates only is answered once everything before
 * it is durable. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/failpoint.h"
#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/shardmap.h"
#include "runtime/cluster_rt_int.h"
#include "runtime/repl.h"

#include "runtime/repl_int.h"

static int bunit_eq(const void *item, const void *key)
{
    const repl_bunit *u = item;
    const struct repl_ukey *k = key;

    return u->shard == k->shard && strcmp(u->cap, k->cap) == 0;
}

/* Whether the applied map has the unit at a newer epoch than epoch. */
static int map_newer(keel_repl *r, const char *cap, uint32_t shard,
                     uint64_t epoch)
{
    const keel_shard_map *m = keel_cluster_map(repl_cl(r));
    int ci;

    if (m == NULL || shard >= m->shard_count ||
        (ci = keel_map_cap_index(m, cap)) < 0)
        return 0;
    return keel_map_unit_at(m, (uint32_t)ci, shard)->shard_epoch > epoch;
}

static repl_bunit *bunit_get(keel_repl *r, const char *cap, uint32_t shard)
{
    struct repl_ukey k = {cap, shard};
    uint64_t h = repl_unit_hash(cap, shard);
    repl_bunit *u = keel_hmap_get(&r->bunits, h, &k, bunit_eq);
    size_t clen = strlen(cap);

    if (u != NULL)
        return u;
    u = calloc(1, sizeof *u + clen + 1);
    if (u == NULL)
        return NULL;
    memcpy(u->cap, cap, clen + 1);
    u->shard = shard;
    u->hash = h;
    if (keel_hmap_put(&r->bunits, h, u) != 0) {
        free(u);
        return NULL;
    }
    return u;
}

/* Writer thread: the batches come back in the order they went, and the
 * frames a batch holds are consecutive among the jobs (those refused at
 * the door aside, never reported). */
static void bw_done(keel_batch *b, int status, void *data)
{
    keel_repl *r = data;
    bjob *j;

    pthread_mutex_lock(&r->mu);
    while ((j = r->wnext) != NULL && (j->done || j->bb->b == b)) {
        if (!j->done) {
            j->wstatus = status;
            j->done = 1;
            j->reported = 1;
        }
        r->wnext = j->next;
    }
    pthread_mutex_unlock(&r->mu);
    ev_async_send(r->n->loop, &r->wake);
}

/* Starts the replication writer when it is not running yet and, in a
 * test build, gives it the commit delay of the failpoint
 * REPL_APPLY_DELAY_MS (common/failpoint.h). That is asked before every
 * job, not once: a failpoint may be armed after the writer started. */
static int bw_ready(keel_node *n, keel_repl *r)
{
    int rc;

    if (r->writer == NULL &&
        (rc = keel_writer_start(n->store, bw_done, r, &r->writer)) != 0)
        return rc;
#ifdef KEEL_FAILPOINTS
    if (!r->fp_delay_set && keel_failpoint(KEEL_FP_REPL_APPLY_DELAY_MS) > 0) {
        keel_writer_delay_commits(
            r->writer, keel_failpoint(KEEL_FP_REPL_APPLY_DELAY_MS));
        r->fp_delay_set = 1;
    }
#endif
    return 0;
}

static int bbatch_failed(const keel_batch *b, int status)
{
    size_t i, ng = keel_batch_group_count(b);
    int gst;

    for (i = 0; status == 0 && i < ng; i++)
        keel_batch_group(b, i, &gst), status = gst;
    return status != 0;
}

/* j is answered: the batch goes with its last frame. The writer counted
 * one failure for a failed batch, however many frames it held, so it is
 * acknowledged once, here. */
static void bbatch_release(keel_repl *r, bjob *j, int status)
{
    bbatch *bb = j->bb;

    if (bb == NULL || --bb->refs > 0)
        return;
    if (j->reported && status != 0 && bb->nframes > 1 &&
        ev_now(r->n->loop) - r->merge_warned >= 1.0) {
        r->merge_warned = ev_now(r->n->loop);
        keel_warn("replication: a commit of %u frames failed (%s): none of "
                  "them is acknowledged, their primaries send them again",
                  bb->nframes, keel_strerror(status));
    }
    if (j->reported && r->writer != NULL && bbatch_failed(bb->b, status))
        keel_writer_ack_failure(r->writer);
    if (r->wtail == bb)
        r->wtail = NULL;
    keel_batch_destroy(bb->b);
    free(bb);
}

/* The answer to a frame whose writes settled with status (the writer's,
 * or a refusal at the door). */
void repl_bjob_finish(keel_repl *r, bjob *j, int status)
{
    keel_node *n = r->n;
    size_t len = 2, k;
    uint8_t *body;

    for (k = 0; k < j->nunits; k++)
        len += KEEL_REPL_ACK_SIZE(j->units[k].clen);
    body = malloc(len);
    if (body != NULL)
        keel_repl_acks_count(body, j->nunits);
    len = 2;
    for (k = 0; k < j->nunits; k++) {
        struct bj_unit *x = &j->units[k];
        repl_bunit *bu = x->bu;
        int st = x->status, differs = 0;
        uint64_t seq = 0;
        if (st == 0 && x->grouped) {
            int gst = 0;
            keel_batch_group(j->bb->b, j->gbase + x->gidx, &gst);
            st = status != 0 ? status : gst;
            if (st == 0 && (x->forced ||
                            keel_batch_group_differs(j->bb->b,
                                                     j->gbase + x->gidx)))
                differs = 1;
            if (bu->epoch == x->epoch && bu->stream == x->stream) {
                if (st == 0 && !x->snap && x->seq > bu->accepted) {
                    /* A piece before it was not written (its group was
                     * refused in the transaction both were in): it must
                     * not be counted over that one; it is taken again,
                     * in order, when the primary sends both again. */
                    st = KEEL_EPROTO;
                    differs = 0;
                }
                if (st == 0 && differs)
                    bu->differed = x->seq;
                if (st == 0 && x->seq > bu->durable)
                    bu->durable = x->seq;
                /* Not written: taken again when sent again. Pieces after
                 * it taken since the writer heard of the failure stay
                 * taken; those before were refused with it. */
                else if (st != 0 && bu->accepted >= x->seq)
                    bu->accepted = x->seq - 1;
            }
        }
        if (st == 0 && bu != NULL && bu->epoch == x->epoch &&
            bu->stream == x->stream)
            seq = bu->durable;
        if (st != 0)
            STAT_ADD(n, repl_refused, 1);
        else if (differs ||
                 (x->resent && bu != NULL && bu->epoch == x->epoch &&
                  bu->stream == x->stream && bu->differed == x->seq))
            /* Taken; the primary sends the records. A resend is looked
             * up now, not when it was taken: the first copy may have been
             * committing then, and frames are answered in order, so its
             * outcome is known by now. */
            st = KEEL_EDIFFERS;
        if (body != NULL)
            len += keel_repl_ack_encode(body + len, x->cap, x->clen, x->shard,
                                        st, seq);
    }
    if (j->nunits == 0 && status != KEEL_ESTOPPING) {
        /* A copy deleted (keel__repl_drop_copy), not a frame. Not when
         * stopping: the node's cluster runtime may be gone already (its
         * list of deletions goes with it). */
        const char *cap = NULL;
        uint16_t shard = 0;
        int gst = 0;
        keel_batch_group(j->bb->b, j->gbase, &gst);
        gst = status != 0 ? status : gst;
        if (keel_batch_group_unit(j->bb->b, j->gbase, &cap, &shard, NULL) ==
            0) {
            if (gst == 0)
                STAT_ADD(n, repl_copies_deleted, 1);
            else
                keel_warn("unit (%s, %u): deleting the copy the map no "
                          "longer lists this node for failed: %s; it stays "
                          "until this node starts again",
                          keel_cap_name(cap), shard, keel_strerror(gst));
            rt_sweep_settled(r->rt, cap, shard);
        }
    } else if (j->nunits > 0 && status == 0) {
        STAT_ADD(n, repl_applied_frames, 1);
    }
    if (j->req != NULL) {
        keel_req *req = j->req;
        j->req = NULL;
        if (body == NULL) {
            req->status = KEEL_ENOMEM;
            keel__req_set(req, "out of memory", 13);
        } else {
            req->status = 0;
            if (keel__req_set(req, body, len) != 0) {
                req->status = KEEL_ENOMEM;
                req->len = 0;
            }
        }
        keel__net_complete(n, req);
    }
    free(body);
    bbatch_release(r, j, status);
    free(j->units);
    free(j->drop_cap);
    free(j);
}

void repl_bjobs_reap(keel_repl *r)
{
    for (;;) {
        bjob *j;
        int st;

        pthread_mutex_lock(&r->mu);
        j = r->jobs;
        if (j == NULL || !j->done) {
            pthread_mutex_unlock(&r->mu);
            return;
        }
        r->jobs = j->next;
        if (r->jobs == NULL)
            r->jobs_tail = NULL;
        if (r->wnext == j)
            r->wnext = j->next; /* done without the writer: never its */
        st = j->wstatus;
        pthread_mutex_unlock(&r->mu);
        repl_bjob_finish(r, j, st);
    }
}

void repl_backup_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    repl_bjobs_reap(w->data);
}

/* Whether every op of the unit writes within its shard, as the store's
 * fencing needs, and a deletion of the whole unit comes only first (a
 * snapshot). */
static int ops_in_shard(const keel_repl_unit *ru)
{
    const uint8_t *p = ru->ops;
    size_t rest = ru->ops_len;
    uint32_t k;

    for (k = 0; k < ru->nops; k++) {
        keel_repl_op op;
        if (keel_repl_op_next(&p, &rest, &op) != 0)
            return 0;
        if (op.kind == KEEL_REPL_DEL_UNIT) {
            if (k != 0)
                return 0;
            continue;
        }
        if (op.kind == KEEL_REPL_CHECK_UNIT) {
            if (ru->nops != 1)
                return 0;
            continue;
        }
        if (op.klen > KEEL_KEY_MAX ||
            (((unsigned)op.key[0] << 8) | op.key[1]) != ru->shard)
            return 0;
    }
    return 1;
}

/* A snapshot: a piece whose first op deletes the whole unit, or checks
 * that this node holds what the primary holds (and deletes it if not). */
static int piece_is_snapshot(const keel_repl_unit *ru)
{
    return ru->nops > 0 && ru->ops_len > 0 &&
           (ru->ops[0] == KEEL_REPL_DEL_UNIT ||
            ru->ops[0] == KEEL_REPL_CHECK_UNIT);
}

static int piece_is_check(const keel_repl_unit *ru)
{
    return ru->nops > 0 && ru->ops_len > 0 &&
           ru->ops[0] == KEEL_REPL_CHECK_UNIT;
}

static int unit_build(keel_batch *b, const keel_repl_unit *ru, void *tag,
                      const char *cap, int forced)
{
    const uint8_t *p = ru->ops;
    size_t rest = ru->ops_len;
    uint32_t k;
    int rc = keel_batch_begin_group(b, cap, (uint16_t)ru->shard, ru->epoch,
                                    tag);

    for (k = 0; rc == 0 && k < ru->nops; k++) {
        keel_repl_op op;
        (void)keel_repl_op_next(&p, &rest, &op); /* checked before */
        if (op.kind == KEEL_REPL_PUT)
            rc = keel_batch_put(b, op.key, op.klen, op.version, op.data,
                                op.dlen);
        else if (op.kind == KEEL_REPL_DEL_UNIT)
            rc = keel_batch_del_unit(b, 0);
        else if (op.kind == KEEL_REPL_CHECK_UNIT)
            rc = forced ? keel_batch_del_unit(b, 0)
                        : keel_batch_check_unit(b, op.version);
        else if (op.kind == KEEL_REPL_DEL)
            rc = keel_batch_del(b, op.key, op.klen);
        else
            rc = keel_batch_del_prefix(b, op.key, op.klen);
    }
    return rc;
}

/* Whether the cluster's view lets from send x's unit at its epoch here:
 * the applied map has no newer epoch of it, and this node is a replica
 * of it with from its primary. */
static int unit_admit(keel_repl *r, const struct bj_unit *x, const char *from)
{
    int rc;

    if (map_newer(r, x->cap, x->shard, x->epoch))
        return KEEL_EFENCED;
    rc = keel_cluster_may_replicate(repl_cl(r), x->cap, x->shard, x->epoch,
                                    from);
    /* EFENCED from the cluster means this node is fenced or not joined,
     * not that the sender is stale: it must not read as the store's
     * EFENCED, which tells the sender a newer epoch exists. */
    return rc == KEEL_EFENCED ? KEEL_EUNAVAIL : rc;
}

/* Whether a unit piece may be taken: the cluster's view, then order. */
static int piece_admit(keel_repl *r, struct bj_unit *x, const char *from,
                       uint64_t stream, int snap)
{
    repl_bunit *bu;
    int rc;

    if ((rc = unit_admit(r, x, from)) != 0)
        return rc;
    if ((bu = bunit_get(r, x->cap, x->shard)) == NULL)
        return KEEL_ENOMEM;
    x->bu = bu;
    x->old_epoch = bu->epoch;
    x->old_stream = bu->stream;
    x->old_accepted = bu->accepted;
    x->old_durable = bu->durable;
    x->old_differed = bu->differed;
    if (x->epoch < bu->epoch)
        return KEEL_EFENCED;
    if (x->epoch > bu->epoch) {
        bu->epoch = x->epoch;
        bu->stream = 0;
        bu->accepted = bu->durable = bu->differed = 0;
    }
    if (stream != bu->stream) {
        /* Another run of seqs: taken only from its start (or from a
         * snapshot), and only a newer one (a restarted primary). Anything
         * else has a gap. */
        if ((x->seq != 1 && !snap) || stream < bu->stream)
            return KEEL_EPROTO;
        bu->stream = stream;
        bu->accepted = bu->durable = bu->differed = 0;
    }
    if (snap) {
        /* The unit as the primary held it at seq (and perhaps a little
         * after: the pieces after seq, applied again, end in the same
         * content). Replaces whatever this node held of it; one older
         * than the pieces taken already is a resend, done with. */
        if (x->seq < bu->accepted) {
            x->resent = 1;
            return 0;
        }
        x->grouped = 1;
        bu->accepted = x->seq;
        return 0;
    }
    if (x->seq <= bu->accepted)
        return 0; /* had it already: answered once it is durable */
    if (x->seq != bu->accepted + 1)
        return KEEL_EPROTO; /* a piece before it is missing here */
    x->grouped = 1;
    bu->accepted = x->seq;
    return 0;
}

/* A confirm round (an empty piece of seq 0): 0 when this node still
 * takes the unit's pieces from `from` at that epoch, EFENCED when it
 * knows a newer one. Answered from memory and the applied map, without a
 * transaction: this store records no epoch of the unit that a map this
 * node applied does not show. */
static int confirm_admit(keel_repl *r, struct bj_unit *x, const char *from)
{
    struct repl_ukey k = {x->cap, x->shard};
    repl_bunit *bu;
    int rc;

    if ((rc = unit_admit(r, x, from)) != 0)
        return rc;
    bu = keel_hmap_get(&r->bunits, repl_unit_hash(x->cap, x->shard), &k,
                       bunit_eq);
    if (bu != NULL && bu->epoch > x->epoch)
        return KEEL_EFENCED;
    x->bu = bu;
    return 0;
}

/* Gives j its batch b (in bb, j's own) and queues j behind the jobs
 * before it, in the order they are answered. Returns with r->mu held:
 * the writer may report the batch as soon as it has it (bjob_submit),
 * and bw_done must find j queued. */
static void bjob_queue(keel_repl *r, bjob *j, keel_batch *b, bbatch *bb)
{
    bb->b = b;
    bb->refs = bb->nframes = 1;
    bb->ngroups = keel_batch_group_count(b);
    j->bb = bb;
    pthread_mutex_lock(&r->mu);
    if (r->jobs_tail != NULL)
        r->jobs_tail->next = j;
    else
        r->jobs = j;
    r->jobs_tail = j;
    if (r->wnext == NULL)
        r->wnext = j;
}

/* Hands j's batch b (bb, j's own) to the writer; called under r->mu,
 * with j queued. A batch that arrives while the writer is busy joins the
 * one still waiting for it (the one the last job went into, since
 * nothing else submits to this writer): one commit for both, and a
 * failure of that commit fails both. 1 when b joined it (b and bb are
 * freed), 0 when it went on its own, -1 when it was refused at the door
 * (stopping): j is done, as failed, and the caller wakes the loop. */
static int bjob_submit(keel_repl *r, bjob *j, keel_batch *b, bbatch *bb)
{
    keel_batch *into = NULL;
    int rc = keel_writer_submit_merge(r->writer, b, &into);

    if (rc == KEEL_ENOMEM) {
        /* No memory to join the waiting batch: a batch of its own (a
         * submit without merging never allocates). Refusing the frame
         * here would not do: the frames after it are taken already when
         * they arrive before its refusal is answered. */
        rc = keel_writer_submit(r->writer, b);
        into = b;
    }
    if (rc != 0) {
        j->wstatus = rc;
        j->done = 1;
        return -1;
    }
    if (into == b) {
        r->wtail = bb;
        return 0;
    }
    j->bb = r->wtail;
    j->gbase = r->wtail->ngroups;
    r->wtail->ngroups += bb->ngroups;
    r->wtail->refs++;
    r->wtail->nframes++;
    keel_batch_destroy(b);
    free(bb);
    return 1;
}

int keel__repl_frame(keel_node *n, const keel_frame *f, keel_req *req)
{
    keel_repl *r = n->repl;
    keel_repl_head h;
    const uint8_t *p;
    size_t rest, k;
    char from[KEEL_NAME_MAX + 1];
    keel_batch *b;
    bbatch *bb;
    bjob *j;
    int rc = 0, confirms = 0, checks = 0, how;
    const char *peer;

    if (r == NULL)
        return KEEL_EPROTO;
    rc = keel_repl_head_parse(f->body, f->body_len, &h);
    if (rc != 0)
        return rc;
    if (h.flen > KEEL_NAME_MAX || memchr(h.from, '\0', h.flen) != NULL)
        return KEEL_EMALFORMED;
    memcpy(from, h.from, h.flen);
    from[h.flen] = '\0';
    /* A member sends in its own name only: its backups judge a frame by
     * the primary it names. */
    if (req->origin == REQ_NET &&
        ((peer = keel__conn_node(req->u.net.conn)) == NULL ||
         strcmp(peer, from) != 0))
        return KEEL_EDENIED;
    /* The whole frame is checked before anything of it is taken. */
    p = h.units;
    rest = h.units_len;
    for (k = 0; k < h.nunits; k++) {
        keel_repl_unit ru;
        if (keel_repl_unit_next(&p, &rest, &ru) != 0)
            return KEEL_EMALFORMED;
    }
    if (rest != 0)
        return KEEL_EMALFORMED;
    if ((rc = bw_ready(n, r)) != 0)
        return rc;
    j = calloc(1, sizeof *j);
    if (j == NULL)
        return KEEL_ENOMEM;
    j->nunits = h.nunits;
    j->units = calloc(h.nunits ? h.nunits : 1, sizeof *j->units);
    bb = calloc(1, sizeof *bb);
    b = keel_batch_create();
    if (j->units == NULL || bb == NULL || b == NULL) {
        keel_batch_destroy(b);
        free(bb);
        free(j->units);
        free(j);
        return KEEL_ENOMEM;
    }
    p = h.units;
    rest = h.units_len;
    for (k = 0; k < h.nunits; k++) {
        struct bj_unit *x = &j->units[k];
        keel_repl_unit ru;
        (void)keel_repl_unit_next(&p, &rest, &ru);
        x->clen = (uint8_t)ru.clen;
        memcpy(x->cap, ru.cap, ru.clen);
        x->cap[ru.clen] = '\0';
        x->shard = ru.shard;
        x->epoch = ru.epoch;
        x->stream = h.stream;
        x->seq = ru.seq;
        x->confirm = ru.seq == 0 && ru.nops == 0;
        confirms += x->confirm;
        if (memchr(ru.cap, '\0', ru.clen) != NULL ||
            ru.shard >= n->opts.shard_count ||
            (ru.seq == 0 && !x->confirm) || !ops_in_shard(&ru))
            x->status = KEEL_EMALFORMED;
        else if (x->confirm)
            x->status = confirm_admit(r, x, from);
        else
            x->status = piece_admit(r, x, from, h.stream,
                                    (x->snap = piece_is_snapshot(&ru)));
        if (x->status == 0 && x->grouped) {
            int check = piece_is_check(&ru);
            checks += check;
            /* The rejoin purge deletes records older than the unit's
             * epoch; a copy found the same keeps such records, the
             * records sent after a deletion carry the epoch. */
            x->forced = check && rt_wiping(r->rt);
            x->gidx = keel_batch_group_count(b);
            rc = unit_build(b, &ru, x->bu, x->cap, x->forced);
            if (rc != 0)
                break;
        }
    }
    if (rc != 0) {
        /* Out of memory building the batch: nothing of the frame is
         * taken (the unit that failed, k, included); the sender sends it
         * again. Newest first, so that a unit taken twice ends as it
         * was. */
        for (k++; k-- > 0;) {
            struct bj_unit *x = &j->units[k];
            if (x->bu == NULL)
                continue;
            x->bu->epoch = x->old_epoch;
            x->bu->stream = x->old_stream;
            x->bu->accepted = x->old_accepted;
            x->bu->durable = x->old_durable;
            x->bu->differed = x->old_differed;
        }
        keel_batch_destroy(b);
        free(bb);
        free(j->units);
        free(j);
        return rc;
    }
    j->req = req;
    bjob_queue(r, j, b, bb); /* returns with r->mu held */
    if (confirms == h.nunits) {
        /* Confirm rounds only: nothing to write. Answered in turn, after
         * the frames before it, like one the writer refused at the door
         * (it reports nothing for it). */
        j->done = 1;
        pthread_mutex_unlock(&r->mu);
        ev_async_send(n->loop, &r->wake);
        return 0;
    }
    /* A small frame that finds nothing else waiting on this node (no
     * frame before it unanswered, the replication writer idle, no turn
     * queued and no batch of the node's own with its writer) is
     * committed on the loop thread, as node_commit.c commits the node's
     * small batches: the writer thread's wake-up, and the loop's wake-up after
     * it, were most of what a backup added to a replicated write's
     * latency. The writer's commit, flush and failure rules apply
     * (keel_writer_try_inline), bw_done reports the frame once it is
     * durable, and it is answered right after; the data file's
     * write-back is handed to the writer thread once the answer has left
     * (flush_watcher_cb). */
    if (r->jobs == j && n->inline_commits && n->runq_head == NULL &&
        checks == 0 && /* a check reads the whole unit: not on the loop */
        n->wb_first == n->wb_next &&
        keel_batch_group_count(b) <= REPL_INLINE_GROUPS &&
        keel_batch_bytes(b) <= REPL_INLINE_BYTES) {
        pthread_mutex_unlock(&r->mu);
        if (keel_writer_try_inline(r->writer, b)) {
            repl_bjobs_reap(r);
            return 0;
        }
        /* Busy after all: the thread takes it. Nothing else submits to
         * this writer, so whatever it is busy with came before. */
        pthread_mutex_lock(&r->mu);
    }
    /* Under mu: the writer may report the batch the frame joins as soon
     * as it is handed over, and bw_done must find the frame in it. */
    how = bjob_submit(r, j, b, bb);
    pthread_mutex_unlock(&r->mu);
    if (how > 0)
        STAT_ADD(n, repl_merged_frames, 1);
    else if (how < 0)
        ev_async_send(n->loop, &r->wake);
    return 0;
}

int keel__repl_drop_copy(keel_node *n, const char *cap, uint32_t shard,
                         uint64_t epoch)
{
    keel_repl *r = n->repl;
    struct repl_ukey k = {cap, shard};
    repl_bunit *bu;
    keel_batch *b;
    bbatch *bb;
    bjob *j;
    int rc, how;

    if (r == NULL)
        return KEEL_EPROTO;
    if ((rc = bw_ready(n, r)) != 0)
        return rc;
    j = calloc(1, sizeof *j);
    bb = calloc(1, sizeof *bb);
    b = keel_batch_create();
    rc = j == NULL || bb == NULL || b == NULL ? KEEL_ENOMEM : 0;
    if (rc == 0 && (j->drop_cap = strdup(cap)) == NULL)
        rc = KEEL_ENOMEM;
    if (rc == 0)
        rc = keel_batch_begin_group(b, cap, (uint16_t)shard, epoch, NULL);
    if (rc == 0)
        rc = keel_batch_del_unit(b, 0);
    if (rc != 0) {
        keel_batch_destroy(b);
        free(bb);
        if (j != NULL)
            free(j->drop_cap);
        free(j);
        return rc;
    }
    j->drop_shard = shard;
    /* A job of no unit and no answer: bw_done reports it in turn. */
    bu = keel_hmap_get(&r->bunits, repl_unit_hash(cap, shard), &k, bunit_eq);
    if (bu != NULL) {
        bu->stream = 0;
        bu->accepted = bu->durable = bu->differed = 0;
    }
    bjob_queue(r, j, b, bb); /* returns with r->mu held */
    how = bjob_submit(r, j, b, bb);
    pthread_mutex_unlock(&r->mu);
    if (how < 0)
        ev_async_send(n->loop, &r->wake);
    return 0;
}

int keel__repl_unit_applying(keel_node *n, const char *cap, uint32_t shard)
{
    keel_repl *r = n->repl;
    int found = 0;

    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->mu);
    for (const bjob *j = r->jobs; j != NULL && !found; j = j->next) {
        if (j->nunits == 0) {
            found = j->drop_cap != NULL && j->drop_shard == shard &&
                    strcmp(j->drop_cap, cap) == 0;
            continue;
        }
        for (size_t k = 0; k < j->nunits && !found; k++)
            found = j->units[k].grouped && j->units[k].shard == shard &&
                    strcmp(j->units[k].cap, cap) == 0;
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

void keel__repl_writeback(keel_node *n)
{
    if (n->repl != NULL)
        (void)keel_writer_writeback(n->repl->writer);
}

