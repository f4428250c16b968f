/* keel — a strongly consistent virtual-actor runtime.
 *
 * One public header. Handles are opaque; structs that may grow carry
 * reserved fields.
 *
 * Threading contract
 * ------------------
 * A node runs one event-loop thread (the "loop thread"): either the thread
 * that calls keel_node_run(), or one that keel_node_start() creates. Actor
 * handlers, activation and passivation callbacks, and every completion
 * callback (keel_call_cb) run on the loop thread, one at a time.
 *
 *  - keel_call() and keel_cast() must be called on the loop thread: from a
 *    handler, a completion callback or a function passed to keel_node_post().
 *    From another thread while the node runs they return KEEL_EINVAL.
 *  - keel_call_sync() (and its _keyed and _timed forms), keel_node_post()
 *    and keel_node_stop() may be called from any thread; the blocking
 *    calls not from the loop thread.
 *  - keel_node_register_type() must be called before the node runs.
 *  - keel_node_stats() may be called from any thread (figures are read
 *    without locking and may be slightly stale).
 *
 * Buffer ownership
 * ----------------
 * keel copies every buffer handed to it before the call returns; the caller
 * keeps ownership. Buffers keel hands to callbacks are owned by keel and are
 * valid only until the callback returns, unless a function says otherwise.
 *
 * Errors
 * ------
 * Functions that can fail return 0 or a negative KEEL_E* code. The same
 * codes travel on the wire (as their absolute value) and are printed by
 * keel_strerror().
 */
#ifndef KEEL_H
#define KEEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KEEL_BUILDING) && defined(__GNUC__)
#define KEEL_API __attribute__((visibility("default")))
#else
#define KEEL_API
#endif

#define KEEL_VERSION_MAJOR 0
#define KEEL_VERSION_MINOR 1
#define KEEL_VERSION_PATCH 0
#define KEEL_VERSION_STRING "0.1.0"
#define KEEL_VERSION_NUM                                                     \
    ((KEEL_VERSION_MAJOR << 16) | (KEEL_VERSION_MINOR << 8) |               \
     KEEL_VERSION_PATCH)

/* Returns KEEL_VERSION_NUM of the library actually linked. */
KEEL_API unsigned keel_version(void);
KEEL_API const char *keel_version_string(void);

/* ---------------------------------------------------------------- errors */

/* X(name, value, message). Values are stable: they are part of the wire
 * protocol. Never renumber; append. */
#define KEEL_ERRNO_MAP(X)                                                    \
    X(EINVAL, -1, "invalid argument")                                        \
    X(ENOMEM, -2, "out of memory")                                           \
    X(ENOTYPE, -3, "unknown actor type")                                     \
    X(EMALFORMED, -4, "malformed frame")                                     \
    X(ETOOBIG, -5, "too large: a message, value or state over its limit")    \
    X(ELIMIT, -6, "type name, id or entry key over its length limit")        \
    X(EHANDLER, -7, "actor handler failed")                                  \
    X(EBADMSG, -8, "message not understood by the actor")                    \
    X(ENOSPC, -9, "storage full")                                            \
    X(EIO, -10, "storage I/O error")                                         \
    X(EFENCED, -11, "write refused: stale shard epoch")                      \
    X(EUNAVAIL, -12, "shard unavailable")                                    \
    X(ESTOPPING, -13, "node is stopping")                                    \
    X(ECONN, -14, "connection failed or closed")                             \
    X(ETIMEDOUT, -15, "timed out")                                           \
    X(ENOTFOUND, -16, "not found")                                           \
    X(ECORRUPT, -17, "stored data is corrupt")                               \
    X(ESTORE, -18, "storage error")                                          \
    X(EEXIST, -19, "already exists")                                         \
    X(EMISMATCH, -20, "data directory belongs to another configuration")     \
    X(EPROTO, -21, "protocol error")                                         \
    X(EPLUGIN, -22, "plugin could not be loaded")                            \
    X(EADDR, -23, "address invalid or unavailable")                          \
    X(EOVERLOAD, -24, "node overloaded")                                     \
    X(EBADVERSION, -25, "coordination data changed concurrently")            \
    X(ECONNLOSS, -26, "coordination service unreachable; outcome unknown")   \
    X(ESESSION, -27, "coordination session expired or closed")               \
    X(ECONFIG, -28, "node configuration does not match the cluster's")       \
    X(EDEPOSED, -29, "no longer the cluster controller")                     \
    X(EINDOUBT, -30, "outcome unknown: the request may have taken effect")   \
    X(EALREADY, -31, "request already ran; its reply was not kept")          \
    X(ETYPECAP, -32, "actor type is recorded with another capability")       \
    X(ECAPUNKNOWN, -33, "stored records of a type whose capability is unknown") \
    X(EDEADLINE, -34, "deadline passed; the request did not run")           \
    X(ENOTTARGET, -35, "unit is not moving to this node at that epoch")      \
    X(ENOTSENT, -36, "request not sent; safe to retry")                   \
    X(EUNAUTH, -37, "not authenticated")                                     \
    X(EDENIED, -38, "not permitted for this identity")                      \
    X(ENOTMEMBER, -39, "sending node is not a member in this node's view")  \
    X(ESTATEVER, -40, "actor state of a version its type cannot read")     \
    X(EDIFFERS, -41, "replica's copy of the unit differs from its primary's")

typedef enum keel_errno {
    KEEL_OK = 0,
#define KEEL__ERR_ENUM(name, val, msg) KEEL_##name = (val),
    KEEL_ERRNO_MAP(KEEL__ERR_ENUM)
#undef KEEL__ERR_ENUM
} keel_errno;

/* Message for a KEEL_E* code (or 0). Never NULL; unknown codes get a
 * generic text. */
KEEL_API const char *keel_strerror(int code);
/* Short symbolic name, e.g. "ENOTYPE". */
KEEL_API const char *keel_err_name(int code);
/* Whether an error is an answer about the request or the actor's state
 * (KEEL_EINVAL, KEEL_EBADMSG, KEEL_EHANDLER, KEEL_ENOTFOUND,
 * KEEL_EEXIST, KEEL_ETOOBIG, KEEL_ELIMIT, KEEL_EDENIED, KEEL_EALREADY):
 * 1, and a keyed request answered with it is settled, as every copy of
 * it gets the same answer (docs/protocol.md, "Request keys"). 0 for one
 * about the node or the connection at the time (KEEL_ENOSPC,
 * KEEL_EUNAVAIL, KEEL_ECONN...), and for 0: after such an error, a
 * keyed request whose earlier try may have run may still run; retry it
 * with its key. */
KEEL_API int keel_err_is_answer(int code);

/* ---------------------------------------------------------------- limits */

#define KEEL_MAX_TYPE_LEN 64     /* bytes of an actor type name */
#define KEEL_MAX_ID_LEN 255      /* bytes of an actor id (any byte value) */
#define KEEL_MAX_ENTRY_KEY_LEN 180 /* bytes of a named storage entry key */
/* Bytes of an actor's state blob or of one entry's value. A unit moving
 * between nodes travels record by record, so one record must fit in a
 * node-to-node frame whatever the nodes' --max-frame. */
