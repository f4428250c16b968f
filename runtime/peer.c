/* Node-to-node connections (see peer.h). A connection is opened on the
 * first frame for its address (non-blocking connect; frames queue
 * meanwhile) and reopened on the next frame after a failure. Every frame
 * waits in a table keyed by request id until the answer comes. */
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
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "runtime/hmap.h"
#include "runtime/proto.h"

#define PEER_MAX_FRAME (64u << 20)
#define PEER_RETRY_S 0.2 /* between connection attempts to a failed peer */

struct pending {
    uint64_t id;
    uint64_t end; /* stream position after the frame's last byte */
    keel_peer_cb cb;
    void *arg;
};

typedef struct peer {
    struct peer *next;
    keel_peers *p;
    char addr[256];
    int fd; /* -1: not connected */
    int connected;
    ev_tstamp retry_at; /* after a failure, no new connection before */
    ev_io rio, wio;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    uint64_t written; /* bytes written over this connection */
    uint64_t queued;  /* bytes queued over this connection */
    uint8_t *rbuf;
    size_t rlen, rcap;
    keel_hmap pending;
} peer;

struct keel_peers {
    keel_node *n;
    peer *list;
    uint64_t next_id;
    size_t npending;
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

/* Completes every pending frame of the connection and resets it. */
static void peer_fail(peer *pr, int stopping)
{
    keel_peers *p = pr->p;
    keel_node *n = p->n;
    size_t pos = 0, i, cnt;
    void *item;
    struct pending **all;

    if (pr->fd >= 0) {
        ev_io_stop(n->loop, &pr->rio);
        ev_io_stop(n->loop, &pr->wio);
        close(pr->fd);
        pr->fd = -1;
    }
    pr->connected = 0;
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
    p->npending -= cnt;
    pr->wlen = pr->woff = 0;
    pr->rlen = 0;
    /* Callbacks may queue new frames: the connection is clean by now. */
    for (cnt = i, i = 0; i < cnt; i++) {
        struct pending *pd = all[i];
        /* A frame that left may have run there: its fate is unknown.
         * KEEL_ESTOPPING promises the request did not run. */
        int st = pd->end <= pr->written ? KEEL_ECONN
                 : stopping             ? KEEL_ESTOPPING
                                        : KEEL_PEER_UNSENT;
        if (pd->cb != NULL)
            pd->cb(n, st, (const uint8_t *)keel_strerror(st),
                   strlen(keel_strerror(st)), pd->arg);
        free(pd);
    }
    free(all);
    pr->written = pr->queued = 0;
}

static void peer_write(peer *pr)
{
    while (pr->woff < pr->wlen) {
        ssize_t w = write(pr->fd, pr->wbuf + pr->woff, pr->wlen - pr->woff);
        if (w > 0) {
            pr->woff += (size_t)w;
            pr->written += (uint64_t)w;
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
        peer_fail(pr, 0);
        return;
    }
    pr->woff = pr->wlen = 0;
    ev_io_stop(pr->p->n->loop, &pr->wio);
}

static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    peer *pr = w->data;

    (void)loop;
    (void)revents;
    if (!pr->connected) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(pr->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
            err != 0) {
            keel_warn("peer %s: cannot connect: %s", pr->addr,
                      strerror(err ? err : errno));
            peer_fail(pr, 0);
            return;
        }
        pr->connected = 1;
        ev_io_start(pr->p->n->loop, &pr->rio);
    }
    peer_write(pr);
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

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    peer *pr = w->data;

    (void)loop;
    (void)revents;
    for (;;) {
        ssize_t r;
        size_t off = 0;
        if (pr->rcap - pr->rlen < 16384) {
            size_t cap = pr->rcap ? pr->rcap * 2 : 65536;
            uint8_t *q = realloc(pr->rbuf, cap);
            if (q == NULL) {
                peer_fail(pr, 0);
                return;
            }
            pr->rbuf = q;
            pr->rcap = cap;
        }
        r = read(pr->fd, pr->rbuf + pr->rlen, pr->rcap - pr->rlen);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            keel_warn("peer %s: connection %s", pr->addr,
                      r == 0 ? "closed" : strerror(errno));
            peer_fail(pr, 0);
            return;
        }
        pr->rlen += (size_t)r;
        while (off < pr->rlen) {
            keel_frame f;
            long fl = keel_frame_parse(pr->rbuf + off, pr->rlen - off,
                                       PEER_MAX_FRAME, &f);
            if (fl == 0)
                break;
            if (fl < 0 || (f.kind != KEEL_FRAME_REPLY &&
                           f.kind != KEEL_FRAME_ERROR)) {
                keel_warn("peer %s: bad frame from the peer", pr->addr);
                peer_fail(pr, 0);
                return;
            }
            off += (size_t)fl;
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
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0 &&
        errno != EINPROGRESS) {
        freeaddrinfo(res);
        close(fd);
        return KEEL_ECONN;
    }
    freeaddrinfo(res);
    pr->fd = fd;
    pr->connected = 0;
    ev_io_init(&pr->rio, rio_cb, fd, EV_READ);
    ev_io_init(&pr->wio, wio_cb, fd, EV_WRITE);
    pr->rio.data = pr;
    pr->wio.data = pr;
    ev_io_start(pr->p->n->loop, &pr->wio); /* fires when connected */
    return 0;
}

static peer *peer_get(keel_peers *p, const char *addr)
{
    peer *pr;

    for (pr = p->list; pr != NULL; pr = pr->next)
        if (strcmp(pr->addr, addr) == 0)
            return pr;
    if (strlen(addr) >= sizeof pr->addr)
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

uint8_t *keel__peer_frame(keel_peers *p, const char *addr, uint8_t kind,
                          uint8_t flags, size_t body_len, keel_peer_cb cb,
                          void *arg)
{
    peer *pr = peer_get(p, addr);
    struct pending *pd;
    size_t need;
    uint8_t *hdr;

    if (pr == NULL || body_len > PEER_MAX_FRAME - KEEL_FRAME_HEADER)
        return NULL;
    if (pr->fd < 0) {
        if (ev_now(p->n->loop) < pr->retry_at)
            return NULL;
        if (peer_connect(pr) != 0) {
            pr->retry_at = ev_now(p->n->loop) + PEER_RETRY_S;
            keel_warn("peer %s: cannot connect", pr->addr);
            return NULL;
        }
    }
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
    pd = malloc(sizeof *pd);
    if (pd == NULL)
        return NULL;
    pd->id = p->next_id++;
    pd->cb = cb;
    pd->arg = arg;
    pr->queued += KEEL_FRAME_HEADER + body_len;
    pd->end = pr->queued;
    if (keel_hmap_put(&pr->pending, id_hash(pd->id), pd) != 0) {
        pr->queued -= KEEL_FRAME_HEADER + body_len;
        free(pd);
        return NULL;
    }
    p->npending++;
    hdr = pr->wbuf + pr->wlen;
    keel_frame_header(hdr, kind, pd->id, body_len);
    hdr[5] = flags;
    pr->wlen += KEEL_FRAME_HEADER + body_len;
    if (pr->connected)
        ev_io_start(p->n->loop, &pr->wio); /* written on the next round */
    return hdr + KEEL_FRAME_HEADER;
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
        peer_fail(pr, 1);
        keel_hmap_free(&pr->pending);
        free(pr->wbuf);
        free(pr->rbuf);
        free(pr);
    }
    free(p);
}
