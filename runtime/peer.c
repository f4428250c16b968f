/* Node-to-node connections (see peer.h). A connection is opened on the
 * first frame for its address (non-blocking connect; frames queue
 * meanwhile) and reopened on the next frame after a failure. Every frame
 * waits in a table keyed by request id until the answer comes, or until
 * its deadline.
 *
 * Deadlines. A frame with KEEL_FLAG_DEADLINE carries the call's
 * remaining budget, which shrinks while the frame waits here: the budget
 * is written as the frame leaves (peer_write), and a frame whose deadline
 * passes before any byte of it left gets budget 0, which every receiver
 * refuses, so its caller learns for certain that it did not run. A
 * frame whose deadline passes while some of its bytes are written but
 * not acknowledged by the peer (held up in the network) resets the
 * connection (expire_cb), so that it cannot reach the owner later and
 * run there long after its caller was answered.
 *
 * TLS. On a node with TLS every link is mutual TLS with the node's own
 * certificate and CA. The link must reach the member this node's view
 * shows at the address: the other side's certificate must name that
 * node (CN=node:<id>), or the link fails. Frames wait until the
 * handshake is done and the other side has accepted our certificate
 * (tls.h), so a refused link fails with none of them sent.
 *
 * Hello. Every connection begins with the protocol hello (proto.h): ours
 * is queued ahead of the first frame, and counts in the stream positions
 * like a frame; the peer's is taken off what it sends before its first
 * answer. A peer that answers something else is not a keel node of this
 * protocol version, and the link fails. */
#include "runtime/peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/addr.h"
#include "common/log.h"
#include "runtime/cluster_rt.h"
#include "runtime/hmap.h"
#include "runtime/proto.h"
#include "runtime/tls.h"

#define PEER_RETRY_S 0.2 /* between connection attempts to a failed peer */
/* Budgets are written into at most this many bytes ahead of each write,
 * so the work is in proportion to what leaves. */
#define PEER_WRITE_WINDOW (256u << 10)
/* A peer that is gone without a word (host down, cable cut) is noticed by
 * TCP keepalive after about PEER_KEEPIDLE_S + PEER_KEEPCNT *
 * PEER_KEEPINTVL_S of silence, or when data it does not acknowledge has
 * waited PEER_USER_TIMEOUT_MS. A paused process is not noticed this way:
 * its kernel still acknowledges; the deadlines bound that case. */
#define PEER_KEEPIDLE_S 5
#define PEER_KEEPINTVL_S 2
#define PEER_KEEPCNT 3
#define PEER_USER_TIMEOUT_MS 10000
/* The most plaintext one TLS record carries (OpenSSL's default
 * max_send_fragment, the protocol's limit). */
#define PEER_TLS_RECORD_MAX 16384u
/* An acknowledgement the other side's kernel delays comes within this
 * (Linux delays one at most 200 ms): bytes written longer ago than this
 * and still not acknowledged are held up (lost, retransmitted, or the
 * other side's receive window is shut). */
#define PEER_ACK_GRACE_S 0.25
/* Late answers (answers to calls already answered at their deadline) are
 * logged at most once a second per node, with how many were not. */
#define PEER_LATE_LOG_S 1.0

typedef struct peer peer;

struct pending {
    uint64_t id;
    uint64_t start;       /* stream position of the frame's first byte */
    uint64_t end;         /* stream position after the frame's last byte */
    uint64_t deadline_ns; /* monotonic; 0: none */
    keel_peer_cb cb;
    void *arg;
    peer *pr;
    struct pending *unext; /* in pr's unwritten list, in stream order */
    int budget;           /* the body starts with a budget to write */
    int done;             /* cb called at the deadline; the answer is
                           * dropped when it comes */
    ev_timer timer;
};

struct peer {
    struct peer *next;
    keel_peers *p;
    char addr[256];
    int fd; /* -1: not connected */
    int connected;
    /* TLS, on a node with it: ready once the handshake is done and the
     * other side accepted us; frames are written only then. A read that
     * waits for the socket to be writable, or a write for it to be
     * readable, is retried from the other watcher. */
    keel_tls *tls;
    int tls_ready;
    int read_wants_write, write_wants_read;
    ev_tstamp retry_at; /* after a failure, no new connection before */
    ev_io rio, wio;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    uint64_t written; /* bytes written over this connection */
    uint64_t write_ns; /* monotonic: when the last of them were written */
    int down;          /* the connection failed; none made since */
    uint64_t serial;   /* connections made so far */
    uint64_t queued;  /* bytes queued over this connection */
    uint8_t *rbuf;
    size_t rlen, rcap;
    int hello_seen; /* the peer's hello was read on this connection */
    unsigned hello_flags; /* what it said it takes (proto.h) */
    keel_hmap pending;
    /* Frames with a budget, not yet started on the wire. */
    struct pending *unw_head, *unw_tail;
};

