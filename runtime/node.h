/* Internals of a node: actors, requests, the run queue and group commit.
 * Everything here is owned by the loop thread unless a field says
 * otherwise. */
#ifndef KEEL_RUNTIME_NODE_H
#define KEEL_RUNTIME_NODE_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "coordinator/coord.h"
#include "keel.h"
#include "persistence/store.h"
#include "runtime/hmap.h"

typedef struct keel_actor keel_actor;
typedef struct keel_req keel_req;
typedef struct keel_conn keel_conn;

struct keel_type_entry {
    keel_actor_type t;  /* name and capability point at the copies below */
    char name[KEEL_MAX_TYPE_LEN + 1];
    char *capability;   /* "" for the default group */
    uint8_t index;
    /* Per shard, the shard epoch at which the store's fence was last seen
     * not to be ahead of us (0: not checked). Only this node writes its
     * store and it learns of every epoch change, so one check per epoch
     * suffices; a refused write clears the entry. Allocated on first use. */
    uint64_t *fence_ok;
};

/* An entry written by a turn that has not been committed yet. Reads look
 * here before the store: read-your-writes across uncommitted turns. */
typedef struct keel_ovl_entry {
    uint64_t hash;
    uint64_t seq;    /* batch that holds (or will hold) this write */
    uint32_t klen;
    uint32_t vlen;
    uint8_t deleted; /* a tombstone: the entry is gone */
    uint8_t data[];  /* key, then value */
} keel_ovl_entry;

enum {
    ACTOR_ACTIVE = 1 << 0,      /* state loaded, on_activate ran */
    ACTOR_IN_RUNQ = 1 << 1,
    ACTOR_STATE_DIRTY = 1 << 2, /* state blob changed in the open batch */
    ACTOR_IN_DIRTY = 1 << 3,    /* on the open batch's dirty list */
    ACTOR_RUNNING = 1 << 4,
    ACTOR_PARKED = 1 << 5,      /* on the parked list (see run_cb) */
    ACTOR_HAS_BLOB = 1 << 6,    /* a state blob exists (stored or set) */
    ACTOR_FAILED = 1 << 7       /* transient: its batch failed, settling */
};

struct keel_actor {
    uint64_t hash;
    struct keel_type_entry *type;
    keel_actor *lru_prev, *lru_next; /* resident actors, most recent first */
    keel_actor *run_next;
    keel_actor *dirty_next;
    keel_req *mb_head, *mb_tail;     /* mailbox, FIFO */
    /* The state blob: up to sizeof st.inl bytes live inside the actor
     * (a counter costs no allocation); larger ones in st.heap, malloc'd
     * with capacity state_cap. state_cap == 0 means inline. */
    union {
        uint8_t *heap;
        uint8_t inl[8];
    } st;
    uint32_t state_len, state_cap;
    uint64_t version;                /* of the state blob */
    /* Sequence of this actor's latest write. While it is above the
     * node's durable_seq the actor cannot be passivated, and its replies
     * wait for the batch that holds it. After a failed batch it pins the
     * actor, inactive, until the batches that may still hold its stale
     * writes have settled. */
    uint64_t last_write_seq;
    ev_tstamp last_used;
    keel_hmap *ovl;                  /* uncommitted entries, or NULL */
    void *user;                      /* keel_turn_actor_data slot */
    uint32_t shard;
    uint32_t mb_len;
    /* The version of its type's state layout its state was written by
     * (keel_actor_type.state_version), as loaded or last written. */
    uint32_t state_ver;
    uint8_t flags;
    uint8_t idlen;
    int8_t fail_status; /* while ACTOR_FAILED: the error of its group */
    /* The outbox index write (outbox.h, KEEL_OB_INDEX_*) its turns since
     * the last flush call for; flush_open adds it to its group. */
    uint8_t ob_index;
    /* Reminder index writes (reminders.h) its turns made since the last
     * flush; flush_open adds them to its group. */
    struct keel_rm_idx *rm_idx;
    uint8_t id[];
};

