/* The ZooKeeper operations the coordinator uses, behind a versioned
 * vtable: the real client (zk_real.c, libzookeeper-st driven by libev on the
 * loop thread) and a deterministic in-memory fake for unit tests
 * (zk_fake.c) implement it. Foreign Z* codes never cross this boundary:
 * every rc below is 0 or a KEEL_E* code.
 *
 * Callback contract (both implementations):
 *  - A submit function that returns 0 calls its callback exactly once,
 *    later, on the loop thread, never from inside the submit call; one
 *    that returns an error never calls it.
 *  - After close() or destroy() no callback of that session is called
 *    again: neither completions nor watches nor session events.
 *  - Within one session, completions and watch events arrive in the order
 *    the server produced them (ZooKeeper's ordering guarantee). Across
 *    sessions there is no such order: a session may hear of a change made
 *    through another session before the answer to a request it sent
 *    before that change was made, and that answer may then already
 *    reflect the change (an exists answering KEEL_ENOTFOUND).
 *  - Watches are one-shot. They survive a disconnection (the client
 *    re-registers them) and die with the session: after KEEL_ZK_EXPIRED no
 *    watch of that session fires.
 *
 * Result codes: KEEL_ENOTFOUND (no node), KEEL_EEXIST (node exists, or a
 * node to delete still has children), KEEL_EBADVERSION (version check
 * failed), KEEL_ECONNLOSS (connection lost before the answer: the
 * operation may or may not have been applied), KEEL_ESESSION (session
 * expired or closed; nothing was applied), KEEL_EINVAL (bad path or
 * argument, ephemeral parent), KEEL_ETOOBIG (data over the server's
 * limit), KEEL_EDENIED (the node's ACL does not give this session's
 * identity the permission), KEEL_ENOMEM, KEEL_EPROTO (anything else the
 * server said).
 *
 * ACLs: a real client given credentials (keel_zk_real_set_auth) creates
 * every znode so that only its own identity may change it and everyone
 * may read it; without credentials znodes are open to all. The fake
 * ignores ACLs and credentials altogether. */
#ifndef KEEL_COORDINATOR_ZK_H
#define KEEL_COORDINATOR_ZK_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

struct ev_loop;

typedef struct keel_zk keel_zk;

/* Passing this as a version skips the version check. */
#define KEEL_ZK_ANY_VERSION (-1)
/* Longest path the coordinator builds (ZooKeeper allows more). */
#define KEEL_ZK_PATH_MAX 512
/* Most bytes one znode write may carry: ZooKeeper refuses a request over
 * its jute.maxbuffer (1 MiB less a byte by default), headers included,
 * and drops the connection that sent it; writes over this are refused
 * here first (KEEL_ETOOBIG). */
#define KEEL_ZK_MAX_DATA 1000000

enum keel_zk_create_flags {
    KEEL_ZK_EPHEMERAL = 1,  /* deleted when the creating session ends */
    KEEL_ZK_SEQUENTIAL = 2, /* the server appends a 10-digit counter */
    /* A parent shared with clients of other identities (/keel, under
     * which every cluster makes its root): with credentials, everyone may
     * also create children in it. No effect without credentials. */
    KEEL_ZK_SHARED = 4
};

enum keel_zk_session_event {
    KEEL_ZK_CONNECTED = 1,    /* session established or re-established */
    KEEL_ZK_DISCONNECTED = 2, /* connection lost; the session may live on */
    KEEL_ZK_EXPIRED = 3       /* the session is gone, with its ephemerals
                               * and watches; connect() starts a new one */
};

enum keel_zk_watch_event {
    KEEL_ZK_NODE_CREATED = 1,
    KEEL_ZK_NODE_DELETED = 2,
    KEEL_ZK_NODE_CHANGED = 3,
    KEEL_ZK_CHILDREN_CHANGED = 4
};

typedef struct keel_zk_stat {
    int64_t czxid;           /* zxid of the creation */
    int64_t mzxid;           /* zxid of the last data change */
    int32_t version;         /* data version */
    int32_t cversion;        /* children version */
    int64_t ephemeral_owner; /* owning session id, 0 for persistent nodes */
    int32_t data_length;
    int32_t num_children;
} keel_zk_stat;

enum keel_zk_op_type {
    KEEL_ZK_OP_CREATE = 1,
    KEEL_ZK_OP_DELETE = 2,
    KEEL_ZK_OP_SET = 3,
    KEEL_ZK_OP_CHECK = 4 /* fails the whole multi unless path's version
                          * matches */
};

/* One operation of a multi. Buffers are copied before multi() returns. */
typedef struct keel_zk_op {
    int type;         /* enum keel_zk_op_type */
    const char *path;
    const void *data; /* create, set */
    size_t len;
    int32_t version;  /* delete, set, check */
    int flags;        /* create: enum keel_zk_create_flags */
} keel_zk_op;