struct keel_peers {
    keel_node *n;
    peer *list;
    uint64_t next_id;
    size_t npending;
    ev_tstamp late_log_at; /* the last late answer's line */
    unsigned long long late_quiet; /* late answers not logged since */
};

static int pending_eq(const void *item, const void *key)
{
    return ((const struct pending *)item)->id == *(const uint64_t *)key;
}

static uint64_t id_hash(uint64_t id)
{
    return XXH3_64bits(&id, sizeof id);
}

keel_peers *keel__peers_create(keel_node *n)
{
    keel_peers *p = calloc(1, sizeof *p);

    if (p != NULL) {
        p->n = n;
        p->next_id = 1;
    }
    return p;
}

static int pending_cmp(const void *a, const void *b)
{
    const struct pending *x = *(struct pending *const *)a;
    const struct pending *y = *(struct pending *const *)b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/* How peer_fail completes the frames that have left. */
#define PF_ERROR 0    /* the connection failed: they may have run */
#define PF_STOPPING 1 /* this node stops: unsent ones will never leave */
#define PF_FAREWELL 2 /* the peer is stopping and said none of them ran */

/* Completes every pending frame of the connection and resets it. */
static void peer_fail(peer *pr, int how)
{
    keel_peers *p = pr->p;
    keel_node *n = p->n;
    size_t pos = 0, i, cnt;
    void *item;
    struct pending **all;

    if (pr->fd >= 0) {
        ev_io_stop(n->loop, &pr->rio);
        ev_io_stop(n->loop, &pr->wio);
        if (pr->tls != NULL) {
            keel_tls_shutdown(pr->tls);
            keel_tls_free(pr->tls);
            pr->tls = NULL;
        }
        close(pr->fd);
        pr->fd = -1;
    }
    pr->connected = 0;
    if (how != PF_STOPPING)
        pr->down = 1;
    pr->tls_ready = 0;
    pr->hello_seen = 0;
    pr->hello_flags = 0;
    pr->read_wants_write = pr->write_wants_read = 0;
    pr->retry_at = ev_now(n->loop) + PEER_RETRY_S;
    cnt = pr->pending.count;
    all = cnt ? malloc(cnt * sizeof *all) : NULL;
    i = 0;
    while (keel_hmap_next(&pr->pending, &pos, &item)) {
        if (all != NULL)
            all[i++] = item;
    }
    keel_hmap_free(&pr->pending);
    keel_hmap_init(&pr->pending);
    pr->wlen = pr->woff = 0;
    pr->rlen = 0;
    pr->unw_head = pr->unw_tail = NULL;
    /* Callbacks may queue new frames: the connection is clean by now. */
    /* In stream order: the callers put unsent frames back in order, and
     * a caller that re-queues one at once gets it out in that order. */
    if (all != NULL)
        qsort(all, i, sizeof *all, pending_cmp);
    for (cnt = i, i = 0; i < cnt; i++) {
        struct pending *pd = all[i];
        /* A frame that left may have run there: its fate is unknown,
         * unless the peer's farewell says it did not run. KEEL_ESTOPPING
         * promises the request did not run. */
        int st = how == PF_FAREWELL          ? KEEL_PEER_UNSENT
                 : pd->end <= pr->written ? KEEL_ECONN
                 : how == PF_STOPPING     ? KEEL_ESTOPPING
                                          : KEEL_PEER_UNSENT;
        ev_timer_stop(n->loop, &pd->timer);
        if (!pd->done) {
            p->npending--;
            if (pd->cb != NULL)
                pd->cb(n, st, (const uint8_t *)keel_strerror(st),
                       strlen(keel_strerror(st)), pd->arg);
        }
        free(pd);
    }
    free(all);
    pr->written = pr->queued = 0;
}

/* Writes the budget left to each frame that starts within the next
 * PEER_WRITE_WINDOW bytes and has not started yet. wbuf[woff] is stream
 * position pr->written. */
/* Drops the frames that have started from the unwritten list: their
 * budget is on its way, and their answer (which frees them) may come. */
static void unw_pop(peer *pr)
{
    struct pending *pd;

    while ((pd = pr->unw_head) != NULL && pd->start < pr->written) {
        pr->unw_head = pd->unext;
        if (pr->unw_head == NULL)
            pr->unw_tail = NULL;
    }
}

static void write_budgets(peer *pr)
{
    struct pending *pd = pr->unw_head;
    uint64_t t = 0;

    for (; pd != NULL && pd->start < pr->written + PEER_WRITE_WINDOW;
         pd = pd->unext) {
        uint64_t left = 0;
        if (t == 0)
            t = keel__now_ns();
        if (pd->deadline_ns > t)
            left = (pd->deadline_ns - t) / 1000000u;
        if (left > UINT32_MAX - 1)
            left = UINT32_MAX - 1;
        keel_deadline_put(pr->wbuf + pr->woff + (pd->start - pr->written) +
                              KEEL_FRAME_HEADER,
                          (uint32_t)left);
    }
}

static void peer_write(peer *pr)
{
    if (pr->tls != NULL && !pr->tls_ready)
        return; /* written once the link is up */
    while (pr->woff < pr->wlen) {
        size_t want = pr->wlen - pr->woff;
        ssize_t w;
        if (pr->unw_head != NULL) {
            write_budgets(pr);
            if (want > PEER_WRITE_WINDOW)
                want = PEER_WRITE_WINDOW;
        }
        if (pr->tls != NULL) {
            w = keel_tls_write(pr->tls, pr->wbuf + pr->woff, want);
            if (w == KEEL_TLS_WANT_WRITE) {
                ev_io_start(pr->p->n->loop, &pr->wio);
                return;
            }
            if (w == KEEL_TLS_WANT_READ) {
                /* Not the write watcher: it would fire forever. */
                pr->write_wants_read = 1;
                return;
            }
            if (w < 0)
                errno = EPIPE;
        } else {
            w = write(pr->fd, pr->wbuf + pr->woff, want);
        }
        if (w > 0) {
            pr->woff += (size_t)w;
            pr->written += (uint64_t)w;
            pr->write_ns = keel__now_ns();
            unw_pop(pr);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(pr->p->n->loop, &pr->wio);
            return;
        }
        keel_warn("peer %s: write failed: %s", pr->addr,
                  w < 0 ? strerror(errno) : "closed");
        peer_fail(pr, PF_ERROR);
        return;
    }
    pr->woff = pr->wlen = 0;
    if (!pr->read_wants_write)
        ev_io_stop(pr->p->n->loop, &pr->wio);
}

/* Drives the TLS handshake of the link. Returns 1 once the link is up
 * (queued frames are on their way), 0 while it waits for the socket, -1
 * when it failed (the link is reset; no frame of it was sent). */
static int peer_tls_step(peer *pr)
{
    keel_node *n = pr->p->n;
    char err[320];
    int rc = keel_tls_handshake(pr->tls, err, sizeof err);

    if (rc == KEEL_TLS_WANT_READ) {
        ev_io_stop(n->loop, &pr->wio);
        return 0;
    }
    if (rc == KEEL_TLS_WANT_WRITE) {
        ev_io_start(n->loop, &pr->wio);
        return 0;
    }
    if (rc != 0) {
        keel_warn("peer %s: %s", pr->addr, err);
        peer_fail(pr, PF_ERROR);
        return -1;
    }
    pr->tls_ready = 1;
    ev_io_stop(n->loop, &pr->wio);
    peer_write(pr);
    return pr->fd >= 0 ? 1 : -1;
}

/* The TCP connection is up: with TLS, starts the handshake, expecting
 * the member the view shows at the address. Returns -1 when the link
 * failed. */
static int peer_tls_start(peer *pr)
{
    keel_node *n = pr->p->n;
    char name[KEEL_TLS_NAME_MAX + 1];

    if (keel__cluster_member_at(n, pr->addr, name, sizeof name) != 0) {
        keel_warn("peer %s: no member at that address in this node's "
                  "view; no TLS link to it",
                  pr->addr);
        peer_fail(pr, PF_ERROR);
        return -1;
    }
    if (keel_tls_connect(n->tls, pr->fd, name, &pr->tls) != 0) {
        peer_fail(pr, PF_ERROR);
        return -1;
    }
    return peer_tls_step(pr) < 0 ? -1 : 0;
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents);

static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    peer *pr = w->data;

    (void)revents;
    if (!pr->connected) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(pr->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
            err != 0) {
            keel_warn("peer %s: cannot connect: %s", pr->addr,
                      strerror(err ? err : errno));
            peer_fail(pr, PF_ERROR);
            return;
        }
        pr->connected = 1;
        pr->down = 0;
        ev_io_start(pr->p->n->loop, &pr->rio);
        if (pr->p->n->tls != NULL) {
            (void)peer_tls_start(pr);
            return;
        }
    }
    if (pr->tls != NULL && !pr->tls_ready) {
        (void)peer_tls_step(pr);
        return;
    }
    peer_write(pr);
    if (pr->fd >= 0 && pr->read_wants_write) {
        pr->read_wants_write = 0;
        rio_cb(loop, &pr->rio, EV_READ);
    }
}