/* Where a reply goes. */
enum keel_req_origin {
    REQ_LOCAL = 0, /* keel_call/keel_cast: user callback */
    REQ_NET = 1,   /* a client connection: a REPLY/ERROR frame */
    REQ_SYNC = 2   /* keel_call_sync: wake the waiting thread (call_sync.c) */
};

#define KEEL_REQ_INLINE 40

/* One message from submission to reply. The buffer holds the message
 * until the turn runs, then the reply (or error text) until release. */
struct keel_req {
    keel_req *next;
    keel_actor *actor;
    uint8_t origin;
    uint8_t is_cast;
    uint8_t hops;  /* times forwarded between nodes (cluster mode) */
    uint8_t keyed; /* rkey holds the request key (runtime/dedup.h) */
    uint8_t wrote; /* its turn changed the actor's state */
    /* deadline_ns came with the frame, or from a timed keel_call_sync:
     * no turn of it starts past it */
    uint8_t wire_deadline;
    /* Not a message: a read of the actor's state, answered by the
     * runtime from a turn of its own (keel__read_state) without calling
     * the handler. */
    uint8_t read_state;
    /* A failed reply held by replication until no backup that may hold
     * its write can be promoted (keel__repl_hold_failed). */
    uint8_t failed_hold;
    /* Not a message: a runtime turn of an outbox's sender (outbox.h,
     * KEEL_OB_OP_*), answered without calling the handler. */
    uint8_t ob_op;
    /* Its turn's writes were applied, though it answers an error: a
     * refusal recorded under its key by this turn, or found recorded
     * (run_turn). Its outbox messages and its change for followers go as
     * a success's do; cleared when the reply fails instead
     * (keel__reply_fail). */
    uint8_t refusal_applied;
    int status;
    uint32_t len;
    uint32_t cap;  /* capacity of buf */
    uint64_t t_submit_ns; /* monotonic clock at submission */
    uint8_t rkey[KEEL_REQUEST_KEY_LEN]; /* the request key, when keyed */
    /* Cluster mode: when the call's budget runs out (monotonic ns, 0:
     * none). Set where it entered the cluster and carried by forwards;
     * a call whose frame carried it is not started past it
     * (KEEL_EDEADLINE): whoever sent it has given up by then. */
    uint64_t deadline_ns;
    /* Cluster mode: the ZooKeeper session (keel_cluster_session) in which
     * it was accepted to run here, under that session's map. A turn is
     * not started, and a reply is not sent as a success, in a later
     * one. */
    uint64_t session;
    /* A message from an actor's outbox: its sender and sequence number
     * (malloc'd, freed with the req), or NULL. */
    struct keel_ob_from *from;
    /* Its turn queued outbox messages up to this sequence (0: none):
     * they may go once its reply leaves with success. */
    uint64_t ob_hi;
    /* Its turn changed a followed actor's state: the change, sent to the
     * followers when the reply is released as a success (follow.h). */
    struct keel_follow_ev *fev;
    /* Not a message: a reminder firing (reminders.h), whose turn runs the
     * handler with the reminder's message if it is still due. Owned by
     * the reply callback. */
    struct keel_rm_fire *rm;
    /* Its turn set a reminder due at this wall-clock ms (0: none): the
     * unit's timer is looked at once the reply leaves. */
    uint64_t rm_due;
    /* A keyed request its handler refused with an answer
     * (keel_err_is_answer): the error and its text (malloc'd, freed with
     * the req), recorded under its key by the turn that takes it again
     * (run_turn) before the error is answered. */
    int refused;
    char *refusal;
    uint8_t *buf;  /* points to inl or to a malloc'd block */
    union {
        struct {
            keel_call_cb cb;
            void *data;
        } local;
        struct {
            keel_conn *conn;
            uint64_t request_id;
        } net;
        struct keel_sync_call *sync;
    } u;
    uint8_t inl[KEEL_REQ_INLINE];
};

typedef struct keel_req_queue {
    keel_req *head, *tail;
} keel_req_queue;

