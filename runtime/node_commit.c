/* Group commit and reply release: the node's half of a message's path
 * after its turn (node.c has the first half).
 *
 * After each run of turns the dirty actors are serialized (each one's
 * latest state and entries, coalescing all its turns since the last
 * flush) and handed to the writer thread, joining the batch that waits
 * there if the writer has not taken it yet, or committed right here when
 * the batch is small and the writer idle. Once a batch is durable the
 * writer wakes the loop, which settles it: the replies that waited for it
 * are released, or failed with the actors whose writes were lost.
 *
 * A reply waits for the newest batch holding a write of its actor, even
 * when its own turn wrote nothing: what it read may not be durable yet,
 * and the outside world must never see a state that a crash could undo.
 * Every reply looks at the cluster lease again before it leaves. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/failpoint.h"
#include "common/log.h"
#include "runtime/cluster_rt.h"
#include "runtime/follow.h"
#include "runtime/node.h"
#include "runtime/node_int.h"
#include "runtime/outbox.h"
#include "runtime/reminders.h"
#include "runtime/repl.h"

/* A batch at most this large that finds the writer idle is committed on
 * the loop thread (see keel__flush_open): groups and bytes, with
 * durability fsync (the loop then waits for one flush) and none. */
#define INLINE_GROUPS_FSYNC 16
#define INLINE_BYTES_FSYNC (64u << 10)
#define INLINE_GROUPS_NONE 64
#define INLINE_BYTES_NONE (256u << 10)

const char keel__not_served_msg[] =
    "not served: this node lost its cluster lease before the reply left; "
    "the request did not change anything";
const char keel__stale_read_msg[] =
    "not served: this node's cluster session ended before the reply left; "
    "the request did not change anything";
static const char stale_doubt_msg[] =
    "outcome unknown: this node's cluster session ended before the reply "
    "left; the write may have taken effect";

/* --------------------------------------------------------- group commit */

static void batch_settled(keel_node *n, struct keel_wbatch *wb, int status);

/* Settles the batches the writer has handed back, in order, and, with
 * submit, flushes the open turns. Between turns it runs with submit 0:
 * settling early releases replies sooner, so closed-loop callers refill
 * their windows, while the turns of the run keep collecting. */
void keel__poll_writer(keel_node *n, int submit)
{
    for (;;) {
        struct keel_wbatch wb;
        int status;

        pthread_mutex_lock(&n->done_mu);
        if (n->wb_first == n->wb_ndone) {
            pthread_mutex_unlock(&n->done_mu);
            break;
        }
        status = n->wb_status[n->wb_first % KEEL_WBATCH_MAX];
        pthread_mutex_unlock(&n->done_mu);
        keel__clock_refresh(n);
        wb = n->wb[n->wb_first % KEEL_WBATCH_MAX];
        n->wb_first++;
        batch_settled(n, &wb, status);
    }
    if (submit)
        keel__flush_open(n);
}

static void fail_batch_building(keel_node *n, keel_batch *b, int rc);

#ifdef KEEL_FAILPOINTS
/* REPL_COMMIT_STALL_MS (common/failpoint.h): the loop thread held. */
static void fp_stall_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0)
        ;
}
#endif

static keel_batch *batch_take(keel_node *n)
{
    if (n->nbpool > 0)
        return n->bpool[--n->nbpool];
    return keel_batch_create();
}

static void batch_give(keel_node *n, keel_batch *b)
{
    if (n->nbpool < KEEL_WBATCH_MAX) {
        keel_batch_reset(b);
        n->bpool[n->nbpool++] = b;
    } else {
        keel_batch_destroy(b);
    }
}

/* Serializes the dirty actors and hands them to the writer. Each dirty
 * actor contributes its current state and the entries written since the
 * last flush: however many turns it ran, it costs one record per key.
 * While the writer commits one batch, the next one waits in its queue and
 * every flush appends to it, so a commit takes all that was flushed while
 * the one before it ran. */
