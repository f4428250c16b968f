/* The real ZooKeeper client behind the vtable of zk.h: libzookeeper-st,
 * driven from the loop thread. After every entry into the library,
 * zookeeper_interest() says which fd to watch (it changes on every
 * reconnect and is -1 while the client backs off) and when to come back
 * (pings, connect and receive timeouts); an ev_io and an ev_timer are
 * re-armed from that, and their callbacks call zookeeper_process().
 *
 * Each connect() makes a session record that owns one zhandle_t. Ending a
 * session "retires" the record: from then on nothing of it reaches the
 * user, and the zhandle_t is closed as soon as control has left the
 * library (zookeeper_close() must not run inside one of its own
 * callbacks). Completion contexts are freed by their completions, which
 * the library calls exactly once, with ZCLOSING at the latest. Watches are
 * kept in our own registry, not as per-watch contexts inside the library,
 * because the library drops its watchers without calling them when a
 * handle closes.
 *
 * With credentials (keel_zk_real_set_auth) every session adds them with
 * zoo_add_auth() right after zookeeper_init2(): the library keeps them
 * and sends them again, ahead of any queued request, each time it
 * (re)connects within that session; a new session after an expiry is a
 * new handle, which gets them here again. */
#include <ev.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <zookeeper/zookeeper.h>

#include "common/log.h"
#include "coordinator/zk.h"
#include "keel.h"

enum { WATCH_DATA = 1, WATCH_CHILD = 2 };

typedef struct zk_real zk_real;

typedef struct zk_sess {
    struct zk_sess *next; /* in the graveyard, once retired */
    zk_real *z;
    zhandle_t *zh;
    int retired;   /* nothing of this session reaches the user any more */
    int connected; /* the last event we reported was KEEL_ZK_CONNECTED */
    int dead;      /* expired (or authentication failed): unusable */
} zk_sess;

typedef struct zk_watch {
    struct zk_watch *next;
    int kind;
    keel_zk_watch_cb cb;
    void *arg;
    char path[];
} zk_watch;

typedef struct zk_req {
    zk_sess *sess;
    union {
        keel_zk_create_cb create;
        keel_zk_void_cb v;
        keel_zk_data_cb data;
        keel_zk_stat_cb stat;
        keel_zk_children_cb children;
        keel_zk_multi_cb multi;
    } cb;
    void *arg;
    keel_zk_watch_cb watch; /* get/exists/children: registered on success */
    void *watch_arg;
    char *path;
    /* multi: the library fills zres, stats and pathbufs on completion */
    size_t n;
    zoo_op_t *zops;
    zoo_op_result_t *zres;
    struct Stat *stats;
    char *pathbufs; /* n * KEEL_ZK_PATH_MAX */
} zk_req;

struct zk_real {
    keel_zk base;
    struct ev_loop *loop;
    char *hosts;
    zk_sess *cur;       /* the session calls go to, or NULL */
    zk_sess *graveyard; /* retired sessions whose handles await closing */
    zk_watch *watches;  /* registry of cur's watches */
    ev_io io;
    ev_timer timer;
    int io_fd, io_events;
    keel_zk_session_cb session_cb;
    void *session_arg;
    int64_t session_id;
    int timeout_ms;
    int depth;           /* >0 while inside the library */
    /* The server drop_server left ("host:port"), and how many more
     * connection attempts to it are cut at once: the library picks the
     * next server at random, the one just left included. */
    char avoid[128];
    int avoid_left; /* set to DROP_CUTS */
    int destroy_pending; /* destroy() ran inside the library */
    /* Digest credentials "user:password", or NULL: owned, wiped before
     * they are freed. With them, znodes are created with these ACLs. */
    char *auth;
    size_t auth_len;
    struct ACL acl_own[2], acl_shared[2];
    struct ACL_vector own, shared;
};

static int settle(zk_real *z);

/* ------------------------------------------------------------ errors */