/* A batch with the writer, as the loop sees it. */
#define KEEL_WBATCH_MAX 8
struct keel_wbatch {
    keel_batch *b;
    uint64_t hi_seq;     /* the newest turn sequence it holds */
    uint64_t turns;
    keel_req_queue wait; /* replies released when it is durable */
    /* The replication flushes it holds (keel__repl_flushed), 0: none. */
    uint64_t repl_lo, repl_hi;
};

struct keel_post {
    struct keel_post *next;
    keel_post_fn fn;
    void *data;
};

struct keel_node {
    keel_node_options opts;
    char *data_dir;
    char *listen_addr;
    char *log_node; /* node_id for keel_node_log's lines; NULL: none */
    struct ev_loop *loop;
    keel_store *store;
    keel_writer *writer;
    keel_coord *coord;
    pthread_t thread;
    pthread_t loop_tid;     /* the thread in keel_node_run, while loop_tid_set */
    atomic_int loop_tid_set;
    /* Under post_mu: a thread has taken the loop (loop_tid), or
     * keel_node_start's thread returned; keel_node_start waits for it on
     * claim_cv. */
    int loop_claimed;
    pthread_cond_t claim_cv;
    int thread_started;
    int thread_rc; /* what keel_node_run returned on that thread */
    int running;
    atomic_int ran; /* keel_node_run was called: a node runs once */

    struct keel_type_entry *types[256];
    unsigned ntypes;
    void *plugins[32];
    unsigned nplugins;

    keel_hmap actors;
    keel_actor *lru_head, *lru_tail;
    keel_actor *runq_head, *runq_tail;
    uint64_t resident;

    /* Group commit. Turns are numbered by the flush that hands their
     * writes over: open_seq for the turns since the last flush, whose
     * writers are on the dirty list. A flush serializes the dirty actors
     * and submits them to the writer, appending to the batch that waits
     * there if the writer has not taken it yet; so one batch with the
     * writer covers a range of sequences, up to its hi_seq. */
    uint64_t open_seq;     /* sequence of the turns not yet handed over */
    uint64_t durable_seq;  /* every sequence <= this is settled */
    uint64_t open_turns;
    keel_actor *dirty_head;
    uint64_t ndirty;       /* actors on the dirty list */
    keel_actor *parked;    /* inactive actors waiting for durable_seq */
    keel_batch *spare;     /* the next flush builds here */
    keel_batch *bpool[KEEL_WBATCH_MAX];
    unsigned nbpool;
    /* The batches with the writer, oldest first: wb[i % KEEL_WBATCH_MAX]
     * for wb_first <= i < wb_next. */
    struct keel_wbatch wb[KEEL_WBATCH_MAX];
    uint64_t wb_first, wb_next;
    /* Replies wait here until the batch that holds their turn is durable;
     * those of turns not yet flushed wait in wait_open. */
    keel_req_queue wait_open;
    /* Failed commits come one after another while the disk is full: one
     * line a second says so, with how many failed unlogged since
     * (commit_failed_warn in node_commit.c). */
    ev_tstamp commit_warned_at;
    int commit_warned_rc;
    uint64_t commit_unlogged;
    /* Turns that held the loop thread long: one line every few seconds
     * (slow_turn_warn in node.c), with how many more since. */
    ev_tstamp slow_warned_at;
    uint64_t slow_unlogged;

    /* Writer -> loop hand-back: the writer reports batches in the order
     * they were queued, so the i-th report is about wb[i]. Written on the
     * writer thread, under done_mu. */
    pthread_mutex_t done_mu;
    uint64_t wb_ndone;
    int wb_status[KEEL_WBATCH_MAX];

    /* Posts from other threads. */
    pthread_mutex_t post_mu;
    struct keel_post *post_head, *post_tail;
    atomic_int stop_requested;
    int stopping;
    /* Small batches that find the writer idle are committed on the loop
     * thread (flush_open). On by default; tests of the writer's pipeline
     * turn it off. */
    int inline_commits;
    /* A reply found the cluster lease lapsed during this run of turns:
     * the run stops (lease_lapsed, run_cb). */
    int lease_lost;
    int inlining; /* in keel_writer_try_inline, from flush_open */

