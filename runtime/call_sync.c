/* Blocking calls from threads other than the loop's: keel_call_sync and
 * its keyed and timed forms. The caller posts its call to the loop and
 * waits on a condition variable for the reply; a timed call stops waiting
 * at its deadline, and the loop, which may answer later, frees what the
 * two shared. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/cluster_rt.h"
#include "runtime/node.h"

struct keel_sync_call {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    int done;
    /* A timed call whose caller stopped waiting: whoever of the caller and
     * the loop comes second frees it (the loop, when it answers). */
    int gone;
    int status;
    void *reply;
    size_t len;
    /* An untimed call's are the caller's own buffers: it blocks until the
     * reply, so they outlive the request. A timed call's are copies that
     * follow this struct. */
    char *type;
    void *id;
    size_t idlen;
    void *msg;
    size_t msglen;
    int keyed; /* key holds the request key */
    uint8_t key[KEEL_REQUEST_KEY_LEN];
    /* Monotonic ns: no turn of the call starts past it; 0: none. */
    uint64_t deadline_ns;
};

static void sync_free(struct keel_sync_call *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->reply);
    free(s);
}

void keel__sync_complete(struct keel_sync_call *s, int status,
                         const void *buf, size_t len)
{
    char *copy = malloc(len + 1);
    int gone;

    if (copy != NULL) {
        if (len > 0)
            memcpy(copy, buf, len);
        copy[len] = '\0';
    } else {
        status = KEEL_ENOMEM;
        len = 0;
    }
    pthread_mutex_lock(&s->mu);
    gone = s->gone;
    if (!gone) {
        s->reply = copy;
        s->len = len;
        s->status = status;
        s->done = 1;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (gone) {
        free(copy);
        sync_free(s); /* the caller returned at its deadline */
    }
}

static void sync_finish(struct keel_sync_call *s, int status, const char *msg)
{
    keel__sync_complete(s, status, msg, strlen(msg));
}

static void sync_post_fn(keel_node *n, void *data)
{
    struct keel_sync_call *s = data;
    struct keel_type_entry *te;
    keel_req *req;
    int rc;

    if (n->stopping) {
        char why[160];
        sync_finish(s, KEEL_ESTOPPING,
                    keel__cluster_rt_stop_text(n, why, sizeof why));
        return;
    }
    if (s->deadline_ns != 0 && keel__now_ns() >= s->deadline_ns) {
        sync_finish(s, KEEL_EDEADLINE,
                    "the call's deadline passed before the node took it; "
                    "it did not run");
        return;
    }
    te = keel__type_find(n, s->type, strlen(s->type));
    if (te == NULL) {
        char msg[KEEL_MAX_TYPE_LEN + 64];
        snprintf(msg, sizeof msg,
                 "no actor type '%s' is registered on this node", s->type);
        sync_finish(s, KEEL_ENOTYPE, msg);
        return;
    }
    req = keel__req_alloc(n, s->msglen);
    if (req == NULL) {
        sync_finish(s, KEEL_ENOMEM, keel_strerror(KEEL_ENOMEM));
        return;
    }
    keel__req_set(req, s->msg, s->msglen);
    req->origin = REQ_SYNC;
    req->u.sync = s;
    if (s->keyed) {
        req->keyed = 1;
        memcpy(req->rkey, s->key, KEEL_REQUEST_KEY_LEN);
    }
    if (s->deadline_ns != 0) {
        /* Its caller is answered at the deadline whatever happens here:
         * a turn that has not started by then never does. */
        req->deadline_ns = s->deadline_ns;
        req->wire_deadline = 1;
    }
    rc = keel__submit(n, te, s->id, s->idlen, req);
    if (rc != 0) {
        keel__req_free(n, req);
        sync_finish(s, rc, keel_strerror(rc));
    }
}

/* A call refused before it is queued: the caller gets a text as it does
 * for a refusal by the actor (or none if there is no memory for it). */
static int sync_refuse(int rc, void **reply, size_t *reply_len,
                       const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int sync_refuse(int rc, void **reply, size_t *reply_len,
                       const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (reply == NULL)
        return rc;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *reply = strdup(msg);
    if (*reply != NULL && reply_len != NULL)
        *reply_len = strlen(msg);
    return rc;
}

/* A new call: its own copies of type, id and msg when timed (its caller
 * may return, and free them, before the loop has read them). */
static struct keel_sync_call *sync_new(const char *type, const void *id,
                                       size_t idlen, const void *msg,
                                       size_t len, int timed)
{
    size_t tl = strlen(type) + 1;
    struct keel_sync_call *s =
        calloc(1, sizeof *s + (timed ? tl + idlen + len : 0));
    pthread_condattr_t ca;
    uint8_t *p;

    if (s == NULL)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->type = (char *)type;
    s->id = (void *)id;
    s->idlen = idlen;
    s->msg = (void *)msg;
    s->msglen = len;
    if (timed) {
        p = (uint8_t *)(s + 1);
        s->type = memcpy(p, type, tl);
        s->id = idlen > 0 ? memcpy(p + tl, id, idlen) : p + tl;
        s->msg = len > 0 ? memcpy(p + tl + idlen, msg, len) : p + tl + idlen;
    }
    return s;
}

static int sync_common(keel_node *n, const uint8_t *key, uint32_t timeout_ms,
                       const char *type, const void *id, size_t idlen,
                       const void *msg, size_t len, void **reply,
                       size_t *reply_len)
{
    struct keel_sync_call *s;
    struct timespec until;
    int rc;

    if (reply)
        *reply = NULL;
    if (reply_len)
        *reply_len = 0;
    if (n == NULL || type == NULL || (id == NULL && idlen > 0) ||
        (msg == NULL && len > 0))
        return sync_refuse(KEEL_EINVAL, reply, reply_len,
                           "keel_call_sync: %s is NULL",
                           n == NULL      ? "the node"
                           : type == NULL ? "the type"
                           : id == NULL   ? "the id (with a length)"
                                          : "the message (with a length)");
    if (id == NULL)
        id = ""; /* the empty id */
    if (idlen > KEEL_MAX_ID_LEN)
        return sync_refuse(KEEL_ELIMIT, reply, reply_len,
                           "an id of %zu bytes: ids are at most %d", idlen,
                           KEEL_MAX_ID_LEN);
    if (strlen(type) > KEEL_MAX_TYPE_LEN)
        return sync_refuse(KEEL_ELIMIT, reply, reply_len,
                           "a type name of %zu bytes: names are at most %d",
                           strlen(type), KEEL_MAX_TYPE_LEN);
    if (len > n->opts.max_frame)
        return sync_refuse(KEEL_ETOOBIG, reply, reply_len,
                           "a message of %zu bytes: the node's max_frame "
                           "is %u",
                           len, (unsigned)n->opts.max_frame);
    if (keel__on_loop_thread(n))
        return sync_refuse(KEEL_EINVAL, reply, reply_len,
                           "keel_call_sync on the node's loop thread would "
                           "wait for itself: use keel_call there");
    s = sync_new(type, id, idlen, msg, len, timeout_ms != 0);
    if (s == NULL)
        return sync_refuse(KEEL_ENOMEM, reply, reply_len, "%s",
                           keel_strerror(KEEL_ENOMEM));
    if (key != NULL) {
        s->keyed = 1;
        memcpy(s->key, key, KEEL_REQUEST_KEY_LEN);
    }
    if (timeout_ms != 0) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        s->deadline_ns = (uint64_t)until.tv_sec * 1000000000u +
                         (uint64_t)until.tv_nsec +
                         (uint64_t)timeout_ms * 1000000u;
        until.tv_sec = (time_t)(s->deadline_ns / 1000000000u);
        until.tv_nsec = (long)(s->deadline_ns % 1000000000u);
    }
    rc = keel_node_post(n, sync_post_fn, s);
    if (rc != 0) {
        sync_free(s);
        return sync_refuse(rc, reply, reply_len, "%s", keel_strerror(rc));
    }
    pthread_mutex_lock(&s->mu);
    while (!s->done) {
        if (timeout_ms == 0) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else if (pthread_cond_timedwait(&s->cv, &s->mu, &until) ==
                       ETIMEDOUT &&
                   !s->done) {
            s->gone = 1; /* the loop frees s when it answers */
            pthread_mutex_unlock(&s->mu);
            return sync_refuse(KEEL_ETIMEDOUT, reply, reply_len,
                               "no answer within %u ms: the call may have "
                               "run, and may still finish (its turn "
                               "started before the deadline); none starts "
                               "after it",
                               (unsigned)timeout_ms);
        }
    }
    pthread_mutex_unlock(&s->mu);
    rc = s->status;
    if (reply) {
        *reply = s->reply;
        s->reply = NULL;
    }
    if (reply_len)
        *reply_len = s->len;
    sync_free(s);
    return rc;
}

int keel_call_sync(keel_node *n, const char *type, const void *id,
                   size_t idlen, const void *msg, size_t len, void **reply,
                   size_t *reply_len)
{
    return sync_common(n, NULL, 0, type, id, idlen, msg, len, reply,
                       reply_len);
}

int keel_call_sync_keyed(keel_node *n, const uint8_t *key, const char *type,
                         const void *id, size_t idlen, const void *msg,
                         size_t len, void **reply, size_t *reply_len)
{
    if (key == NULL)
        return sync_refuse(KEEL_EINVAL, reply, reply_len,
                           "keel_call_sync_keyed: the key is NULL");
    return sync_common(n, key, 0, type, id, idlen, msg, len, reply,
                       reply_len);
}

int keel_call_sync_timed(keel_node *n, const uint8_t *key,
                         uint32_t timeout_ms, const char *type,
                         const void *id, size_t idlen, const void *msg,
                         size_t len, void **reply, size_t *reply_len)
{
    return sync_common(n, key, timeout_ms, type, id, idlen, msg, len, reply,
                       reply_len);
}