static int zk_err(int zrc)
{
    if (zrc == ZOK)
        return 0;
    if (zrc == ZNONODE)
        return KEEL_ENOTFOUND;
    if (zrc == ZNODEEXISTS || zrc == ZNOTEMPTY)
        return KEEL_EEXIST;
    if (zrc == ZBADVERSION)
        return KEEL_EBADVERSION;
    if (zrc == ZNOAUTH)
        return KEEL_EDENIED;
    if (zrc == ZCONNECTIONLOSS || zrc == ZOPERATIONTIMEOUT)
        return KEEL_ECONNLOSS;
    if (zrc == ZSESSIONEXPIRED || zrc == ZINVALIDSTATE ||
        zrc == ZSESSIONMOVED || zrc == ZCLOSING || zrc == ZAUTHFAILED)
        return KEEL_ESESSION;
    if (zrc == ZBADARGUMENTS || zrc == ZNOCHILDRENFOREPHEMERALS ||
        zrc == ZINVALIDACL)
        return KEEL_EINVAL;
    if (zrc == ZMARSHALLINGERROR)
        return KEEL_ENOMEM; /* the library's word for a failed allocation */
    return KEEL_EPROTO;
}

static void stat_from_z(keel_zk_stat *out, const struct Stat *st)
{
    memset(out, 0, sizeof *out);
    if (st == NULL)
        return;
    out->czxid = st->czxid;
    out->mzxid = st->mzxid;
    out->version = st->version;
    out->cversion = st->cversion;
    out->ephemeral_owner = st->ephemeralOwner;
    out->data_length = st->dataLength;
    out->num_children = st->numChildren;
}

static int zk_mode(int flags)
{
    return ((flags & KEEL_ZK_EPHEMERAL) ? ZOO_EPHEMERAL : 0) |
           ((flags & KEEL_ZK_SEQUENTIAL) ? ZOO_SEQUENCE : 0);
}

static void zk_log(const char *msg)
{
    keel_debug("zookeeper client: %s", msg);
}

/* The ACL of a znode created with `flags`: open without credentials. */
static struct ACL_vector *acl_for(zk_real *z, int flags)
{
    if (z->auth == NULL)
        return &ZOO_OPEN_ACL_UNSAFE;
    return (flags & KEEL_ZK_SHARED) ? &z->shared : &z->own;
}

/* The digest provider accepts any credentials, so this reports only
 * transport trouble; a refusal by another provider ends the session
 * (ZOO_AUTH_FAILED_STATE), which on_session() reports as expiry. No
 * context: the answer may come after the session was retired. */
static void auth_done(int rc, const void *data)
{
    (void)data;
    if (rc != ZOK && rc != ZCLOSING)
        keel_debug("zookeeper: authentication answered %s", zerror(rc));
}

/* ------------------------------------------------------------ watches */

static void watches_clear(zk_real *z)
{
    while (z->watches != NULL) {
        zk_watch *w = z->watches;
        z->watches = w->next;
        free(w);
    }
}

/* Fires (once) every registered watch that `event` on `path` triggers. A
 * deletion triggers data and child watches alike, as on the server. */
static void watches_fire(zk_real *z, zk_sess *s, int event, const char *path)
{
    zk_watch **pp = &z->watches, *fire = NULL, **tail = &fire;
    int kinds = event == KEEL_ZK_CHILDREN_CHANGED ? WATCH_CHILD
                : event == KEEL_ZK_NODE_DELETED ? WATCH_DATA | WATCH_CHILD
                                                 : WATCH_DATA;

    /* Detach first: a callback may register new watches for the path. */
    while (*pp != NULL) {
        zk_watch *w = *pp;
        if ((w->kind & kinds) && strcmp(w->path, path) == 0) {
            *pp = w->next;
            w->next = NULL;
            *tail = w;
            tail = &w->next;
        } else {
            pp = &w->next;
        }
    }
    while (fire != NULL) {
        zk_watch *w = fire;
        fire = w->next;
        if (!s->retired && !z->destroy_pending)
            w->cb(&z->base, event, path, w->arg);
        free(w);
    }
}

/* Called in a completion, before the user's callback, when the library
 * has just left a watch on the server. Out of memory here loses the watch;
 * the owner would never hear of the change, so the session is ended
 * instead, which every owner handles. */
static void watch_add(zk_real *z, int kind, const char *path,
                      keel_zk_watch_cb cb, void *arg)
{
    size_t len = strlen(path) + 1;
    zk_watch *w;

    /* The server keeps one watch per path and session, and fires it
     * once: one entry per callback here too, so that an owner arming
     * again (after a reconnection, say) hears the event once and the
     * registry does not grow. */
    for (w = z->watches; w != NULL; w = w->next)
        if (w->kind == kind && w->cb == cb && w->arg == arg &&
            strcmp(w->path, path) == 0)
            return;
    w = malloc(sizeof *w + len);

    if (w == NULL) {
        keel_error("zookeeper: out of memory registering a watch on %s; "
                   "ending the session",
                   path);
        z->base.ops->close(&z->base);
        return;
    }
    w->kind = kind;
    w->cb = cb;
    w->arg = arg;
    memcpy(w->path, path, len);
    w->next = z->watches;
    z->watches = w;
}