#define KEEL_MAX_VALUE_LEN (64u << 20)
#define KEEL_DEFAULT_MAX_FRAME (1u << 20)
#define KEEL_DEFAULT_SHARDS 4096u

/* ----------------------------------------------------------------- nodes */

typedef struct keel_node keel_node;

enum keel_durability {
    KEEL_DURABILITY_FSYNC = 0, /* reply after the commit is fsynced (default) */
    KEEL_DURABILITY_NONE = 1   /* reply after commit; the OS decides when the
                                * data reaches the disk: a power loss can lose
                                * recent acknowledged writes */
};

enum keel_log_level {
    KEEL_LOG_ERROR = 0,
    KEEL_LOG_WARN = 1,
    KEEL_LOG_INFO = 2,
    KEEL_LOG_DEBUG = 3
};

/* Logging is process-wide: every node of the process logs through it,
 * at the level of the node created last (log_level). By default each
 * line goes to stderr as "TIME LEVEL MESSAGE".
 *
 * A callback set with keel_log_set_callback receives each message
 * instead: level is an enum keel_log_level, msg the message alone (no
 * time, level or newline; NUL-terminated, owned by keel, valid until the
 * callback returns; its bytes are what was logged and may not be valid
 * UTF-8). It is called from whichever thread logs: a node's loop thread
 * (most lines, and those of handlers and plugins), its storage writer
 * thread, the HTTP face's threads, any thread calling keel_node_log. keel makes the calls one at a time (never two at once),
 * so the callback needs no lock of its own, but it must be quick: other
 * threads wait for it before logging. Lines it logs through keel itself
 * go to stderr. Set it at any time, from any thread; NULL goes back to
 * stderr. Once keel_log_set_callback returns, the previous callback is
 * not running and will not be called again, so its data may be freed. */
typedef void (*keel_log_fn)(void *data, int level, const char *msg);
KEEL_API void keel_log_set_callback(keel_log_fn fn, void *data);

/* Logs a line through the process's logging (stderr, the keeld log
 * file, JSON lines or the callback, whichever is in use), if level is
 * within the level set. For plugins and embedders; any thread. In JSON
 * lines "node" is the node's node_id (cluster mode). */