/* An answer to a call whose caller was answered at its deadline
 * (ETIMEDOUT: it may have run): the answer says what became of it, which
 * operators may want to know. Logged at most once a PEER_LATE_LOG_S, with
 * how many were not. */
static void late_answer(peer *pr, const keel_frame *f)
{
    keel_peers *p = pr->p;
    ev_tstamp t = ev_now(p->n->loop);
    const char *msg = "";
    char more[80];
    size_t ml = 0;
    int code = 0;

    if (p->late_log_at != 0 && t - p->late_log_at < PEER_LATE_LOG_S) {
        p->late_quiet++;
        return;
    }
    if (f->kind == KEEL_FRAME_ERROR)
        code = keel_error_body_parse(f->body, f->body_len, &msg, &ml);
    if (ml > 200)
        ml = 200;
    more[0] = '\0';
    if (p->late_quiet > 0)
        snprintf(more, sizeof more,
                 " (and %llu more late answers since the last such line)",
                 p->late_quiet);
    keel_info("peer %s: late answer to request %llu, whose caller was "
              "answered at its deadline: %s%s%.*s%s",
              pr->addr, (unsigned long long)f->request_id,
              code == 0 ? "ok" : keel_err_name(code), ml > 0 ? ": " : "",
              (int)ml, msg, more);
    p->late_log_at = t;
    p->late_quiet = 0;
}

