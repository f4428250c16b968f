/* The wire-protocol server: accepts connections, parses frames, submits
 * requests and writes replies back. Replies are appended to the
 * connection's write buffer and written out once per loop iteration (the
 * prepare watcher), so a burst of replies costs one write(2).
 *
 * A connection whose client hung up while requests were in flight stays
 * allocated (socket closed) until the last of those replies is released:
 * the turns still run and commit; only their answers have nowhere to go.
 *
 * A stopping node keeps its listener and its connections until the very
 * end, answering every request ESTOPPING (the request did not run), so
 * that no client meets a refused connect or a reset while the node still
 * runs: those would read as "the request may have run". At the end
 * (keel__net_close_all) every connection that owes nothing gets a last
 * ERROR ESTOPPING quoting request id 0: whatever the client sent that was
 * not answered before it did not run.
 *
 * Hostile clients. What one connection can make the node hold is bounded:
 * a frame by --max-frame (XFER frames, which may carry a value of up to
 * KEEL_MAX_VALUE_LEN, only on connections that said they come from a
 * node), the replies it does not read by WBUF_PAUSE, the requests it has
 * in flight by PENDING_PAUSE, its unfinished unit streams by
 * --max-unit-stream (unit_stream.c, freed when it closes). The number of
 * connections is bounded by --max-connections, and by the descriptor
 * limit, which the listener survives (accept_some); a connection that
 * sends and owes nothing for --conn-idle-timeout is closed, and so is
 * one whose answers wait unread that long (it stopped reading).
 *
 * A connection the node will not serve is told why, in a last ERROR
 * quoting request id 0 that it can read: in plaintext to a plaintext
 * client on a TLS port, inside TLS to a TLS client over the connection
 * limit (refuse_conn). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/log.h"
#include "runtime/auth.h"
#include "runtime/cluster_rt.h"
#include "runtime/follow.h"
#include "runtime/info.h"
#include "runtime/node.h"
#include "runtime/obatch.h"
#include "runtime/peer.h"
#include "runtime/outbox.h"
#include "runtime/proto.h"
#include "runtime/repl.h"
#include "runtime/tls.h"

#define READ_CHUNK 65536
#define WBUF_PAUSE (8u << 20)    /* stop reading above this much unsent */
#define PENDING_PAUSE 65536      /* or this many requests in flight */

struct keel_conn {
    keel_node *n;
    int fd;
    ev_io rio, wio;
    uint8_t *rbuf;
    size_t rlen, rcap;
    /* Bytes still to come of a frame from another node that was refused
     * for its size (skip_oversized): read and dropped. */
    uint64_t skip;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    uint32_t pending;
    int closing;  /* no more reading (protocol error or the client's EOF):
                   * close once every owed reply is written */
    int dead;     /* socket closed, waiting for pending replies */
    int in_flush;
    int buried;
    int paused;
    /* The connection comes from another node of the cluster, a member:
     * it may set a call's hop count and send XFER frames (larger than
     * --max-frame). As conn_peer last found it: without TLS the
     * connection said so (INFO "peer"), which nothing proves; with TLS
     * its certificate proved it. */
    int peer;
    /* TLS (tls.h), or NULL on a node without it. tls_ready: the
     * handshake is done, and ident holds what the client's certificate
     * proved. A read that must wait for the socket to be writable, or a
     * write for it to be readable (rare in TLS 1.3), is retried from the
     * other watcher. */
    keel_tls *tls;
    int tls_ready;
    int tls_checked; /* its first byte began a TLS handshake record */
    int read_wants_write, write_wants_read;
    keel_tls_identity ident;
    /* The node refuses the connection (refuse_conn): it sends the
     * refusal, then lingers (its write side shut, what it reads dropped)
     * until the client closes or refuse_until. overflow: it came over the
     * connection limit, and is not counted in nconns. */
    int refusing, overflow, lingering;
    int refuse_code;
    const char *refuse_msg; /* static */
    ev_tstamp refuse_until;
    /* hello: the client's hello was read and answered (conn_hello); no
     * frame is read before. linger_close: a protocol error ends the
     * connection, which lingers once its last answer is written (as a
     * refusal does) so that a client still sending reads the error
     * rather than a reset. */
    int hello, linger_close;
    /* The error that ends the connection, held back (hold_last) until
     * every reply owed before it is queued: those of requests (pending)
     * and the first answers of subscriptions (sub_due). */
    uint8_t *last;
    size_t last_len;
    uint32_t sub_due;
    /* Who the connection has proven (or said) it is: auth.h. */
    keel_auth_conn auth;
    /* ev_now of the last whole frame read or answer queued: idle since. */
    ev_tstamp active_at;
    /* ev_now of the last write that took bytes (or of the accept): a
     * client that reads nothing of its answers makes no progress. */
    ev_tstamp wrote_at;
    /* Monotonic time at which the socket was last seen empty: every byte
     * read since arrived after it, even if the process was paused (and
     * its loop did not run) in between. undrained: the last round of
     * reads left bytes in the socket. */
    uint64_t quiet_ns;
    int undrained;
    keel_conn *prev, *next;
    keel_conn *flush_next;
    /* Its place in n->anon_head..anon_tail (in_anon). */
    keel_conn *anon_prev, *anon_next;
    int in_anon;
    /* Its subscriptions to actors' changes (follow.h); a connection with
     * any is not idle. follow_oom: an event did not fit in memory, the
     * socket was shut to make the connection close. */
    keel_follow_sink fsink;
    int follow_oom;
};

static void conn_close(keel_conn *c);
static void conn_linger(keel_conn *c);
static void refuse_mark(keel_conn *c);
static void accept_log(keel_node *n, const char *what, int err);

/* A closed connection is freed only from the prepare watcher, never inside
 * a callback that may still hold it. */
static void bury(keel_conn *c)
{
    if (c->buried)
        return; /* both conn_close and a last reply may get here */
    c->buried = 1;
    c->flush_next = c->n->graveyard;
    c->n->graveyard = c;
}

static void free_graveyard(keel_node *n)
{
    keel_conn *c;

    while ((c = n->graveyard) != NULL) {
        n->graveyard = c->flush_next;
        free(c->rbuf);
        free(c->wbuf);
        free(c->last);
        free(c);
    }
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss,
                      socklen_t *sslen, char *errbuf, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    struct addrinfo hints, *res = NULL;
    size_t hl;
    int rc;

    if (!keel_addr_valid(addr, strlen(addr), 1)) {
        snprintf(errbuf, errlen,
                 "address '%s' is not HOST:PORT (a host name or IPv4 "
                 "address, a port from 0 to 65535, 0 for any free one)",
                 addr);
        return KEEL_EADDR;
    }
    hl = (size_t)(colon - addr);
    if (hl >= sizeof host) {
        snprintf(errbuf, errlen, "host name too long in '%s'", addr);
        return KEEL_EADDR;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(errbuf, errlen, "cannot resolve '%s': %s", addr,
                 gai_strerror(rc));
        return KEEL_EADDR;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int keel__net_listen(keel_node *n, const char *addr, char *errbuf,
                     size_t errlen)
{
    struct sockaddr_storage ss;
    struct sockaddr_in sin;
    socklen_t sslen, sl = sizeof sin;
    int fd, one = 1, rc;

    rc = parse_addr(addr, &ss, &sslen, errbuf, errlen);
    if (rc != 0)
        return rc;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        return KEEL_EADDR;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 ||
        listen(fd, 1024) != 0) {
        int e = errno;
        snprintf(errbuf, errlen, "cannot listen on %s: %s%s", addr,
                 strerror(e),
                 e == EADDRINUSE ? " (another process holds that port: "
                                   "give this node another with --listen "
                                   "HOST:PORT, or keel_node_options.listen "
                                   "when embedded; port 0 for any)"
                                 : "");
        close(fd);
        return KEEL_EADDR;
    }
    if (getsockname(fd, (struct sockaddr *)&sin, &sl) == 0)
        n->port = ntohs(sin.sin_port);
    n->listen_fd = fd;
    return 0;
}

/* ------------------------------------------------------------- writing */

static int wbuf_reserve(keel_conn *c, size_t more)
{
    size_t need, cap;
    uint8_t *p;

    if (c->woff > 0 && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wlen - c->woff + more > c->n->stats.conn_unsent_peak)
        STAT_SET(c->n, conn_unsent_peak, c->wlen - c->woff + more);
    need = c->wlen + more;
    if (need <= c->wcap)
        return 0;
    if (c->woff > 0) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
        need = c->wlen + more;
        if (need <= c->wcap)
            return 0;
    }
    cap = c->wcap ? c->wcap : 16384;
    while (cap < need)
        cap *= 2;
    p = realloc(c->wbuf, cap);
    if (p == NULL)
        return KEEL_ENOMEM;
    c->wbuf = p;
    c->wcap = cap;
    return 0;
}

static void mark_flush(keel_conn *c)
{
    if (c->in_flush)
        return;
    c->in_flush = 1;
    c->flush_next = c->n->flush_head;
    c->n->flush_head = c;
}

static void send_frame(keel_conn *c, uint8_t kind, uint64_t id,
                       const void *body, size_t len)
{
    if (c->dead)
        return;
    if (wbuf_reserve(c, KEEL_FRAME_HEADER + len) != 0) {
        keel_warn("connection fd %d: out of memory for a reply; closing",
                  c->fd);
        conn_close(c);
        return;
    }
    keel_frame_header(c->wbuf + c->wlen, kind, id, len);
    if (len)
        memcpy(c->wbuf + c->wlen + KEEL_FRAME_HEADER, body, len);
    c->wlen += KEEL_FRAME_HEADER + len;
    c->active_at = ev_now(c->n->loop);
    mark_flush(c);
}

static void send_error(keel_conn *c, uint64_t id, int code, const char *msg)
{
    uint8_t body[2 + 512];
    size_t ml = strlen(msg);

    if (ml > 512)
        ml = 512;
    send_frame(c, KEEL_FRAME_ERROR, id, body,
               keel_error_body_encode(body, code, msg, ml));
}

/* Bytes queued and not written yet. */
static size_t unsent(const keel_conn *c)
{
    return c->wlen - c->woff;
}

/* The answer just queued (the unsent bytes beyond `before`) ends the
 * connection. The replies of requests read before it that still run
 * (durable writes wait for their flush) must reach the client first: a
 * client stops reading at an error that ends the connection
 * (docs/protocol.md), and would count a request that ran as unknown. So
 * it is taken off the queue and queued again once the last of them is
 * (keel__net_complete). */
