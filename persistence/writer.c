/* keel_writer: the thread that owns LMDB write transactions.
 *
 * Submitted batches wait in a FIFO linked through keel_batch.next, so a
 * submit never allocates. The writer commits them one at a time, in order,
 * and hands each back through done_cb on its own thread once it is durable
 * or has failed.
 *
 * Durability (store.h): a commit is durable once the store's log is
 * flushed. Committed batches wait here (pending, in order) while more are
 * queued; when the queue runs dry, when PENDING_MAX are waiting, or when
 * a batch has failed, the writer flushes once and reports them all. A
 * batch durable on commit (durability none) is reported at once. So
 * under load one flush serves every batch committed since the last one.
 *
 * Failures (store.h, "Failures and what depends on them"). Each failed
 * batch reported is numbered (failures); its failed groups' tags are kept
 * as refusals that apply to every batch submitted before the submitter
 * acknowledged that failure, i.e. with fewer acknowledgements (wgen) than
 * the failure's number. Acknowledgements come in the order the failures
 * were reported, one each, so the k-th failure is answered by the k-th
 * acknowledgement. A group refused that way fails too and is recorded in
 * turn, which covers a chain of dependent batches. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "persistence/batch_internal.h"
#include "persistence/store.h"

/* Committed batches that wait for one flush. */
#define PENDING_MAX 16

struct refusal {
    void *tag;
    uint64_t below; /* refuses groups of batches with wgen < below */
    int status;
};

struct keel_writer {
    keel_store *store;
    keel_writer_done_cb done_cb;
    void *data;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when a batch arrives or stop begins */
    /* Guarded by lock: the queue, the flag that refuses new batches, and
     * the count of acknowledged failures. */
    keel_batch *head;
    keel_batch *tail;
    int stopping;
    uint64_t acks;
    /* Set while a thread works on the fields below: the writer thread, or
     * a caller of keel_writer_try_inline. */
    int busy;

    /* Writer thread only: committed batches waiting for the flush, in
     * order, linked through next. */
    keel_batch *pending;
    keel_batch *pending_tail;
    size_t npending;
    uint64_t failures; /* failed batches reported */
    /* Guarded by lock: an inline commit's flush left the data file's
     * write-back owed, and keel_writer_writeback asked the thread for it
     * (wb_asked). wb_owed is also read without the lock (atomically),
     * so that the loop's call each round takes no lock when nothing is
     * owed. */
    int wb_owed;
    int wb_asked;
    struct refusal *refused;
    size_t nrefused, refused_cap;
    /* When a refusal could not be recorded (out of memory): every group
     * of batches with wgen < all_below is refused. */
    uint64_t all_below;
    int all_status;
#ifdef KEEL_FAILPOINTS
    int delay_ms; /* keel_writer_delay_commits */
#endif
};

static void refusal_add(keel_writer *w, void *tag, int status)
{
    if (w->nrefused == w->refused_cap) {
        size_t cap = w->refused_cap ? w->refused_cap * 2 : 64;
        struct refusal *r = realloc(w->refused, cap * sizeof *r);

        if (r == NULL) {
            /* Refusing too much is safe; too little is not. */
            w->all_below = w->failures;
            w->all_status = status;
            return;
        }
        w->refused = r;
        w->refused_cap = cap;
    }
    w->refused[w->nrefused].tag = tag;
    w->refused[w->nrefused].below = w->failures;
    w->refused[w->nrefused].status = status;
    w->nrefused++;
}

/* Marks the groups of b that depend on a failure b's submitter had not
 * acknowledged yet. */
static void refusals_apply(keel_writer *w, keel_batch *b)
{
    size_t i, j, keep = 0;

    /* Later batches have at least b's wgen: what does not apply to b
     * applies to none of them. */
    for (j = 0; j < w->nrefused; j++)
        if (w->refused[j].below > b->wgen)
            w->refused[keep++] = w->refused[j];
    w->nrefused = keep;
    for (i = 0; i < b->ngroups; i++) {
        struct batch_group *g = &b->groups[i];

        if (b->wgen < w->all_below) {
            g->pre_status = w->all_status;
            continue;
        }
        for (j = 0; g->tag != NULL && j < w->nrefused; j++) {
            if (w->refused[j].tag == g->tag) {
                g->pre_status = w->refused[j].status;
                break;
            }
        }
    }
}

/* Hands b back. A failed batch is counted and its failed groups are
 * remembered before b leaves this thread. */
