/* Internals shared by the node's files (loop thread unless noted):
 *   node.c         options, types, actors and their state, running a
 *                  turn, the run queue, loop wakeups, lifecycle, calls;
 *   turn.c         what a handler sees of its turn (keel_turn_*): the
 *                  actor's state and entries through the turn's staged
 *                  writes and the actor's overlay, the reply and error;
 *                  applying a turn's writes to its actor;
 *   node_keys.c    request keys: a keyed request's record and the answer
 *                  to its retry;
 *   node_commit.c  group commit: building a batch from the dirty actors,
 *                  settling what the writer hands back, and releasing or
 *                  failing the replies that waited for it.
 * Not part of any API: runtime/node.h is the rest of the runtime's view. */
#ifndef KEEL_RUNTIME_NODE_INT_H
#define KEEL_RUNTIME_NODE_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "persistence/store.h"
#include "runtime/cluster_rt.h"
#include "runtime/follow.h"
#include "runtime/node.h"
#include "runtime/outbox.h"
#include "runtime/reminders.h"

/* A block of memory handed out to a turn; freed when the turn ends. */
struct tmp_block {
    struct tmp_block *next;
    size_t used, cap;
    uint8_t data[];
};

/* A turn: one message (or hook) of one actor, on the loop thread. Its
 * writes wait in n->stage until keel__turn_apply makes them the actor's. */
struct keel_turn {
    keel_node *n;
    keel_actor *a;
    int state_set;
    size_t state_len;
    size_t reply_len;
    int no_writes; /* on_passivate: reading only */
    int err_set;
    int ver_staged; /* the state version entry is among its writes */
    struct keel_ob_turn ob; /* its outbox messages (outbox.h) */
    struct keel_rm_turn rm; /* its reminders (reminders.h) */
    struct keel_fl_turn fl; /* its event payload (follow.h) */
    struct tmp_block *tmp;
    char err[256]; /* last: run_turn clears everything before it */
};

/* Cluster mode: whether req was accepted to run here in a ZooKeeper
 * session that has ended since. Whatever its turn read or wrote belongs
 * to that session's ownership: the unit may have failed over or been
 * given up while this node was cut off, and served elsewhere. A new
 * session's lease says nothing about it, so such a reply never leaves as
 * a success. Standalone: never. */
static inline int req_stale(keel_node *n, const keel_req *req)
{
    return n->cluster != NULL && keel__cluster_req_stale(n, req);
}

static inline void queue_push(keel_req_queue *q, keel_req *req)
{
    req->next = NULL;
    if (q->tail != NULL)
        q->tail->next = req;
    else
        q->head = req;
    q->tail = req;
}

static inline uint8_t *actor_state(keel_actor *a)
{
    return a->state_cap ? a->st.heap : a->st.inl;
}

static inline void actor_state_free(keel_actor *a)
{
    if (a->state_cap)
        free(a->st.heap);
    a->st.heap = NULL;
    a->state_len = a->state_cap = 0;
}

/* Replaces the state blob. On KEEL_ENOMEM the old one is kept. */
static inline int actor_state_set(keel_actor *a, const void *data, size_t len)
{
    if (len > a->state_cap && len > sizeof a->st.inl) {
        uint8_t *p = malloc(len);
        if (p == NULL)
            return KEEL_ENOMEM;
        actor_state_free(a);
        a->st.heap = p;
        a->state_cap = (uint32_t)len;
    }
    if (len)
        memcpy(actor_state(a), data, len);
    a->state_len = (uint32_t)len;
    return 0;
}

static inline int encode_key(keel_actor *a, const void *entry, size_t elen,
                             uint8_t *buf)
{
    return keel_key_encode(buf, (uint16_t)a->shard, a->type->name,
                           strlen(a->type->name), a->id, a->idlen, entry,
                           elen);
}

/* --- node.c -------------------------------------------------------------*/

void keel__actor_deactivate(keel_node *n, keel_actor *a);
/* Puts the actor on the run queue (once) and starts the run. */
void keel__run_schedule(keel_node *n, keel_actor *a);
/* Takes the parked actors whose writes have all settled off the parked
 * list, and queues those with messages. */
void keel__run_unpark(keel_node *n);

/* --- turn.c -------------------------------------------------------------*/

/* Drops overlay entries the store now holds (seq <= durable). */
void keel__ovl_prune(keel_actor *a, uint64_t durable);
/* Frees an actor's overlay (NULL: nothing). */
void keel__ovl_free(keel_hmap *ovl);
/* Makes a successful turn's writes (staged state and entries) the
 * actor's current ones and puts the actor on the open batch. All or
 * nothing: KEEL_ENOMEM leaves the actor as it was. */
int keel__turn_apply(keel_node *n, keel_actor *a, keel_turn *t);
/* Frees what the turn handed out (turn_alloc). */
void keel__turn_free_tmp(keel_turn *t);
/* Ends a turn: keel__turn_free_tmp, and its staged writes dropped. */
void keel__turn_end(keel_turn *t);
/* Room for a reply of len bytes, which becomes the turn's reply (to be
 * filled in by the caller); NULL when out of memory. */
uint8_t *keel__turn_reply_room(keel_turn *t, size_t len);

/* --- node_keys.c --------------------------------------------------------*/

/* What the actor recorded of a request key: nothing, the reply, that it
 * ran (its reply too long to keep), or the error it was refused with. */
enum { DUP_NONE = 0, DUP_KEPT, DUP_NOT_KEPT, DUP_REFUSED };

/* Whether the actor recorded this request key (dedup.h): *dup says so,
 * with the recorded reply, or the refusal's code in *err and its text in
 * reply (valid until the turn ends). */
int keel__dedup_lookup(keel_turn *t, const keel_req *req, int *dup,
                       const uint8_t **reply, size_t *rlen, int *err);
/* Stages the record of this turn's key and outcome with the turn's
 * writes, committed, refused or lost together: err 0 and the reply, or
 * the error the handler refused the request with (one that
 * keel_err_is_answer) and its text. */
int keel__dedup_record(keel_turn *t, const keel_req *req, int err,
                       const void *reply, size_t rlen);


/* --- node_commit.c ------------------------------------------------------*/

/* The replies of a node that lost its lease, and of one whose session
 * ended, when the turn wrote nothing. */
extern const char keel__not_served_msg[];
extern const char keel__stale_read_msg[];

/* Settles the batches the writer has handed back, in order, and, with
 * submit, flushes the open turns. */
void keel__poll_writer(keel_node *n, int submit);
/* Serializes the dirty actors and hands them to the writer (or commits
 * them here, when small and the writer idle). */
void keel__flush_open(keel_node *n);
/* Reads the clock that release times are measured with (n->clock_ns). */
void keel__clock_refresh(keel_node *n);
/* Cluster mode: whether the lease lapsed, read with a fresh clock; if so
 * the run of turns stops at the next turn. Standalone: never. */
int keel__lease_lapsed(keel_node *n);
/* As keel__req_release, with the clock as last read: sends req's reply
 * (status, buf) to its origin and frees it. */
void keel__reply_release(keel_node *n, keel_req *req);
/* Sets req's reply to the error status with msg, and releases it. */
void keel__reply_fail(keel_node *n, keel_req *req, int status,
                      const char *msg);
/* The writer's report of a batch (keel_writer_start): writer thread, or
 * the loop thread for a commit made there. */
void keel__writer_done_cb(keel_batch *b, int status, void *data);

#endif