static void hold_last(keel_conn *c, size_t before)
{
    size_t len;

    if (c->dead || (c->pending == 0 && c->sub_due == 0) ||
        unsent(c) <= before || c->last != NULL)
        return;
    len = unsent(c) - before;
    if ((c->last = malloc(len)) == NULL)
        return; /* it goes as it is */
    memcpy(c->last, c->wbuf + c->wlen - len, len);
    c->last_len = len;
    c->wlen -= len;
}

static void send_last(keel_conn *c)
{
    if (c->last == NULL || c->pending > 0 || c->sub_due > 0 || c->dead)
        return;
    if (wbuf_reserve(c, c->last_len) == 0) {
        memcpy(c->wbuf + c->wlen, c->last, c->last_len);
        c->wlen += c->last_len;
        mark_flush(c);
    }
    free(c->last);
    c->last = NULL;
    c->last_len = 0;
}

static void resume_reading(keel_conn *c);

/* read(2) on the connection, through TLS when it has it: bytes, 0 at the
 * end of the stream, or -1 with errno (EAGAIN: nothing for now). */
static ssize_t conn_recv(keel_conn *c, void *buf, size_t len)
{
    ssize_t r;

    if (c->tls == NULL)
        return read(c->fd, buf, len);
    r = keel_tls_read(c->tls, buf, len);
    if (r >= 0)
        return r;
    if (r == KEEL_TLS_WANT_WRITE) {
        c->read_wants_write = 1;
        ev_io_start(c->n->loop, &c->wio);
    }
    errno = r == KEEL_ECONN ? ECONNRESET : EAGAIN;
    return -1;
}

/* write(2) on the connection, through TLS when it has it. A TLS write
 * that waits for the socket to be readable leaves the write watcher
 * alone (it would fire at once, forever): the read watcher retries. */
static ssize_t conn_send(keel_conn *c, const void *buf, size_t len)
{
    ssize_t w;

    if (c->tls == NULL)
        return write(c->fd, buf, len);
    w = keel_tls_write(c->tls, buf, len);
    if (w >= 0)
        return w;
    if (w == KEEL_TLS_WANT_READ) {
        c->write_wants_read = 1;
        ev_io_start(c->n->loop, &c->rio);
    }
    errno = w == KEEL_ECONN ? EPIPE : EAGAIN;
    return -1;
}

/* Writes what the socket takes. Returns -1 if the connection was closed. */
static int conn_write(keel_conn *c)
{
    if (c->tls != NULL && !c->tls_ready)
        return 0; /* nothing is queued before the handshake is done */
    while (c->woff < c->wlen) {
        ssize_t w = conn_send(c, c->wbuf + c->woff, c->wlen - c->woff);
        if (w > 0) {
            c->woff += (size_t)w;
            c->wrote_at = ev_now(c->n->loop);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->write_wants_read && !ev_is_active(&c->wio))
                ev_io_start(c->n->loop, &c->wio);
            return 0;
        }
        conn_close(c); /* peer gone */
        return -1;
    }
    c->woff = c->wlen = 0;
    if (ev_is_active(&c->wio) && !c->read_wants_write)
        ev_io_stop(c->n->loop, &c->wio);
    if (c->closing && c->pending == 0 && c->sub_due == 0) {
        /* Every reply the client is owed has been written. */
        if (c->linger_close && !c->refusing)
            refuse_mark(c);
        if (c->refusing)
            conn_linger(c);
        else
            conn_close(c);
        return -1;
    }
    if (c->paused && c->pending < PENDING_PAUSE / 2)
        resume_reading(c);
    return 0;
}

/* From the prepare watcher, as the loop goes to wait: see
 * frame_deadline. */
#define NET_STALL_NS 100000000ull

static void net_mark_wait(keel_node *n)
{
    uint64_t t = keel__now_ns();

    n->net_floor_ns = n->net_prep_ns != 0 && t - n->net_prep_ns > NET_STALL_NS
                          ? n->net_prep_ns
                          : t;
    n->net_prep_ns = t;
}

void keel__net_flush_all(keel_node *n)
{
    keel_conn *c;

    free_graveyard(n);
    while ((c = n->flush_head) != NULL) {
        n->flush_head = c->flush_next;
        c->in_flush = 0;
        c->flush_next = NULL;
        if (!c->dead)
            conn_write(c);
    }
    net_mark_wait(n);
}

static int conn_handshake(keel_conn *c);
static void rio_cb(struct ev_loop *loop, ev_io *w, int revents);

static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    keel_conn *c = w->data;

    (void)revents;
    if (c->tls != NULL && !c->tls_ready) {
        conn_handshake(c);
        return;
    }
    if (conn_write(c) != 0)
        return;
    if (c->read_wants_write) {
        c->read_wants_write = 0;
        rio_cb(loop, &c->rio, EV_READ);
    }
}

/* ------------------------------------------------------------- replies */

static int conn_peer(keel_conn *c);

void keel__net_complete(keel_node *n, keel_req *req)
{
    keel_conn *c = req->u.net.conn;
    uint64_t id = req->u.net.request_id;

    c->pending--;
    if (!c->dead) {
        if (req->status != 0) {
            char msg[512];
            size_t ml = req->len < sizeof msg - 1 ? req->len : sizeof msg - 1;
            memcpy(msg, req->buf, ml);
            msg[ml] = '\0';
            send_error(c, id, req->status, msg);
        } else if (KEEL_FRAME_HEADER + (size_t)req->len >
                   (conn_peer(c) ? KEEL_PEER_MAX_FRAME
                                 : n->opts.max_frame)) {
            /* A reply to another node (a forwarded call, a state read)
             * may carry up to the largest value (the node reads such
             * frames): that node's caller, local or on a connection of
             * its own, gets what it would get from the owner itself. A
             * client's reply keeps to the max frame size. A keyed request
             * that got this far ran, and its key records that: it is
             * told so, as every later copy is (EALREADY), rather than
             * given an answer that reads as a refusal. */
            if (req->keyed) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "this request ran; its reply of %u bytes is "
                         "larger than the maximum frame size",
                         (unsigned)req->len);
                send_error(c, id, KEEL_EALREADY, msg);
            } else {
                send_error(c, id, KEEL_ETOOBIG,
                           "reply larger than the maximum frame size");
            }
        } else {
            send_frame(c, KEEL_FRAME_REPLY, id, req->buf, req->len);
        }
        send_last(c);
        if (c->paused && c->pending < PENDING_PAUSE / 2 &&
            c->wlen - c->woff < WBUF_PAUSE / 2)
            resume_reading(c);
    }
    keel__req_free(n, req);
    if (c->dead && c->pending == 0)
        bury(c);
}

/* ------------------------------------------------------------- reading */

/* Whether c comes from another node of the cluster now: its identity is
 * a node's (with TLS from its certificate CN=node:<id>, INFO "peer"
 * counting for nothing; without, from INFO "peer" NUL <id>) and that node
 * is a member in this node's latest view (auth.h): it loses the mark
 * when the node leaves or is forgotten. */
static int conn_peer(keel_conn *c)
{
    c->peer = keel__auth_peer(c->n->auth, &c->auth);
    return c->peer;
}

const char *keel__conn_node(const keel_conn *c)
{
    return c->auth.kind == KEEL_AUTH_NODE ? c->auth.name : NULL;
}

const keel_tls_identity *keel__conn_identity(const keel_conn *c)
{
    return c->tls != NULL && c->tls_ready ? &c->ident : NULL;
}

/* The deadline of a call whose frame carries a budget, on this node's
 * monotonic clock. The budget counts from when the frame reached this
 * node, bounded from below by
 *  - when its connection was last seen with nothing to read (every byte
 *    read since came later), and, for a connection that was drained then,
 *  - when the loop last went to wait for events before this round
 *    (net_floor_ns): bytes that arrived earlier would have been read in
 *    an earlier round. A round that began long after the one before
 *    (NET_STALL_NS: the cluster's tick wakes the loop every 20 ms) means
 *    the process was paused or stuck; the floor then stays at the moment
 *    before.
 * So a node that was paused counts the time a frame waited in its socket
 * against the frame's budget, rather than starting it afresh when it
 * gets round to reading. Returns 0 when the budget is used up. */
static uint64_t frame_deadline(const keel_conn *c, uint32_t budget_ms)
{
    uint64_t t = keel__now_ns();
    uint64_t since = c->quiet_ns;
    uint64_t d;

    if (!c->undrained && c->n->net_floor_ns > since)
        since = c->n->net_floor_ns;
    if (since == 0 || since > t)
        since = t;
    d = since + (uint64_t)budget_ms * 1000000u;
    return budget_ms == 0 || d <= t ? 0 : d;
}