static void report(keel_writer *w, keel_batch *b, int status)
{
    int failed = status != 0;
    size_t i;

    for (i = 0; !failed && i < b->ngroups; i++)
        failed = b->groups[i].status != 0;
    if (failed) {
        w->failures++;
        for (i = 0; i < b->ngroups; i++) {
            struct batch_group *g = &b->groups[i];
            int st = status != 0 ? status : g->status;

            if (st != 0 && g->tag != NULL)
                refusal_add(w, g->tag, st);
        }
    }
    w->done_cb(b, status, w->data);
}

/* Flushes the store if a pending batch needs it, then reports every
 * pending batch in order: a batch that wrote nothing or failed with its
 * own status, the others with the flush's. A failed flush leaves their
 * fate unknown: their transactions committed, and what reached the disk
 * before the failure may be found there after a restart. They are
 * reported KEEL_EINDOUBT, never as not written. */
static void settle(keel_writer *w, int defer_wb)
{
    keel_batch *b, *next;
    int sync_rc = 0, synced = 0;

    for (b = w->pending; b != NULL; b = next) {
        next = b->next;
        b->next = NULL;
        if (b->wrc == 0 && b->wtxn != 0 &&
            !keel_store_durable(w->store, b->wtxn)) {
            if (!synced) {
                sync_rc = keel_store_sync(w->store);
                synced = 1;
            }
            report(w, b, sync_rc != 0 ? KEEL_EINDOUBT : 0);
        } else {
            report(w, b, b->wrc);
        }
    }
    w->pending = w->pending_tail = NULL;
    w->npending = 0;
    if (synced && sync_rc == 0) {
        if (defer_wb) {
            pthread_mutex_lock(&w->lock);
            __atomic_store_n(&w->wb_owed, 1, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&w->lock);
        } else
            keel_store_writeback(w->store);
    }
}

static int batch_failed(const keel_batch *b)
{
    if (b->wrc != 0)
        return 1;
    for (size_t i = 0; i < b->ngroups; i++)
        if (b->groups[i].status != 0)
            return 1;
    return 0;
}

/* Commits b and puts it on the pending list. A failed batch is settled at
 * once: its failures must be recorded as refusals before the next batch
 * is committed. */
static void writer_commit(keel_writer *w, keel_batch *b, int defer_wb)
{
    refusals_apply(w, b);
    b->wtxn = 0;
    b->wrc = keel_store_commit_deferred(w->store, b, &b->wtxn);
    b->next = NULL;
    if (w->pending_tail != NULL)
        w->pending_tail->next = b;
    else
        w->pending = b;
    w->pending_tail = b;
    w->npending++;
    /* Durable already (durability none, nothing written, or a
     * checkpoint): so is everything before it, and nobody should wait. */
    if (batch_failed(b) || w->npending >= PENDING_MAX ||
        keel_store_durable(w->store, b->wtxn))
        settle(w, defer_wb);
}

#ifdef KEEL_FAILPOINTS
static void writer_delay(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}
#endif

static void *writer_main(void *arg)
{
    keel_writer *w = arg;
    keel_batch *b;
#ifdef KEEL_FAILPOINTS
    int delay_ms;
#endif

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->busy || (w->head == NULL && w->pending == NULL &&
                           !w->wb_asked && !w->stopping))
            pthread_cond_wait(&w->cond, &w->lock);
        if (w->head == NULL && w->pending == NULL && w->wb_asked &&
            !w->stopping) {
            /* The write-back an inline commit left: sent here, off the
             * thread that committed (keel_writer_writeback). It touches
             * none of the writer's fields, so the writer is not busy
             * meanwhile: the next small batch may still commit inline
             * (the store's commits and write-backs may overlap, as the
             * two writers of a node's store always could). */
            w->wb_asked = 0;
            __atomic_store_n(&w->wb_owed, 0, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&w->lock);
            keel_store_writeback(w->store);
            pthread_mutex_lock(&w->lock);
            continue;
        }
        w->busy = 1;
        if (w->head == NULL) {
            /* Stopping drains the queue first: what was submitted is
             * committed, and made durable. */
            if (w->pending == NULL)
                break;
            /* Nothing more to commit: flush and report. */
            pthread_mutex_unlock(&w->lock);
            settle(w, 0);
            pthread_mutex_lock(&w->lock);
            w->busy = 0;
            continue;
        }
        b = w->head;
        w->head = b->next;
        if (w->head == NULL)
            w->tail = NULL;
        b->next = NULL;
#ifdef KEEL_FAILPOINTS
        delay_ms = w->delay_ms;
#endif
        pthread_mutex_unlock(&w->lock);