void keel__flush_open(keel_node *n)
{
    struct keel_wbatch *wb;
    keel_batch *b, *into;
    keel_actor *a;
    uint8_t kbuf[KEEL_KEY_MAX];
    int rc = 0, klen, inlined = 0;
    int fsync = n->opts.durability == KEEL_DURABILITY_FSYNC;
    uint64_t repl_no = 0;

    if (n->dirty_head == NULL ||
        n->wb_next - n->wb_first >= KEEL_WBATCH_MAX)
        return; /* nothing to write, or a full ring until the next settle */
    if (n->spare == NULL && (n->spare = batch_take(n)) == NULL) {
        fail_batch_building(n, NULL, KEEL_ENOMEM);
        return;
    }
    b = n->spare;
    keel_batch_reset(b);
    for (a = n->dirty_head; a != NULL && rc == 0; a = a->dirty_next) {
        uint64_t epoch;
        if (n->cluster != NULL) {
            /* The epoch at which this node holds the unit, not the map's:
             * a unit lost since its turns ran must not write with the new
             * owner's epoch. */
            epoch = keel__cluster_write_epoch(n, a->type->capability,
                                              a->shard);
        } else {
            keel_placement pl;
            keel_coord_placement(n->coord, a->type->capability, a->shard,
                                 &pl);
            epoch = pl.epoch;
        }
        rc = keel_batch_begin_group(b, a->type->capability,
                                    (uint16_t)a->shard, epoch, a);
        if (rc == 0 && (a->flags & ACTOR_STATE_DIRTY)) {
            klen = encode_key(a, NULL, 0, kbuf);
            rc = klen < 0 ? klen
                          : keel_batch_put(b, kbuf, (size_t)klen, a->version,
                                           actor_state(a), a->state_len);
        }
        if (rc == 0 && a->ovl != NULL) {
            size_t pos = 0;
            void *item;
            while (rc == 0 && keel_hmap_next(a->ovl, &pos, &item)) {
                keel_ovl_entry *e = item;
                if (e->seq != n->open_seq)
                    continue; /* already in an earlier batch */
                klen = encode_key(a, e->data, e->klen, kbuf);
                if (klen < 0)
                    rc = klen;
                else if (e->deleted)
                    rc = keel_batch_del(b, kbuf, (size_t)klen);
                else
                    rc = keel_batch_put(b, kbuf, (size_t)klen, a->version,
                                        e->data + e->klen, e->vlen);
            }
        }
        if (rc == 0 && a->ob_index != KEEL_OB_INDEX_NONE) {
            rc = keel__outbox_flush(n, b, a);
            a->ob_index = KEEL_OB_INDEX_NONE;
        }
        if (rc == 0 && a->rm_idx != NULL)
            rc = keel__reminders_flush(n, b, a);
    }
    /* A small batch that finds nothing of ours with the writer, flushed
     * when no other turn is waiting to run, is committed right here: the
     * two thread hand-offs it saves cost more than its commit, and the
     * loop has nothing else to do but wait for it. Big batches, and any
     * batch flushed while turns are queued, go to the writer thread, so
     * that turns go on beside their commit. */
    /* Writes of units with backups leave now, so that the backups'
     * flushes run beside this one (repl.h). */
    if (rc == 0 && n->repl != NULL)
        repl_no = keel__repl_flushed(n, b);
    if (rc == 0 && n->inline_commits && n->runq_head == NULL &&
        n->wb_first == n->wb_next &&
        keel_batch_group_count(b) <= (fsync ? INLINE_GROUPS_FSYNC
                                            : INLINE_GROUPS_NONE) &&
        keel_batch_bytes(b) <= (fsync ? INLINE_BYTES_FSYNC
                                      : INLINE_BYTES_NONE)) {
        n->inlining = 1;
#ifdef KEEL_FAILPOINTS
        if (repl_no != 0 && keel_failpoint(KEEL_FP_REPL_COMMIT_STALL_MS) > 0)
            fp_stall_ms(keel_failpoint(KEEL_FP_REPL_COMMIT_STALL_MS));
#endif
        inlined = keel_writer_try_inline(n->writer, b);
        n->inlining = 0;
    }
    if (inlined) {
        into = b;
    } else if (rc == 0) {
        rc = keel_writer_submit_merge(n->writer, b, &into);
        if (rc != 0 && rc != KEEL_ENOMEM)
            keel_error("cannot hand a batch to the writer: %s",
                       keel_strerror(rc));
    }
    if (rc != 0) {
        if (repl_no != 0)
            keel__repl_flush_lost(n, b, repl_no);
        fail_batch_building(n, b, rc);
        return;
    }
    for (a = n->dirty_head; a != NULL;) {
        keel_actor *next = a->dirty_next;
        a->dirty_next = NULL;
        a->flags &= (uint8_t)~(ACTOR_IN_DIRTY | ACTOR_STATE_DIRTY);
        a = next;
    }
    n->dirty_head = NULL;
    n->ndirty = 0;
    if (into == b) {
        /* A batch of its own: the writer reports it after the ones
         * before it. */
        wb = &n->wb[n->wb_next % KEEL_WBATCH_MAX];
        n->wb_next++;
        wb->b = b;
        wb->turns = 0;
        wb->wait.head = wb->wait.tail = NULL;
        wb->repl_lo = wb->repl_hi = 0;
        n->spare = NULL;
    } else {
        /* Appended to the batch still waiting: the newest one. */
        wb = &n->wb[(n->wb_next - 1) % KEEL_WBATCH_MAX];
        keel_batch_reset(b);
    }
    wb->hi_seq = n->open_seq;
    wb->turns += n->open_turns;
    if (repl_no != 0) {
        if (wb->repl_lo == 0)
            wb->repl_lo = repl_no;
        wb->repl_hi = repl_no;
    }
    if (n->wait_open.head != NULL) {
        if (wb->wait.tail != NULL)
            wb->wait.tail->next = n->wait_open.head;
        else
            wb->wait.head = n->wait_open.head;
        wb->wait.tail = n->wait_open.tail;
        n->wait_open.head = n->wait_open.tail = NULL;
    }
    n->open_turns = 0;
    n->open_seq++;
    if (inlined)
        keel__poll_writer(n, 0); /* settled already: release its replies */
}