static void handle_call(keel_conn *c, const keel_frame *f)
{
    keel_node *n = c->n;
    keel_call_body cb;
    struct keel_type_entry *te;
    keel_req *req;
    const uint8_t *body, *rkey = NULL;
    keel_from from;
    int has_from = 0;
    size_t blen;
    uint32_t budget;
    uint64_t deadline = 0;
    int rc;

    if ((f->flags & KEEL_FLAG_HOPS) != 0 && !conn_peer(c)) {
        /* Only a node forwards: a client's hop count would hold its call
         * as if it had bounced between nodes already. */
        STAT_ADD(n, frames_bad, 1);
        if (c->auth.kind == KEEL_AUTH_NODE) {
            /* A node this one does not (yet, or any more) see as a
             * member: one that just joined, before this view shows it,
             * or one that left. Its own code, so that the forwarder
             * holds the call and routes it again instead of handing a
             * refusal to its client as if the client were at fault. */
            send_error(c, f->request_id, KEEL_ENOTMEMBER,
                       "forwarded by a node that is not a member in this "
                       "node's view of the cluster (not yet, or no "
                       "longer); it did not run");
            return;
        }
        send_error(c, f->request_id, KEEL_EDENIED,
                   "hop count set by a client or a node that is no member "
                   "(any more): flags bits 0-3 are for members forwarding "
                   "a call; it did not run");
        return;
    }
    rc = keel_call_deadline_split(f, &budget, &body, &blen);
    if (rc != 0) {
        send_error(c, f->request_id, rc, "malformed call body");
        return;
    }
    if ((f->flags & KEEL_FLAG_DEADLINE) &&
        (deadline = frame_deadline(c, budget)) == 0) {
        send_error(c, f->request_id, KEEL_EDEADLINE,
                   "the call's deadline passed before it arrived; it did "
                   "not run");
        return;
    }
    if (f->flags & KEEL_FLAG_KEYED) {
        if (blen < KEEL_REQUEST_KEY_LEN) {
            send_error(c, f->request_id, KEEL_EMALFORMED,
                       "keyed call shorter than its request key");
            return;
        }
        rkey = body;
        body += KEEL_REQUEST_KEY_LEN;
        blen -= KEEL_REQUEST_KEY_LEN;
    }
    if (f->flags & KEEL_FLAG_FROM) {
        long fl;
        if (!conn_peer(c)) {
            /* The receiver trusts the sender and sequence it names to
             * drop what it applied already: only nodes say. */
            send_error(c, f->request_id, KEEL_EDENIED,
                       "an outbox message (flags bit 7) comes from a member "
                       "node only; it did not run");
            return;
        }
        fl = keel_from_parse(body, blen, &from);
        if (fl < 0) {
            send_error(c, f->request_id, (int)fl,
                       "malformed sender of an outbox message");
            return;
        }
        has_from = 1;
        body += fl;
        blen -= (size_t)fl;
    }
    rc = keel_call_body_parse(body, blen, &cb);
    if (rc != 0) {
        send_error(c, f->request_id, rc,
                   rc == KEEL_ELIMIT ? "type name or id over its limit"
                                     : "malformed call body");
        return;
    }
    if ((f->flags & KEEL_FLAG_READ) &&
        (f->kind != KEEL_FRAME_CALL || rkey != NULL || has_from ||
         !keel_read_msg_known(cb.msg, cb.msglen))) {
        send_error(c, f->request_id, KEEL_EMALFORMED,
                   "a state read (flags bit 5) is a CALL with no request "
                   "key and an empty message, \"reminders\" or a "
                   "dead-letter request");
        return;
    }
    te = keel__type_find(n, cb.type, cb.tlen);
    if (te == NULL) {
        char msg[KEEL_MAX_TYPE_LEN + 32];
        snprintf(msg, sizeof msg, "unknown actor type '%.*s'", (int)cb.tlen,
                 (const char *)cb.type);
        send_error(c, f->request_id, KEEL_ENOTYPE, msg);
        return;
    }
    req = keel__req_alloc(n, cb.msglen);
    if (req == NULL) {
        send_error(c, f->request_id, KEEL_ENOMEM, "out of memory");
        return;
    }
    keel__req_set(req, cb.msg, cb.msglen);
    req->origin = REQ_NET;
    req->is_cast = f->kind == KEEL_FRAME_CAST;
    req->read_state = (f->flags & KEEL_FLAG_READ) != 0;
    req->hops = f->flags & KEEL_FLAG_HOPS;
    req->deadline_ns = deadline;
    req->wire_deadline = deadline != 0;
    if (req->hops > 0)
        n->last_forward_in = ev_now(n->loop);
    if (rkey != NULL) {
        req->keyed = 1;
        memcpy(req->rkey, rkey, KEEL_REQUEST_KEY_LEN);
    }
    if (has_from) {
        req->from = malloc(sizeof *req->from);
        if (req->from == NULL) {
            keel__req_free(n, req);
            send_error(c, f->request_id, KEEL_ENOMEM, "out of memory");
            return;
        }
        req->from->seq = from.seq;
        req->from->tlen = (uint8_t)from.tlen;
        memcpy(req->from->type, from.type, from.tlen);
        req->from->type[from.tlen] = '\0';
        req->from->idlen = (uint16_t)from.idlen;
        memcpy(req->from->id, from.id, from.idlen);
    }
    req->u.net.conn = c;
    req->u.net.request_id = f->request_id;
    rc = keel__submit(n, te, cb.id, cb.idlen, req);
    if (rc != 0) {
        keel__req_free(n, req);
        send_error(c, f->request_id, rc, keel_strerror(rc));
        return;
    }
    c->pending++;
}

/* A batch of outbox messages from another node (obatch.h). The whole
 * frame is checked before any of it runs: one that cannot be read is
 * refused EMALFORMED, and none of its messages ran. Then each message
 * goes as a CAST from an outbox would, under the same access rule, with
 * its own outcome in the one REPLY. */
static void handle_obatch(keel_conn *c, const keel_frame *f)
{
    keel_node *n = c->n;
    const uint8_t *body, *p;
    size_t blen, left;
    uint32_t budget;
    uint64_t deadline = 0;
    unsigned count, i;
    keel_obatch_in *in;
    keel_req *reply;

    if (!conn_peer(c)) {
        STAT_ADD(n, frames_bad, 1);
        if (c->auth.kind == KEEL_AUTH_NODE)
            send_error(c, f->request_id, KEEL_ENOTMEMBER,
                       "outbox batch from a node that is not a member in "
                       "this node's view of the cluster; none of it ran");
        else
            send_error(c, f->request_id, KEEL_EDENIED,
                       "OBATCH is sent only between nodes; none of it ran");
        return;
    }
    if ((f->flags & ~KEEL_FLAG_DEADLINE) != 0 ||
        keel_call_deadline_split(f, &budget, &body, &blen) != 0 ||
        keel_obatch_check(body, blen, &count) != 0) {
        STAT_ADD(n, frames_bad, 1);
        send_error(c, f->request_id, KEEL_EMALFORMED,
                   "malformed outbox batch (truncated, a count of 0 or over "
                   "1024, or an item that runs past the body or cannot be "
                   "read); none of it ran");
        return;
    }
    if ((f->flags & KEEL_FLAG_DEADLINE) &&
        (deadline = frame_deadline(c, budget)) == 0) {
        send_error(c, f->request_id, KEEL_EDEADLINE,
                   "the batch's deadline passed before it arrived; none of "
                   "it ran");
        return;
    }
    reply = keel__req_alloc(n, 0);
    in = reply != NULL ? keel__obatch_in_create(n, reply, count) : NULL;
    if (in == NULL) {
        if (reply != NULL)
            keel__req_free(n, reply);
        send_error(c, f->request_id, KEEL_ENOMEM, "out of memory");
        return;
    }
    reply->origin = REQ_NET;
    reply->u.net.conn = c;
    reply->u.net.request_id = f->request_id;
    c->pending++;
    (void)keel_obatch_head_parse(body, blen, &count, &p, &left);
    for (i = 0; i < count; i++) {
        keel_obatch_item it;
        struct keel_type_entry *te;
        char err[320];
        int rc;
        (void)keel_obatch_item_next(&p, &left, &it); /* checked above */
        if (keel__auth_enabled(n->auth) &&
            (rc = keel__auth_check(n->auth, &c->auth, KEEL_AUTH_OP_CALL,
                                   it.call.type, it.call.tlen, err,
                                   sizeof err)) != 0) {
            keel__obatch_in_answer(in, i, rc, err, strlen(err));
            continue;
        }
        te = keel__type_find(n, it.call.type, it.call.tlen);
        if (te == NULL) {
            int l = snprintf(err, sizeof err, "unknown actor type '%.*s'",
                             (int)it.call.tlen, (const char *)it.call.type);
            keel__obatch_in_answer(in, i, KEEL_ENOTYPE, err, (size_t)l);
            continue;
        }
        keel__obatch_in_submit(in, i, te, &it, deadline);
    }
    keel__obatch_in_end(in);
}

/* ------------------------------------------------------------ following */

/* Appends a frame of two parts (an EVENT's head and its state or
 * payload) without closing the connection on failure: follow.c is
 * walking its lists. An event that does not fit shuts the socket; the
 * read watcher then closes the connection, and the subscriber
 * reconnects. */
static void send_frame2(keel_conn *c, uint8_t kind, uint8_t flags,
                        uint64_t id, const void *a, size_t alen,
                        const void *b, size_t blen)
{
    if (c->dead || c->follow_oom)
        return;
    if (wbuf_reserve(c, KEEL_FRAME_HEADER + alen + blen) != 0) {
        keel_warn("connection fd %d: out of memory for an event; closing",
                  c->fd);
        c->follow_oom = 1;
        shutdown(c->fd, SHUT_RDWR);
        return;
    }
    keel_frame_header(c->wbuf + c->wlen, kind, id, alen + blen);
    c->wbuf[c->wlen + 5] = flags;
    c->wlen += KEEL_FRAME_HEADER;
    if (alen > 0)
        memcpy(c->wbuf + c->wlen, a, alen);
    c->wlen += alen;
    if (blen > 0)
        memcpy(c->wbuf + c->wlen, b, blen);
    c->wlen += blen;
    c->active_at = ev_now(c->n->loop);
    mark_flush(c);
}

static int sub_answer_frame(keel_conn *c, uint64_t tag, int rc,
                            const keel_state_read *st, const char *msg,
                            size_t msglen)
{
    uint8_t head[KEEL_STATE_READ_HDR];

    if (rc != 0) {
        uint8_t body[2 + 512];
        if (msglen > 512)
            msglen = 512;
        send_frame2(c, KEEL_FRAME_ERROR, 0, tag, body,
                    keel_error_body_encode(body, rc, msg, msglen), NULL, 0);
        return 0;
    }
    if (st == NULL) {
        send_frame2(c, KEEL_FRAME_REPLY, 0, tag, NULL, 0, NULL, 0);
        return 0;
    }
    if (KEEL_FRAME_HEADER + sizeof head + st->blob_len > c->n->opts.max_frame)
        return KEEL_ETOOBIG;
    keel_state_read_head(head, st->has_blob, st->version, st->entries);
    send_frame2(c, KEEL_FRAME_REPLY, 0, tag, head, sizeof head, st->blob,
                st->blob_len);
    return 0;
}

/* A subscription's first answer: owed as a request's reply is (see
 * hold_last). */
static int sub_answer(keel_follow_sink *k, uint64_t tag, int rc,
                      const keel_state_read *st, const char *msg,
                      size_t msglen)
{
    keel_conn *c = k->data;

    if (sub_answer_frame(c, tag, rc, st, msg, msglen) != 0)
        return KEEL_ETOOBIG; /* answered again, with the error */
    if (c->sub_due > 0)
        c->sub_due--;
    send_last(c);
    return 0;
}

static int sub_change(keel_follow_sink *k, uint64_t tag, uint64_t version,
                      int payload, const uint8_t *data, size_t len)
{
    keel_conn *c = k->data;
    uint8_t head[KEEL_EVENT_HDR];

    /* The node's frame limit is the one its clients are told to accept
     * (docs/protocol.md). */
    if (KEEL_FRAME_HEADER + sizeof head + len > c->n->opts.max_frame)
        return KEEL_ETOOBIG;
    keel_event_head(head, KEEL_EVENT_CHANGE, version);
    send_frame2(c, KEEL_FRAME_EVENT, payload ? KEEL_FLAG_PAYLOAD : 0, tag,
                head, sizeof head, data, len);
    return 0;
}