/* ----------------------------------------------------------- sessions */

static void retire(zk_real *z)
{
    zk_sess *s = z->cur;

    if (s == NULL)
        return;
    s->retired = 1;
    z->cur = NULL;
    z->session_id = 0;
    watches_clear(z);
    ev_io_stop(z->loop, &z->io);
    ev_timer_stop(z->loop, &z->timer);
    z->io_fd = -1;
    s->next = z->graveyard;
    z->graveyard = s;
}

/* Closes retired handles. zookeeper_close() sends the close request (so
 * the server drops the session's ephemeral nodes at once) and waits for
 * the answer, briefly; it calls every pending completion with ZCLOSING,
 * which only frees our contexts since the session is retired. */
static void reap(zk_real *z)
{
    while (z->graveyard != NULL) {
        zk_sess *s = z->graveyard;
        z->graveyard = s->next;
        z->depth++;
        zookeeper_close(s->zh);
        z->depth--;
        free(s);
    }
}

static void on_session(zk_real *z, zk_sess *s, int state)
{
    int event = 0;

    if (state == ZOO_CONNECTED_STATE) {
        const clientid_t *id = zoo_client_id(s->zh);
        z->avoid_left = 0;
        z->session_id = id != NULL ? id->client_id : 0;
        z->timeout_ms = zoo_recv_timeout(s->zh);
        if (!s->connected) {
            s->connected = 1;
            event = KEEL_ZK_CONNECTED;
        }
    } else if (state == ZOO_EXPIRED_SESSION_STATE ||
               state == ZOO_AUTH_FAILED_STATE) {
        if (!s->dead) {
            s->dead = 1;
            s->connected = 0;
            watches_clear(z);
            event = KEEL_ZK_EXPIRED;
        }
    } else if (s->connected) {
        /* connecting, associating, not connected: the link is down but
         * the session may still be alive on the servers */
        s->connected = 0;
        event = KEEL_ZK_DISCONNECTED;
    }
    if (event != 0) {
        keel_debug("zookeeper: session %llx %s",
                   (unsigned long long)z->session_id,
                   keel_zk_session_event_name(event));
        if (z->session_cb != NULL)
            z->session_cb(&z->base, event, z->session_arg);
    }
}

static void on_watch(zhandle_t *zh, int type, int state, const char *path,
                     void *ctx)
{
    zk_sess *s = ctx;
    zk_real *z = s->z;
    int event;

    (void)zh;
    if (s->retired || z->destroy_pending)
        return;
    if (type == ZOO_SESSION_EVENT) {
        on_session(z, s, state);
        return;
    }
    if (type == ZOO_CREATED_EVENT)
        event = KEEL_ZK_NODE_CREATED;
    else if (type == ZOO_DELETED_EVENT)
        event = KEEL_ZK_NODE_DELETED;
    else if (type == ZOO_CHANGED_EVENT)
        event = KEEL_ZK_NODE_CHANGED;
    else if (type == ZOO_CHILD_EVENT)
        event = KEEL_ZK_CHILDREN_CHANGED;
    else
        return; /* "not watching": watches were removed, none by us */
    if (path != NULL)
        watches_fire(z, s, event, path);
}

/* ------------------------------------------------------------ driving */

static void drive(zk_real *z, int events)
{
    zk_sess *s = z->cur;

    if (s != NULL) {
        /* The library may close the socket and open another under the same
         * number while it runs (and callbacks may open sockets of their
         * own): libev must never see an active watcher on a closed fd, so
         * the watcher is off until settle() re-arms it. */
        ev_io_stop(z->loop, &z->io);
        z->depth++;
        zookeeper_process(s->zh, events);
        z->depth--;
    }
    settle(z);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    zk_real *z = w->data;

    (void)loop;
    drive(z, ((revents & EV_READ) ? ZOOKEEPER_READ : 0) |
                 ((revents & EV_WRITE) ? ZOOKEEPER_WRITE : 0));
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    zk_real *z = w->data;

    (void)loop;
    (void)revents;
    drive(z, 0);
}