#ifdef KEEL_FAILPOINTS
        if (delay_ms > 0)
            writer_delay(delay_ms);
#endif
        writer_commit(w, b, 0);

        pthread_mutex_lock(&w->lock);
        w->busy = 0;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int keel_writer_start(keel_store *s, keel_writer_done_cb done_cb, void *data,
                      keel_writer **out)
{
    sigset_t all, old;
    keel_writer *w;
    int err;

    if (s == NULL || done_cb == NULL || out == NULL)
        return KEEL_EINVAL;
    w = calloc(1, sizeof *w);
    if (w == NULL)
        return KEEL_ENOMEM;
    w->store = s;
    w->done_cb = done_cb;
    w->data = data;
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        goto err_free;
    if (pthread_cond_init(&w->cond, NULL) != 0)
        goto err_mutex;
    /* The writer takes no signals: they belong to the threads that handle
     * them (the loop thread, main). Blocked, SIGXFSZ also cannot kill the
     * process when a write meets the file size limit: the write fails with
     * EFBIG and the commit with KEEL_ENOSPC. The thread inherits the mask
     * it starts with. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        keel_error("store writer: cannot start thread: %s", strerror(err));
        goto err_cond;
    }
    *out = w;
    return 0;

err_cond:
    pthread_cond_destroy(&w->cond);
err_mutex:
    pthread_mutex_destroy(&w->lock);
err_free:
    free(w);
    return KEEL_ENOMEM;
}

static int writer_enqueue(keel_writer *w, keel_batch *b, int merge,
                          keel_batch **into)
{
    keel_batch *t;
    int rc;

    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return KEEL_ESTOPPING;
    }
    t = w->tail;
    if (merge && t != NULL && t->mergeable && t->wgen == w->acks) {
        /* The writer has not taken t yet: b's turns join it. */
        rc = keel_batch_append(t, b);
        pthread_mutex_unlock(&w->lock);
        if (rc == 0 && into != NULL)
            *into = t;
        return rc;
    }
    b->next = NULL;
    b->wgen = w->acks;
    b->mergeable = merge;
    if (t != NULL)
        t->next = b;
    else
        w->head = b;
    w->tail = b;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    if (into != NULL)
        *into = b;
    return 0;
}

int keel_writer_submit(keel_writer *w, keel_batch *b)
{
    if (w == NULL || b == NULL)
        return KEEL_EINVAL;
    return writer_enqueue(w, b, 0, NULL);
}

int keel_writer_submit_merge(keel_writer *w, keel_batch *b,
                             keel_batch **into)
{
    if (w == NULL || b == NULL || into == NULL)
        return KEEL_EINVAL;
    return writer_enqueue(w, b, 1, into);
}

int keel_writer_try_inline(keel_writer *w, keel_batch *b)
{
    pthread_mutex_lock(&w->lock);
#ifdef KEEL_FAILPOINTS
    if (w->delay_ms > 0) {
        /* every commit is the thread's, after its sleep */
        pthread_mutex_unlock(&w->lock);
        return 0;
    }
#endif
    if (w->stopping || w->busy || w->head != NULL || w->pending != NULL) {
        pthread_mutex_unlock(&w->lock);
        return 0;
    }
    w->busy = 1;
    b->next = NULL;
    b->wgen = w->acks;
    b->mergeable = 0;
    pthread_mutex_unlock(&w->lock);

    writer_commit(w, b, 1);
    if (w->pending != NULL)
        settle(w, 1);

    pthread_mutex_lock(&w->lock);
    w->busy = 0;
    if (w->head != NULL)
        pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 1;
}

int keel_writer_writeback(keel_writer *w)
{
    int asked = 0;

    if (w == NULL || !__atomic_load_n(&w->wb_owed, __ATOMIC_RELAXED))
        return 0;
    pthread_mutex_lock(&w->lock);
    if (w->wb_owed && !w->wb_asked) {
        w->wb_asked = asked = 1;
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return asked;
}

#ifdef KEEL_FAILPOINTS
void keel_writer_delay_commits(keel_writer *w, int ms)
{
    pthread_mutex_lock(&w->lock);
    w->delay_ms = ms > 0 ? ms : 0;
    pthread_mutex_unlock(&w->lock);
}
#endif

void keel_writer_ack_failure(keel_writer *w)
{
    pthread_mutex_lock(&w->lock);
    w->acks++;
    pthread_mutex_unlock(&w->lock);
}

/* Not from done_cb: it would wait for its own thread. */
void keel_writer_stop(keel_writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->refused);
    free(w);
}