static void sub_end(keel_follow_sink *k, uint64_t tag, uint64_t version,
                    int code, const char *reason)
{
    keel_conn *c = k->data;
    uint8_t body[KEEL_EVENT_HDR + 2 + 512];
    size_t rl = strlen(reason);

    if (rl > 512)
        rl = 512;
    send_frame2(c, KEEL_FRAME_EVENT, 0, tag, body,
                keel_event_end_encode(body, version, code, reason, rl), NULL,
                0);
}

static size_t sub_backlog(keel_follow_sink *k)
{
    keel_conn *c = k->data;

    return c->follow_oom ? SIZE_MAX : c->wlen - c->woff;
}

static const struct keel_follow_ops conn_follow_ops = {
    sub_answer, sub_change, sub_end, sub_backlog};

static void handle_subscribe(keel_conn *c, const keel_frame *f)
{
    keel_node *n = c->n;
    keel_call_body cb;
    struct keel_type_entry *te;
    uint64_t since;
    char err[320];
    int rc;

    /* Older clients send no flags: they get states only. */
    if ((f->flags & ~KEEL_FLAG_PAYLOAD) != 0) {
        send_error(c, f->request_id, KEEL_EMALFORMED,
                   "SUBSCRIBE takes no flags but bit 0 (event payloads)");
        return;
    }
    rc = keel_subscribe_parse(f->body, f->body_len, &cb, &since);
    if (rc != 0) {
        send_error(c, f->request_id, rc,
                   rc == KEEL_ELIMIT ? "type name or id over its limit"
                                     : "malformed SUBSCRIBE body: type, id "
                                       "and an 8-byte version");
        return;
    }
    te = keel__type_find(n, cb.type, cb.tlen);
    if (te == NULL) {
        snprintf(err, sizeof err, "unknown actor type '%.*s'", (int)cb.tlen,
                 (const char *)cb.type);
        send_error(c, f->request_id, KEEL_ENOTYPE, err);
        return;
    }
    c->fsink.ops = &conn_follow_ops;
    c->fsink.data = c;
    c->sub_due++; /* its first answer comes through sub_answer */
    rc = keel__follow_subscribe(n, &c->fsink, f->request_id, te, cb.id,
                                cb.idlen, since,
                                (f->flags & KEEL_FLAG_PAYLOAD)
                                    ? KEEL_FOLLOW_PAYLOADS
                                    : 0,
                                err, sizeof err);
    if (rc != 0) {
        c->sub_due--;
        send_error(c, f->request_id, rc, err);
    }
}

static void handle_unsubscribe(keel_conn *c, const keel_frame *f)
{
    int rc = keel__follow_unsubscribe(c->n, &c->fsink, f->request_id);

    if (rc == 1 && c->sub_due > 0)
        c->sub_due--; /* its first answer will not come */
    if (rc < 0) {
        send_error(c, f->request_id, KEEL_ENOTFOUND,
                   "no subscription with this request id on the "
                   "connection");
        return;
    }
    send_frame(c, KEEL_FRAME_REPLY, f->request_id, NULL, 0);
}

/* The access rules (auth.c, docs/security.md): a request this
 * connection's identity may not make is answered EUNAUTH or EDENIED here
 * and goes no further. Returns nonzero when it was refused. */
static int auth_refused(keel_conn *c, const keel_frame *f)
{
    char err[320];
    int rc = keel__auth_frame(c->n->auth, &c->auth, f, err, sizeof err);

    if (rc != 0)
        send_error(c, f->request_id, rc, err);
    return rc;
}

/* Handles one whole frame. Returns -1 when the connection must close. */
static int handle_frame(keel_conn *c, const keel_frame *f)
{
    keel_node *n = c->n;

    STAT_ADD(n, frames_in, 1);
    c->active_at = ev_now(n->loop);
    if (keel__auth_enabled(n->auth) && auth_refused(c, f))
        /* A refused stream of a unit is closed as one from a connection
         * that is no peer is (below): more of it may be on its way. */
        return f->kind == KEEL_FRAME_XFER || f->kind == KEEL_FRAME_REPL ? -1
                                                                        : 0;
    switch (f->kind) {
    case KEEL_FRAME_CALL:
    case KEEL_FRAME_CAST:
        handle_call(c, f);
        return 0;
    case KEEL_FRAME_STAT: {
        char text[4096]; /* every figure at its widest fits */
        keel_stats st;
        size_t len;
        keel_node_stats(n, &st);
        len = keel_stats_format(&st, text, sizeof text);
        if (len >= sizeof text)
            len = sizeof text - 1;
        send_frame(c, KEEL_FRAME_REPLY, f->request_id, text, len);
        return 0;
    }
    case KEEL_FRAME_PING:
        send_frame(c, KEEL_FRAME_PONG, f->request_id, f->body, f->body_len);
        return 0;
    case KEEL_FRAME_SUBSCRIBE:
        handle_subscribe(c, f);
        return 0;
    case KEEL_FRAME_UNSUBSCRIBE:
        handle_unsubscribe(c, f);
        return 0;
    case KEEL_FRAME_OBATCH:
        handle_obatch(c, f);
        return 0;
    case KEEL_FRAME_INFO: {
        char *text = NULL, err[320];
        const uint8_t *tok;
        size_t len = 0;
        int rc;
        if (keel__auth_is_login(f, &tok, &len)) {
            char reply[400];
            size_t rl = 0;
            rc = keel__auth_login(n->auth, &c->auth, c->fd, tok, len, reply,
                                  sizeof reply, &rl, err, sizeof err);
            if (rc != 0)
                send_error(c, f->request_id, rc, err);
            else
                send_frame(c, KEEL_FRAME_REPLY, f->request_id, reply, rl);
            /* Too many failed tokens: closed once the refusal is out. */
            return keel__auth_conn_spent(n->auth, &c->auth) ? -1 : 0;
        }
        if (f->body_len >= 4 && memcmp(f->body, "peer", 4) == 0 &&
            (f->body_len == 4 || f->body[4] == '\0')) {
            /* A node's connection to this one says so (peer.c). With
             * TLS only its certificate counts (conn_peer), and the
             * claim changes nothing. */
            if (c->tls == NULL &&
                (rc = keel__auth_peer_claim(n->auth, &c->auth, f->body,
                                            f->body_len, err,
                                            sizeof err)) != 0) {
                send_error(c, f->request_id, rc, err);
                return 0;
            }
            send_frame(c, KEEL_FRAME_REPLY, f->request_id, "peer", 4);
            return 0;
        }
        rc = keel__info(n, f->body, f->body_len, &text, &len, err,
                        sizeof err);
        if (rc != 0)
            send_error(c, f->request_id, rc, err);
        else
            send_frame(c, KEEL_FRAME_REPLY, f->request_id, text, len);
        free(text);
        return 0;
    }
    case KEEL_FRAME_XFER:
    case KEEL_FRAME_REPL: {
        /* A unit streamed from another node, or replicated writes from a
         * unit's primary (cluster mode only, runtime/repl.h). */
        keel_req *req;
        int rc;
        if (!conn_peer(c)) {
            /* Refused before its body is looked at; the connection is
             * closed, as it may have more of the stream on its way. */
            STAT_ADD(n, frames_bad, 1);
            send_error(c, f->request_id, KEEL_EDENIED,
                       f->kind == KEEL_FRAME_XFER
                           ? "XFER is sent only between nodes"
                           : "REPL is sent only between nodes");
            return -1;
        }
        req = keel__req_alloc(n, 0);
        if (req == NULL) {
            send_error(c, f->request_id, KEEL_ENOMEM, "out of memory");
            return 0;
        }
        req->origin = REQ_NET;
        req->u.net.conn = c;
        req->u.net.request_id = f->request_id;
        rc = n->cluster == NULL            ? KEEL_EPROTO
             : f->kind == KEEL_FRAME_REPL ? keel__repl_frame(n, f, req)
                                          : keel__cluster_xfer_frame(n, f, req);
        if (rc == 0) {
            c->pending++;
            return 0;
        }
        keel__req_free(n, req);
        if (rc == 1) {
            send_frame(c, KEEL_FRAME_REPLY, f->request_id, NULL, 0);
            return 0;
        }
        STAT_ADD(n, frames_bad, 1);
        send_error(c, f->request_id, rc,
                   n->cluster == NULL ? "not in cluster mode"
                   : f->kind == KEEL_FRAME_REPL
                       ? rc == KEEL_EDENIED
                             ? "replicated writes in another node's name "
                               "than this connection's: refused"
                             : "replicated writes refused"
                   : rc == KEEL_ETOOBIG
                       ? "unit stream over --max-unit-stream"
                       : "unit stream refused");
        return rc == KEEL_EPROTO ? -1 : 0;
    }
    default:
        /* REPLY, ERROR, PONG and EVENT travel only from server to
         * client. */
        STAT_ADD(n, frames_bad, 1);
        send_error(c, f->request_id, KEEL_EPROTO,
                   "frame kind not accepted by a server");
        return -1;
    }
}

static void pause_reading(keel_conn *c)
{
    if (!c->paused) {
        c->paused = 1;
        ev_io_stop(c->n->loop, &c->rio);
    }
}

/* The largest frame accepted at p (avail bytes of it known) on c:
 * max_frame, except for XFER frames from another node of the cluster,
 * which carry whole records and may need room for the largest value
 * whatever --max-frame says, calls from another node (room for what it
 * added around the message, KEEL_PEER_CALL_ENVELOPE), and calls that
 * carry a budget. A standalone
 * node, or a connection that did not say it comes from a node, gets no
 * such room: there it would only let a client make the node buffer 64 MiB
 * for a frame it refuses anyway. */
#define XFER_MAX_FRAME KEEL_PEER_MAX_FRAME
_Static_assert(KEEL_PEER_CALL_ENVELOPE >=
                   KEEL_FRAME_HEADER + KEEL_DEADLINE_LEN +
                       KEEL_REQUEST_KEY_LEN +
                       (8 + 1 + KEEL_MAX_TYPE_LEN + 2 + KEEL_MAX_ID_LEN) +
                       (1 + KEEL_MAX_TYPE_LEN + 2 + KEEL_MAX_ID_LEN),
               "a forwarded message's envelope: budget, key, sender "
               "prefix, receiver");