    ev_async async;
    ev_idle run_watcher;
    ev_timer idle_timer;
    ev_prepare flush_watcher;

    /* Turn scratch, reused by every turn (no allocation on the hot path). */
    uint8_t *scratch_state;
    size_t scratch_state_cap;
    uint8_t *scratch_reply;
    size_t scratch_reply_cap;
    uint8_t *stage;        /* staged entry writes of the running turn */
    size_t stage_len, stage_cap;

    keel_req *req_free;
    size_t req_free_count;

    /* Network. */
    int listen_fd;
    /* TLS (tls.h): the context new wire connections get and peer links
     * are made with, or NULL without TLS. keel_node_reload swaps it; a
     * connection holds the one it was made with. The files' paths are
     * copies. */
    struct keel_tls_ctx *tls;
    char *tls_cert, *tls_key, *tls_ca, *tls_crl; /* tls_crl: or NULL */
    /* keel_node_reload asked for the TLS files and the token file to be
     * read again; done on the loop thread. */
    atomic_int reload_requested;
    /* ev_now of the last CALL/CAST another node forwarded here (cluster
     * mode): a stopping node waits for its peers to fall quiet. */
    double last_forward_in;
    /* When the loop last went to wait for events, and the earliest a byte
     * read from an idle connection in this round can have arrived (net.c,
     * frame_deadline). */
    uint64_t net_prep_ns, net_floor_ns;
    int port;
    ev_io listen_watcher;
    /* The listener rests while the node is out of descriptors (net.c,
     * accept_some); a descriptor kept open to be given up there. */
    ev_timer accept_rest;
    int reserve_fd;
    ev_tstamp accept_log_at;  /* refusals are logged once a second... */
    uint64_t accept_log_quiet; /* ...counting the ones not logged */
    ev_timer idle_conns;      /* closes idle connections */
    uint32_t nconns;          /* open wire connections */
    /* Connections told why they are refused before they close (net.c,
     * refuse_conn): how many are open, how many of them are over the
     * connection limit (TLS), how many of those began in the second that
     * began at overflow_second; the timer that closes them when their
     * time is up. */
    uint32_t nrefusing, noverflow, overflow_in_second;
    ev_tstamp overflow_second;
    ev_timer refuse_timer;
    keel_conn *conns;      /* all open connections */
    /* With access control on: connections in the order they were
     * accepted, oldest at anon_tail, that had proven nothing then; the
     * first still without credentials gives its place to a new one at
     * the connection limit (net.c, evict_anonymous). */
    keel_conn *anon_head, *anon_tail;
    keel_conn *flush_head; /* connections with bytes to write */
    keel_conn *graveyard;  /* closed connections waiting to be freed */
    struct keel_http *http; /* the HTTP face (http.c), or NULL */

    /* Cluster mode (cluster_rt.c), or NULL when standalone. */
    struct keel_cluster_rt *cluster;
    /* Replication (repl.c), cluster mode only; and how many units have
     * replies waiting on backups: while 0, replies pay nothing for it. */
    struct keel_repl *repl;
    uint64_t repl_busy;

    /* Tokens and access rules (auth.c); never NULL once created. A
     * reload (keel_node_reload) is asked for from any thread, done on the
     * loop thread. */
    struct keel_auth *auth;

    /* Outbox delivery (outbox.c). */
    struct keel_outbox *outbox;
    /* Reminders of the units served here (reminders.c). */
    struct keel_reminders *reminders;

    /* Subscriptions to actors' changes (follow.c). */
    struct keel_follow *follow;

    int actlog_fd;         /* activation log (opts.activation_log), or -1 */
    uint64_t clock_ns;     /* monotonic, refreshed per run and per settle */

    /* Statistics; read from other threads without locks. */
    keel_stats stats;
};