uint64_t keel__now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t keel__wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Release times for the latency statistics come from n->clock_ns, read
 * once per run of turns and once per settled batch rather than once per
 * reply. A reply released in the run that also submitted its message may
 * then look older than its submission: it counts as 0. */
void keel__clock_refresh(keel_node *n)
{
    n->clock_ns = keel__now_ns();
}

static void record_latency(keel_node *n, uint64_t t0)
{
    static const uint32_t bounds[] = KEEL_LATENCY_BOUNDS_US;
    uint64_t us = n->clock_ns > t0 ? (n->clock_ns - t0) / 1000 : 0;
    unsigned i;

    for (i = 0; i < KEEL_LATENCY_BUCKETS - 1 && us > bounds[i]; i++)
        ;
    STAT_ADD(n, latency_buckets[i], 1);
    STAT_ADD(n, latency_sum_us, us);
    STAT_ADD(n, calls_completed, 1);
}

/* Cluster mode: whether the lease lapsed, read with a fresh clock. A reply
 * is the node's statement about a unit it owns; the lease was checked
 * when the turn started, but a pause between then and the reply (up to a
 * whole run of turns, or a commit in flight) may have let another node
 * take the unit over. So replies that leave after a commit, or after a
 * turn, look again. Standalone: never. */
int keel__lease_lapsed(keel_node *n)
{
    if (n->cluster == NULL || keel__cluster_rt_serving(n))
        return 0;
    n->lease_lost = 1; /* the run of turns stops at the next turn */
    return 1;
}