static size_t frame_limit(keel_conn *c, const uint8_t *p, size_t avail)
{
    const keel_node *n = c->n;
    size_t m = n->opts.max_frame;
    /* A node's calls get the envelope's room whether or not this node
     * counts it a member yet: one that joined a moment ago is answered
     * ENOTMEMBER, which it holds and routes again, rather than ETOOBIG
     * and a closed link. (1 KiB buffers nothing worth refusing.) */
    int node = n->cluster != NULL && c->auth.kind == KEEL_AUTH_NODE;
    /* What a node adds around a message it sends on (its budget, an
     * outbox sender prefix, the receiver's name around a message of
     * keel_turn_send) must not make a message that fitted the limit too
     * large for the next node. */
    size_t call = m + (node ? KEEL_PEER_CALL_ENVELOPE : KEEL_DEADLINE_LEN);
    int known = avail >= 6;

    if (known && p[4] != KEEL_FRAME_XFER && p[4] != KEEL_FRAME_REPL)
        return (p[4] == KEEL_FRAME_CALL || p[4] == KEEL_FRAME_CAST) &&
                       (node || (p[5] & KEEL_FLAG_DEADLINE))
                   ? call
                   : m;
    /* XFER or REPL, or a frame whose kind and flags are not in yet (a read
     * may end anywhere in a frame): then the most this connection may be
     * allowed, and the limit is decided once they are (the header is not
     * parsed before it is whole anyway). */
    if (m < XFER_MAX_FRAME && n->cluster != NULL && conn_peer(c))
        return !known && call > XFER_MAX_FRAME ? call : XFER_MAX_FRAME;
    return known ? m : call;
}

/* ------------------------------------------------------------- hello */

/* Appends bytes that are not a frame (a hello, an HTTP answer). */
static void send_raw(keel_conn *c, const void *p, size_t len)
{
    if (c->dead)
        return;
    if (wbuf_reserve(c, len) != 0) {
        conn_close(c);
        return;
    }
    memcpy(c->wbuf + c->wlen, p, len);
    c->wlen += len;
    mark_flush(c);
}

/* 1 when b begins like an HTTP request line (a method in capitals, then
 * a space), 0 when it does not, -1 while too few bytes tell. */
static int looks_http(const uint8_t *b, size_t len)
{
    size_t i;

    for (i = 0; i < len && i < 16; i++) {
        if (b[i] == ' ')
            return i >= 3;
        if (b[i] < 'A' || b[i] > 'Z')
            return 0;
    }
    return i < 16 ? -1 : 0;
}

/* What an HTTP client that reached the wire port gets: an answer it can
 * show, which tells the operator which port is which. */
static void hello_http(keel_conn *c)
{
    char body[300], resp[600];
    int port = keel_node_http_port(c->n), bl, rl;

    if (port > 0)
        bl = snprintf(body, sizeof body,
                      "This is the keel wire protocol port, not HTTP. This "
                      "node serves its HTTP API on port %d (keeld --http).\n",
                      port);
    else
        bl = snprintf(body, sizeof body,
                      "This is the keel wire protocol port, not HTTP. A "
                      "node serves its HTTP API on the port given with "
                      "keeld --http HOST:PORT.\n");
    rl = snprintf(resp, sizeof resp,
                  "HTTP/1.1 400 Bad Request\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: %d\r\n"
                  "Connection: close\r\n\r\n%s",
                  bl, body);
    send_raw(c, resp, (size_t)rl);
}

/* Reads the client's hello at the front of c->rbuf and answers with this
 * node's. Returns the bytes it took (KEEL_HELLO_LEN), 0 while more are
 * needed, -1 when c is refused: what it sent is not a keel client's
 * hello, or names another version. The refusal is what that client can
 * read: an HTTP client an HTTP answer; a client of another version this
 * node's hello, then an ERROR naming both versions; anything else a bare
 * ERROR, which an older keel client (frames without a hello) reads as
 * any other. Nothing the connection sent runs. */
static long conn_hello(keel_conn *c)
{
    static const char no_hello[] =
        "no protocol hello: this node speaks keel protocol version "
        "1, whose connections begin with the 8-byte hello \"KEEL\" + "
        "version (docs/protocol.md); the connection sent a frame without "
        "one (an older client?), and nothing it sent ran";
    static const char not_keel[] =
        "not a keel client: a connection to the keel wire port begins "
        "with the 8-byte hello \"KEEL\" + version (docs/protocol.md); "
        "nothing it sent ran";
    uint8_t hello[KEEL_HELLO_LEN];
    unsigned version;
    char msg[200];
    long r = keel_hello_parse(c->rbuf, c->rlen, &version);
    int http = 0;

    if (r == 0)
        return 0;
    if (r > 0) {
        keel_hello_encode_flags(hello, KEEL_PROTO_VERSION,
                                KEEL_HELLO_OBATCH | KEEL_HELLO_UNITCHECK);
        send_raw(c, hello, sizeof hello);
        if (version == KEEL_PROTO_VERSION) {
            c->hello = 1;
            return r;
        }
        snprintf(msg, sizeof msg,
                 "unsupported protocol version %u (this node speaks %u); "
                 "nothing sent on this connection ran",
                 version, KEEL_PROTO_VERSION);
        send_error(c, 0, KEEL_EPROTO, msg);
    } else if ((http = looks_http(c->rbuf, c->rlen)) < 0) {
        return 0;
    } else if (http) {
        hello_http(c);
    } else {
        /* A frame's length begins with 0 below 16 MiB: a client older
         * than the hello. */
        send_error(c, 0, KEEL_EPROTO, c->rbuf[0] == 0 ? no_hello : not_keel);
    }
    STAT_ADD(c->n, frames_bad, 1);
    accept_log(c->n,
               r > 0  ? "a client of another protocol version: told so, "
                        "and closed"
               : http ? "an HTTP request on the wire port: answered 400, "
                        "and closed"
                      : "a connection without the protocol hello: told "
                        "so, and closed",
               0);
    refuse_mark(c);
    c->rlen = 0;
    c->closing = 1;
    return -1;
}

/* A call, a cast or an outbox batch from another node, larger than this
 * node takes (nodes started with other --max-frame values, as during a
 * rolling change of it), with its header in (have bytes at p): answered
 * ETOOBIG, and its bytes are dropped as they come (c->skip) while the
 * link stays up. Closing it would fail every other call on the link and,
 * for an outbox message the link carries again and again, do so on each
 * try. Returns how many of the have bytes it took, or 0 when the frame is
 * not one of those (then the connection closes as for any other). */
static size_t skip_oversized(keel_conn *c, const keel_frame *f,
                             const uint8_t *p, size_t have, size_t limit)
{
    uint64_t total;
    char msg[200];

    if (c->n->cluster == NULL || c->auth.kind != KEEL_AUTH_NODE ||
        have < KEEL_FRAME_HEADER ||
        (f->kind != KEEL_FRAME_CALL && f->kind != KEEL_FRAME_CAST &&
         f->kind != KEEL_FRAME_OBATCH))
        return 0;
    total = 4 + ((uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 |
                 (uint64_t)p[2] << 8 | p[3]);
    snprintf(msg, sizeof msg,
             "frame of %llu bytes over this node's maximum frame size of %zu "
             "bytes (keeld --max-frame; give every node the same)",
             (unsigned long long)total, limit);
    send_error(c, f->request_id, KEEL_ETOOBIG, msg);
    if (total <= have)
        return (size_t)total;
    c->skip = total - have;
    return have;
}

/* Drops what c->skip says is left of a refused frame from the front of
 * the bytes just read. */
static void skip_take(keel_conn *c)
{
    size_t k = c->skip < c->rlen ? (size_t)c->skip : c->rlen;

    memmove(c->rbuf, c->rbuf + k, c->rlen - k);
    c->rlen -= k;
    c->skip -= k;
}

static void process_input(keel_conn *c)
{
    keel_node *n = c->n;
    size_t off = 0;

    if (!c->hello && !c->dead && !c->closing && c->rlen > 0) {
        long h = conn_hello(c);

        if (h == 0 || c->dead)
            return;
        if (h < 0) {
            pause_reading(c);
            mark_flush(c);
            return;
        }
        off = (size_t)h;
    }
    while (!c->dead && !c->closing && off < c->rlen) {
        keel_frame f;
        size_t limit;
        /* A full read buffer holds tens of thousands of small frames:
         * stop taking them at the bounds, not after the whole buffer, or
         * one pass could queue many times WBUF_PAUSE of answers. What is
         * left waits in rbuf for resume_reading. */
        if (c->pending >= PENDING_PAUSE || unsent(c) >= WBUF_PAUSE)
            break;
        limit = frame_limit(c, c->rbuf + off, c->rlen - off);
        long r = keel_frame_parse(c->rbuf + off, c->rlen - off, limit, &f);
        size_t before = unsent(c);
        if (r == 0)
            break;
        if (r == KEEL_ETOOBIG && c->rlen - off < KEEL_FRAME_HEADER &&
            n->cluster != NULL && c->auth.kind == KEEL_AUTH_NODE)
            break; /* from a node: its kind and id decide (skip_oversized) */
        if (r == KEEL_ETOOBIG) {
            size_t took = skip_oversized(c, &f, c->rbuf + off, c->rlen - off,
                                         limit);
            if (took > 0) {
                STAT_ADD(n, frames_bad, 1);
                off += took;
                continue;
            }
        }
        if (r < 0) {
            char msg[160];
            const uint8_t *b = c->rbuf + off;
            STAT_ADD(n, frames_bad, 1);
            if (r == KEEL_ETOOBIG)
                snprintf(msg, sizeof msg,
                         "frame of %llu bytes over the maximum frame size "
                         "of %zu bytes (keeld --max-frame); the connection "
                         "closes",
                         4ull + ((unsigned long long)b[0] << 24 |
                                 (unsigned long long)b[1] << 16 |
                                 (unsigned long long)b[2] << 8 | b[3]),
                         c->rlen - off < 6 ? n->opts.max_frame : limit);
            else
                snprintf(msg, sizeof msg, "malformed frame header");
            send_error(c, f.request_id, (int)r, msg);
            hold_last(c, before);
            c->closing = 1;
            c->linger_close = 1;
            break;
        }
        if (handle_frame(c, &f) != 0) {
            hold_last(c, before);
            c->closing = 1;
            c->linger_close = 1;
            break;
        }
        off += (size_t)r;
    }
    if (c->dead)
        return;
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    if (c->closing) {
        pause_reading(c);
        mark_flush(c);
        return;
    }
    if (c->pending >= PENDING_PAUSE || c->wlen - c->woff >= WBUF_PAUSE)
        pause_reading(c);
}

/* ------------------------------------------------------------ refusals */

/* A connection the node will not serve gets one ERROR quoting request id
 * 0, which says why and that nothing it sent ran, and is closed. The
 * client must be able to read it: over TLS it comes after the handshake,
 * and a client that sent requests meanwhile must get it before the close,
 * since closing a socket with unread input resets the connection and a
 * reset can destroy what the client has not read yet. So a refused
 * connection lives on for at most REFUSE_LINGER_S: its handshake, the
 * frame, then its write side shut and what it sends read and dropped
 * until it closes (conn_linger). The time is bounded per connection;
 * the number is bounded by --max-connections for those that came under
 * it, and for those over it (accept_some, TLS only) by OVERFLOW_TLS_MAX
 * at once and OVERFLOW_TLS_PER_S begun a second: every one costs a
 * handshake. Beyond those, a connection over the limit is closed at once
 * without a word, as a plaintext client would be were the node out of
 * descriptors. */
#define REFUSE_LINGER_S 2.0
#define REFUSE_TICK_S 0.25
#define OVERFLOW_TLS_MAX 16
#define OVERFLOW_TLS_PER_S 64

static const char refuse_overload[] =
    "node at its connection limit: connection refused";
static const char refuse_evicted[] =
    "node at its connection limit: this connection, the oldest without "
    "credentials, is closed to make room";
static const char refuse_plaintext[] =
    "this port requires TLS: the connection sent plaintext, and nothing "
    "it sent ran; connect with TLS (keel --tls-ca FILE)";

/* Counts c among the refused connections, which linger at most
 * REFUSE_LINGER_S from now. */
static void refuse_mark(keel_conn *c)
{
    keel_node *n = c->n;

    if (c->refusing)
        return;
    c->refusing = 1;
    c->refuse_until = ev_now(n->loop) + REFUSE_LINGER_S;
    n->nrefusing++;
    if (!ev_is_active(&n->refuse_timer))
        ev_timer_start(n->loop, &n->refuse_timer);
}

/* Marks c refused with code and msg (static). With TLS the frame waits
 * for the handshake (conn_handshake); without, it is queued now. */
static void refuse_conn(keel_conn *c, int code, const char *msg)
{
    refuse_mark(c);
    c->refuse_code = code;
    c->refuse_msg = msg;
    if (c->tls != NULL && !c->tls_ready)
        return;
    c->rlen = 0; /* nothing it sent is handled */
    send_error(c, 0, code, msg);
    c->closing = 1;
    pause_reading(c);
}

/* The refusal is written: close_notify, the write side shut, and what
 * the client still sends read and dropped until it closes too. */
static void conn_linger(keel_conn *c)
{
    keel_node *n = c->n;

    if (c->lingering)
        return;
    c->lingering = 1;
    if (c->tls != NULL)
        keel_tls_shutdown(c->tls);
    shutdown(c->fd, SHUT_WR);
    ev_io_stop(n->loop, &c->wio);
    c->paused = 0;
    ev_io_start(n->loop, &c->rio);
}

/* Reads and drops what a lingering connection sends, a bounded amount a
 * wakeup; closes it at the end of its stream. */
static void linger_read(keel_conn *c)
{
    uint8_t sink[16384];
    int i;

    for (i = 0; i < 4; i++) {
        ssize_t r = read(c->fd, sink, sizeof sink);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(c); /* the client closed too, or is gone */
        return;
    }
}

/* Closes refused connections whose time is up. */
static void refuse_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_node *n = w->data;
    ev_tstamp t = ev_now(loop);
    keel_conn *c, *next;

    (void)revents;
    for (c = n->conns; c != NULL && n->nrefusing > 0; c = next) {
        next = c->next;
        if (c->refusing && !c->dead && t >= c->refuse_until)
            conn_close(c);
    }
    if (n->nrefusing == 0)
        ev_timer_stop(loop, w);
}