/* Statistics have one writer, the loop thread, and readers on any thread
 * (keel_node_stats). Relaxed atomic loads and stores make that race-free
 * and cost nothing over plain moves on common hardware. */
#define STAT_SET(n, f, v) __atomic_store_n(&(n)->stats.f, (v), __ATOMIC_RELAXED)
#define STAT_ADD(n, f, d) STAT_SET(n, f, (n)->stats.f + (uint64_t)(d))
#define STAT_SUB(n, f, d) STAT_SET(n, f, (n)->stats.f - (uint64_t)(d))

/* --- node.c -------------------------------------------------------------*/

/* Nonzero on the node's loop thread, where blocking calls would wait on
 * themselves. */
int keel__on_loop_thread(keel_node *n);

/* The turn, for the runtime's own entries (keys beginning with a NUL
 * byte) kept by outbox.c: reads see the turn's writes and earlier turns';
 * writes are staged with the turn's. */
int keel__turn_writable(keel_turn *t);
/* Whether the turn has its error text (keel_turn_error) already. */
int keel__turn_has_error(keel_turn *t);
/* What a hook of the actor's type (on_message, on_activate, upgrade:
 * `hook` names it) returned, as the turn's status: 0 and the KEEL_E*
 * codes as they are; anything else (a positive number, an errno value)
 * is KEEL_EHANDLER, with a text naming the value unless the handler set
 * one. */
int keel__turn_hook_rc(keel_turn *t, const char *hook, int rc);
int keel__turn_rt_get(keel_turn *t, const void *key, size_t klen,
                      const void **val, size_t *vlen);
int keel__turn_rt_put(keel_turn *t, const void *key, size_t klen,
                      const void *val, size_t vlen);
int keel__turn_rt_del(keel_turn *t, const void *key, size_t klen);
struct keel_ob_turn *keel__turn_ob(keel_turn *t);
struct keel_rm_turn *keel__turn_rm(keel_turn *t);
struct keel_fl_turn *keel__turn_fl(keel_turn *t);
keel_actor *keel__turn_actor(keel_turn *t);
/* Calls fn for every placement unit of the registered types' capabilities
 * (each once; cap is a registered type's string): a standalone node's
 * units at start. */
void keel__each_unit(keel_node *n,
                     void (*fn)(keel_node *n, const char *cap,
                                uint32_t shard));
/* keel_turn_entries over the runtime's own entries only, those whose key
 * begins with prefix[0, plen) (plen 0: all of them): an actor may hold
 * many of the runtime's entries of other kinds (request keys). */
int keel__turn_rt_entries(keel_turn *t, const void *prefix, size_t plen,
                          keel_entry_fn fn, void *data);

/* --- plugin.c -----------------------------------------------------------*/

/* Closes the plugins the node loaded (keel_node_destroy, after its types
 * are gone). */
void keel__plugins_close(keel_node *n);

/* --- node.c, continued ---------------------------------------------------*/

/* Submits a message; the reply goes wherever req says. On error the req
 * has not been queued and the caller still owns it. */
int keel__submit(keel_node *n, struct keel_type_entry *te, const void *id,
                 size_t idlen, keel_req *req);
/* Reads an actor's state through a turn of its own on the owner of its
 * unit (forwarded there in cluster mode, activating the actor if need
 * be, without calling its handler): cb gets the reply in the state-read
 * layout (runtime/proto.h), or KEEL_ENOTFOUND when the actor has never
 * been written. Ordered after the actor's earlier messages, and answered
 * as a read turn is: once the writes it shows are durable and, with
 * replicas, past the read rule (repl.h). Loop thread. */
int keel__read_state(keel_node *n, const char *type, const void *id,
                     size_t idlen, keel_call_cb cb, void *data);
struct keel_type_entry *keel__type_find(keel_node *n, const void *name,
                                        size_t len);
keel_req *keel__req_alloc(keel_node *n, size_t msglen);
void keel__req_free(keel_node *n, keel_req *req);
/* Stores bytes in the req's buffer (message or reply). KEEL_ENOMEM. */
int keel__req_set(keel_req *req, const void *data, size_t len);
/* --- call_sync.c ---------------------------------------------------------*/