static void free_all(zk_real *z)
{
    watches_clear(z);
    ev_io_stop(z->loop, &z->io);
    ev_timer_stop(z->loop, &z->timer);
    if (z->auth != NULL) {
        explicit_bzero(z->auth, z->auth_len);
        free(z->auth);
    }
    free(z->hosts);
    free(z);
}

/* The library can lose a connection without a session event: a
 * connection that ends just after its session was established goes
 * unreported, and the session event of the next one then reads as a
 * repeat (seen with a ZooKeeper killed right after a node connected: the
 * node believed itself connected throughout and never redid the requests
 * the loss had failed). Its state tells: a session we hold connected
 * whose handle is neither connected nor ended has lost its connection.
 * Returns 1 when it reported that (callbacks ran). */
static int notice_loss(zk_real *z, zk_sess *s)
{
    int st;

    if (!s->connected || s->dead)
        return 0;
    st = zoo_state(s->zh);
    if (st == ZOO_CONNECTED_STATE || st == ZOO_READONLY_STATE ||
        st == ZOO_EXPIRED_SESSION_STATE || st == ZOO_AUTH_FAILED_STATE)
        return 0; /* connected, or its event is on its way */
    z->depth++; /* as in a library callback: the caller settles after */
    on_session(z, s, ZOO_CONNECTING_STATE);
    z->depth--;
    return 1;
}

/* Runs after every entry into the library: closes retired handles, frees
 * a destroyed client, and re-arms the io and timer watchers from
 * zookeeper_interest() (which may itself run callbacks, hence the loop).
 * Returns 1 when z was freed. */