void keel__reply_release(keel_node *n, keel_req *req)
{
    /* A refusal whose record committed took effect as a success does. */
    int took = req->status == 0 || req->refusal_applied;

    record_latency(n, req->t_submit_ns);
    if (req->fev != NULL)
        keel__follow_release(n, req); /* its change, if a success */
    if (req->ob_hi != 0 && took)
        keel__outbox_released(n, req); /* before a callback can free it */
    else if (req->ob_hi != 0)
        keel__outbox_doubt(n, req);
    if (req->rm_due != 0)
        keel__reminders_released(n, req);
    switch (req->origin) {
    case REQ_LOCAL:
        if (req->u.local.cb != NULL)
            req->u.local.cb(req->status, req->buf, req->len,
                            req->u.local.data);
        keel__req_free(n, req);
        break;
    case REQ_NET:
        keel__net_complete(n, req); /* frees req */
        break;
    case REQ_SYNC:
        keel__sync_complete(req->u.sync, req->status, req->buf, req->len);
        keel__req_free(n, req);
        break;
    }
}

void keel__reply_fail(keel_node *n, keel_req *req, int status, const char *msg)
{
    req->status = status;
    req->refusal_applied = 0;
    if (keel__req_set(req, msg, strlen(msg)) != 0)
        req->len = 0;
    keel__reply_release(n, req);
}

/* A failure of a turn whose writes may have left for backups before
 * their commit here failed: it leaves once no backup holding them can be
 * promoted (replication), else at once. */
static void fail_held(keel_node *n, keel_req *req, int status,
                      const char *msg)
{
    req->status = status;
    req->refusal_applied = 0;
    if (keel__req_set(req, msg, strlen(msg)) != 0)
        req->len = 0;
    if (n->repl != NULL && keel__repl_hold_failed(n, req))
        return;
    keel__reply_release(n, req);
}

void keel__req_release(keel_node *n, keel_req *req)
{
    keel__clock_refresh(n);
    keel__reply_release(n, req);
}

void keel__req_settle(keel_node *n, keel_req *req)
{
    keel__clock_refresh(n);
    if (req_stale(n, req))
        keel__req_doubt(n, req, stale_doubt_msg);
    else if (keel__lease_lapsed(n))
        keel__req_doubt(n, req, "outcome unknown: this node lost its "
                                "cluster lease before the reply left; the "
                                "write may have taken effect");
    else
        keel__reply_release(n, req);
}

void keel__req_doubt(keel_node *n, keel_req *req, const char *msg)
{
    keel__clock_refresh(n);
    if (req->wrote) {
        STAT_ADD(n, replies_in_doubt, 1);
        keel__reply_fail(n, req, KEEL_EINDOUBT, msg);
    } else {
        keel__reply_fail(n, req, KEEL_EUNAVAIL, keel__not_served_msg);
    }
}


/* Fails the replies in q of actors marked ACTOR_FAILED; keeps the others
 * in q, in order. */
static void fail_marked(keel_node *n, keel_req_queue *q)
{
    keel_req *req, *next, *head = q->head;
    char msg[160];

    q->head = q->tail = NULL;
    for (req = head; req != NULL; req = next) {
        keel_actor *a = req->actor;

        next = req->next;
        if (a->flags & ACTOR_FAILED) {
            snprintf(msg, sizeof msg, "write not committed: %s",
                     keel_strerror(a->fail_status));
            fail_held(n, req, a->fail_status, msg);
        } else {
            queue_push(q, req);
        }
    }
}

/* An actor whose writes were lost: its in-memory state is ahead of the
 * store, so it is deactivated and its open writes dropped. Batches
 * already with the writer may still hold writes built on the lost ones
 * (the writer refuses them, see keel_writer); until they have settled the
 * actor stays pinned and parked, and only then reloads from the store. */
static void actor_reset_failed(keel_node *n, keel_actor *a)
{
    uint64_t pin = a->last_write_seq;

    if (pin > n->open_seq - 1)
        pin = n->open_seq - 1; /* its open writes are dropped here */
    a->flags &= (uint8_t)~ACTOR_FAILED;
    keel__actor_deactivate(n, a);
    a->last_write_seq = pin;
    if (a->mb_head != NULL)
        keel__run_schedule(n, a);
}