/* A TLS connection's first byte, looked at before TLS takes it: a TLS
 * client begins with a handshake record (content type 22). A plaintext
 * keel client begins with a frame's length, an HTTP client with a
 * letter; either would fail the handshake without learning why, so it
 * is told in plaintext, which it can read (refuse_conn). Returns 1 for
 * TLS, 0 while nothing has come, -1 when c was refused or closed. */
#define TLS_RECORD_HANDSHAKE 0x16

static int conn_check_tls(keel_conn *c)
{
    uint8_t b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK);

    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (r <= 0) {
        conn_close(c); /* closed (or reset) before it said anything */
        return -1;
    }
    if (b == TLS_RECORD_HANDSHAKE) {
        c->tls_checked = 1;
        return 1;
    }
    accept_log(c->n, "a plaintext client on the TLS port: told that it "
                     "requires TLS, and closed", 0);
    keel_tls_free(c->tls);
    c->tls = NULL;
    refuse_conn(c, KEEL_EUNAUTH, refuse_plaintext);
    mark_flush(c);
    return -1;
}

/* Drives the TLS handshake of c. Returns 1 once it is done, 0 while it
 * waits for the socket (or c is refused: its refusal is queued), -1 when
 * it failed and c was closed: a certificate that does not verify, a
 * client that hung up. */
static int conn_handshake(keel_conn *c)
{
    keel_node *n = c->n;
    char err[320];
    int rc = keel_tls_handshake(c->tls, err, sizeof err);

    if (rc == KEEL_TLS_WANT_READ) {
        if (ev_is_active(&c->wio))
            ev_io_stop(n->loop, &c->wio);
        return 0;
    }
    if (rc == KEEL_TLS_WANT_WRITE) {
        if (!ev_is_active(&c->wio))
            ev_io_start(n->loop, &c->wio);
        return 0;
    }
    if (ev_is_active(&c->wio))
        ev_io_stop(n->loop, &c->wio);
    if (rc != 0) {
        char what[400];
        snprintf(what, sizeof what, "TLS handshake failed on fd %d: %s",
                 c->fd, err);
        accept_log(n, what, 0);
        conn_close(c);
        return -1;
    }
    c->tls_ready = 1;
    if (c->refusing) {
        /* Told why in TLS, which it now reads; nothing it sends runs. */
        refuse_conn(c, c->refuse_code, c->refuse_msg);
        return 0;
    }
    keel_tls_peer_identity(c->tls, &c->ident);
    /* What the certificate proved is the connection's identity for the
     * role checks too (auth.h): node:ID a node, client:NAME a client,
     * admin:NAME an administrator; any other name proves nothing. */
    if (c->ident.kind != KEEL_TLS_ANON) {
        char cn[KEEL_TLS_NAME_MAX + 8];

        snprintf(cn, sizeof cn, "%s%s",
                 c->ident.kind == KEEL_TLS_NODE     ? "node:"
                 : c->ident.kind == KEEL_TLS_CLIENT ? "client:"
                                                    : "",
                 c->ident.name);
        (void)keel__auth_conn_from_cert(&c->auth, cn);
    }
    keel_debug("connection fd %d: TLS, %s%s", c->fd,
               c->ident.kind == KEEL_TLS_NODE     ? "node "
               : c->ident.kind == KEEL_TLS_CLIENT ? "client "
               : c->ident.kind == KEEL_TLS_OTHER  ? "certificate "
                                                  : "no certificate",
               c->ident.name);
    return 1;
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    keel_conn *c = w->data;
    int rounds;

    (void)loop;
    (void)revents;
    if (c->lingering) {
        linger_read(c);
        return;
    }
    if (c->tls != NULL) {
        if (!c->tls_checked && conn_check_tls(c) <= 0)
            return;
        if (!c->tls_ready && conn_handshake(c) <= 0)
            return;
        if (c->write_wants_read) {
            c->write_wants_read = 0;
            if (conn_write(c) != 0)
                return;
            if (c->paused || c->closing) {
                if (!c->write_wants_read)
                    ev_io_stop(c->n->loop, &c->rio);
                return;
            }
        }
    }
    for (rounds = 0; rounds < 16 && !c->dead && !c->closing && !c->paused;
         rounds++) {
        ssize_t r;
        size_t want;
        uint64_t t;
        if (c->rcap - c->rlen < READ_CHUNK / 4) {
            /* Room for the largest frame plus one read. */
            size_t cap = c->rcap ? c->rcap * 2 : READ_CHUNK;
            size_t limit = frame_limit(c, c->rbuf, c->rlen) + READ_CHUNK;
            uint8_t *p;
            if (cap > limit && c->rcap >= limit)
                cap = c->rcap;
            p = cap > c->rcap ? realloc(c->rbuf, cap) : c->rbuf;
            if (p == NULL) {
                conn_close(c);
                return;
            }
            c->rbuf = p;
            c->rcap = cap;
        }
        want = c->rcap - c->rlen;
        /* Read before the read: whatever it leaves behind came later. */
        t = keel__now_ns();
        r = conn_recv(c, c->rbuf + c->rlen, want);
        if (r > 0) {
            c->rlen += (size_t)r;
            if (c->skip > 0)
                skip_take(c);
            process_input(c);
            /* A short read drained the socket: asking again would only
             * return EAGAIN, one system call per request for nothing.
             * The watcher is level-triggered, so data that arrives
             * meanwhile wakes it again. TLS returns one record at a
             * time, so a short answer says nothing there: it tells
             * whether its own last read of the socket was short. */
            if (c->tls == NULL ? (size_t)r < want
                               : keel_tls_drained(c->tls)) {
                if (!c->dead) {
                    c->quiet_ns = t;
                    c->undrained = 0;
                }
                return;
            }
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->quiet_ns = t;
            c->undrained = 0;
            return;
        }
        if (r == 0) {
            /* The client finished sending; it may still read the replies
             * to what it sent (a half-close). A frame it began and did not
             * finish is malformed: say so, quoting its request id if it
             * arrived. */
            if (c->rlen > 0 && !c->hello) {
                STAT_ADD(c->n, frames_bad, 1);
                send_error(c, 0, KEEL_EPROTO,
                           "truncated hello: the stream ended inside it");
                c->rlen = 0;
            } else if (c->rlen > 0) {
                uint64_t id = 0;
                size_t i, before = unsent(c);
                if (c->rlen >= KEEL_FRAME_HEADER)
                    for (i = 8; i < 16; i++)
                        id = (id << 8) | c->rbuf[i];
                STAT_ADD(c->n, frames_bad, 1);
                send_error(c, id, KEEL_EMALFORMED,
                           "truncated frame: the stream ended inside it");
                hold_last(c, before);
                c->rlen = 0;
            }
            c->closing = 1;
            pause_reading(c);
            mark_flush(c);
            return;
        }
        conn_close(c); /* a reset or another error: nobody will read */
        return;
    }
    c->undrained = 1; /* more may wait: bytes older than this round */
    /* Bytes TLS has taken from the socket wake no watcher: come back. */
    if (c->tls != NULL && !c->dead && !c->closing && !c->paused &&
        keel_tls_pending(c->tls))
        ev_feed_event(c->n->loop, &c->rio, EV_READ);
}