static int settle(zk_real *z)
{
    for (;;) {
        zk_sess *s;
        struct timeval tv = {0, 0};
        int fd = -1, interest = 0, rc;
        double after;

        if (z->depth > 0)
            return 0; /* the outermost entry settles */
        reap(z);
        if (z->destroy_pending) {
            free_all(z);
            return 1;
        }
        s = z->cur;
        if (s == NULL || s->dead) {
            ev_io_stop(z->loop, &z->io);
            ev_timer_stop(z->loop, &z->timer);
            return 0;
        }
        ev_io_stop(z->loop, &z->io); /* see drive() */
        z->depth++;
        rc = zookeeper_interest(s->zh, &fd, &interest, &tv);
        z->depth--;
        if (z->graveyard != NULL || z->destroy_pending || z->cur != s)
            continue;
        if (rc == ZINVALIDSTATE) {
            s->dead = 1;
            continue;
        }
        if (notice_loss(z, s))
            continue;
        if (z->avoid_left > 0 && fd >= 0 && !s->connected &&
            strcmp(zoo_get_current_server(s->zh), z->avoid) == 0) {
            /* An attempt at the server drop_server left: cut at once,
             * the library tries the next one. */
            z->avoid_left--;
            keel_debug("zookeeper: an attempt at %s, the server just left, "
                       "is cut; trying another",
                       z->avoid);
            (void)shutdown(fd, SHUT_RDWR);
        }
        /* The library opens its sockets without close-on-exec: a program
         * embedding keel that forks and execs would hand the session's
         * socket to its child, which would hold the connection open. */
        if (fd >= 0) {
            int fl = fcntl(fd, F_GETFD);
            if (fl >= 0 && !(fl & FD_CLOEXEC))
                (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
        }
        /* The fd may be a new socket under an old number: libev must
         * re-register it, so the watcher is always set afresh. */
        ev_io_stop(z->loop, &z->io);
        if (fd >= 0 && interest != 0) {
            ev_io_set(&z->io, fd,
                      ((interest & ZOOKEEPER_READ) ? EV_READ : 0) |
                          ((interest & ZOOKEEPER_WRITE) ? EV_WRITE : 0));
            ev_io_start(z->loop, &z->io);
        }
        z->io_fd = fd;
        z->io_events = interest;
        after = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
        /* A failed connect attempt or a timeout returns an error with no
         * delay: come back soon rather than spin. */
        if (rc != ZOK && after < 0.01)
            after = 0.01;
        ev_timer_stop(z->loop, &z->timer);
        ev_timer_set(&z->timer, after, 0.);
        ev_timer_start(z->loop, &z->timer);
        return 0;
    }
}

/* After a request is queued outside the library: the library has tried to
 * send it already; let the loop re-arm soon (so that a partial send gets
 * its write interest) without running callbacks inside the submit call. */
static void kick(zk_real *z)
{
    if (z->depth > 0 || z->cur == NULL)
        return;
    ev_timer_stop(z->loop, &z->timer);
    ev_timer_set(&z->timer, 0., 0.);
    ev_timer_start(z->loop, &z->timer);
}

/* ---------------------------------------------------------- requests */

static zk_req *req_new(zk_real *z, void *arg)
{
    zk_req *r = calloc(1, sizeof *r);

    if (r == NULL)
        return NULL;
    /* Every caller hands the request to the library next, which may try
     * the socket at once (see drive()); submitted() re-arms the watcher. */
    ev_io_stop(z->loop, &z->io);
    r->sess = z->cur;
    r->arg = arg;
    return r;
}

static void req_free(zk_req *r)
{
    free(r->path);
    free(r->zops);
    free(r->zres);
    free(r->stats);
    free(r->pathbufs);
    free(r);
}

static int req_live(const zk_req *r)
{
    return !r->sess->retired && !r->sess->z->destroy_pending;
}

static int usable(zk_real *z)
{
    return z->cur != NULL && !z->cur->dead;
}

static int submitted(zk_real *z, zk_req *r, int zrc)
{
    /* req_new() took the io watcher off; kick() re-arms it either way. */
    kick(z);
    if (zrc != ZOK) {
        req_free(r);
        return zk_err(zrc);
    }
    return 0;
}

static void create_done(int rc, const char *path, const struct Stat *st,
                        const void *data)
{
    zk_req *r = (zk_req *)data;

    if (req_live(r)) {
        keel_zk_stat ks;
        stat_from_z(&ks, st);
        r->cb.create(&r->sess->z->base, zk_err(rc), rc == ZOK ? path : NULL,
                     rc == ZOK ? &ks : NULL, r->arg);
    }
    req_free(r);
}

static void void_done(int rc, const void *data)
{
    zk_req *r = (zk_req *)data;

    if (req_live(r))
        r->cb.v(&r->sess->z->base, zk_err(rc), r->arg);
    req_free(r);
}

static void data_done(int rc, const char *value, int len,
                      const struct Stat *st, const void *data)
{
    zk_req *r = (zk_req *)data;

    if (req_live(r)) {
        zk_real *z = r->sess->z;
        keel_zk_stat ks;
        if (rc == ZOK && r->watch != NULL)
            watch_add(z, WATCH_DATA, r->path, r->watch, r->watch_arg);
        stat_from_z(&ks, st);
        if (req_live(r))
            r->cb.data(&z->base, zk_err(rc), rc == ZOK ? value : NULL,
                       rc == ZOK && len > 0 ? (size_t)len : 0,
                       rc == ZOK ? &ks : NULL, r->arg);
    }
    req_free(r);
}

static void set_done(int rc, const struct Stat *st, const void *data)
{
    zk_req *r = (zk_req *)data;

    if (req_live(r)) {
        keel_zk_stat ks;
        stat_from_z(&ks, st);
        r->cb.stat(&r->sess->z->base, zk_err(rc), rc == ZOK ? &ks : NULL,
                   r->arg);
    }
    req_free(r);
}

static void exists_done(int rc, const struct Stat *st, const void *data)
{
    zk_req *r = (zk_req *)data;

    if (req_live(r)) {
        zk_real *z = r->sess->z;
        keel_zk_stat ks;
        /* The server leaves the watch whether or not the node exists. */
        if ((rc == ZOK || rc == ZNONODE) && r->watch != NULL)
            watch_add(z, WATCH_DATA, r->path, r->watch, r->watch_arg);
        stat_from_z(&ks, st);
        if (req_live(r))
            r->cb.stat(&z->base, zk_err(rc), rc == ZOK ? &ks : NULL, r->arg);
    }
    req_free(r);
}

static void children_done(int rc, const struct String_vector *names,
                          const void *data)
{
    zk_req *r = (zk_req *)data;

    if (req_live(r)) {
        zk_real *z = r->sess->z;
        if (rc == ZOK && r->watch != NULL)
            watch_add(z, WATCH_CHILD, r->path, r->watch, r->watch_arg);
        if (req_live(r)) {
            size_t count = rc == ZOK && names != NULL ? (size_t)names->count
                                                     : 0;
            r->cb.children(&z->base, zk_err(rc), count,
                           count > 0 ? (const char *const *)names->data
                                     : NULL,
                           r->arg);
        }
    }
    req_free(r);
}

static void sync_done(int rc, const char *value, const void *data)
{
    zk_req *r = (zk_req *)data;

    (void)value;
    if (req_live(r))
        r->cb.v(&r->sess->z->base, zk_err(rc), r->arg);
    req_free(r);
}

static void multi_done(int rc, const void *data)
{
    zk_req *r = (zk_req *)data;

    if (req_live(r)) {
        zk_real *z = r->sess->z;
        int krc = zk_err(rc);
        size_t i, failed = r->n;

        if (rc == ZOK) {
            keel_zk_op_result *res = calloc(r->n, sizeof *res);
            if (res == NULL) {
                /* Applied, but we cannot tell the caller the details; the
                 * caller treats ECONNLOSS as "may have been applied". */
                r->cb.multi(&z->base, KEEL_ECONNLOSS, r->n, NULL, r->n,
                            r->arg);
            } else {
                for (i = 0; i < r->n; i++) {
                    if (r->zops[i].type == ZOO_CREATE_OP)
                        res[i].path = r->pathbufs + i * KEEL_ZK_PATH_MAX;
                    if (r->zops[i].type == ZOO_SETDATA_OP)
                        stat_from_z(&res[i].stat, &r->stats[i]);
                }
                r->cb.multi(&z->base, 0, r->n, res, r->n, r->arg);
                free(res);
            }
        } else {
            /* The op that failed carries its own code; the others carry
             * ZOK (rolled back) or ZRUNTIMEINCONSISTENCY (not tried). */
            if (krc != KEEL_ECONNLOSS && krc != KEEL_ESESSION)
                for (i = 0; i < r->n; i++)
                    if (r->zres[i].err != ZOK &&
                        r->zres[i].err != ZRUNTIMEINCONSISTENCY) {
                        failed = i;
                        krc = zk_err(r->zres[i].err);
                        break;
                    }
            r->cb.multi(&z->base, krc, failed, NULL, r->n, r->arg);
        }
    }
    req_free(r);
}

/* ------------------------------------------------------------- vtable */

static int real_connect(keel_zk *zk, int timeout_ms, keel_zk_session_cb cb,
                        void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_sess *s;

    if (timeout_ms <= 0 || z->destroy_pending)
        return KEEL_EINVAL;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return KEEL_ENOMEM;
    retire(z);
    s->z = z;
    s->zh = zookeeper_init2(z->hosts, on_watch, timeout_ms, NULL, s,
                            ZOO_NO_LOG_CLIENTENV, zk_log);
    if (s->zh == NULL) {
        free(s);
        settle(z);
        return KEEL_EADDR;
    }
    z->cur = s;
    if (z->auth != NULL &&
        zoo_add_auth(s->zh, "digest", z->auth, (int)z->auth_len, auth_done,
                     NULL) != ZOK) {
        /* Without its credentials the session would create open znodes
         * or be refused everything: none at all is better. */
        retire(z);
        settle(z);
        return KEEL_ENOMEM;
    }
    z->session_cb = cb;
    z->session_arg = arg;
    z->timeout_ms = 0;
    settle(z);
    return 0;
}

static void real_close(keel_zk *zk)
{
    zk_real *z = (zk_real *)zk;

    retire(z);
    settle(z);
}

static void real_destroy(keel_zk *zk)
{
    zk_real *z = (zk_real *)zk;

    retire(z);
    z->destroy_pending = 1;
    settle(z);
}

static int real_create(keel_zk *zk, const char *path, const void *data,
                       size_t len, int flags, keel_zk_create_cb cb, void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_req *r;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (len > KEEL_ZK_MAX_DATA)
        return KEEL_ETOOBIG;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = req_new(z, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.create = cb;
    return submitted(z, r,
                     zoo_acreate2(z->cur->zh, path, data, data ? (int)len : -1,
                                  acl_for(z, flags), zk_mode(flags),
                                  create_done, r));
}

static int real_remove(keel_zk *zk, const char *path, int32_t version,
                       keel_zk_void_cb cb, void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_req *r;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = req_new(z, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.v = cb;
    return submitted(z, r,
                     zoo_adelete(z->cur->zh, path, version, void_done, r));
}

static zk_req *watch_req(zk_real *z, const char *path, keel_zk_watch_cb watch,
                         void *watch_arg, void *arg)
{
    zk_req *r = req_new(z, arg);

    if (r == NULL)
        return NULL;
    if (watch != NULL) {
        r->watch = watch;
        r->watch_arg = watch_arg;
        r->path = strdup(path);
        if (r->path == NULL) {
            req_free(r);
            return NULL;
        }
    }
    return r;
}

static int real_get(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
                    void *watch_arg, keel_zk_data_cb cb, void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_req *r;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = watch_req(z, path, watch, watch_arg, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.data = cb;
    return submitted(z, r,
                     zoo_awget(z->cur->zh, path, watch ? on_watch : NULL,
                               watch ? z->cur : NULL, data_done, r));
}

static int real_set(keel_zk *zk, const char *path, const void *data,
                    size_t len, int32_t version, keel_zk_stat_cb cb, void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_req *r;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (len > KEEL_ZK_MAX_DATA)
        return KEEL_ETOOBIG;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = req_new(z, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.stat = cb;
    return submitted(z, r,
                     zoo_aset(z->cur->zh, path, data, data ? (int)len : -1,
                              version, set_done, r));
}

static int real_exists(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
                       void *watch_arg, keel_zk_stat_cb cb, void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_req *r;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = watch_req(z, path, watch, watch_arg, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.stat = cb;
    return submitted(z, r,
                     zoo_awexists(z->cur->zh, path, watch ? on_watch : NULL,
                                  watch ? z->cur : NULL, exists_done, r));
}

static int real_children(keel_zk *zk, const char *path,
                         keel_zk_watch_cb watch, void *watch_arg,
                         keel_zk_children_cb cb, void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_req *r;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = watch_req(z, path, watch, watch_arg, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.children = cb;
    return submitted(z, r,
                     zoo_awget_children(z->cur->zh, path,
                                        watch ? on_watch : NULL,
                                        watch ? z->cur : NULL, children_done,
                                        r));
}

static int real_multi(keel_zk *zk, const keel_zk_op *ops, size_t n,
                      keel_zk_multi_cb cb, void *arg)
{
    zk_real *z = (zk_real *)zk;
    size_t i, total = 0;
    zk_req *r;

    if ((ops == NULL && n > 0) || cb == NULL || n == 0 || n > 10000)
        return KEEL_EINVAL;
    for (i = 0; i < n; i++) {
        if (ops[i].path == NULL)
            return KEEL_EINVAL;
        total += ops[i].len + strlen(ops[i].path) + 32;
    }
    if (total > KEEL_ZK_MAX_DATA)
        return KEEL_ETOOBIG;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = req_new(z, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.multi = cb;
    r->n = n;
    r->zops = calloc(n, sizeof *r->zops);
    r->zres = calloc(n, sizeof *r->zres);
    r->stats = calloc(n, sizeof *r->stats);
    r->pathbufs = calloc(n, KEEL_ZK_PATH_MAX);
    if (r->zops == NULL || r->zres == NULL || r->stats == NULL ||
        r->pathbufs == NULL) {
        req_free(r);
        return KEEL_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        const keel_zk_op *op = &ops[i];
        const char *d = op->data;
        int dl = d != NULL ? (int)op->len : -1;
        switch (op->type) {
        case KEEL_ZK_OP_CREATE:
            zoo_create_op_init(&r->zops[i], op->path, d, dl,
                               acl_for(z, op->flags), zk_mode(op->flags),
                               r->pathbufs + i * KEEL_ZK_PATH_MAX,
                               KEEL_ZK_PATH_MAX);
            break;
        case KEEL_ZK_OP_DELETE:
            zoo_delete_op_init(&r->zops[i], op->path, op->version);
            break;
        case KEEL_ZK_OP_SET:
            zoo_set_op_init(&r->zops[i], op->path, d, dl, op->version,
                            &r->stats[i]);
            break;
        case KEEL_ZK_OP_CHECK:
            zoo_check_op_init(&r->zops[i], op->path, op->version);
            break;
        default:
            req_free(r);
            return KEEL_EINVAL;
        }
    }
    return submitted(z, r,
                     zoo_amulti(z->cur->zh, (int)n, r->zops, r->zres,
                                multi_done, r));
}

static int real_sync(keel_zk *zk, const char *path, keel_zk_void_cb cb,
                     void *arg)
{
    zk_real *z = (zk_real *)zk;
    zk_req *r;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if (!usable(z))
        return KEEL_ESESSION;
    if ((r = req_new(z, arg)) == NULL)
        return KEEL_ENOMEM;
    r->cb.v = cb;
    return submitted(z, r, zoo_async(z->cur->zh, path, sync_done, r));
}

static int64_t real_session_id(keel_zk *zk)
{
    zk_real *z = (zk_real *)zk;

    return z->cur != NULL && z->cur->connected ? z->session_id : 0;
}

static int real_session_timeout(keel_zk *zk)
{
    return ((zk_real *)zk)->timeout_ms;
}

/* The library gives a silent server up only after 2/3 of the session
 * timeout without a byte from it. Shutting its socket down makes the next
 * zookeeper_process() see the connection end: a connection loss, after
 * which the library connects to a server of the list and resumes the
 * session there. It picks that server at random, the one left included:
 * settle() cuts the attempts at the one left (a stopped server's kernel
 * still completes the TCP connect, and the handshake would then wait out
 * 2/3 of the timeout) a few times, until the session is connected. */
/* Attempts at the server left that are cut, at most, before the library
 * may go back to it (the only one that answers the TCP connect, say). */
#define DROP_CUTS 8

static int real_drop_server(keel_zk *zk)
{
    zk_real *z = (zk_real *)zk;

    if (strchr(z->hosts, ',') == NULL)
        return KEEL_ENOTFOUND;
    if (z->cur == NULL || !z->cur->connected || z->io_fd < 0)
        return KEEL_ECONNLOSS;
    snprintf(z->avoid, sizeof z->avoid, "%s",
             zoo_get_current_server(z->cur->zh));
    if (shutdown(z->io_fd, SHUT_RDWR) != 0)
        return KEEL_ECONNLOSS;
    z->avoid_left = DROP_CUTS;
    return 0;
}

static const struct keel_zk_ops real_ops = {
    3,           real_connect, real_close,    real_destroy,
    real_create, real_remove,  real_get,      real_set,
    real_exists, real_children, real_multi,   real_session_id,
    real_session_timeout, real_sync, real_drop_server};

int keel_zk_real_create(struct ev_loop *loop, const char *hosts,
                        keel_zk **out)
{
    zk_real *z;

    if (loop == NULL || hosts == NULL || hosts[0] == '\0' || out == NULL)
        return KEEL_EINVAL;
    z = calloc(1, sizeof *z);
    if (z == NULL)
        return KEEL_ENOMEM;
    z->hosts = strdup(hosts);
    if (z->hosts == NULL) {
        free(z);
        return KEEL_ENOMEM;
    }
    z->base.ops = &real_ops;
    z->loop = loop;
    z->io_fd = -1;
    ev_io_init(&z->io, io_cb, -1, 0);
    z->io.data = z;
    ev_timer_init(&z->timer, timer_cb, 0., 0.);
    z->timer.data = z;
    *out = &z->base;
    return 0;
}

int keel_zk_real_set_auth(keel_zk *zk, const char *user_password)
{
    zk_real *z = (zk_real *)zk;
    const char *colon;
    char *copy;

    if (zk == NULL || zk->ops != &real_ops || user_password == NULL ||
        z->cur != NULL)
        return KEEL_EINVAL;
    colon = strchr(user_password, ':');
    if (colon == NULL || colon == user_password)
        return KEEL_EINVAL;
    if ((copy = strdup(user_password)) == NULL)
        return KEEL_ENOMEM;
    if (z->auth != NULL) {
        explicit_bzero(z->auth, z->auth_len);
        free(z->auth);
    }
    z->auth = copy;
    z->auth_len = strlen(copy);
    /* "auth" stands for every identity the creating session has
     * authenticated as: here the digest of these credentials. */
    z->acl_own[0].perms = ZOO_PERM_ALL;
    z->acl_own[0].id = ZOO_AUTH_IDS;
    z->acl_own[1].perms = ZOO_PERM_READ;
    z->acl_own[1].id = ZOO_ANYONE_ID_UNSAFE;
    z->own.count = 2;
    z->own.data = z->acl_own;
    z->acl_shared[0] = z->acl_own[0];
    z->acl_shared[1].perms = ZOO_PERM_READ | ZOO_PERM_CREATE;
    z->acl_shared[1].id = ZOO_ANYONE_ID_UNSAFE;
    z->shared.count = 2;
    z->shared.data = z->acl_shared;
    return 0;
}
