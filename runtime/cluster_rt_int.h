/* The cluster runtime's internals, shared by its files (loop thread only,
 * except where noted):
 *   cluster_rt.c   the coordinator's hooks, the lease check, graceful
 *                  leave, the tick, lifecycle;
 *   route.c        routing every message to its unit's owner, holding
 *                  messages while their unit moves, the sweep that takes
 *                  them back from actors whose unit left;
 *   unit_stream.c  streaming a unit out to its new owner and receiving
 *                  one (XFER frames);
 *   unit_jobs.c    the module's own store writes (fences, received units,
 *                  purges) through a writer thread of its own;
 *   unit_promote.c handing a unit to an in-sync backup without a stream
 *                  (both ends).
 * Not part of any API: runtime/cluster_rt.h is the runtime's view. */
#ifndef KEEL_RUNTIME_CLUSTER_RT_INT_H
#define KEEL_RUNTIME_CLUSTER_RT_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/cluster.h"
#include "coordinator/shardmap.h"
#include "persistence/store.h"
#include "runtime/cluster_rt.h"
#include "runtime/hmap.h"
#include "runtime/peer.h"
#include "runtime/proto.h"

#define HOLD_MS_DEFAULT 5000
#define MAX_HELD 65536
#define MAX_HOPS 3
#define TICK_S 0.02
#define XFER_CHUNK (256u << 10)
#define RETRY_S 0.5

/* A message waiting for its unit, or forwarded and waiting for the
 * owner's answer. Either way it sits in its unit's queue (held) or list
 * (in flight), both ordered by seq. */
typedef struct rt_msg {
    struct rt_msg *next, *prev;
    struct rt_unit *u;
    struct keel_type_entry *te;
    keel_req *req;
    uint64_t seq;       /* admission order on this node */
    uint64_t dest;      /* in flight: hash of the owner's address */
    uint64_t hop_map;   /* hops used up: the map epoch it waits past... */
    uint64_t hop_retry; /* ...or this instant (monotonic ns) */
    uint8_t entry;      /* the call entered the cluster here (hops 0) */
    uint8_t flying;
    uint8_t hop_wait;
    uint8_t idlen;
    uint8_t id[KEEL_MAX_ID_LEN];
} rt_msg;

/* A placement unit with something of it here: held messages, forwarded
 * ones not answered yet, or resident actors. Found through rt->units by
 * (capability, shard); freed once it has none of the three. */
typedef struct rt_unit {
    uint64_t hash;
    const char *cap;      /* a type entry's copy: lives as long as the node */
    uint32_t shard;
    rt_msg *head, *tail;  /* held, by seq */
    size_t nheld;
    size_t nheld_entry;   /* of which entered here */
    rt_msg *fly_head, *fly_tail; /* forwarded, unanswered, by seq */
    size_t nfly;
    size_t nfly_entry;    /* of which entered here */
    uint64_t fly_dest;    /* where those went, while fly_mixed is 0 */
    int fly_mixed;        /* they went to more than one node */
    uint64_t min_deadline; /* no held message expires before (ns) */
    uint32_t resident;    /* actors of the unit resident here */
    struct rt_unit *wnext, *wprev; /* on rt->waiting while nheld > 0 */
    int waiting;
} rt_unit;

enum { JOB_FENCE = 1, JOB_XFER_IN, JOB_PURGE, JOB_WIPE, JOB_KEEP };

typedef struct rt_job {
    struct rt_job *next;
    int kind;
    char cap[256];
    uint32_t shard;
    uint64_t epoch;
    keel_req *req;       /* JOB_XFER_IN, JOB_KEEP: the frame's reply */
    uint8_t *recs;       /* JOB_XFER_IN: records, XFER encoding */
    size_t recs_len;
    uint64_t gen;        /* JOB_WIPE: the purge it belongs to */
    int wipe;            /* JOB_FENCE: delete the unit's older records */
    char to[KEEL_NAME_MAX + 1]; /* JOB_PURGE: where the unit went */
    int keep_records;           /* JOB_PURGE: the copy stays */
    ev_tstamp not_before;       /* in rt->later: when to queue it again */
} rt_job;

/* A release: REL_DRAIN until the unit's actors are gone (or between
 * attempts), REL_SENDING while a stream is out, REL_PURGING once its
 * recipient stored it. Until then the destination may change or the
 * release be called off; from then on it finishes to `sent_to`. */