static void resume_reading(keel_conn *c)
{
    if (c->paused && !c->dead && !c->closing) {
        c->paused = 0;
        ev_io_start(c->n->loop, &c->rio);
        /* Frames already buffered wait for no new byte; nor do bytes
         * TLS holds. */
        process_input(c);
        if (c->tls != NULL && !c->dead && !c->paused && !c->closing &&
            keel_tls_pending(c->tls))
            ev_feed_event(c->n->loop, &c->rio, EV_READ);
    }
}

/* ---------------------------------------------------------- connections */

static void anon_unlink(keel_conn *c)
{
    keel_node *n = c->n;

    if (!c->in_anon)
        return;
    if (c->anon_prev)
        c->anon_prev->anon_next = c->anon_next;
    else
        n->anon_head = c->anon_next;
    if (c->anon_next)
        c->anon_next->anon_prev = c->anon_prev;
    else
        n->anon_tail = c->anon_prev;
    c->anon_prev = c->anon_next = NULL;
    c->in_anon = 0;
}

static void conn_close(keel_conn *c)
{
    keel_node *n = c->n;

    if (c->dead)
        return;
    ev_io_stop(n->loop, &c->rio);
    ev_io_stop(n->loop, &c->wio);
    if (c->tls != NULL) {
        keel_tls_shutdown(c->tls); /* close_notify, if it fits */
        keel_tls_free(c->tls);
        c->tls = NULL;
    }
    close(c->fd);
    c->fd = -1;
    c->dead = 1;
    keel__follow_sink_close(n, &c->fsink); /* before anything is sent */
    c->sub_due = 0;
    if (c->in_flush) {
        keel_conn **pp;
        for (pp = &n->flush_head; *pp != NULL; pp = &(*pp)->flush_next) {
            if (*pp == c) {
                *pp = c->flush_next;
                break;
            }
        }
        c->in_flush = 0;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        n->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    anon_unlink(c);
    if (c->refusing)
        n->nrefusing--;
    if (c->overflow) {
        n->noverflow--;
    } else {
        STAT_SUB(n, connections, 1);
        n->nconns--;
    }
    if (n->cluster != NULL)
        keel__cluster_conn_closed(n, c); /* its unfinished unit streams */
    if (c->pending == 0)
        bury(c);
}

/* A connection the node will not serve gets one ERROR quoting request id
 * 0 (nothing it sends runs) and is closed at once. Written straight to
 * the fresh socket, whose buffer is empty: a write that does not fit is
 * dropped. For the refusals that wait to be read, see refuse_conn. */
static void refuse(keel_node *n, int fd, int code, const char *msg)
{
    uint8_t frame[KEEL_FRAME_HEADER + 2 + 128];
    size_t ml = strlen(msg), bl;

    if (n->tls != NULL) {
        /* A TLS client could not read a plaintext frame: just close. */
        close(fd);
        return;
    }

    if (ml > 128)
        ml = 128;
    bl = keel_error_body_encode(frame + KEEL_FRAME_HEADER, code, msg, ml);
    keel_frame_header(frame, KEEL_FRAME_ERROR, 0, bl);
    (void)!send(fd, frame, KEEL_FRAME_HEADER + bl, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
}

/* Refusals come in floods (a client that reconnects at once, a node out
 * of descriptors): one line a second at most, with how many were not
 * logged. */
static void accept_log(keel_node *n, const char *what, int err)
{
    ev_tstamp t = ev_now(n->loop);

    if (n->accept_log_at != 0 && t - n->accept_log_at < 1.0) {
        n->accept_log_quiet++;
        return;
    }
    if (n->accept_log_quiet > 0)
        keel_warn("accept: %s%s%s (and %llu more refusals since the last "
                  "such line)",
                  what, err ? ": " : "", err ? strerror(err) : "",
                  (unsigned long long)n->accept_log_quiet);
    else
        keel_warn("accept: %s%s%s", what, err ? ": " : "",
                  err ? strerror(err) : "");
    n->accept_log_at = t;
    n->accept_log_quiet = 0;
}

/* The listener rests this long when accept fails and the descriptor
 * reserve cannot help: it is level-triggered, and would otherwise call
 * back at once, forever, starving every connection of the loop. */
#define ACCEPT_REST_S 0.1

static void accept_rest(keel_node *n)
{
    if (ev_is_active(&n->accept_rest))
        return;
    ev_io_stop(n->loop, &n->listen_watcher);
    ev_timer_set(&n->accept_rest, ACCEPT_REST_S, 0.);
    ev_timer_start(n->loop, &n->accept_rest);
}

static void accept_rest_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_node *n = w->data;

    (void)loop;
    (void)revents;
    if (n->reserve_fd < 0)
        n->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (n->listen_fd >= 0)
        ev_io_start(n->loop, &n->listen_watcher);
}

/* Out of descriptors (EMFILE, ENFILE): the connection waiting on the
 * listener is taken with the descriptor kept in reserve, told EOVERLOAD
 * and closed, so that the listener does not stay readable. Returns 1 when
 * one was refused so, 0 when the listener must rest. */
static int accept_overflow(keel_node *n, int err)
{
    int fd;

    accept_log(n, "out of file descriptors, refusing connections", err);
    if (n->reserve_fd < 0)
        return 0;
    close(n->reserve_fd);
    fd = accept4(n->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        refuse(n, fd, KEEL_EOVERLOAD,
               "node out of file descriptors: connection refused");
    /* Another thread may take the descriptor first: then rest. */
    n->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0 && n->reserve_fd >= 0;
}

/* Whether one more TLS connection over the connection limit may be told
 * so (refuse_conn): within OVERFLOW_TLS_MAX at once and
 * OVERFLOW_TLS_PER_S a second. */
static int overflow_admit(keel_node *n)
{
    ev_tstamp t = ev_now(n->loop);

    if (t - n->overflow_second >= 1.0) {
        n->overflow_second = t;
        n->overflow_in_second = 0;
    }
    if (n->noverflow >= OVERFLOW_TLS_MAX ||
        n->overflow_in_second >= OVERFLOW_TLS_PER_S)
        return 0;
    n->overflow_in_second++;
    return 1;
}

/* At the connection limit, with access control on: the oldest connection
 * that still has proven nothing (no token, no certificate identity, no
 * node's claim) gets one ERROR EOVERLOAD quoting request id 0 and is
 * closed, so that a new one can come in. Such a connection may only PING
 * and authenticate; without this, connections that never authenticate
 * could hold every place for as long as they keep pinging, and shut out
 * clients with credentials and other nodes' links. A connection that
 * authenticates soon after it is accepted is behind every older one
 * without credentials in the queue. 1 when one was closed. */
static int evict_anonymous(keel_node *n)
{
    keel_conn *c;

    while ((c = n->anon_tail) != NULL) {
        anon_unlink(c);
        if (c->dead || c->closing || c->refusing || c->overflow ||
            c->fsink.subs != NULL)
            continue;
        /* A node's claim counts while it names a member (anyone may make
         * one without TLS: docs/security.md). */
        if (c->auth.kind != KEEL_AUTH_ANON &&
            (c->auth.kind != KEEL_AUTH_NODE ||
             c->auth.source != KEEL_AUTH_SRC_CLAIM ||
             keel__auth_peer(n->auth, &c->auth)))
            continue;
        send_error(c, 0, KEEL_EOVERLOAD, refuse_evicted);
        if (!c->dead && (c->tls == NULL || c->tls_ready))
            conn_write(c); /* what fits; the rest is dropped */
        conn_close(c);
        return 1;
    }
    return 0;
}

/* Accepts up to max connections waiting on the listener; with watch,
 * starts reading them. Returns how many it took (refused ones count). */
static int accept_some(keel_node *n, int max, int watch)
{
    int i, got = 0;

    for (i = 0; i < max; i++) {
        int fd = accept4(n->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        int one = 1, overflow = 0;
        keel_conn *c;

        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e == EAGAIN || e == EWOULDBLOCK)
                break;
            if ((e == EMFILE || e == ENFILE) && accept_overflow(n, e)) {
                got++;
                continue;
            }
            if (e != EMFILE && e != ENFILE)
                accept_log(n, "failed", e);
            if (watch)
                accept_rest(n);
            break;
        }
        got++;
        if (n->nconns >= n->opts.max_connections &&
            keel__auth_enabled(n->auth) && evict_anonymous(n))
            accept_log(n, "connection limit (--max-connections) reached, "
                          "closing the oldest connections without "
                          "credentials", 0);
        if (n->nconns >= n->opts.max_connections) {
            accept_log(n, "connection limit (--max-connections) reached, "
                          "refusing connections", 0);
            /* A TLS client can read EOVERLOAD only after a handshake. */
            if (n->tls == NULL || !watch || !overflow_admit(n)) {
                refuse(n, fd, KEEL_EOVERLOAD, refuse_overload);
                continue;
            }
            overflow = 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->n = n;
        c->fd = fd;
        if (n->tls != NULL && keel_tls_accept(n->tls, fd, &c->tls) != 0) {
            free(c);
            close(fd);
            continue;
        }
        /* Another node's link is refused in the handshake, as it was
         * before, so that it knows nothing it queued ran: it would send
         * once the handshake is done, and read EOVERLOAD only after. */
        if (overflow)
            keel_tls_refuse_nodes(c->tls);
        c->quiet_ns = keel__now_ns();
        c->active_at = ev_now(n->loop);
        c->wrote_at = c->active_at;
        ev_io_init(&c->rio, rio_cb, fd, EV_READ);
        ev_io_init(&c->wio, wio_cb, fd, EV_WRITE);
        c->rio.data = c;
        c->wio.data = c;
        c->next = n->conns;
        if (n->conns)
            n->conns->prev = c;
        n->conns = c;
        if (overflow) {
            c->overflow = 1;
            n->noverflow++;
            refuse_conn(c, KEEL_EOVERLOAD, refuse_overload);
        } else {
            n->nconns++;
            STAT_ADD(n, connections, 1);
            if (keel__auth_enabled(n->auth)) {
                c->anon_next = n->anon_head;
                if (n->anon_head != NULL)
                    n->anon_head->anon_prev = c;
                else
                    n->anon_tail = c;
                n->anon_head = c;
                c->in_anon = 1;
            }
        }
        if (watch)
            ev_io_start(n->loop, &c->rio);
    }
    return got;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    accept_some(w->data, 64, 1);
}

/* Every second: connections that have had nothing in flight, nothing to
 * write and no whole frame in either direction for --conn-idle-timeout
 * get a last ERROR ETIMEDOUT quoting request id 0 and are closed. A
 * client trickling a frame that never completes is idle too. Connections
 * from other nodes are left alone: a quiet peer is not a stale one. */
static void idle_conns_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_node *n = w->data;
    ev_tstamp t = ev_now(loop), limit = n->opts.conn_idle_timeout_s;
    keel_conn *c, *next;

    (void)revents;
    for (c = n->conns; c != NULL; c = next) {
        next = c->next;
        if (!c->dead && !c->refusing && c->pending == 0 &&
            c->fsink.subs == NULL && c->woff < c->wlen &&
            t - c->wrote_at >= limit &&
            t - c->active_at >= limit && !conn_peer(c)) {
            /* Answers wait and the client has taken none of them for as
             * long as an idle connection may last: it asks and does not
             * read (the node stopped reading it, WBUF_PAUSE). Nothing
             * more can reach it; the buffers it pins are freed. */
            conn_close(c);
            continue;
        }
        if (c->dead || c->closing || conn_peer(c) || c->pending > 0 ||
            c->fsink.subs != NULL || c->woff < c->wlen ||
            t - c->active_at < limit)
            continue;
        if (c->tls != NULL && !c->tls_ready) {
            conn_close(c); /* a handshake that never finished */
            continue;
        }
        send_error(c, 0, KEEL_ETIMEDOUT,
                   "idle connection closed; nothing sent after its last "
                   "answer ran");
        c->closing = 1;
        c->rlen = 0;
        pause_reading(c);
    }
}

void keel__net_start(keel_node *n)
{
    if (n->listen_fd < 0)
        return;
    ev_io_init(&n->listen_watcher, accept_cb, n->listen_fd, EV_READ);
    n->listen_watcher.data = n;
    ev_init(&n->accept_rest, accept_rest_cb);
    n->accept_rest.data = n;
    if (n->reserve_fd < 0)
        n->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ev_io_start(n->loop, &n->listen_watcher);
    ev_timer_init(&n->refuse_timer, refuse_timer_cb, REFUSE_TICK_S,
                  REFUSE_TICK_S);
    n->refuse_timer.data = n;
    if (n->opts.conn_idle_timeout_s > 0) {
        ev_timer_init(&n->idle_conns, idle_conns_cb, 1., 1.);
        n->idle_conns.data = n;
        ev_timer_start(n->loop, &n->idle_conns);
    }
}

void keel__net_stop_accepting(keel_node *n)
{
    if (n->listen_fd < 0)
        return;
    ev_io_stop(n->loop, &n->listen_watcher);
    ev_timer_stop(n->loop, &n->accept_rest);
    close(n->listen_fd);
    n->listen_fd = -1;
    if (n->reserve_fd >= 0) {
        close(n->reserve_fd);
        n->reserve_fd = -1;
    }
}

/* Writes out what is buffered for every connection, waiting for slow
 * readers at most CLOSE_LINGER_MS in all: a reply that was released is
 * owed to its client, and a clean stop should deliver it. A client that
 * reads nothing for that long loses its last replies (never the writes:
 * those are committed). */
#define CLOSE_LINGER_MS 2000

static void linger_flush(keel_node *n)
{
    struct timespec t0, t;
    keel_conn *c;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pfd[64];
        int np = 0;
        long left;

        for (c = n->conns; c != NULL && np < 64; c = c->next) {
            while (!c->dead && c->woff < c->wlen) {
                ssize_t w;
                c->write_wants_read = 0;
                w = conn_send(c, c->wbuf + c->woff, c->wlen - c->woff);
                if (w > 0) {
                    c->woff += (size_t)w;
                } else if (w < 0 && errno == EINTR) {
                    continue;
                } else {
                    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        pfd[np].fd = c->fd;
                        pfd[np].events =
                            c->write_wants_read ? POLLIN : POLLOUT;
                        np++;
                    } else {
                        c->woff = c->wlen; /* the peer is gone */
                    }
                    break;
                }
            }
        }
        if (np == 0)
            return;
        clock_gettime(CLOCK_MONOTONIC, &t);
        left = CLOSE_LINGER_MS - ((t.tv_sec - t0.tv_sec) * 1000L +
                                  (t.tv_nsec - t0.tv_nsec) / 1000000L);
        if (left <= 0 || poll(pfd, (nfds_t)np, (int)left) <= 0)
            return;
    }
}