static void handle_answer(peer *pr, const keel_frame *f)
{
    keel_peers *p = pr->p;
    struct pending *pd =
        keel_hmap_get(&pr->pending, id_hash(f->request_id), &f->request_id,
                      pending_eq);

    if (pd == NULL)
        return; /* not ours (a reset connection's late answer) */
    keel_hmap_remove(&pr->pending, id_hash(pd->id), pd);
    ev_timer_stop(p->n->loop, &pd->timer);
    if (pd->done) {
        late_answer(pr, f);
        free(pd); /* its caller was answered at the deadline */
        return;
    }
    p->npending--;
    if (pd->cb != NULL) {
        if (f->kind == KEEL_FRAME_ERROR) {
            const char *msg;
            size_t ml;
            int code = keel_error_body_parse(f->body, f->body_len, &msg, &ml);
            pd->cb(p->n, code, (const uint8_t *)msg, ml, pd->arg);
        } else {
            pd->cb(p->n, 0, f->body, f->body_len, pd->arg);
        }
    }
    free(pd);
}

/* Takes the peer's hello off the front of pr->rbuf: 1 when it is there,
 * 0 while more bytes are needed, -1 when the peer is not a keel node of
 * this version or refused the link (a bare ERROR before the hello, which
 * a node at its connection limit sends): the link failed. */