typedef struct keel_zk_op_result {
    const char *path;   /* create: the path created (sequential suffix
                         * included); valid during the callback */
    keel_zk_stat stat;  /* set: the node's new stat */
} keel_zk_op_result;

/* Strings and buffers passed to callbacks belong to the implementation and
 * are valid only during the callback. */
typedef void (*keel_zk_session_cb)(keel_zk *zk, int event, void *arg);
typedef void (*keel_zk_watch_cb)(keel_zk *zk, int event, const char *path,
                                 void *arg);
typedef void (*keel_zk_void_cb)(keel_zk *zk, int rc, void *arg);
typedef void (*keel_zk_create_cb)(keel_zk *zk, int rc, const char *path,
                                  const keel_zk_stat *st, void *arg);
typedef void (*keel_zk_stat_cb)(keel_zk *zk, int rc, const keel_zk_stat *st,
                                void *arg);
typedef void (*keel_zk_data_cb)(keel_zk *zk, int rc, const void *data,
                                size_t len, const keel_zk_stat *st,
                                void *arg);
typedef void (*keel_zk_children_cb)(keel_zk *zk, int rc, size_t count,
                                    const char *const *names, void *arg);
/* rc is 0 when every op applied (results has one entry per op), else the
 * code of the op at index `failed` that made the whole multi fail; then
 * nothing was applied and results is NULL. For KEEL_ECONNLOSS and
 * KEEL_ESESSION `failed` equals the op count. */
typedef void (*keel_zk_multi_cb)(keel_zk *zk, int rc, size_t failed,
                                 const keel_zk_op_result *results, size_t n,
                                 void *arg);

struct keel_zk_ops {
    int version; /* 2: sync added; 3: drop_server added */
    /* Starts a new session (ending the current one first, if any) with the
     * requested timeout in ms; the server may negotiate another one. Events
     * go to cb. Returns 0, KEEL_EINVAL, KEEL_ENOMEM or KEEL_EADDR (hosts
     * cannot be resolved). */
    int (*connect)(keel_zk *zk, int session_timeout_ms, keel_zk_session_cb cb,
                   void *arg);
    /* Ends the session now (its ephemeral nodes go at once) and drops every
     * pending callback and watch. May be called from a callback. */
    void (*close)(keel_zk *zk);
    /* close(), then frees the handle. May be called from a callback. */
    void (*destroy)(keel_zk *zk);

    int (*create)(keel_zk *zk, const char *path, const void *data, size_t len,
                  int flags, keel_zk_create_cb cb, void *arg);
    int (*remove)(keel_zk *zk, const char *path, int32_t version,
                  keel_zk_void_cb cb, void *arg);
    /* With watch != NULL, a data watch is left when the node exists. */
    int (*get)(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
               void *watch_arg, keel_zk_data_cb cb, void *arg);
    int (*set)(keel_zk *zk, const char *path, const void *data, size_t len,
               int32_t version, keel_zk_stat_cb cb, void *arg);
    /* With watch != NULL a watch is left whether or not the node exists
     * (it then fires on creation). cb gets KEEL_ENOTFOUND and a NULL stat
     * for a missing node. */
    int (*exists)(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
                  void *watch_arg, keel_zk_stat_cb cb, void *arg);
    /* With watch != NULL, a child watch is left when the node exists.
     * Names come in no particular order. */
    int (*children)(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
                    void *watch_arg, keel_zk_children_cb cb, void *arg);
    /* All or nothing, in one transaction. */
    int (*multi)(keel_zk *zk, const keel_zk_op *ops, size_t n,
                 keel_zk_multi_cb cb, void *arg);

    /* Current session id (0 if none) and negotiated timeout in ms (0
     * before the first connection). */
    int64_t (*session_id)(keel_zk *zk);
    int (*session_timeout)(keel_zk *zk);

    /* ZooKeeper's sync: answered once the server the client talks to has
     * heard from the ZooKeeper leader after the request reached it. A
     * follower forwards it to the leader, which checks the session and
     * replies behind every transaction it proposed before, and the
     * follower answers only then; a server cut off from the leader never
     * answers it. So an answer proves that the leader held the session
     * alive at a moment after the request left, which a read answered by
     * a follower does not. rc 0, KEEL_ECONNLOSS or KEEL_ESESSION. */
    int (*sync)(keel_zk *zk, const char *path, keel_zk_void_cb cb,
                void *arg);

