/* keel_writer: the thread that owns LMDB write transactions.
 *
 * Submitted batches wait in a FIFO linked through keel_batch.next, so a
 * submit never allocates. The writer commits them one at a time, in order,
 * and hands each back through done_cb on its own thread. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "persistence/batch_internal.h"
#include "persistence/store.h"

struct keel_writer {
    keel_store *store;
    keel_writer_done_cb done_cb;
    void *data;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when a batch arrives or stop begins */
    /* Guarded by lock: the queue, and the flag that refuses new batches. */
    keel_batch *head;
    keel_batch *tail;
    int stopping;
};

static void *writer_main(void *arg)
{
    keel_writer *w = arg;
    keel_batch *b;
    int rc;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        /* Stopping drains the queue first: what was submitted is
         * committed. */
        if (w->head == NULL)
            break;
        b = w->head;
        w->head = b->next;
        if (w->head == NULL)
            w->tail = NULL;
        b->next = NULL;
        pthread_mutex_unlock(&w->lock);

        rc = keel_store_commit(w->store, b);
        w->done_cb(b, rc, w->data);

        pthread_mutex_lock(&w->lock);
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

int keel_writer_submit(keel_writer *w, keel_batch *b)
{
    if (w == NULL || b == NULL)
        return KEEL_EINVAL;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return KEEL_ESTOPPING;
    }
    b->next = NULL;
    if (w->tail != NULL)
        w->tail->next = b;
    else
        w->head = b;
    w->tail = b;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
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
    free(w);
}