static int peer_hello(peer *pr)
{
    unsigned version;
    long r = keel_hello_parse(pr->rbuf, pr->rlen, &version);
    keel_frame f;

    if (r == 0)
        return 0;
    if (r > 0 && version == KEEL_PROTO_VERSION) {
        pr->hello_seen = 1;
        pr->hello_flags = keel_hello_flags(pr->rbuf);
        return 1;
    }
    if (r > 0) {
        keel_warn("peer %s: speaks protocol version %u; this node speaks "
                  "%u",
                  pr->addr, version, KEEL_PROTO_VERSION);
    } else if (pr->rbuf[0] == 0) {
        long n =
            keel_frame_parse(pr->rbuf, pr->rlen, KEEL_PEER_MAX_FRAME, &f);
        const char *m = "";
        size_t ml = 0;
        int code;
        if (n == 0)
            return 0;
        if (n < 0 || f.kind != KEEL_FRAME_ERROR) {
            keel_warn("peer %s: not a keel node (no protocol hello)",
                      pr->addr);
        } else {
            code = keel_error_body_parse(f.body, f.body_len, &m, &ml);
            keel_warn("peer %s: refused the link before the hello: %s: %.*s",
                      pr->addr, keel_err_name(code), (int)ml, m);
            if (code == KEEL_ESTOPPING) {
                /* Its farewell: nothing it was sent ran. */
                peer_fail(pr, PF_FAREWELL);
                return -1;
            }
        }
    } else {
        keel_warn("peer %s: not a keel node (it answered the protocol "
                  "hello with something else)",
                  pr->addr);
    }
    peer_fail(pr, PF_ERROR);
    return -1;
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    peer *pr = w->data;

    (void)loop;
    (void)revents;
    if (pr->tls != NULL) {
        if (!pr->tls_ready && peer_tls_step(pr) <= 0)
            return;
        if (pr->write_wants_read) {
            pr->write_wants_read = 0;
            peer_write(pr);
            if (pr->fd < 0)
                return;
        }
    }
    for (;;) {
        ssize_t r;
        size_t off = 0;
        if (pr->rcap - pr->rlen < 16384) {
            size_t cap = pr->rcap ? pr->rcap * 2 : 65536;
            uint8_t *q = realloc(pr->rbuf, cap);
            if (q == NULL) {
                peer_fail(pr, PF_ERROR);
                return;
            }
            pr->rbuf = q;
            pr->rcap = cap;
        }
        if (pr->tls != NULL) {
            r = keel_tls_read(pr->tls, pr->rbuf + pr->rlen,
                              pr->rcap - pr->rlen);
            if (r == KEEL_TLS_WANT_READ)
                return;
            if (r == KEEL_TLS_WANT_WRITE) {
                pr->read_wants_write = 1;
                ev_io_start(pr->p->n->loop, &pr->wio);
                return;
            }
            if (r < 0)
                errno = ECONNRESET;
        } else {
            r = read(pr->fd, pr->rbuf + pr->rlen, pr->rcap - pr->rlen);
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            keel_warn("peer %s: connection %s", pr->addr,
                      r == 0 ? "closed" : strerror(errno));
            peer_fail(pr, PF_ERROR);
            return;
        }
        pr->rlen += (size_t)r;
        if (!pr->hello_seen) {
            int h = peer_hello(pr);
            if (h < 0)
                return; /* the link failed */
            if (h == 0)
                continue;
            off = KEEL_HELLO_LEN;
        }
        while (off < pr->rlen) {
            keel_frame f;
            long fl = keel_frame_parse(pr->rbuf + off, pr->rlen - off,
                                       KEEL_PEER_MAX_FRAME, &f);
            if (fl == 0)
                break;
            if (fl < 0 || (f.kind != KEEL_FRAME_REPLY &&
                           f.kind != KEEL_FRAME_ERROR)) {
                keel_warn("peer %s: bad frame from the peer", pr->addr);
                peer_fail(pr, PF_ERROR);
                return;
            }
            off += (size_t)fl;
            if (f.kind == KEEL_FRAME_ERROR && f.request_id == 0 &&
                keel_error_body_parse(f.body, f.body_len, NULL, NULL) ==
                    KEEL_ESTOPPING) {
                /* A stopping peer's last word: what it did not answer did
                 * not run there, and may go elsewhere. */
                keel_warn("peer %s: stopping; %zu unanswered frame(s) to "
                          "send again", pr->addr, pr->pending.count);
                peer_fail(pr, PF_FAREWELL);
                return;
            }
            handle_answer(pr, &f);
            if (pr->fd < 0)
                return; /* a callback failed the connection */
        }
        if (off > 0) {
            memmove(pr->rbuf, pr->rbuf + off, pr->rlen - off);
            pr->rlen -= off;
        }
    }
}

static int peer_connect(peer *pr)
{
    char host[256];
    const char *colon = strrchr(pr->addr, ':');
    struct addrinfo hints, *res = NULL;
    int fd, one = 1;

    if (colon == NULL || colon == pr->addr ||
        (size_t)(colon - pr->addr) >= sizeof host)
        return KEEL_EADDR;
    memcpy(host, pr->addr, (size_t)(colon - pr->addr));
    host[colon - pr->addr] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
        return KEEL_EADDR;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        freeaddrinfo(res);
        return KEEL_ECONN;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    {
        int idle = PEER_KEEPIDLE_S, intvl = PEER_KEEPINTVL_S;
        int cnt = PEER_KEEPCNT;
        unsigned uto = PEER_USER_TIMEOUT_MS;
        /* Best effort: without them a dead peer is noticed later. */
        (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl,
                         sizeof intvl);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto,
                         sizeof uto);
    }
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0 &&
        errno != EINPROGRESS) {
        freeaddrinfo(res);
        close(fd);
        return KEEL_ECONN;
    }
    freeaddrinfo(res);
    pr->fd = fd;
    pr->serial++;
    pr->connected = 0;
    ev_io_init(&pr->rio, rio_cb, fd, EV_READ);
    ev_io_init(&pr->wio, wio_cb, fd, EV_WRITE);
    pr->rio.data = pr;
    pr->wio.data = pr;
    ev_io_start(pr->p->n->loop, &pr->wio); /* fires when connected */
    return 0;
}

int keel__peer_takes(keel_peers *p, const char *addr, unsigned flag)
{
    peer *pr;

    for (pr = p->list; pr != NULL; pr = pr->next)
        if (strcmp(pr->addr, addr) == 0)
            return pr->hello_seen && (pr->hello_flags & flag) != 0;
    return 0;
}