enum { REL_DRAIN = 1, REL_SENDING, REL_PURGING };

typedef struct rt_rel {
    struct rt_rel *next;
    char cap[256];
    uint32_t shard;
    uint64_t epoch;
    char to[KEEL_NAME_MAX + 1];      /* where the map wants it now */
    char sent_to[KEEL_NAME_MAX + 1]; /* the stream out, or the recipient */
    int stage;
    int failed;       /* REL_SENDING: a frame of the stream was refused;
                       * REL_PURGING: the purge is with the writer */
    int call_off;     /* the map called the move off (to is void) */
    uint32_t gen;     /* the stream out: answers of older ones are stale */
    int refused;      /* the last stream's refusal, for the retry pace */
    int keep;         /* the stream out is a keep frame (unit_promote.c):
                       * the recipient, an in-sync backup, keeps its copy */
    int full;         /* the recipient refused a keep frame other than for
                       * a map it had not read yet: stream the records */
    ev_tstamp sent_at;
    ev_tstamp not_before;
} rt_rel;

/* A unit this node stored from a stream, until the applied map moves it
 * past that epoch: the sender may not have heard the answer and send it
 * again after the map stopped showing the move. */
typedef struct rt_rcvd {
    struct rt_rcvd *next;
    char cap[256];
    uint32_t shard;
    uint64_t epoch;
    char from[KEEL_NAME_MAX + 1]; /* its sender; "" when not known */
} rt_rcvd;

/* An incoming unit stream being collected, from one connection: freed
 * when that connection closes (keel__cluster_conn_closed). */
typedef struct rt_xin {
    struct rt_xin *next;
    const keel_conn *conn;
    char cap[256];
    uint32_t shard;
    uint64_t epoch;
    uint32_t next_seq;
    int refused;        /* the stream was refused with this code */
    uint8_t *recs;
    size_t len, cap_bytes;
} rt_xin;

struct keel_cluster_rt {
    keel_node *n;
    keel_cluster *c;
    keel_peers *peers;
    struct keel_obatch *obatch; /* outbox messages to peers, batched */
    char **caps;
    size_t ncaps;
    char address[300];
    char store_id[2 * KEEL_STORE_ID_LEN + 1];

    keel_hmap units;        /* rt_unit by (capability, shard) */
    rt_unit *waiting;       /* units with held messages */
    size_t nheld;           /* held messages over all units */
    uint64_t next_seq;      /* admission order */
    uint64_t low_seq;       /* below every admitted one: taken back */
    int admit;              /* keel__submit from a release: run here */
    rt_rel *rels;
    /* Units whose fence is recorded but which still have actors resident
     * from an earlier ownership: acquired once the sweep has them gone. */
    rt_job *acq;
    rt_xin *xins;
    rt_rcvd *rcvd;
    int sweep;
    int fence_logged; /* "fenced" logged, its "lifted" not yet */
    /* The purge of a forgotten node's stale units (hook forgotten): its
     * number (a purge of an earlier session is not waited for), wipes
     * still to settle, and the first failure. */
    uint64_t wipe_gen;
    size_t wipes_left;
    int wipe_status;
    /* unit_sweep.c: per unit of the last map applied (capability-major,
     * the capabilities by name), since when it has not listed this node
     * (0: it does; SW_DONE: its copy was looked at). */
    double *sw_since;
    char **sw_caps;
    size_t sw_ncaps;
    uint32_t sw_shards;
    double sw_next; /* the tick looks again from then on */
    rt_rcvd *sw_drops; /* deletions queued, not settled (epoch unused) */

    /* The module's own commits. */
    keel_writer *writer;
    keel_batch *batch;
    rt_job *jobs, *jobs_tail; /* waiting for a batch */
    rt_job *inflight;         /* in the batch with the writer */
    rt_job *later;            /* failed; queued again at not_before */
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
    /* Why the node stopped on its own: it cannot take part in the
     * cluster (hook failed); 0 otherwise. keel_node_run returns it. */
    int failure;
    ev_tstamp leave_deadline, leave_report;
    ev_tstamp stop_since; /* when the stop first waited for quiet */
};

static inline ev_tstamp rt_now(keel_cluster_rt *rt)
{
    return ev_now(rt->n->loop);
}