/* Between two lines on failed commits (commit_failed_warn). */
#define COMMIT_WARN_S 1.0

/* The store logs why (at its own pace); this says how many actors it
 * cost, at most once a second while the failures have one cause. Loop
 * thread. */
static void commit_failed_warn(keel_node *n, size_t ng, int status)
{
    ev_tstamp now = ev_now(n->loop);

    if (n->commit_warned_at != 0 && status == n->commit_warned_rc &&
        now - n->commit_warned_at < COMMIT_WARN_S) {
        n->commit_unlogged++;
        return;
    }
    if (n->commit_unlogged > 0)
        keel_warn("commit of %zu actors failed: %s (and %llu more failed "
                  "commits since the last such line)",
                  ng, keel_strerror(status),
                  (unsigned long long)n->commit_unlogged);
    else
        keel_warn("commit of %zu actors failed: %s", ng,
                  keel_strerror(status));
    n->commit_unlogged = 0;
    n->commit_warned_at = now;
    n->commit_warned_rc = status;
}

/* Settles a batch the writer handed back: on success its replies go out;
 * actors whose writes were refused (stale epoch, or built on a failed
 * batch) or lost (the commit failed) are reset to what the store holds,
 * and every reply that saw their uncommitted state fails, in this batch,
 * in later ones and among the open turns. */
static void batch_settled(keel_node *n, struct keel_wbatch *wb, int status)
{
    keel_batch *b = wb->b;
    size_t i, ng = keel_batch_group_count(b);
    keel_req_queue q;
    keel_req *req, *next;
    uint64_t j;
    int any_failed = 0, lapsed, held;
    /* The store broke (cluster mode) with this batch's writes sent to
     * backups ahead of its commit here: the node is stopping so that a
     * backup takes each unit (keel__cluster_rt_store_check), and a backup
     * may hold them. Their outcome is unknown, not a failure. */
    int left_doubt = status != 0 && n->cluster != NULL && wb->repl_hi != 0 &&
                     keel_store_broken(n->store);

    n->durable_seq = wb->hi_seq;
    if (status == 0) {
        STAT_ADD(n, commits, 1);
        STAT_ADD(n, batch_turns_total, wb->turns);
        STAT_ADD(n, batch_actors_total, ng);
        if (wb->turns > n->stats.batch_turns_max)
            STAT_SET(n, batch_turns_max, wb->turns);
    } else {
        STAT_ADD(n, commit_failures, 1);
        commit_failed_warn(n, ng, status);
    }
    for (i = 0; i < ng; i++) {
        int gst;
        keel_actor *a = keel_batch_group(b, i, &gst);
        int st = status != 0 ? status : gst;

        if (st != 0 && left_doubt)
            st = KEEL_EINDOUBT;
        if (st != 0) {
            if (!(a->flags & ACTOR_FAILED)) {
                a->flags |= ACTOR_FAILED;
                a->fail_status = (int8_t)st;
            }
            any_failed = 1;
            if (gst == KEEL_EFENCED) {
                STAT_ADD(n, fence_refusals, 1);
                if (a->type->fence_ok != NULL)
                    a->type->fence_ok[a->shard] = 0; /* look again */
            }
        } else if (!(a->flags & ACTOR_FAILED)) {
            keel__ovl_prune(a, n->durable_seq);
        }
    }
    /* Writes of units with backups go to them now; the replies wait for
     * their acks (repl.c). Without backups: one check, as before. */
    held = n->repl != NULL &&
           keel__repl_settled(n, b, status, wb->repl_lo, wb->repl_hi);
    q = wb->wait;
    lapsed = q.head != NULL && keel__lease_lapsed(n);
    for (req = q.head; req != NULL; req = next) {
        next = req->next;
        if (req->actor->flags & ACTOR_FAILED) {
            char msg[160];
            if (req->actor->fail_status == KEEL_EINDOUBT) {
                /* Committed, but the flush that would make it durable
                 * failed (the store is now closed to writes): it may be
                 * on the disk or not. */
                snprintf(msg, sizeof msg,
                         "outcome unknown: flushing the store failed after "
                         "this write was committed; it may have taken "
                         "effect");
                if (req->wrote)
                    STAT_ADD(n, replies_in_doubt, 1);
            } else {
                snprintf(msg, sizeof msg, "write not committed: %s",
                         keel_strerror(req->actor->fail_status));
            }
            fail_held(n, req, req->actor->fail_status, msg);
        } else if (req_stale(n, req)) {
            if (req->wrote)
                STAT_ADD(n, replies_in_doubt, 1);
            keel__reply_fail(n, req,
                             req->wrote ? KEEL_EINDOUBT : KEEL_EUNAVAIL,
                             req->wrote ? stale_doubt_msg
                                        : keel__stale_read_msg);
        } else if (lapsed && req->wrote) {
            /* Durable here, but another node may own the unit by now and
             * never see this write: neither success nor failure is
             * true. */
            STAT_ADD(n, replies_in_doubt, 1);
            keel__reply_fail(n, req, KEEL_EINDOUBT,
                             "outcome unknown: this node lost its cluster "
                             "lease before the reply left; the write may "
                             "have taken effect");
        } else if (lapsed) {
            /* A read (or a failed turn) queued behind a write. */
            keel__reply_fail(n, req, KEEL_EUNAVAIL, keel__not_served_msg);
        } else if (!held ||
                   !keel__repl_hold(n, req, wb->repl_lo, wb->repl_hi)) {
            keel__reply_release(n, req);
        }
    }
    if (status != 0)
        keel__cluster_rt_store_check(n);
    if (any_failed) {
        /* Replies of later turns built on the lost state fail too. */
        for (j = n->wb_first; j < n->wb_next; j++)
            fail_marked(n, &n->wb[j % KEEL_WBATCH_MAX].wait);
        fail_marked(n, &n->wait_open);
        for (i = 0; i < ng; i++) {
            keel_actor *a = keel_batch_group(b, i, NULL);
            if (a->flags & ACTOR_FAILED)
                actor_reset_failed(n, a);
        }
        /* What is flushed from now on was built knowing of it. */
        keel_writer_ack_failure(n->writer);
    }
    batch_give(n, b);
    if (n->parked != NULL)
        keel__run_unpark(n);
}