static peer *peer_get(keel_peers *p, const char *addr)
{
    peer *pr;

    for (pr = p->list; pr != NULL; pr = pr->next)
        if (strcmp(pr->addr, addr) == 0)
            return pr;
    /* Never a connection attempt to what is not HOST:PORT (the member
     * view said so once; retrying would only say it again and again). */
    if (strlen(addr) >= sizeof pr->addr ||
        !keel_addr_valid(addr, strlen(addr), 0))
        return NULL;
    pr = calloc(1, sizeof *pr);
    if (pr == NULL)
        return NULL;
    pr->p = p;
    pr->fd = -1;
    snprintf(pr->addr, sizeof pr->addr, "%s", addr);
    keel_hmap_init(&pr->pending);
    pr->next = p->list;
    p->list = pr;
    return pr;
}

/* Whether bytes of the stream before position `end` may not have
 * reached the peer's kernel: not all written to the socket yet, or
 * written and not acknowledged (SIOCOUTQ: the bytes of the send queue the
 * peer has not acknowledged, sent or not), into *outq. On a plain link
 * the stream positions are the socket's. On a TLS link they count
 * plaintext while the socket carries records, which are longer (header,
 * tag, and OpenSSL's own messages): the outq bytes at the end of the
 * socket's stream then hold at most outq bytes of plaintext, plus the
 * rest of the record they cut into (a record is of use to the peer only
 * whole), so what ends more than outq + PEER_TLS_RECORD_MAX plaintext
 * bytes before the end of what was written has reached it. 0 when the
 * socket cannot say (the link is then left to TCP_USER_TIMEOUT). */
static int peer_unacked(const peer *pr, uint64_t end, int *outq)
{
    uint64_t back;
    int q = 0;

    *outq = 0;
    if (end > pr->written)
        return 1;
    if (ioctl(pr->fd, SIOCOUTQ, &q) != 0 || q <= 0)
        return 0;
    *outq = q;
    back = (uint64_t)q + (pr->tls != NULL ? PEER_TLS_RECORD_MAX : 0);
    return back > pr->written || end > pr->written - back;
}

/* Resets pr's connection: the kernel drops what the peer has not
 * acknowledged and stops sending it (SO_LINGER 0: close sends a RST),
 * so none of it can reach the peer later; then the connection fails as
 * any does (peer_fail). */
static void peer_reset(peer *pr)
{
    struct linger lg = {1, 0};

    (void)setsockopt(pr->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    peer_fail(pr, PF_ERROR);
}

/* Resets pr's connection for the call pd, whose frame the peer did not
 * acknowledge (outq: the link's bytes it did not), and which the caller
 * took out of the table (peer_fail frees what is there). */
static void reset_for(peer *pr, const struct pending *pd, int outq)
{
    if (pd->end > pr->written)
        keel_warn("peer %s: resetting the link: a call passed its deadline "
                  "with %llu byte(s) of its frame not yet written, so that "
                  "it cannot arrive late; %zu other frame(s) on the link "
                  "fail with it",
                  pr->addr, (unsigned long long)(pd->end - pr->written),
                  pr->pending.count);
    else
        keel_warn("peer %s: resetting the link: a call passed its deadline "
                  "with its frame not acknowledged by the peer (%d byte(s) "
                  "of the link unacknowledged%s), so that it cannot arrive "
                  "late; %zu other frame(s) on the link fail with it",
                  pr->addr, outq, pr->tls != NULL ? ", in TLS records" : "",
                  pr->pending.count);
    STAT_ADD(pr->p->n, peer_resets, 1);
    peer_reset(pr);
}

/* The call's deadline passed before its answer came (or, for a call
 * answered then already, the look again PEER_ACK_GRACE_S later). Its
 * caller is answered now. A frame whose bytes may still be on their way
 * (written to the socket, not acknowledged: a partition, TCP
 * retransmitting) could reach the owner much later, which would count
 * the budget it left with from then and might run it long after this
 * answer: the connection is reset instead, so that a late copy can only
 * be one the owner's kernel took by the deadline (or by the grace, for a
 * frame written moments before it), which the owner's own deadline check
 * bounds. A frame the peer acknowledged is left alone, and so is a slow
 * but healthy link (a paused or busy owner whose kernel takes the
 * bytes). */
static void expire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pending *pd = w->data;
    peer *pr = pd->pr;
    keel_peers *p = pr->p;
    /* Not a byte of it left: when it does, its budget reads 0 and the
     * receiver refuses it. Otherwise it may have run. */
    int st = pd->start >= pr->written ? KEEL_EDEADLINE : KEEL_ETIMEDOUT;
    const char *text =
        st == KEEL_EDEADLINE
            ? "deadline passed before the call was sent; it did not run"
            : "no answer from the owner by the call's deadline; it may "
              "have run";
    int outq = 0;

    (void)revents;
    ev_timer_stop(loop, w);
    if (pd->done) {
        /* The look again: every byte written by now left at least the
         * grace ago. (An answer, or the link's failure, would have
         * freed pd and stopped this timer.) */
        if (peer_unacked(pr, pd->end, &outq)) {
            keel_hmap_remove(&pr->pending, id_hash(pd->id), pd);
            reset_for(pr, pd, outq);
            free(pd);
        }
        return;
    }
    pd->deadline_ns = 1; /* whatever the timer's rounding: budget 0 */
    pd->done = 1;
    p->npending--;
    if (st == KEEL_ETIMEDOUT && peer_unacked(pr, pd->end, &outq)) {
        if (pd->end <= pr->written &&
            keel__now_ns() - pr->write_ns <
                (uint64_t)(PEER_ACK_GRACE_S * 1e9)) {
            /* Bytes went out moments ago, its own maybe: their
             * acknowledgement may be on its way (delayed). Look again
             * once it would have come. */
            ev_timer_set(w, PEER_ACK_GRACE_S, 0);
            ev_timer_start(loop, w);
        } else {
            /* The caller still hears ETIMEDOUT: bytes the peer did not
             * acknowledge may have reached it all the same (the ACK may
             * be on its way). It hears it before the link's other
             * frames, which mostly came after it (peer_fail answers in
             * stream order). Out of the table, pd outlives a failure of
             * the link in the callback, after which there is nothing
             * left to reset. */
            uint64_t serial = pr->serial;
            keel_hmap_remove(&pr->pending, id_hash(pd->id), pd);
            if (pd->cb != NULL)
                pd->cb(p->n, st, (const uint8_t *)text, strlen(text),
                       pd->arg);
            if (pr->fd >= 0 && pr->serial == serial)
                reset_for(pr, pd, outq);
            free(pd);
            return;
        }
    }
    if (pd->cb != NULL)
        pd->cb(p->n, st, (const uint8_t *)text, strlen(text), pd->arg);
}