/* After the farewell: the write side is shut, so the client reads EOF
 * right after it. What the client still sends is read and dropped (none
 * of it runs) until it closes too, at most CLOSE_DRAIN_MS: closing a
 * socket with unread input would reset the connection, and a reset can
 * destroy the farewell before the client reads it. */
#define CLOSE_DRAIN_MS 500

static void drain_input(keel_node *n)
{
    struct timespec t0, t;
    keel_conn *c;

    for (c = n->conns; c != NULL; c = c->next) {
        if (!c->dead && c->woff < c->wlen) {
            conn_close(c); /* a reader too slow for the farewell */
        } else if (!c->dead) {
            if (c->tls != NULL)
                keel_tls_shutdown(c->tls); /* close_notify first */
            shutdown(c->fd, SHUT_WR);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pfd[64];
        keel_conn *pc[64];
        int np = 0, i;
        long left;

        for (c = n->conns; c != NULL && np < 64; c = c->next) {
            if (c->dead)
                continue;
            pfd[np].fd = c->fd;
            pfd[np].events = POLLIN;
            pfd[np].revents = 0;
            pc[np++] = c;
        }
        if (np == 0)
            return;
        clock_gettime(CLOCK_MONOTONIC, &t);
        left = CLOSE_DRAIN_MS - ((t.tv_sec - t0.tv_sec) * 1000L +
                                 (t.tv_nsec - t0.tv_nsec) / 1000000L);
        if (left <= 0 || poll(pfd, (nfds_t)np, (int)left) <= 0)
            return;
        for (i = 0; i < np; i++) {
            uint8_t sink[16384];
            ssize_t r;

            if (pfd[i].revents == 0)
                continue;
            do
                r = read(pc[i]->fd, sink, sizeof sink);
            while (r > 0 || (r < 0 && errno == EINTR));
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                conn_close(pc[i]); /* the client closed too */
        }
    }
}

void keel__net_close_all(keel_node *n)
{
    static const char bye[] =
        "node is stopping: the connection closes; requests it did not "
        "answer did not run";
    keel_conn *c;

    ev_timer_stop(n->loop, &n->idle_conns);
    ev_timer_stop(n->loop, &n->refuse_timer);
    /* Connections the kernel completed but nobody accepted would be reset
     * with the listener: take them, to say goodbye to them too. */
    if (n->listen_fd >= 0) {
        while (accept_some(n, 64, 0) == 64)
            ;
        keel__net_stop_accepting(n);
    }
    /* A connection still owed answers (calls held or forwarded when the
     * stop gave up waiting) may have had them run: it gets no farewell,
     * and its client learns only that the connection closed. */
    for (c = n->conns; c != NULL; c = c->next)
        if (!c->dead && c->pending == 0 && !c->refusing &&
            (c->tls == NULL || c->tls_ready))
            send_error(c, 0, KEEL_ESTOPPING, bye);
    linger_flush(n);
    drain_input(n);
    while ((c = n->conns) != NULL)
        conn_close(c);
    free_graveyard(n);
}

static const char refuse_withdrawn[] =
    "not authenticated: the token this connection follows actors under "
    "was withdrawn (the node's token file no longer holds it)";

void keel__net_tokens_reloaded(keel_node *n)
{
    keel_conn *c, *next;
    unsigned cut = 0;

    for (c = n->conns; c != NULL; c = next) {
        next = c->next;
        if (c->dead || c->refusing || c->fsink.subs == NULL ||
            !keel__auth_token_withdrawn(n->auth, &c->auth))
            continue;
        /* As for a revoked certificate: told, or closed once the
         * answers in flight are out. */
        cut++;
        keel__follow_sink_close(n, &c->fsink);
        c->sub_due = 0;
        if (c->pending == 0) {
            refuse_conn(c, KEEL_EUNAUTH, refuse_withdrawn);
        } else if (!c->closing) {
            c->closing = 1;
            pause_reading(c);
        }
    }
    if (cut > 0)
        keel_warn("auth tokens: %u connection(s) following actors under a "
                  "token the file no longer holds: closed",
                  cut);
}

static const char refuse_revoked[] =
    "certificate revoked: the node's certificate revocation list now "
    "lists the certificate this connection presented";

int keel__net_tls_reload(keel_node *n)
{
    keel_tls_ctx *ctx;
    keel_conn *c, *next;
    char err[600];
    unsigned cut = 0;
    int rc;

    if (n->tls == NULL)
        return 0; /* no TLS: nothing to reload */
    rc = keel_tls_node_ctx_create(n->tls_cert, n->tls_key, n->tls_ca,
                                  n->tls_crl,
                                  n->opts.zk_hosts != NULL ? n->log_node
                                                           : NULL,
                                  &ctx, err, sizeof err);
    if (rc != 0) {
        keel_error("TLS reload failed, the old certificate stays: %s", err);
        return rc;
    }
    /* Connections made from the old context hold it and go on, except
     * those whose certificate the new CRLs revoke: their identity no
     * longer holds. One with nothing in flight is told so (nothing it
     * sent and was not answered ran); one with requests in flight gets
     * their answers, then is closed. */
    for (c = n->conns; c != NULL; c = next) {
        next = c->next;
        if (c->dead || c->tls == NULL || !c->tls_ready || c->refusing ||
            !keel_tls_revoked(ctx, c->tls))
            continue;
        cut++;
        if (c->pending == 0) {
            refuse_conn(c, KEEL_EUNAUTH, refuse_revoked);
        } else if (!c->closing) {
            c->closing = 1;
            pause_reading(c);
        }
    }
    keel_tls_ctx_unref(n->tls);
    n->tls = ctx;
    keel_info("TLS reloaded: certificate %s, key %s, CA %s%s%s", n->tls_cert,
              n->tls_key, n->tls_ca, n->tls_crl != NULL ? ", CRL " : "",
              n->tls_crl != NULL ? n->tls_crl : "");
    if (cut > 0)
        keel_warn("TLS: %u open connection(s) presented a certificate the "
                  "CRL now revokes: closed",
                  cut);
    return 0;
}