KEEL_API void keel_node_log(keel_node *node, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Replicas per unit of a cluster created without a count. */
#define KEEL_REPLICAS_DEFAULT 3
#define KEEL_REPLICAS_MAX 5 /* the primary and up to four backups */

typedef struct keel_node_options {
    const char *data_dir;      /* required; created if missing, with any
                                * missing parents (keeld makes only the
                                * last: a mistyped path fails there) */
    const char *listen;        /* "HOST:PORT" for the wire protocol; NULL:
                                * no listener (embedded use only) */
    uint32_t shard_count;      /* fixed per data dir; 0: the count the
                                * directory was created with, or
                                * KEEL_DEFAULT_SHARDS for a new one */
    uint32_t idle_timeout_ms;  /* passivate after this long idle; 0: 60000 */
    uint32_t max_resident;     /* LRU cap on resident actors; 0: unlimited */
    int durability;            /* enum keel_durability */
    uint32_t max_frame;        /* the largest frame, and so the largest
                                * message a call carries, in-process
                                * calls too (a message must fit a frame
                                * to be forwarded or replicated); 0:
                                * KEEL_DEFAULT_MAX_FRAME */
    int log_level;             /* enum keel_log_level */
    uint64_t initial_map_size; /* LMDB map size to start with; 0: 64 MiB.
                                * The map grows when it fills. */
    int no_builtins;           /* nonzero: do not register counter/kv/register */
    const char *http_listen;   /* "HOST:PORT" for the HTTP/JSON face
                                * (docs/http.md); NULL: none */
    /* Cluster mode (docs/cluster.md): zk_hosts NULL runs standalone. */
    const char *zk_hosts;      /* "HOST:PORT[,...]" of the ZooKeeper servers */
    const char *cluster;       /* cluster name: /keel/<cluster> */
    const char *node_id;       /* this node's name, unique in the cluster */
    const char *capabilities;  /* comma-separated, or NULL for none */
    const char *advertise;     /* "HOST:PORT" other nodes reach us at; NULL:
                                * the listen host with the bound port */
    uint32_t zk_session_timeout_ms; /* 0: 4000 */
    /* Path of a file to append one line to each time an actor is activated
     * or deactivated on this node (docs/operations.md), for checking that
     * no actor ever ran on two nodes at once; NULL: none. */
    const char *activation_log;
    /* Cluster mode: how long a call waits for its unit to have a serving
     * owner (a move, a failover, a restart, a fenced owner) before it is
     * answered KEEL_EUNAVAIL; 0: twice zk_session_timeout_ms, at least
     * 5000 (8000 with the default session timeout), so that a failover
     * fits in it. A call held across the end of this node's own session
     * is never answered from what the node held in that session. At
     * most request_key_retention_ms (see there). */
    uint32_t hold_timeout_ms;
    /* Cluster mode: how long a stopping node hands units off before it
     * leaves anyway, the rest unavailable until it returns; 0: 30000. */
    uint32_t leave_timeout_ms;
    /* Wire connections open at once; a connection over the cap is
     * answered ERROR KEEL_EOVERLOAD (request id 0) and closed. With access
     * control on (tokens or TLS), the oldest connection that has not
     * authenticated is closed that way instead, to make room. 0: 16384. */
    uint32_t max_connections;
    /* Seconds after which a wire connection with nothing in flight and
     * no frame in either direction is closed; 0: never. 300 after
     * keel_node_options_init. */
    uint32_t conn_idle_timeout_s;
    /* Bytes the unfinished unit streams (XFER) of one connection may hold
     * in memory together; 0: 1 GiB. */
    uint64_t max_unit_stream;
    /* HTTP face: seconds a connection has to send a request's headers,
     * counted from its opening or the end of its previous request, however
     * slowly they trickle in; 0: 10. */
    uint32_t http_header_timeout_s;
    /* HTTP face: connections open at once from one client address;
     * 0: 1024. */
    uint32_t http_max_per_ip;
    /* Nonzero: when the data directory's log or checkpoint is damaged in
     * a way recovery cannot get past without losing acknowledged writes,
     * open at the last good state and log what was dropped, instead of
     * refusing to start (KEEL_ECORRUPT). docs/operations.md, "Damaged
     * storage". */
    int recover_to_last_good;
    /* Security (docs/security.md). TLS: PEM files of this node's
     * certificate chain and key, and of the CA that signs the cluster's
     * node and client certificates; NULL: no TLS. */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;
    /* With TLS: a PEM file of certificate revocation lists, one per CA of
     * tls_ca; certificates they list are refused, for clients and other
     * nodes alike. Read again on keel_node_reload. NULL: none. */
    const char *tls_crl;
    /* A file of bearer tokens and their roles; NULL: none. */
    const char *auth_tokens;
    /* A file holding the "user:password" this node authenticates to
     * ZooKeeper with (digest); NULL: none. */
    const char *zk_auth;
    /* Nonzero: run without TLS and credentials where they would be
     * required. */
    int insecure;
    /* Limits on failed token attempts (docs/security.md, "Failed token
     * attempts"), wire and HTTP: a wire connection is closed after
     * auth_conn_fails failed INFO auth (0: 3; at most 255), and an
     * address from which auth_addr_fails attempts failed within
     * auth_fail_window_s seconds (0: 10 and 10) has every token attempt
     * refused, unchecked, until that window ends. */
    uint32_t auth_conn_fails;
    uint32_t auth_addr_fails;
    uint32_t auth_fail_window_s;
    /* Cluster mode: replicas of every unit (1..5: the primary and up to
     * four backups) in a cluster this node creates; 0: KEEL_REPLICAS_DEFAULT
     * (3; a unit has fewer while fewer members declare its capability). A
     * cluster keeps the count it was created with (docs/cluster.md,
     * "Replicas and the in-sync set"). */
    int replicas;
    /* Cluster mode, with backups: how long a primary waits for a backup
     * to acknowledge replicated writes before it asks the controller to
     * drop that backup from the unit's in-sync set (replies wait until
     * the drop lands); 0: 1000. docs/cluster.md, "Replication stream". */
    uint32_t repl_lag_ms;
    /* Cluster mode, with backups: how long a node may be dead (its member
     * znode gone) and keep its places in the units' replica lists, so
     * that it catches up where it was when it comes back; after that a
     * live node replaces it in each and catches up instead. 0: 300000
     * (5 minutes). The controller's value counts: give every node the
     * same. docs/cluster.md, "Replicas and the in-sync set". */
    uint32_t replica_dead_ms;
    /* How many times in a row a receiver's handler may refuse, with the
     * same error, a message the runtime delivers for an actor (from its
     * outbox, or a reminder's firing) before the message becomes a dead
     * letter of the actor (keel dead-letters); 0: 3. Failures that say
     * "try later" (a unit moving, a full disk) never count. */
    uint32_t dead_letter_after;
    /* How long an actor keeps the record of a keyed request (its key and
     * reply, docs/protocol.md "Request keys"), from the write it came
     * with: a retry within this time is answered with the first outcome,
     * one after it runs again. Wall-clock milliseconds; 0: 600000 (10
     * minutes). Give every node of a cluster the same. In cluster mode
     * it must be at least the hold bound (hold_timeout_ms, as derived), or
     * keel_node_create fails KEEL_EINVAL: a keyed call held longer than
     * the retention could run twice. */
    uint32_t request_key_retention_ms;
    /* Cluster mode, with backups: at most this many MiB a second of
     * snapshots sent to backups catching up (docs/cluster.md, "Catch-up"),
     * over every unit and backup of this node together, so that a node
     * back from a restart does not take the disks and links from the
     * writes being served; 0: no limit. */
    uint32_t catchup_mib_s;
    /* Nonzero: the data directory takes a new store id when it is opened
     * (keeld --new-store-id), as a new disk would. For a restored copy of
     * a cluster node's directory, which the cluster refuses to let serve
     * as what it was (it may lack writes the cluster acknowledged since):
     * with a new id the node is never taken for in sync on it, its
     * replicated units catch up from their primaries, and units it held
     * alone are refused until `keel node forget` (docs/operations.md,
     * "Backups"). Give it for that one start only; harmless standalone. */
    uint32_t new_store_id;
    /* How long an outbox message may wait for a deploy (in a cluster, its
     * receiver's type not registered on the node that owns the receiver,
     * or on the node delivering it; the receiver's state of a version its
     * node's code cannot read, after a rollback) before it becomes a dead
     * letter of its sender, which lets the sender's later messages go
     * (keel dead-letters retry sends it again once the deploy is done).
     * Counted on the node delivering it, from its first such refusal.
     * Milliseconds; 0: 3600000 (an hour). */
    uint32_t deploy_wait_ms;
    void *reserved[6];
} keel_node_options;

/* Fills *opts with defaults (all fields zero except the documented ones). */
KEEL_API void keel_node_options_init(keel_node_options *opts);

/* Creates a node: opens (or creates) the data directory and its store,
 * binds the listener if any. Nothing runs until keel_node_run/start.
 * Errors: KEEL_EINVAL, KEEL_ENOMEM, KEEL_EIO / KEEL_ESTORE (data directory
 * cannot be opened), KEEL_EEXIST (it is in use: another node, in this
 * process or another, holds it), KEEL_EMISMATCH (data dir made with another shard
 * count), KEEL_EADDR (listen address, or an advertise address that is not
 * HOST:PORT). On error *out is untouched; a
 * message goes to errbuf if errbuf is not NULL. */
KEEL_API int keel_node_create(const keel_node_options *opts, keel_node **out,
                              char *errbuf, size_t errlen);

/* Runs the loop on the calling thread until the node has stopped, then
 * returns 0 after keel_node_stop(), or a KEEL_E* code when the node
 * stopped on its own because it cannot take part in its cluster (the
 * reason is logged): KEEL_ECONFIG (e.g. another shard count),
 * KEEL_EDENIED (its ZooKeeper credentials are not the cluster's
 * identity), KEEL_EMISMATCH (its data directory is an older copy of the
 * one the cluster last saw it on, a restored backup: see new_store_id),
 * or another error that ended its cluster agent for good.
 * A node whose loop cannot start (KEEL_ENOMEM: no thread for its storage
 * writer, ...) returns at once with that code; calls that were waiting
 * for the loop are answered KEEL_ESTOPPING, as later ones are.
 * KEEL_EINVAL at once when the node runs or ran already: a node runs
 * once (create another on the same data directory to run again). */
KEEL_API int keel_node_run(keel_node *node);

/* Starts keel_node_run on a new thread and returns once that thread has
 * taken the loop: blocking calls (keel_call_sync...) may be made at once
 * from any other thread (they wait for the loop to run), while keel_call
 * and keel_cast belong to the loop thread from then on (KEEL_EINVAL from
 * another; post them with keel_node_post). keel_node_join gives what it
 * returned.
 * Errors: KEEL_EINVAL (started already, or run already, or run by a
 * keel_node_run on another thread meanwhile: a node runs once; create
 * another on the same data directory to run again), KEEL_ENOMEM (no
 * thread). */
KEEL_API int keel_node_start(keel_node *node);

/* Asks the node to stop; any thread, any number of times. The node stops
 * accepting connections and new messages (they get KEEL_ESTOPPING), lets
 * queued turns finish, commits and flushes every pending write, releases
 * the replies, passivates all actors, then the loop returns. */
KEEL_API void keel_node_stop(keel_node *node);

/* Asks the node to read again the files it may take anew while it runs:
 * the TLS certificate, key, CA and CRL, and the token file of auth_tokens
 * (docs/security.md). New connections use the new certificates, existing
 * connections keep theirs; token changes apply from each connection's
 * next request. A file that cannot be read, is unsafe or does not fit is
 * logged and what was loaded before stays. It also opens the process's
 * log file again (keeld's --log-file), for log rotation. Any thread;
 * async-signal-safe (keeld calls it on SIGHUP). */
KEEL_API void keel_node_reload(keel_node *node);

/* Waits for a node started with keel_node_start() to stop, and returns
 * what keel_node_run returned on its thread: 0 after keel_node_stop(), or
 * the code of a node that stopped on its own (KEEL_ECONFIG, ...: see
 * keel_node_run). KEEL_EINVAL when the node was not started. */
KEEL_API int keel_node_join(keel_node *node);

/* Frees a stopped (or never started) node. A node started with
 * keel_node_start() and still running is stopped first, as by
 * keel_node_stop() and keel_node_join(). NULL: nothing. Not from the loop
 * thread, and not while keel_node_run() runs on a thread of the caller's:
 * either logs an error and aborts the process. */
KEEL_API void keel_node_destroy(keel_node *node);

/* Runs fn(node, data) on the loop thread. Any thread. Returns KEEL_ENOMEM
 * or KEEL_ESTOPPING when it cannot be queued. */
typedef void (*keel_post_fn)(keel_node *node, void *data);
KEEL_API int keel_node_post(keel_node *node, keel_post_fn fn, void *data);

/* Whether the node serves: 0 once it does (standalone: its loop runs;
 * in a cluster: it has joined and holds its lease), else the KEEL_E* code
 * /readyz answers with, and in *why (if not NULL) a static text saying
 * what the node waits for (KEEL_ESTOPPING before it started and once it
 * stops). On the loop thread only: call it from a keel_node_post job
 * (from another thread while the node runs: KEEL_EINVAL, and *why says
 * so). */
KEEL_API int keel_node_readiness(keel_node *node, const char **why);

/* The bound listen port (useful with port 0), or 0 without a listener. */
KEEL_API int keel_node_port(const keel_node *node);
/* The bound HTTP port (useful with port 0), or 0 without HTTP. */
KEEL_API int keel_node_http_port(const keel_node *node);

/* Upper bounds (µs) of the call-latency histogram buckets; the last bucket
 * counts everything slower. Latency runs from submission to the release
 * of the reply (after its commit). */
#define KEEL_LATENCY_BOUNDS_US                                               \
    {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000,     \
     50000, 100000, 500000, 1000000}
#define KEEL_LATENCY_BUCKETS 19 /* 18 bounds + overflow */

typedef struct keel_stats {
    uint64_t resident_actors;
    uint64_t activations;
    uint64_t passivations;
    uint64_t messages;        /* turns run */
    uint64_t handler_errors;
    uint64_t commits;         /* LMDB write transactions committed */
    uint64_t fsyncs;          /* device flushes (fdatasync) of the store:
                               * one per log flush, two per checkpoint */
    uint64_t commit_failures;
    uint64_t batch_turns_max; /* most state-changing turns in one commit */
    uint64_t batch_turns_total;
    uint64_t batch_actors_total; /* actors written, summed over commits */
    uint64_t fence_refusals;
    uint64_t map_size;        /* current LMDB map size in bytes */
    uint64_t connections;     /* open client connections */
    uint64_t frames_in;
    uint64_t frames_bad;
    uint64_t calls_completed;   /* replies released (calls and casts) */
    uint64_t latency_sum_us;
    uint64_t latency_buckets[KEEL_LATENCY_BUCKETS]; /* not cumulative */
    uint64_t forwarded;    /* calls and casts sent on to their unit's owner
                            * (cluster mode) */
    uint64_t held_expired; /* calls held longer than the hold bound while
                            * their unit had no serving owner: EUNAVAIL */
    uint64_t checkpoints;  /* store checkpoints (data file flushed, log
                            * started again) */
    /* Cluster mode (docs/cluster.md); 0 standalone. */
    uint64_t units_acquired;   /* units this node began to serve */
    uint64_t units_handed_off; /* units it handed to another node */
    uint64_t units_dropped;    /* units it lost without a handoff (their
                                * owner changed while it could not hand
                                * them off), not counting expirations */
    uint64_t handoff_bytes_in;  /* record bytes received in handoffs */
    uint64_t handoff_bytes_out; /* record bytes sent in handoffs (a
                                 * handoff that is retried sends again) */
    uint64_t fenced;            /* times it stopped serving every unit
                                 * (lease lapsed, no session) */
    uint64_t session_expirations; /* ZooKeeper sessions that expired */
    uint64_t replies_in_doubt;  /* successful turns answered EINDOUBT: the
                                 * lease lapsed between the turn and its
                                 * reply */
    uint64_t retries_answered;  /* requests whose key the actor had
                                 * recorded: answered with the first
                                 * outcome, not run again */
    /* Requests refused by the access rules (docs/security.md), wire and
     * HTTP together: from a connection with no identity (EUNAUTH, HTTP
     * 401), and from one whose identity may not (EDENIED, HTTP 403). */
    uint64_t auth_refused_unauth;
    uint64_t auth_refused_denied;
    /* 1 when the node runs exposed (beyond loopback, or in a cluster)
     * without credentials because it was told to (insecure). */
    uint64_t insecure;
    /* Failed token attempts cut short (docs/security.md): attempts
     * refused unchecked because their address failed too often lately
     * (counted in auth_refused_unauth too), and wire connections closed
     * after too many failed attempts. */
    uint64_t auth_throttled;
    uint64_t auth_conns_closed;
    /* Replication (docs/cluster.md, "Replication stream"). Primary side:
     * REPL frames and their bytes sent to backups (resends count again),
     * units acknowledged by a backup, drops of a backup from a unit's
     * in-sync set asked of the controller, replies waiting on backups
     * now. Backup side: REPL frames whose writes were committed here,
     * units refused (not this node's to take, out of order, or the
     * store refused them). Reads (the read rule): confirm rounds sent,
     * one per unit with reads waiting in a loop iteration. */
    uint64_t repl_frames_sent;
    uint64_t repl_bytes_sent;
    uint64_t repl_acks;
    uint64_t repl_drop_requests;
    uint64_t repl_waiting;
    uint64_t repl_applied_frames;
    uint64_t repl_refused;
    uint64_t repl_confirms;
    /* Catch-up (docs/cluster.md, "Catch-up"), primary side: snapshots
     * sent to backups out of sync, and their bytes. The controller's
     * in-sync set changes, counted by the node whose controller wrote
     * them: backups added, backups dropped, units failed over. */
    uint64_t repl_catchups;
    uint64_t repl_catchup_bytes;
    uint64_t isr_expansions;
    uint64_t isr_shrinks;
    uint64_t failovers;
    /* Units this node took as their new primary from its own replicated
     * copy, as an in-sync backup, with no records streamed to it
     * (docs/cluster.md, "A move onto an in-sync backup"). */
    uint64_t units_promoted_on_move;
    /* The outbox (keel_turn_send), sender side: messages sent to their
     * receiver (a resend counts again), messages kept as dead letters;
     * receiver side: redelivered messages it had applied already, answered
     * without running the handler again. */
    uint64_t outbox_sent;
    uint64_t outbox_dropped;
    uint64_t outbox_dead;
    /* Backups this node, as a unit's primary, made suspect: they may hold
     * writes it does not (a commit of its own that failed after its
     * writes left, or a restart after a crash), so they are dropped from
     * the in-sync set and caught up (docs/cluster.md, "Suspect
     * backups"). */
    uint64_t repl_suspects;
    /* Following actors (docs/protocol.md, "Following an actor"):
     * subscriptions open on this node now, and change events sent to
     * subscribers (wire and HTTP). */
    uint64_t subscribers;
    uint64_t events_sent;
    /* Reminders (keel_turn_remind) whose handler ran in a committed turn
     * on this node. */
    uint64_t reminders_fired;
    /* Reminder firings this node kept as dead letters of their actor
     * after the handler refused them dead_letter_after times in a row. */
    uint64_t reminders_dead;
    /* Frames that carried outbox messages from this node to other nodes
     * (a batch frame, or a message's own CAST): below the messages sent
     * across when batching works (docs/protocol.md, "OBATCH body"). */
    uint64_t outbox_frames;
    /* Backup side: REPL frames committed in the transaction of an earlier
     * frame that still waited for the writer (one commit for both). */
    uint64_t repl_merged_frames;
    /* Primary side: the largest replication lag over this node's backups
     * (the age of the oldest write one has not acknowledged), in ms; 0
     * when every write sent is acknowledged. A gauge, updated every 20 ms
     * while writes wait. */
    uint64_t repl_lag_ms;
    /* Primary side: times a snapshot part waited for the catch-up rate
     * (catchup_mib_s) to allow it. */
    uint64_t repl_catchup_waits;
    /* Primary side: catch-ups that found the backup already holding the
     * unit's content (a digest check): no records were sent. */
    uint64_t repl_catchup_same;
    /* Backup side: copies of units this node deleted because no map had
     * listed it for them (replica or target) for --replica-dead-ms. */
    uint64_t repl_copies_deleted;
    /* Links to other nodes this node reset because a forwarded call's
     * deadline passed while bytes of its frame were not acknowledged by
     * the other node (held up in the network), so that the call cannot
     * arrive and run there later (docs/cluster.md, "One deadline per
     * call"). */
    uint64_t peer_resets;
    /* The outbox, sender side: actors whose messages this node is
     * delivering (waiting for their receiver, in delivery, or paused for a
     * retry), a gauge; 0 once every outbox of the units served here has
     * drained. Senders of a type this node does not register are not
     * counted: their unit's index is logged instead. */
    uint64_t outbox_senders;
    /* Wire connections: the most bytes of answers one connection has had
     * waiting in the node since it started (beyond what its socket took),
     * a high-water mark. A client that does not read its answers is read
     * no further once 8 MiB wait (or 65536 of its requests are in
     * flight), so this stays at 8 MiB plus one answer, plus the answers
     * of requests still running when it stopped reading. */
    uint64_t conn_unsent_peak;
} keel_stats;

KEEL_API void keel_node_stats(keel_node *node, keel_stats *out);

/* Writes the statistics as "name value\n" lines into buf (the same text
 * `keel stat` prints). Returns the length it needs, like snprintf. */
KEEL_API size_t keel_stats_format(const keel_stats *st, char *buf, size_t len);

/* Introspection of placement (docs/cluster.md, "Introspection"): the text
 * `keel nodes`, `keel shards [--node NODE]`, `keel where TYPE ID` and
 * `keel capabilities` print. argv[0] names the query ("nodes", "shards",
 * "where", "capabilities"), the rest are its arguments (shards: an
 * optional node name; where: TYPE and ID). In standalone mode the answers
 * are the standalone facts (one member owning every unit at shard_epoch
 * 1). On success *text is a malloc'd, NUL-terminated block of lines
 * (*len bytes without the NUL; free() it). Any thread but the loop thread,
 * while the node runs, like keel_call_sync() (on the loop thread:
 * KEEL_EINVAL). Returns 0, KEEL_EINVAL
 * (unknown query, wrong arguments), KEEL_ENOTFOUND (shards: a node that
 * is neither in the map nor a live member; standalone: any name but the
 * node's own), KEEL_ENOTYPE, KEEL_ELIMIT, KEEL_ENOMEM or
 * KEEL_ESTOPPING. */
KEEL_API int keel_node_info(keel_node *node, int argc,
                            const char *const *argv, char **text,
                            size_t *len);

/* Plugins: actor types from a shared object (keeld --load PATH.so[:ARGS]).
 *
 * A plugin declares the plugin ABI it was built against with
 * KEEL_PLUGIN_DECLARE_ABI; (once, at file scope, in one of its sources)
 * and exports
 *     int keel_plugin_init(keel_node *node, const char *args);
 * which registers its types with keel_node_register_type() and returns 0
 * or a KEEL_E* code. args is the text given after the path (keeld: what
 * follows the first ':' of --load), NULL when none was given; it is
 * valid only during the call: copy what is kept.
 *
 * keel refuses a plugin whose ABI major version is not its own, or whose
 * minor version is newer than its own (it may call functions this keel
 * lacks), and a plugin that declares no ABI at all (one built before the
 * declaration existed: its keel_plugin_init took no args). The major
 * version changes when keel_plugin_init or a structure plugins share
 * with keel changes incompatibly; the minor one when functions are added.
 *
 * ABI 1.0: keel_plugin_init(node, args); keel_node_log.
 * ABI 1.1: keel_actor_type.state_version and upgrade (in what were
 * reserved fields: a 1.0 plugin's zeroes mean "not versioned"). */
#define KEEL_PLUGIN_ABI_MAJOR 1
#define KEEL_PLUGIN_ABI_MINOR 1
#define KEEL_PLUGIN_ABI                                                     \
    ((uint32_t)KEEL_PLUGIN_ABI_MAJOR << 16 | (uint32_t)KEEL_PLUGIN_ABI_MINOR)
#define KEEL_PLUGIN_ABI_SYMBOL "keel_plugin_abi"
#define KEEL_PLUGIN_INIT_SYMBOL "keel_plugin_init"
#if defined(__GNUC__)
#define KEEL_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define KEEL_PLUGIN_EXPORT
#endif
#define KEEL_PLUGIN_DECLARE_ABI                                             \
    KEEL_PLUGIN_EXPORT extern const uint32_t keel_plugin_abi;               \
    KEEL_PLUGIN_EXPORT const uint32_t keel_plugin_abi = KEEL_PLUGIN_ABI
typedef int (*keel_plugin_init_fn)(keel_node *node, const char *args);

/* Loads a plugin; args goes to its keel_plugin_init (NULL: none). Before
 * the node runs. Errors: KEEL_EPLUGIN (the object cannot be opened, has
 * no keel_plugin_init, declares no ABI or another one, or its init
 * failed), with the reason in errbuf; KEEL_EINVAL. */
KEEL_API int keel_node_load_plugin_args(keel_node *node, const char *path,
                                        const char *args, char *errbuf,
                                        size_t errlen);
/* keel_node_load_plugin_args with no args. */
KEEL_API int keel_node_load_plugin(keel_node *node, const char *path,
                                   char *errbuf, size_t errlen);

/* ---------------------------------------------------------------- actors */

/* A turn: one message being handled by one actor. Valid only during the
 * callback it is passed to. */
typedef struct keel_turn keel_turn;

typedef struct keel_actor_type {
    const char *name;       /* at most KEEL_MAX_TYPE_LEN bytes */
    const char *capability; /* required node capability; NULL: none */

    /* Handles one message: msg is len bytes, owned by keel and valid
     * until the call returns, and not NUL-terminated (compare it with its
     * length, as memcmp does; strcmp may read past it). Reads the state
     * with keel_turn_state(), may set a new one with keel_turn_set_state()
     * and use named entries; sets the reply with keel_turn_reply().
     * Returns 0, or a KEEL_E* code: then the
     * caller gets that code (with the text given to keel_turn_error(), if
     * any) and every write of this turn is discarded. Any other value (a
     * positive number, an errno value) fails the turn the same way as
     * KEEL_EHANDLER, with a text naming the value unless one was given.
     * An error that keel_err_is_answer() (a refusal: KEEL_EBADMSG,
     * KEEL_ENOTFOUND, KEEL_EHANDLER...) is recorded under the request's
     * key, if it has one, and answers every copy of it; one about the
     * node (KEEL_EUNAVAIL...) lets a retry run again. */
    int (*on_message)(keel_turn *turn, const void *msg, size_t len);

    /* Optional. Runs once when the actor is activated, after its state is
     * loaded and before its first message. Writes made here are part of
     * the first turn. A nonzero return fails the message that caused the
     * activation, and the actor is not kept. */
    int (*on_activate)(keel_turn *turn);

    /* Optional. Runs when the actor's activation ends: when it is
     * passivated (idle, evicted, node stopping; its state is durable
     * then), and also when its activation failed after on_activate
     * succeeded, or a commit of its writes failed: then the state its
     * activation held is dropped, and the next message loads what the
     * store holds. Free here what on_activate set up. Writes are not
     * allowed (they return KEEL_EINVAL). */
    void (*on_passivate)(keel_turn *turn);

    void *data; /* the type's own pointer, see keel_turn_type_data() */

    /* Optional: the version of the state layout this code reads and
     * writes, 0 (the default) for a type that does not version it. The
     * runtime records it with the actor's state. An actor whose state
     * was written by an older version (0 included) is passed, on
     * activation, through upgrade(turn, from_version): after its state
     * is loaded, before on_activate and its first message. upgrade reads
     * the old state and entries and writes the new ones with the usual
     * turn calls; its writes, and the new version, are part of the first
     * turn (if that turn fails, nothing of the upgrade is kept and the
     * next activation upgrades again). A nonzero return fails the
     * message that caused the activation with that code. Without
     * upgrade, such an actor fails KEEL_ESTATEVER; so does one written by
     * a newer version than this one (also when this one is 0: a rollback
     * to the release before the type declared a version). An actor never written is not
     * upgraded: its first write records the version. */
    uint32_t state_version;
    int (*upgrade)(keel_turn *turn, uint32_t from_version);
    void *reserved[2];
} keel_actor_type;

/* Registers a type; the struct is copied, the strings too. Before the node
 * runs: once keel_node_start() or keel_node_run() was called, KEEL_EINVAL.
 * Names beginning with the byte 0x01 are the runtime's own.
 * Errors: KEEL_EINVAL (also a NULL name or on_message, an empty name),
 * KEEL_ELIMIT, KEEL_EEXIST. */
KEEL_API int keel_node_register_type(keel_node *node,
                                     const keel_actor_type *type);

/* The actor's current state. *data is valid until the turn ends or the
 * state is set, and is not NUL-terminated; a fresh actor has length 0. */
KEEL_API void keel_turn_state(keel_turn *turn, const void **data, size_t *len);
/* Replaces the state (copied). Takes effect only if the turn succeeds.
 * KEEL_ETOOBIG over KEEL_MAX_VALUE_LEN bytes; KEEL_EINVAL when data is
 * NULL with len > 0, or from on_passivate. */
KEEL_API int keel_turn_set_state(keel_turn *turn, const void *data, size_t len);
/* Sets the reply (copied); a later call replaces it. KEEL_EINVAL when
 * data is NULL with len > 0. A reply is not checked against the node's
 * max_frame here: in-process callers and HTTP get it whole, but a wire
 * caller gets KEEL_ETOOBIG for a reply its frame cannot hold, although
 * the turn's writes were committed (KEEL_EALREADY when the request had a
 * key: it ran, as every retry of it is told; docs/protocol.md, "Errors
 * and the connection"). */
KEEL_API int keel_turn_reply(keel_turn *turn, const void *data, size_t len);
/* printf-style reply. */
KEEL_API int keel_turn_replyf(keel_turn *turn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Text that goes with an error return from on_message (or on_activate,
 * upgrade); a later call replaces it, and a turn that succeeds drops it.
 * At most 255 bytes are kept: a longer text is cut. */
KEEL_API void keel_turn_error(keel_turn *turn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Named entries: the actor's own key-value storage. Reads see this turn's
 * writes and those of earlier turns (committed or not). *val is valid until
 * the turn ends. get: KEEL_ENOTFOUND when absent. Keys are at most
 * KEEL_MAX_ENTRY_KEY_LEN bytes (KEEL_ELIMIT), not empty and not beginning
 * with a NUL byte, which begins the runtime's own entries (KEEL_EINVAL);
 * a value is at most KEEL_MAX_VALUE_LEN bytes (KEEL_ETOOBIG). A NULL key,
 * a NULL val with vlen > 0 (put), NULL val or vlen pointers (get), or a
 * write from on_passivate: KEEL_EINVAL. */
KEEL_API int keel_turn_get(keel_turn *turn, const void *key, size_t klen,
                           const void **val, size_t *vlen);
KEEL_API int keel_turn_put(keel_turn *turn, const void *key, size_t klen,
                           const void *val, size_t vlen);
KEEL_API int keel_turn_del(keel_turn *turn, const void *key, size_t klen);
/* Calls fn for every entry in key order; fn returns nonzero to stop.
 * Returns 0 when the walk ended (every entry seen, or fn stopped it), or
 * the error of the store that ended it. */
typedef int (*keel_entry_fn)(const void *key, size_t klen, const void *val,
                             size_t vlen, void *data);
KEEL_API int keel_turn_entries(keel_turn *turn, keel_entry_fn fn, void *data);

/* Who is handling the message. Valid during the turn. The type name is
 * NUL-terminated; the id is idlen bytes of any value, not NUL-terminated
 * (print it with "%.*s"). */
KEEL_API const char *keel_turn_type_name(keel_turn *turn);
KEEL_API void keel_turn_id(keel_turn *turn, const void **id, size_t *len);
KEEL_API void *keel_turn_type_data(keel_turn *turn);
/* A pointer slot kept with the activation (not persisted): set it in
 * on_activate, free it in on_passivate. keel does not undo what a failed
 * turn did to the memory it points to: change that memory only once the
 * turn can no longer fail (after the last keel call that may). */
KEEL_API void **keel_turn_actor_data(keel_turn *turn);
KEEL_API keel_node *keel_turn_node(keel_turn *turn);

/* The durable outbox: queues msg for actor (type, id) as part of this
 * turn. The message is stored with the turn's writes, in the same commit:
 * if the turn fails, nothing is stored and nothing is sent; once the turn
 * is answered, the message will be delivered, even if this node crashes
 * right after, and across moves and failovers of the sender's unit.
 *
 * Delivery runs after the turn's reply, on the node that serves the
 * sender: messages of one sender go one at a time, in the order they
 * were queued (so in order per sender and receiver), each sent again with
 * backoff until the receiver's turn that handles it has committed. The
 * receiver records, in that same turn, the sender's sequence number, and
 * answers a message it applied already without running it again: its
 * handler sees each message exactly once. The receiver is activated if
 * need be; its reply is dropped. A message the receiver refuses (its
 * handler returns an error other than "try later" ones such as
 * KEEL_EUNAVAIL) is sent again after a pause; refused with the same error
 * dead_letter_after times in a row (node option, default 3), or, on a
 * standalone node, at once when its type is no longer registered, it is
 * kept as a dead letter of the sender, logged, and the next message goes.
 * In a cluster a receiver's type missing on a node (the one that delivers
 * or the one that owns the receiver) is taken for a deploy under way: the
 * message waits for it. Operators list, retry
 * and drop dead letters with keel dead-letters.
 * docs/design.md, "The outbox".
 *
 * Arguments as keel_call takes them; copied. Not from on_passivate.
 * Errors: KEEL_EINVAL, KEEL_ELIMIT, KEEL_ENOTYPE (not registered on this
 * node), KEEL_ETOOBIG (over the node's max_frame: every node of a
 * cluster must take the same max frame size), KEEL_ENOMEM. */
KEEL_API int keel_turn_send(keel_turn *turn, const char *type, const void *id,
                            size_t idlen, const void *msg, size_t len);

/* Durable reminders. keel_turn_remind sets this actor's reminder `name`:
 * at or after due_ms milliseconds from now, the runtime delivers msg to
 * the actor as a message (activating it if need be), and then, when
 * period_ms is not 0, again period_ms after each firing; period_ms 0 makes
 * a one-shot, removed as it fires. Setting a name again replaces the
 * reminder (due time, period and message); keel_turn_unremind removes it
 * (0 when there is none).
 *
 * Both are writes of the turn: committed with it, and nothing of them is
 * kept if the turn fails. Reminders are stored with the actor's records,
 * so they survive restarts and move and fail over with its unit. Times
 * are the wall clock of the node that serves the unit (keep the nodes'
 * clocks in step). A firing runs in a turn of the actor that also
 * reschedules it (next due = the firing's time + period_ms) or removes
 * it: a reminder that fell due while its unit was not served fires once
 * when it is served again, not once per missed period. If the handler
 * fails, the turn changes nothing and the reminder fires again about a
 * second later; refused with the same error dead_letter_after times in
 * a row (node option), the firing is kept as a dead letter of the actor
 * (keel dead-letters) and the reminder goes on as if it had fired. A
 * firing is delivered at least once: a crash after the
 * handler's turn committed does not repeat it, one before does.
 *
 * The handler tells a firing from a call with keel_turn_reminder: it
 * returns the reminder's name (NUL-terminated, valid during the turn;
 * *name_len set when not NULL) in a firing's turn, NULL in any other.
 *
 * Limits: name 1..KEEL_MAX_REMINDER_NAME_LEN bytes (any byte values), msg
 * at most KEEL_MAX_REMINDER_MSG_LEN bytes, due_ms and period_ms under
 * 2^40. Not from on_passivate. docs/design.md, "Reminders".
 * Errors: KEEL_EINVAL (no name, a due time or period of 2^40 or more: a
 * negative one wraps past that), KEEL_ELIMIT (the name's length),
 * KEEL_ETOOBIG (the message's), KEEL_ENOMEM. */
#define KEEL_MAX_REMINDER_NAME_LEN 128
#define KEEL_MAX_REMINDER_MSG_LEN 65536
KEEL_API int keel_turn_remind(keel_turn *turn, const void *name,
                              size_t name_len, uint64_t due_ms,
                              uint64_t period_ms, const void *msg,
                              size_t msg_len);
KEEL_API int keel_turn_unremind(keel_turn *turn, const void *name,
                                size_t name_len);
KEEL_API const char *keel_turn_reminder(keel_turn *turn, size_t *name_len);

/* An event payload for the actor's followers (docs/protocol.md,
 * "Following an actor"): when this turn commits and its reply is
 * released as a success, subscribers that take payloads get payload
 * (copied) with the actor's version after the turn, instead of the
 * state; those that do not (older clients) get the state as before. A
 * turn that does not change the state still sends its event, with the
 * version the state stays at. A later call in the same turn replaces the
 * payload (the last one goes out); a failed turn sends nothing. The
 * payload is not stored: a follower that was away is sent the current
 * state, never the events it missed. len may be 0. Not from
 * on_passivate.
 * Errors (the turn's payload, if any, is left as it was): KEEL_EINVAL,
 * KEEL_ETOOBIG when it cannot fit in an event frame under the node's
 * max_frame (16 + 9 bytes of headers plus len). */
KEEL_API int keel_turn_event(keel_turn *turn, const void *payload,
                             size_t len);

/* ----------------------------------------------------------------- calls */

/* Completion of a call or cast, on the loop thread. status is 0 or a
 * KEEL_E* code; on error, reply holds a human-readable message. The reply
 * is owned by keel and valid until the callback returns. Called exactly
 * once, and only after every write the message caused is durable. */
typedef void (*keel_call_cb)(int status, const void *reply, size_t len,
                             void *data);

/* Sends msg to actor (type, id); loop thread only (from another thread
 * while the node runs: KEEL_EINVAL). cb may be NULL. A cast is
 * a call whose reply body is dropped: cb still says when its effect is
 * durable.
 *
 * Made from inside a handler, keel_call and keel_cast (and their keyed
 * forms) send at once: the message leaves even if the turn that sent it
 * then fails and its writes are discarded, and nothing sends it again if
 * this node crashes before it arrives. A handler that must send only
 * what its turn commits (a debit here, a credit there) uses
 * keel_turn_send. Returns 0 or an error raised before queueing (then cb is not
 * called): KEEL_EINVAL, KEEL_ELIMIT, KEEL_ENOTYPE, KEEL_ETOOBIG,
 * KEEL_ESTOPPING, KEEL_ENOMEM. */
KEEL_API int keel_call(keel_node *node, const char *type, const void *id,
                       size_t idlen, const void *msg, size_t len,
                       keel_call_cb cb, void *data);
KEEL_API int keel_cast(keel_node *node, const char *type, const void *id,
                       size_t idlen, const void *msg, size_t len,
                       keel_call_cb cb, void *data);

/* keel_call / keel_cast with a request key of KEEL_REQUEST_KEY_LEN bytes
 * (copied): if the actor recorded the key (within the node's
 * request_key_retention_ms of the write it came with), the request is
 * answered with the recorded outcome instead of running again. Use a
 * fresh random key per request, and the same key only to retry it
 * (docs/protocol.md, "Request keys"). */
#define KEEL_REQUEST_KEY_LEN 16
KEEL_API int keel_call_keyed(keel_node *node, const uint8_t *key,
                             const char *type, const void *id, size_t idlen,
                             const void *msg, size_t len, keel_call_cb cb,
                             void *data);
KEEL_API int keel_cast_keyed(keel_node *node, const uint8_t *key,
                             const char *type, const void *id, size_t idlen,
                             const void *msg, size_t len, keel_call_cb cb,
                             void *data);

/* keel_call / keel_cast (key NULL) or their keyed forms with a deadline,
 * timeout_ms from now (0: none); loop thread only, as keel_call. A call
 * whose turn has not started by the deadline never runs: cb gets
 * KEEL_EDEADLINE. In a cluster the deadline also ends a hold (a unit
 * without a serving owner; the hold bound still applies when shorter):
 * KEEL_EUNAVAIL, the call did not run. It ends a call forwarded to the
 * node that owns its actor too: KEEL_EDEADLINE if its frame had not left,
 * else KEEL_ETIMEDOUT (it may have run; there a turn may start up to the
 * frame's transit time past the deadline, docs/cluster.md, "One deadline
 * per call"). A turn that started in time runs to its end and cb gets
 * its outcome then: the loop thread runs one turn at a time, so nothing
 * answers a call while a handler holds the loop (keel_call_sync_timed,
 * from another thread, returns at its deadline regardless). After
 * KEEL_ETIMEDOUT, retry a write with the same key: it runs at most once
 * (a copy that reaches its actor too late does not run, and is answered
 * with the outcome its key recorded, KEEL_EDEADLINE when there is none;
 * one held up before it, in a cluster, is answered KEEL_EUNAVAIL or
 * KEEL_EDEADLINE, and only of itself: an earlier copy may have run, so
 * send it again with time to spare to learn the outcome). In a cluster
 * every call has a deadline no later than the hold bound from where it
 * entered (docs/cluster.md, "One deadline per call"): a longer
 * timeout_ms is cut to it. Returns what keel_call returns. */
KEEL_API int keel_call_timed(keel_node *node, const uint8_t *key,
                             uint32_t timeout_ms, const char *type,
                             const void *id, size_t idlen, const void *msg,
                             size_t len, keel_call_cb cb, void *data);
KEEL_API int keel_cast_timed(keel_node *node, const uint8_t *key,
                             uint32_t timeout_ms, const char *type,
                             const void *id, size_t idlen, const void *msg,
                             size_t len, keel_call_cb cb, void *data);

/* Blocking call from any thread but the loop thread (there it returns
 * KEEL_EINVAL at once: it would wait for itself). reply and reply_len may
 * be NULL when the reply is not wanted. On return *reply is a malloc'd
 * buffer (free it with keel_free) holding the reply, or, when the result
 * is negative, a text saying what was wrong (the actor's keel_turn_error
 * text, or keel's for a call refused before it ran, e.g. an unknown type
 * named); NULL only when there was no memory for it. A NUL byte follows
 * the *reply_len bytes, but a reply may hold NUL bytes of its own: use
 * *reply_len. Errors: those of keel_call, and any code the actor's turn
 * failed with. A call made before the node runs waits until it does (or
 * is answered KEEL_ESTOPPING when the node is destroyed without running):
 * made on the thread that is to start it, it waits for ever. */
KEEL_API int keel_call_sync(keel_node *node, const char *type, const void *id,
                            size_t idlen, const void *msg, size_t len,
                            void **reply, size_t *reply_len);
/* keel_call_sync with a request key (KEEL_REQUEST_KEY_LEN bytes, copied),
 * as keel_call_keyed: after an outcome keel_err_is_answer() says is not
 * the request's own (KEEL_EINDOUBT, KEEL_EUNAVAIL, ...), call again with
 * the same key, and the request runs at most once. */
KEEL_API int keel_call_sync_keyed(keel_node *node, const uint8_t *key,
                                  const char *type, const void *id,
                                  size_t idlen, const void *msg, size_t len,
                                  void **reply, size_t *reply_len);
/* keel_call_sync (key NULL) or keel_call_sync_keyed with a deadline,
 * timeout_ms from now (0: none). The call returns by then whatever the
 * node does (a handler that never returns, a unit unavailable):
 * KEEL_ETIMEDOUT when no answer came, and the call may have run, or may
 * still finish, as its turn may have started before the deadline. No
 * turn of it starts after the deadline: one that had not started is
 * answered KEEL_EDEADLINE (if its caller still waits) and never runs;
 * in a cluster, one held because its unit is unavailable is answered
 * KEEL_EUNAVAIL at the deadline (its caller sees that or KEEL_ETIMEDOUT,
 * whichever clock runs out first) and never runs either. In
 * a cluster, a call forwarded to the node that owns its actor carries
 * what is left of the deadline, which that node counts from when the
 * frame reached it: there the turn may start up to the frame's transit
 * time past the deadline (docs/cluster.md, "One deadline per call"). So
 * after KEEL_ETIMEDOUT, retry a write with the same key: it runs at most
 * once. The deadline also bounds how long the call is held; in a
 * cluster every call's deadline is at most the hold bound from where it
 * entered, so a longer timeout_ms is cut to it there. */
KEEL_API int keel_call_sync_timed(keel_node *node, const uint8_t *key,
                                  uint32_t timeout_ms, const char *type,
                                  const void *id, size_t idlen,
                                  const void *msg, size_t len, void **reply,
                                  size_t *reply_len);
KEEL_API void keel_free(void *p);

/* Shard of an actor: XXH3_64(len(type) u8 || type || id) mod shard_count. */
KEEL_API uint32_t keel_shard_of(const char *type, const void *id, size_t idlen,
                                uint32_t shard_count);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_H */