    /* Gives up the server the client is connected to, when the connect
     * string names another, within the session: the connection is lost
     * (KEEL_ZK_SESSION_DISCONNECTED, requests in flight fail with
     * KEEL_ECONNLOSS) and the client connects to the next server, as
     * after any lost connection. For a server that stopped answering,
     * which the library gives up by itself only after 2/3 of the session
     * timeout. 0 when dropped; KEEL_ENOTFOUND when the connect string
     * names one server, KEEL_ECONNLOSS when not connected. */
    int (*drop_server)(keel_zk *zk);
};

struct keel_zk {
    void *data; /* free for the owner */
    const struct keel_zk_ops *ops;
};

/* The real client: connects to `hosts` ("host:port,host:port", copied)
 * when connect() is called, and is driven by `loop`, which must be run by
 * the thread that makes every other call. Returns 0, KEEL_EINVAL or
 * KEEL_ENOMEM. */
int keel_zk_real_create(struct ev_loop *loop, const char *hosts,
                        keel_zk **out);
/* Credentials of a real client (zk from keel_zk_real_create), before its
 * first connect(): "user:password" (copied; the copy is wiped when the
 * client is destroyed). Every session of the client then authenticates
 * with ZooKeeper's digest scheme as soon as it is made (a new session
 * after an expiry too; the library sends the credentials again itself
 * when it reconnects within a session), and every znode it creates gets
 * the ACL [auth: all rights, world: read] (KEEL_ZK_SHARED: world read and
 * create). ZooKeeper's digest scheme accepts any credentials at
 * authentication: wrong ones show up as KEEL_EDENIED on znodes whose ACL
 * names another identity. Returns 0, KEEL_EINVAL (no ':' or an empty
 * user, or already connected) or KEEL_ENOMEM. */
int keel_zk_real_set_auth(keel_zk *zk, const char *user_password);

/* Short inline forms: keel_zk_get(zk, ...) for zk->ops->get(zk, ...). */
static inline int keel_zk_connect(keel_zk *zk, int timeout_ms,
                                  keel_zk_session_cb cb, void *arg)
{
    return zk->ops->connect(zk, timeout_ms, cb, arg);
}
static inline void keel_zk_close(keel_zk *zk)
{
    zk->ops->close(zk);
}
static inline void keel_zk_destroy(keel_zk *zk)
{
    if (zk != NULL)
        zk->ops->destroy(zk);
}
static inline int keel_zk_create(keel_zk *zk, const char *path,
                                 const void *data, size_t len, int flags,
                                 keel_zk_create_cb cb, void *arg)
{
    return zk->ops->create(zk, path, data, len, flags, cb, arg);
}
static inline int keel_zk_remove(keel_zk *zk, const char *path,
                                 int32_t version, keel_zk_void_cb cb,
                                 void *arg)
{
    return zk->ops->remove(zk, path, version, cb, arg);
}
static inline int keel_zk_get(keel_zk *zk, const char *path,
                              keel_zk_watch_cb watch, void *watch_arg,
                              keel_zk_data_cb cb, void *arg)
{
    return zk->ops->get(zk, path, watch, watch_arg, cb, arg);
}
static inline int keel_zk_set(keel_zk *zk, const char *path, const void *data,
                              size_t len, int32_t version, keel_zk_stat_cb cb,
                              void *arg)
{
    return zk->ops->set(zk, path, data, len, version, cb, arg);
}
static inline int keel_zk_exists(keel_zk *zk, const char *path,
                                 keel_zk_watch_cb watch, void *watch_arg,
                                 keel_zk_stat_cb cb, void *arg)
{
    return zk->ops->exists(zk, path, watch, watch_arg, cb, arg);
}
static inline int keel_zk_children(keel_zk *zk, const char *path,
                                   keel_zk_watch_cb watch, void *watch_arg,
                                   keel_zk_children_cb cb, void *arg)
{
    return zk->ops->children(zk, path, watch, watch_arg, cb, arg);
}
static inline int keel_zk_multi(keel_zk *zk, const keel_zk_op *ops, size_t n,
                                keel_zk_multi_cb cb, void *arg)
{
    return zk->ops->multi(zk, ops, n, cb, arg);
}
static inline int keel_zk_sync(keel_zk *zk, const char *path,
                               keel_zk_void_cb cb, void *arg)
{
    return zk->ops->sync(zk, path, cb, arg);
}
static inline int keel_zk_drop_server(keel_zk *zk)
{
    return zk->ops->version >= 3 ? zk->ops->drop_server(zk) : KEEL_ENOTFOUND;
}
static inline int64_t keel_zk_session_id(keel_zk *zk)
{
    return zk->ops->session_id(zk);
}
static inline int keel_zk_session_timeout(keel_zk *zk)
{
    return zk->ops->session_timeout(zk);
}

/* Names of events, for logs. */
const char *keel_zk_session_event_name(int event);
const char *keel_zk_watch_event_name(int event);

#endif