/* Opens pr's connection: connects, then queues the hello and the INFO
 * "peer" every connection starts with. 0, or -1 (in its pause after a
 * failure, or failed now: nothing queued). */
static int peer_open(keel_peers *p, peer *pr)
{
    const char *self = p->n->opts.node_id;
    size_t sl = self != NULL ? strlen(self) : 0;
    uint8_t *hdr;

    if (ev_now(p->n->loop) < pr->retry_at)
        return -1;
    if (peer_connect(pr) != 0) {
        pr->retry_at = ev_now(p->n->loop) + PEER_RETRY_S;
        keel_warn("peer %s: cannot connect", pr->addr);
        return -1;
    }
    /* The hello first (the write buffer is empty on a new connection). */
    if (pr->wcap < KEEL_HELLO_LEN) {
        uint8_t *q = realloc(pr->wbuf, 65536);
        if (q == NULL) {
            peer_fail(pr, PF_ERROR);
            return -1;
        }
        pr->wbuf = q;
        pr->wcap = 65536;
    }
    keel_hello_encode(pr->wbuf, KEEL_PROTO_VERSION);
    pr->wlen = KEEL_HELLO_LEN;
    pr->queued = KEEL_HELLO_LEN;
    /* First on every connection: INFO "peer" NUL ID says it comes from
     * node ID, which may forward calls (hop counts) and stream units
     * (XFER) over it while it is a member; a node refuses both from
     * clients. With TLS the certificate says it instead. The answer needs
     * no callback. */
    hdr = keel__peer_frame_by(p, pr->addr, KEEL_FRAME_INFO, 0, 5 + sl, 0,
                              NULL, NULL);
    if (hdr == NULL) {
        peer_fail(pr, PF_ERROR);
        return -1;
    }
    memcpy(hdr, "peer", 5); /* with its NUL */
    if (sl > 0)
        memcpy(hdr + 5, self, sl);
    return 0;
}

int keel__peer_down(const keel_peers *p, const char *addr)
{
    const peer *pr;

    for (pr = p != NULL ? p->list : NULL; pr != NULL; pr = pr->next)
        if (strcmp(pr->addr, addr) == 0)
            return pr->down;
    return 0;
}

int keel__peer_hello(keel_peers *p, const char *addr, unsigned *flags)
{
    peer *pr = peer_get(p, addr);

    *flags = 0;
    if (pr == NULL)
        return 0;
    if (pr->hello_seen) {
        *flags = pr->hello_flags;
        return 1;
    }
    if (pr->fd < 0)
        (void)peer_open(p, pr);
    return 0;
}