/* Answers the blocking call s (REQ_SYNC) with status and the reply (or
 * error text) buf[0, len), copied; loop thread. */
void keel__sync_complete(struct keel_sync_call *s, int status,
                         const void *buf, size_t len);

/* Whether an actor has nothing queued, running or waiting for a commit;
 * such an actor can be passivated (freed) at once. */
int keel__actor_idle(const keel_node *n, const keel_actor *a);
void keel__actor_passivate(keel_node *n, keel_actor *a);
/* Finishes a stop that waited for something (loop thread). */
void keel__node_stop_check(keel_node *n);
/* Whether small batches may be committed on the loop thread (default 1).
 * Before keel_node_run. */
void keel__node_set_inline_commits(keel_node *n, int on);
/* Restarts the run of queued turns, stopped while the node was fenced
 * (cluster mode). */
void keel__run_resume(keel_node *n);
/* A "fenced since" (fenced: the fence came ago_ns ago) or "serving" line
 * in the activation log, if there is one. */
void keel__actlog_fence(keel_node *n, int fenced, int64_t ago_ns);
/* Takes the actors whose mailbox is empty off the run queue (cluster
 * mode: the sweep emptied them). Queued, an actor is never idle, so a
 * fenced node, whose run is stopped, could not passivate it. */
void keel__run_prune(keel_node *n);

/* --- node_commit.c ------------------------------------------------------*/

uint64_t keel__now_ns(void);
/* The wall clock (CLOCK_REALTIME) in ms: times kept in the store, which
 * must mean the same on every node and across restarts. */
uint64_t keel__wall_ms(void);
/* Sends a finished request's reply (status, buf) to its origin and frees
 * it. */
void keel__req_release(keel_node *n, keel_req *req);
/* Releases a reply whose writes are confirmed (repl.c) by the rules of a
 * settled batch: if the cluster lease lapsed meanwhile, a write's reply
 * becomes KEEL_EINDOUBT and a read's KEEL_EUNAVAIL. */
void keel__req_settle(keel_node *n, keel_req *req);
/* Fails a reply whose writes cannot be confirmed: KEEL_EINDOUBT (with
 * msg) for a turn that wrote, KEEL_EUNAVAIL for one that did not. */
void keel__req_doubt(keel_node *n, keel_req *req, const char *msg);

/* --- net.c --------------------------------------------------------------*/

int keel__net_listen(keel_node *n, const char *addr, char *errbuf,
                     size_t errlen);
void keel__net_start(keel_node *n);
/* Closes the listener; connections stay until keel__net_close_all. */
void keel__net_stop_accepting(keel_node *n);
/* The end of a stop: takes the connections waiting on the listener and
 * closes it, sends every connection that is owed nothing a last ERROR
 * ESTOPPING with request id 0, writes out what is buffered, and closes
 * them all (bounded: a few seconds at most). */
void keel__net_close_all(keel_node *n);
/* Reply to a REQ_NET request (the connection may be gone). */
void keel__net_complete(keel_node *n, keel_req *req);
/* The node a wire connection proved it is (a certificate, or a claim on a
 * cluster without TLS), or NULL for any other connection. */
const char *keel__conn_node(const keel_conn *c);
/* Writes every buffered reply out now, as far as the sockets take it. */
void keel__net_flush_all(keel_node *n);
/* Reads the TLS files again into a new context for new connections
 * (existing ones keep theirs). On error the old context stays and the
 * error is logged. Loop thread. */
int keel__net_tls_reload(keel_node *n);
/* After the token file was read again: a connection that follows actors
 * under a token the file no longer holds is closed (a request of it
 * would be refused from now on; its open subscriptions must not go on
 * either). Loop thread. */
void keel__net_tokens_reloaded(keel_node *n);

/* --- builtins.c ---------------------------------------------------------*/

int keel__register_builtins(keel_node *n);

#endif