/* The hold bound: --hold-timeout, else twice the session timeout asked
 * for and at least HOLD_MS_DEFAULT (8 s with the default 4 s timeout). A
 * unit whose primary died is served again once the servers expired its
 * session (T after its last heartbeat, rounded up to their next tick,
 * which is at most T/2 away) and the controller promoted a backup: a call
 * held for 2T outlives that (docs/cluster.md, "Failover"). A held call
 * that outlives this node's own session instead is not answered from
 * what it held then: it waits for the new session's map (placement), and
 * is not run, nor its reply sent as a success, in a later session than
 * the one that accepted it (keel_req.session). */
static inline uint32_t rt_hold_ms(const keel_cluster_rt *rt)
{
    return keel__hold_ms(&rt->n->opts);
}

/* A hop-exhausted message waits this long, or for a map change, before it
 * is routed again from this node's placement. */
#define HOP_RETRY_NS 100000000ull

static inline void rt_put_be(uint8_t *p, uint64_t v, int bytes)
{
    int i;

    for (i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t rt_get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------- cluster_rt.c */

/* A wipe of the forgotten hook's purge settled. */
void rt_wipe_done(keel_cluster_rt *rt, const rt_job *j, int status);
/* Whether wipes of that purge are queued and not settled yet: a copy
 * this node holds may lose its older records in one of them. */
int rt_wiping(const keel_cluster_rt *rt);

/* ------------------------------------------------------- unit_sweep.c */

/* A map was applied: notes the units it no longer lists this node for,
 * and deletes the copies of those it has not listed for the dead time
 * (keel__repl_drop_copy). Also called from the tick. */
void rt_sweep_copies(keel_cluster_rt *rt, int map_applied);
/* Whether a deletion of this node's copy of (cap, shard) is queued and
 * not settled: a stream or keep frame of the unit is refused meanwhile
 * (ENOTTARGET: the sender tries again soon), so that the deletion cannot
 * remove what it brings. */
int rt_sweep_pending(const keel_cluster_rt *rt, const char *cap,
                     uint32_t shard);
/* The deletion of (cap, shard) settled (repl_backup.c). */
void rt_sweep_settled(keel_cluster_rt *rt, const char *cap, uint32_t shard);
void rt_sweep_free(keel_cluster_rt *rt);

/* ------------------------------------------------------------ route.c */

/* Answers req with status and body (copied), and releases it. */
void rt_req_finish(keel_node *n, keel_req *req, int status, const void *body,
                   size_t len);
/* Answers another node's frame (a unit's stream, a keep) with status
 * and its text, and frees req: a reply between nodes, which the call
 * statistics do not count. */
void rt_peer_answer(keel_node *n, keel_req *req, int status);
/* Answers m's request with status and the text, and frees m (which is in
 * no queue). */
void rt_msg_fail(keel_cluster_rt *rt, rt_msg *m, int status,
                 const char *text);
/* Routes the held messages again, unit by unit and in order within each;
 * fails those past their deadline. */
void rt_retry_held(keel_cluster_rt *rt);
/* Fails every held message with status (the node stops). */
void rt_fail_held(keel_cluster_rt *rt, int status);
/* Frees the units (after every message was answered). */
void rt_units_free(keel_cluster_rt *rt);
/* Takes the queued messages of actors whose unit is not LOCAL back into
 * the hold list and passivates those whose writes are durable. Returns
 * how many such actors stay resident. */
size_t rt_sweep(keel_cluster_rt *rt);
/* Whether an actor of the unit is resident. */
int rt_unit_resident(keel_cluster_rt *rt, const char *cap, uint32_t shard);

/* -------------------------------------------------------- unit_jobs.c */

struct scan_ctx {
    keel_node *n;
    const char *cap;
    uint8_t *out;       /* XFER record encoding, owned by the caller */
    size_t len, cap_bytes;
    int err;
};

/* Collects the unit's records, as the store's type table places them,
 * into s->out. KEEL_ECAPUNKNOWN when the shard holds records whose unit
 * cannot be told. */
int rt_unit_scan(keel_node *n, const char *cap, uint32_t shard,
                 struct scan_ctx *s);
/* Parses the next record of an XFER record area at *off. */
int rt_rec_next(const uint8_t *p, size_t len, size_t *off,
                const uint8_t **key, size_t *klen, uint64_t *version,
                const uint8_t **val, size_t *vlen);
void rt_job_free(rt_job *j);
/* Adds the job's group to b, as the module's writer would commit it. */
int rt_job_build(keel_cluster_rt *rt, keel_batch *b, rt_job *j);
/* Queues a job (taking it) and starts a batch if the writer is idle. */
void rt_job_push(keel_cluster_rt *rt, rt_job *j);
/* Queues j again after RETRY_S (taking it). */
void rt_job_later(keel_cluster_rt *rt, rt_job *j);
/* Queues the jobs of rt->later that are due. */
void rt_jobs_due(keel_cluster_rt *rt);
void rt_kick_writer(keel_cluster_rt *rt);
/* Completes every job of the batch with the writer. reported: the writer
 * handed the batch back (it was not refused at the door). */
void rt_settle(keel_cluster_rt *rt, int status, int reported);
/* The writer's completion, on its thread. */
void rt_writer_done(keel_batch *b, int status, void *data);
/* The loop's side of rt_writer_done. */
void rt_wake_cb(struct ev_loop *loop, ev_async *w, int revents);

/* ------------------------------------------------------ unit_stream.c */

rt_rel *rt_rel_find(keel_cluster_rt *rt, const char *cap, uint32_t shard);
/* The release hook: starts a release, changes its destination, or (to
 * NULL) calls it off, as far as no recipient has stored the unit. */
void rt_release(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                uint64_t epoch, const char *to);
/* Whether this node's store records that it handed the unit over at
 * `epoch` (its purge did, before a restart): the recipient into to. */
int rt_handed_over(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                   uint64_t epoch, char *to, size_t to_cap);
/* Forgets the receipts the applied map has moved past; returns how many
 * remain (a leaving node waits for them). */
size_t rt_receipts_pending(keel_cluster_rt *rt);
/* A stream of the unit at epoch from node `from` (the unit's primary
 * then; NULL: unknown) was stored here. */
void rt_receipt_add(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                    uint64_t epoch, const char *from);
void rt_receipts_free(keel_cluster_rt *rt);
/* Starts or restarts the streams whose unit has no actor resident. */
void rt_progress_rels(keel_cluster_rt *rt);
/* The purge after a unit's stream is durable (status 0) or failed. */
void rt_rel_purged(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                   int status);
/* Forgets the releases of one unit (cap NULL: of every unit), except one
 * whose purge is with the writer: its completion lets it go. */
void rt_drop_rel(keel_cluster_rt *rt, const char *cap, uint32_t shard);
/* Whether a stream of the unit at epoch was stored here (and the applied
 * map has not moved past it yet), sent by `from` (NULL: by anyone): a
 * resend is taken from the node that sent it only. */
int rt_receipt_has(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                   uint64_t epoch, const char *from);
/* The node a request came from over the wire (keel__conn_node), or
 * NULL. */
const char *rt_req_node(const keel_req *req);

/* ------------------------------------------------------- cluster_rt.c */

/* The fence this store records for (cap, shard); epoch when it cannot be
 * read (the commit that needs it decides then). */
uint64_t rt_fence_read(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                       uint64_t epoch);
/* Whether the unit is this node's at epoch without its records, its store
 * at fence: below epoch - 1 (neither served here at epoch nor streamed
 * here at epoch - 1), and not promoted from the unit's in-sync set. What
 * the store holds of it then is an older owner's copy: the acquire
 * deletes it, a release before the acquire hands the unit on empty. */
int rt_without_records(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                       uint64_t epoch, uint64_t fence);

/* ----------------------------------------------------- unit_promote.c */

/* Sender: whether r's unit may go to r->to without its records (r->to is
 * an in-sync backup of it by the applied map, nothing of it waits on
 * backups, no keep frame was refused), and then the digest of what this
 * node holds of it into *digest. 1 when it may, 0 when it is streamed. */
int rt_promote_may_keep(keel_cluster_rt *rt, const rt_rel *r,
                        uint64_t *digest);
/* Receiver: a keep frame (an XFER with flag bit 1) for unit (cap, shard)
 * at epoch, carrying the sender's digest. 0 when req was taken (answered
 * once this node's fence records the epoch, durably), or a KEEL_E* code:
 * refused, nothing recorded. */
int rt_promote_in(keel_cluster_rt *rt, keel_req *req, const char *cap,
                  uint32_t shard, uint64_t epoch, const keel_xfer_head *h);
/* JOB_KEEP settled with status. */
void rt_promote_kept(keel_cluster_rt *rt, rt_job *j, int status);

#endif