uint8_t *keel__peer_frame(keel_peers *p, const char *addr, uint8_t kind,
                          uint8_t flags, size_t body_len, keel_peer_cb cb,
                          void *arg)
{
    return keel__peer_frame_by(p, addr, kind, flags, body_len, 0, cb, arg);
}

uint8_t *keel__peer_frame_by(keel_peers *p, const char *addr, uint8_t kind,
                             uint8_t flags, size_t body_len,
                             uint64_t deadline_ns, keel_peer_cb cb,
                             void *arg)
{
    peer *pr = peer_get(p, addr);
    struct pending *pd;
    size_t need;
    uint8_t *hdr;

    if (pr == NULL || body_len > KEEL_PEER_MAX_FRAME - KEEL_FRAME_HEADER)
        return NULL;
    if ((flags & KEEL_FLAG_DEADLINE) && body_len < KEEL_DEADLINE_LEN)
        return NULL;
    if (pr->fd < 0 && peer_open(p, pr) != 0)
        return NULL;
    need = pr->wlen + KEEL_FRAME_HEADER + body_len;
    if (need > pr->wcap) {
        size_t cap = pr->wcap ? pr->wcap : 65536;
        uint8_t *q;
        while (cap < need)
            cap *= 2;
        q = realloc(pr->wbuf, cap);
        if (q == NULL)
            return NULL;
        pr->wbuf = q;
        pr->wcap = cap;
    }
    pd = calloc(1, sizeof *pd);
    if (pd == NULL)
        return NULL;
    pd->id = p->next_id++;
    pd->cb = cb;
    pd->arg = arg;
    pd->pr = pr;
    pd->deadline_ns = deadline_ns;
    pd->budget = (flags & KEEL_FLAG_DEADLINE) != 0;
    pd->start = pr->queued;
    pr->queued += KEEL_FRAME_HEADER + body_len;
    pd->end = pr->queued;
    if (keel_hmap_put(&pr->pending, id_hash(pd->id), pd) != 0) {
        pr->queued -= KEEL_FRAME_HEADER + body_len;
        free(pd);
        return NULL;
    }
    p->npending++;
    if (pd->budget) {
        if (pr->unw_tail != NULL)
            pr->unw_tail->unext = pd;
        else
            pr->unw_head = pd;
        pr->unw_tail = pd;
    }
    ev_timer_init(&pd->timer, expire_cb, 0, 0);
    pd->timer.data = pd;
    if (deadline_ns != 0) {
        uint64_t t = keel__now_ns();
        ev_timer_set(&pd->timer,
                     deadline_ns > t ? (double)(deadline_ns - t) / 1e9 : 0,
                     0);
        ev_timer_start(p->n->loop, &pd->timer);
    }
    hdr = pr->wbuf + pr->wlen;
    keel_frame_header(hdr, kind, pd->id, body_len);
    hdr[5] = flags;
    pr->wlen += KEEL_FRAME_HEADER + body_len;
    if (pr->connected && (pr->tls == NULL || pr->tls_ready))
        ev_io_start(p->n->loop, &pr->wio); /* written on the next round */
    return hdr + KEEL_FRAME_HEADER;
}

/* Writes what is queued on the plain links now, where a socket takes it
 * at once; anything else (TLS, a full socket, an error) is left to the
 * write watcher, so that no link fails, and no callback runs, in here. */
void keel__peers_push(keel_peers *p)
{
    peer *pr;

    if (p == NULL)
        return;
    for (pr = p->list; pr != NULL; pr = pr->next) {
        if (pr->fd < 0 || !pr->connected || pr->tls != NULL ||
            pr->unw_head != NULL)
            continue;
        while (pr->woff < pr->wlen) {
            ssize_t w = write(pr->fd, pr->wbuf + pr->woff,
                              pr->wlen - pr->woff);
            if (w <= 0)
                break;
            pr->woff += (size_t)w;
            pr->written += (uint64_t)w;
            pr->write_ns = keel__now_ns();
        }
        if (pr->woff == pr->wlen) {
            pr->woff = pr->wlen = 0;
            if (!pr->read_wants_write)
                ev_io_stop(p->n->loop, &pr->wio);
        }
    }
}

size_t keel__peers_pending(const keel_peers *p)
{
    return p ? p->npending : 0;
}

void keel__peers_destroy(keel_peers *p)
{
    peer *pr;

    if (p == NULL)
        return;
    while ((pr = p->list) != NULL) {
        p->list = pr->next;
        peer_fail(pr, PF_STOPPING);
        keel_hmap_free(&pr->pending);
        free(pr->wbuf);
        free(pr->rbuf);
        free(pr);
    }
    free(p);
}