/* Building or handing over the open turns' writes failed (out of memory,
 * or the writer is stopping): nothing of them reached the writer. The
 * dirty actors' open writes are lost: reset those actors and fail every
 * reply that saw them. Their earlier batches, if any, go on. */
static void fail_batch_building(keel_node *n, keel_batch *b, int rc)
{
    keel_actor *a;

    if (b != NULL)
        keel_batch_reset(b);
    STAT_ADD(n, commit_failures, 1);
    keel_warn("could not build a commit batch: %s", keel_strerror(rc));
    for (a = n->dirty_head; a != NULL; a = a->dirty_next) {
        a->flags |= ACTOR_FAILED;
        a->fail_status = (int8_t)rc;
    }
    fail_marked(n, &n->wait_open);
    while ((a = n->dirty_head) != NULL)
        actor_reset_failed(n, a); /* unlinks it from the dirty list */
    n->ndirty = 0;
    n->open_turns = 0;
}

void keel__writer_done_cb(keel_batch *b, int status, void *data)
{
    keel_node *n = data;

    /* Writer thread: hand the batch back; the loop settles it. Reports
     * come in queue order, so the count says which batch this is. */
    (void)b;
    pthread_mutex_lock(&n->done_mu);
    n->wb_status[n->wb_ndone % KEEL_WBATCH_MAX] = status;
    n->wb_ndone++;
    pthread_mutex_unlock(&n->done_mu);
    /* A commit made on the loop thread (keel__flush_open) is settled by its
     * caller right after: a wakeup would only cost the loop an iteration
     * in which no turn runs. */
    if (!(keel__on_loop_thread(n) && n->inlining))
        ev_async_send(n->loop, &n->async);
}
